"""DynamoDB request units, computed from the items each call actually touched.

moto answers ReturnConsumedCapacity with fixed numbers (1.0 or 0.5 whatever the item),
so units are computed here instead, by DynamoDB's published rules for on-demand tables
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html):

* reads: one read unit per 4 KB of a strongly consistent read (half for eventually
  consistent), each item of a GetItem or BatchGetItem rounded up on its own, a Query
  rounded up once over the sum of the items it read; a read that finds nothing still
  costs one unit;
* writes: one write unit per 1 KB of the larger of the item before and after the
  write; a failed condition still costs the write;
* transactions: twice the units of the same reads or writes outside one.

`UnitRecorder` hooks a botocore event emitter: before each write it reads the items
about to change (with a client of its own, unhooked), after it reads them again, and
for reads it sizes the items in the response.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024
READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
Item = dict[str, Any]


def _number_size(text: str) -> int:
    """DynamoDB: about one byte per two significant digits, plus one."""
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) or 1
    return math.ceil(significant / 2) + 1


def attribute_value_size(value: dict[str, Any]) -> int:
    (kind, content), *_ = value.items()
    if kind == "S":
        return len(content.encode("utf-8"))
    if kind == "N":
        return _number_size(content)
    if kind == "B":
        return len(content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in content)
    if kind == "NS":
        return sum(_number_size(n) for n in content)
    if kind == "BS":
        return sum(len(b) for b in content)
    if kind == "L":
        return 3 + sum(1 + attribute_value_size(v) for v in content)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + attribute_value_size(v) for k, v in content.items())
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Item | None) -> int:
    """Bytes of an item in DynamoDB's accounting: attribute names plus values."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + attribute_value_size(value) for name, value in item.items())


def read_units(size: int, consistent: bool = True) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def write_units(size_before: int, size_after: int) -> float:
    return float(max(1, math.ceil(max(size_before, size_after) / WRITE_UNIT_BYTES)))


@dataclass
class Usage:
    """What one stretch of activity cost in DynamoDB."""

    calls: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0
    items_read: int = 0
    items_written: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.calls.items())),
            "read_units": self.read_units,
            "write_units": self.write_units,
            "items_read": self.items_read,
            "items_written": self.items_written,
        }


def _write_targets(operation: str, params: dict[str, Any]) -> list[tuple[str, Item, bool]]:
    """(table, key, transactional) of every item a write request touches."""
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        key = params.get("Key") or {"pk": params["Item"]["pk"], "sk": params["Item"]["sk"]}
        return [(params["TableName"], key, False)]
    if operation == "TransactWriteItems":
        targets = []
        for entry in params["TransactItems"]:
            ((_, action),) = entry.items()
            key = action.get("Key") or {"pk": action["Item"]["pk"], "sk": action["Item"]["sk"]}
            targets.append((action["TableName"], key, True))
        return targets
    if operation == "BatchWriteItem":
        targets = []
        for table, requests in params["RequestItems"].items():
            for request in requests:
                if "PutRequest" in request:
                    item = request["PutRequest"]["Item"]
                    targets.append((table, {"pk": item["pk"], "sk": item["sk"]}, False))
                else:
                    targets.append((table, request["DeleteRequest"]["Key"], False))
        return targets
    raise ValueError(f"not a write: {operation}")


class UnitRecorder:
    """Counts calls and request units of every DynamoDB call an emitter's clients make.

    `peek` reads an item without being counted: a client created from another botocore
    session, pointed at the same (moto) DynamoDB.
    """

    def __init__(self, peek: Callable[[str, Item], Item | None]) -> None:
        self._peek = peek
        self.total = Usage()

    def observe(self, events: Any) -> None:
        events.register("before-call.dynamodb.*", self._before_call)
        events.register("after-call.dynamodb.*", self._after_call)

    def during(self, action: Callable[[], object]) -> Usage:
        before = Usage(
            Counter(self.total.calls),
            self.total.read_units,
            self.total.write_units,
            self.total.items_read,
            self.total.items_written,
        )
        action()
        return Usage(
            self.total.calls - before.calls,
            self.total.read_units - before.read_units,
            self.total.write_units - before.write_units,
            self.total.items_read - before.items_read,
            self.total.items_written - before.items_written,
        )

    def _before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # The request's own context dict carries what after-call needs, so concurrent
        # calls from several threads never mix their pending items.
        operation = model.name
        self.total.calls[operation] += 1
        body = _json_body(params)
        context["unit_recorder_body"] = body
        if operation not in READ_OPERATIONS:
            context["unit_recorder_pending"] = [
                (table, key, transactional, item_size(self._peek(table, key)))
                for table, key, transactional in _write_targets(operation, body)
            ]

    def _after_call(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        operation = model.name
        if operation in READ_OPERATIONS:
            self._count_read(operation, parsed, context.get("unit_recorder_body", {}))
            return
        for table, key, transactional, size_before in context.get("unit_recorder_pending", []):
            units = write_units(size_before, item_size(self._peek(table, key)))
            self.total.write_units += 2 * units if transactional else units
            self.total.items_written += 1

    def _count_read(self, operation: str, parsed: dict[str, Any], body: dict[str, Any]) -> None:
        # DynamoDB reads are eventually consistent unless the request asks otherwise.
        if operation == "GetItem":
            consistent = bool(body.get("ConsistentRead", False))
            self.total.read_units += read_units(item_size(parsed.get("Item")), consistent)
            self.total.items_read += 1 if parsed.get("Item") else 0
        elif operation == "BatchGetItem":
            for table, request in body.get("RequestItems", {}).items():
                consistent = bool(request.get("ConsistentRead", False))
                found = parsed.get("Responses", {}).get(table, [])
                unprocessed = len((parsed.get("UnprocessedKeys") or {}).get(table, {}).get("Keys", []))
                missing = max(0, len(request["Keys"]) - unprocessed - len(found))
                self.total.read_units += sum(read_units(item_size(item), consistent) for item in found)
                self.total.read_units += missing * read_units(0, consistent)
                self.total.items_read += len(found)
        else:  # Query, Scan: rounded once over everything read
            consistent = bool(body.get("ConsistentRead", False))
            items = parsed.get("Items", [])
            self.total.read_units += read_units(sum(item_size(item) for item in items), consistent)
            self.total.items_read += len(items)


def _json_body(params: dict[str, Any]) -> dict[str, Any]:
    body = params.get("body") or b"{}"
    return json.loads(body if isinstance(body, str) else body.decode("utf-8"))  # type: ignore[no-any-return]
