"""Calls per operation: DynamoDB request units and Management API posts, at a table size.

What bench/call_counts.py prints (at 10 and 100,000 sessions) and
tests/test_call_counts.py checks (at 10 and 1,000).

The real handlers run behind the test harness's simulated API Gateway
(tests/support/harness.py) over moto's DynamoDB, in-process. Before each run the table
gets N idle sessions shaped exactly like the session store's (session, mac-client
connection, one browser and its connection, and the counter), written with
moto's backend (and checked through the API). Every DynamoDB call the handlers make
is counted and priced in request units from the sizes of the items it touched
(tests/support/capacity.py: moto's own ConsumedCapacity is a constant); every
PostToConnection is counted by the harness.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb import models as moto_dynamodb_models
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from relay import protocol
from relay.store.table import CONN, COUNT, META, PEER_PREFIX

from tests.support.aws import create_grace_queue, create_sessions_table, reset_relay_caches
from tests.support.capacity import UnitRecorder, Usage
from tests.support.functions import REGION, TABLE_NAME, in_process_environment
from tests.support.harness import Gateway

ENVIRONMENT = in_process_environment(log_level="WARNING")
BROADCAST_BROWSERS = protocol.DEFAULT_MAX_BROWSERS


def text(value: str) -> dict[str, str]:
    return {"S": value}


def number(value: int) -> dict[str, str]:
    return {"N": str(value)}


def idle_session_items(n: int, expires_at: int) -> list[dict[str, Any]]:
    """Session n as the store writes it: #META, the mac's and the browser's connection, the peer."""
    alphabet = protocol.CODE_ALPHABET
    # Codes spelled from n in the code alphabet: distinct, and well formed.
    digits = []
    value = n
    for _ in range(protocol.CODE_LENGTH):
        value, digit = divmod(value, len(alphabet))
        digits.append(alphabet[digit])
    code = "".join(digits)
    mac, browser, peer = f"idle-mac-{n}=", f"idle-browser-{n}=", f"p{n:08x}"
    return [
        {
            "pk": text(f"S#{code}"),
            "sk": text(META),
            "mac_connection_id": text(mac),
            "client_id": text(f"idle-{n}"),
            "browser_count": number(1),
            "approve": {"BOOL": False},
            "created_at": number(expires_at - 7800),
            "expires_at": number(expires_at),
        },
        {
            "pk": text(f"C#{mac}"),
            "sk": text(CONN),
            "role": text("mac"),
            "code": text(code),
            "expires_at": number(expires_at),
        },
        {
            "pk": text(f"S#{code}"),
            "sk": text(PEER_PREFIX + peer),
            "connection_id": text(browser),
            "admitted": {"BOOL": True},
            "expires_at": number(expires_at),
        },
        {
            "pk": text(f"C#{browser}"),
            "sk": text(CONN),
            "role": text("browser"),
            "code": text(code),
            "peer": text(peer),
            "mac_connection_id": text(mac),
            "admitted": {"BOOL": True},
            "expires_at": number(expires_at),
        },
    ]


class _TablesPassThroughCopy:
    """`copy` as moto's DynamoDB backend sees it, except that tables are not deep-copied."""

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


_moto_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_write_items_with_partition_rollback(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems, rolling back only the partitions the transaction touches.

    moto deep-copies every table a transaction names, once per item, to roll back on
    failure: with 400,000 items that is seconds per transaction and gigabytes, for a
    cost DynamoDB does not have. Only the touched partitions can change, so a copy of
    those restores exactly the same state. Counted figures are unaffected: they come
    from the requests and the items, not from moto's timing.
    """
    snapshots = []
    for entry in transact_items:
        operation = next(iter(entry.values()))
        table = self.tables.get(operation.get("TableName"))
        key = operation.get("Key") or operation.get("Item")
        if table is None or not key or table.hash_key_attr not in key:
            continue
        hash_value = DynamoType(key[table.hash_key_attr])
        partition = table.items.get(hash_value)
        snapshots.append((table, hash_value, copy.deepcopy(partition) if partition is not None else None))
    try:
        _moto_transact_write_items(self, transact_items)
    except Exception:
        for table, hash_value, partition in reversed(snapshots):
            if partition is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = partition
        raise


_moto_query = Table.query


def _query_one_partition(self: Any, hash_key: Any, *arguments: Any, **keywords: Any) -> Any:
    """moto's Query on the table, shown only the partition the key condition names.

    moto answers a Query by sorting every item of the table and filtering (a minute a
    Query at 400,000 items); DynamoDB reads the one partition. The items outside it
    cannot match the key condition, so the answer is the same.
    """
    if keywords.get("index_name") is not None or hash_key is None:
        return _moto_query(self, hash_key, *arguments, **keywords)
    everything = self.items
    self.items = {hash_key: everything[hash_key]} if hash_key in everything else {}
    try:
        return _moto_query(self, hash_key, *arguments, **keywords)
    finally:
        self.items = everything


@contextmanager
def moto_transactions_at_dynamodb_cost() -> Iterator[None]:
    """moto's TransactWriteItems rolling back only the partitions it touches: the same
    answers and the same table afterwards, without a copy of every table it names for
    each of its items (a tenth of the in-process tests' time). Undone on leaving."""
    vars(moto_dynamodb_models)["copy"] = _TablesPassThroughCopy
    DynamoDBBackend.transact_write_items = _transact_write_items_with_partition_rollback  # type: ignore[method-assign]
    try:
        yield
    finally:
        vars(moto_dynamodb_models)["copy"] = copy
        DynamoDBBackend.transact_write_items = _moto_transact_write_items  # type: ignore[method-assign]


@contextmanager
def moto_at_dynamodb_cost() -> Iterator[None]:
    """moto's cost per request independent of the table's size, as DynamoDB's is.

    For this process's in-process moto only, and undone on leaving: the Query patch
    swaps a table's items for a moment, which only a single-threaded caller may do.
    """
    with moto_transactions_at_dynamodb_cost():
        Table.query = _query_one_partition  # type: ignore[method-assign]
        try:
            yield
        finally:
            Table.query = _moto_query  # type: ignore[method-assign]


def populate(client: Any, sessions: int) -> None:
    """Write the idle sessions straight into moto's table, then check through the API.

    Through BatchWriteItem, 400,000 items take 16,000 serialised calls (minutes); moto's
    backend takes them in seconds, and the table is the same table either way.
    """
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(TABLE_NAME)
    expires_at = int(time.time()) + 7800
    for n in range(sessions):
        for item in idle_session_items(n, expires_at):
            table.put_item(item, overwrite=True)
    client.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": "COUNTER#0"}, "sk": {"S": COUNT}},
        UpdateExpression="ADD sessions :n",
        ExpressionAttributeValues={":n": {"N": str(sessions)}},
    )
    last = idle_session_items(sessions - 1, expires_at)[0]
    found = client.get_item(TableName=TABLE_NAME, Key={"pk": last["pk"], "sk": last["sk"]}).get("Item")
    assert found == last, "the populated sessions are not visible through the API"


@contextmanager
def relay_over_moto(sessions: int) -> Iterator[tuple[Gateway, UnitRecorder, float]]:
    """The handlers behind the harness, over a moto table holding `sessions` idle sessions."""
    saved = dict(os.environ)
    os.environ.update(ENVIRONMENT)
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[name]
    try:
        with mock_aws():
            uncounted = boto3.session.Session(region_name=REGION).client("dynamodb")
            create_sessions_table(uncounted, TABLE_NAME)
            os.environ["GRACE_QUEUE_URL"] = create_grace_queue(boto3.session.Session(region_name=REGION).client("sqs"))
            started = time.perf_counter()
            populate(uncounted, sessions)
            populate_seconds = time.perf_counter() - started

            def peek(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
                found: dict[str, Any] | None = uncounted.get_item(TableName=table, Key=key, ConsistentRead=True).get(
                    "Item"
                )
                return found

            reset_relay_caches()
            boto3.setup_default_session(region_name=REGION)
            gateway = Gateway()
            gateway.observe(boto3.DEFAULT_SESSION.events)
            recorder = UnitRecorder(peek)
            recorder.observe(boto3.DEFAULT_SESSION.events)
            yield gateway, recorder, populate_seconds
            reset_relay_caches()
            boto3.DEFAULT_SESSION = None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def operations(gateway: Gateway) -> list[tuple[str | None, int, Callable[[], object]]]:
    """(name, API Gateway messages in from clients, step): one session's life, step by step.

    Steps without a name set the scene and are not reported.
    """
    state: dict[str, Any] = {}

    def connect() -> None:
        state["mac"] = gateway.connect()

    def register() -> None:
        (reply,) = gateway.message(state["mac"], {"action": "register", "client_id": "bench-mac"})
        state["code"] = reply["code"]
        state["browser"] = gateway.connect()

    def auth() -> None:
        (reply,) = gateway.message(state["browser"], {"action": "auth", "code": state["code"]})
        assert reply["type"] == "authenticated", reply
        state["peer"] = reply["peer"]

    def more_browsers() -> None:
        state["others"] = [gateway.join(state["code"])[0] for _ in range(BROADCAST_BROWSERS - 1)]

    def failed_auth() -> None:
        stranger = gateway.connect()
        wrong = "".join(random.choice(protocol.CODE_ALPHABET) for _ in range(protocol.CODE_LENGTH))
        (reply,) = gateway.message(stranger, {"action": "auth", "code": wrong})
        assert reply["error"] == "invalid_code", reply

    def browser_to_mac() -> None:
        assert gateway.message(state["browser"], {"action": "send", "data": {"n": 1}}) == []

    def mac_to_one() -> None:
        assert gateway.message(state["mac"], {"action": "send", "to": state["peer"], "data": {"n": 2}}) == []

    def mac_broadcast() -> None:
        assert gateway.message(state["mac"], {"action": "send", "data": {"n": 3}}) == []

    def ping() -> None:
        assert gateway.message(state["browser"], {"action": "ping"}) == [protocol.pong()]

    def debug_count() -> None:
        assert gateway.debug_sessions()["statusCode"] == 200

    def browser_disconnect() -> None:
        gateway.disconnect(state["others"].pop())

    def mac_disconnect() -> None:
        gateway.disconnect(state["mac"])

    def small_session() -> None:
        state["small_mac"], small_code = gateway.register("bench-small")
        gateway.join(small_code)

    def small_mac_disconnect() -> None:
        gateway.disconnect(state["small_mac"])

    # A resumable session with one browser: away, held frame, resume, grace expiry, end.
    def resumable_session() -> None:
        mac = gateway.connect()
        (reply,) = gateway.message(mac, {"action": "register", "client_id": "bench-r", "resumable": True})
        state["r_mac"], state["r_code"], state["r_token"] = mac, reply["code"], reply["resume_token"]
        state["r_browser"] = gateway.join(state["r_code"])[0]

    def resumable_mac_away() -> None:
        gateway.disconnect(state["r_mac"])

    def send_to_away_mac() -> None:
        assert gateway.message(state["r_browser"], {"action": "send", "data": {"n": 4}}) == []

    def resume_mac() -> None:
        state["r_mac"] = gateway.connect()
        replies = gateway.message(state["r_mac"], {"action": "resume", "token": state["r_token"]})
        assert [m["type"] for m in replies] == ["resumed", "frame"], replies
        gateway.grace_timers.clear()  # that absence is over; its timer would find nothing

    def browser_away() -> None:
        gateway.disconnect(gateway.join(state["r_code"])[0])

    def grace_expiry() -> None:
        assert gateway.fire_grace_timers() == {"batchItemFailures": []}

    def end() -> None:
        assert gateway.message(state["r_mac"], {"action": "end"}) == [protocol.ended()]

    return [
        ("$connect", 0, connect),
        ("register", 1, register),
        ("auth", 1, auth),
        (None, 0, more_browsers),
        ("failed auth", 1, failed_auth),
        ("send browser -> mac", 1, browser_to_mac),
        ("send mac -> one browser", 1, mac_to_one),
        (f"send mac -> all ({BROADCAST_BROWSERS} browsers)", 1, mac_broadcast),
        ("ping", 1, ping),
        ("GET /debug/sessions", 0, debug_count),
        ("browser $disconnect", 0, browser_disconnect),
        (f"mac $disconnect ({BROADCAST_BROWSERS - 1} browsers)", 0, mac_disconnect),
        (None, 0, small_session),
        ("mac $disconnect (1 browser)", 0, small_mac_disconnect),
        (None, 0, resumable_session),
        ("resumable: mac away ($disconnect, 1 browser)", 0, resumable_mac_away),
        ("resumable: send browser -> away mac (held)", 1, send_to_away_mac),
        ("resumable: resume mac (1 held frame, 1 browser)", 1, resume_mac),
        (None, 0, browser_away),
        ("resumable: grace expiry (away browser)", 0, grace_expiry),
        ("end (1 browser)", 1, end),
    ]


def measure(sessions: int) -> tuple[dict[str, dict[str, Any]], float]:
    # The handlers print their metrics (CloudWatch EMF) to stdout, which is our table's.
    with (
        moto_at_dynamodb_cost(),
        relay_over_moto(sessions) as (gateway, recorder, populate_seconds),
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
    ):
        figures: dict[str, dict[str, Any]] = {}
        for name, messages_in, step in operations(gateway):
            if name is None:
                step()
                continue
            posts_before = gateway.post_calls
            usage: Usage = recorder.during(step)
            posts = gateway.post_calls - posts_before
            figures[name] = {
                **usage.as_dict(),
                "posts": posts,
                "api_gateway_messages": messages_in + posts,
                "lambda_invocations": 1,
            }
        return figures, populate_seconds


def comparable(figures: dict[str, Any]) -> dict[str, Any]:
    """What must not change with the table's size: calls, units, posts, messages.

    Items read are reported but left out: the counter shard a registration updates is
    drawn at random, so how many of the ten shards exist yet (and the count reads) is
    chance; a shard that does not exist costs the same read unit.
    """
    return {k: v for k, v in figures.items() if k not in ("items_read", "items_written")}
