"""What the hot path costs in AWS calls, and what the relay writes to its logs.

DynamoDB calls are counted with a botocore `before-call` hook on the default session,
which the handlers' DynamoDB client copies when it is created (after this module's
fixture has registered it); Management API posts are counted by the gateway harness.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from relay import protocol
from relay.model import Joining, Registration
from relay.protocol import ErrorCode
from relay.settings import Settings
from relay.store import DynamoDbStore

from tests.support.aws import TABLE_NAME
from tests.support.codes import other_well_formed_code
from tests.support.harness import Gateway
from tests.support.messages import active_sessions, auth, send, table_items

# Calls that only read; anything else writes.
READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query"})


@dataclass
class DynamoDbCalls:
    """Every DynamoDB operation the handlers called, in order."""

    operations: list[str] = field(default_factory=list)
    # Items DynamoDB examined for Query and Scan calls (their ScannedCount): a count of
    # calls alone would not notice a Query or Scan that reads more as the table grows.
    items_examined: int = 0

    def record(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)

    def record_result(self, parsed: dict[str, Any], **_: Any) -> None:
        self.items_examined += int(parsed.get("ScannedCount", 0))

    def during(self, action: Callable[[], object]) -> Counter[str]:
        """The operations `action` caused, by name."""
        start = len(self.operations)
        action()
        return Counter(self.operations[start:])

    def examined_during(self, action: Callable[[], object]) -> int:
        start = self.items_examined
        action()
        return self.items_examined - start


@pytest.fixture
def dynamodb_calls(gateway: Gateway) -> DynamoDbCalls:
    calls = DynamoDbCalls()
    # The gateway fixture has made a fresh default session and cleared the handlers'
    # cached clients, so the client they create next inherits this hook.
    boto3.DEFAULT_SESSION.events.register("before-call.dynamodb.*", calls.record)
    boto3.DEFAULT_SESSION.events.register("after-call.dynamodb.*", calls.record_result)
    return calls


def posts_during(gateway: Gateway, action: Callable[[], object]) -> int:
    before = gateway.post_calls
    action()
    return gateway.post_calls - before


# ---- the hot path ----------------------------------------------------------------------


def test_browser_to_mac_send_costs_one_read_and_one_post(gateway: Gateway, dynamodb_calls: DynamoDbCalls) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    gateway.join(code)  # other browsers do not add to the cost

    posts: list[int] = []
    calls = dynamodb_calls.during(lambda: posts.append(posts_during(gateway, lambda: send(gateway, browser, 1))))

    assert sum(calls.values()) == 1, calls
    assert set(calls) <= READ_OPERATIONS, calls
    assert posts == [1]
    assert gateway.last(mac)["data"] == 1


def test_in_a_resumable_session_frames_between_present_peers_cost_as_much_as_in_v1(
    gateway: Gateway, dynamodb_calls: DynamoDbCalls
) -> None:
    """Resumable sessions add reads and writes only when a peer is away."""
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "r", "resumable": True})
    browser, _ = gateway.join(reply["code"])
    gateway.join(reply["code"])

    posts: list[int] = []
    calls = dynamodb_calls.during(lambda: posts.append(posts_during(gateway, lambda: send(gateway, browser, 1))))
    assert calls == Counter({"GetItem": 1})
    assert posts == [1]
    calls = dynamodb_calls.during(lambda: posts.append(posts_during(gateway, lambda: send(gateway, mac, 2))))
    assert calls == Counter({"GetItem": 1, "Query": 1})
    assert posts == [1, 2]
    assert not gateway.grace_timers


@pytest.mark.parametrize("browsers", [1, 3, protocol.DEFAULT_MAX_BROWSERS])
def test_mac_broadcast_costs_one_get_one_query_and_a_post_per_browser(
    gateway: Gateway, dynamodb_calls: DynamoDbCalls, browsers: int
) -> None:
    mac, code = gateway.register()
    joined = [gateway.join(code)[0] for _ in range(browsers)]

    posts: list[int] = []
    calls = dynamodb_calls.during(lambda: posts.append(posts_during(gateway, lambda: send(gateway, mac, "all"))))

    assert calls == Counter({"GetItem": 1, "Query": 1})
    assert posts == [browsers]
    assert all(gateway.last(b) == protocol.frame(protocol.MAC_PEER, "all") for b in joined)


def full_scenario(gateway: Gateway) -> dict[str, Callable[[], object]]:
    """Every kind of request, as named steps to run in order; the state they share lives here."""
    state: dict[str, Any] = {}

    def register() -> None:
        state["mac"], state["code"] = gateway.register("scenario-mac")

    def join() -> None:
        state["browser"], state["peer"] = gateway.join(state["code"])
        state["second"], state["second_peer"] = gateway.join(state["code"])

    def fail_auth() -> None:
        assert auth(gateway, gateway.connect(), other_well_formed_code(state["code"])) == [
            protocol.error(ErrorCode.INVALID_CODE)
        ]

    def browser_send() -> None:
        assert send(gateway, state["browser"], {"n": 1}) == []

    def mac_to_one() -> None:
        assert send(gateway, state["mac"], {"n": 2}, to=state["peer"]) == []

    def mac_broadcast() -> None:
        assert send(gateway, state["mac"], {"n": 3}) == []

    def ping() -> None:
        assert gateway.message(state["browser"], {"action": "ping"}) == [protocol.pong()]

    def count() -> None:
        active_sessions(gateway)

    def browser_leaves() -> None:
        gateway.disconnect(state["second"])

    def mac_leaves() -> None:
        gateway.disconnect(state["mac"])

    def closed_browser_leaves() -> None:
        gateway.disconnect(state["browser"])

    return {
        "register": register,
        "auth": join,
        "failed auth": fail_auth,
        "browser send": browser_send,
        "mac send to one": mac_to_one,
        "mac broadcast": mac_broadcast,
        "ping": ping,
        "debug count": count,
        "browser disconnect": browser_leaves,
        "mac disconnect": mac_leaves,
        "disconnect after session end": closed_browser_leaves,
    }


def run_scenario(gateway: Gateway, calls: DynamoDbCalls) -> dict[str, Counter[str]]:
    return {name: calls.during(step) for name, step in full_scenario(gateway).items()}


def items_examined_by_scenario(gateway: Gateway, calls: DynamoDbCalls) -> dict[str, int]:
    return {name: calls.examined_during(step) for name, step in full_scenario(gateway).items()}


def test_no_request_scans_the_table(gateway: Gateway, dynamodb_calls: DynamoDbCalls) -> None:
    other_mac, other_code = gateway.register("other")
    gateway.join(other_code)

    costs = run_scenario(gateway, dynamodb_calls)

    assert dynamodb_calls.operations, "the hook saw no DynamoDB call at all"
    assert {name: c for name, c in costs.items() if "Scan" in c} == {}
    assert "Scan" not in dynamodb_calls.operations
    gateway.disconnect(other_mac)
    assert "Scan" not in dynamodb_calls.operations


def add_idle_sessions(dynamodb: Any, count: int, prefix: str) -> None:
    """`count` live sessions with a browser each, as the session store writes them.

    One session is made by the store itself; the rest are copies of its items under
    fresh codes and connection ids, written in batches. (Registering each through the
    store would be quadratic here: moto copies the whole table for every transaction.)
    """
    store = DynamoDbStore(dynamodb, Settings.from_environment())
    mac, browser = f"{prefix}-mac", f"{prefix}-browser"
    code = store.register_mac_client(Registration(mac, prefix))
    session = store.validate_session_code(code)
    assert session is not None
    store.add_browser(Joining(browser, session, "pidle0000"))
    template = dynamodb.query(
        TableName=TABLE_NAME,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"S#{code}"}},
    )["Items"]
    for connection_id in (mac, browser):
        key = {"pk": {"S": f"C#{connection_id}"}, "sk": {"S": "#CONN"}}
        template.append(dynamodb.get_item(TableName=TABLE_NAME, Key=key)["Item"])
    text = json.dumps(template)
    codes = itertools.product(protocol.CODE_ALPHABET, repeat=protocol.CODE_LENGTH)
    taken = {code, *(item["pk"]["S"].removeprefix("S#") for item in table_items(dynamodb))}
    fresh = ("".join(c) for c in codes if "".join(c) not in taken)
    copies: list[dict[str, Any]] = []
    for n, new_code in zip(range(count - 1), fresh, strict=False):
        copy = text.replace(code, new_code).replace(mac, f"{mac}-{n}").replace(browser, f"{browser}-{n}")
        copies.extend(json.loads(copy))
    for start in range(0, len(copies), 25):
        batch = [{"PutRequest": {"Item": item}} for item in copies[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={TABLE_NAME: batch})
    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": "COUNTER#0"}, "sk": {"S": "#COUNT"}},
        UpdateExpression="ADD sessions :n",
        ExpressionAttributeValues={":n": {"N": str(count - 1)}},
    )


def test_request_costs_do_not_grow_with_the_number_of_sessions(
    gateway: Gateway, dynamodb: Any, dynamodb_calls: DynamoDbCalls
) -> None:
    add_idle_sessions(dynamodb, 3, "few")
    with_few = run_scenario(gateway, dynamodb_calls)
    add_idle_sessions(dynamodb, 297, "many")
    assert active_sessions(gateway) == 300
    assert sum(1 for item in table_items(dynamodb) if item["sk"]["S"] == "#META") == 300

    with_many = run_scenario(gateway, dynamodb_calls)

    assert with_many == with_few
    assert all(sum(c.values()) > 0 for name, c in with_few.items() if name != "ping")


def test_items_read_do_not_grow_with_the_number_of_sessions(
    gateway: Gateway, dynamodb: Any, dynamodb_calls: DynamoDbCalls
) -> None:
    add_idle_sessions(dynamodb, 3, "few")
    with_few = items_examined_by_scenario(gateway, dynamodb_calls)
    add_idle_sessions(dynamodb, 297, "many")

    with_many = items_examined_by_scenario(gateway, dynamodb_calls)

    assert with_many == with_few
    assert with_few["mac broadcast"] > 0  # the hook sees what Query examined


# ---- logs ------------------------------------------------------------------------------


class CurrentStdout(io.TextIOBase):
    """Writes to whatever sys.stdout is at the moment: pytest swaps it between test phases."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def relay_log_to_stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Send the relay's Powertools logger to the current sys.stdout (so capsys sees it), at DEBUG.

    Its handler keeps the stdout of the moment the module was imported; at DEBUG every
    line the relay can write is checked, not only those of the deployed level.
    """
    # Imported here, not at the top: importing it reads the Powertools environment,
    # which the aws_environment fixture sets only once the test starts.
    from relay.observability import logger  # noqa: PLC0415

    monkeypatch.setattr(logger.registered_handler, "stream", CurrentStdout())
    level = logger.log_level
    logger.setLevel("DEBUG")
    yield
    logger.setLevel(level)


def test_logs_never_contain_a_full_code_or_frame_data(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], relay_log_to_stdout: None
) -> None:
    marker = "frame-data-marker-7f3a"
    mac, code = gateway.register("log-mac")
    typed = f"{code[:3]}-{code[3:]}".lower()
    (reply,) = auth(gateway, gateway.connect(), typed)
    peer = reply["peer"]
    second, _ = gateway.join(code)
    auth(gateway, gateway.connect(), other_well_formed_code(code))
    auth(gateway, second, code)  # already bound
    send(gateway, second, {"secret": marker})
    send(gateway, mac, [marker], to=peer)
    send(gateway, mac, marker)
    send(gateway, mac, marker * (protocol.MAX_MESSAGE_BYTES // len(marker)))  # too large
    send(gateway, mac, marker, to="p-nobody")
    gateway.message(second, {"action": "send", "data": marker, "to": 5})  # bad request
    gateway.message(second, f'{{"action": "send", "data": "{marker}"')  # not JSON
    gateway.vanished.add(mac)
    send(gateway, second, marker)  # the mac is gone
    gateway.disconnect(second)

    out = capsys.readouterr().out

    assert protocol.redact_code(code) in out  # the capture works and the code is logged redacted
    assert code not in out
    assert typed not in out
    assert code.lower() not in out
    assert marker not in out
