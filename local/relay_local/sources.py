"""Event sources other than the APIs: SQS queues, DynamoDB streams, SNS topics and schedules.

Queues and topics live in the embedded moto backend, as the template declares them. What
Lambda's pollers do is done here, in the same way:
- SQS: the queue is polled; up to BatchSize visible messages make one invocation; the
  messages a successful invocation does not report in batchItemFailures are deleted;
  the others become visible again after the queue's visibility timeout. Queue and
  per-message DelaySeconds are the backend's (moto keeps delayed messages invisible).
- DynamoDB streams: every shard is read from TRIM_HORIZON or LATEST; records that pass
  the FilterCriteria are delivered in batches of BatchSize. Deletions made by the TTL
  simulation (`expire`) carry the userIdentity the TTL service gives its own.
- SNS: each subscribed function gets a hidden queue subscribed to the topic, read as
  above and delivered as SNS events.
- Schedules fire on demand (`relay-local schedule NAME`), never on their own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from relay_local.intrinsics import ACCOUNT_ID, PARTITION
from relay_local.invocation import Invocation, Invoke
from relay_local.template import EventSource, Template

log = logging.getLogger("relay_local")

POLL_SECONDS = 0.1  # SQS: short polls (a long poll would hold the embedded backend's lock)
STREAM_POLL_SECONDS = 0.25
TTL_PRINCIPAL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
# A failing stream batch is retried this often before it is skipped (AWS: MaximumRetryAttempts,
# unlimited by default, which would stop a local stream for good).
_LOCAL_STREAM_RETRIES = 3
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
)


class SourceError(Exception):
    """A queue or topic of the template cannot be created."""


def _plain(value: Any) -> Any:
    """A boto3-parsed value as it stands in a Lambda event's JSON (bytes: base64, times: epoch)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def matches_pattern(pattern: Any, value: Any) -> bool:
    """Lambda event filtering: a JSON pattern against a record (values, prefix, exists, anything-but)."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(matches_pattern(sub, value.get(key, _MISSING)) for key, sub in pattern.items())
    if not isinstance(pattern, list):
        return bool(pattern == value)
    return any(_matches_one(option, value) for option in pattern)


_MISSING = object()


def _matches_one(option: Any, value: Any) -> bool:
    if isinstance(option, dict):
        if "exists" in option:
            return (value is not _MISSING) == bool(option["exists"])
        if "prefix" in option:
            return isinstance(value, str) and value.startswith(str(option["prefix"]))
        if "anything-but" in option:
            excluded = option["anything-but"]
            return value is not _MISSING and value not in (excluded if isinstance(excluded, list) else [excluded])
        return False
    return value is not _MISSING and option == value


def passes_filters(source: EventSource, record: dict[str, Any]) -> bool:
    filters = (source.properties.get("FilterCriteria") or {}).get("Filters") or []
    if not filters:
        return True
    subject = dict(record)
    if source.kind == "SQS":
        with contextlib.suppress(ValueError):
            subject["body"] = json.loads(record.get("body", ""))
    return any(matches_pattern(json.loads(str(item.get("Pattern", "{}"))), subject) for item in filters)


def failed_item_ids(invocation: Invocation) -> set[str] | None:
    """The ids a batch answer reports as failed; None when the whole batch failed."""
    if not invocation.ok:
        return None
    result = invocation.result
    if not isinstance(result, dict):
        return set()
    return {
        str(item.get("itemIdentifier"))
        for item in result.get("batchItemFailures") or []
        if isinstance(item, dict) and item.get("itemIdentifier")
    }


class EventSources:
    """Creates the template's queues and topics and runs its pollers."""

    def __init__(
        self,
        template: Template,
        invoke: Invoke,
        *,
        endpoint: str,
        dynamodb_endpoint: str,
        region: str,
        credentials: dict[str, str],
    ) -> None:
        self.template = template
        self.invoke = invoke
        self.region = region
        settings: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": region,
            "aws_access_key_id": credentials.get("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": credentials.get("AWS_SECRET_ACCESS_KEY"),
            "aws_session_token": credentials.get("AWS_SESSION_TOKEN"),
            "config": Config(retries={"mode": "standard", "max_attempts": 3}),
        }
        self.sqs = boto3.client("sqs", **settings)
        self.sns = boto3.client("sns", **settings)
        settings["endpoint_url"] = dynamodb_endpoint
        self.dynamodb = boto3.client("dynamodb", **settings)
        self.streams = boto3.client("dynamodbstreams", **settings)
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_urls: dict[str, str] = {}  # logical id or hidden name -> the backend's URL
        # (table name, key JSON) of items the TTL simulation deleted, until the stream shows them.
        self._ttl_deletions: set[tuple[str, str]] = set()

    # ---- start-up ----

    def create(self) -> None:
        """Create the queues and topics (in the backend's own thread: call through to_thread)."""
        try:
            for queue in self.template.queues.values():
                attributes = {
                    name: str(queue.properties[name]).lower()
                    if isinstance(queue.properties[name], bool)
                    else str(queue.properties[name])
                    for name in _QUEUE_ATTRIBUTES
                    if name in queue.properties
                }
                response = self.sqs.create_queue(QueueName=queue.name, Attributes=attributes)
                self._queue_urls[queue.logical_id] = response["QueueUrl"]
            # Redrive policies name other queues (a dead-letter queue often comes later in
            # the template), so they are set once every queue exists.
            for queue in self.template.queues.values():
                redrive = queue.properties.get("RedrivePolicy")
                if redrive:
                    self.sqs.set_queue_attributes(
                        QueueUrl=self._queue_urls[queue.logical_id],
                        Attributes={"RedrivePolicy": json.dumps(redrive)},
                    )
            for topic in self.template.topics.values():
                self.sns.create_topic(Name=topic.name)
            for source in self.template.event_sources:
                if source.kind == "SNS":
                    self._subscribe_hidden_queue(source)
        except (ClientError, BotoCoreError) as error:
            raise SourceError(f"Cannot create the template's queues and topics: {error}") from None

    def _subscribe_hidden_queue(self, source: EventSource) -> None:
        name = f"relay-local-sns-{uuid.uuid5(uuid.NAMESPACE_URL, source.name).hex[:16]}"
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = self.template.topics[source.target_id]
        self.sns.subscribe(TopicArn=topic.arn, Protocol="sqs", Endpoint=queue_arn)
        self._queue_urls[source.name] = url

    def start(self) -> None:
        for source in self.template.event_sources:
            if source.kind in ("SQS", "SNS"):
                self._tasks.append(asyncio.create_task(self._supervised(source, self._poll_queue)))
            elif source.kind == "DynamoDB":
                self._tasks.append(asyncio.create_task(self._supervised(source, self._poll_stream)))

    async def _supervised(self, source: EventSource, poll: Callable[[EventSource], Awaitable[None]]) -> None:
        """A poller that fails is logged and started again, as Lambda's pollers keep going."""
        while True:
            try:
                await poll(source)
                return
            except Exception:
                log.exception("%s: its poller failed; starting it again", source.name)
                await asyncio.sleep(1)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- SQS and SNS ----

    async def _poll_queue(self, source: EventSource) -> None:
        url = self._queue_urls[source.name if source.kind == "SNS" else source.target_id]
        queue_arn = (
            f"arn:{PARTITION}:sqs:{self.region}:{ACCOUNT_ID}:{self.template.queues[source.target_id].name}"
            if source.kind == "SQS"
            else ""
        )
        while True:
            try:
                messages = await asyncio.to_thread(self._receive, url, source.batch_size)
            except (ClientError, BotoCoreError) as error:
                log.warning("%s: cannot read its queue: %s", source.name, error)
                await asyncio.sleep(1)
                continue
            if not messages:
                await asyncio.sleep(POLL_SECONDS)
                continue
            if source.kind == "SQS":
                records = [self._sqs_record(message, queue_arn) for message in messages]
                delivered = [record for record in records if passes_filters(source, record)]
                event = {"Records": delivered}
            else:
                delivered = [self._sns_record(message, source) for message in messages]
                event = {"Records": delivered}
            failed: set[str] | None = set()
            if delivered:
                invocation, _ = await self.invoke(source.function_id, event, source.kind, source.name)
                failed = failed_item_ids(invocation)
            if failed is None:
                continue  # the messages become visible again after the visibility timeout
            done = [message for message in messages if message["MessageId"] not in failed]
            if done:
                await asyncio.to_thread(self._delete, url, done)

    def _receive(self, url: str, batch_size: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < batch_size:
            response = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages") or []
            messages.extend(received)
            if not received:
                break
        return messages

    def _delete(self, url: str, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            entries = [
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    def _sqs_record(self, message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        attributes = {
            key: value for key, value in (message.get("MessageAttributes") or {}).items() if isinstance(value, dict)
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": message.get("Attributes") or {},
            "messageAttributes": {
                key: {
                    "stringValue": value.get("StringValue"),
                    "binaryValue": _plain(value.get("BinaryValue")),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value.get("DataType"),
                }
                for key, value in attributes.items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": self.region,
        }

    def _sns_record(self, message: dict[str, Any], source: EventSource) -> dict[str, Any]:
        envelope = json.loads(message.get("Body", "{}"))
        topic = self.template.topics[source.target_id]
        return {
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": f"{topic.arn}:{uuid.uuid5(uuid.NAMESPACE_URL, source.name)}",
            "Sns": {
                "Type": envelope.get("Type", "Notification"),
                "MessageId": envelope.get("MessageId", message["MessageId"]),
                "TopicArn": envelope.get("TopicArn", topic.arn),
                "Subject": envelope.get("Subject"),
                "Message": envelope.get("Message", ""),
                "Timestamp": envelope.get("Timestamp", ""),
                "SignatureVersion": envelope.get("SignatureVersion", "1"),
                "Signature": envelope.get("Signature", ""),
                "SigningCertUrl": envelope.get("SigningCertURL", ""),
                "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                "MessageAttributes": envelope.get("MessageAttributes") or {},
            },
        }

    # ---- DynamoDB streams ----

    async def _poll_stream(self, source: EventSource) -> None:
        table = self.template.tables[source.target_id]
        starting = str(source.properties.get("StartingPosition", "LATEST"))
        retries = int(source.properties.get("MaximumRetryAttempts", -1))
        retries = _LOCAL_STREAM_RETRIES if retries < 0 else retries
        try:
            stream_arn, positions = await asyncio.to_thread(self._stream_positions, table.name, starting)
        except (ClientError, BotoCoreError, KeyError) as error:
            log.error("%s: cannot read the stream of %s: %s", source.name, table.name, error)
            return
        pending: list[dict[str, Any]] = []
        attempts = 0
        while True:
            if not pending:
                try:
                    pending = await asyncio.to_thread(self._read_records, positions, table.name, stream_arn)
                except (ClientError, BotoCoreError) as error:
                    log.warning("%s: cannot read the stream: %s", source.name, error)
                    await asyncio.sleep(1)
                    continue
                pending = [record for record in pending if passes_filters(source, record)]
                attempts = 0
            if not pending:
                await asyncio.sleep(STREAM_POLL_SECONDS)
                continue
            batch = pending[: source.batch_size]
            invocation, _ = await self.invoke(source.function_id, {"Records": batch}, "DynamoDB", source.name)
            failed = failed_item_ids(invocation)
            if not failed and failed is not None:
                pending = pending[len(batch) :]
                continue
            attempts += 1
            # Lambda resumes from the first failed record (or the batch's first, if it all failed).
            sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
            first = min((sequence_numbers.index(item) for item in failed or () if item in sequence_numbers), default=0)
            if attempts > retries:
                log.warning("%s: skipping %d stream records after %d retries", source.name, len(batch), retries)
                pending = pending[len(batch) :]
                attempts = 0
            else:
                pending = pending[first:]
                await asyncio.sleep(POLL_SECONDS)

    def _stream_positions(self, table_name: str, starting: str) -> tuple[str, dict[str, str | None]]:
        """The stream's ARN and, per shard, the last sequence number already passed (None: from the start)."""
        stream_arn = self.dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        shards = self.streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        positions: dict[str, str | None] = {shard["ShardId"]: None for shard in shards}
        if starting != "TRIM_HORIZON":  # LATEST: pass over what is already there
            for shard in shards:
                while records := self._next_records(stream_arn, shard["ShardId"], positions[shard["ShardId"]]):
                    positions[shard["ShardId"]] = records[-1]["dynamodb"]["SequenceNumber"]
        return stream_arn, positions

    def _next_records(self, stream_arn: str, shard_id: str, after: str | None) -> list[dict[str, Any]]:
        # A fresh iterator for every read: moto replaces a table's stream shard when it rolls
        # back a cancelled transaction, and an old iterator would keep reading the old one.
        if after is None:
            iterator = self.streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        else:
            iterator = self.streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after
            )["ShardIterator"]
        records: list[dict[str, Any]] = (
            self.streams.get_records(ShardIterator=iterator, Limit=1000).get("Records") or []
        )
        return records

    def _read_records(self, positions: dict[str, str | None], table_name: str, stream_arn: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for shard_id, after in list(positions.items()):
            raw_records = self._next_records(stream_arn, shard_id, after)
            if raw_records:
                positions[shard_id] = raw_records[-1]["dynamodb"]["SequenceNumber"]
            for raw in raw_records:
                record = _plain(raw)
                record["eventSourceARN"] = stream_arn
                key = (table_name, json.dumps(record["dynamodb"].get("Keys"), sort_keys=True))
                if record.get("eventName") == "REMOVE" and key in self._ttl_deletions:
                    self._ttl_deletions.discard(key)
                    record["userIdentity"] = dict(TTL_PRINCIPAL)
                records.append(record)
        return records

    # ---- the TTL service, simulated ----

    def expire(self, now: float | None = None) -> dict[str, int]:
        """Delete every item whose TTL attribute is at or before `now`, as DynamoDB's TTL would."""
        moment = time.time() if now is None else now
        deleted: dict[str, int] = {}
        for table in self.template.tables.values():
            ttl = table.properties.get("TimeToLiveSpecification") or {}
            if not ttl.get("Enabled") or not ttl.get("AttributeName"):
                continue
            attribute = str(ttl["AttributeName"])
            key_names = [key["AttributeName"] for key in table.properties["KeySchema"]]
            count = 0
            for page in self.dynamodb.get_paginator("scan").paginate(TableName=table.name):
                for item in page.get("Items") or []:
                    expires = item.get(attribute, {}).get("N")
                    if expires is None or float(expires) > moment:
                        continue
                    key = {name: item[name] for name in key_names}
                    self._ttl_deletions.add((table.name, json.dumps(_plain(key), sort_keys=True)))
                    self.dynamodb.delete_item(TableName=table.name, Key=key)
                    count += 1
            deleted[table.name] = count
        return deleted

    # ---- schedules ----

    def schedules(self) -> dict[str, EventSource]:
        return {source.name: source for source in self.template.event_sources if source.kind == "Schedule"}

    async def fire(self, name: str) -> Invocation | None:
        source = self.schedules().get(name) or next(
            (item for item in self.schedules().values() if item.name.endswith(f".{name}")), None
        )
        if source is None:
            return None
        configured = source.properties.get("Input")
        event: Any
        if configured is not None:
            event = json.loads(configured) if isinstance(configured, str) else configured
        else:
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT_ID,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": self.region,
                "resources": [f"arn:{PARTITION}:events:{self.region}:{ACCOUNT_ID}:rule/{source.name}"],
                "detail": {},
            }
        invocation, _ = await self.invoke(source.function_id, event, "Schedule", source.name)
        return invocation
