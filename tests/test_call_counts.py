"""Cost per operation in DynamoDB request units and Management API posts, and client reuse.

The figures come from tests/support/operation_costs.py (the code `make bench` runs, at 10 and
100,000 sessions there, at 10 and 1,000 here): the real handlers behind the harness,
over moto, with request units computed from the sizes of the items each call touched
(tests/support/capacity.py). tests/test_relay_cost.py counts the calls themselves.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import boto3
from relay import protocol

from tests.support import operation_costs as call_counts
from tests.support.capacity import UnitRecorder, item_size, read_units, write_units
from tests.support.harness import Gateway
from tests.support.messages import active_sessions, send

FEW, MANY = 10, 1_000


@cache
@cache
def figures(sessions: int) -> dict[str, dict[str, Any]]:
    """What each operation costs over `sessions` idle sessions: measured once a run (a
    thousand sessions take seconds to set up), read by several tests."""
    measured: dict[str, dict[str, Any]] = call_counts.measure(sessions)[0]
    return measured


# ---- the figures ---------------------------------------------------------------------


def test_every_operation_costs_the_same_with_few_and_many_sessions() -> None:
    few, many = figures(FEW), figures(MANY)

    assert list(few) == list(many)
    changed = {
        name: cost for name, cost in many.items() if call_counts.comparable(cost) != call_counts.comparable(few[name])
    }
    assert changed == {}


def test_browser_to_mac_send_costs_one_read_unit_and_one_post() -> None:
    cost = figures(MANY)["send browser -> mac"]

    assert (cost["read_units"], cost["write_units"], cost["posts"]) == (1, 0, 1)
    assert cost["calls"] == {"GetItem": 1}


def test_mac_broadcast_reads_two_units_and_posts_once_per_browser() -> None:
    cost = figures(MANY)[f"send mac -> all ({protocol.DEFAULT_MAX_BROWSERS} browsers)"]

    assert (cost["read_units"], cost["write_units"]) == (2, 0)
    assert cost["posts"] == protocol.DEFAULT_MAX_BROWSERS
    assert cost["api_gateway_messages"] == 1 + protocol.DEFAULT_MAX_BROWSERS


def test_no_operation_scans() -> None:
    assert [name for name, cost in figures(MANY).items() if "Scan" in cost["calls"]] == []


def test_the_session_count_reads_the_counter_shards_only() -> None:
    cost = figures(MANY)["GET /debug/sessions"]

    assert cost["calls"] == {"BatchGetItem": 1}
    assert cost["read_units"] == protocol.DEFAULT_COUNTER_SHARDS


# ---- clients once per container --------------------------------------------------------


def test_each_client_is_created_once_however_many_invocations(gateway: Gateway) -> None:
    created: Counter[str] = Counter()

    def record(class_attributes: Any, base_classes: Any, **kwargs: Any) -> None:
        created[kwargs["event_name"].rsplit(".", 1)[-1]] += 1

    boto3.DEFAULT_SESSION.events.register("creating-client-class", record)
    mac, code = gateway.register()
    browsers = [gateway.join(code)[0] for _ in range(3)]
    for n in range(5):
        send(gateway, browsers[n % 3], n)
        send(gateway, mac, n)
    active_sessions(gateway)
    gateway.disconnect(browsers[0])

    assert created == Counter({"dynamodb": 1, "apigatewaymanagementapi": 1})


# ---- the unit arithmetic the figures rest on -------------------------------------------


def test_item_size_counts_names_and_values_as_dynamodb_does() -> None:
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"N": "123"}}) == 1 + 3  # 3 digits: ceil(3/2) + 1
    assert item_size({"b": {"BOOL": True}}) == 1 + 1
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1
    assert item_size(None) == 0


def test_units_round_up_per_4_kb_read_and_1_kb_write() -> None:
    assert read_units(0) == 1  # a read that finds nothing still costs a unit
    assert read_units(4096) == 1
    assert read_units(4097) == 2
    assert read_units(4096, consistent=False) == 0.5
    assert write_units(1024, 10) == 1
    assert write_units(10, 1025) == 2


def test_recorder_charges_transactions_double_and_reads_by_item(aws_environment: None) -> None:
    from moto import mock_aws  # noqa: PLC0415

    from tests.support.aws import TABLE_NAME, create_sessions_table  # noqa: PLC0415

    with mock_aws():
        uncounted = boto3.session.Session(region_name="us-east-1").client("dynamodb")
        create_sessions_table(uncounted)
        counted_session = boto3.session.Session(region_name="us-east-1")
        recorder = UnitRecorder(
            lambda table, key: uncounted.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        )
        recorder.observe(counted_session.events)
        client = counted_session.client("dynamodb")
        items = [{"pk": {"S": f"k{n}"}, "sk": {"S": "s"}, "blob": {"S": "x" * 1500}} for n in range(2)]

        written = recorder.during(
            lambda: client.transact_write_items(
                TransactItems=[{"Put": {"TableName": TABLE_NAME, "Item": item}} for item in items]
            )
        )
        read = recorder.during(
            lambda: client.batch_get_item(
                RequestItems={
                    TABLE_NAME: {
                        "Keys": [{"pk": i["pk"], "sk": i["sk"]} for i in items]
                        + [{"pk": {"S": "no"}, "sk": {"S": "s"}}],
                        "ConsistentRead": True,
                    }
                }
            )
        )

    assert written.write_units == 2 * 2 * 2  # two 1.5 KB items, 2 units each, doubled
    assert written.calls == Counter({"TransactWriteItems": 1})
    assert read.read_units == 3  # each item its own unit, the missing one too
    assert read.items_read == 2
