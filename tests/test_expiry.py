"""Expiry that really cleans up: DynamoDB TTL removes a session whose $disconnect never
came, and functions/expiry/app.py, fed the table's stream, finishes the job.

TTL is simulated on moto's table the way DynamoDB does it (the item, past its
expires_at, is deleted) and the stream record is built from the item actually removed,
shaped as Lambda receives it: eventName REMOVE, OldImage in DynamoDB JSON and, for TTL
deletions only, userIdentity {"type": "Service", "principalId": "dynamodb.amazonaws.com"}.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

import pytest
from moto.events.models import EventPattern
from relay import protocol, session_codes
from relay.protocol import ErrorCode, MessageType

from tests.support.aws import TABLE_NAME
from tests.support.files import load_event, load_template
from tests.support.harness import Gateway
from tests.support.invariants import (
    MANAGEMENT_ENDPOINT,
    assert_invariants,
    debug_count,
    invoke_expiry,
    read_table,
    reset_expiry_relay,
)
from tests.support.stream_records import expire_by_ttl, session_key, stream_removal_record

Message = dict[str, Any]
NO_FAILURES: dict[str, list[Any]] = {"batchItemFailures": []}


@pytest.fixture
def relay(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """The gateway, with the Management API endpoint the expiry function is configured with."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", MANAGEMENT_ENDPOINT)
    reset_expiry_relay()
    yield gateway
    reset_expiry_relay()


def join(gateway: Gateway, code: str) -> str:
    """A browser of `code`, admitted or pending."""
    browser = gateway.connect()
    (reply,) = gateway.message(browser, {"action": "auth", "code": code})
    assert reply["type"] in (MessageType.AUTHENTICATED, MessageType.PENDING), reply
    return browser


def session_closed_count(gateway: Gateway, connection_id: str) -> int:
    return sum(1 for m in gateway.sent[connection_id] if m["type"] == MessageType.SESSION_CLOSED)


def ttl_removal(dynamodb: Any, code: str) -> dict[str, Any]:
    record = expire_by_ttl(dynamodb, code)
    assert record is not None, f"no session {code} to expire"
    return record


def sequence_number(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def is_bound(dynamodb: Any, connection_id: str) -> bool:
    return "role" in read_table(dynamodb).connections.get(connection_id, {})


# ---- what expiry does ----------------------------------------------------------------


@pytest.mark.parametrize("approve", [False, True], ids=["open", "with-approval"])
def test_an_expired_session_is_closed_for_its_browsers_and_its_mac(
    relay: Gateway, dynamodb: Any, approve: bool
) -> None:
    mac = relay.connect()
    (registered,) = relay.message(mac, {"action": "register", "client_id": "mac-1", "approve": approve})
    code = registered["code"]
    browsers = [join(relay, code) for _ in range(2)]
    assert debug_count(relay) == 1

    result = invoke_expiry(relay, [ttl_removal(dynamodb, code)])

    assert result == NO_FAILURES
    assert debug_count(relay) == 0
    for browser in browsers:
        assert session_closed_count(relay, browser) == 1
        assert relay.last(browser) == protocol.session_closed()
        assert not is_bound(dynamodb, browser)
    assert relay.closed_by_relay == [mac]
    state = assert_invariants(relay, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}
    assert mac not in state.connections
    # The code is dead; the browsers are free to join another session.
    assert relay.message(relay.connect(), {"action": "auth", "code": code}) == [protocol.error(ErrorCode.INVALID_CODE)]
    _, other = relay.register("mac-2")
    (reply,) = relay.message(browsers[0], {"action": "auth", "code": other})
    assert reply["type"] == MessageType.AUTHENTICATED


@pytest.mark.parametrize("redelivery", ["same batch", "next batch"])
def test_a_removal_delivered_twice_lowers_the_count_once(relay: Gateway, dynamodb: Any, redelivery: str) -> None:
    _, code = relay.register("mac-1")
    browser, _ = relay.join(code)
    relay.register("mac-2")
    record = ttl_removal(dynamodb, code)

    if redelivery == "same batch":
        assert invoke_expiry(relay, [record, copy.deepcopy(record)]) == NO_FAILURES
    else:
        assert invoke_expiry(relay, [record]) == NO_FAILURES
        assert invoke_expiry(relay, [copy.deepcopy(record)]) == NO_FAILURES

    assert debug_count(relay) == 1
    assert session_closed_count(relay, browser) == 1
    assert len(relay.closed_by_relay) == 1
    assert_invariants(relay, dynamodb)


def test_several_sessions_expiring_in_one_batch_each_lower_the_count(relay: Gateway, dynamodb: Any) -> None:
    codes = [relay.register(f"mac-{n}")[1] for n in range(3)]

    assert invoke_expiry(relay, [ttl_removal(dynamodb, code) for code in codes[:2]]) == NO_FAILURES

    assert debug_count(relay) == 1
    assert list(read_table(dynamodb).sessions) == [codes[2]]
    assert_invariants(relay, dynamodb)


def test_the_mac_connection_being_gone_already_does_not_stop_the_cleanup(relay: Gateway, dynamodb: Any) -> None:
    mac, code = relay.register()
    browsers = [relay.join(code)[0] for _ in range(2)]
    relay.vanished.update([mac, browsers[0]])

    assert invoke_expiry(relay, [ttl_removal(dynamodb, code)]) == NO_FAILURES

    assert debug_count(relay) == 0
    assert session_closed_count(relay, browsers[1]) == 1
    assert not any(is_bound(dynamodb, b) for b in browsers)
    assert_invariants(relay, dynamodb)


def expire_item(dynamodb: Any, key: dict[str, Any]) -> None:
    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key=key,
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )


def test_items_ttl_deleted_before_the_session_item_do_not_upset_the_cleanup(relay: Gateway, dynamodb: Any) -> None:
    """TTL deletes each expired item on its own schedule. A browser's items expire no
    earlier than its session's (it joined later), so by the time one of them is gone
    everything is past its expiry, and reads already treat it all as gone."""
    _, code = relay.register()
    (seat_first, seat_first_peer), (connection_first, connection_first_peer) = relay.join(code), relay.join(code)
    seats = {
        peer: {"pk": {"S": f"S#{code}"}, "sk": {"S": f"P#{peer}"}} for peer in (seat_first_peer, connection_first_peer)
    }
    connections = {cid: {"pk": {"S": f"C#{cid}"}, "sk": {"S": "#CONN"}} for cid in (seat_first, connection_first)}
    for key in [*seats.values(), *connections.values()]:
        expire_item(dynamodb, key)
    dynamodb.delete_item(TableName=TABLE_NAME, Key=seats[seat_first_peer])
    dynamodb.delete_item(TableName=TABLE_NAME, Key=connections[connection_first])

    assert invoke_expiry(relay, [ttl_removal(dynamodb, code)]) == NO_FAILURES

    assert debug_count(relay) == 0
    # The browser whose seat was still there hears of it; nothing leads to the other.
    assert session_closed_count(relay, connection_first) == 1
    assert session_closed_count(relay, seat_first) == 0
    state = assert_invariants(relay, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}


def test_a_browser_whose_place_ttl_deletes_first_is_told_once_and_the_count_drops_once(
    relay: Gateway, dynamodb: Any
) -> None:
    """TTL deletes in no set order. A present browser whose place goes before the session
    item is told by its place's record (the session's clean-up no longer finds it); the
    other browser by the session's; each once, however often the stream delivers them."""
    _, code = relay.register()
    (first, first_peer), (second, _) = relay.join(code), relay.join(code)
    expire_item(dynamodb, session_key(code))
    place_key = {"pk": {"S": f"S#{code}"}, "sk": {"S": f"P#{first_peer}"}}
    expire_item(dynamodb, place_key)
    place = dynamodb.get_item(TableName=TABLE_NAME, Key=place_key)["Item"]
    dynamodb.delete_item(TableName=TABLE_NAME, Key=place_key)
    place_removal = stream_removal_record(place)

    assert invoke_expiry(relay, [place_removal, place_removal]) == NO_FAILURES
    assert session_closed_count(relay, first) == 1
    assert not is_bound(dynamodb, first)
    assert session_closed_count(relay, second) == 0
    assert debug_count(relay) == 1  # the session's own record lowers it

    assert invoke_expiry(relay, [ttl_removal(dynamodb, code)]) == NO_FAILURES
    assert session_closed_count(relay, first) == 1
    assert session_closed_count(relay, second) == 1
    assert debug_count(relay) == 0
    state = assert_invariants(relay, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}


def test_reads_ignore_a_session_past_its_expiry_that_ttl_has_not_deleted_yet(relay: Gateway, dynamodb: Any) -> None:
    _, code = relay.register()
    expire_item(dynamodb, session_key(code))

    replies = relay.message(relay.connect(), {"action": "auth", "code": code})

    assert replies == [protocol.error(ErrorCode.INVALID_CODE)]
    assert read_table(dynamodb).peers == {}


# ---- what expiry leaves alone --------------------------------------------------------


def test_a_session_the_relay_deleted_itself_is_not_counted_down_again(relay: Gateway, dynamodb: Any) -> None:
    mac, code = relay.register("mac-1")
    _, other_code = relay.register("mac-2")
    other_browser, _ = relay.join(other_code)
    image = dynamodb.get_item(TableName=TABLE_NAME, Key=session_key(code))["Item"]
    relay.disconnect(mac)  # the relay's own DeleteItem: a REMOVE without a Service identity
    assert debug_count(relay) == 1

    assert invoke_expiry(relay, [stream_removal_record(image, by_ttl=False)]) == NO_FAILURES

    assert debug_count(relay) == 1
    assert session_closed_count(relay, other_browser) == 0
    assert relay.closed_by_relay == []
    assert_invariants(relay, dynamodb)


def test_a_removal_by_another_service_principal_is_ignored(relay: Gateway, dynamodb: Any) -> None:
    _, code = relay.register()
    image = dynamodb.get_item(TableName=TABLE_NAME, Key=session_key(code))["Item"]
    record = stream_removal_record(image)
    record["userIdentity"] = {"type": "Service", "principalId": "backup.amazonaws.com"}

    assert invoke_expiry(relay, [record]) == NO_FAILURES

    assert debug_count(relay) == 1
    assert relay.closed_by_relay == []


def test_ttl_removals_of_other_items_and_other_events_are_ignored(relay: Gateway, dynamodb: Any) -> None:
    mac, code = relay.register()
    browser, peer = relay.join(code)
    relay.message(relay.connect(), {"action": "auth", "code": "AAAAAA" if code != "AAAAAA" else "BBBBBB"})
    items = [
        item
        for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE_NAME)
        for item in page["Items"]
        if item["sk"]["S"] != "#META"
    ]
    kinds = {item["pk"]["S"].split("#")[0] for item in items}
    assert kinds == {"S", "C", "COUNTER", "IP"}  # seat, connections, counter shard, failure window
    records = [stream_removal_record(item) for item in items]
    meta = dynamodb.get_item(TableName=TABLE_NAME, Key=session_key(code))["Item"]
    for event_name in ("INSERT", "MODIFY"):
        record = stream_removal_record(meta)
        record["eventName"] = event_name
        record["dynamodb"]["NewImage"] = meta
        records.append(record)

    assert invoke_expiry(relay, records) == NO_FAILURES

    assert debug_count(relay) == 1
    assert relay.sent[browser][-1] == protocol.authenticated(code, peer)
    assert relay.sent[mac][-1] == protocol.peer_joined(peer)
    assert relay.closed_by_relay == []


# ---- failures ------------------------------------------------------------------------


def test_a_failing_record_is_reported_without_failing_the_others(relay: Gateway, dynamodb: Any) -> None:
    codes = [relay.register(f"mac-{n}")[1] for n in range(3)]
    records = [ttl_removal(dynamodb, code) for code in codes[:2]]
    broken = copy.deepcopy(records[0])
    del broken["dynamodb"]["OldImage"]["mac_connection_id"]
    broken["dynamodb"]["SequenceNumber"] = "9" * 21

    result = invoke_expiry(relay, [records[0], broken, records[1]])

    assert result == {"batchItemFailures": [{"itemIdentifier": sequence_number(broken)}]}
    assert debug_count(relay) == 1
    assert_invariants(relay, dynamodb)


def test_a_batch_whose_every_record_fails_fails_the_invocation(relay: Gateway, dynamodb: Any) -> None:
    """Lambda then retries the whole batch: nothing is lost."""
    _, code = relay.register()
    broken = ttl_removal(dynamodb, code)
    del broken["dynamodb"]["OldImage"]["mac_connection_id"]

    with pytest.raises(Exception, match="all 1 records failed"):
        invoke_expiry(relay, [broken])

    assert debug_count(relay) == 1


# ---- codes come back -----------------------------------------------------------------


def test_cleanup_of_an_expired_session_leaves_a_newer_session_with_the_same_code_alone(
    relay: Gateway, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once TTL has deleted a session, its code is free: a new mac-client may draw it
    before the stream function has run for the old one."""
    code = "K7M2QX"
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: code)
    relay.register("old-mac")
    old_browser, _ = relay.join(code)
    record = ttl_removal(dynamodb, code)
    new_mac, _ = relay.register("new-mac")
    new_browser, new_peer = relay.join(code)

    assert invoke_expiry(relay, [record]) == NO_FAILURES

    assert session_closed_count(relay, old_browser) == 1
    assert session_closed_count(relay, new_browser) == 0
    assert is_bound(dynamodb, new_browser)
    assert new_mac not in relay.closed_by_relay
    assert debug_count(relay) == 1
    assert_invariants(relay, dynamodb)
    relay.message(new_browser, {"action": "send", "data": "still here"})
    assert relay.last(new_mac) == protocol.frame(new_peer, "still here")


def test_two_sessions_that_held_one_code_each_lower_the_count_when_they_expire(
    relay: Gateway, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the reused-codes invariant machine: a code can come back within the
    second its previous session was created in, and both sessions can expire."""
    code = "K7M2QX"
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: code)
    relay.register("first-mac")
    first = ttl_removal(dynamodb, code)
    assert invoke_expiry(relay, [first]) == NO_FAILURES
    second_mac, _ = relay.register("second-mac")
    # Created in the same second as the first one, as a quick reuse can be.
    dynamodb.update_item(
        TableName=TABLE_NAME,
        Key=session_key(code),
        UpdateExpression="SET created_at = :first",
        ExpressionAttributeValues={":first": first["dynamodb"]["OldImage"]["created_at"]},
    )
    assert debug_count(relay) == 1

    assert invoke_expiry(relay, [ttl_removal(dynamodb, code)]) == NO_FAILURES

    assert debug_count(relay) == 0
    assert second_mac in relay.closed_by_relay
    assert_invariants(relay, dynamodb)


# ---- the template's stream filter ------------------------------------------------------


def expiry_filter_patterns() -> list[EventPattern]:
    """The FilterCriteria on ExpiryFunction's stream event, as template.yaml declares them."""
    function = load_template()["Resources"]["ExpiryFunction"]["Properties"]
    (stream,) = [e["Properties"] for e in function["Events"].values() if e["Type"] == "DynamoDB"]
    return [EventPattern.load(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]


def passes_filter(record: dict[str, Any]) -> bool:
    # Lambda applies the filters with EventBridge's pattern rules; moto implements them.
    return any(pattern.matches_event(cast(Any, record)) for pattern in expiry_filter_patterns())


def test_the_stream_filter_lets_through_ttl_removals_only(relay: Gateway, dynamodb: Any) -> None:
    _, code = relay.register()
    meta = dynamodb.get_item(TableName=TABLE_NAME, Key=session_key(code))["Item"]
    by_user = stream_removal_record(meta, by_ttl=False)
    by_other_service = stream_removal_record(meta)
    by_other_service["userIdentity"] = {"type": "Service", "principalId": "backup.amazonaws.com"}
    modified = stream_removal_record(meta)
    modified["eventName"] = "MODIFY"

    assert passes_filter(ttl_removal(dynamodb, code))
    assert not passes_filter(by_user)
    assert not passes_filter(by_other_service)
    assert not passes_filter(modified)


def test_simulated_records_are_shaped_like_the_expiry_fixture(relay: Gateway, dynamodb: Any) -> None:
    (fixture,) = load_event("expiry")["Records"]
    _, code = relay.register()

    record = ttl_removal(dynamodb, code)

    assert record.keys() == fixture.keys()
    assert record["dynamodb"].keys() == fixture["dynamodb"].keys()
    assert record["dynamodb"]["OldImage"].keys() == fixture["dynamodb"]["OldImage"].keys()
    assert record["userIdentity"] == fixture["userIdentity"]
    assert passes_filter(fixture)
