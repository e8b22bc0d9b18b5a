"""The relay's rules (relay.pairing.Relay) against the in-memory store: milliseconds a test.

These check the rules themselves; tests/test_relay_rules.py checks the same protocol end
to end through the handlers over moto, and tests/test_store_contract.py holds the
in-memory store to the DynamoDB one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from relay import protocol, session_codes
from relay.model import BrowserConnection, ExpiredSession, MacConnection
from relay.pairing import Relay
from relay.protocol import (
    AdmitRequest,
    AuthRequest,
    ErrorCode,
    KickRequest,
    LockRequest,
    PingRequest,
    RegisterRequest,
    SendRequest,
    UnlockRequest,
)
from relay.settings import Settings

from tests.support.codes import other_well_formed_code
from tests.support.memory_store import MemoryStore
from tests.support.recording_connections import RecordingConnections

IP = "203.0.113.20"
SETTINGS = Settings(table_name="in-memory", max_browsers=3, max_auth_attempts=3, auth_failures_per_ip=5)


@dataclass
class World:
    relay: Relay
    store: MemoryStore
    connections: RecordingConnections
    _ids: Iterator[int]

    def connect(self) -> str:
        return f"conn-{next(self._ids)}"

    def sent(self, connection_id: str) -> list[protocol.Message]:
        return self.connections.sent[connection_id]

    def last(self, connection_id: str) -> protocol.Message:
        return self.sent(connection_id)[-1]

    def register(self, approve: bool = False) -> tuple[str, str]:
        mac = self.connect()
        self.relay.register(mac, RegisterRequest("mac-app", approve))
        reply = self.last(mac)
        assert reply["type"] == "registered", reply
        return mac, str(reply["code"])

    def auth(self, code: str, connection_id: str | None = None, ip: str = IP) -> tuple[str, protocol.Message]:
        browser = connection_id or self.connect()
        self.relay.authenticate(browser, AuthRequest(code), ip, "TestAgent/1")
        return browser, self.last(browser)

    def join(self, code: str) -> tuple[str, str]:
        browser, reply = self.auth(code)
        assert reply["type"] == "authenticated", reply
        return browser, str(reply["peer"])


@pytest.fixture
def world() -> World:
    store = MemoryStore(SETTINGS)
    connections = RecordingConnections()
    return World(Relay(store, connections, SETTINGS), store, connections, itertools.count(1))


def error(code: ErrorCode) -> protocol.Message:
    return protocol.error(code)


# ---- register ------------------------------------------------------------------------


def test_register_answers_a_well_formed_code_and_counts_the_session(world: World) -> None:
    mac, code = world.register()

    assert protocol.is_well_formed_code(code)
    assert world.store.get_connection(mac) == MacConnection(mac, code)
    assert world.store.session_count() == 1


def test_a_bound_connection_cannot_register_again(world: World) -> None:
    mac, _ = world.register()

    world.relay.register(mac, RegisterRequest("again"))

    assert world.last(mac) == error(ErrorCode.ALREADY_BOUND)
    assert world.store.session_count() == 1


def test_a_mac_client_gone_before_hearing_its_code_leaves_no_session(world: World) -> None:
    mac = world.connect()
    world.connections.vanished.add(mac)

    world.relay.register(mac, RegisterRequest("mac-app"))

    assert world.store.session_count() == 0
    assert world.store.get_connection(mac) is None


def test_no_free_code_is_an_internal_error(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: "K7M2QX")
    world.register()
    mac = world.connect()

    world.relay.register(mac, RegisterRequest("mac-app"))

    assert world.last(mac) == error(ErrorCode.INTERNAL_ERROR)
    assert world.store.session_count() == 1


# ---- auth ----------------------------------------------------------------------------


def test_the_mac_client_hears_of_a_browser_before_the_browser_is_let_in(world: World) -> None:
    mac, code = world.register()

    browser, peer = world.join(code)

    assert world.last(mac) == protocol.peer_joined(peer)
    assert world.last(browser) == protocol.authenticated(code, peer)
    assert world.store.get_connection(browser) == BrowserConnection(browser, code, peer, mac)


def test_a_code_is_taken_as_people_type_it(world: World) -> None:
    _, code = world.register()

    _, reply = world.auth(f" {code[:3].lower()}-{code[3:]} ")

    assert reply["type"] == "authenticated"


@pytest.mark.parametrize("typed", ["", "K7M2Q", "K7M2QXX", "I0O1L5", "K7M2Q!"])
def test_malformed_and_unknown_codes_get_the_same_answer(world: World, typed: str) -> None:
    _, code = world.register()

    assert world.auth(typed)[1] == error(ErrorCode.INVALID_CODE)
    assert world.auth(other_well_formed_code(code))[1] == error(ErrorCode.INVALID_CODE)


def test_too_many_failures_on_a_connection_close_it(world: World) -> None:
    _, code = world.register()
    guesser = world.connect()

    replies = [world.auth(other_well_formed_code(code), guesser)[1] for _ in range(SETTINGS.max_auth_attempts)]

    assert replies[:-1] == [error(ErrorCode.INVALID_CODE)] * (SETTINGS.max_auth_attempts - 1)
    assert replies[-1] == error(ErrorCode.TOO_MANY_ATTEMPTS)
    assert world.connections.closed == [guesser]


def test_an_address_past_its_failure_limit_is_rate_limited_before_the_code_is_looked_at(world: World) -> None:
    _, code = world.register()
    for _ in range(SETTINGS.auth_failures_per_ip):
        world.auth(other_well_formed_code(code))

    assert world.auth(code)[1] == error(ErrorCode.RATE_LIMITED)
    assert world.auth(code, ip="192.0.2.1")[1]["type"] == "authenticated"


def test_a_bound_connection_cannot_auth(world: World) -> None:
    mac, code = world.register()
    browser, _ = world.join(code)

    assert world.auth(code, browser)[1] == error(ErrorCode.ALREADY_BOUND)
    assert world.auth(code, mac)[1] == error(ErrorCode.ALREADY_BOUND)


def test_a_full_session_turns_the_next_browser_away(world: World) -> None:
    _, code = world.register()
    for _ in range(SETTINGS.max_browsers):
        world.join(code)

    assert world.auth(code)[1] == error(ErrorCode.SESSION_FULL)


def test_a_browser_whose_mac_client_is_gone_gets_invalid_code_and_the_session_ends(world: World) -> None:
    mac, code = world.register()
    world.connections.vanished.add(mac)

    browser, reply = world.auth(code)

    assert reply == error(ErrorCode.INVALID_CODE)
    assert world.store.get_connection(browser) is None
    assert world.store.session_count() == 0


# ---- approval ------------------------------------------------------------------------


def test_in_approval_mode_a_browser_waits_until_admitted(world: World) -> None:
    mac, code = world.register(approve=True)

    browser, reply = world.auth(code)

    assert reply == protocol.pending()
    peer = world.last(mac)["peer"]
    assert world.last(mac) == protocol.join_request(peer, IP, "TestAgent/1")
    world.relay.send(browser, SendRequest("too early"))
    assert world.last(browser) == error(ErrorCode.NOT_ADMITTED)

    world.relay.admit(mac, AdmitRequest(peer))

    assert world.last(browser) == protocol.authenticated(code, peer)
    assert world.last(mac) == protocol.peer_joined(peer)
    world.relay.send(browser, SendRequest("now"))
    assert world.last(mac) == protocol.frame(peer, "now")


def test_frames_from_the_mac_client_skip_pending_browsers(world: World) -> None:
    mac, code = world.register(approve=True)
    pending, _ = world.auth(code)

    world.relay.send(mac, SendRequest("to all"))

    assert world.last(pending) == protocol.pending()


def test_kick_removes_a_browser_and_frees_its_seat(world: World) -> None:
    mac, code = world.register()
    browser, peer = world.join(code)

    world.relay.kick(mac, KickRequest(peer))

    assert world.last(browser) == protocol.kicked()
    assert world.last(mac) == protocol.peer_left(peer)
    assert world.store.get_connection(browser) is None
    session = world.store.validate_session_code(code)
    assert session is not None
    assert session.browser_count == 0


def test_only_the_mac_client_may_kick_or_admit(world: World) -> None:
    mac, code = world.register()
    browser, peer = world.join(code)
    stranger = world.connect()

    world.relay.kick(browser, KickRequest(peer))
    world.relay.admit(stranger, AdmitRequest(peer))
    world.relay.kick(mac, KickRequest("nobody"))

    assert world.last(browser) == error(ErrorCode.NOT_MAC)
    assert world.last(stranger) == error(ErrorCode.NOT_BOUND)
    assert world.last(mac) == error(ErrorCode.UNKNOWN_PEER)


# ---- send ----------------------------------------------------------------------------


def test_frames_flow_both_ways(world: World) -> None:
    mac, code = world.register()
    first, first_peer = world.join(code)
    second, _ = world.join(code)

    world.relay.send(first, SendRequest({"n": 1}))
    world.relay.send(mac, SendRequest("one", to=first_peer))
    world.relay.send(mac, SendRequest("all"))

    assert world.last(mac) == protocol.frame(first_peer, {"n": 1})
    assert world.sent(first)[-2:] == [
        protocol.frame(protocol.MAC_PEER, "one"),
        protocol.frame(protocol.MAC_PEER, "all"),
    ]
    assert world.last(second) == protocol.frame(protocol.MAC_PEER, "all")


def test_a_browser_to_mac_frame_costs_one_post(world: World) -> None:
    _, code = world.register()
    browser, _ = world.join(code)
    before = world.connections.posts

    world.relay.send(browser, SendRequest("x"))

    assert world.connections.posts == before + 1


def test_send_needs_a_binding_and_a_known_peer(world: World) -> None:
    mac, code = world.register()
    browser, _ = world.join(code)
    stranger = world.connect()

    world.relay.send(stranger, SendRequest("x"))
    world.relay.send(browser, SendRequest("x", to="someone-else"))
    world.relay.send(mac, SendRequest("x", to="nobody"))

    assert world.last(stranger) == error(ErrorCode.NOT_BOUND)
    assert world.last(browser) == error(ErrorCode.UNKNOWN_PEER)
    assert world.last(mac) == error(ErrorCode.UNKNOWN_PEER)


def test_a_frame_too_large_is_refused_to_its_sender(world: World) -> None:
    mac, code = world.register()
    world.join(code)

    world.relay.send(mac, SendRequest("x" * protocol.MAX_MESSAGE_BYTES))

    assert world.last(mac) == error(ErrorCode.PAYLOAD_TOO_LARGE)


def test_a_browser_whose_mac_client_vanished_hears_peer_gone_and_the_others_session_closed(world: World) -> None:
    mac, code = world.register()
    sender, _ = world.join(code)
    other, _ = world.join(code)
    world.connections.vanished.add(mac)

    world.relay.send(sender, SendRequest("hello?"))

    assert world.last(sender) == error(ErrorCode.PEER_GONE)
    assert world.last(other) == protocol.session_closed()
    assert world.store.session_count() == 0


def test_a_vanished_browser_is_removed_when_the_mac_client_posts_to_it(world: World) -> None:
    mac, code = world.register()
    browser, peer = world.join(code)
    world.connections.vanished.add(browser)

    world.relay.send(mac, SendRequest("anyone?"))

    assert world.last(mac) == protocol.peer_left(peer)
    assert world.store.get_connection(browser) is None


def test_ping_gets_pong(world: World) -> None:
    connection = world.connect()

    world.relay.ping(connection, PingRequest())

    assert world.sent(connection) == [protocol.pong()]


# ---- leaving -------------------------------------------------------------------------


def test_a_mac_client_leaving_ends_its_session_for_every_browser(world: World) -> None:
    mac, code = world.register()
    browsers = [world.join(code)[0] for _ in range(2)]

    world.relay.disconnect(mac)
    world.relay.disconnect(mac)

    assert [world.last(b) for b in browsers] == [protocol.session_closed()] * 2
    assert world.store.session_count() == 0
    assert world.auth(code)[1] == error(ErrorCode.INVALID_CODE)


def test_a_browser_leaving_is_announced_to_its_mac_client(world: World) -> None:
    mac, code = world.register()
    browser, peer = world.join(code)

    world.relay.disconnect(browser)

    assert world.last(mac) == protocol.peer_left(peer)
    assert world.store.get_connection(browser) is None


def test_an_unbound_connection_leaving_forgets_its_failures(world: World) -> None:
    guesser = world.connect()
    world.auth("ZZZZZZ", guesser)

    world.relay.disconnect(guesser)

    assert world.store.get_connection(guesser) is None


def test_an_expired_session_closes_its_browsers_and_its_mac_client_once(world: World) -> None:
    mac, code = world.register()
    browser, _ = world.join(code)
    expired = world.store.delete_expired_session(code)

    world.relay.expire_session(expired)
    world.relay.expire_session(ExpiredSession(expired.code, expired.mac_connection_id, expired.created_at))

    assert world.sent(browser).count(protocol.session_closed()) == 1
    assert world.connections.closed == [mac]
    assert world.store.session_count() == 0


# ---- claim, then look; lock; kick bans (issue 10) ------------------------------------------


def test_a_refused_claim_looks_nothing_up_and_a_right_code_never_joins(world: World) -> None:
    mac, code = world.register()
    guesser = world.connect()
    for _ in range(SETTINGS.max_auth_attempts - 1):
        world.auth(other_well_formed_code(code), guesser)
    assert world.last(guesser) == error(ErrorCode.INVALID_CODE)
    world.auth(other_well_formed_code(code), guesser)
    assert world.last(guesser) == error(ErrorCode.TOO_MANY_ATTEMPTS)

    world.auth(code, guesser)

    assert world.last(guesser) == error(ErrorCode.TOO_MANY_ATTEMPTS)
    assert [m["type"] for m in world.sent(mac)] == ["registered"]


def test_the_address_limit_refuses_before_looking(world: World) -> None:
    mac, code = world.register()
    for _ in range(SETTINGS.auth_failures_per_ip):
        world.auth(other_well_formed_code(code))

    _, reply = world.auth(code)

    assert reply == error(ErrorCode.RATE_LIMITED)
    assert [m["type"] for m in world.sent(mac)] == ["registered"]


def test_claim_attempt_and_attempt_failed_are_what_a_resume_path_calls(world: World) -> None:
    connection = world.connect()
    for _ in range(SETTINGS.max_auth_attempts - 1):
        assert world.relay.claim_attempt(connection, IP) is True
        world.relay.attempt_failed(connection, IP, ErrorCode.BAD_REQUEST)
        assert world.last(connection) == error(ErrorCode.BAD_REQUEST)
    assert world.relay.claim_attempt(connection, IP) is True
    world.relay.attempt_failed(connection, IP)
    assert world.last(connection) == error(ErrorCode.TOO_MANY_ATTEMPTS)
    assert connection in world.connections.closed

    assert world.relay.claim_attempt(connection, IP) is False
    assert world.last(connection) == error(ErrorCode.TOO_MANY_ATTEMPTS)


def test_a_locked_code_answers_exactly_as_an_unknown_one_and_counts(world: World) -> None:
    mac, code = world.register()
    browser, peer = world.join(code)
    world.relay.lock(mac, LockRequest())
    assert world.last(mac) == protocol.locked()

    _, locked_reply = world.auth(code)
    _, unknown_reply = world.auth(other_well_formed_code(code))

    assert locked_reply == unknown_reply == error(ErrorCode.INVALID_CODE)
    assert world.store.attempts_from(IP) == 2
    world.relay.send(browser, SendRequest("still in"))
    assert world.last(mac) == protocol.frame(peer, "still in")
    world.relay.unlock(mac, UnlockRequest())
    assert world.last(mac) == protocol.unlocked()
    world.join(code)


def test_only_the_mac_client_locks(world: World) -> None:
    _, code = world.register()
    browser, _ = world.join(code)

    world.relay.lock(browser, LockRequest())
    world.relay.unlock(browser, UnlockRequest())
    stranger = world.connect()
    world.relay.lock(stranger, LockRequest())

    assert world.sent(browser)[-2:] == [error(ErrorCode.NOT_MAC)] * 2
    assert world.last(stranger) == error(ErrorCode.NOT_BOUND)
    world.join(code)  # still open


def test_a_kicked_address_is_banned_from_that_session_only(world: World) -> None:
    mac, code = world.register(approve=True)
    browser, reply = world.auth(code)
    assert reply == protocol.pending()
    peer = world.last(mac)["peer"]

    world.relay.kick(mac, KickRequest(peer))

    for _ in range(SETTINGS.max_auth_attempts - 1):  # each costs an attempt
        _, again = world.auth(code, browser)
        assert again == error(ErrorCode.BANNED)
    _, elsewhere = world.auth(code, ip="198.51.100.250")
    assert elsewhere == protocol.pending()
    _, other_session = world.register()
    world.auth(other_session, browser)
    assert world.last(browser)["type"] == "authenticated"
