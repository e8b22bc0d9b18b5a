"""SQS queues, DynamoDB streams, SNS topics and schedules, delivered as Lambda's pollers deliver them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.relay_local import (
    EFFECT_TIMEOUT,
    FIXTURES,
    RelayLocalProcess,
    read_records,
    start_relay_local,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def relay(record_dir: Path) -> Iterator[RelayLocalProcess]:
    process = start_relay_local(
        "--template",
        str(FIXTURES / "sources" / "template.yaml"),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--parameter-overrides",
        f"RecordDir={record_dir}",
    )
    yield process
    assert process.stop() == 0, process.output()


def client(relay: RelayLocalProcess, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=relay.dynamodb_endpoint,  # the embedded backend serves SQS and SNS too
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def wait_for(record_dir: Path, source: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + EFFECT_TIMEOUT
    while True:
        records = read_records(record_dir, source)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def queue_url(name: str) -> str:
    """The queue's Ref, as a function of the template gets it."""
    return f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}"


def test_sqs_batches_honour_batch_size_and_the_queue_delay(relay: RelayLocalProcess, record_dir: Path) -> None:
    sent_at = time.time()
    entries = [{"Id": str(index), "MessageBody": f"job-{index}"} for index in range(7)]
    client(relay, "sqs").send_message_batch(QueueUrl=queue_url("jobs"), Entries=entries)
    records = wait_for(record_dir, "jobs", 3)
    batches = [[item["body"] for item in record["event"]["Records"]] for record in records]
    while sum(map(len, batches)) < 7:
        records = wait_for(record_dir, "jobs", len(records) + 1)
        batches = [[item["body"] for item in record["event"]["Records"]] for record in records]
    assert sorted(body for batch in batches for body in batch) == [f"job-{index}" for index in range(7)]
    assert max(map(len, batches)) == 3  # BatchSize: 3 (all seven were visible at once)
    # DelaySeconds: 1 on the queue: nothing arrived before it had passed.
    assert min(record["at"] for record in records) >= sent_at + 1
    first = records[0]["event"]["Records"][0]
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:jobs"
    assert set(first["attributes"]) >= {"ApproximateReceiveCount", "SentTimestamp"}
    # Delivered messages are deleted.
    time.sleep(1.5)
    assert "Messages" not in client(relay, "sqs").receive_message(QueueUrl=queue_url("jobs"))


def test_sqs_per_message_delay_and_partial_batch_failure(relay: RelayLocalProcess, record_dir: Path) -> None:
    sqs = client(relay, "sqs")
    url = queue_url("local-GraceQueue")
    sent_at = time.time()
    sqs.send_message(QueueUrl=url, MessageBody="grace-later", DelaySeconds=3)
    sqs.send_message(QueueUrl=url, MessageBody="now")
    sqs.send_message(QueueUrl=url, MessageBody="fail-once")

    def bodies() -> list[tuple[float, str]]:
        return [
            (record["at"], item["body"])
            for record in read_records(record_dir, "grace")
            for item in record["event"]["Records"]
        ]

    deadline = time.monotonic() + EFFECT_TIMEOUT
    while [body for _, body in bodies()].count("grace-later") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = bodies()
    times = {body: at for at, body in seen}
    assert times["grace-later"] >= sent_at + 3  # its own DelaySeconds
    assert times["now"] < times["grace-later"]
    # The failed message came back after the visibility timeout; the others were not repeated.
    assert [body for _, body in seen].count("fail-once") == 2
    assert [body for _, body in seen].count("now") == 1


def test_stream_delivers_ttl_removals_only_through_the_filter(relay: RelayLocalProcess, record_dir: Path) -> None:
    dynamodb = client(relay, "dynamodb")
    past = str(int(time.time()) - 10)
    future = str(int(time.time()) + 3600)
    dynamodb.put_item(TableName="local-Items", Item={"id": {"S": "stale"}, "expires": {"N": past}})
    dynamodb.put_item(TableName="local-Items", Item={"id": {"S": "fresh"}, "expires": {"N": future}})
    dynamodb.put_item(TableName="local-Items", Item={"id": {"S": "removed-by-user"}, "expires": {"N": past}})
    dynamodb.delete_item(TableName="local-Items", Key={"id": {"S": "removed-by-user"}})
    # A cancelled transaction (moto rebuilds the table, stream included) stops nothing.
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": "local-Items",
                        "Item": {"id": {"S": "stale"}},
                        "ConditionExpression": "attribute_not_exists(id)",
                    }
                }
            ]
        )
    assert relay.control("expire") == {"deleted": {"local-Items": 1}}
    records = [item for record in wait_for(record_dir, "expiry", 1) for item in record["event"]["Records"]]
    assert [record["dynamodb"]["Keys"] for record in records] == [{"id": {"S": "stale"}}]
    assert records[0]["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert records[0]["eventName"] == "REMOVE"
    assert records[0]["dynamodb"]["OldImage"]["expires"] == {"N": past}
    # --in: the clock ahead, so the fresh item's TTL has passed too.
    assert relay.control("expire", "--in", "7200") == {"deleted": {"local-Items": 1}}
    records = [item for record in wait_for(record_dir, "expiry", 2) for item in record["event"]["Records"]]
    assert [record["dynamodb"]["Keys"]["id"]["S"] for record in records] == ["stale", "fresh"]


def test_sns_topic_delivers_to_its_subscribed_function(relay: RelayLocalProcess, record_dir: Path) -> None:
    topic_arn = "arn:aws:sns:us-east-1:123456789012:local-News"
    client(relay, "sns").publish(TopicArn=topic_arn, Message="extra extra", Subject="headline")
    records = wait_for(record_dir, "news", 1)
    (record,) = records[0]["event"]["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["Sns"]["TopicArn"] == topic_arn
    assert (record["Sns"]["Message"], record["Sns"]["Subject"]) == ("extra extra", "headline")


def test_a_schedule_fires_on_demand_only(relay: RelayLocalProcess, record_dir: Path) -> None:
    assert read_records(record_dir, "tick") == []  # rate(1 hour) never fires by itself
    answer = relay.control("schedule", "TickFunction.Tick")
    assert answer["status"] == "ok"
    assert [record["event"] for record in wait_for(record_dir, "tick", 1)] == [{"tick": True}]
    assert relay.control("schedule", "Tick")["status"] == "ok"  # the event id alone names it too
    with pytest.raises(subprocess.CalledProcessError):
        relay.control("schedule", "Nope")
