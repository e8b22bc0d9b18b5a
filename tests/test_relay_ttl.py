"""Sessions expire: every item carries a DynamoDB TTL, and reads ignore expired items.

DynamoDB's TTL deletion can lag by days, so an item past its `expires_at` must already
count as gone. Time is shifted through the session store's clock, which the handlers'
store is built with (relay.wiring.DynamoDbStore is looked up when the store is made).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from relay import protocol
from relay.protocol import ErrorCode
from relay.settings import Settings
from relay.store import DynamoDbStore

from tests.support.aws import TABLE_NAME
from tests.support.harness import Gateway
from tests.support.messages import active_sessions, auth, send

# Seconds of slack between reading the clock here and the handler reading it.
CLOCK_TOLERANCE = 5


class ShiftedClock:
    """time.time, moved forward by `offset` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> ShiftedClock:
    # Imported here, not at the top: importing it reads the Powertools environment,
    # which the aws_environment fixture sets only once the test starts.
    from relay import wiring  # noqa: PLC0415

    shifted = ShiftedClock()

    def store_with_shifted_clock(client: Any, settings: Settings) -> DynamoDbStore:
        return DynamoDbStore(client, settings, clock=shifted)

    # The gateway fixture has cleared the cached store; the next one is built with this.
    monkeypatch.setattr(wiring, "DynamoDbStore", store_with_shifted_clock)
    return shifted


def session_items(dynamodb: Any, code: str, *connection_ids: str) -> list[dict[str, Any]]:
    """The session's items (meta and browsers) and the given connections' items."""
    items: list[dict[str, Any]] = dynamodb.query(
        TableName=TABLE_NAME,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"S#{code}"}},
        ConsistentRead=True,
    )["Items"]
    for connection_id in connection_ids:
        key = {"pk": {"S": f"C#{connection_id}"}, "sk": {"S": "#CONN"}}
        items.append(dynamodb.get_item(TableName=TABLE_NAME, Key=key, ConsistentRead=True)["Item"])
    return items


def ttl_attribute() -> str:
    from tests.support.aws import sessions_table_definition  # noqa: PLC0415

    return str(sessions_table_definition()["TimeToLiveSpecification"]["AttributeName"])


def test_the_table_ttl_attribute_is_expires_at() -> None:
    assert ttl_attribute() == "expires_at"


def test_default_ttl_outlives_the_longest_connection() -> None:
    assert protocol.DEFAULT_SESSION_TTL_SECONDS >= protocol.MAX_CONNECTION_SECONDS >= 2 * 60 * 60


@pytest.mark.parametrize("ttl", [None, 900])
def test_every_session_item_carries_expires_at_now_plus_the_ttl(
    gateway: Gateway, dynamodb: Any, monkeypatch: pytest.MonkeyPatch, ttl: int | None
) -> None:
    if ttl is None:
        monkeypatch.delenv("SESSION_TTL_SECONDS", raising=False)
        ttl = protocol.DEFAULT_SESSION_TTL_SECONDS
    else:
        monkeypatch.setenv("SESSION_TTL_SECONDS", str(ttl))
    before = time.time()
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    after = time.time()

    items = session_items(dynamodb, code, mac, browser)

    assert len(items) == 4  # session, its browser, and both connections
    for item in items:
        expires_at = int(item[ttl_attribute()]["N"])
        assert before + ttl - CLOCK_TOLERANCE <= expires_at <= after + ttl + CLOCK_TOLERANCE, item


def test_an_expired_session_code_is_invalid_and_its_members_unbound(gateway: Gateway, clock: ShiftedClock) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)

    clock.offset = protocol.DEFAULT_SESSION_TTL_SECONDS + CLOCK_TOLERANCE

    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.INVALID_CODE)]
    assert send(gateway, browser, "late") == [protocol.error(ErrorCode.NOT_BOUND)]
    assert send(gateway, mac, "late") == [protocol.error(ErrorCode.NOT_BOUND)]
    assert gateway.sent[mac][-1] == protocol.error(ErrorCode.NOT_BOUND)  # no frame reached it


def test_a_session_just_short_of_its_ttl_still_works(gateway: Gateway, clock: ShiftedClock) -> None:
    mac, code = gateway.register()
    browser, peer = gateway.join(code)

    clock.offset = protocol.DEFAULT_SESSION_TTL_SECONDS - 10 * CLOCK_TOLERANCE

    assert auth(gateway, gateway.connect(), code)[0]["type"] == protocol.MessageType.AUTHENTICATED
    assert send(gateway, browser, "in time") == []
    assert gateway.last(mac) == protocol.frame(peer, "in time")


def test_an_expired_session_item_in_the_table_is_ignored(gateway: Gateway, dynamodb: Any) -> None:
    # As DynamoDB leaves it: past its expiry, not yet deleted by TTL.
    _, code = gateway.register()
    past = str(int(time.time()) - 60)

    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": f"S#{code}"}, "sk": {"S": "#META"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": past}},
    )

    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.INVALID_CODE)]


def test_an_expired_browser_connection_item_is_ignored(gateway: Gateway, dynamodb: Any) -> None:
    mac, code = gateway.register()
    browser, _ = gateway.join(code)
    past = str(int(time.time()) - 60)

    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": f"C#{browser}"}, "sk": {"S": "#CONN"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": past}},
    )

    assert send(gateway, browser, "late") == [protocol.error(ErrorCode.NOT_BOUND)]
    assert [m for m in gateway.sent[mac] if m["type"] == protocol.MessageType.FRAME] == []


def test_an_expired_browser_is_left_out_of_broadcasts(gateway: Gateway, dynamodb: Any) -> None:
    mac, code = gateway.register()
    expired, expired_peer = gateway.join(code)
    live, _ = gateway.join(code)
    past = str(int(time.time()) - 60)

    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": f"S#{code}"}, "sk": {"S": f"P#{expired_peer}"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": past}},
    )
    send(gateway, mac, "all")

    assert gateway.last(live) == protocol.frame(protocol.MAC_PEER, "all")
    assert [m for m in gateway.sent[expired] if m["type"] == protocol.MessageType.FRAME] == []
    assert send(gateway, mac, "you", to=expired_peer) == [protocol.error(ErrorCode.UNKNOWN_PEER)]
    assert active_sessions(gateway) == 1
