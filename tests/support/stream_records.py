"""DynamoDB Streams records as Lambda receives them, and DynamoDB's TTL played on a table."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

from tests.support.aws import REGION, TABLE_NAME

Item = dict[str, Any]

TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
STREAM_ARN = f"arn:aws:dynamodb:{REGION}:123456789012:table/{TABLE_NAME}/stream/2026-11-26T00:00:00.000"


def ttl_removal_record(table: str, old_image: dict[str, Any], sequence: int = 1) -> dict[str, Any]:
    """A DynamoDB Streams record as AWS delivers it for an item deleted by TTL."""
    return {
        "eventID": f"ttl-{sequence}",
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795656000,
            "Keys": {"pk": old_image["pk"], "sk": old_image["sk"]},
            "OldImage": old_image,
            "SequenceNumber": f"{sequence:021d}",
            "SizeBytes": 256,
            "StreamViewType": "OLD_IMAGE",
        },
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "eventSourceARN": f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-11-26T00:00:00.000",
    }


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


def _kind(item: Item) -> str:
    """What a sessions-table item is, as TTL sweeps order them."""
    if item["pk"]["S"].startswith("C#"):
        return "connections"
    if item["pk"]["S"].startswith("S#"):
        if item["sk"]["S"] == "#META":
            return "sessions"
        if item["sk"]["S"].startswith("P#"):
            return "places"
    return "other"


def ttl_sweep(dynamodb: Any, at: float, first: str) -> list[dict[str, Any]]:
    """Do what DynamoDB's TTL may do by `at`: delete every item whose expires_at has
    passed, all before any stream record is handled, those of kind `first` ("sessions",
    "places" or "connections") first. TTL keeps no order. Returns the stream records,
    in the order of the deletions."""
    expired = [
        item
        for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE_NAME, ConsistentRead=True)
        for item in page["Items"]
        if "expires_at" in item and int(item["expires_at"]["N"]) <= at
    ]
    expired.sort(key=lambda item: _kind(item) != first)
    for item in expired:
        dynamodb.delete_item(TableName=TABLE_NAME, Key={"pk": item["pk"], "sk": item["sk"]})
    return [stream_removal_record(item) for item in expired]
