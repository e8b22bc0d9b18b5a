"""Guessing limits, claimed before anything is looked up.

An attempt to present a secret (auth's code) first claims one attempt on the
connection's record (`failed_auths`, at most MaxAuthAttempts) and one in its address's
window (IP#<address> / W#<window start>, `failures`, at most AuthFailuresPerIp): one
transaction of two conditional `ADD`s, so however many attempts run at once, no more
are claimed than the limits allow. A refused claim looks nothing up. A join gives the
address's claim back (relay.store.browsers); a failure keeps both.

Addresses are limit keys (relay.addresses.limit_key): IPv4 by address, IPv6 by /64.
Window items expire after two windows.
"""

from __future__ import annotations

from relay.model import AttemptClaim, AuthContext, RateLimited, TooManyAttempts
from relay.store.connections import connection_from
from relay.store.sessions import session_from
from relay.store.table import (
    Cancelled,
    Item,
    Section,
    ban_key,
    connection_key,
    ip_window_key,
    session_key,
)


class LimitRecords(Section):
    def claim_attempt(self, connection_id: str, address: str) -> AttemptClaim:
        """Claim one attempt for the connection and the address, or raise TooManyAttempts
        (the connection's limit; checked first) or RateLimited (the address's)."""
        table = self.table
        settings = table.settings
        window_start = table.window_start()
        on_connection = table.update(
            connection_key(connection_id),
            "ADD failed_auths :one SET expires_at = if_not_exists(expires_at, :exp)",
            {":one": {"N": "1"}, ":exp": {"N": table.expires_at()}, ":max": {"N": str(settings.max_auth_attempts)}},
            condition="attribute_not_exists(failed_auths) OR failed_auths < :max",
        )
        on_address = table.update(
            ip_window_key(address, window_start),
            "ADD failures :one SET expires_at = if_not_exists(expires_at, :exp)",
            {
                ":one": {"N": "1"},
                ":exp": {"N": table.window_expires_at(window_start)},
                ":max": {"N": str(settings.auth_failures_per_ip)},
            },
            condition="attribute_not_exists(failures) OR failures < :max",
        )
        try:
            table.transact([on_connection, on_address], "claim")
        except Cancelled as cancelled:
            if cancelled.failed(0):
                raise TooManyAttempts from None
            if cancelled.failed(1):
                raise RateLimited from None
            raise
        return AttemptClaim(connection_id, address, window_start)

    def load_auth_context(self, connection_id: str, code: str | None, address: str) -> AuthContext:
        """The connection, the session (if `code` is given) and whether the address was
        kicked from it: one BatchGetItem, so auth pays one round trip for its reads."""
        table = self.table
        wanted = [connection_key(connection_id)]
        if code is not None:
            wanted += [session_key(code), ban_key(code, address)]
        found = {(item["pk"]["S"], item["sk"]["S"]): item for item in table.batch_get(wanted)}

        def item_at(key: Item) -> Item | None:
            return found.get((key["pk"]["S"], key["sk"]["S"]))

        connection = connection_from(table, connection_id, item_at(wanted[0]))
        if code is None:
            return AuthContext(connection=connection, session=None)
        session = session_from(table, code, item_at(wanted[1]))
        ban = item_at(wanted[2])
        banned = (
            session is not None
            and table.live(ban)
            and session.mac_connection_id in (ban or {}).get("mac_connection_ids", {}).get("SS", [])
        )
        return AuthContext(connection=connection, session=session, banned=banned)
