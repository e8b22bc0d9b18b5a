"""Faults injected under the real handlers: throttled DynamoDB, a failing Management API,
connections gone in every position, $disconnects that never come or come twice, and a
mac-client leaving while a browser authenticates. After each, the invariants of
test_invariants.py hold.

Faults are injected at botocore's `before-send`, below its retry loop, so the relay's
own retry configuration (standard mode, `max_attempts`) really retries them and the
tests can count the attempts. Backoff delays are set to zero; no test measures time.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.awsrequest
import pytest
import requests
from botocore.config import Config
from botocore.retries.standard import ExponentialBackoff
from moto.core.botocore_stubber import MockRawResponse
from relay import management_api, protocol
from relay.protocol import ErrorCode, MessageType
from relay_local.dynamodb import EmbeddedDynamoDb

from tests.support.aws import REGION, TABLE_NAME, create_sessions_table, reset_relay_caches
from tests.support.harness import Gateway
from tests.support.invariants import (
    MANAGEMENT_ENDPOINT,
    FailureLog,
    TableState,
    assert_invariants,
    debug_count,
    invoke_expiry,
    read_table,
    reset_expiry_relay,
)
from tests.support.stream_records import expire_by_ttl

Message = dict[str, Any]


def total_attempts(config: Config) -> int:
    """Attempts per call, the first one included, that a client with this config makes."""
    retries: dict[str, Any] = config.retries
    # botocore turns `max_attempts` (retries) into `total_max_attempts` when it builds a
    # client, in the shared Config object itself.
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    return int(retries["max_attempts"]) + 1


def dynamodb_attempts() -> int:
    # Imported late: relay.wiring sets up Powertools, which reads the test
    # environment when first imported.
    from relay import wiring  # noqa: PLC0415

    return total_attempts(wiring.DYNAMODB_CONFIG)


def post_attempts() -> int:
    return total_attempts(management_api.CLIENT_CONFIG)


THROTTLING_CODES = ["ProvisionedThroughputExceededException", "ThrottlingException"]
MANAGEMENT_FAULTS = [(429, "TooManyRequestsException"), (500, "InternalServerError")]
# moto's in-process stub answers every request handed to before-send, even one another
# handler has already answered; sent here instead, a failed call never reaches the
# table, just as a throttled request never reaches DynamoDB.
UNSERVED_URL = "https://fault-injection.invalid/"


# ---- the fault injector ------------------------------------------------------------


@dataclass
class Fault:
    operation: str
    status: int
    code: str
    remaining: int | None  # None: every matching call until cleared
    function: str | None = None  # only while this function runs
    connection_id: str | None = None  # Management API: only calls for this connection


@dataclass
class Interleaving:
    """Something that happens just before one of the relay's calls (once)."""

    operation: str
    function: str
    action: Callable[[], object]
    connection_id: str | None = None
    skip: int = 0  # matching calls to let pass first (auth's join is its second transaction)


class Faults:
    """Answers chosen AWS calls with errors, and runs interleaved events, for a Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.faults: list[Fault] = []
        self.interleavings: list[Interleaving] = []
        self.attempts: Counter[tuple[str | None, str]] = Counter()  # (function, operation)
        self.post_attempts: Counter[str] = Counter()  # connection id
        self.delivered: defaultdict[str, list[Message]] = defaultdict(list)
        self._lock = threading.Lock()  # broadcasts post from several threads

    def install(self, events: Any) -> None:
        for service in ("dynamodb", "apigatewaymanagementapi"):
            events.register_first(f"before-send.{service}", self._before_send)
            # `*` so that it runs before the Gateway's own before-call hook.
            events.register_first(f"before-call.{service}.*", self._before_call)

    def throttle(
        self,
        operation: str,
        times: int | None = None,
        code: str = THROTTLING_CODES[0],
        function: str | None = None,
    ) -> None:
        self.faults.append(Fault(operation, 400, code, times, function))

    def fail_posts(
        self, connection_id: str, times: int | None = None, status: int = 500, code: str = "InternalServerError"
    ) -> None:
        self.faults.append(Fault("PostToConnection", status, code, times, connection_id=connection_id))

    def before(
        self,
        operation: str,
        function: str,
        action: Callable[[], object],
        connection_id: str | None = None,
        skip: int = 0,
    ) -> None:
        self.interleavings.append(Interleaving(operation, function, action, connection_id, skip))

    def clear(self) -> None:
        self.faults.clear()

    def attempts_of(self, operation: str, function: str | None = None) -> int:
        return sum(n for (f, op), n in self.attempts.items() if op == operation and function in (None, f))

    @staticmethod
    def _connection_of(url: str) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        connection_id = None
        if "url_path" in params and "@connections" in params["url_path"]:
            connection_id = urllib.parse.unquote(params["url_path"].rsplit("/", 1)[-1])
        for step in list(self.interleavings):
            if (
                step.operation == model.name
                and step.function == self.gateway.current_function
                and step.connection_id in (None, connection_id)
            ):
                if step.skip > 0:
                    step.skip -= 1
                    continue
                self.interleavings.remove(step)
                running = self.gateway.current_function
                step.action()
                self.gateway.current_function = running

    def _before_send(self, request: Any, event_name: str, **_: Any) -> Any:
        service, operation = event_name.split(".")[1:3]
        connection_id = self._connection_of(request.url) if service == "apigatewaymanagementapi" else None
        with self._lock:
            self.attempts[(self.gateway.current_function, operation)] += 1
            if connection_id is not None:
                self.post_attempts[connection_id] += 1
            fault = next((f for f in self.faults if self._applies(f, operation, connection_id)), None)
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
            if fault is None and operation == "PostToConnection" and connection_id is not None:
                self.delivered[connection_id].append(json.loads(request.body))
        if fault is None:
            return None
        request.url = UNSERVED_URL
        return self._error_response(service, fault)

    def _applies(self, fault: Fault, operation: str, connection_id: str | None) -> bool:
        return (
            fault.operation == operation
            and (fault.remaining is None or fault.remaining > 0)
            and fault.function in (None, self.gateway.current_function)
            and fault.connection_id in (None, connection_id)
        )

    @staticmethod
    def _error_response(service: str, fault: Fault) -> botocore.awsrequest.AWSResponse:
        if service == "dynamodb":  # awsJson1_0: the code is in the body's __type
            headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "fault"}
            body = {"__type": f"com.amazonaws.dynamodb.v20120810#{fault.code}", "message": "Rate exceeded"}
        else:  # restJson1: the code is in x-amzn-ErrorType
            headers = {"Content-Type": "application/json", "x-amzn-ErrorType": fault.code}
            body = {"message": fault.code}
        return botocore.awsrequest.AWSResponse(UNSERVED_URL, fault.status, headers, MockRawResponse(json.dumps(body)))


@pytest.fixture
def faults(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    # The expiry function finds the Management API through this variable.
    monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", MANAGEMENT_ENDPOINT)
    reset_expiry_relay()
    injector = Faults(gateway)
    injector.install(boto3.DEFAULT_SESSION.events)
    yield injector
    reset_expiry_relay()


# ---- helpers -------------------------------------------------------------------------


def send(gateway: Gateway, connection_id: str, data: Any, to: str | None = None) -> list[Message]:
    body: dict[str, Any] = {"action": "send", "data": data}
    if to is not None:
        body["to"] = to
    return gateway.message(connection_id, body)


def auth(gateway: Gateway, connection_id: str, code: str) -> list[Message]:
    return gateway.message(connection_id, {"action": "auth", "code": code})


def of_type(messages: list[Message], message_type: MessageType) -> list[Message]:
    return [m for m in messages if m["type"] == message_type]


def internal_error() -> Message:
    return protocol.error(ErrorCode.INTERNAL_ERROR)


def connection_item(dynamodb: Any, connection_id: str) -> dict[str, Any] | None:
    key = {"pk": {"S": f"C#{connection_id}"}, "sk": {"S": "#CONN"}}
    item: dict[str, Any] | None = dynamodb.get_item(TableName=TABLE_NAME, Key=key).get("Item")
    return item


def is_bound(dynamodb: Any, connection_id: str) -> bool:
    item = connection_item(dynamodb, connection_id)
    return item is not None and "role" in item


def bound_connections(state: TableState) -> list[str]:
    # Unbound connections keep an item (failed auths, expiry) until TTL removes it.
    return [cid for cid, item in state.connections.items() if "role" in item]


def browser_count(dynamodb: Any, code: str) -> int:
    return int(read_table(dynamodb).sessions[code]["browser_count"]["N"])


# ---- DynamoDB throttling ----------------------------------------------------------------


def pairing_flow(gateway: Gateway) -> list[list[Message]]:
    """Register, join, a frame each way, the browser leaves, the mac leaves: what each
    step's requester received, and the debug count at the points it changes."""
    mac, code = gateway.register()
    browser, peer = gateway.join(code)
    seen: list[list[Message]] = [[gateway.last(mac)]]
    seen.append(send(gateway, browser, "ping?"))
    seen.append(send(gateway, mac, "pong!", to=peer))
    seen.append([gateway.last(mac), gateway.last(browser)])
    gateway.disconnect(browser)
    seen.append([gateway.last(mac)])
    gateway.disconnect(mac)
    return seen


EXPECTED_FLOW = [
    [protocol.peer_joined("<peer>")],
    [],
    [],
    [protocol.frame("<peer>", "ping?"), protocol.frame(protocol.MAC_PEER, "pong!")],
    [protocol.peer_left("<peer>")],
]


def with_peer(messages: list[list[Message]], peer: str) -> list[list[Message]]:
    return json.loads(json.dumps(messages).replace("<peer>", peer))  # type: ignore[no-any-return]


@pytest.mark.parametrize("code", THROTTLING_CODES)
@pytest.mark.parametrize(
    ("function", "operation"),
    [
        ("RegisterFunction", "TransactWriteItems"),
        ("AuthFunction", "BatchGetItem"),
        ("AuthFunction", "TransactWriteItems"),
        ("SendFunction", "GetItem"),
        ("DisconnectFunction", "GetItem"),
        ("DisconnectFunction", "TransactWriteItems"),
    ],
)
def test_a_few_throttled_calls_are_retried_and_nobody_notices(
    gateway: Gateway, faults: Faults, dynamodb: Any, code: str, function: str, operation: str
) -> None:
    retries = dynamodb_attempts() - 1
    faults.throttle(operation, times=retries, code=code, function=function)

    seen = pairing_flow(gateway)

    peer = seen[0][0]["peer"]
    assert seen == with_peer(EXPECTED_FLOW, peer)
    assert faults.faults[0].remaining == 0
    # The same flow again, unthrottled, makes the same calls minus the retries.
    throttled_attempts = faults.attempts_of(operation, function)
    faults.attempts.clear()
    pairing_flow(gateway)
    assert throttled_attempts == faults.attempts_of(operation, function) + retries
    assert debug_count(gateway) == 0
    assert_invariants(gateway, dynamodb)


def test_retried_attempts_are_counted_against_the_configured_maximum(gateway: Gateway, faults: Faults) -> None:
    faults.throttle("TransactWriteItems", times=dynamodb_attempts() - 1, function="RegisterFunction")

    gateway.register()

    assert faults.attempts_of("TransactWriteItems", "RegisterFunction") == dynamodb_attempts()


def test_a_throttled_debug_count_is_retried(gateway: Gateway, faults: Faults) -> None:
    gateway.register()
    faults.throttle("BatchGetItem", times=dynamodb_attempts() - 1, code="ThrottlingException")

    assert debug_count(gateway) == 1
    assert faults.attempts_of("BatchGetItem", gateway.debug_function) == dynamodb_attempts()


@pytest.mark.parametrize("code", THROTTLING_CODES)
def test_persistent_throttling_of_register_is_internal_error_and_leaves_nothing(
    gateway: Gateway, faults: Faults, dynamodb: Any, failure_log: FailureLog, code: str
) -> None:
    faults.throttle("TransactWriteItems", code=code, function="RegisterFunction")
    mac = gateway.connect()

    replies = gateway.message(mac, {"action": "register", "client_id": "mac-1"})

    assert replies == [internal_error()]
    assert faults.attempts_of("TransactWriteItems", "RegisterFunction") == dynamodb_attempts()
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert state.connections == {}
    assert state.counted_sessions == 0
    assert failure_log.messages() == ["request failed"]
    # Once DynamoDB recovers, the same connection registers: nothing half-done is in its way.
    faults.clear()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "mac-1"})
    assert reply["type"] == MessageType.REGISTERED
    assert debug_count(gateway) == 1


@pytest.mark.parametrize("operation", ["BatchGetItem", "TransactWriteItems"])
def test_persistent_throttling_of_auth_is_internal_error_and_binds_nobody(
    gateway: Gateway, faults: Faults, dynamodb: Any, operation: str
) -> None:
    mac, code = gateway.register()
    browser = gateway.connect()
    faults.throttle(operation, function="AuthFunction")

    assert auth(gateway, browser, code) == [internal_error()]

    assert faults.attempts_of(operation, "AuthFunction") == dynamodb_attempts()
    assert gateway.sent[mac] == [protocol.registered(code)]  # no peer_joined
    state = assert_invariants(gateway, dynamodb)
    assert state.peers == {}
    assert browser_count(dynamodb, code) == 0
    assert not is_bound(dynamodb, browser)
    # A throttled auth costs at most the attempt it claimed: the browser may simply try again.
    assert int((connection_item(dynamodb, browser) or {}).get("failed_auths", {"N": "0"})["N"]) <= 1
    faults.clear()
    (reply,) = auth(gateway, browser, code)
    assert reply["type"] == MessageType.AUTHENTICATED
    assert_invariants(gateway, dynamodb)


def test_persistent_throttling_of_send_is_internal_error_and_delivers_nothing(
    gateway: Gateway, faults: Faults, dynamodb: Any
) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    faults.throttle("GetItem", function="SendFunction")

    assert send(gateway, browser, "lost?") == [internal_error()]
    assert send(gateway, mac, "lost?") == [internal_error()]

    assert of_type(faults.delivered[mac], MessageType.FRAME) == []
    assert of_type(faults.delivered[browser], MessageType.FRAME) == []
    assert_invariants(gateway, dynamodb)


@pytest.mark.parametrize("cleanup", ["second $disconnect", "TTL expiry"])
def test_a_throttled_mac_disconnect_changes_nothing_and_a_later_cleanup_finishes_it(
    gateway: Gateway, faults: Faults, dynamodb: Any, failure_log: FailureLog, cleanup: str
) -> None:
    mac, code = gateway.register()
    browsers = [gateway.join(code)[0] for _ in range(2)]
    faults.throttle("TransactWriteItems", function="DisconnectFunction")

    gateway.disconnect(mac)

    assert failure_log.messages() == ["cleanup after disconnect failed"]
    # The session's end is one transaction: it did not happen at all.
    state = assert_invariants(gateway, dynamodb)
    assert list(state.sessions) == [code]
    assert browser_count(dynamodb, code) == 2
    assert all(is_bound(dynamodb, b) for b in browsers)
    assert all(of_type(gateway.sent[b], MessageType.SESSION_CLOSED) == [] for b in browsers)

    faults.clear()
    if cleanup == "second $disconnect":
        gateway.disconnect(mac)
    else:
        record = expire_by_ttl(dynamodb, code)
        assert record is not None
        assert invoke_expiry(gateway, [record]) == {"batchItemFailures": []}

    assert debug_count(gateway) == 0
    for browser in browsers:
        assert of_type(gateway.sent[browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
        assert not is_bound(dynamodb, browser)
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}


def test_a_mac_disconnect_whose_browser_lookup_is_throttled_ends_all_or_nothing(
    gateway: Gateway, faults: Faults, dynamodb: Any
) -> None:
    """Ending a session reads its browsers (a Query) as well as writing: if that read is
    throttled for good, the session ends whole or not at all, and the $disconnect's
    retry finishes the job."""
    mac, code = gateway.register()
    browsers = [gateway.join(code)[0] for _ in range(2)]
    faults.throttle("Query", function="DisconnectFunction")

    gateway.disconnect(mac)

    assert faults.attempts_of("Query", "DisconnectFunction") >= dynamodb_attempts()
    assert_invariants(gateway, dynamodb)
    faults.clear()
    gateway.disconnect(mac)
    assert debug_count(gateway) == 0
    for browser in browsers:
        assert not is_bound(dynamodb, browser)
        assert of_type(gateway.sent[browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert_invariants(gateway, dynamodb)


def test_a_throttled_browser_disconnect_changes_nothing_and_its_retry_finishes_it(
    gateway: Gateway, faults: Faults, dynamodb: Any
) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)
    faults.throttle("TransactWriteItems", function="DisconnectFunction")

    gateway.disconnect(browser)

    assert browser_count(dynamodb, code) == 1
    assert is_bound(dynamodb, browser)
    assert of_type(gateway.sent[mac], MessageType.PEER_LEFT) == []
    assert_invariants(gateway, dynamodb)
    faults.clear()
    gateway.disconnect(browser)
    assert browser_count(dynamodb, code) == 0
    assert of_type(gateway.sent[mac], MessageType.PEER_LEFT) == [protocol.peer_left(peer)]
    assert_invariants(gateway, dynamodb)


def test_a_throttled_expiry_record_is_reported_alone_and_its_redelivery_cleans_up(
    gateway: Gateway, faults: Faults, dynamodb: Any
) -> None:
    _, throttled_code = gateway.register("mac-1")
    throttled_browser, _ = gateway.join(throttled_code)
    _, other_code = gateway.register("mac-2")
    other_browser, _ = gateway.join(other_code)
    throttled, other = expire_by_ttl(dynamodb, throttled_code), expire_by_ttl(dynamodb, other_code)
    assert throttled is not None
    assert other is not None
    # Every attempt of the first record's first write, and nothing after.
    faults.throttle("TransactWriteItems", times=dynamodb_attempts(), function="ExpiryFunction")

    result = invoke_expiry(gateway, [throttled, other])

    assert result == {"batchItemFailures": [{"itemIdentifier": throttled["dynamodb"]["SequenceNumber"]}]}
    assert debug_count(gateway) == 1  # the other session is released, this one not yet
    assert of_type(gateway.sent[other_browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert of_type(gateway.sent[throttled_browser], MessageType.SESSION_CLOSED) == []
    # The stream delivers the failed record again.
    assert invoke_expiry(gateway, [throttled]) == {"batchItemFailures": []}
    assert debug_count(gateway) == 0
    assert of_type(gateway.sent[throttled_browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert_invariants(gateway, dynamodb)


# ---- Management API 429 / 500 ------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), MANAGEMENT_FAULTS)
def test_a_few_failed_posts_are_retried_and_the_frame_arrives_once(
    gateway: Gateway, faults: Faults, dynamodb: Any, status: int, code: str
) -> None:
    mac, code_ = gateway.register()
    browser, peer = gateway.join(code_)
    attempts_before = faults.post_attempts[mac]
    faults.fail_posts(mac, times=post_attempts() - 1, status=status, code=code)

    assert send(gateway, browser, {"n": 1}) == []

    assert of_type(faults.delivered[mac], MessageType.FRAME) == [protocol.frame(peer, {"n": 1})]
    assert faults.post_attempts[mac] - attempts_before == post_attempts()
    assert_invariants(gateway, dynamodb)


@pytest.mark.parametrize(("status", "code"), MANAGEMENT_FAULTS)
def test_a_frame_the_mac_never_gets_is_reported_to_the_browser(
    gateway: Gateway, faults: Faults, dynamodb: Any, status: int, code: str
) -> None:
    mac, code_ = gateway.register()
    browser, peer = gateway.join(code_)
    attempts_before = faults.post_attempts[mac]
    faults.fail_posts(mac, status=status, code=code)

    send(gateway, browser, "lost")

    assert faults.delivered[browser][-1:] == [internal_error()]
    assert faults.post_attempts[mac] - attempts_before == post_attempts()
    assert of_type(faults.delivered[mac], MessageType.FRAME) == []
    # The session is intact: the relay did not mistake a failing API for a gone mac.
    assert_invariants(gateway, dynamodb)
    assert debug_count(gateway) == 1
    faults.clear()
    send(gateway, browser, "again")
    assert of_type(faults.delivered[mac], MessageType.FRAME) == [protocol.frame(peer, "again")]


@pytest.mark.parametrize(("status", "code"), MANAGEMENT_FAULTS)
@pytest.mark.parametrize("addressed", [False, True], ids=["broadcast", "to-one"])
def test_a_browser_that_cannot_be_posted_to_is_reported_to_the_mac_and_the_others_still_get_it(
    gateway: Gateway, faults: Faults, dynamodb: Any, status: int, code: str, addressed: bool
) -> None:
    mac, code_ = gateway.register()
    browsers = [gateway.join(code_) for _ in range(3)]
    failing, failing_peer = browsers[1]
    faults.fail_posts(failing, status=status, code=code)

    send(gateway, mac, "hello", to=failing_peer if addressed else None)

    assert faults.delivered[mac][-1:] == [internal_error()]
    assert faults.post_attempts[failing] == 1 + post_attempts()  # authenticated, then the frame
    assert of_type(faults.delivered[failing], MessageType.FRAME) == []
    for browser, _ in (browsers[0], browsers[2]):
        expected = [] if addressed else [protocol.frame(protocol.MAC_PEER, "hello")]
        assert of_type(faults.delivered[browser], MessageType.FRAME) == expected
    state = assert_invariants(gateway, dynamodb)
    assert len(state.peers) == 3  # a failing API is not a gone browser


@pytest.mark.parametrize(("status", "code"), MANAGEMENT_FAULTS)
def test_auth_whose_peer_joined_cannot_reach_the_mac_gets_one_reply_and_a_consistent_table(
    gateway: Gateway, faults: Faults, dynamodb: Any, status: int, code: str
) -> None:
    mac, code_ = gateway.register()
    browser = gateway.connect()
    faults.fail_posts(mac, status=status, code=code)

    auth(gateway, browser, code_)

    replies = faults.delivered[browser]
    assert len(replies) == 1, replies
    (reply,) = replies
    bound = is_bound(dynamodb, browser)
    # Either the browser is in (and told so), or it is out (and told to try again).
    assert (reply["type"], bound) in ((MessageType.AUTHENTICATED, True), (MessageType.ERROR, False))
    assert_invariants(gateway, dynamodb)


def test_auth_whose_final_check_is_throttled_gets_one_reply(gateway: Gateway, faults: Faults, dynamodb: Any) -> None:
    """auth re-reads the browser's binding after answering it; if DynamoDB throttles that
    read for good, the browser has already had its answer and must not get a second one."""
    _, code = gateway.register()
    browser = gateway.connect()
    faults.throttle("GetItem", function="AuthFunction")

    auth(gateway, browser, code)

    replies = faults.delivered[browser]
    assert len(replies) == 1, replies
    assert replies[0]["type"] == MessageType.AUTHENTICATED
    assert_invariants(gateway, dynamodb)


@pytest.mark.parametrize(("status", "code"), MANAGEMENT_FAULTS)
def test_a_registered_reply_that_cannot_be_posted_leaves_a_session_its_disconnect_ends(
    gateway: Gateway, faults: Faults, dynamodb: Any, status: int, code: str
) -> None:
    mac = gateway.connect()
    faults.fail_posts(mac, status=status, code=code)

    gateway.message(mac, {"action": "register", "client_id": "mac-1"})

    # Both the reply and the internal_error about it were retried and failed.
    assert faults.post_attempts[mac] == 2 * post_attempts()
    assert faults.delivered[mac] == []
    assert_invariants(gateway, dynamodb)
    gateway.disconnect(mac)
    assert debug_count(gateway) == 0
    assert_invariants(gateway, dynamodb)


@pytest.mark.parametrize(("status", "code"), MANAGEMENT_FAULTS)
def test_leaving_completes_even_when_nobody_can_be_told(
    gateway: Gateway, faults: Faults, dynamodb: Any, status: int, code: str
) -> None:
    mac, code_ = gateway.register()
    browsers = [gateway.join(code_)[0] for _ in range(3)]
    faults.fail_posts(mac, status=status, code=code)
    gateway.disconnect(browsers[0])  # its peer_left cannot reach the mac
    assert browser_count(dynamodb, code_) == 2
    assert_invariants(gateway, dynamodb)

    faults.fail_posts(browsers[1], status=status, code=code)
    gateway.disconnect(mac)  # one browser's session_closed cannot be posted

    assert debug_count(gateway) == 0
    assert of_type(faults.delivered[browsers[2]], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert not any(is_bound(dynamodb, b) for b in browsers)
    assert_invariants(gateway, dynamodb)


# ---- gone in every position ----------------------------------------------------------


@dataclass
class Pairing:
    mac: str
    code: str
    browsers: list[tuple[str, str]]  # (connection, peer)


def paired(gateway: Gateway, browsers: int = 3, approve: bool = False) -> Pairing:
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "mac-1", "approve": approve})
    code = reply["code"]
    joined = []
    for _ in range(browsers):
        browser = gateway.connect()
        (reply,) = auth(gateway, browser, code)
        # A pending browser's peer id is in the mac's join_request.
        peer = reply["peer"] if reply["type"] == MessageType.AUTHENTICATED else gateway.last(mac)["peer"]
        joined.append((browser, str(peer)))
    return Pairing(mac, code, joined)


def test_gone_sender_of_a_frame_to_its_mac_still_delivers_it(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    sender, peer = pairing.browsers[0]
    gateway.vanished.add(sender)

    assert send(gateway, sender, "last words") == []

    assert of_type(gateway.sent[pairing.mac], MessageType.FRAME) == [protocol.frame(peer, "last words")]
    assert_invariants(gateway, dynamodb)


def test_gone_mac_broadcasting_still_reaches_its_browsers(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    gateway.vanished.add(pairing.mac)

    assert send(gateway, pairing.mac, "bye all") == []

    for browser, _ in pairing.browsers:
        assert of_type(gateway.sent[browser], MessageType.FRAME) == [protocol.frame(protocol.MAC_PEER, "bye all")]
    assert_invariants(gateway, dynamodb)


def test_gone_browser_whose_auth_succeeded_gives_its_seat_back_at_the_next_broadcast(
    gateway: Gateway, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "1")
    mac, code = gateway.register()
    browser = gateway.connect()
    gateway.vanished.add(browser)

    assert auth(gateway, browser, code) == []  # its reply could not be posted

    assert_invariants(gateway, dynamodb)
    # Its $disconnect may never come; the mac's next broadcast finds it gone.
    send(gateway, mac, "who is there?")
    assert browser_count(dynamodb, code) == 0
    gateway.join(code)
    assert_invariants(gateway, dynamodb)


def test_gone_browser_that_failed_auth_costs_nothing(gateway: Gateway, dynamodb: Any) -> None:
    _, code = gateway.register()
    guesser = gateway.connect()
    gateway.vanished.add(guesser)
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")

    assert auth(gateway, guesser, wrong) == []

    assert_invariants(gateway, dynamodb)


def test_gone_browser_is_kicked_without_trouble(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    gone, gone_peer = pairing.browsers[0]
    gateway.vanished.add(gone)

    replies = gateway.message(pairing.mac, {"action": "kick", "peer": gone_peer})

    assert replies == [protocol.peer_left(gone_peer)]
    assert browser_count(dynamodb, pairing.code) == 2
    assert_invariants(gateway, dynamodb)


def test_gone_pending_browser_admitted_is_removed_and_announced(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway, browsers=2, approve=True)
    gone, gone_peer = pairing.browsers[0]
    gateway.vanished.add(gone)

    replies = gateway.message(pairing.mac, {"action": "admit", "peer": gone_peer})

    assert replies == [protocol.peer_left(gone_peer)]
    assert browser_count(dynamodb, pairing.code) == 1
    assert_invariants(gateway, dynamodb)


def test_gone_mac_kicking_or_admitting_changes_the_table_all_the_same(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway, browsers=2, approve=True)
    (kicked, kicked_peer), (admitted, admitted_peer) = pairing.browsers
    gateway.vanished.add(pairing.mac)

    assert gateway.message(pairing.mac, {"action": "kick", "peer": kicked_peer}) == []
    assert gateway.message(pairing.mac, {"action": "admit", "peer": admitted_peer}) == []

    assert gateway.sent[kicked][-1:] == [protocol.kicked()]
    assert gateway.sent[admitted][-1:] == [protocol.authenticated(pairing.code, admitted_peer)]
    assert_invariants(gateway, dynamodb)


def test_gone_mac_when_a_browser_leaves_ends_the_session(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    gateway.vanished.add(pairing.mac)

    gateway.disconnect(pairing.browsers[0][0])

    assert debug_count(gateway) == 0
    for browser, _ in pairing.browsers[1:]:
        assert of_type(gateway.sent[browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert bound_connections(state) == []


def test_gone_browser_when_its_mac_leaves_does_not_stop_the_others_hearing(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    gateway.vanished.add(pairing.browsers[0][0])

    gateway.disconnect(pairing.mac)

    for browser, _ in pairing.browsers[1:]:
        assert of_type(gateway.sent[browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert debug_count(gateway) == 0
    assert bound_connections(read_table(dynamodb)) == []


def test_gone_everyone_at_once(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    gateway.vanished.update([pairing.mac, *(b for b, _ in pairing.browsers)])

    send(gateway, pairing.browsers[0][0], "anyone?")
    send(gateway, pairing.mac, "anyone?")

    assert debug_count(gateway) == 0
    assert_invariants(gateway, dynamodb)


# ---- $disconnect that never comes, or comes twice ------------------------------------


def test_a_browser_whose_disconnect_never_comes_is_dropped_by_the_next_broadcast(
    gateway: Gateway, dynamodb: Any
) -> None:
    pairing = paired(gateway)
    gone, gone_peer = pairing.browsers[1]
    gateway.vanished.add(gone)
    assert_invariants(gateway, dynamodb)  # still counted: nobody knows yet

    send(gateway, pairing.mac, "roll call")

    assert browser_count(dynamodb, pairing.code) == 2
    assert of_type(gateway.sent[pairing.mac], MessageType.PEER_LEFT) == [protocol.peer_left(gone_peer)]
    assert_invariants(gateway, dynamodb)


def test_a_mac_whose_disconnect_never_comes_is_found_out_by_its_browsers(gateway: Gateway, dynamodb: Any) -> None:
    pairing = paired(gateway)
    gateway.vanished.add(pairing.mac)
    assert debug_count(gateway) == 1  # nobody knows yet

    assert send(gateway, pairing.browsers[0][0], "hello?") == [protocol.error(ErrorCode.PEER_GONE)]

    assert debug_count(gateway) == 0
    state = assert_invariants(gateway, dynamodb)
    assert bound_connections(state) == []


@pytest.mark.parametrize("who", ["mac", "browser", "pending browser", "unbound", "guesser"])
def test_two_disconnects_for_one_connection_count_once(gateway: Gateway, dynamodb: Any, who: str) -> None:
    open_pairing = paired(gateway, browsers=2)
    waiting = paired(gateway, browsers=1, approve=True)
    guesser = gateway.connect()
    auth(gateway, guesser, "AAAAAA" if open_pairing.code != "AAAAAA" else "BBBBBB")
    connection = {
        "mac": open_pairing.mac,
        "browser": open_pairing.browsers[0][0],
        "pending browser": waiting.browsers[0][0],
        "unbound": gateway.connect(),
        "guesser": guesser,
    }[who]

    gateway.disconnect(connection)
    after_first = (debug_count(gateway), read_table(dynamodb), {c: list(m) for c, m in gateway.sent.items()})
    gateway.disconnect(connection)

    assert debug_count(gateway) == after_first[0]
    assert read_table(dynamodb) == after_first[1]
    assert {c: list(m) for c, m in gateway.sent.items()} == after_first[2]
    assert_invariants(gateway, dynamodb)


def test_a_browser_disconnect_arriving_after_its_session_ended_counts_nothing(gateway: Gateway, dynamodb: Any) -> None:
    first = paired(gateway, browsers=2)
    other = paired(gateway, browsers=1)
    gateway.disconnect(first.mac)

    gateway.disconnect(first.browsers[0][0])
    gateway.disconnect(first.browsers[0][0])

    assert debug_count(gateway) == 1
    assert browser_count(dynamodb, other.code) == 1
    assert_invariants(gateway, dynamodb)


# ---- a mac-client leaving while a browser authenticates ------------------------------


AUTH_STEPS = [
    # (before which call of the auth function, to which connection, after how many such
    # calls) the mac leaves
    ("TransactWriteItems", None, 0),  # before auth claims its attempt
    ("BatchGetItem", None, 0),  # after the claim, before auth reads anything
    ("TransactWriteItems", None, 1),  # after it read the session, before it joins it
    ("PostToConnection", "browser", 0),  # after it joined, before the browser hears
    ("PostToConnection", "mac", 0),  # after the browser heard, before the mac does
    ("GetItem", None, 0),  # before the final check of the binding
]


@pytest.mark.parametrize(("operation", "target", "skip"), AUTH_STEPS, ids=[f"{o}-{t}-{n}" for o, t, n in AUTH_STEPS])
def test_a_browser_never_ends_bound_to_a_session_whose_mac_left_during_its_auth(
    gateway: Gateway, faults: Faults, dynamodb: Any, operation: str, target: str | None, skip: int
) -> None:
    pairing = paired(gateway, browsers=1)
    browser = gateway.connect()
    connection_ids = {"browser": browser, "mac": pairing.mac, None: None}
    faults.before(operation, "AuthFunction", lambda: gateway.disconnect(pairing.mac), connection_ids[target], skip=skip)

    replies = auth(gateway, browser, pairing.code)

    assert faults.interleavings == []  # the mac did leave at that point
    assert not is_bound(dynamodb, browser)
    # Whatever the browser heard first, its last word is the truth.
    assert replies[-1:] in ([protocol.session_closed()], [protocol.error(ErrorCode.INVALID_CODE)])
    assert debug_count(gateway) == 0
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}
    # Unbound, it may join another session.
    _, other = gateway.register("mac-2")
    (reply,) = auth(gateway, browser, other)
    assert reply["type"] == MessageType.AUTHENTICATED


def test_the_interleaving_hook_runs_the_mac_disconnect_where_asked(gateway: Gateway, faults: Faults) -> None:
    """Guards the test above: the mac leaves between auth's read and its join (its
    second transaction; the first is the claim)."""
    pairing = paired(gateway, browsers=0)
    browser = gateway.connect()
    order: list[str] = []
    faults.before("TransactWriteItems", "AuthFunction", lambda: order.append("claims"))
    faults.before("TransactWriteItems", "AuthFunction", lambda: order.append("mac leaves"), skip=1)
    faults.before("BatchGetItem", "AuthFunction", lambda: order.append("auth reads"))

    auth(gateway, browser, pairing.code)

    assert order == ["claims", "auth reads", "mac leaves"]


# ---- duplicate $disconnects at the same moment (moto server mode: atomic requests) ----


@pytest.fixture
def server_gateway(aws_environment: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, Any]]:
    """The real handlers over moto in server mode (relay-local's embedded DynamoDB, one
    request at a time as DynamoDB is atomic per request), so threads really race."""
    server = EmbeddedDynamoDb()
    endpoint = server.start()
    try:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", endpoint)
        dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
        create_sessions_table(dynamodb)
        reset_relay_caches()
        boto3.setup_default_session(region_name=REGION)
        gateway = Gateway()
        gateway.observe(boto3.DEFAULT_SESSION.events)
        yield gateway, dynamodb
    finally:
        reset_relay_caches()
        boto3.DEFAULT_SESSION = None
        server.stop()


def test_duplicate_disconnects_arriving_together_count_once(server_gateway: tuple[Gateway, Any]) -> None:
    gateway, dynamodb = server_gateway
    staying_mac, staying_code = gateway.register("mac-staying")
    gateway.join(staying_code)
    for round_ in range(3):
        mac, code = gateway.register(f"mac-{round_}")
        browsers = [gateway.join(code) for _ in range(3)]
        leaving_browser, _ = browsers[0]
        # Each of the mac's and one browser's $disconnect arrives twice, all four at once.
        duplicates = [mac, mac, leaving_browser, leaving_browser]
        start = threading.Barrier(len(duplicates))

        def disconnect(connection_id: str, start: threading.Barrier = start) -> None:
            start.wait()
            gateway.disconnect(connection_id)

        with ThreadPoolExecutor(max_workers=len(duplicates)) as pool:
            list(pool.map(disconnect, duplicates))

        assert debug_count(gateway) == 1
        for browser, _ in browsers[1:]:
            assert of_type(gateway.sent[browser], MessageType.SESSION_CLOSED) == [protocol.session_closed()]
        assert not any(is_bound(dynamodb, b) for b, _ in browsers)
        assert of_type(gateway.sent[staying_mac], MessageType.PEER_LEFT) == []
    assert_invariants(gateway, dynamodb)
    assert browser_count(dynamodb, staying_code) == 1
