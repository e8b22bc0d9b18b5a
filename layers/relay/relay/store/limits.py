"""Guessing limits: failed auths per connection (on its record) and per source address
(IP#<address> / W#<window start>, one item per time window, expiring after two)."""

from __future__ import annotations

from relay.model import AuthContext
from relay.store.connections import connection_from
from relay.store.sessions import session_from
from relay.store.table import Section, connection_key, ip_window_key, number, session_key


class LimitRecords(Section):
    def _window_start(self) -> int:
        window = self.table.settings.auth_failure_window_seconds
        return self.table.now() // window * window

    def load_auth_context(self, connection_id: str, code: str | None, source_ip: str) -> AuthContext:
        """The connection, the session (if `code` is given) and the source's recent failures:
        one BatchGetItem, so auth pays one round trip for its reads."""
        wanted = {
            "connection": connection_key(connection_id),
            "ip": ip_window_key(source_ip, self._window_start()),
        }
        if code is not None:
            wanted["session"] = session_key(code)
        found = {item["pk"]["S"]: item for item in self.table.batch_get(list(wanted.values()))}
        ip_item = found.get(wanted["ip"]["pk"]["S"])
        session_item = found.get(wanted["session"]["pk"]["S"]) if code is not None else None
        return AuthContext(
            connection=connection_from(self.table, connection_id, found.get(wanted["connection"]["pk"]["S"])),
            session=session_from(self.table, code, session_item) if code is not None else None,
            failures_from_ip=number(ip_item, "failures") if ip_item and self.table.live(ip_item) else 0,
        )

    def record_failed_auth(self, connection_id: str, source_ip: str) -> int:
        """Count one failed auth on this connection and from its source address.

        Returns the connection's count so far. Both counters are single atomic
        UpdateItems (ADD), so concurrent failures are never lost.
        """
        table = self.table
        window_start = self._window_start()
        table.write(
            table.update(
                ip_window_key(source_ip, window_start),
                "ADD failures :one SET expires_at = if_not_exists(expires_at, :exp)",
                {
                    ":one": {"N": "1"},
                    ":exp": {"N": str(window_start + 2 * table.settings.auth_failure_window_seconds)},
                },
            )
        )
        update = table.update(
            connection_key(connection_id),
            "ADD failed_auths :one SET expires_at = if_not_exists(expires_at, :exp)",
            {":one": {"N": "1"}, ":exp": {"N": table.expires_at()}},
        )
        update["Update"]["ReturnValues"] = "UPDATED_NEW"
        return number(table.write(update)["Attributes"], "failed_auths")
