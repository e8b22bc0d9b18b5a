"""Findings 1 and 2: the guessing limits hold however auths interleave; IPv6 by /64;
registrations per address.

The races are deterministic: each auth, just before its first DynamoDB write (after
whatever it has read), starts the next auth, which does the same, and so on; then the
innermost finishes first and each outer one resumes where it stopped. That is the worst
interleaving for a read-then-increment design (every auth reads the count before any
increments it) and the one finding 1 and 2 describe: on one connection (pipelined
guesses) and from one address (many connections). The tests count the codes looked up:
reads of a session item (S#<code> / #META) by the auth function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from relay import protocol
from relay.addresses import UNKNOWN_ADDRESS, limit_key
from relay.protocol import ErrorCode, MessageType
from relay.settings import Settings

from tests.support.harness import Gateway

Message = dict[str, Any]
WRITES = {"TransactWriteItems", "UpdateItem", "PutItem", "DeleteItem"}
WRONG = "ZZZZZZ"  # well formed, never drawn in these tests (no Z in a 1-in-31**6 chance)


def session_keys_read(model: Any, params: dict[str, Any]) -> int:
    if model.name == "BatchGetItem":
        keys = [key for request in params["RequestItems"].values() for key in request["Keys"]]
    elif model.name == "GetItem":
        keys = [params["Key"]]
    else:
        return 0
    return sum(1 for key in keys if key["pk"]["S"].startswith("S#") and key["sk"]["S"] == "#META")


@dataclass
class NestedAuths:
    """Runs auths each started inside the previous one, just before its first write."""

    gateway: Gateway
    guesses: list[tuple[str, str, str]] = field(default_factory=list)  # (connection, code, address)
    replies: dict[int, list[Message]] = field(default_factory=dict)
    looked_up: set[int] = field(default_factory=set)  # which auths read a session item
    _stack: list[int] = field(default_factory=list)
    _started_next: set[int] = field(default_factory=set)
    _next: int = 0

    def __post_init__(self) -> None:
        # Before the handlers make their clients, which copy the session's hooks.
        boto3.DEFAULT_SESSION.events.register("provide-client-params.dynamodb.*", self._before_call)

    def run(self, guesses: list[tuple[str, str, str]]) -> None:
        """Run the guesses, outermost (first started, last to claim) first."""
        self.guesses = guesses
        self._launch()
        assert self._next == len(guesses)  # every auth started inside the previous one

    def _launch(self) -> None:
        index = self._next
        self._next += 1
        connection, code, address = self.guesses[index]
        self._stack.append(index)
        try:
            self.replies[index] = self.gateway.message(connection, {"action": "auth", "code": code}, source_ip=address)
        finally:
            self._stack.pop()

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if self.gateway.current_function != "AuthFunction" or not self._stack:
            return
        me = self._stack[-1]
        if session_keys_read(model, params):
            self.looked_up.add(me)
        if model.name in WRITES and me not in self._started_next and self._next < len(self.guesses):
            self._started_next.add(me)
            running = self.gateway.current_function
            self._launch()
            self.gateway.current_function = running


def errors(replies: list[Message]) -> list[str]:
    return [str(m.get("error", m["type"])) for m in replies]


# ---- finding 2: pipelined guesses on one connection ----------------------------------------


def test_pipelined_guesses_on_one_connection_look_up_no_more_codes_than_allowed(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_AUTH_ATTEMPTS", "5")
    runner = NestedAuths(gateway)
    mac, code = gateway.register()
    guesser = gateway.connect()
    # The right code goes first, so its claim comes last: past the connection's limit.
    guesses = [(guesser, code, "198.51.100.5")] + [(guesser, WRONG, "198.51.100.5")] * 11

    runner.run(guesses)

    assert len(runner.looked_up) == 5
    assert 0 not in runner.looked_up  # the right code was never looked up
    heard = errors(gateway.sent[guesser])
    assert len(heard) == 12
    assert heard[-1] == "too_many_attempts"  # the outermost, right code, finishes last
    assert "authenticated" not in heard
    assert [m["type"] for m in gateway.sent[mac]] == [MessageType.REGISTERED]  # nobody joined
    assert guesser in gateway.closed_by_relay


# ---- finding 1: guesses from one address on many connections ---------------------------------


def test_guesses_from_one_address_look_up_no_more_codes_than_allowed(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "6")
    runner = NestedAuths(gateway)
    mac, code = gateway.register()
    address = "198.51.100.6"
    guesses = [(gateway.connect(), code, address)] + [(gateway.connect(), WRONG, address) for _ in range(11)]

    runner.run(guesses)

    assert len(runner.looked_up) == 6
    assert 0 not in runner.looked_up
    assert runner.replies[0] == [protocol.error(ErrorCode.RATE_LIMITED)]
    assert [m["type"] for m in gateway.sent[mac]] == [MessageType.REGISTERED]
    refused = [i for i, replies in runner.replies.items() if errors(replies) == ["rate_limited"]]
    assert len(refused) == 6
    # Other addresses are unaffected, and a join gives its claim back.
    browser = gateway.connect()
    (joined,) = gateway.message(browser, {"action": "auth", "code": code}, source_ip="192.0.2.200")
    assert joined["type"] == MessageType.AUTHENTICATED


def test_a_join_gives_its_claim_back_to_the_address(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "3")
    _, code = gateway.register()
    address = "198.51.100.8"
    for _ in range(5):  # more joins than the limit: each gives its claim back
        (reply,) = gateway.message(gateway.connect(), {"action": "auth", "code": code}, source_ip=address)
        assert reply["type"] == MessageType.AUTHENTICATED


# ---- IPv6 by /64, IPv4 by address ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the IPv4 host
        ("::1", "::/64"),
        ("fe80::1", "fe80::/64"),
        ("", UNKNOWN_ADDRESS),
        ("not an address", UNKNOWN_ADDRESS),
    ],
)
def test_limit_keys(source: str, key: str) -> None:
    assert limit_key(source) == key


def test_ipv6_addresses_in_one_64_share_one_limit(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "4")
    gateway.register()
    for n in range(4):  # a fresh address of the same /64 for every guess
        (reply,) = gateway.message(
            gateway.connect(), {"action": "auth", "code": WRONG}, source_ip=f"2001:db8:7:7::{n + 1:x}"
        )
        assert reply == protocol.error(ErrorCode.INVALID_CODE)

    (same_64,) = gateway.message(gateway.connect(), {"action": "auth", "code": WRONG}, source_ip="2001:db8:7:7:ffff::9")
    (next_64,) = gateway.message(gateway.connect(), {"action": "auth", "code": WRONG}, source_ip="2001:db8:7:8::1")

    assert same_64 == protocol.error(ErrorCode.RATE_LIMITED)
    assert next_64 == protocol.error(ErrorCode.INVALID_CODE)


def test_an_ipv4_mapped_address_shares_the_ipv4_limit(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_FAILURES_PER_IP", "2")
    gateway.register()
    for source in ("198.51.100.44", "::ffff:198.51.100.44"):
        (reply,) = gateway.message(gateway.connect(), {"action": "auth", "code": WRONG}, source_ip=source)
        assert reply == protocol.error(ErrorCode.INVALID_CODE)

    (reply,) = gateway.message(gateway.connect(), {"action": "auth", "code": WRONG}, source_ip="198.51.100.44")

    assert reply == protocol.error(ErrorCode.RATE_LIMITED)


# ---- registrations per address ---------------------------------------------------------------


def register_from(gateway: Gateway, address: str) -> Message:
    (reply,) = gateway.message(gateway.connect(), {"action": "register", "client_id": "m"}, source_ip=address)
    return reply


def test_registrations_per_address_are_limited(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRATIONS_PER_IP", "3")
    for _ in range(3):
        assert register_from(gateway, "198.51.100.60")["type"] == MessageType.REGISTERED

    assert register_from(gateway, "198.51.100.60") == protocol.error(ErrorCode.RATE_LIMITED)
    assert register_from(gateway, "2001:db8:9:9::1")["type"] == MessageType.REGISTERED
    assert gateway.debug_sessions()["body"] == "Active sessions: 4"  # the refused one wrote nothing


def test_nested_registrations_from_one_address_never_exceed_the_limit(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRATIONS_PER_IP", "3")
    replies: list[Message] = []
    pending = [gateway.connect() for _ in range(6)]

    def before_call(model: Any, **_: Any) -> None:
        if gateway.current_function == "RegisterFunction" and model.name in WRITES and pending:
            start_next()

    def start_next() -> None:
        connection = pending.pop(0)
        running = gateway.current_function
        replies.extend(gateway.message(connection, {"action": "register", "client_id": "m"}, source_ip="198.51.100.61"))
        gateway.current_function = running

    boto3.DEFAULT_SESSION.events.register("before-call.dynamodb.*", before_call)
    start_next()

    assert sorted(errors(replies)) == ["rate_limited"] * 3 + ["registered"] * 3
    assert gateway.debug_sessions()["body"] == "Active sessions: 3"


def test_settings_read_the_registration_limit() -> None:
    environment = {"TABLE_NAME": "t", "REGISTRATIONS_PER_IP": "7"}
    assert Settings.from_environment(environment).registrations_per_ip == 7
    assert Settings.from_environment({"TABLE_NAME": "t"}).registrations_per_ip == protocol.DEFAULT_REGISTRATIONS_PER_IP
