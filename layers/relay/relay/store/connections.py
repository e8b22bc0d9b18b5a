"""Connection records (C#<connection id> / #CONN): what each connection is."""

from __future__ import annotations

from relay.model import BrowserConnection, Connection, MacConnection, Role, UnboundConnection
from relay.store.table import Item, Section, Table, connection_key, flag, number, text


def connection_from(table: Table, connection_id: str, item: Item | None) -> Connection | None:
    """The connection a (live) record describes; None for no record, an expired one, or
    one bound to a resumable session whose lifetime (`session_expires_at`) is over."""
    if item is None or not table.live(item) or _session_over(table, item):
        return None
    role = text(item, "role")
    code = text(item, "code")
    if role == Role.MAC and code is not None:
        return MacConnection(connection_id=connection_id, code=code, resumable=flag(item, "resumable", False))
    if role == Role.BROWSER and code is not None:
        return BrowserConnection(
            connection_id=connection_id,
            code=code,
            peer=str(text(item, "peer")),
            mac_connection_id=str(text(item, "mac_connection_id")),
            admitted=flag(item, "admitted", True),
            resumable=flag(item, "resumable", False),
            mac_away=flag(item, "mac_away", False),
        )
    return UnboundConnection(connection_id=connection_id, failed_auths=number(item, "failed_auths"))


def _session_over(table: Table, item: Item) -> bool:
    # The record outlives its resumable session (its TTL is the connection's, see
    # Table.expires_at) but no longer binds the connection once the session is over.
    return "session_expires_at" in item and number(item, "session_expires_at") <= table.now()


class ConnectionRecords(Section):
    def get_connection(self, connection_id: str) -> Connection | None:
        return connection_from(self.table, connection_id, self.table.get(connection_key(connection_id)))

    def forget_connection(self, connection_id: str) -> None:
        self.table.write(self.table.delete(connection_key(connection_id)))
