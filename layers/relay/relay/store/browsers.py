"""Browsers of a session (S#<code> / P#<peer>), and the binding on each one's connection record.

A browser's connection record carries its mac-client's connection id, so relaying a
browser's frame costs one read. Browsers are always matched by their mac-client too,
which keeps apart two sessions that held the same code one after the other (a code is
free again once TTL has deleted its session).
"""

from __future__ import annotations

from collections.abc import Iterator

from relay.model import AlreadyBound, Browser, BrowserConnection, InvalidCode, Role, Session, SessionFull
from relay.store.connections import ConnectionRecords
from relay.store.table import (
    PEER_PREFIX,
    Cancelled,
    Item,
    connection_key,
    flag,
    peer_key,
    session_key,
    session_partition,
    text,
)


def _belongs_to(peer_item: Item, mac_connection_id: str) -> bool:
    return text(peer_item, "mac_connection_id") == mac_connection_id


def _browser_from(item: Item) -> Browser:
    return Browser(
        peer=item["sk"]["S"].removeprefix(PEER_PREFIX),
        connection_id=item["connection_id"]["S"],
        admitted=flag(item, "admitted", True),
        away="away" in item,
    )


class BrowserRecords(ConnectionRecords):
    def add_browser(
        self, connection_id: str, session: Session, peer: str, admitted: bool = True, token_hash: str | None = None
    ) -> None:
        """Bind this connection to the session as a browser with the given peer id.

        The session must still be the same live session (same mac-client) with room
        for one more browser when the transaction commits; a mac-client ending its
        session concurrently therefore can never leave this browser bound to it.
        In a resumable session the browser's records live as long as the session and
        its peer item keeps the hash of its resume token.
        """
        table = self.table
        expires_at = str(session.expires_at) if session.resumable else table.expires_at()
        take_seat = table.update(
            session_key(session.code),
            "ADD browser_count :one",
            {
                ":one": {"N": "1"},
                ":mac": {"S": session.mac_connection_id},
                ":max": {"N": str(table.settings.max_browsers)},
                ":now": {"N": str(table.now())},
            },
            condition="mac_connection_id = :mac AND browser_count < :max AND expires_at > :now",
        )
        peer_item = table.put(
            {
                **peer_key(session.code, peer),
                "connection_id": {"S": connection_id},
                "mac_connection_id": {"S": session.mac_connection_id},
                "admitted": {"BOOL": admitted},
                "expires_at": {"N": expires_at},
                **({"token_hash": {"S": token_hash}} if token_hash is not None else {}),
                **({"session_created_at": {"N": str(session.created_at)}} if session.resumable else {}),
            },
            condition="attribute_not_exists(pk)",
        )
        resumable_values: Item = (
            {":resumable": {"BOOL": True}, ":mac_away": {"BOOL": session.mac_away}} if session.resumable else {}
        )
        bind_connection = table.update(
            connection_key(connection_id),
            "SET #role = :browser, code = :code, peer = :peer, "
            "mac_connection_id = :mac, admitted = :admitted, expires_at = :exp"
            + (", resumable = :resumable, mac_away = :mac_away" if session.resumable else "")
            + " REMOVE failed_auths",
            {
                ":browser": {"S": Role.BROWSER.value},
                ":code": {"S": session.code},
                ":peer": {"S": peer},
                ":mac": {"S": session.mac_connection_id},
                ":admitted": {"BOOL": admitted},
                ":exp": {"N": expires_at},
                **resumable_values,
            },
            condition="attribute_not_exists(#role)",
            names={"#role": "role"},
        )
        try:
            table.transact([take_seat, peer_item, bind_connection])
        except Cancelled as cancelled:
            if cancelled.failed(2):
                raise AlreadyBound from None
            if cancelled.failed(0):
                current = table.get(session_key(session.code))
                if not table.live(current) or text(current or {}, "mac_connection_id") != session.mac_connection_id:
                    raise InvalidCode from None
                raise SessionFull from None
            raise

    def get_browser(self, code: str, mac_connection_id: str, peer: str) -> Browser | None:
        """The browser `peer` of the session this mac-client owns, if it is there."""
        item = self.table.get(peer_key(code, peer))
        if item is None or not self.table.live(item) or not _belongs_to(item, mac_connection_id):
            return None
        return _browser_from(item)

    def list_browsers(self, code: str, mac_connection_id: str, include_expired: bool = False) -> list[Browser]:
        """The browsers of the session this mac-client owns, with one Query."""
        return list(self._iter_browsers(code, mac_connection_id, include_expired))

    def _iter_browsers(self, code: str, mac_connection_id: str, include_expired: bool) -> Iterator[Browser]:
        for item in self.table.query_prefix(session_partition(code), PEER_PREFIX):
            if (include_expired or self.table.live(item)) and _belongs_to(item, mac_connection_id):
                yield _browser_from(item)

    def admit_browser(self, code: str, browser: Browser) -> bool:
        """Let a pending browser's frames flow; False if it is no longer waiting."""
        table = self.table
        try:
            table.transact(
                [
                    table.update(
                        peer_key(code, browser.peer),
                        "SET admitted = :yes",
                        {":yes": {"BOOL": True}, ":no": {"BOOL": False}, ":conn": {"S": browser.connection_id}},
                        condition="connection_id = :conn AND admitted = :no",
                    ),
                    table.update(
                        connection_key(browser.connection_id),
                        "SET admitted = :yes",
                        {":yes": {"BOOL": True}, ":code": {"S": code}, ":peer": {"S": browser.peer}},
                        condition="code = :code AND peer = :peer",
                    ),
                ]
            )
        except Cancelled:
            return False
        return True

    def remove_browser(self, browser: BrowserConnection) -> bool:
        """Unbind a browser and forget its connection; False if it was already gone."""
        table = self.table
        delete_peer, delete_connection = self._unbind_items(
            browser.code, Browser(browser.peer, browser.connection_id), connection_must_match=False
        )
        release_seat = table.update(
            session_key(browser.code),
            "ADD browser_count :minus_one",
            {":minus_one": {"N": "-1"}, ":mac": {"S": browser.mac_connection_id}},
            condition="mac_connection_id = :mac",
        )
        try:
            table.transact([delete_peer, delete_connection, release_seat])
            return True
        except Cancelled as cancelled:
            if cancelled.failed(0):
                self.forget_connection(browser.connection_id)  # already unbound elsewhere
                return False
        # The session has ended already: its seat count no longer matters.
        try:
            table.transact([delete_peer, delete_connection])
            return True
        except Cancelled:
            self.forget_connection(browser.connection_id)
            return False

    def _unbind_items(self, code: str, browser: Browser, connection_must_match: bool = True) -> list[Item]:
        """Transaction items that take a browser out of a session: its seat and its binding.

        Deleting the connection's record unbinds it (it may auth again); when a session
        ends, that record must still be this browser's (it may have been forgotten).
        """
        table = self.table
        delete_peer = table.delete(
            peer_key(code, browser.peer),
            condition="connection_id = :conn",
            values={":conn": {"S": browser.connection_id}},
        )
        if not connection_must_match:
            return [delete_peer, table.delete(connection_key(browser.connection_id))]
        delete_connection = table.delete(
            connection_key(browser.connection_id),
            condition="attribute_not_exists(pk) OR (code = :code AND peer = :peer)",
            values={":code": {"S": code}, ":peer": {"S": browser.peer}},
        )
        return [delete_peer, delete_connection]
