"""Browsers of a session (S#<code> / P#<peer>), and the binding on each one's connection record.

A browser's connection record carries its mac-client's connection id, so relaying a
browser's frame costs one read. Browsers are always matched by their mac-client too,
which keeps apart two sessions that held the same code one after the other (a code is
free again once TTL has deleted its session).
"""

from __future__ import annotations

from collections.abc import Iterator

from relay.model import (
    AlreadyBound,
    AttemptClaim,
    Browser,
    BrowserConnection,
    InvalidCode,
    Joining,
    Role,
    SessionFull,
)
from relay.store.connections import ConnectionRecords
from relay.store.table import (
    BAN_PREFIX,
    PEER_PREFIX,
    Cancelled,
    Item,
    ban_key,
    connection_key,
    flag,
    ip_window_key,
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
        address=text(item, "address"),
        away="away" in item,
    )


class BrowserRecords(ConnectionRecords):
    def add_browser(self, joining: Joining) -> None:
        """Bind this connection to the session as a browser with the given peer id.

        The session must still be the same live, unlocked session (same mac-client)
        with room for one more browser when the transaction commits, and the claim's
        address must not have been kicked from it; a mac-client ending, locking or
        kicking concurrently therefore can never leave this browser bound to it. The
        same transaction gives the address's share of the claim back.
        In a resumable session the browser's place lives as long as the session and
        keeps the hash of its resume token (its connection record, as every one, lives
        as long as the connection could: Table.expires_at).
        """
        table = self.table
        connection_id, session, peer = joining.connection_id, joining.session, joining.peer
        admitted, token_hash, claim = joining.admitted, joining.token_hash, joining.claim
        expires_at = str(session.expires_at) if session.resumable else table.expires_at()
        take_seat = table.update(
            session_key(session.code),
            "ADD browser_count :one",
            {
                ":one": {"N": "1"},
                ":mac": {"S": session.mac_connection_id},
                ":max": {"N": str(table.settings.max_browsers)},
                ":now": {"N": str(table.now())},
                ":yes": {"BOOL": True},
            },
            condition="mac_connection_id = :mac AND browser_count < :max AND expires_at > :now "
            "AND (attribute_not_exists(locked) OR locked <> :yes)",
        )
        peer_record: Item = {
            **peer_key(session.code, peer),
            "connection_id": {"S": connection_id},
            "mac_connection_id": {"S": session.mac_connection_id},
            "admitted": {"BOOL": admitted},
            "expires_at": {"N": expires_at},
        }
        if claim is not None:
            peer_record["address"] = {"S": claim.address}
        if token_hash is not None:
            peer_record["token_hash"] = {"S": token_hash}
        if session.resumable:
            peer_record["session_created_at"] = {"N": str(session.created_at)}
        peer_item = table.put(peer_record, condition="attribute_not_exists(pk)")
        resumable_values: Item = (
            {
                ":resumable": {"BOOL": True},
                ":mac_away": {"BOOL": session.mac_away},
                ":session_exp": {"N": expires_at},
            }
            if session.resumable
            else {}
        )
        bind_connection = table.update(
            connection_key(connection_id),
            "SET #role = :browser, code = :code, peer = :peer, "
            "mac_connection_id = :mac, admitted = :admitted, expires_at = :exp"
            + (
                ", resumable = :resumable, mac_away = :mac_away, session_expires_at = :session_exp"
                if session.resumable
                else ""
            )
            + " REMOVE failed_auths",
            {
                ":browser": {"S": Role.BROWSER.value},
                ":code": {"S": session.code},
                ":peer": {"S": peer},
                ":mac": {"S": session.mac_connection_id},
                ":admitted": {"BOOL": admitted},
                ":exp": {"N": table.expires_at()},
                **resumable_values,
            },
            condition="attribute_not_exists(#role)",
            names={"#role": "role"},
        )
        items = [take_seat, peer_item, bind_connection]
        if claim is not None:
            not_banned: Item = {
                "ConditionCheck": {
                    "TableName": table.name,
                    "Key": ban_key(session.code, claim.address),
                    "ConditionExpression": "attribute_not_exists(pk) OR NOT contains(mac_connection_ids, :mac)",
                    "ExpressionAttributeValues": {":mac": {"S": session.mac_connection_id}},
                }
            }
            items += [not_banned, self._give_back(claim)]
        try:
            table.transact(items, f"join:{peer}")
        except Cancelled as cancelled:
            if cancelled.failed(2):
                if self._is_bound_as(connection_id, session.code, peer):
                    return  # our own write, applied before a lost response
                raise AlreadyBound from None
            if cancelled.failed(3):
                raise InvalidCode from None  # kicked from this session: it opens nothing for them
            if cancelled.failed(0):
                current = table.get(session_key(session.code))
                if (
                    not table.live(current)
                    or text(current or {}, "mac_connection_id") != session.mac_connection_id
                    or flag(current or {}, "locked", False)
                ):
                    raise InvalidCode from None
                raise SessionFull from None
            raise

    def _give_back(self, claim: AttemptClaim) -> Item:
        """The transaction item that gives a claim's address share back (a join, a resume)."""
        return self.table.update(
            ip_window_key(claim.address, claim.window_start),
            "ADD failures :minus_one SET expires_at = if_not_exists(expires_at, :exp)",
            {":minus_one": {"N": "-1"}, ":exp": {"N": self.table.window_expires_at(claim.window_start)}},
        )

    def _is_bound_as(self, connection_id: str, code: str, peer: str) -> bool:
        """Re-read after a conditional failure: is the connection already this very browser?"""
        current = self.get_connection(connection_id)
        return isinstance(current, BrowserConnection) and current.code == code and current.peer == peer

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
                ],
                f"admit:{browser.peer}",
            )
        except Cancelled:
            # Not waiting any more. (A retry of our own admit after a lost response is
            # answered as a success by DynamoDB through the request token; a re-read could
            # not tell it from a second admit, which must be refused.)
            return False
        return True

    def remove_browser(self, browser: BrowserConnection, ban_address: str | None = None) -> bool:
        """Unbind a browser and forget its connection; False if it was already gone.

        With `ban_address`, the same transaction bans that address from this session
        (a kick): it is banned even if the browser had already gone.
        """
        table = self.table
        delete_peer, delete_connection = self._unbind_items(
            browser.code, Browser(browser.peer, browser.connection_id), connection_must_match=False
        )
        ban: list[Item] = []
        if ban_address is not None:
            # A resumable session outlives its connections: so does the ban.
            expires_at = (
                str(table.now() + table.settings.max_session_seconds) if browser.resumable else table.expires_at()
            )
            ban = [
                table.update(
                    ban_key(browser.code, ban_address),
                    "ADD mac_connection_ids :mac SET expires_at = :exp",
                    {":mac": {"SS": [browser.mac_connection_id]}, ":exp": {"N": expires_at}},
                )
            ]
        # A session that has banned someone says so (`bans`), so that a resume of its
        # mac-client knows to carry the bans over to its new connection.
        release_seat = table.update(
            session_key(browser.code),
            "ADD browser_count :minus_one" + (", bans :one" if ban else ""),
            {
                ":minus_one": {"N": "-1"},
                ":mac": {"S": browser.mac_connection_id},
                **({":one": {"N": "1"}} if ban else {}),
            },
            condition="mac_connection_id = :mac",
        )
        step = f"leave:{browser.peer}"
        try:
            table.transact([delete_peer, delete_connection, release_seat, *ban], step)
            return True
        except Cancelled as cancelled:
            if cancelled.failed(0):
                self.forget_connection(browser.connection_id)  # already unbound elsewhere
                if ban:
                    table.write(ban[0])
                return False
        # The session has ended already: its seat count no longer matters.
        try:
            table.transact([delete_peer, delete_connection, *ban], step + ":ended")
            return True
        except Cancelled:
            self.forget_connection(browser.connection_id)
            if ban:
                table.write(ban[0])
            return False

    def _carry_bans(self, code: str, old_mac_connection_id: str, new_mac_connection_id: str) -> None:
        """Bans follow the session when its mac-client resumes on a new connection: each
        ban of this session also names the new connection. Written before the resume's
        transaction, so at no moment does the session have a connection its bans miss
        (a resume that then fails leaves an unused connection id in the set, harmlessly)."""
        table = self.table
        for item in table.query_prefix(session_partition(code), BAN_PREFIX):
            if old_mac_connection_id in item.get("mac_connection_ids", {}).get("SS", []):
                table.write_if(
                    table.update(
                        {"pk": item["pk"], "sk": item["sk"]},
                        "ADD mac_connection_ids :new",
                        {":new": {"SS": [new_mac_connection_id]}, ":old": {"S": old_mac_connection_id}},
                        condition="contains(mac_connection_ids, :old)",
                    )
                )

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
