"""Codes and sessions (S#<code> / #META): registering a mac-client, looking a code up,
ending a session.

Codes are unique because the session item is written with `attribute_not_exists`: two
registrations that draw the same code cannot both win.
"""

from __future__ import annotations

from relay import session_codes
from relay.model import (
    AlreadyBound,
    CodeSpaceExhausted,
    EndedSession,
    MacConnection,
    RateLimited,
    Registration,
    Role,
    Session,
    StoreError,
)
from relay.store.browsers import BrowserRecords
from relay.store.counter import CounterShards
from relay.store.table import (
    Cancelled,
    Item,
    Table,
    connection_key,
    flag,
    number,
    registrations_key,
    session_key,
    text,
)

# Ending a session retries when browsers join or leave at the same moment.
END_ATTEMPTS = 5


def session_from(table: Table, code: str, item: Item | None, include_expired: bool = False) -> Session | None:
    if item is None or not (include_expired or table.live(item)):
        return None
    return Session(
        code=code,
        mac_connection_id=item["mac_connection_id"]["S"],
        browser_count=number(item, "browser_count"),
        approve=flag(item, "approve", False),
        locked=flag(item, "locked", False),
        resumable=flag(item, "resumable", False),
        mac_away="mac_away" in item,
        created_at=number(item, "created_at"),
        expires_at=number(item, "expires_at"),
    )


class SessionRecords(BrowserRecords, CounterShards):
    def register_mac_client(self, registration: Registration) -> str:
        """Create a session with a fresh code whose mac-client is this connection.

        With `token_hash` (the hash of the mac-client's resume token, given the code) the
        session is resumable and lives MaxSessionSeconds instead of the connection-bound TTL.
        With `address`, the same transaction claims one of the address's registrations
        for this window (RegistrationsPerIp). Raises AlreadyBound if the connection is
        already in a session, RateLimited if the address has registered its share, and
        CodeSpaceExhausted if every code drawn (up to the bound) was taken.
        """
        table = self.table
        connection_id, client_id, approve = registration.connection_id, registration.client_id, registration.approve
        token_hash, address = registration.token_hash, registration.address
        resumable = token_hash is not None
        expires_at = str(table.now() + table.settings.max_session_seconds) if resumable else table.expires_at()
        claim: list[Item] = []
        if address is not None:
            window_start = table.window_start()
            claim = [
                table.update(
                    registrations_key(address, window_start),
                    "ADD registrations :one SET expires_at = if_not_exists(expires_at, :exp)",
                    {
                        ":one": {"N": "1"},
                        ":exp": {"N": table.window_expires_at(window_start)},
                        ":max": {"N": str(table.settings.registrations_per_ip)},
                    },
                    condition="attribute_not_exists(registrations) OR registrations < :max",
                )
            ]
        for _ in range(table.settings.max_code_attempts):
            # Looked up on the module at each call so that tests can replace it.
            code = session_codes.generate_session_code()
            bind_connection = table.update(
                connection_key(connection_id),
                "SET #role = :mac, code = :code, expires_at = :exp"
                + (", resumable = :resumable, session_expires_at = :session_exp" if resumable else ""),
                {
                    ":mac": {"S": Role.MAC.value},
                    ":code": {"S": code},
                    ":exp": {"N": table.expires_at()},
                    **({":resumable": {"BOOL": True}, ":session_exp": {"N": expires_at}} if resumable else {}),
                },
                condition="attribute_not_exists(#role)",
                names={"#role": "role"},
            )
            session_item: Item = {
                **session_key(code),
                "mac_connection_id": {"S": connection_id},
                "client_id": {"S": client_id},
                "browser_count": {"N": "0"},
                "approve": {"BOOL": approve},
                "created_at": {"N": str(table.now())},
                "expires_at": {"N": expires_at},
            }
            if token_hash is not None:
                session_item["resumable"] = {"BOOL": True}
                session_item["mac_token_hash"] = {"S": token_hash(code)}
            create_session = table.put(session_item, condition="attribute_not_exists(pk)")
            try:
                table.transact(
                    [bind_connection, create_session, self._counter_update(+1), *claim],
                    f"register:{code}",
                )
            except Cancelled as cancelled:
                if cancelled.failed(0):
                    if self._registered_as(connection_id, code):
                        return code  # our own write, applied before a lost response
                    raise AlreadyBound from None
                if cancelled.failed(3):
                    raise RateLimited from None
                if cancelled.failed(1):
                    continue  # the code is taken by a live session: draw another
                raise
            return code
        raise CodeSpaceExhausted

    def _registered_as(self, connection_id: str, code: str) -> bool:
        """Re-read after a conditional failure: is this connection already the mac-client
        of the session `code`, created by this very call?"""
        if self.get_connection(connection_id) != MacConnection(connection_id, code):
            return False
        session = self.table.get(session_key(code))
        return self.table.live(session) and text(session or {}, "mac_connection_id") == connection_id

    def set_session_locked(self, code: str, mac_connection_id: str, locked: bool) -> bool:
        """Lock (or unlock) the mac-client's session; False if it has ended. Idempotent."""
        table = self.table
        try:
            table.transact(
                [
                    table.update(
                        session_key(code),
                        "SET locked = :locked",
                        {":locked": {"BOOL": locked}, ":mac": {"S": mac_connection_id}},
                        condition="mac_connection_id = :mac",
                    )
                ]
            )
        except Cancelled:
            return False
        return True

    def validate_session_code(self, code: str, include_expired: bool = False) -> Session | None:
        """The live session with this (normalised) code, if there is one."""
        return session_from(self.table, code, self.table.get(session_key(code)), include_expired)

    def remove_session(self, code: str, mac_connection_id: str) -> EndedSession | None:
        """End a session: its code stops working, the count drops and its browsers are
        unbound, all in one transaction, so a failure part-way leaves the session whole.

        The transaction requires the session's browser count to equal the browsers just
        listed, so a browser joining in between makes it retry rather than leave that
        browser bound to a dead session. Returns None if the session had already ended
        (a second $disconnect, or a GoneException seen by two senders at once).
        """
        table = self.table
        for attempt in range(END_ATTEMPTS):
            session = self.validate_session_code(code, include_expired=True)
            if session is None or session.mac_connection_id != mac_connection_id:
                self.forget_connection(mac_connection_id)
                return None
            browsers = self.list_browsers(code, mac_connection_id, include_expired=True)
            last_attempt = attempt == END_ATTEMPTS - 1
            # On the last attempt, end the session even if the count and the list disagree.
            condition = "mac_connection_id = :mac" + ("" if last_attempt else " AND browser_count = :n")
            values: Item = {":mac": {"S": mac_connection_id}}
            if not last_attempt:
                values[":n"] = {"N": str(len(browsers))}
            items = [
                table.delete(session_key(code), condition=condition, values=values),
                table.delete(connection_key(mac_connection_id)),
                self._counter_update(-1),
            ]
            for browser in browsers:
                items += self._unbind_items(code, browser)
            try:
                table.transact(items, f"end:{attempt}")
            except Cancelled:
                continue  # someone joined or left meanwhile: look again
            return EndedSession(code=code, browsers=browsers)
        raise StoreError(f"could not end session {code[:2]}****")
