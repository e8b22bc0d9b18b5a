"""Sessions DynamoDB's TTL deleted: what the table stream says, and the clean-up after it.

A session whose mac-client's $disconnect never came is deleted by TTL; its stream
record (REMOVE, by the TTL service principal) is decoded here, and
release_expired_session lowers the count and unbinds its browsers exactly once, using
an expiry marker item (S#<code> / #EXPIRED#<created at>#<mac connection id>).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from relay.model import EndedSession, ExpiredSession, StoreError
from relay.store.browsers import BrowserRecords
from relay.store.counter import CounterShards
from relay.store.sessions import END_ATTEMPTS
from relay.store.table import META, Cancelled, expired_marker_key, session_partition

TTL_PRINCIPAL = "dynamodb.amazonaws.com"
# How long a marker stays: far longer than the stream keeps a record (24 hours).
MARKER_SECONDS = 24 * 3600

_deserializer = TypeDeserializer()


def expired_session_from_record(record: Mapping[str, Any]) -> ExpiredSession | None:
    """The session, if a DynamoDB Streams record is a session deleted by TTL.

    Items the relay deletes itself carry no Service identity and are skipped: whoever
    deleted them has already cleaned up.
    """
    if record.get("eventName") != "REMOVE":
        return None
    identity = record.get("userIdentity") or {}
    if identity.get("type") != "Service" or identity.get("principalId") != TTL_PRINCIPAL:
        return None
    raw_image = (record.get("dynamodb") or {}).get("OldImage") or {}
    old_image = {name: _deserializer.deserialize(value) for name, value in raw_image.items()}
    if old_image.get("sk") != META or not str(old_image.get("pk", "")).startswith(session_partition("")):
        return None
    return ExpiredSession(
        code=str(old_image["pk"]).removeprefix(session_partition("")),
        mac_connection_id=str(old_image["mac_connection_id"]),
        created_at=int(old_image.get("created_at", 0)),
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
