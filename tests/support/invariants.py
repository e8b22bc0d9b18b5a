"""What the relay must always keep true, read off the table and the debug endpoint, and
what a client's message may be answered with; shared by the invariant, fault and expiry
tests. The DynamoDB TTL side (stream records, expire_by_ttl) is in stream_records."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from relay.protocol import MessageType

from tests.support.aws import TABLE_NAME
from tests.support.harness import Gateway

Item = dict[str, Any]
Message = dict[str, Any]

DEBUG_BODY_PREFIX = "Active sessions: "
# What the template's ExpiryFunction (and relay-local) set: the stream function has no
# WebSocket event to learn the Management API endpoint from.
MANAGEMENT_ENDPOINT = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod"

# Messages that answer the sender's own request; everything else a sender may receive
# while its request runs (frames, peer_left of a vanished browser, session_closed) is an
# event caused by someone else.
DIRECT_REPLIES = frozenset(
    {MessageType.REGISTERED, MessageType.AUTHENTICATED, MessageType.PENDING, MessageType.PONG, MessageType.ERROR}
)
# kick and admit are answered with the peer's new state.
DIRECT_REPLIES_TO = {
    "kick": DIRECT_REPLIES | {MessageType.PEER_LEFT},
    "admit": DIRECT_REPLIES | {MessageType.PEER_JOINED},
    "resume": DIRECT_REPLIES | {MessageType.RESUMED},
    "end": DIRECT_REPLIES | {MessageType.ENDED},
    "leave": DIRECT_REPLIES | {MessageType.LEFT},
}


def direct_replies(action: str, received: list[Message]) -> list[Message]:
    kinds = DIRECT_REPLIES_TO.get(action, DIRECT_REPLIES)
    return [message for message in received if message["type"] in kinds]


def invoke_expiry(gateway: Gateway, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Deliver a batch of stream records to functions/expiry/app.py, as Lambda would."""
    return gateway.deliver_stream_records(records)


def reset_expiry_relay() -> None:
    from relay import wiring  # noqa: PLC0415

    wiring.relay_for_configured_endpoint.cache_clear()


# ---- reading the table -------------------------------------------------------------


@dataclass
class TableState:
    """The table's items by kind, live ones only (reads ignore what TTL has yet to delete)."""

    sessions: dict[str, Item] = field(default_factory=dict)  # code -> #META
    peers: dict[tuple[str, str], Item] = field(default_factory=dict)  # (code, peer) -> P#
    connections: dict[str, Item] = field(default_factory=dict)  # connection id -> #CONN
    counted_sessions: int = 0  # the sum of the counter shards


def read_table(dynamodb: Any) -> TableState:
    now = int(time.time())
    state = TableState()
    pages = dynamodb.get_paginator("scan").paginate(TableName=TABLE_NAME, ConsistentRead=True)
    for item in (item for page in pages for item in page["Items"]):
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        if pk.startswith("COUNTER#"):
            state.counted_sessions += int(item.get("sessions", {"N": "0"})["N"])
            continue
        if "expires_at" in item and int(item["expires_at"]["N"]) <= now:
            continue
        if pk.startswith("S#") and sk == "#META":
            state.sessions[pk.removeprefix("S#")] = item
        elif pk.startswith("S#") and sk.startswith("P#"):
            state.peers[(pk.removeprefix("S#"), sk.removeprefix("P#"))] = item
        elif pk.startswith("C#"):
            state.connections[pk.removeprefix("C#")] = item
    return state


def text(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value else None


def debug_count(gateway: Gateway) -> int:
    response = gateway.debug_sessions()
    assert response["statusCode"] == 200, response
    body: str = response["body"]
    assert body.startswith(DEBUG_BODY_PREFIX), body
    return int(body.removeprefix(DEBUG_BODY_PREFIX))


def invariant_violations(state: TableState, reported_count: int) -> list[str]:
    problems: list[str] = []
    macs = {cid: item for cid, item in state.connections.items() if text(item, "role") == "mac"}
    browsers = {cid: item for cid, item in state.connections.items() if text(item, "role") == "browser"}

    claimed = Counter(text(item, "code") for item in macs.values())
    problems += [f"code {code} is claimed by {n} mac connections" for code, n in claimed.items() if n > 1]
    for cid, item in macs.items():
        session = state.sessions.get(text(item, "code") or "")
        if session is None or text(session, "mac_connection_id") != cid:
            problems.append(f"mac {cid} is bound to {text(item, 'code')}, not a live session of its own")
    for code, session in state.sessions.items():
        mac = text(session, "mac_connection_id") or ""
        if "mac_away" in session:
            # An away mac-client has no connection; none may claim its session either.
            if mac in macs:
                problems.append(f"session {code}'s mac-client is away, yet its connection {mac} is bound")
            continue
        if text(macs.get(mac, {}), "code") != code:
            problems.append(f"session {code}'s mac connection {mac} is not bound to it")

    for cid, item in browsers.items():
        code, peer = text(item, "code") or "", text(item, "peer") or ""
        session = state.sessions.get(code)
        if session is None:
            problems.append(f"browser {cid} is bound to {code}, which is not a live session")
        elif text(session, "mac_connection_id") != text(item, "mac_connection_id"):
            problems.append(f"browser {cid} is bound to a former mac-client of {code}")
        elif ("mac_away" in session) != item.get("mac_away", {}).get("BOOL", False):
            problems.append(f"browser {cid} and its session disagree on whether the mac-client is away")
        seat = state.peers.get((code, peer))
        if seat is None or text(seat, "connection_id") != cid:
            problems.append(f"browser {cid} has no seat {peer} in {code}")
        elif seat.get("admitted") != item.get("admitted"):
            problems.append(f"browser {cid} and its seat disagree on admission")
    for (code, peer), seat in state.peers.items():
        holder = browsers.get(text(seat, "connection_id") or "")
        if "away" in seat:
            if code not in state.sessions or holder is not None:
                problems.append(f"away seat {peer} in {code} has a bound connection or no session")
        elif code not in state.sessions or holder is None or text(holder, "peer") != peer:
            problems.append(f"seat {peer} in {code} belongs to no bound browser")
        seat_mac = text(seat, "mac_connection_id")  # where the seat names its session's mac-client
        if (
            seat_mac is not None
            and code in state.sessions
            and seat_mac != text(state.sessions[code], "mac_connection_id")
        ):
            problems.append(f"seat {peer} in {code} belongs to a former session with that code")

    seats = Counter(code for code, _ in state.peers)
    for code, session in state.sessions.items():
        if int(session["browser_count"]["N"]) != seats[code]:
            problems.append(f"session {code} counts {session['browser_count']['N']} browsers, has {seats[code]}")

    if reported_count != len(state.sessions):
        problems.append(f"debug says {reported_count} sessions, the table has {len(state.sessions)}")
    if state.counted_sessions != len(state.sessions):
        problems.append(f"the counter says {state.counted_sessions}, the table has {len(state.sessions)}")
    return problems


def assert_invariants(gateway: Gateway, dynamodb: Any) -> TableState:
    state = read_table(dynamodb)
    problems = invariant_violations(state, debug_count(gateway))
    assert problems == [], problems
    return state


class FailureLog(logging.Handler):
    """Collects what the relay logs at ERROR: handlers log every failure they swallow."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


def relay_logger() -> logging.Logger:
    from relay.observability import logger  # noqa: PLC0415

    return logging.getLogger(logger.name)
