"""Resumable sessions (issue 11) through the real handlers over moto: away, resume, held
frames, end, leave and the grace timer (its SQS messages fired into the grace function).

Each test looks at what clients receive, what the debug endpoint counts and, where a
rule is about stored state (tokens kept only as hashes), at the table itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from relay import protocol, wiring
from relay.protocol import ErrorCode, MessageType

from tests.support.harness import Gateway
from tests.support.messages import (
    active_sessions,
    auth,
    join_resumable,
    register_resumable,
    resume,
    send,
    table_items,
)
from tests.support.stream_records import ttl_sweep

# Holders of resumable sessions go away here: their grace timers need the queue.
pytestmark = pytest.mark.usefixtures("grace_queue")

Reply = dict[str, Any]


# ---- helpers -------------------------------------------------------------------------


def resumed(gateway: Gateway, token: str) -> tuple[str, Reply, list[Reply]]:
    """Resume; (new connection, the resumed reply, what followed it)."""
    connection, replies = resume(gateway, token)
    assert replies, replies
    assert replies[0]["type"] == MessageType.RESUMED, replies
    return connection, replies[0], replies[1:]


def of_type(gateway: Gateway, connection_id: str, message_type: MessageType) -> list[Reply]:
    return [m for m in gateway.sent[connection_id] if m["type"] == message_type]


def data_of(messages: list[Reply]) -> list[Any]:
    return [m["data"] for m in messages if m["type"] == MessageType.FRAME]


def error_of(replies: list[Reply]) -> str:
    assert len(replies) == 1, replies
    assert replies[0]["type"] == MessageType.ERROR, replies
    return str(replies[0]["error"])


# ---- registering and joining ---------------------------------------------------------


def test_v1_registration_and_auth_carry_no_token_and_a_drop_still_ends_the_session(gateway: Gateway) -> None:
    mac, code = gateway.register()
    assert gateway.sent[mac] == [{"type": "registered", "code": code}]
    browser = gateway.connect()
    (reply,) = auth(gateway, browser, code)
    assert set(reply) == {"type", "code", "peer"}
    gateway.disconnect(mac)
    assert gateway.last(browser) == protocol.session_closed()
    assert not gateway.grace_timers
    assert active_sessions(gateway) == 0


def test_a_resumable_session_hands_out_distinct_url_safe_tokens_kept_only_as_hashes(
    gateway: Gateway, dynamodb: Any
) -> None:
    _, code, mac_token = register_resumable(gateway)
    _, _, browser_token = join_resumable(gateway, code)
    for token in (mac_token, browser_token):
        secret = token.rsplit(".", 1)[1]
        assert len(secret) * 6 >= 128
        assert all(ch.isalnum() or ch in "-_." for ch in token)
    assert mac_token != browser_token
    stored = json.dumps(table_items(dynamodb))
    assert mac_token not in stored
    assert browser_token not in stored
    assert hashlib.sha256(mac_token.encode()).hexdigest() in stored


def test_a_pending_browser_gets_its_token_with_pending(gateway: Gateway) -> None:
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "m", "resumable": True, "approve": True})
    browser = gateway.connect()
    (pending,) = auth(gateway, browser, reply["code"])
    assert pending["type"] == MessageType.PENDING
    assert pending["resume_token"]


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_resumable_must_be_a_boolean(gateway: Gateway, flag: Any) -> None:
    mac = gateway.connect()
    replies = gateway.message(mac, {"action": "register", "client_id": "m", "resumable": flag})
    assert error_of(replies) == ErrorCode.BAD_REQUEST


# ---- the mac-client away and back -------------------------------------------------------


def test_a_mac_client_dropped_three_times_gets_every_frame_in_order_once(gateway: Gateway) -> None:
    mac, code, token = register_resumable(gateway)
    browser, peer, _ = join_resumable(gateway, code)
    received: list[Any] = []
    sent: list[Any] = []
    for drop in range(3):
        if drop == 0:
            gateway.disconnect(mac)  # $disconnect first
        else:
            gateway.vanished.add(mac)  # no $disconnect: the browser's post meets a 410
        for n in range(3):
            frame = {"drop": drop, "n": n}
            sent.append(frame)
            # Over a 410 the first frame is what tells the relay (and the browser) it is away.
            expected = [protocol.peer_away(protocol.MAC_PEER)] if drop > 0 and n == 0 else []
            assert send(gateway, browser, frame) == expected
        assert protocol.peer_away(protocol.MAC_PEER) in gateway.sent[browser]
        old = mac
        mac, reply, after = resumed(gateway, token)
        token = reply["resume_token"]
        assert reply["role"] == "mac"
        assert reply["code"] == code
        assert reply["peers"] == [{"peer": peer, "state": "present"}]
        assert all(m["type"] == MessageType.FRAME for m in after)
        received += data_of(after)
        if drop == 2:
            gateway.disconnect(old)  # a late $disconnect of an old connection changes nothing
        assert gateway.last(browser) == protocol.peer_back(protocol.MAC_PEER)
    assert received == sent
    assert send(gateway, browser, "after") == []
    assert data_of(gateway.sent[mac])[-1] == "after"
    assert active_sessions(gateway) == 1


def test_browsers_hear_peer_away_and_their_frames_are_held_until_the_resume(gateway: Gateway) -> None:
    mac, code, token = register_resumable(gateway)
    browser, peer, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    assert gateway.last(browser) == protocol.peer_away(protocol.MAC_PEER)
    posts_before = gateway.post_calls
    assert send(gateway, browser, "held") == []
    assert gateway.post_calls == posts_before  # held, not posted
    assert active_sessions(gateway) == 1  # the debug count still counts it
    _new_mac, _, after = resumed(gateway, token)
    assert after == [protocol.frame(peer, "held")]


def test_the_sender_gets_peer_away_beyond_max_held_frames_and_nothing_more_is_held(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_HELD_FRAMES", "2")
    mac, code, token = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    assert send(gateway, browser, 1) == []
    assert send(gateway, browser, 2) == []
    assert error_of(send(gateway, browser, 3)) == ErrorCode.PEER_AWAY
    _, _, after = resumed(gateway, token)
    assert data_of(after) == [1, 2]


def test_a_late_disconnect_of_the_old_connection_does_not_throw_the_new_one_out(gateway: Gateway) -> None:
    mac, code, token = register_resumable(gateway)
    browser, peer, _ = join_resumable(gateway, code)
    # The client reconnected before API Gateway's $disconnect for the old socket arrived.
    new_mac, _reply, _ = resumed(gateway, token)
    assert mac in gateway.closed_by_relay  # the superseded connection is closed
    gateway.disconnect(mac)
    assert send(gateway, browser, "still paired") == []
    assert gateway.last(new_mac) == protocol.frame(peer, "still paired")
    assert protocol.session_closed() not in gateway.sent[browser]
    assert active_sessions(gateway) == 1


def test_a_token_works_once(gateway: Gateway) -> None:
    mac, _, token = register_resumable(gateway)
    gateway.disconnect(mac)
    resumed(gateway, token)
    _, replies = resume(gateway, token)
    assert error_of(replies) == ErrorCode.INVALID_TOKEN


def test_a_browsers_token_never_resumes_the_mac_client(gateway: Gateway) -> None:
    mac, code, _ = register_resumable(gateway)
    _, peer, browser_token = join_resumable(gateway, code)
    gateway.disconnect(mac)
    as_mac = browser_token.replace(f".{peer}.", f".{protocol.MAC_PEER}.")
    _, replies = resume(gateway, as_mac)
    assert error_of(replies) == ErrorCode.INVALID_TOKEN
    _, replies = resume(gateway, browser_token)  # as itself, it is the browser's place
    assert replies[0]["role"] == "browser"
    assert replies[0]["peer"] == peer


def test_resume_on_a_bound_connection_is_already_bound(gateway: Gateway) -> None:
    mac, _, token = register_resumable(gateway)
    replies = gateway.message(mac, {"action": "resume", "token": token})
    assert error_of(replies) == ErrorCode.ALREADY_BOUND


@pytest.mark.parametrize("token", ["", 7, None])
def test_resume_without_a_string_token_is_bad_request(gateway: Gateway, token: Any) -> None:
    connection = gateway.connect()
    assert error_of(gateway.message(connection, {"action": "resume", "token": token})) == ErrorCode.BAD_REQUEST


def test_bad_tokens_count_against_the_connections_limit(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_AUTH_ATTEMPTS", "3")
    _, _code, token = register_resumable(gateway)
    guesser = gateway.connect()
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for attempt, guess in enumerate(["nonsense", wrong, wrong]):
        replies = gateway.message(guesser, {"action": "resume", "token": guess})
        expected = ErrorCode.TOO_MANY_ATTEMPTS if attempt == 2 else ErrorCode.INVALID_TOKEN
        assert error_of(replies) == expected
    assert guesser in gateway.closed_by_relay


def test_bad_tokens_count_against_the_addresss_limit_across_connections(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "4")
    mac, code, token = register_resumable(gateway)
    gateway.disconnect(mac)
    for _ in range(4):
        _, replies = resume(gateway, f"{code}.mac.{'x' * 32}", source_ip="203.0.113.9")
        assert error_of(replies) == ErrorCode.INVALID_TOKEN
    # Past the address's limit even the right token is refused before it is looked at.
    _, replies = resume(gateway, token, source_ip="203.0.113.9")
    assert error_of(replies) == ErrorCode.RATE_LIMITED
    _, replies = resume(gateway, token, source_ip="198.51.100.1")
    assert replies[0]["type"] == MessageType.RESUMED


def test_two_resumes_racing_with_one_token_exactly_one_wins(gateway: Gateway) -> None:
    """The second resume runs between the first one's reads and its transaction."""
    mac, code, token = register_resumable(gateway)
    join_resumable(gateway, code)
    gateway.disconnect(mac)
    first, second = gateway.connect(), gateway.connect()
    interleaved: list[list[Reply]] = []
    started: list[bool] = []

    def run_second_first(**_: Any) -> None:
        if not started:
            started.append(True)
            interleaved.append(gateway.message(second, {"action": "resume", "token": token}))

    events = wiring.session_store().table.client.meta.events
    events.register("before-call.dynamodb.TransactWriteItems", run_second_first)
    try:
        first_replies = gateway.message(first, {"action": "resume", "token": token})
    finally:
        events.unregister("before-call.dynamodb.TransactWriteItems", run_second_first)
    outcomes = [first_replies[0]["type"], interleaved[0][0]["type"]]
    assert sorted(outcomes) == sorted([MessageType.RESUMED, MessageType.ERROR])
    loser = first_replies if first_replies[0]["type"] == MessageType.ERROR else interleaved[0]
    assert error_of(loser) == ErrorCode.INVALID_TOKEN


# ---- browsers away and back ------------------------------------------------------------


def test_an_away_browser_is_announced_and_gets_the_mac_clients_frames_after_resuming(gateway: Gateway) -> None:
    mac, code, _ = register_resumable(gateway)
    browser, peer, token = join_resumable(gateway, code)
    gateway.vanished.add(browser)  # no $disconnect: the mac-client's post meets a 410
    assert send(gateway, mac, "one") == [protocol.peer_away(peer)]
    assert send(gateway, mac, "two", to=peer) == []
    new_browser, reply, after = resumed(gateway, token)
    assert reply == {
        "type": "resumed",
        "role": "browser",
        "code": code,
        "peer": peer,
        "peers": [{"peer": "mac", "state": "present"}],
        "resume_token": reply["resume_token"],
    }
    assert data_of(after) == ["one", "two"]
    assert gateway.last(mac) == protocol.peer_back(peer)
    assert send(gateway, new_browser, "back") == []
    assert gateway.last(mac) == protocol.frame(peer, "back")


def test_the_resumed_mac_client_sees_each_browsers_state(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "m", "resumable": True, "approve": True})
    code, token = reply["code"], reply["resume_token"]
    admitted, away, waiting = gateway.connect(), gateway.connect(), gateway.connect()
    peers = {}
    for browser in (admitted, away, waiting):
        (_pending,) = auth(gateway, browser, code)
        peers[browser] = gateway.last(mac)["peer"]
    for browser in (admitted, away):
        gateway.message(mac, {"action": "admit", "peer": peers[browser]})
    gateway.disconnect(away)
    gateway.disconnect(mac)
    _, reply, _ = resumed(gateway, token)
    states = {p["peer"]: p["state"] for p in reply["peers"]}
    assert states == {peers[admitted]: "present", peers[away]: "away", peers[waiting]: "pending"}


# ---- goodbyes ------------------------------------------------------------------------


def test_end_closes_the_session_for_everyone_and_voids_every_token(gateway: Gateway) -> None:
    mac, code, mac_token = register_resumable(gateway)
    present, _, _ = join_resumable(gateway, code)
    away, _, away_token = join_resumable(gateway, code)
    gateway.disconnect(away)
    assert gateway.message(mac, {"action": "end"}) == [protocol.ended()]
    assert gateway.last(present) == protocol.session_closed()
    assert protocol.session_closed() not in gateway.sent[away]
    assert active_sessions(gateway) == 0
    for token in (mac_token, away_token):
        _, replies = resume(gateway, token)
        assert error_of(replies) == ErrorCode.INVALID_TOKEN


def test_end_and_leave_work_in_v1_sessions(gateway: Gateway) -> None:
    mac, code = gateway.register()
    leaving, peer = gateway.join(code)
    staying, _ = gateway.join(code)
    assert gateway.message(leaving, {"action": "leave"}) == [protocol.left()]
    assert gateway.last(mac) == protocol.peer_left(peer)
    assert gateway.message(mac, {"action": "end"}) == [protocol.ended()]
    assert gateway.last(staying) == protocol.session_closed()
    assert active_sessions(gateway) == 0


def test_only_the_mac_client_ends_and_only_browsers_leave(gateway: Gateway) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    stranger = gateway.connect()
    assert error_of(gateway.message(browser, {"action": "end"})) == ErrorCode.NOT_MAC
    assert error_of(gateway.message(stranger, {"action": "end"})) == ErrorCode.NOT_BOUND
    assert error_of(gateway.message(mac, {"action": "leave"})) == ErrorCode.BAD_REQUEST
    assert error_of(gateway.message(stranger, {"action": "leave"})) == ErrorCode.NOT_BOUND
    assert active_sessions(gateway) == 1


def test_a_browser_that_left_cannot_resume(gateway: Gateway) -> None:
    _, code, _ = register_resumable(gateway)
    browser, _, token = join_resumable(gateway, code)
    gateway.message(browser, {"action": "leave"})
    _, replies = resume(gateway, token)
    assert error_of(replies) == ErrorCode.INVALID_TOKEN


# ---- the grace timer ------------------------------------------------------------------


def test_grace_timers_are_delayed_by_resume_grace_seconds(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESUME_GRACE_SECONDS", "7")
    mac, _, _ = register_resumable(gateway)
    gateway.disconnect(mac)
    (timer,) = gateway.grace_timers
    assert timer["DelaySeconds"] == 7


def test_grace_expiry_of_an_away_mac_client_closes_a_silent_browser_and_drops_the_count(gateway: Gateway) -> None:
    mac, code, token = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    assert gateway.fire_grace_timers() == {"batchItemFailures": []}
    assert gateway.last(browser) == protocol.session_closed()  # without having sent anything
    assert active_sessions(gateway) == 0
    _, replies = resume(gateway, token)
    assert error_of(replies) == ErrorCode.INVALID_TOKEN


def test_grace_expiry_of_an_away_browser_removes_it_and_tells_the_mac_client(gateway: Gateway) -> None:
    mac, code, _ = register_resumable(gateway)
    browser, peer, token = join_resumable(gateway, code)
    gateway.disconnect(browser)
    assert gateway.last(mac) == protocol.peer_away(peer)
    gateway.fire_grace_timers()
    assert gateway.last(mac) == protocol.peer_left(peer)
    assert active_sessions(gateway) == 1
    _, replies = resume(gateway, token)
    assert error_of(replies) == ErrorCode.INVALID_TOKEN
    assert error_of(send(gateway, mac, "x", to=peer)) == ErrorCode.UNKNOWN_PEER


def test_a_timer_for_a_holder_that_came_back_does_nothing(gateway: Gateway) -> None:
    mac, code, token = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    new_mac, _, _ = resumed(gateway, token)
    gateway.fire_grace_timers()
    assert protocol.session_closed() not in gateway.sent[browser]
    assert send(gateway, browser, "on") == []
    assert data_of(gateway.sent[new_mac]) == ["on"]
    assert active_sessions(gateway) == 1


def test_a_grace_message_the_relay_did_not_write_is_ignored(gateway: Gateway) -> None:
    gateway.grace_timers.append({"MessageBody": "not json", "DelaySeconds": 1})
    assert gateway.fire_grace_timers() == {"batchItemFailures": []}


# ---- lifetime and TTL -------------------------------------------------------------------


def test_a_resumable_sessions_ttl_is_its_max_lifetime_and_ends_it_as_expired(
    gateway: Gateway, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_SESSION_SECONDS", "100000")
    mac, code, _ = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    meta = next(i for i in table_items(dynamodb) if i["pk"]["S"] == f"S#{code}" and i["sk"]["S"] == "#META")
    lifetime = int(meta["expires_at"]["N"]) - int(meta["created_at"]["N"])
    assert lifetime == 100000  # not the connection-bound SessionTtlSeconds
    # Away for a while, then back: the TTL does not move and does not end it meanwhile.
    gateway.disconnect(mac)
    new_mac, _, _ = resumed(gateway, register_token(gateway, mac))
    gateway.expire(code)  # TTL reaches MaxSessionSeconds
    assert gateway.last(browser) == protocol.session_closed()
    assert new_mac in gateway.closed_by_relay
    assert active_sessions(gateway) == 0


@pytest.mark.parametrize("first", ["sessions", "places"])
def test_a_browser_still_connected_when_ttl_sweeps_its_resumable_session_away_is_told_once(
    gateway: Gateway, dynamodb: Any, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """At MaxSessionSeconds, DynamoDB's TTL deletes the session and its places in no set
    order, perhaps all before the expiry function sees one. The connection record of a
    browser still connected outlives them (its TTL is the connection's), so the
    expiry function can still unbind and tell it."""
    monkeypatch.setenv("MAX_SESSION_SECONDS", "60")
    mac, code, token = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    new_mac, _, _ = resumed(gateway, token)

    records = ttl_sweep(dynamodb, time.time() + 120, first)  # past the session's end only
    assert gateway.deliver_stream_records(records) == {"batchItemFailures": []}
    assert gateway.sent[browser].count(protocol.session_closed()) == 1
    assert new_mac in gateway.closed_by_relay
    assert active_sessions(gateway) == 0
    assert gateway.deliver_stream_records(records) == {"batchItemFailures": []}  # delivered again
    assert gateway.sent[browser].count(protocol.session_closed()) == 1


def register_token(gateway: Gateway, mac: str) -> str:
    return str(gateway.sent[mac][0]["resume_token"])


def test_a_frame_sent_while_its_mac_client_resumes_is_delivered_once_not_stranded(gateway: Gateway) -> None:
    """The resume runs between the browser's read (mac-client away) and its hold."""
    mac, code, token = register_resumable(gateway)
    browser, peer, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    resumed_on: list[str] = []

    def resume_first(**_: Any) -> None:
        if not resumed_on:
            resumed_on.append(resumed(gateway, token)[0])

    events = wiring.session_store().table.client.meta.events
    events.register("before-call.dynamodb.UpdateItem", resume_first)
    try:
        # The browser hears peer_back from the resume that ran inside its request.
        assert send(gateway, browser, "racing") == [protocol.peer_back(protocol.MAC_PEER)]
    finally:
        events.unregister("before-call.dynamodb.UpdateItem", resume_first)
    (new_mac,) = resumed_on
    assert [m["type"] for m in gateway.sent[new_mac]] == ["resumed", "frame"]
    assert gateway.last(new_mac) == protocol.frame(peer, "racing")
