"""One contract for both session stores: the in-memory one the rule tests use
(tests/support/memory_store.py) and the DynamoDB one (relay.store, here on moto).

Every test runs against both, so the fake cannot drift from the real store. Races are
not here: they need DynamoDB's own interleavings (tests/test_concurrency.py,
tests/test_invariants.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from relay import session_codes
from relay.model import (
    AlreadyBound,
    Browser,
    BrowserConnection,
    CodeSpaceExhausted,
    EndedSession,
    ExpiredPlace,
    ExpiredSession,
    HoldRefused,
    InvalidCode,
    InvalidToken,
    Joining,
    MacConnection,
    NotAway,
    RateLimited,
    Registration,
    Resumption,
    SessionFull,
    TooManyAttempts,
    UnboundConnection,
)
from relay.ports import SessionStore
from relay.protocol import MAC_PEER
from relay.settings import Settings
from relay.store import DynamoDbStore
from relay.store.expiry import expired_place_from_record, expired_session_from_record

from tests.support.aws import TABLE_NAME
from tests.support.memory_store import MemoryStore
from tests.support.stream_records import ttl_removal_record, ttl_sweep

TTL = 3600
WINDOW = 600
SETTINGS = Settings(
    table_name=TABLE_NAME,
    max_browsers=2,
    max_code_attempts=3,
    session_ttl_seconds=TTL,
    auth_failure_window_seconds=WINDOW,
    max_auth_attempts=3,
    auth_failures_per_ip=4,
    registrations_per_ip=2,
    max_held_frames=3,
)
IP = "203.0.113.9"


class Clock:
    """A settable clock both stores read."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    store: SessionStore
    clock: Clock
    delete_by_ttl: Callable[[str], ExpiredSession]  # plays DynamoDB's TTL on a session
    delete_place_by_ttl: Callable[[str, str], ExpiredPlace | None]  # and on a browser's place
    # and on every item past its TTL at once, one kind first ("sessions", "places", "connections")
    sweep_by_ttl: Callable[[str], list[ExpiredSession | ExpiredPlace]]


def _dynamodb_subject(client: Any) -> Subject:
    clock = Clock()

    def delete_by_ttl(code: str) -> ExpiredSession:
        key = {"pk": {"S": f"S#{code}"}, "sk": {"S": "#META"}}
        old = client.get_item(TableName=TABLE_NAME, Key=key)["Item"]
        client.delete_item(TableName=TABLE_NAME, Key=key)
        expired = expired_session_from_record(ttl_removal_record(TABLE_NAME, old))
        assert expired is not None
        return expired

    def delete_place_by_ttl(code: str, peer: str) -> ExpiredPlace | None:
        key = {"pk": {"S": f"S#{code}"}, "sk": {"S": f"P#{peer}"}}
        old = client.get_item(TableName=TABLE_NAME, Key=key)["Item"]
        client.delete_item(TableName=TABLE_NAME, Key=key)
        return expired_place_from_record(ttl_removal_record(TABLE_NAME, old))

    def sweep_by_ttl(first: str) -> list[ExpiredSession | ExpiredPlace]:
        records = ttl_sweep(client, clock(), first)
        removals = (expired_session_from_record(r) or expired_place_from_record(r) for r in records)
        return [removal for removal in removals if removal is not None]

    return Subject(
        DynamoDbStore(client, SETTINGS, clock=clock), clock, delete_by_ttl, delete_place_by_ttl, sweep_by_ttl
    )


def _memory_subject() -> Subject:
    clock = Clock()
    store = MemoryStore(SETTINGS, clock=clock)
    return Subject(store, clock, store.delete_expired_session, store.delete_expired_place, store.sweep_by_ttl)


@pytest.fixture(params=["memory", "dynamodb"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "memory":
        yield _memory_subject()
    else:
        yield _dynamodb_subject(request.getfixturevalue("dynamodb"))


@pytest.fixture
def codes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The codes registrations will draw, in order (append to choose them)."""
    drawn: list[str] = []
    fresh = (f"K{n:05d}".translate(str.maketrans("0123456789", "ABCDEFGHJK")) for n in itertools.count())
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: drawn.pop(0) if drawn else next(fresh))
    return drawn


def join(store: SessionStore, code: str, connection_id: str, peer: str, admitted: bool = True) -> BrowserConnection:
    session = store.validate_session_code(code)
    assert session is not None
    store.add_browser(Joining(connection_id, session, peer, admitted=admitted))
    connection = store.get_connection(connection_id)
    assert isinstance(connection, BrowserConnection)
    return connection


def seats_taken(store: SessionStore, code: str) -> int:
    session = store.validate_session_code(code)
    assert session is not None
    return session.browser_count


# ---- codes and sessions ---------------------------------------------------------------


def test_register_binds_the_connection_as_mac_client_of_a_new_session(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "client-1", approve=True))

    assert store.get_connection("mac") == MacConnection("mac", code)
    session = store.validate_session_code(code)
    assert session is not None
    assert (session.mac_connection_id, session.browser_count, session.approve) == ("mac", 0, True)
    assert store.session_count() == 1


def test_a_bound_connection_cannot_register_again(subject: Subject) -> None:
    subject.store.register_mac_client(Registration("mac", "client-1"))

    with pytest.raises(AlreadyBound):
        subject.store.register_mac_client(Registration("mac", "client-1"))
    assert subject.store.session_count() == 1


def test_a_taken_code_is_drawn_again(subject: Subject, codes: list[str]) -> None:
    codes += ["AAAAAA", "AAAAAA", "BBBBBB"]
    assert subject.store.register_mac_client(Registration("mac-1", "c")) == "AAAAAA"

    assert subject.store.register_mac_client(Registration("mac-2", "c")) == "BBBBBB"


def test_a_code_past_its_ttl_but_not_yet_deleted_is_still_taken(subject: Subject, codes: list[str]) -> None:
    codes += ["AAAAAA", "AAAAAA", "BBBBBB"]
    subject.store.register_mac_client(Registration("mac-1", "c"))
    subject.clock.now += TTL + 1

    assert subject.store.register_mac_client(Registration("mac-2", "c")) == "BBBBBB"


def test_registration_gives_up_after_the_attempt_bound(subject: Subject, codes: list[str]) -> None:
    codes += ["AAAAAA"] * (1 + SETTINGS.max_code_attempts)
    subject.store.register_mac_client(Registration("mac-1", "c"))

    with pytest.raises(CodeSpaceExhausted):
        subject.store.register_mac_client(Registration("mac-2", "c"))
    assert subject.store.get_connection("mac-2") is None


def test_unknown_connections_and_codes_are_none(subject: Subject) -> None:
    assert subject.store.get_connection("nobody") is None
    assert subject.store.validate_session_code("ZZZZZZ") is None


def test_ending_a_session_unbinds_its_browsers_and_drops_the_count(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    join(store, code, "b1", "p1")
    join(store, code, "b2", "p2", admitted=False)

    ended = store.remove_session(code, "mac")

    assert ended == EndedSession(code, [Browser("p1", "b1"), Browser("p2", "b2", admitted=False)])
    assert store.validate_session_code(code, include_expired=True) is None
    assert [store.get_connection(c) for c in ("mac", "b1", "b2")] == [None, None, None]
    assert store.session_count() == 0


def test_ending_a_session_twice_or_by_another_mac_client_is_none(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))

    assert store.remove_session(code, "other-mac") is None
    assert store.remove_session(code, "mac") is not None
    assert store.remove_session(code, "mac") is None
    assert store.session_count() == 0


# ---- browsers --------------------------------------------------------------------------


def test_a_browser_joins_and_is_found_by_its_mac_client(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))

    join(store, code, "b1", "p1")

    assert store.get_connection("b1") == BrowserConnection("b1", code, "p1", "mac", admitted=True)
    assert store.get_browser(code, "mac", "p1") == Browser("p1", "b1")
    assert store.get_browser(code, "another-mac", "p1") is None
    assert store.list_browsers(code, "mac") == [Browser("p1", "b1")]
    assert store.list_browsers(code, "another-mac") == []
    assert seats_taken(store, code) == 1


def test_a_bound_connection_cannot_join(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    join(store, code, "b1", "p1")

    with pytest.raises(AlreadyBound):
        join(store, code, "mac", "p2")
    with pytest.raises(AlreadyBound):
        join(store, code, "b1", "p3")


def test_a_full_session_takes_no_more_browsers(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    stale = store.validate_session_code(code)
    assert stale is not None
    for n in range(SETTINGS.max_browsers):
        join(store, code, f"b{n}", f"p{n}")

    with pytest.raises(SessionFull):
        store.add_browser(Joining("late", stale, "late-peer"))
    assert store.get_connection("late") is None


def test_joining_a_session_that_ended_or_changed_hands_is_an_invalid_code(subject: Subject, codes: list[str]) -> None:
    store = subject.store
    codes += ["AAAAAA", "AAAAAA"]
    store.register_mac_client(Registration("mac-1", "c"))
    old = store.validate_session_code("AAAAAA")
    assert old is not None
    store.remove_session("AAAAAA", "mac-1")

    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b1", old, "p1"))

    store.register_mac_client(Registration("mac-2", "c"))  # draws the same code again
    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b1", old, "p1"))


def test_joining_a_session_past_its_ttl_is_an_invalid_code(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    session = store.validate_session_code(code)
    assert session is not None
    subject.clock.now += TTL + 1

    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b1", session, "p1"))


def test_joining_clears_the_connections_failed_auths(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    store.claim_attempt("b1", IP)

    join(store, code, "b1", "p1")
    store.remove_session(code, "mac")

    assert store.get_connection("b1") is None


def test_admitting_a_pending_browser_once(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c", approve=True))
    join(store, code, "b1", "p1", admitted=False)
    pending = store.get_browser(code, "mac", "p1")
    assert pending == Browser("p1", "b1", admitted=False)

    assert store.admit_browser(code, pending) is True
    assert store.admit_browser(code, pending) is False

    assert store.get_browser(code, "mac", "p1") == Browser("p1", "b1", admitted=True)
    assert store.get_connection("b1") == BrowserConnection("b1", code, "p1", "mac", admitted=True)


def test_admitting_a_browser_that_left_is_refused(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c", approve=True))
    connection = join(store, code, "b1", "p1", admitted=False)
    pending = store.get_browser(code, "mac", "p1")
    assert pending is not None
    store.remove_browser(connection)

    assert store.admit_browser(code, pending) is False


def test_removing_a_browser_frees_its_seat_once(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    connection = join(store, code, "b1", "p1")

    assert store.remove_browser(connection) is True
    assert store.remove_browser(connection) is False

    assert store.get_connection("b1") is None
    assert store.list_browsers(code, "mac") == []
    assert seats_taken(store, code) == 0


def test_removing_a_browser_of_an_ended_session_is_false(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    connection = join(store, code, "b1", "p1")
    store.remove_session(code, "mac")

    assert store.remove_browser(connection) is False
    assert store.session_count() == 0


# ---- connections and limits ------------------------------------------------------------


def test_claims_count_per_connection_and_per_address(subject: Subject) -> None:
    store = subject.store

    claims = [store.claim_attempt("c1", IP) for _ in range(3)]
    store.claim_attempt("c2", IP)

    assert {claim.address for claim in claims} == {IP}
    assert store.get_connection("c1") == UnboundConnection("c1", failed_auths=3)
    assert store.load_auth_context("c2", None, IP).connection == UnboundConnection("c2", failed_auths=1)


def test_a_claim_past_the_connections_limit_is_refused_and_counts_nothing(subject: Subject) -> None:
    store = subject.store
    for _ in range(3):
        store.claim_attempt("c1", IP)

    with pytest.raises(TooManyAttempts):
        store.claim_attempt("c1", IP)

    assert store.get_connection("c1") == UnboundConnection("c1", failed_auths=3)
    store.claim_attempt("c2", IP)  # the address's fourth: the refused one took nothing
    with pytest.raises(RateLimited):
        store.claim_attempt("c3", IP)


def test_a_claim_past_the_addresss_limit_is_refused_and_counts_nothing(subject: Subject) -> None:
    store = subject.store
    for n in range(4):
        store.claim_attempt(f"c{n}", IP)

    with pytest.raises(RateLimited):
        store.claim_attempt("c9", IP)

    assert store.get_connection("c9") is None
    store.claim_attempt("c9", "192.0.2.1")  # other addresses are unaffected


def test_the_connections_limit_is_checked_first(subject: Subject) -> None:
    store = subject.store
    for _ in range(3):
        store.claim_attempt("c1", IP)
    store.claim_attempt("c2", IP)

    with pytest.raises(TooManyAttempts):
        store.claim_attempt("c1", IP)


def test_the_address_count_starts_again_in_the_next_window(subject: Subject) -> None:
    for n in range(4):
        subject.store.claim_attempt(f"c{n}", IP)
    subject.clock.now += WINDOW

    claim = subject.store.claim_attempt("c9", IP)

    assert claim.window_start > 0


def test_a_join_gives_the_addresss_claim_back(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    for n in range(3):
        store.claim_attempt(f"c{n}", IP)
    claim = store.claim_attempt("b1", IP)
    session = store.validate_session_code(code)
    assert session is not None

    store.add_browser(Joining("b1", session, "p1", claim=claim))

    store.claim_attempt("c8", IP)  # the fourth again
    with pytest.raises(RateLimited):
        store.claim_attempt("c9", IP)
    assert store.get_browser(code, "mac", "p1") == Browser("p1", "b1", address=IP)


def test_registrations_per_address_are_limited_per_window(subject: Subject) -> None:
    store = subject.store
    store.register_mac_client(Registration("m1", "c", address=IP))
    store.register_mac_client(Registration("m2", "c", address=IP))

    with pytest.raises(RateLimited):
        store.register_mac_client(Registration("m3", "c", address=IP))

    assert store.get_connection("m3") is None
    assert store.session_count() == 2
    store.register_mac_client(Registration("m4", "c", address="192.0.2.1"))
    subject.clock.now += WINDOW
    store.register_mac_client(Registration("m3", "c", address=IP))


def test_a_locked_session_takes_no_browser_until_unlocked(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    session = store.validate_session_code(code)
    assert session is not None

    assert store.set_session_locked(code, "mac", True) is True
    assert store.validate_session_code(code) == replace(session, locked=True)
    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b1", session, "p1"))  # looked up before the lock
    assert store.set_session_locked(code, "mac", False) is True
    store.add_browser(Joining("b1", session, "p1"))
    assert store.set_session_locked(code, "other-mac", True) is False


def test_a_kick_bans_the_address_from_that_session_only(subject: Subject, codes: list[str]) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    session = store.validate_session_code(code)
    assert session is not None
    store.add_browser(Joining("b1", session, "p1", claim=store.claim_attempt("b1", IP)))
    browser = store.get_connection("b1")
    assert isinstance(browser, BrowserConnection)

    assert store.remove_browser(browser, ban_address=IP) is True

    assert store.load_auth_context("b1", code, IP).banned is True
    assert store.load_auth_context("b1", code, "192.0.2.1").banned is False
    again = store.validate_session_code(code)
    assert again is not None
    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b1", again, "p2", claim=store.claim_attempt("b1", IP)))
    store.add_browser(Joining("b2", again, "p3", claim=store.claim_attempt("b2", "192.0.2.1")))
    # A later session that draws the same code is not banned.
    store.remove_session(code, "mac")
    codes.append(code)
    assert store.register_mac_client(Registration("mac2", "c")) == code
    assert store.load_auth_context("b1", code, IP).banned is False


def test_the_auth_context_has_the_live_session(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))

    context = store.load_auth_context("b1", code, IP)

    assert context.connection is None
    assert context.session == store.validate_session_code(code)
    assert store.load_auth_context("b1", "ZZZZZZ", IP).session is None


def test_forgetting_a_connection(subject: Subject) -> None:
    subject.store.claim_attempt("c1", IP)

    subject.store.forget_connection("c1")
    subject.store.forget_connection("never-seen")

    assert subject.store.get_connection("c1") is None


# ---- time to live ----------------------------------------------------------------------


def test_records_past_their_ttl_count_as_gone(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    join(store, code, "b1", "p1")
    subject.clock.now += TTL + 1

    assert store.get_connection("mac") is None
    assert store.get_connection("b1") is None
    assert store.validate_session_code(code) is None
    assert store.load_auth_context("x", code, IP).session is None
    assert store.get_browser(code, "mac", "p1") is None
    assert store.list_browsers(code, "mac") == []
    assert store.validate_session_code(code, include_expired=True) is not None
    assert store.list_browsers(code, "mac", include_expired=True) == [Browser("p1", "b1")]


# ---- expiry ----------------------------------------------------------------------------


def test_releasing_an_expired_session_unbinds_its_browsers_exactly_once(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    join(store, code, "b1", "p1")
    expired = subject.delete_by_ttl(code)

    assert store.release_expired_session(expired) == EndedSession(code, [Browser("p1", "b1")])
    assert store.release_expired_session(expired) is None

    assert store.get_connection("b1") is None
    assert store.session_count() == 0


def test_releasing_an_expired_session_leaves_a_new_one_with_its_code_alone(subject: Subject, codes: list[str]) -> None:
    store = subject.store
    codes += ["AAAAAA", "AAAAAA"]
    store.register_mac_client(Registration("old-mac", "c"))
    join(store, "AAAAAA", "old-b", "p1")
    expired = subject.delete_by_ttl("AAAAAA")
    store.register_mac_client(Registration("new-mac", "c"))
    join(store, "AAAAAA", "new-b", "p2")

    ended = store.release_expired_session(expired)

    assert ended == EndedSession("AAAAAA", [Browser("p1", "old-b")])
    assert store.get_connection("new-b") == BrowserConnection("new-b", "AAAAAA", "p2", "new-mac")
    assert store.list_browsers("AAAAAA", "new-mac") == [Browser("p2", "new-b")]
    assert store.session_count() == 1


# ---- resumable sessions ---------------------------------------------------------------


def test_a_place_deleted_by_ttl_before_its_session_is_released_once_when_the_session_has_ended(
    subject: Subject,
) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    join(store, code, "b1", "p1")
    join(store, code, "b2", "p2")
    subject.clock.now += SETTINGS.session_ttl_seconds + 1  # everything past its expiry
    place = subject.delete_place_by_ttl(code, "p1")  # TTL takes the place first
    assert place == ExpiredPlace(code, "p1", "b1", "mac")

    assert store.release_expired_place(place) is True
    assert store.release_expired_place(place) is False  # delivered again: told once
    assert store.get_connection("b1") is None
    # The session's own clean-up then finds the other browser only.
    ended = store.release_expired_session(subject.delete_by_ttl(code))
    assert ended == EndedSession(code, [Browser("p2", "b2")])
    assert store.session_count() == 0


@pytest.mark.parametrize("first", ["sessions", "places", "connections"])
def test_ttl_deleting_a_resumable_sessions_items_at_its_end_in_any_order_leaves_its_connected_browser_to_be_told_once(
    subject: Subject, first: str
) -> None:
    """TTL deletes a session's items in no set order, perhaps all before the expiry
    function runs. A connection record's TTL is its connection's, not the session's, so
    the record of a browser still connected at the session's end is there to unbind."""
    store = subject.store
    code = _resumable(store)
    gone = _join_resumable(store, code, "b1", "p1")
    staying = _join_resumable(store, code, "b2", "p2")
    # Near the session's end everyone is on a newer connection: API Gateway ends every
    # connection within two hours. One browser stays away.
    subject.clock.now += SETTINGS.max_session_seconds - 60
    assert store.mark_browser_away(gone)
    assert store.mark_browser_away(staying)
    store.resume_browser(Resumption(code, "p2", "hash-p2", "next-p2", "b3"))
    assert store.mark_mac_away(code, "mac") is not None
    store.resume_mac(Resumption(code, MAC_PEER, f"mac-hash-{code}", "next", "mac2"))
    assert isinstance(store.get_connection("b3"), BrowserConnection)

    subject.clock.now += 61  # past MaxSessionSeconds from registration
    assert store.get_connection("b3") is None  # the session is over: the record no longer binds
    told: list[str] = []
    for removal in subject.sweep_by_ttl(first):
        if isinstance(removal, ExpiredSession):
            ended = store.release_expired_session(removal)
            told += [b.connection_id for b in (ended.browsers if ended else []) if not b.away]
        elif store.release_expired_place(removal):
            told.append(removal.connection_id)
    assert told == ["b3"]
    assert store.session_count() == 0


def test_a_place_deleted_by_ttl_while_its_session_lives_changes_nothing(subject: Subject) -> None:
    store = subject.store
    code = store.register_mac_client(Registration("mac", "c"))
    join(store, code, "b1", "p1")
    place = subject.delete_place_by_ttl(code, "p1")
    assert place is not None

    assert store.release_expired_place(place) is False
    assert store.get_connection("b1") == BrowserConnection("b1", code, "p1", "mac")


def _resumable(store: SessionStore, connection_id: str = "mac") -> str:
    return store.register_mac_client(
        Registration(connection_id, "client-1", token_hash=lambda code: f"mac-hash-{code}")
    )


def _join_resumable(store: SessionStore, code: str, connection_id: str, peer: str) -> BrowserConnection:
    session = store.validate_session_code(code)
    assert session is not None
    store.add_browser(Joining(connection_id, session, peer, token_hash=f"hash-{peer}"))
    connection = store.get_connection(connection_id)
    assert isinstance(connection, BrowserConnection)
    return connection


def test_a_resumable_session_lives_max_session_seconds_and_its_records_say_resumable(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    session = store.validate_session_code(code)
    assert session is not None
    assert session.resumable
    assert session.expires_at - session.created_at == SETTINGS.max_session_seconds
    assert store.get_connection("mac") == MacConnection("mac", code, resumable=True)
    browser = _join_resumable(store, code, "b1", "p1")
    assert browser.resumable
    assert not browser.mac_away


def test_marking_the_mac_client_away_flags_its_browsers_and_forgets_its_connection(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    _join_resumable(store, code, "b1", "p1")
    told = store.mark_mac_away(code, "mac")
    assert told == [Browser("p1", "b1")]
    assert store.mark_mac_away(code, "mac") is None  # once
    assert store.get_connection("mac") is None
    browser = store.get_connection("b1")
    assert isinstance(browser, BrowserConnection)
    assert browser.mac_away
    session = store.validate_session_code(code)
    assert session is not None
    assert session.mac_away
    assert store.session_count() == 1


def test_a_v1_session_is_never_marked_away(subject: Subject) -> None:
    code = subject.store.register_mac_client(Registration("mac", "client-1"))
    assert subject.store.mark_mac_away(code, "mac") is None
    assert subject.store.get_connection("mac") == MacConnection("mac", code)


def test_resume_mac_moves_the_session_and_every_browser_to_the_new_connection(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    _join_resumable(store, code, "b1", "p1")
    away = _join_resumable(store, code, "b2", "p2")
    assert store.mark_browser_away(away)
    store.mark_mac_away(code, "mac")
    resumed = store.resume_mac(Resumption(code, MAC_PEER, f"mac-hash-{code}", "next", "mac2"))
    assert resumed.old_connection_id == "mac"
    assert resumed.was_away
    assert resumed.browsers == [Browser("p1", "b1"), Browser("p2", "b2", away=True)]
    assert store.get_connection("mac2") == MacConnection("mac2", code, resumable=True)
    browser = store.get_connection("b1")
    assert isinstance(browser, BrowserConnection)
    assert (browser.mac_connection_id, browser.mac_away) == ("mac2", False)
    assert store.get_browser(code, "mac2", "p2") == Browser("p2", "b2", away=True)
    with pytest.raises(InvalidToken):
        store.resume_mac(Resumption(code, MAC_PEER, f"mac-hash-{code}", "again", "mac3"))  # used
    with pytest.raises(AlreadyBound):
        store.resume_mac(Resumption(code, MAC_PEER, "next", "again", "b1"))


def test_resume_browser_takes_its_place_back_with_its_own_token_only(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    browser = _join_resumable(store, code, "b1", "p1")
    assert store.mark_browser_away(browser)
    assert not store.mark_browser_away(browser)
    with pytest.raises(InvalidToken):
        store.resume_browser(Resumption(code, "p1", f"mac-hash-{code}", "next", "b2"))
    resumed = store.resume_browser(Resumption(code, "p1", "hash-p1", "next", "b2"))
    assert resumed.was_away
    assert resumed.old_connection_id == "b1"
    assert resumed.connection == BrowserConnection("b2", code, "p1", "mac", resumable=True)
    assert store.get_connection("b2") == resumed.connection
    with pytest.raises(InvalidToken):
        store.resume_browser(Resumption(code, "p1", "hash-p1", "again", "b3"))


def test_held_messages_are_kept_in_order_per_holder_up_to_the_cap(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    with pytest.raises(NotAway):
        store.hold_message(code, "mac", {"n": 0})
    store.mark_mac_away(code, "mac")
    for n in range(SETTINGS.max_held_frames):
        store.hold_message(code, "mac", {"n": n})
    with pytest.raises(HoldRefused):
        store.hold_message(code, "mac", {"n": "one too many"})
    session = store.validate_session_code(code)
    assert session is not None
    held = store.held_messages(code, "mac", session.created_at)
    assert [h.message for h in held] == [{"n": n} for n in range(SETTINGS.max_held_frames)]
    assert store.held_messages(code, "mac", session.created_at + 1) == []  # another session's
    store.drop_held(code, "mac", [held[0].sequence])
    assert [h.message for h in store.held_messages(code, "mac", session.created_at)][:1] == [{"n": 1}]
    store.resume_mac(Resumption(code, MAC_PEER, f"mac-hash-{code}", "next", "mac2"))
    with pytest.raises(NotAway):
        store.hold_message(code, "mac", {"n": "back"})


def test_held_messages_expire_with_the_grace_period(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    browser = _join_resumable(store, code, "b1", "p1")
    store.mark_browser_away(browser)
    store.hold_message(code, "p1", {"n": 1})
    session = store.validate_session_code(code)
    assert session is not None
    subject.clock.now += SETTINGS.resume_grace_seconds + 1
    assert store.held_messages(code, "p1", session.created_at) == []


# ---- resumable sessions with issue 10's limits, bans and lock --------------------------


def _kicked_from_resumable(store: SessionStore) -> str:
    """A resumable session whose mac-client kicked browser p1, which had joined from IP."""
    code = _resumable(store)
    session = store.validate_session_code(code)
    assert session is not None
    store.add_browser(Joining("b1", session, "p1", token_hash="hash-p1", claim=store.claim_attempt("b1", IP)))
    browser = store.get_connection("b1")
    assert isinstance(browser, BrowserConnection)
    assert store.remove_browser(browser, ban_address=IP) is True
    return code


def test_a_kicks_ban_follows_the_session_when_its_mac_client_resumes(subject: Subject) -> None:
    store = subject.store
    code = _kicked_from_resumable(store)

    store.mark_mac_away(code, "mac")
    store.resume_mac(Resumption(code, MAC_PEER, f"mac-hash-{code}", "next", "mac2"))
    store.resume_mac(Resumption(code, MAC_PEER, "next", "after", "mac3"))  # and again, present this time

    assert store.load_auth_context("b2", code, IP).banned is True
    assert store.load_auth_context("b2", code, "192.0.2.1").banned is False
    now = store.validate_session_code(code)
    assert now is not None
    assert now.mac_connection_id == "mac3"
    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b2", now, "p2", claim=store.claim_attempt("b2", IP)))
    store.add_browser(Joining("b3", now, "p3", claim=store.claim_attempt("b3", "192.0.2.1")))


def test_a_kicks_ban_in_a_resumable_session_lasts_as_long_as_the_session(subject: Subject) -> None:
    store = subject.store
    code = _kicked_from_resumable(store)

    subject.clock.now += TTL + 1  # past a connection's lifetime, within the session's
    assert store.validate_session_code(code) is not None
    assert store.load_auth_context("b2", code, IP).banned is True


def test_a_lock_survives_a_resume_of_the_mac_client(subject: Subject) -> None:
    store = subject.store
    code = _resumable(store)
    assert store.set_session_locked(code, "mac", True) is True
    store.mark_mac_away(code, "mac")
    resumed = store.resume_mac(Resumption(code, MAC_PEER, f"mac-hash-{code}", "next", "mac2"))
    assert resumed.session.locked
    session = store.validate_session_code(code)
    assert session is not None
    assert session.locked
    with pytest.raises(InvalidCode):
        store.add_browser(Joining("b1", session, "p1", token_hash="hash-p1"))
    assert store.set_session_locked(code, "mac2", False) is True
    store.add_browser(Joining("b1", session, "p1", token_hash="hash-p1"))


def test_a_resume_gives_its_claims_address_share_back(subject: Subject) -> None:
    """As a join does: a household reconnecting often must not run out of attempts."""
    store = subject.store
    code = _resumable(store)
    browser = _join_resumable(store, code, "b1", "p1")
    store.mark_browser_away(browser)
    store.mark_mac_away(code, "mac")
    for _ in range(SETTINGS.auth_failures_per_ip - 1):
        store.claim_attempt("guesser", IP)  # wrong tokens keep their claims
    store.resume_mac(
        Resumption(code, MAC_PEER, f"mac-hash-{code}", "next", "mac2", claim=store.claim_attempt("mac2", IP))
    )
    store.resume_browser(Resumption(code, "p1", "hash-p1", "next", "b2", claim=store.claim_attempt("b2", IP)))
    store.claim_attempt("b3", IP)  # the last one, still there
    with pytest.raises(RateLimited):
        store.claim_attempt("b4", IP)
