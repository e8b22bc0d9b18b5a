"""The relay's invariants under random interleavings (hypothesis, stateful).

Connections connect, register, authenticate (right, wrong and sloppily typed codes),
send, kick, admit, vanish (410 GoneException), disconnect (sometimes twice) and have
their sessions expire by TTL, in any order. After every step, read from the table and
the debug endpoint:

- no two live sessions share a code (and each live session's mac connection is its own);
- every bound browser belongs to a live session, with a seat counted for it;
- the debug count equals the number of live session items;
- every client message got at most one direct reply (exactly one where the protocol
  promises an answer), and no handler raised or logged a failure.

The helpers (table invariants, TTL simulation) are in tests/support, shared with
test_faults.py and test_expiry.py.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from unittest import mock

import boto3
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from moto import mock_aws
from relay import protocol, session_codes
from relay.protocol import ErrorCode, MessageType

from tests.support.aws import REGION, TABLE_NAME, create_grace_queue, create_sessions_table, reset_relay_caches
from tests.support.codes import other_well_formed_code
from tests.support.files import load_template
from tests.support.harness import Gateway
from tests.support.invariants import (
    MANAGEMENT_ENDPOINT,
    FailureLog,
    Message,
    assert_invariants,
    debug_count,
    direct_replies,
    invariant_violations,
    invoke_expiry,
    read_table,
    relay_logger,
    reset_expiry_relay,
    text,
)
from tests.support.stream_records import expire_by_ttl, session_key

# ---- the state machine -----------------------------------------------------------


ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "TABLE_NAME": TABLE_NAME,
    "POWERTOOLS_SERVICE_NAME": "pairing-relay",
    "POWERTOOLS_METRICS_NAMESPACE": "PairingRelay",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": MANAGEMENT_ENDPOINT,
    # Small enough that random runs fill sessions and exhaust auth attempts.
    "MAX_BROWSERS": "2",
    "MAX_AUTH_ATTEMPTS": "3",
}
MAX_CONNECTIONS = 8
TEMPLATE = load_template()

typed_forms: dict[str, Callable[[str], str]] = {
    "exact": lambda code: code,
    "lowercase": str.lower,
    "dashed": lambda code: f"{code[:3]}-{code[3:]}".lower(),
    "spaced": lambda code: f"  {code[:2]} {code[2:4]} {code[4:]} ",
}


json_data = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.text(max_size=5), st.lists(st.integers(0, 3), max_size=3)
)
# Which connection, code or peer a step uses: an index into what exists at that point.
pick = st.integers(min_value=0, max_value=MAX_CONNECTIONS - 1)

_shared_session: list[boto3.Session] = []


def aws_session() -> boto3.Session:
    """One boto3 session for every example: a new session reloads botocore's service
    models, which costs more than an example's steps. Each example has its own Gateway
    (hooked on at start, unhooked at teardown), moto account and relay clients."""
    if not _shared_session:
        _shared_session.append(boto3.Session(region_name=REGION))
    return _shared_session[0]


class RelayMachine(RuleBasedStateMachine):
    # Codes handed out in turn from this pool, if set, so that codes come back after
    # their sessions end (which random six-character codes practically never do).
    CODE_POOL: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._environment = mock.patch.dict(os.environ, ENVIRONMENT)
        self._environment.start()
        self._code_pool = None
        if self.CODE_POOL:
            # In turn, so that a free code is always found within the attempt bound.
            os.environ["MAX_CODE_ATTEMPTS"] = str(len(self.CODE_POOL))
            self._code_pool = mock.patch.object(
                session_codes, "generate_session_code", itertools.cycle(self.CODE_POOL).__next__
            )
            self._code_pool.start()
        self.exhausted = 0  # registrations refused because every pooled code was live
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL") and n not in ENVIRONMENT]:
            del os.environ[name]
        self._aws = mock_aws()
        self._aws.start()
        boto3.DEFAULT_SESSION = aws_session()
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_sessions_table(self.dynamodb)
        reset_relay_caches()
        reset_expiry_relay()
        self.gateway = Gateway(template=TEMPLATE)
        self.gateway.observe(boto3.DEFAULT_SESSION.events)
        self.failures = FailureLog()
        relay_logger().addHandler(self.failures)
        self.connection_ids: list[str] = []
        self.codes: list[str] = []  # every code handed out, in order
        self.peers: list[str] = []  # every peer id handed out (or pending)

    def teardown(self) -> None:
        relay_logger().removeHandler(self.failures)
        boto3.DEFAULT_SESSION.events.unregister("before-call.apigatewaymanagementapi.*", self.gateway._before_call)
        reset_relay_caches()
        reset_expiry_relay()
        boto3.DEFAULT_SESSION = None
        self._aws.stop()
        if self._code_pool is not None:
            self._code_pool.stop()
        self._environment.stop()

    # ---- driving clients ---------------------------------------------------------

    def connection(self, index: int) -> str:
        return self.connection_ids[index % len(self.connection_ids)]

    def code(self, index: int) -> str:
        return self.codes[index % len(self.codes)]

    def client_says(self, connection_id: str, body: dict[str, Any], must_answer: bool) -> list[Message]:
        received = self.gateway.message(connection_id, body)
        replies = direct_replies(body["action"], received)
        assert len(replies) <= 1, (body, received)
        # Shown by --hypothesis-show-statistics: which outcomes the runs reached.
        event(f"{body['action']} -> {replies[0].get('error', replies[0]['type']) if replies else 'no reply'}")
        if must_answer and connection_id not in self.gateway.vanished:
            assert len(replies) == 1, (body, received)
        # API Gateway closes a connection the relay deletes; it can hear nothing more.
        self.gateway.vanished.update(self.gateway.closed_by_relay)
        return received

    @initialize()
    def two_sessions_with_browsers(self) -> None:
        """Start from a populated relay, so that random steps spend their time on
        sessions rather than on building one: an open session with two browsers, and
        one with approval where a browser waits."""
        for _ in range(5):
            self.connect()
        self.register(0, approve=False)
        self.auth(1, 0, "exact")
        self.auth(2, 0, "dashed")
        self.register(3, approve=True)
        self.auth(4, 1, "lowercase")
        assert len(self.codes) == 2
        assert len(self.peers) == 3

    @precondition(lambda self: len(self.connection_ids) < MAX_CONNECTIONS)
    @rule()
    def connect(self) -> None:
        self.connection_ids.append(self.gateway.connect())

    @rule(which=pick, approve=st.booleans())
    def register(self, which: int, approve: bool) -> None:
        body: dict[str, Any] = {"action": "register", "client_id": "mac"}
        if approve:
            body["approve"] = True
        failures_before = len(self.failures.records)
        received = self.client_says(self.connection(which), body, must_answer=True)
        handed_out = [m["code"] for m in received if m["type"] == MessageType.REGISTERED]
        if set(handed_out) & set(self.codes):
            event("a code came back")
        self.codes += handed_out
        # Logged (and answered internal_error, unless the caller is gone) only when no code
        # was free.
        if len(self.failures.records) > failures_before:
            live = set(read_table(self.dynamodb).sessions)
            assert self.CODE_POOL, self.failures.messages()
            assert set(self.CODE_POOL) <= live, ("refused with codes free", self.failures.messages())
            self.exhausted += len(self.failures.records) - failures_before

    @rule(which=pick, code=pick, form=st.sampled_from(sorted(typed_forms)))
    def auth(self, which: int, code: int, form: str) -> None:
        connection = self.connection(which)
        typed = typed_forms[form](self.code(code))
        received = self.client_says(connection, {"action": "auth", "code": typed}, must_answer=True)
        self.peers += [m["peer"] for m in received if m["type"] == MessageType.AUTHENTICATED]
        if any(m["type"] == MessageType.PENDING for m in received):
            # A pending browser learns its peer id only when admitted; the table knows it.
            item = self.dynamodb.get_item(
                TableName=TABLE_NAME, Key={"pk": {"S": f"C#{connection}"}, "sk": {"S": "#CONN"}}
            ).get("Item", {})
            self.peers += [item["peer"]["S"]] if "peer" in item else []

    @rule(which=pick, code=pick)
    def auth_with_a_wrong_code(self, which: int, code: int) -> None:
        guess = other_well_formed_code(self.code(code))
        received = self.client_says(self.connection(which), {"action": "auth", "code": guess}, must_answer=True)
        if guess not in self.codes:
            assert all(m["type"] != MessageType.AUTHENTICATED for m in received)

    @rule(which=pick, raw=st.sampled_from(["", "K7M", "0OIL1Z", "ABCDEFGH", "!!!!!!"]))
    def auth_with_a_malformed_code(self, which: int, raw: str) -> None:
        received = self.client_says(self.connection(which), {"action": "auth", "code": raw}, must_answer=True)
        assert all(m["type"] != MessageType.AUTHENTICATED for m in received)

    @rule(which=pick, data=json_data)
    def send_to_mac_or_all(self, which: int, data: Any) -> None:
        self.client_says(self.connection(which), {"action": "send", "data": data}, must_answer=False)

    @rule(which=pick, peer=pick, data=json_data)
    def send_to_peer(self, which: int, peer: int, data: Any) -> None:
        to = self.peers[peer % len(self.peers)] if self.peers else "nobody"
        self.client_says(self.connection(which), {"action": "send", "to": to, "data": data}, must_answer=False)

    @rule(which=pick, peer=pick)
    def kick(self, which: int, peer: int) -> None:
        body = {"action": "kick", "peer": self.peers[peer % len(self.peers)]}
        self.client_says(self.connection(which), body, must_answer=True)

    @rule(which=pick, peer=pick)
    def admit(self, which: int, peer: int) -> None:
        body = {"action": "admit", "peer": self.peers[peer % len(self.peers)]}
        self.client_says(self.connection(which), body, must_answer=False)

    @rule(which=pick)
    def ping(self, which: int) -> None:
        connection = self.connection(which)
        received = self.client_says(connection, {"action": "ping"}, must_answer=True)
        if connection not in self.gateway.vanished:
            assert direct_replies("ping", received) == [protocol.pong()]

    @rule(which=pick)
    def vanish(self, which: int) -> None:
        """The connection is gone, but its $disconnect has not arrived (and may never)."""
        self.gateway.vanished.add(self.connection(which))

    @rule(which=pick)
    def disconnect(self, which: int) -> None:
        self.gateway.disconnect(self.connection(which))

    @rule(code=pick, delivered_twice=st.booleans())
    def expire(self, code: int, delivered_twice: bool) -> None:
        record = expire_by_ttl(self.dynamodb, self.code(code))
        if record is None:
            return
        batches = [[record], [record]] if delivered_twice else [[record]]
        for batch in batches:
            assert invoke_expiry(self.gateway, batch) == {"batchItemFailures": []}
        self.gateway.vanished.update(self.gateway.closed_by_relay)

    # ---- after every step ------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        state = assert_invariants(self.gateway, self.dynamodb)
        # The mac-client of each live session was told its code, at registration or on
        # resuming (and by the checks above no other live mac-client holds it).
        told: defaultdict[str, set[str]] = defaultdict(set)
        for connection_id, messages in self.gateway.sent.items():
            for message in messages:
                resumed_mac = message["type"] == MessageType.RESUMED and message["role"] == "mac"
                if message["type"] == MessageType.REGISTERED or resumed_mac:
                    told[message["code"]].add(connection_id)
        for code, session in state.sessions.items():
            assert text(session, "mac_connection_id") in told[code], code
        # No handler raised: each logs what it swallows, and answers the client internal_error.
        # The one expected failure is a registration refused while every pooled code is live.
        assert len(self.failures.messages()) == self.exhausted, self.failures.messages()
        errors = [m for messages in self.gateway.sent.values() for m in messages if m["type"] == "error"]
        assert len([m for m in errors if m["error"] == ErrorCode.INTERNAL_ERROR]) <= self.exhausted


RelayMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("RELAY_INVARIANT_EXAMPLES", "25")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRelayInvariants = RelayMachine.TestCase


class ReusedCodesMachine(RelayMachine):
    """The same rules with two codes in all: ended and expired sessions' codes are
    handed out again while their former browsers and records are still around."""

    CODE_POOL = ("K7M2QX", "H4W9PZ")

    @rule(which=pick, approve=st.booleans())
    def a_session_ends_and_a_newcomer_takes_its_code(self, which: int, approve: bool) -> None:
        sessions = read_table(self.dynamodb).sessions
        if sessions:
            ending = sorted(sessions)[which % len(sessions)]
            mac = text(sessions[ending], "mac_connection_id")
            assert mac is not None
            self.gateway.disconnect(mac)
        if len(self.connection_ids) < MAX_CONNECTIONS:
            self.connect()
            self.register(len(self.connection_ids) - 1, approve)


ReusedCodesMachine.TestCase.settings = settings(
    RelayMachine.TestCase.settings,
    max_examples=int(os.environ.get("RELAY_INVARIANT_REUSED_CODE_EXAMPLES", "12")),
    stateful_step_count=20,
)
TestRelayInvariantsWithReusedCodes = ReusedCodesMachine.TestCase


def test_the_invariant_checker_catches_a_browser_left_in_a_dead_session(gateway: Gateway, dynamodb: Any) -> None:
    """The checker itself must be able to fail: break the table by hand and look."""
    mac, code = gateway.register()
    gateway.join(code)
    assert_invariants(gateway, dynamodb)
    dynamodb.delete_item(TableName=TABLE_NAME, Key=session_key(code))

    problems = invariant_violations(read_table(dynamodb), debug_count(gateway))

    assert any("not a live session" in p for p in problems), problems
    assert any("debug says 1 sessions, the table has 0" in p for p in problems), problems
    assert any(mac in p for p in problems), problems


def test_the_invariant_checker_catches_a_seat_count_off_by_one(gateway: Gateway, dynamodb: Any) -> None:
    _, code = gateway.register()
    gateway.join(code)
    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key=session_key(code),
        UpdateExpression="ADD browser_count :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )

    problems = invariant_violations(read_table(dynamodb), debug_count(gateway))

    assert problems == [f"session {code} counts 2 browsers, has 1"]


def test_direct_replies_leave_out_events_caused_by_others() -> None:
    received = [protocol.frame("p1", 1), protocol.session_closed(), protocol.authenticated("K7M2QX", "p1")]
    assert direct_replies("auth", received) == [protocol.authenticated("K7M2QX", "p1")]
    assert direct_replies("send", [protocol.peer_left("p1")]) == []
    assert direct_replies("kick", [protocol.peer_left("p1")]) == [protocol.peer_left("p1")]


class ResumableMachine(RelayMachine):
    """The same relay with resumable sessions: holders go away (a $disconnect or a 410),
    resume with their latest token or with a used one, end, leave, and have their grace
    period run out, in any order among the steps above. On top of the invariants above:
    a token works at most once, an away holder's seat and session stay counted (the
    away-aware checks in tests/support/invariants.py), and nothing stays held for a
    mac-client that is back."""

    def __init__(self) -> None:
        super().__init__()
        self._sqs = boto3.client("sqs", region_name=REGION)
        os.environ["GRACE_QUEUE_URL"] = create_grace_queue(self._sqs)
        os.environ["MAX_HELD_FRAMES"] = "3"
        self.tokens: list[str] = []
        self.used_tokens: set[str] = set()

    def latest_tokens(self) -> list[str]:
        for messages in self.gateway.sent.values():
            for message in messages:
                token = message.get("resume_token")
                if token is not None and token not in self.tokens:
                    self.tokens.append(token)
        return self.tokens

    @rule(which=pick, approve=st.booleans())
    def register_resumable(self, which: int, approve: bool) -> None:
        body: dict[str, Any] = {"action": "register", "client_id": "mac", "resumable": True, "approve": approve}
        received = self.client_says(self.connection(which), body, must_answer=True)
        self.codes += [m["code"] for m in received if m["type"] == MessageType.REGISTERED]

    @precondition(lambda self: len(self.connection_ids) < MAX_CONNECTIONS)
    @rule(token=pick)
    def resume(self, token: int) -> None:
        tokens = self.latest_tokens()
        if not tokens:
            return
        chosen = tokens[token % len(tokens)]
        connection = self.gateway.connect()
        self.connection_ids.append(connection)
        received = self.client_says(connection, {"action": "resume", "token": chosen}, must_answer=True)
        outcome = direct_replies("resume", received)[0]
        if chosen in self.used_tokens:
            assert outcome.get("error") in (ErrorCode.INVALID_TOKEN, ErrorCode.TOO_MANY_ATTEMPTS), outcome
        if outcome["type"] == MessageType.RESUMED:
            self.used_tokens.add(chosen)
            self.peers += [outcome["peer"]] if "peer" in outcome else []

    @rule(which=pick)
    def end(self, which: int) -> None:
        self.client_says(self.connection(which), {"action": "end"}, must_answer=True)

    @rule(which=pick)
    def leave(self, which: int) -> None:
        self.client_says(self.connection(which), {"action": "leave"}, must_answer=True)

    @rule()
    def grace_period_runs_out(self) -> None:
        assert self.gateway.fire_grace_timers() == {"batchItemFailures": []}
        self.gateway.vanished.update(self.gateway.closed_by_relay)

    @invariant()
    def nothing_is_held_for_a_present_mac_client(self) -> None:
        # Held frames are delivered and deleted right after `resumed`.
        state = read_table(self.dynamodb)
        for code, session in state.sessions.items():
            if "mac_away" not in session:
                held = self.dynamodb.query(
                    TableName=TABLE_NAME,
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :held)",
                    ExpressionAttributeValues={":pk": {"S": f"S#{code}"}, ":held": {"S": "H#mac#"}},
                    ConsistentRead=True,
                )["Items"]
                live = [
                    item
                    for item in held
                    if int(item["session_created_at"]["N"]) == int(session["created_at"]["N"])
                    and int(item["expires_at"]["N"]) > int(time.time())
                ]
                assert live == [], (code, live)


ResumableMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("RELAY_INVARIANT_EXAMPLES", "25")),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestResumableInvariants = ResumableMachine.TestCase
