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

The helpers at the top (table invariants, the kick/admit/expiry functions invoked the
way AWS would, TTL simulation) are shared with test_faults.py and test_expiry.py.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from unittest import mock

import boto3
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from moto import mock_aws
from relay import protocol, session_codes
from relay.protocol import ErrorCode, MessageType

from tests.conftest import REGION, TABLE_NAME, create_sessions_table, reset_relay_caches
from tests.relay_harness import ROOT, Gateway, LambdaContext, load_event, load_template

Item = dict[str, Any]
Message = dict[str, Any]

DEBUG_BODY_PREFIX = "Active sessions: "
# What the template's ExpiryFunction (and relay-local) set: the stream function has no
# WebSocket event to learn the Management API endpoint from.
MANAGEMENT_ENDPOINT = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod"
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
STREAM_ARN = f"arn:aws:dynamodb:{REGION}:123456789012:table/{TABLE_NAME}/stream/2026-11-26T00:00:00.000"

# Messages that answer the sender's own request; everything else a sender may receive
# while its request runs (frames, peer_left of a vanished browser, session_closed) is an
# event caused by someone else.
DIRECT_REPLIES = frozenset(
    {MessageType.REGISTERED, MessageType.AUTHENTICATED, MessageType.PENDING, MessageType.PONG, MessageType.ERROR}
)
# kick and admit are answered with the peer's new state.
DIRECT_REPLIES_TO = {
    "kick": DIRECT_REPLIES | {MessageType.PEER_LEFT},
    "admit": DIRECT_REPLIES | {MessageType.PEER_JOINED},
}


# ---- invoking functions the template may not route yet ------------------------------


_loaded_functions: dict[str, Callable[..., Any]] = {}


def function_handler(name: str) -> Callable[..., Any]:
    """functions/<name>/app.py's lambda_handler, imported under a name of its own."""
    if name not in _loaded_functions:
        path = ROOT / "functions" / name / "app.py"
        spec = importlib.util.spec_from_file_location(f"functions_{name}_direct", path)
        assert spec is not None
        assert spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _loaded_functions[name] = module.lambda_handler
    return _loaded_functions[name]


def send_message(gateway: Gateway, connection_id: str, body: dict[str, Any]) -> list[Message]:
    """Like gateway.message, also for kick and admit while template.yaml has no routes for them
    (API Gateway would then send them to $default): their functions are invoked directly,
    with the event API Gateway gives a routed message."""
    action = body.get("action")
    if action in gateway.routes or action not in DIRECT_REPLIES_TO:
        return gateway.message(connection_id, body)
    event = copy.deepcopy(load_event("default"))
    event["requestContext"].update(connectionId=connection_id, routeKey=action)
    event["body"] = json.dumps(body)
    before = len(gateway.sent[connection_id])
    gateway.current_function = f"{str(action).capitalize()}Function"
    try:
        result = function_handler(str(action))(event, LambdaContext(function_name=gateway.current_function))
    finally:
        gateway.current_function = None
    assert result == {"statusCode": 200}, result
    return gateway.sent[connection_id][before:]


def direct_replies(action: str, received: list[Message]) -> list[Message]:
    kinds = DIRECT_REPLIES_TO.get(action, DIRECT_REPLIES)
    return [message for message in received if message["type"] in kinds]


# ---- DynamoDB TTL and its stream -------------------------------------------------


_sequence_numbers = itertools.count(100_000_000_000_000_000_001)


def stream_removal_record(old_image: Item, by_ttl: bool = True) -> dict[str, Any]:
    """A DynamoDB stream REMOVE record as Lambda receives it; TTL deletions carry the
    DynamoDB service as their userIdentity, a user's DeleteItem carries none."""
    record: dict[str, Any] = {
        "eventID": uuid.uuid4().hex,
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": int(time.time()),
            "Keys": {"pk": old_image["pk"], "sk": old_image["sk"]},
            "OldImage": old_image,
            "SequenceNumber": str(next(_sequence_numbers)),
            "SizeBytes": len(json.dumps(old_image)),
            "StreamViewType": "OLD_IMAGE",
        },
        "eventSourceARN": STREAM_ARN,
    }
    if by_ttl:
        record["userIdentity"] = dict(TTL_IDENTITY)
    return record


def session_key(code: str) -> Item:
    return {"pk": {"S": f"S#{code}"}, "sk": {"S": "#META"}}


def expire_by_ttl(dynamodb: Any, code: str) -> dict[str, Any] | None:
    """Do to a session what DynamoDB's TTL does once its expires_at has passed: delete the
    item. Returns the stream record of that deletion (None if there was no such session)."""
    item = dynamodb.get_item(TableName=TABLE_NAME, Key=session_key(code), ConsistentRead=True).get("Item")
    if item is None:
        return None
    # TTL only deletes items whose time has come, so the image the stream carries is of
    # an expired item.
    item["expires_at"] = {"N": str(int(time.time()) - 1)}
    dynamodb.delete_item(TableName=TABLE_NAME, Key=session_key(code))
    return stream_removal_record(item)


def invoke_expiry(gateway: Gateway, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Deliver a batch of stream records to functions/expiry/app.py, as Lambda would."""
    gateway.current_function = "ExpiryFunction"
    try:
        result: dict[str, Any] = function_handler("expiry")(
            {"Records": records}, LambdaContext(function_name="ExpiryFunction")
        )
    finally:
        gateway.current_function = None
    return result


def reset_expiry_relay() -> None:
    # tests/conftest.reset_relay_caches does not know this cache yet.
    from relay import websocket_route  # noqa: PLC0415

    websocket_route.relay_for_configured_endpoint.cache_clear()


# ---- reading the table -------------------------------------------------------------


@dataclass
class TableState:
    """The table's items by kind, live ones only (reads ignore what TTL has yet to delete)."""

    sessions: dict[str, Item] = field(default_factory=dict)  # code -> #META
    peers: dict[tuple[str, str], Item] = field(default_factory=dict)  # (code, peer) -> P#
    connections: dict[str, Item] = field(default_factory=dict)  # connection id -> #CONN
    counted_sessions: int = 0  # the sum of the counter shards


def read_table(dynamodb: Any) -> TableState:
    now = int(time.time())
    state = TableState()
    pages = dynamodb.get_paginator("scan").paginate(TableName=TABLE_NAME, ConsistentRead=True)
    for item in (item for page in pages for item in page["Items"]):
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        if pk.startswith("COUNTER#"):
            state.counted_sessions += int(item.get("sessions", {"N": "0"})["N"])
            continue
        if "expires_at" in item and int(item["expires_at"]["N"]) <= now:
            continue
        if pk.startswith("S#") and sk == "#META":
            state.sessions[pk.removeprefix("S#")] = item
        elif pk.startswith("S#") and sk.startswith("P#"):
            state.peers[(pk.removeprefix("S#"), sk.removeprefix("P#"))] = item
        elif pk.startswith("C#"):
            state.connections[pk.removeprefix("C#")] = item
    return state


def text(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value else None


def debug_count(gateway: Gateway) -> int:
    response = gateway.debug_sessions()
    assert response["statusCode"] == 200, response
    body: str = response["body"]
    assert body.startswith(DEBUG_BODY_PREFIX), body
    return int(body.removeprefix(DEBUG_BODY_PREFIX))


def invariant_violations(state: TableState, reported_count: int) -> list[str]:
    problems: list[str] = []
    macs = {cid: item for cid, item in state.connections.items() if text(item, "role") == "mac"}
    browsers = {cid: item for cid, item in state.connections.items() if text(item, "role") == "browser"}

    claimed = Counter(text(item, "code") for item in macs.values())
    problems += [f"code {code} is claimed by {n} mac connections" for code, n in claimed.items() if n > 1]
    for cid, item in macs.items():
        session = state.sessions.get(text(item, "code") or "")
        if session is None or text(session, "mac_connection_id") != cid:
            problems.append(f"mac {cid} is bound to {text(item, 'code')}, not a live session of its own")
    for code, session in state.sessions.items():
        mac = text(session, "mac_connection_id") or ""
        if text(macs.get(mac, {}), "code") != code:
            problems.append(f"session {code}'s mac connection {mac} is not bound to it")

    for cid, item in browsers.items():
        code, peer = text(item, "code") or "", text(item, "peer") or ""
        session = state.sessions.get(code)
        if session is None:
            problems.append(f"browser {cid} is bound to {code}, which is not a live session")
        elif text(session, "mac_connection_id") != text(item, "mac_connection_id"):
            problems.append(f"browser {cid} is bound to a former mac-client of {code}")
        seat = state.peers.get((code, peer))
        if seat is None or text(seat, "connection_id") != cid:
            problems.append(f"browser {cid} has no seat {peer} in {code}")
        elif seat.get("admitted") != item.get("admitted"):
            problems.append(f"browser {cid} and its seat disagree on admission")
    for (code, peer), seat in state.peers.items():
        holder = browsers.get(text(seat, "connection_id") or "")
        if code not in state.sessions or holder is None or text(holder, "peer") != peer:
            problems.append(f"seat {peer} in {code} belongs to no bound browser")
        seat_mac = text(seat, "mac_connection_id")  # where the seat names its session's mac-client
        if (
            seat_mac is not None
            and code in state.sessions
            and seat_mac != text(state.sessions[code], "mac_connection_id")
        ):
            problems.append(f"seat {peer} in {code} belongs to a former session with that code")

    seats = Counter(code for code, _ in state.peers)
    for code, session in state.sessions.items():
        if int(session["browser_count"]["N"]) != seats[code]:
            problems.append(f"session {code} counts {session['browser_count']['N']} browsers, has {seats[code]}")

    if reported_count != len(state.sessions):
        problems.append(f"debug says {reported_count} sessions, the table has {len(state.sessions)}")
    if state.counted_sessions != len(state.sessions):
        problems.append(f"the counter says {state.counted_sessions}, the table has {len(state.sessions)}")
    return problems


def assert_invariants(gateway: Gateway, dynamodb: Any) -> TableState:
    state = read_table(dynamodb)
    problems = invariant_violations(state, debug_count(gateway))
    assert problems == [], problems
    return state


class FailureLog(logging.Handler):
    """Collects what the relay logs at ERROR: handlers log every failure they swallow."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


def relay_logger() -> logging.Logger:
    from relay.observability import logger  # noqa: PLC0415

    return logging.getLogger(logger.name)


@pytest.fixture
def failure_log() -> Iterator[FailureLog]:
    log = FailureLog()
    relay_logger().addHandler(log)
    yield log
    relay_logger().removeHandler(log)


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


def wrong_code(code: str) -> str:
    """A well-formed code one character away from `code`."""
    alphabet = protocol.CODE_ALPHABET
    return code[:-1] + alphabet[(alphabet.index(code[-1]) + 1) % len(alphabet)]


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
        received = send_message(self.gateway, connection_id, body)
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
        guess = wrong_code(self.code(code))
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
        # The mac-client of each live session was told its code (and by the checks above no
        # other live mac-client holds it).
        told: defaultdict[str, set[str]] = defaultdict(set)
        for connection_id, messages in self.gateway.sent.items():
            for message in messages:
                if message["type"] == MessageType.REGISTERED:
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
