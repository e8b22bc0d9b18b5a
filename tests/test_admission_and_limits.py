"""Issue 5's rules at the protocol level: approval mode, kick and admit, the per-IP
guessing limit, and the Origin check on $connect (real handlers, moto's DynamoDB)."""

from __future__ import annotations

from typing import Any

import pytest
from relay import protocol
from relay.protocol import ErrorCode

from tests.support.harness import Gateway, load_handler


def error(code: ErrorCode) -> dict[str, Any]:
    return protocol.error(code)


KICKED_ADDRESS = "198.51.100.7"


def register_with_approval(gw: Gateway) -> tuple[str, str]:
    mac = gw.connect()
    (reply,) = gw.message(mac, {"action": "register", "client_id": "careful-mac", "approve": True})
    assert reply["type"] == "registered"
    return mac, reply["code"]


def ask_to_join(gw: Gateway, mac: str, code: str, source_ip: str = "198.51.100.7") -> tuple[str, str]:
    browser = gw.connect()
    assert gw.message(browser, {"action": "auth", "code": code}, source_ip=source_ip) == [protocol.pending()]
    request = gw.last(mac)
    assert request["type"] == "join_request"
    return browser, request["peer"]


# ---- approval mode ------------------------------------------------------------------


def test_approval_mode_shows_the_mac_who_is_asking(gateway: Gateway) -> None:
    mac, code = register_with_approval(gateway)
    browser, peer = ask_to_join(gateway, mac, code, source_ip="198.51.100.7")
    fixture_agent = gateway._event("auth", browser)["requestContext"]["identity"]["userAgent"]
    assert gateway.last(mac) == protocol.join_request(peer, "198.51.100.7", fixture_agent)
    assert not any(m["type"] == "peer_joined" for m in gateway.sent[mac])


def test_no_frame_flows_before_admission(gateway: Gateway) -> None:
    mac, code = register_with_approval(gateway)
    browser, peer = ask_to_join(gateway, mac, code)
    posts_to_mac = len(gateway.sent[mac])
    assert gateway.message(browser, {"action": "send", "data": "let me in"}) == [error(ErrorCode.NOT_ADMITTED)]
    assert len(gateway.sent[mac]) == posts_to_mac
    gateway.message(mac, {"action": "send", "data": "to everyone"})
    assert not any(m["type"] == "frame" for m in gateway.sent[browser])
    assert gateway.message(mac, {"action": "send", "to": peer, "data": "just you"}) == [error(ErrorCode.UNKNOWN_PEER)]


def test_admit_lets_frames_flow_both_ways(gateway: Gateway) -> None:
    mac, code = register_with_approval(gateway)
    browser, peer = ask_to_join(gateway, mac, code)
    assert gateway.message(mac, {"action": "admit", "peer": peer}) == [protocol.peer_joined(peer)]
    assert gateway.last(browser) == protocol.authenticated(code, peer)
    gateway.message(browser, {"action": "send", "data": "thanks"})
    assert gateway.last(mac) == protocol.frame(peer, "thanks")
    gateway.message(mac, {"action": "send", "data": "welcome"})
    assert gateway.last(browser) == protocol.frame(protocol.MAC_PEER, "welcome")


def test_without_approval_the_code_alone_is_enough(gateway: Gateway) -> None:
    mac, code = gateway.register()
    _browser, peer = gateway.join(code)
    assert gateway.last(mac) == protocol.peer_joined(peer)
    assert not any(m["type"] == "join_request" for m in gateway.sent[mac])


def test_approve_must_be_a_boolean(gateway: Gateway) -> None:
    mac = gateway.connect()
    reply = gateway.message(mac, {"action": "register", "client_id": "m", "approve": "yes"})
    assert [m["error"] for m in reply] == ["bad_request"]


# ---- kick ---------------------------------------------------------------------------


@pytest.mark.parametrize("approval", [False, True])
def test_kick_removes_a_browser_and_frees_its_seat(gateway: Gateway, approval: bool) -> None:
    if approval:
        mac, code = register_with_approval(gateway)
        browser, peer = ask_to_join(gateway, mac, code, source_ip=KICKED_ADDRESS)
    else:
        mac, code = gateway.register()
        browser = gateway.connect()
        (joined,) = gateway.message(browser, {"action": "auth", "code": code}, source_ip=KICKED_ADDRESS)
        peer = joined["peer"]
    assert gateway.message(mac, {"action": "kick", "peer": peer}) == [protocol.peer_left(peer)]
    assert gateway.last(browser) == protocol.kicked()
    # Unbound: it can neither send nor be reached, and its address may not join again.
    assert gateway.message(browser, {"action": "send", "data": 1}) == [error(ErrorCode.NOT_BOUND)]
    heard = len(gateway.sent[browser])
    gateway.message(mac, {"action": "send", "data": "after the kick"})
    assert len(gateway.sent[browser]) == heard
    assert gateway.message(browser, {"action": "auth", "code": code}, source_ip=KICKED_ADDRESS) == [
        error(ErrorCode.BANNED)
    ]
    elsewhere = gateway.message(browser, {"action": "auth", "code": code}, source_ip="192.0.2.77")
    assert elsewhere[0]["type"] == ("pending" if approval else "authenticated")


def test_a_kicked_seat_can_be_taken_by_someone_else(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "1")
    mac, code = gateway.register()
    _, peer = gateway.join(code)
    newcomer = gateway.connect()
    other_address = "192.0.2.77"  # the kicked browser's address is banned from the session
    assert gateway.message(newcomer, {"action": "auth", "code": code}, source_ip=other_address) == [
        error(ErrorCode.SESSION_FULL)
    ]
    gateway.message(mac, {"action": "kick", "peer": peer})
    assert (
        gateway.message(newcomer, {"action": "auth", "code": code}, source_ip=other_address)[0]["type"]
        == "authenticated"
    )


def test_only_the_mac_client_may_kick_or_admit(gateway: Gateway) -> None:
    _mac, code = gateway.register()
    browser, peer = gateway.join(code)
    other, other_peer = gateway.join(code)
    for action in ("kick", "admit"):
        assert gateway.message(browser, {"action": action, "peer": other_peer}) == [error(ErrorCode.NOT_MAC)]
        assert gateway.message(gateway.connect(), {"action": action, "peer": peer}) == [error(ErrorCode.NOT_BOUND)]
    assert not any(m["type"] == "kicked" for m in gateway.sent[other])


def test_a_mac_cannot_kick_or_admit_another_sessions_browser(gateway: Gateway) -> None:
    mac, _ = gateway.register()
    _, their_code = register_with_approval(gateway)
    _stranger_mac, stranger_code = gateway.register(client_id="other")
    stranger, stranger_peer = gateway.join(stranger_code)
    assert gateway.message(mac, {"action": "kick", "peer": stranger_peer}) == [error(ErrorCode.UNKNOWN_PEER)]
    assert gateway.message(mac, {"action": "admit", "peer": stranger_peer}) == [error(ErrorCode.UNKNOWN_PEER)]
    assert not any(m["type"] == "kicked" for m in gateway.sent[stranger])
    assert their_code != stranger_code


@pytest.mark.parametrize("body", [{"action": "kick"}, {"action": "admit", "peer": 3}, {"action": "kick", "peer": ""}])
def test_kick_and_admit_need_a_peer_id(gateway: Gateway, body: dict[str, Any]) -> None:
    mac, _ = gateway.register()
    assert [m["error"] for m in gateway.message(mac, body)] == ["bad_request"]


# ---- guessing limits ----------------------------------------------------------------


def test_failures_from_one_address_are_limited_across_connections(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "3")
    _, code = gateway.register()
    guesser_ip = "203.0.113.99"
    answers = []
    for _ in range(4):  # each on a fresh connection, so the per-connection limit never bites
        (reply,) = gateway.message(gateway.connect(), {"action": "auth", "code": "ZZZZZZ"}, source_ip=guesser_ip)
        answers.append(reply.get("error"))
    assert answers == ["invalid_code"] * 3 + ["rate_limited"]
    # Past the limit even the right code is refused, so a lucky guess teaches nothing.
    assert gateway.message(gateway.connect(), {"action": "auth", "code": code}, source_ip=guesser_ip) == [
        error(ErrorCode.RATE_LIMITED)
    ]
    # Another address is unaffected.
    assert (
        gateway.message(gateway.connect(), {"action": "auth", "code": code}, source_ip="192.0.2.1")[0]["type"]
        == "authenticated"
    )


def test_the_limit_lifts_when_the_window_passes(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "1")
    monkeypatch.setenv("AUTH_FAILURE_WINDOW_SECONDS", "600")
    _, code = gateway.register()
    from relay import wiring  # noqa: PLC0415 - the handlers' store, built on first use

    store = wiring.session_store()
    gateway.message(gateway.connect(), {"action": "auth", "code": "ZZZZZZ"}, source_ip="203.0.113.5")
    refused = gateway.message(gateway.connect(), {"action": "auth", "code": code}, source_ip="203.0.113.5")
    assert refused == [error(ErrorCode.RATE_LIMITED)]
    real_clock = store.table.clock
    monkeypatch.setattr(store.table, "clock", lambda: real_clock() + 601)
    joined = gateway.message(gateway.connect(), {"action": "auth", "code": code}, source_ip="203.0.113.5")
    assert joined[0]["type"] == "authenticated"


def test_rate_limited_answers_do_not_count_as_new_failures(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "2")
    conn = gateway.connect()
    for _ in range(2):
        gateway.message(conn, {"action": "auth", "code": "ZZZZZZ"}, source_ip="203.0.113.7")
    for _ in range(5):
        gateway.message(conn, {"action": "auth", "code": "ZZZZZZ"}, source_ip="203.0.113.7")
    # The connection's own count stopped at 2, so it was never closed for too many attempts.
    assert conn not in gateway.closed_by_relay


# ---- origins ------------------------------------------------------------------------


def test_any_origin_is_allowed_by_default(gateway: Gateway) -> None:
    assert gateway.try_connect({"Origin": "https://anywhere.example"})[1] == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://pair.example.com", 200),
        ("https://PAIR.example.com/", 200),
        ("https://evil.example", 403),
        ("http://pair.example.com", 403),
        ("null", 403),
    ],
)
def test_only_allowed_origins_may_connect(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, origin: str, status: int
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://pair.example.com, https://other.example.com")
    gateway.handlers["$connect"] = reload_connect_handler(gateway)
    assert gateway.try_connect({"Origin": origin})[1] == status
    assert gateway.try_connect({"origin": origin})[1] == status  # header names are case-insensitive


def test_native_clients_without_origin_may_connect_when_origins_are_locked(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://pair.example.com")
    gateway.handlers["$connect"] = reload_connect_handler(gateway)
    assert gateway.try_connect()[1] == 200


def reload_connect_handler(gateway: Gateway) -> Any:
    """$connect reads ALLOWED_ORIGINS once per container, as on Lambda: start a new one."""
    return load_handler(gateway.template, gateway.routes["$connect"])
