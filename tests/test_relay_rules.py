"""Protocol v1's rules, checked against the real handlers behind the simulated gateway.

Every test drives the functions wired by template.yaml (`gateway` fixture) over moto's
DynamoDB and looks only at what clients receive, what the debug endpoint says and,
where a rule is about stored state, at the table itself. Facts of the protocol (code
alphabet, limits, error codes, message shapes) come from `relay.protocol`.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from relay import protocol, session_codes
from relay.protocol import ErrorCode, MessageType

from tests.support.aws import TABLE_NAME
from tests.support.codes import other_well_formed_code
from tests.support.files import load_event
from tests.support.harness import Gateway
from tests.support.messages import active_sessions, auth, send, table_items

Reply = dict[str, Any]

# ---- helpers -------------------------------------------------------------------------


def error_code_of(replies: list[Reply]) -> ErrorCode:
    """The error code of the one reply a request got (fails unless it is exactly one error)."""
    assert len(replies) == 1, replies
    (reply,) = replies
    assert reply["type"] == MessageType.ERROR, reply
    assert isinstance(reply["message"], str)
    assert reply["message"]
    return ErrorCode(reply["error"])


def frames_of(gateway: Gateway, connection_id: str) -> list[Reply]:
    return [m for m in gateway.sent[connection_id] if m["type"] == MessageType.FRAME]


def of_type(gateway: Gateway, connection_id: str, message_type: MessageType) -> list[Reply]:
    return [m for m in gateway.sent[connection_id] if m["type"] == message_type]


def is_well_formed(code: str) -> bool:
    # Written out here rather than calling protocol.is_well_formed_code, which is under test.
    return len(code) == protocol.CODE_LENGTH and all(ch in protocol.CODE_ALPHABET for ch in code)


def register(gateway: Gateway, connection_id: str, client_id: Any = "mac-1") -> list[Reply]:
    return gateway.message(connection_id, {"action": protocol.Action.REGISTER.value, "client_id": client_id})


def padded_string_for_size(target_bytes: int, wrap: Any, filler: str = "x") -> str:
    """A string `data` whose wrapped message `wrap(data)` encodes to exactly target_bytes."""
    overhead = protocol.encoded_size(wrap(""))
    filler_bytes = len(filler.encode("utf-8"))
    count, rest = divmod(target_bytes - overhead, filler_bytes)
    data = filler * count + "y" * rest
    assert protocol.encoded_size(wrap(data)) == target_bytes
    return data


# ---- register ------------------------------------------------------------------------


def test_register_replies_registered_with_a_well_formed_code(gateway: Gateway) -> None:
    mac = gateway.connect()

    replies = register(gateway, mac)

    assert len(replies) == 1
    (reply,) = replies
    assert reply == protocol.registered(reply["code"])
    assert is_well_formed(reply["code"]), reply


def test_every_registration_gets_its_own_code(gateway: Gateway) -> None:
    codes = [gateway.register(f"mac-{n}")[1] for n in range(20)]

    assert len(set(codes)) == len(codes)


def test_a_colliding_code_is_never_handed_out_twice(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # The generator draws the same code twice before a fresh one: the second mac-client
    # must get the fresh one, because the first holds the drawn code.
    first, fresh = "K7M2QX", "K7M2QY"
    draws = iter([first, first, fresh])
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: next(draws))

    _, code_a = gateway.register("mac-a")
    _, code_b = gateway.register("mac-b")

    assert (code_a, code_b) == (first, fresh)
    assert active_sessions(gateway) == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"action": "register"}, id="missing"),
        pytest.param({"action": "register", "client_id": None}, id="null"),
        pytest.param({"action": "register", "client_id": 42}, id="number"),
        pytest.param({"action": "register", "client_id": ["mac"]}, id="list"),
        pytest.param({"action": "register", "client_id": {"id": "mac"}}, id="object"),
        pytest.param({"action": "register", "client_id": ""}, id="empty"),
        pytest.param({"action": "register", "client_id": "m" * (protocol.CLIENT_ID_MAX_LENGTH + 1)}, id="too-long"),
    ],
)
def test_register_with_a_bad_client_id_is_bad_request(gateway: Gateway, body: dict[str, Any]) -> None:
    mac = gateway.connect()

    assert error_code_of(gateway.message(mac, body)) is ErrorCode.BAD_REQUEST
    assert active_sessions(gateway) == 0
    # Nothing was bound: the same connection may still register properly.
    assert register(gateway, mac)[0]["type"] == MessageType.REGISTERED


def test_register_accepts_a_client_id_of_the_maximum_length(gateway: Gateway) -> None:
    mac = gateway.connect()

    (reply,) = register(gateway, mac, "m" * protocol.CLIENT_ID_MAX_LENGTH)

    assert reply["type"] == MessageType.REGISTERED


def test_register_on_a_registered_connection_is_already_bound(gateway: Gateway) -> None:
    mac, code = gateway.register()

    assert gateway.message(mac, {"action": "register", "client_id": "again"}) == [
        protocol.error(ErrorCode.ALREADY_BOUND)
    ]
    assert active_sessions(gateway) == 1
    # The first session is untouched: its code still admits a browser.
    gateway.join(code)


def test_register_on_a_browser_connection_is_already_bound(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)

    assert register(gateway, browser) == [protocol.error(ErrorCode.ALREADY_BOUND)]
    assert active_sessions(gateway) == 1
    # Still a browser of its session.
    send(gateway, browser, "still here")
    assert frames_of(gateway, mac) == [protocol.frame(peer, "still here")]


def test_each_registration_adds_one_active_session(gateway: Gateway) -> None:
    assert active_sessions(gateway) == 0
    for expected in range(1, 4):
        gateway.register(f"mac-{expected}")
        assert active_sessions(gateway) == expected


# ---- auth ----------------------------------------------------------------------------


def typed_forms(code: str) -> list[str]:
    """Ways a person may type a code that must all be accepted."""
    return [
        code,
        code.lower(),
        f"{code[:3]}-{code[3:]}".lower(),
        f"  {code[:3]} {code[3:]}\t",
        " - ".join(code),
        f"\n{code.lower()}\n",
    ]


@pytest.mark.parametrize("form", range(6))
def test_auth_normalises_the_typed_code(gateway: Gateway, form: int) -> None:
    mac, code = gateway.register()
    typed = typed_forms(code)[form]
    browser = gateway.connect()

    replies = auth(gateway, browser, typed)

    assert len(replies) == 1, (typed, replies)
    (reply,) = replies
    peer = reply.get("peer")
    assert isinstance(peer, str)
    assert peer
    assert peer != browser  # peer ids are not connection ids
    assert reply == protocol.authenticated(code, peer)
    assert gateway.last(mac) == protocol.peer_joined(peer)


def test_each_browser_gets_its_own_peer_id_and_the_mac_hears_of_each(gateway: Gateway) -> None:
    mac, code = gateway.register()

    peers = [gateway.join(code)[1] for _ in range(3)]

    assert len(set(peers)) == 3
    assert of_type(gateway, mac, MessageType.PEER_JOINED) == [protocol.peer_joined(p) for p in peers]


def invalid_typed_codes(code: str) -> list[str]:
    wrong_length = [code[:-1], code + code[0], code[:1], ""]
    excluded = [ch + code[1:] for ch in "0O1IL"] + [code[:5] + ch for ch in "0o1il"]
    outside_alphabet = ["!" + code[1:], code[:2] + "_" + code[3:], "Ä" + code[1:], code[:5] + "."]
    unknown = [other_well_formed_code(code)]
    return wrong_length + excluded + outside_alphabet + unknown


def test_excluded_lookalike_characters_are_not_in_the_alphabet() -> None:
    assert not set("0O1IL") & set(protocol.CODE_ALPHABET)


def test_malformed_and_unknown_codes_get_the_same_invalid_code_reply(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # All attempts come from one address; this test is about the answers, not its limit.
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "1000")
    mac, code = gateway.register()
    replies: dict[str, list[Reply]] = {}

    for typed in invalid_typed_codes(code):
        # One connection each, so that no attempt limit is reached.
        replies[typed] = auth(gateway, gateway.connect(), typed)

    expected = [protocol.error(ErrorCode.INVALID_CODE)]
    assert {typed: r for typed, r in replies.items() if r != expected} == {}
    assert len({json.dumps(r, sort_keys=True) for r in replies.values()}) == 1
    assert of_type(gateway, mac, MessageType.PEER_JOINED) == []


@pytest.mark.parametrize("bad", [None, 123456, ["K7M2QX"], {"code": "K7M2QX"}, True])
def test_auth_with_a_code_that_is_not_a_string_is_bad_request(gateway: Gateway, bad: Any) -> None:
    gateway.register()
    browser = gateway.connect()

    assert error_code_of(auth(gateway, browser, bad)) is ErrorCode.BAD_REQUEST


def test_auth_without_a_code_is_bad_request(gateway: Gateway) -> None:
    browser = gateway.connect()

    assert error_code_of(gateway.message(browser, {"action": "auth"})) is ErrorCode.BAD_REQUEST


def test_auth_on_a_browser_connection_is_already_bound(gateway: Gateway) -> None:
    mac_a, code_a = gateway.register("mac-a")
    mac_b, code_b = gateway.register("mac-b")
    browser, peer = gateway.join(code_a)

    assert auth(gateway, browser, code_b) == [protocol.error(ErrorCode.ALREADY_BOUND)]
    assert auth(gateway, browser, code_a) == [protocol.error(ErrorCode.ALREADY_BOUND)]
    assert of_type(gateway, mac_b, MessageType.PEER_JOINED) == []
    assert of_type(gateway, mac_a, MessageType.PEER_JOINED) == [protocol.peer_joined(peer)]
    send(gateway, browser, "where am I")
    assert frames_of(gateway, mac_a) == [protocol.frame(peer, "where am I")]
    assert frames_of(gateway, mac_b) == []


def test_auth_on_a_mac_connection_is_already_bound(gateway: Gateway) -> None:
    mac_a, code_a = gateway.register("mac-a")
    mac_b, code_b = gateway.register("mac-b")

    assert auth(gateway, mac_a, code_b) == [protocol.error(ErrorCode.ALREADY_BOUND)]
    assert auth(gateway, mac_a, code_a) == [protocol.error(ErrorCode.ALREADY_BOUND)]
    assert of_type(gateway, mac_b, MessageType.PEER_JOINED) == []
    assert active_sessions(gateway) == 2


def test_session_full_when_max_browsers_are_in(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "2")
    mac, code = gateway.register()
    gateway.join(code)
    gateway.join(code)
    third = gateway.connect()

    assert auth(gateway, third, code) == [protocol.error(ErrorCode.SESSION_FULL)]
    assert len(of_type(gateway, mac, MessageType.PEER_JOINED)) == 2
    # The refused browser is not bound.
    assert send(gateway, third, "hello") == [protocol.error(ErrorCode.NOT_BOUND)]


def test_session_full_at_the_default_limit(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_BROWSERS", raising=False)
    _, code = gateway.register()
    for _ in range(protocol.DEFAULT_MAX_BROWSERS):
        gateway.join(code)

    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.SESSION_FULL)]


@pytest.mark.parametrize("limit", [None, 3])
def test_too_many_failed_auths_close_the_connection(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, limit: int | None
) -> None:
    if limit is None:
        monkeypatch.delenv("MAX_AUTH_ATTEMPTS", raising=False)
        limit = protocol.DEFAULT_MAX_AUTH_ATTEMPTS
    else:
        monkeypatch.setenv("MAX_AUTH_ATTEMPTS", str(limit))
    _, code = gateway.register()
    guesser = gateway.connect()
    wrong = itertools.cycle([other_well_formed_code(code), "0" + code[1:], code[:-1]])

    earlier = [auth(gateway, guesser, next(wrong)) for _ in range(limit - 1)]
    assert earlier == [[protocol.error(ErrorCode.INVALID_CODE)]] * (limit - 1)
    assert gateway.closed_by_relay == []

    last = auth(gateway, guesser, next(wrong))

    assert last == [protocol.error(ErrorCode.TOO_MANY_ATTEMPTS)]
    assert gateway.closed_by_relay == [guesser]


def test_failed_auths_are_counted_per_connection(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_AUTH_ATTEMPTS", "2")
    _, code = gateway.register()
    wrong = other_well_formed_code(code)
    first, second = gateway.connect(), gateway.connect()

    assert auth(gateway, first, wrong) == [protocol.error(ErrorCode.INVALID_CODE)]
    assert auth(gateway, second, wrong) == [protocol.error(ErrorCode.INVALID_CODE)]
    assert gateway.closed_by_relay == []
    assert auth(gateway, second, code)[0]["type"] == MessageType.AUTHENTICATED


def test_a_successful_auth_is_not_counted_as_a_failure(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_AUTH_ATTEMPTS", "3")
    mac, code = gateway.register()
    browser = gateway.connect()
    wrong = other_well_formed_code(code)

    assert auth(gateway, browser, wrong) == [protocol.error(ErrorCode.INVALID_CODE)]
    assert auth(gateway, browser, wrong) == [protocol.error(ErrorCode.INVALID_CODE)]
    (reply,) = auth(gateway, browser, code)

    assert reply["type"] == MessageType.AUTHENTICATED
    assert gateway.closed_by_relay == []
    # A bound browser asking again is refused as bound, not counted towards closing it.
    for _ in range(3):
        assert auth(gateway, browser, code) == [protocol.error(ErrorCode.ALREADY_BOUND)]
    assert gateway.closed_by_relay == []
    send(gateway, browser, "ok")
    assert frames_of(gateway, mac) == [protocol.frame(reply["peer"], "ok")]


# ---- send ----------------------------------------------------------------------------

JSON_VALUES = [
    pytest.param({"k": "v", "n": 1}, id="object"),
    pytest.param([1, "two", None, False], id="list"),
    pytest.param("text", id="string"),
    pytest.param("", id="empty-string"),
    pytest.param(42, id="int"),
    pytest.param(-2.5, id="float"),
    pytest.param(None, id="null"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param({}, id="empty-object"),
    pytest.param({"émoji": ["🙂", {"中文": "ünïcödé", "deep": [[[{"x": None}]]]}]}, id="nested-unicode"),
]


@pytest.mark.parametrize("data", JSON_VALUES)
def test_browser_frame_reaches_its_mac_from_its_peer_id(gateway: Gateway, data: Any) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)

    replies = send(gateway, browser, data)

    assert replies == []  # a delivered frame needs no answer
    assert frames_of(gateway, mac) == [protocol.frame(peer, data)]


@pytest.mark.parametrize("data", JSON_VALUES)
def test_mac_frame_reaches_the_addressed_browser_only(gateway: Gateway, data: Any) -> None:
    mac, code = gateway.register()
    browser_a, peer_a = gateway.join(code)
    browser_b, _ = gateway.join(code)

    replies = send(gateway, mac, data, to=peer_a)

    assert replies == []
    assert frames_of(gateway, browser_a) == [protocol.frame(protocol.MAC_PEER, data)]
    assert frames_of(gateway, browser_b) == []


def test_mac_broadcast_reaches_every_browser_exactly_once(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browsers = [gateway.join(code)[0] for _ in range(4)]

    assert send(gateway, mac, {"all": True}) == []

    for browser in browsers:
        assert frames_of(gateway, browser) == [protocol.frame(protocol.MAC_PEER, {"all": True})]
    assert frames_of(gateway, mac) == []  # the sender does not hear itself


def test_frames_stay_within_their_session(gateway: Gateway) -> None:
    mac_a, code_a = gateway.register("mac-a")
    mac_b, code_b = gateway.register("mac-b")
    browsers_a = [gateway.join(code_a) for _ in range(2)]
    browsers_b = [gateway.join(code_b) for _ in range(2)]

    send(gateway, mac_a, "to all of A")
    send(gateway, mac_b, "to all of B")
    send(gateway, mac_b, "to one of B", to=browsers_b[1][1])
    for n, (browser, _) in enumerate(browsers_a):
        send(gateway, browser, f"from A{n}")
    for n, (browser, _) in enumerate(browsers_b):
        send(gateway, browser, f"from B{n}")

    from_mac = protocol.MAC_PEER
    assert frames_of(gateway, browsers_a[0][0]) == [protocol.frame(from_mac, "to all of A")]
    assert frames_of(gateway, browsers_a[1][0]) == [protocol.frame(from_mac, "to all of A")]
    assert frames_of(gateway, browsers_b[0][0]) == [protocol.frame(from_mac, "to all of B")]
    assert frames_of(gateway, browsers_b[1][0]) == [
        protocol.frame(from_mac, "to all of B"),
        protocol.frame(from_mac, "to one of B"),
    ]
    assert frames_of(gateway, mac_a) == [protocol.frame(p, f"from A{n}") for n, (_, p) in enumerate(browsers_a)]
    assert frames_of(gateway, mac_b) == [protocol.frame(p, f"from B{n}") for n, (_, p) in enumerate(browsers_b)]


def test_mac_broadcast_with_no_browsers_is_harmless(gateway: Gateway) -> None:
    mac, _ = gateway.register()
    posts = gateway.post_calls

    assert send(gateway, mac, "anyone?") == []
    assert gateway.post_calls == posts


def test_send_before_register_or_auth_is_not_bound(gateway: Gateway) -> None:
    gateway.register()
    stranger = gateway.connect()

    assert send(gateway, stranger, "hi") == [protocol.error(ErrorCode.NOT_BOUND)]
    assert send(gateway, stranger, "hi", to=protocol.MAC_PEER) == [protocol.error(ErrorCode.NOT_BOUND)]


def test_send_after_failed_auths_is_not_bound(gateway: Gateway) -> None:
    _, code = gateway.register()
    browser = gateway.connect()
    auth(gateway, browser, other_well_formed_code(code))

    assert send(gateway, browser, "hi") == [protocol.error(ErrorCode.NOT_BOUND)]


def test_mac_to_an_unknown_peer_is_unknown_peer(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)

    for stranger in ["p00000000", peer + "0", peer.upper(), "", protocol.MAC_PEER, browser]:
        assert send(gateway, mac, "psst", to=stranger) == [protocol.error(ErrorCode.UNKNOWN_PEER)], stranger
    assert frames_of(gateway, browser) == []


def test_mac_to_a_peer_of_another_session_is_unknown_peer(gateway: Gateway) -> None:
    mac_a, _ = gateway.register("mac-a")
    _, code_b = gateway.register("mac-b")
    browser_b, peer_b = gateway.join(code_b)

    assert send(gateway, mac_a, "not yours", to=peer_b) == [protocol.error(ErrorCode.UNKNOWN_PEER)]
    assert frames_of(gateway, browser_b) == []


@pytest.mark.parametrize("to", [42, ["p1"], {"peer": "p1"}, True])
def test_send_with_a_to_that_is_not_a_string_is_bad_request(gateway: Gateway, to: Any) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)

    for sender in (mac, browser):
        assert error_code_of(send(gateway, sender, "x", to=to)) is ErrorCode.BAD_REQUEST
    assert frames_of(gateway, mac) == []
    assert frames_of(gateway, browser) == []


def test_send_without_data_is_bad_request(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)

    assert error_code_of(gateway.message(browser, {"action": "send"})) is ErrorCode.BAD_REQUEST
    assert error_code_of(gateway.message(mac, {"action": "send"})) is ErrorCode.BAD_REQUEST
    assert error_code_of(gateway.message(mac, {"action": "send", "to": peer})) is ErrorCode.BAD_REQUEST
    assert frames_of(gateway, mac) == []
    assert frames_of(gateway, browser) == []


def test_browser_frame_over_the_message_limit_is_payload_too_large_and_not_posted(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)
    data = padded_string_for_size(protocol.MAX_MESSAGE_BYTES + 1, lambda d: protocol.frame(peer, d))
    posts = gateway.post_calls

    assert send(gateway, browser, data) == [protocol.error(ErrorCode.PAYLOAD_TOO_LARGE)]
    assert gateway.post_calls == posts + 1  # the error reply, nothing to the mac
    assert frames_of(gateway, mac) == []


def test_browser_frame_at_the_message_limit_is_delivered(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)
    data = padded_string_for_size(protocol.MAX_MESSAGE_BYTES, lambda d: protocol.frame(peer, d))

    assert send(gateway, browser, data) == []
    assert frames_of(gateway, mac) == [protocol.frame(peer, data)]


def test_the_limit_counts_utf8_bytes_not_characters(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)
    # Fewer characters than the limit, but more bytes once encoded.
    data = padded_string_for_size(protocol.MAX_MESSAGE_BYTES + 2, lambda d: protocol.frame(peer, d), "é")
    assert len(protocol.encode(protocol.frame(peer, data))) < protocol.MAX_MESSAGE_BYTES

    assert send(gateway, browser, data) == [protocol.error(ErrorCode.PAYLOAD_TOO_LARGE)]
    assert frames_of(gateway, mac) == []


@pytest.mark.parametrize("addressed", [True, False], ids=["to-one", "broadcast"])
def test_mac_frame_over_the_message_limit_is_payload_too_large_and_not_posted(
    gateway: Gateway, addressed: bool
) -> None:
    mac, code = gateway.register()
    browsers = [gateway.join(code) for _ in range(2)]
    data = padded_string_for_size(protocol.MAX_MESSAGE_BYTES + 1, lambda d: protocol.frame(protocol.MAC_PEER, d))
    posts = gateway.post_calls

    replies = send(gateway, mac, data, to=browsers[0][1] if addressed else None)

    assert replies == [protocol.error(ErrorCode.PAYLOAD_TOO_LARGE)]
    assert gateway.post_calls == posts + 1
    assert all(frames_of(gateway, b) == [] for b, _ in browsers)


@pytest.mark.parametrize("addressed", [True, False], ids=["to-one", "broadcast"])
def test_mac_frame_at_the_message_limit_is_delivered(gateway: Gateway, addressed: bool) -> None:
    mac, code = gateway.register()
    browsers = [gateway.join(code) for _ in range(2)]
    data = padded_string_for_size(protocol.MAX_MESSAGE_BYTES, lambda d: protocol.frame(protocol.MAC_PEER, d))

    assert send(gateway, mac, data, to=browsers[0][1] if addressed else None) == []

    receivers = browsers[:1] if addressed else browsers
    assert all(frames_of(gateway, b) == [protocol.frame(protocol.MAC_PEER, data)] for b, _ in receivers)


# ---- anything else -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("", ErrorCode.BAD_REQUEST, id="empty"),
        pytest.param("not json", ErrorCode.BAD_REQUEST, id="not-json"),
        pytest.param('{"action": "send", "data": ', ErrorCode.BAD_REQUEST, id="truncated-json"),
        pytest.param("[1, 2]", ErrorCode.BAD_REQUEST, id="array"),
        pytest.param('["register"]', ErrorCode.BAD_REQUEST, id="array-of-action"),
        pytest.param("42", ErrorCode.BAD_REQUEST, id="number"),
        pytest.param('"register"', ErrorCode.BAD_REQUEST, id="string"),
        pytest.param("null", ErrorCode.BAD_REQUEST, id="null"),
        pytest.param("{}", ErrorCode.UNKNOWN_ACTION, id="missing-action"),
        pytest.param('{"data": 1}', ErrorCode.UNKNOWN_ACTION, id="data-without-action"),
        pytest.param('{"action": 7}', ErrorCode.UNKNOWN_ACTION, id="number-action"),
        pytest.param('{"action": null}', ErrorCode.UNKNOWN_ACTION, id="null-action"),
        pytest.param('{"action": ["send"]}', ErrorCode.UNKNOWN_ACTION, id="list-action"),
        pytest.param('{"action": "dance"}', ErrorCode.UNKNOWN_ACTION, id="unknown-action"),
        pytest.param('{"action": "SEND", "data": 1}', ErrorCode.UNKNOWN_ACTION, id="wrong-case-action"),
        pytest.param('{"action": ""}', ErrorCode.UNKNOWN_ACTION, id="empty-action"),
    ],
)
def test_malformed_messages_get_an_error_reply(gateway: Gateway, body: str, expected: ErrorCode) -> None:
    # gateway.message also checks that the handler answered statusCode 200, not an exception.
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    stranger = gateway.connect()

    for connection_id in (stranger, mac, browser):
        assert error_code_of(gateway.message(connection_id, body)) is expected
    assert frames_of(gateway, mac) == []
    assert frames_of(gateway, browser) == []


def test_deeply_nested_json_gets_bad_request(gateway: Gateway) -> None:
    # Deeper than Python's JSON parser can go, yet well under API Gateway's message limit.
    # Sent to the $default function directly: tests/support/harness.Gateway.select_route does not
    # survive parsing it (RecursionError), whereas API Gateway would route it to $default.
    depth = 20_000
    body = "[" * depth + "]" * depth
    assert len(body) < protocol.MAX_MESSAGE_BYTES
    stranger = gateway.connect()
    event = load_event("default")
    event["body"] = body
    event["requestContext"].update(connectionId=stranger, routeKey="$default")

    assert gateway.invoke("$default", event) == {"statusCode": 200}
    assert error_code_of(gateway.sent[stranger]) is ErrorCode.BAD_REQUEST


def test_unknown_action_reply_is_the_protocol_message(gateway: Gateway) -> None:
    stranger = gateway.connect()

    assert gateway.message(stranger, {"action": "dance"}) == [protocol.error(ErrorCode.UNKNOWN_ACTION)]


def test_ping_gets_pong_bound_or_not(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    stranger = gateway.connect()

    for connection_id in (stranger, mac, browser):
        assert gateway.message(connection_id, {"action": protocol.Action.PING.value}) == [protocol.pong()]
    assert frames_of(gateway, mac) == []


# ---- lifecycle -----------------------------------------------------------------------


def test_mac_disconnect_ends_the_session(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browsers = [gateway.join(code)[0] for _ in range(3)]
    assert active_sessions(gateway) == 1

    gateway.disconnect(mac)

    assert active_sessions(gateway) == 0
    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.INVALID_CODE)]
    for browser in browsers:
        assert gateway.last(browser) == protocol.session_closed()
        assert of_type(gateway, browser, MessageType.SESSION_CLOSED) == [protocol.session_closed()]
        assert send(gateway, browser, "hello?") == [protocol.error(ErrorCode.NOT_BOUND)]


def test_mac_disconnect_leaves_other_sessions_alone(gateway: Gateway) -> None:
    mac_a, _ = gateway.register("mac-a")
    mac_b, code_b = gateway.register("mac-b")
    browser_b, peer_b = gateway.join(code_b)

    gateway.disconnect(mac_a)

    assert active_sessions(gateway) == 1
    assert of_type(gateway, browser_b, MessageType.SESSION_CLOSED) == []
    send(gateway, browser_b, "still on")
    assert frames_of(gateway, mac_b) == [protocol.frame(peer_b, "still on")]
    gateway.join(code_b)


def test_a_browser_of_an_ended_session_may_join_another(gateway: Gateway) -> None:
    mac_a, code_a = gateway.register("mac-a")
    mac_b, code_b = gateway.register("mac-b")
    browser, _ = gateway.join(code_a)
    gateway.disconnect(mac_a)

    (reply,) = auth(gateway, browser, code_b)

    assert reply == protocol.authenticated(code_b, reply["peer"])
    assert gateway.last(mac_b) == protocol.peer_joined(reply["peer"])
    send(gateway, browser, "moved")
    assert frames_of(gateway, mac_b) == [protocol.frame(reply["peer"], "moved")]


def test_browser_disconnect_tells_the_mac_and_frees_the_seat(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "2")
    mac, code = gateway.register()
    leaving, leaving_peer = gateway.join(code)
    staying, _ = gateway.join(code)
    assert error_code_of(auth(gateway, gateway.connect(), code)) is ErrorCode.SESSION_FULL

    gateway.disconnect(leaving)

    assert gateway.last(mac) == protocol.peer_left(leaving_peer)
    assert active_sessions(gateway) == 1
    assert of_type(gateway, staying, MessageType.SESSION_CLOSED) == []
    assert send(gateway, mac, "gone?", to=leaving_peer) == [protocol.error(ErrorCode.UNKNOWN_PEER)]
    newcomer, _ = gateway.join(code)
    send(gateway, mac, "both")
    assert frames_of(gateway, newcomer) == [protocol.frame(protocol.MAC_PEER, "both")]
    assert frames_of(gateway, staying) == [protocol.frame(protocol.MAC_PEER, "both")]
    assert error_code_of(auth(gateway, gateway.connect(), code)) is ErrorCode.SESSION_FULL
    assert of_type(gateway, mac, MessageType.PEER_LEFT) == [protocol.peer_left(leaving_peer)]


def test_a_second_mac_disconnect_is_harmless(gateway: Gateway) -> None:
    mac_a, code_a = gateway.register("mac-a")
    gateway.register("mac-b")
    browser, _ = gateway.join(code_a)

    gateway.disconnect(mac_a)
    posts = gateway.post_calls
    gateway.disconnect(mac_a)

    assert active_sessions(gateway) == 1
    assert gateway.post_calls == posts
    assert of_type(gateway, browser, MessageType.SESSION_CLOSED) == [protocol.session_closed()]


def test_a_second_browser_disconnect_is_harmless(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "2")
    mac, code = gateway.register()
    leaving, leaving_peer = gateway.join(code)
    gateway.join(code)

    gateway.disconnect(leaving)
    gateway.disconnect(leaving)

    assert of_type(gateway, mac, MessageType.PEER_LEFT) == [protocol.peer_left(leaving_peer)]
    assert active_sessions(gateway) == 1
    # The seat was released once, not twice: one newcomer fits, the next does not.
    gateway.join(code)
    assert error_code_of(auth(gateway, gateway.connect(), code)) is ErrorCode.SESSION_FULL


def test_disconnect_of_a_connection_that_never_bound_is_harmless(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    idle, guesser = gateway.connect(), gateway.connect()
    auth(gateway, guesser, other_well_formed_code(code))
    posts = gateway.post_calls

    gateway.disconnect(idle)
    gateway.disconnect(guesser)
    gateway.disconnect(gateway.new_connection_id())  # a $disconnect for an id never seen

    assert gateway.post_calls == posts
    assert active_sessions(gateway) == 1
    send(gateway, browser, "fine")
    assert frames_of(gateway, mac)[-1]["data"] == "fine"


def test_nothing_is_left_behind_once_everyone_has_left(gateway: Gateway, dynamodb: Any) -> None:
    mac_a, code_a = gateway.register("mac-a")
    mac_b, code_b = gateway.register("mac-b")
    browsers_a = [gateway.join(code_a)[0] for _ in range(2)]
    browser_b, _ = gateway.join(code_b)
    guesser = gateway.connect()
    auth(gateway, guesser, other_well_formed_code(code_a))
    send(gateway, browsers_a[0], "x")

    gateway.disconnect(browsers_a[0])
    gateway.disconnect(mac_a)  # with one browser still in
    gateway.disconnect(browsers_a[1])  # after its session ended
    gateway.disconnect(browser_b)
    gateway.disconnect(mac_b)
    gateway.disconnect(guesser)

    assert active_sessions(gateway) == 0
    # Counter shards stay, and so do per-address failure windows (they expire by TTL).
    leftovers = [item for item in table_items(dynamodb) if not item["pk"]["S"].startswith(("COUNTER#", "IP#"))]
    assert leftovers == []


# ---- gone: connections that vanished without $disconnect (410 GoneException) ---------


def test_browser_send_to_a_vanished_mac_is_peer_gone_and_ends_the_session(gateway: Gateway) -> None:
    mac, code = gateway.register()
    sender, _ = gateway.join(code)
    others = [gateway.join(code)[0] for _ in range(2)]
    gateway.vanished.add(mac)

    replies = send(gateway, sender, "anyone?")

    assert replies == [protocol.error(ErrorCode.PEER_GONE)]
    assert active_sessions(gateway) == 0
    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.INVALID_CODE)]
    for other in others:
        assert of_type(gateway, other, MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert of_type(gateway, sender, MessageType.SESSION_CLOSED) == []  # it got peer_gone instead
    assert send(gateway, sender, "again?") == [protocol.error(ErrorCode.NOT_BOUND)]
    # The mac's $disconnect arriving late changes nothing.
    gateway.disconnect(mac)
    assert active_sessions(gateway) == 0


def test_broadcast_drops_a_vanished_browser_and_still_reaches_the_others(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browsers = [gateway.join(code) for _ in range(3)]
    vanished, vanished_peer = browsers[1]
    gateway.vanished.add(vanished)

    assert send(gateway, mac, "hello all") == [protocol.peer_left(vanished_peer)]

    for browser, _ in (browsers[0], browsers[2]):
        assert frames_of(gateway, browser) == [protocol.frame(protocol.MAC_PEER, "hello all")]
    assert active_sessions(gateway) == 1
    assert send(gateway, mac, "you?", to=vanished_peer) == [protocol.error(ErrorCode.UNKNOWN_PEER)]
    posts = gateway.post_calls
    send(gateway, mac, "again")
    assert gateway.post_calls == posts + 2  # the vanished browser is no longer posted to
    # Its late $disconnect does not announce it a second time.
    gateway.disconnect(vanished)
    assert of_type(gateway, mac, MessageType.PEER_LEFT) == [protocol.peer_left(vanished_peer)]


def test_broadcast_frees_the_seat_of_a_vanished_browser(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "2")
    mac, code = gateway.register()
    vanished, _ = gateway.join(code)
    gateway.join(code)
    gateway.vanished.add(vanished)

    send(gateway, mac, "hello all")

    gateway.join(code)
    assert error_code_of(auth(gateway, gateway.connect(), code)) is ErrorCode.SESSION_FULL


def test_mac_to_a_vanished_browser_removes_it(gateway: Gateway) -> None:
    mac, code = gateway.register()
    vanished, vanished_peer = gateway.join(code)
    staying, _ = gateway.join(code)
    gateway.vanished.add(vanished)

    send(gateway, mac, "you there?", to=vanished_peer)

    assert of_type(gateway, mac, MessageType.PEER_LEFT) == [protocol.peer_left(vanished_peer)]
    assert send(gateway, mac, "you there?", to=vanished_peer) == [protocol.error(ErrorCode.UNKNOWN_PEER)]
    send(gateway, mac, "all")
    assert frames_of(gateway, staying) == [protocol.frame(protocol.MAC_PEER, "all")]
    assert active_sessions(gateway) == 1


def test_a_mac_that_vanished_before_hearing_its_code_leaves_no_session(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "K7M2QX"
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: code)
    mac = gateway.connect()
    gateway.vanished.add(mac)

    assert register(gateway, mac) == []

    assert active_sessions(gateway) == 0
    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.INVALID_CODE)]
    # The code is free again for the next mac-client.
    assert gateway.register()[1] == code


def test_a_mac_that_vanished_before_a_browser_joined_ends_the_session(gateway: Gateway) -> None:
    mac, code = gateway.register()
    gateway.vanished.add(mac)
    browser = gateway.connect()

    replies = auth(gateway, browser, code)

    # The browser may have been told it joined before the relay found the mac gone, but
    # then it must hear that the session closed, and must not stay bound to it.
    assert replies[-1:] == [protocol.session_closed()] or replies == [protocol.error(ErrorCode.INVALID_CODE)]
    assert active_sessions(gateway) == 0
    assert send(gateway, browser, "hello?") == [protocol.error(ErrorCode.NOT_BOUND)]


# ---- faults of AWS itself ------------------------------------------------------------


def test_a_failing_table_gets_internal_error_replies_not_exceptions(gateway: Gateway, dynamodb: Any) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    stranger = gateway.connect()
    dynamodb.delete_table(TableName=TABLE_NAME)

    # gateway.message and gateway.disconnect check that each handler answered 200.
    assert error_code_of(register(gateway, stranger)) is ErrorCode.INTERNAL_ERROR
    assert error_code_of(auth(gateway, stranger, code)) is ErrorCode.INTERNAL_ERROR
    assert error_code_of(send(gateway, browser, "x")) is ErrorCode.INTERNAL_ERROR
    assert error_code_of(send(gateway, mac, "x")) is ErrorCode.INTERNAL_ERROR
    gateway.disconnect(browser)
    gateway.disconnect(mac)
    response = gateway.debug_sessions()
    assert response["statusCode"] == 500
    assert response["headers"]["content-type"].startswith("text/plain")
    assert code not in response["body"]
