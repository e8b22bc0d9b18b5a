"""Resumable sessions: away state, resume, held messages (S#<code> / H#<holder>#<seq>).

Away state lives on the holder's own item: `mac_away` (since when) on the session item,
`away` on a browser's peer item. When the mac-client is away its browsers' connection
records say so too (`mac_away`), so a browser's frame still costs one read to route: it
is held instead of posted. A holder's resume token is kept only as a hash, on the same
item (`mac_token_hash`, `token_hash`); a resume swaps it for the next token's hash under
a condition on the old one, so two resumes with one token cannot both win.

Messages for an away holder are numbered from `held_seq` on its item (never reset, so
their sort keys keep the order they were sent in) and counted in `held_count` (reset by
a resume: the cap is per away period). Each is written in a transaction that checks the
holder is still away, so none is written after the resume that would deliver it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from relay import protocol
from relay.model import (
    AlreadyBound,
    Browser,
    BrowserConnection,
    HeldMessage,
    HoldRefused,
    InvalidToken,
    NotAway,
    ResumedBrowser,
    ResumedMac,
    Resumption,
    Role,
    StoreError,
)
from relay.store.browsers import BrowserRecords
from relay.store.sessions import END_ATTEMPTS, session_from
from relay.store.table import (
    HELD_PREFIX,
    Cancelled,
    Item,
    connection_key,
    held_key,
    number,
    peer_key,
    session_key,
    session_partition,
    text,
)

_ROLE = {"#role": "role"}


class ResumeRecords(BrowserRecords):
    # ---- going away -------------------------------------------------------------

    def mark_mac_away(self, code: str, mac_connection_id: str) -> list[Browser] | None:
        """The mac-client's connection dropped: mark it away on the session and on its
        present browsers' records, forget the dropped connection. The browsers to tell;
        None if the session is not resumable, not this mac-client's, or already away."""
        table = self.table
        for attempt in range(END_ATTEMPTS):
            session = session_from(table, code, table.get(session_key(code)))
            if session is None or not session.resumable or session.mac_away:
                return None
            if session.mac_connection_id != mac_connection_id:
                return None
            browsers = self.list_browsers(code, mac_connection_id)
            present = [b for b in browsers if not b.away]
            items = [
                table.update(
                    session_key(code),
                    "SET mac_away = :now",
                    {
                        ":now": {"N": str(table.now())},
                        ":mac": {"S": mac_connection_id},
                        ":n": {"N": str(len(browsers))},
                    },
                    condition="mac_connection_id = :mac AND browser_count = :n AND attribute_not_exists(mac_away)",
                ),
                table.delete(connection_key(mac_connection_id)),
            ]
            items += [
                table.update(
                    connection_key(b.connection_id),
                    "SET mac_away = :yes",
                    {":yes": {"BOOL": True}, ":code": {"S": code}, ":peer": {"S": b.peer}},
                    condition="code = :code AND peer = :peer",
                )
                for b in present
            ]
            try:
                table.transact(items, f"away:mac:{mac_connection_id}:{attempt}")
            except Cancelled:
                continue  # a browser joined, left or went away meanwhile: look again
            return present
        raise StoreError(f"could not mark the mac-client of {code[:2]}**** away")

    def mark_browser_away(self, browser: BrowserConnection) -> bool:
        """The browser's connection dropped: mark its place away and forget the connection.
        False if it was no longer there (removed, resumed elsewhere, already away)."""
        table = self.table
        try:
            table.transact(
                [
                    table.update(
                        peer_key(browser.code, browser.peer),
                        "SET away = :now",
                        {":now": {"N": str(table.now())}, ":conn": {"S": browser.connection_id}},
                        condition="connection_id = :conn AND attribute_not_exists(away)",
                    ),
                    table.delete(connection_key(browser.connection_id)),
                ],
                f"away:{browser.peer}:{browser.connection_id}",
            )
        except Cancelled:
            return False
        return True

    # ---- resuming -----------------------------------------------------------------

    def resume_mac(self, resumption: Resumption) -> ResumedMac:
        """Move the session to this connection if `token_hash` is the mac-client's current
        token: the session, every browser's place and present browser's record now point
        at it, the old connection is forgotten, the token is replaced and the claim's
        address share is given back. One transaction of 4 + 2 per browser items
        (MaxBrowsers <= 48 keeps it within 100). Raises InvalidToken or AlreadyBound."""
        table = self.table
        code, token_hash, new_token_hash = resumption.code, resumption.token_hash, resumption.new_token_hash
        connection_id = resumption.connection_id
        for attempt in range(END_ATTEMPTS):
            item = table.get(session_key(code))
            session = session_from(table, code, item)
            if session is None or not session.resumable or text(item or {}, "mac_token_hash") != token_hash:
                raise InvalidToken
            old = session.mac_connection_id
            browsers = self.list_browsers(code, old)
            if connection_id == old or any(b.connection_id == connection_id and not b.away for b in browsers):
                raise AlreadyBound  # a connection of this very session (one transaction item each)
            if number(item or {}, "bans"):
                self._carry_bans(code, old, connection_id)
            items = [
                table.update(
                    session_key(code),
                    "SET mac_connection_id = :new, mac_token_hash = :next REMOVE mac_away, held_count",
                    {
                        ":new": {"S": connection_id},
                        ":next": {"S": new_token_hash},
                        ":old": {"S": old},
                        ":hash": {"S": token_hash},
                        ":n": {"N": str(len(browsers))},
                    },
                    condition="mac_connection_id = :old AND mac_token_hash = :hash AND browser_count = :n",
                ),
                table.update(
                    connection_key(connection_id),
                    "SET #role = :mac, code = :code, resumable = :yes, expires_at = :exp, "
                    "session_expires_at = :session_exp REMOVE failed_auths",
                    {
                        ":mac": {"S": Role.MAC.value},
                        ":code": {"S": code},
                        ":yes": {"BOOL": True},
                        ":exp": {"N": table.expires_at()},
                        ":session_exp": {"N": str(session.expires_at)},
                    },
                    condition="attribute_not_exists(#role)",
                    names=_ROLE,
                ),
                table.delete(connection_key(old)),
            ]
            for browser in browsers:
                items.append(
                    table.update(
                        peer_key(code, browser.peer),
                        "SET mac_connection_id = :new",
                        {":new": {"S": connection_id}, ":old": {"S": old}},
                        condition="mac_connection_id = :old",
                    )
                )
                if not browser.away:
                    items.append(
                        table.update(
                            connection_key(browser.connection_id),
                            "SET mac_connection_id = :new, mac_away = :no",
                            {
                                ":new": {"S": connection_id},
                                ":no": {"BOOL": False},
                                ":code": {"S": code},
                                ":peer": {"S": browser.peer},
                            },
                            condition="code = :code AND peer = :peer",
                        )
                    )
            if not self._commit_resume(items, resumption, f"resume:mac:{connection_id}:{attempt}"):
                continue  # the token was used, or a browser came or went: look again
            resumed_session = replace(session, mac_connection_id=connection_id, mac_away=False)
            return ResumedMac(resumed_session, old, session.mac_away, browsers)
        raise InvalidToken

    def _commit_resume(self, items: list[Item], resumption: Resumption, step: str) -> bool:
        """Write a resume whose second item checks the token, giving the claim's address
        share back. False if the token check failed (look again); AlreadyBound if another
        condition did."""
        if resumption.claim is not None:
            items.append(self._give_back(resumption.claim))
        try:
            self.table.transact(items, step)
        except Cancelled as cancelled:
            if not cancelled.failed(1):
                return False
            # Does the place already hold the token this very call issued (random, so no
            # other write can have put it there)? Then the write was our own, applied
            # before a lost response: answer as if it had come back.
            if resumption.holder == protocol.MAC_PEER:
                key, attribute = session_key(resumption.code), "mac_token_hash"
            else:
                key, attribute = peer_key(resumption.code, resumption.holder), "token_hash"
            if text(self.table.get(key) or {}, attribute) != resumption.new_token_hash:
                raise AlreadyBound from None
        return True

    def resume_browser(self, resumption: Resumption) -> ResumedBrowser:
        """Move browser `peer`'s place to this connection if `token_hash` is its current
        token, giving the claim's address share back. Raises InvalidToken or AlreadyBound."""
        table = self.table
        code, peer, token_hash = resumption.code, resumption.holder, resumption.token_hash
        new_token_hash, connection_id = resumption.new_token_hash, resumption.connection_id
        for attempt in range(END_ATTEMPTS):
            found = {item["sk"]["S"]: item for item in table.batch_get([session_key(code), peer_key(code, peer)])}
            session = session_from(table, code, found.get(session_key(code)["sk"]["S"]))
            place = found.get(peer_key(code, peer)["sk"]["S"])
            if (
                session is None
                or not session.resumable
                or place is None
                or not table.live(place)
                or text(place, "token_hash") != token_hash
                or text(place, "mac_connection_id") != session.mac_connection_id
            ):
                raise InvalidToken
            old = str(text(place, "connection_id"))
            if connection_id in (old, session.mac_connection_id):
                raise AlreadyBound
            admitted = bool(place.get("admitted", {"BOOL": True})["BOOL"])
            items = [
                table.update(
                    peer_key(code, peer),
                    "SET connection_id = :new, token_hash = :next REMOVE away, held_count",
                    {
                        ":new": {"S": connection_id},
                        ":next": {"S": new_token_hash},
                        ":old": {"S": old},
                        ":hash": {"S": token_hash},
                    },
                    condition="connection_id = :old AND token_hash = :hash",
                ),
                table.update(
                    connection_key(connection_id),
                    "SET #role = :browser, code = :code, peer = :peer, mac_connection_id = :mac, "
                    "admitted = :admitted, resumable = :yes, mac_away = :mac_away, expires_at = :exp, "
                    "session_expires_at = :session_exp REMOVE failed_auths",
                    {
                        ":browser": {"S": Role.BROWSER.value},
                        ":code": {"S": code},
                        ":peer": {"S": peer},
                        ":mac": {"S": session.mac_connection_id},
                        ":admitted": {"BOOL": admitted},
                        ":yes": {"BOOL": True},
                        ":mac_away": {"BOOL": session.mac_away},
                        ":exp": {"N": table.expires_at()},
                        ":session_exp": {"N": str(session.expires_at)},
                    },
                    condition="attribute_not_exists(#role)",
                    names=_ROLE,
                ),
                table.delete(connection_key(old)),
                # The mac-client's connection (and its away state) copied above is still current.
                table.condition_check(
                    session_key(code),
                    "mac_connection_id = :mac AND "
                    + ("attribute_exists" if session.mac_away else "attribute_not_exists")
                    + "(mac_away)",
                    {":mac": {"S": session.mac_connection_id}},
                ),
            ]
            if not self._commit_resume(items, resumption, f"resume:{peer}:{connection_id}:{attempt}"):
                continue
            connection = session.browser_connection(connection_id, peer, admitted)
            return ResumedBrowser(connection, old, "away" in place)
        raise InvalidToken

    # ---- held messages --------------------------------------------------------------

    def _holder_key(self, code: str, holder: str) -> tuple[Item, str]:
        if holder == protocol.MAC_PEER:
            return session_key(code), "mac_away"
        return peer_key(code, holder), "away"

    def hold_message(self, code: str, holder: str, message: protocol.Message) -> None:
        """Keep a message for an away holder, after those held before it.
        Raises NotAway (deliver it instead) or HoldRefused (MaxHeldFrames reached)."""
        table = self.table
        key, away = self._holder_key(code, holder)
        numbered = table.update(
            key,
            "ADD held_seq :one, held_count :one",
            {":one": {"N": "1"}, ":max": {"N": str(table.settings.max_held_frames)}},
            condition=f"attribute_exists({away}) AND (attribute_not_exists(held_count) OR held_count < :max)",
        )
        numbered["Update"]["ReturnValues"] = "ALL_NEW"
        after = table.write_if(numbered)
        if after is None:
            current = table.get(key)
            if current is None or not table.live(current) or away not in current:
                raise NotAway
            raise HoldRefused
        attributes = after["Attributes"]
        sequence = number(attributes, "held_seq")
        try:
            table.transact(
                [
                    table.condition_check(key, f"attribute_exists({away})"),
                    table.put(
                        {
                            **held_key(code, holder, sequence),
                            "message": {"S": protocol.encode(message)},
                            "session_created_at": {"N": str(self._created_at(code, attributes))},
                            "expires_at": {"N": str(table.now() + table.settings.resume_grace_seconds)},
                        }
                    ),
                ],
                f"hold:{holder}:{sequence}",
            )
        except Cancelled as cancelled:
            if cancelled.failed(0):
                raise NotAway from None  # it came back meanwhile
            raise

    @staticmethod
    def _created_at(code: str, holder_attributes: Item) -> int:
        """The session's creation time, from the holder's item (the session's own, or a
        browser's place, which copies it): it tells this session's held messages apart
        from those of an earlier one that held the same code."""
        return number(holder_attributes, "created_at", number(holder_attributes, "session_created_at"))

    def held_messages(self, code: str, holder: str, session_created_at: int) -> list[HeldMessage]:
        """What is held for this holder of this session, oldest first."""
        held = []
        for item in self.table.query_prefix(session_partition(code), f"{HELD_PREFIX}{holder}#"):
            if self.table.live(item) and number(item, "session_created_at") == session_created_at:
                message: dict[str, Any] = json.loads(item["message"]["S"])
                held.append(HeldMessage(int(item["sk"]["S"].rsplit("#", 1)[1]), message))
        return held

    def drop_held(self, code: str, holder: str, sequences: list[int]) -> None:
        """Forget held messages once delivered."""
        for sequence in sequences:
            self.table.write(self.table.delete(held_key(code, holder, sequence)))
