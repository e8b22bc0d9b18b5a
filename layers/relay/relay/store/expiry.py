"""Sessions DynamoDB's TTL deleted: what the table stream says, and the clean-up after it.

A session whose mac-client's $disconnect never came is deleted by TTL; its stream
record (REMOVE, by the TTL service principal) is decoded here, and
release_expired_session lowers the count and unbinds its browsers exactly once, using
an expiry marker item (S#<code> / #EXPIRED#<created at>#<mac connection id>). TTL
deletes items in no set order: a browser's place deleted before its session's item is
released on its own (release_expired_place), since the session's clean-up no longer
finds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from relay.model import EndedSession, ExpiredPlace, ExpiredSession, StoreError
from relay.store.browsers import BrowserRecords
from relay.store.counter import CounterShards
from relay.store.sessions import END_ATTEMPTS, session_from
from relay.store.table import (
    META,
    PEER_PREFIX,
    Cancelled,
    connection_key,
    expired_marker_key,
    session_key,
    session_partition,
)

TTL_PRINCIPAL = "dynamodb.amazonaws.com"
# How long a marker stays: far longer than the stream keeps a record (24 hours).
MARKER_SECONDS = 24 * 3600

_deserializer = TypeDeserializer()


def _removed_by_ttl(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The old image of a session partition's item, if a DynamoDB Streams record is its
    deletion by TTL. Items the relay deletes itself carry no Service identity and are
    skipped: whoever deleted them has already cleaned up."""
    if record.get("eventName") != "REMOVE":
        return None
    identity = record.get("userIdentity") or {}
    if identity.get("type") != "Service" or identity.get("principalId") != TTL_PRINCIPAL:
        return None
    raw_image = (record.get("dynamodb") or {}).get("OldImage") or {}
    old_image = {name: _deserializer.deserialize(value) for name, value in raw_image.items()}
    if not str(old_image.get("pk", "")).startswith(session_partition("")):
        return None
    return old_image


def expired_session_from_record(record: Mapping[str, Any]) -> ExpiredSession | None:
    """The session, if a DynamoDB Streams record is a session deleted by TTL."""
    old_image = _removed_by_ttl(record)
    if old_image is None or old_image.get("sk") != META:
        return None
    return ExpiredSession(
        code=str(old_image["pk"]).removeprefix(session_partition("")),
        mac_connection_id=str(old_image["mac_connection_id"]),
        created_at=int(old_image.get("created_at", 0)),
    )


def expired_place_from_record(record: Mapping[str, Any]) -> ExpiredPlace | None:
    """The browser, if a DynamoDB Streams record is a present browser's place deleted by
    TTL (an away browser's connection is already forgotten)."""
    old_image = _removed_by_ttl(record)
    if old_image is None or not str(old_image.get("sk", "")).startswith(PEER_PREFIX) or "away" in old_image:
        return None
    return ExpiredPlace(
        code=str(old_image["pk"]).removeprefix(session_partition("")),
        peer=str(old_image["sk"]).removeprefix(PEER_PREFIX),
        connection_id=str(old_image["connection_id"]),
        mac_connection_id=str(old_image["mac_connection_id"]),
    )


class ExpiryRecords(BrowserRecords, CounterShards):
    def release_expired_session(self, expired: ExpiredSession) -> EndedSession | None:
        """Clean up after DynamoDB's TTL deleted a session whose $disconnect never came.

        One transaction lowers the count and unbinds the session's browsers; a marker
        item written in it makes a re-delivered stream record a no-op, so the count drops
        exactly once. Browsers are matched by their mac-client, so a new session that
        drew the same code before the stream ran is left alone. None if already released.
        """
        table = self.table
        code = expired.code
        marker = table.put(
            {
                **expired_marker_key(code, expired.created_at, expired.mac_connection_id),
                "expires_at": {"N": str(table.now() + MARKER_SECONDS)},
            },
            condition="attribute_not_exists(pk)",
        )
        for _ in range(END_ATTEMPTS):
            browsers = self.list_browsers(code, expired.mac_connection_id, include_expired=True)
            items = [marker, self._counter_update(-1)]
            for browser in browsers:
                items += self._unbind_items(code, browser)
            try:
                table.transact(items)
            except Cancelled as cancelled:
                if cancelled.failed(0):
                    return None  # released before
                continue  # a browser left meanwhile: list again
            return EndedSession(code=code, browsers=browsers)
        raise StoreError(f"could not release expired session {code[:2]}****")

    def release_expired_place(self, expired: ExpiredPlace) -> bool:
        """Unbind the connection of a browser whose place TTL deleted, if that connection
        is still this browser's and its session has ended (expired, or gone): True when
        the browser is to be told. A re-delivered record finds the connection unbound."""
        table = self.table
        session = session_from(table, expired.code, table.get(session_key(expired.code)))
        if session is not None and session.mac_connection_id == expired.mac_connection_id:
            return False  # its session lives on, as it never should without the place
        unbind = table.delete(
            connection_key(expired.connection_id),
            condition="code = :code AND peer = :peer",
            values={":code": {"S": expired.code}, ":peer": {"S": expired.peer}},
        )
        return table.write_if(unbind) is not None
