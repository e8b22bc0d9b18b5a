"""The sessions table as the store's sections use it: keys, liveness, and calls that
speak only StoreError.

Every call names the table once, here; a transaction the table refuses comes back as
Cancelled with DynamoDB's reasons, item by item; any other AWS error (after botocore's
own retries) becomes StoreUnavailable, so nothing above the store sees botocore.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relay.model import StoreError, StoreUnavailable
from relay.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]

# Sort keys of the item kinds (see relay.store for the whole layout).
META = "#META"
CONN = "#CONN"
COUNT = "#COUNT"
PEER_PREFIX = "P#"
EXPIRED_PREFIX = "#EXPIRED#"
BAN_PREFIX = "BAN#"
HELD_PREFIX = "H#"

CONDITION_FAILED = "ConditionalCheckFailed"

# batch_get_item takes at most this many keys per call.
_BATCH_GET_LIMIT = 100


def session_partition(code: str) -> str:
    return f"S#{code}"


def session_key(code: str) -> Item:
    return {"pk": {"S": session_partition(code)}, "sk": {"S": META}}


def peer_key(code: str, peer: str) -> Item:
    return {"pk": {"S": session_partition(code)}, "sk": {"S": PEER_PREFIX + peer}}


def connection_key(connection_id: str) -> Item:
    return {"pk": {"S": f"C#{connection_id}"}, "sk": {"S": CONN}}


def counter_key(shard: int) -> Item:
    return {"pk": {"S": f"COUNTER#{shard}"}, "sk": {"S": COUNT}}


def ip_window_key(address: str, window_start: int) -> Item:
    """Auth attempts claimed from one address (relay.addresses.limit_key) in one window."""
    return {"pk": {"S": f"IP#{address}"}, "sk": {"S": f"W#{window_start}"}}


def registrations_key(address: str, window_start: int) -> Item:
    """Sessions registered from one address in one window."""
    return {"pk": {"S": f"IP#{address}"}, "sk": {"S": f"R#{window_start}"}}


def ban_key(code: str, address: str) -> Item:
    """An address kicked from the session with this code (which one: its mac-client's
    connections, `mac_connection_ids`, which a resume adds to)."""
    return {"pk": {"S": session_partition(code)}, "sk": {"S": BAN_PREFIX + address}}


def client_request_token(request_token: str, step: str) -> str:
    """DynamoDB's ClientRequestToken (at most 36 characters) for one write of one request:
    the same API Gateway request id and step give the same token, so a transaction
    botocore retries after a lost response is applied once."""
    return hashlib.sha256(f"{request_token}|{step}".encode()).hexdigest()[:36]


def held_key(code: str, recipient: str, sequence: int) -> Item:
    # Zero-padded, so the sort key orders held messages as they were sent.
    return {"pk": {"S": session_partition(code)}, "sk": {"S": f"{HELD_PREFIX}{recipient}#{sequence:012d}"}}


def expired_marker_key(code: str, created_at: int, mac_connection_id: str) -> Item:
    # The mac-client's connection id tells apart two sessions that held the same code
    # and were created in the same second.
    return {"pk": {"S": session_partition(code)}, "sk": {"S": f"{EXPIRED_PREFIX}{created_at}#{mac_connection_id}"}}


def text(item: Item, name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value else None


def flag(item: Item, name: str, default: bool) -> bool:
    return bool(item.get(name, {"BOOL": default})["BOOL"])


def number(item: Item, name: str, default: int = 0) -> int:
    return int(item[name]["N"]) if name in item else default


class Cancelled(StoreError):
    """A transaction DynamoDB cancelled; `reasons` has one code per item, in order.

    Sections turn the reasons they expect into outcomes (AlreadyBound, ...); any other
    reaches the caller as this StoreError.
    """

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(reasons)
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        """Did the item at `index` fail its condition?"""
        return self.reasons[index : index + 1] == [CONDITION_FAILED]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Table:
    """One DynamoDB table, its settings and its clock: what every store section shares."""

    def __init__(
        self,
        client: DynamoDBClient,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        request_token: str | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.name = settings.table_name
        self.clock = clock
        # The API Gateway request being answered: each transaction's ClientRequestToken
        # derives from it (see transact).
        self.request_token = request_token

    def for_request(self, request_token: str | None) -> Table:
        """This table, writing for one request (cheap: the client is shared)."""
        return Table(self.client, self.settings, self.clock, request_token)

    # ---- time ---------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def expires_at(self) -> str:
        """The TTL of what lives as long as one connection could: a v1 session's items,
        and every connection record (C#), resumable sessions' included. A connection
        record thus outlives its connection (API Gateway ends it within two hours),
        whatever its session's lifetime: when TTL deletes a session's items, in no set
        order, the record of a connection still open is there to unbind and tell it."""
        return str(self.now() + self.settings.session_ttl_seconds)

    def window_start(self) -> int:
        """The start of the current limit window (AuthFailureWindowSeconds)."""
        window = self.settings.auth_failure_window_seconds
        return self.now() // window * window

    def window_expires_at(self, window_start: int) -> str:
        """Limit items outlive their window by one more."""
        return str(window_start + 2 * self.settings.auth_failure_window_seconds)

    def live(self, item: Item | None) -> bool:
        """TTL deletion can lag by days, so an item past its expiry counts as gone."""
        if not item:
            return False
        expires_at = item.get("expires_at")
        return expires_at is None or int(expires_at["N"]) > self.now()

    # ---- transaction items ----------------------------------------------------------

    def put(self, item: Item, condition: str | None = None) -> Item:
        put: Item = {"TableName": self.name, "Item": item}
        if condition:
            put["ConditionExpression"] = condition
        return {"Put": put}

    def update(
        self,
        key: Item,
        expression: str,
        values: Item,
        condition: str | None = None,
        names: dict[str, str] | None = None,
    ) -> Item:
        update: Item = {
            "TableName": self.name,
            "Key": key,
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
        }
        if condition:
            update["ConditionExpression"] = condition
        if names:
            update["ExpressionAttributeNames"] = names
        return {"Update": update}

    def condition_check(
        self, key: Item, condition: str, values: Item | None = None, names: dict[str, str] | None = None
    ) -> Item:
        check: Item = {"TableName": self.name, "Key": key, "ConditionExpression": condition}
        if values:
            check["ExpressionAttributeValues"] = values
        if names:
            check["ExpressionAttributeNames"] = names
        return {"ConditionCheck": check}

    def delete(self, key: Item, condition: str | None = None, values: Item | None = None) -> Item:
        delete: Item = {"TableName": self.name, "Key": key}
        if condition:
            delete["ConditionExpression"] = condition
        if values:
            delete["ExpressionAttributeValues"] = values
        return {"Delete": delete}

    # ---- calls ----------------------------------------------------------------------

    def transact(self, items: Sequence[Item], step: str = "") -> None:
        """Write all items or none; raises Cancelled with the per-item reasons.

        On a table for a request (for_request: the API Gateway request id), the call
        carries a ClientRequestToken for (request, step): DynamoDB then applies a retried
        call once and answers it as a success (for 10 minutes). Give each distinct write
        of one request its own step.
        """
        extra: dict[str, Any] = {}
        if self.request_token:
            extra["ClientRequestToken"] = client_request_token(self.request_token, step)
        try:
            self.client.transact_write_items(TransactItems=list(items), **extra)  # type: ignore[arg-type]
        except ClientError as error:
            if _error_code(error) == "TransactionCanceledException":
                reasons = error.response.get("CancellationReasons") or []
                raise Cancelled([reason.get("Code", "None") for reason in reasons]) from None
            raise StoreUnavailable(_error_code(error)) from error

    def write(self, operation: Item) -> Item:
        """One Update or Delete on its own (a transaction item's body); the response."""
        ((kind, request),) = operation.items()
        try:
            if kind == "Update":
                return self.client.update_item(**request)  # type: ignore[return-value]
            return self.client.delete_item(**request)  # type: ignore[return-value]
        except ClientError as error:
            raise StoreUnavailable(_error_code(error)) from error

    def write_if(self, operation: Item) -> Item | None:
        """Like write, but a failed condition is None rather than an error."""
        try:
            return self.write(operation)
        except StoreUnavailable as error:
            if error.args == ("ConditionalCheckFailedException",):
                return None
            raise

    def get(self, key: Item) -> Item | None:
        try:
            item: Item | None = self.client.get_item(TableName=self.name, Key=key, ConsistentRead=True).get("Item")
        except ClientError as error:
            raise StoreUnavailable(_error_code(error)) from error
        return item

    def batch_get(self, keys: Sequence[Item]) -> list[Item]:
        """Every item of `keys` that exists, in any order, following UnprocessedKeys."""
        found: list[Item] = []
        pending = list(keys)
        try:
            while pending:
                batch, pending = pending[:_BATCH_GET_LIMIT], pending[_BATCH_GET_LIMIT:]
                response = self.client.batch_get_item(RequestItems={self.name: {"Keys": batch, "ConsistentRead": True}})
                found += response.get("Responses", {}).get(self.name, [])
                unprocessed: Any = response.get("UnprocessedKeys") or {}
                pending = list(unprocessed.get(self.name, {}).get("Keys", [])) + pending
        except ClientError as error:
            raise StoreUnavailable(_error_code(error)) from error
        return found

    def query_prefix(self, partition: str, sort_key_prefix: str) -> Iterator[Item]:
        """The items of one partition whose sort key starts with the prefix, page by page."""
        paginator = self.client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": partition}, ":prefix": {"S": sort_key_prefix}},
            ConsistentRead=True,
        )
        try:
            for page in pages:
                yield from page.get("Items", [])
        except ClientError as error:
            raise StoreUnavailable(_error_code(error)) from error


class Section:
    """One concern of the store (sessions, browsers, ...): every section shares the table."""

    def __init__(self, table: Table) -> None:
        self.table = table
