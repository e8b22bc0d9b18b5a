"""The relay's nouns and the store's outcomes, apart from any storage.

A connection is exactly one of three things: unbound (nobody yet, perhaps with failed
auths on record), a session's mac-client, or one of its browsers. The store answers
with these types and raises the StoreError subclasses below; nothing here knows how
they are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    MAC = "mac"
    BROWSER = "browser"


class Delivery(StrEnum):
    """What became of one message pushed to a connection."""

    DELIVERED = "delivered"
    GONE = "gone"
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class UnboundConnection:
    """A connection in no session; `failed_auths` counts the attempts it has claimed
    (relay.ports.SessionStore.claim_attempt) and not given back by joining."""

    connection_id: str
    failed_auths: int = 0


@dataclass(frozen=True, slots=True)
class MacConnection:
    """The mac-client of the session `code`."""

    connection_id: str
    code: str
    resumable: bool = False


@dataclass(frozen=True, slots=True)
class BrowserConnection:
    """A browser of the session `code`; its frames go to `mac_connection_id`."""

    connection_id: str
    code: str
    peer: str
    mac_connection_id: str
    admitted: bool = True  # False while it waits for the mac-client's approval
    resumable: bool = False
    mac_away: bool = False  # its frames are held, not posted (the send path's one read says so)


Connection = UnboundConnection | MacConnection | BrowserConnection
BoundConnection = MacConnection | BrowserConnection


@dataclass(frozen=True, slots=True)
class Session:
    code: str
    mac_connection_id: str
    browser_count: int
    approve: bool = False  # browsers wait for the mac-client's admission
    locked: bool = False  # the code opens nothing new until the mac-client unlocks
    resumable: bool = False
    mac_away: bool = False
    created_at: int = 0
    expires_at: int = 0

    def browser_connection(self, connection_id: str, peer: str, admitted: bool) -> BrowserConnection:
        """What a connection of this session's browser `peer` is."""
        return BrowserConnection(
            connection_id=connection_id,
            code=self.code,
            peer=peer,
            mac_connection_id=self.mac_connection_id,
            admitted=admitted,
            resumable=self.resumable,
            mac_away=self.mac_away,
        )


@dataclass(frozen=True, slots=True)
class Browser:
    """A browser as its session lists it: its peer id and its connection."""

    peer: str
    connection_id: str
    admitted: bool = True
    address: str | None = None  # the limit key (relay.addresses) it authenticated from
    away: bool = False  # its connection dropped; it may resume within the grace period

    def connection_in(self, mac: MacConnection) -> BrowserConnection:
        """This browser's connection, as its record in the mac-client's session describes it."""
        return BrowserConnection(
            connection_id=self.connection_id,
            code=mac.code,
            peer=self.peer,
            mac_connection_id=mac.connection_id,
            admitted=self.admitted,
            resumable=mac.resumable,
        )


@dataclass(frozen=True, slots=True)
class AttemptClaim:
    """One attempt to present a secret, counted against the connection and the address
    (its limit key and window) before anything was looked up."""

    connection_id: str
    address: str
    window_start: int


@dataclass(frozen=True, slots=True)
class Registration:
    """A mac-client registering on `connection_id`. With `token_hash` (its resume
    token's hash, given the code drawn) the session is resumable; with `address`, one of
    that address's registrations this window is claimed in the same write."""

    connection_id: str
    client_id: str
    approve: bool = False  # browsers wait for the mac-client's admission
    token_hash: Callable[[str], str] | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Joining:
    """A browser joining `session` (as auth looked it up) on `connection_id` as `peer`:
    with `token_hash`, its resume token's hash in a resumable session; `claim` is the
    attempt auth claimed, whose address share the join gives back."""

    connection_id: str
    session: Session
    peer: str
    admitted: bool = True
    token_hash: str | None = None
    claim: AttemptClaim | None = None


@dataclass(frozen=True, slots=True)
class Resumption:
    """A resume: `holder`'s place in session `code` moves to `connection_id` if
    `token_hash` is its current token, which `new_token_hash` replaces; `claim` is the
    attempt claimed for it, whose address share a resume gives back."""

    code: str
    holder: str  # protocol.MAC_PEER or a browser's peer id
    token_hash: str
    new_token_hash: str
    connection_id: str
    claim: AttemptClaim | None = None


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Everything auth needs to decide, read in one round trip after its claim."""

    connection: Connection | None
    session: Session | None
    banned: bool = False  # the address was kicked from this very session


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session that was just ended, with the browsers that were unbound from it."""

    code: str
    browsers: list[Browser]


@dataclass(frozen=True, slots=True)
class ExpiredSession:
    """A session DynamoDB's TTL deleted: enough to tell it apart from a later one with its code."""

    code: str
    mac_connection_id: str
    created_at: int


@dataclass(frozen=True, slots=True)
class ExpiredPlace:
    """A browser's place DynamoDB's TTL deleted: TTL keeps no order, so perhaps before
    its session's item, whose clean-up then no longer finds this browser."""

    code: str
    peer: str
    connection_id: str
    mac_connection_id: str


@dataclass(frozen=True, slots=True)
class Absence:
    """A holder that went away: what the grace timer carries and checks when it fires.

    `connection_id` is the connection that dropped; a resume replaces it, so a timer
    whose connection is no longer the holder's finds nothing to do.
    """

    code: str
    holder: str  # protocol.MAC_PEER or a browser's peer id
    connection_id: str


@dataclass(frozen=True, slots=True)
class ResumedMac:
    """The mac-client took its session back on a new connection."""

    session: Session  # as it is now (the new connection, no longer away)
    old_connection_id: str
    was_away: bool
    browsers: list[Browser]  # matched to the new connection


@dataclass(frozen=True, slots=True)
class ResumedBrowser:
    connection: BrowserConnection  # the new one
    old_connection_id: str
    was_away: bool


@dataclass(frozen=True, slots=True)
class HeldMessage:
    sequence: int
    message: dict[str, object]


class StoreError(Exception):
    """A session-store outcome the caller must turn into a protocol answer."""


class StoreUnavailable(StoreError):
    """The store could not be reached or refused the request (after its own retries)."""


class AlreadyBound(StoreError):
    pass


class InvalidCode(StoreError):
    pass


class SessionFull(StoreError):
    pass


class TooManyAttempts(StoreError):
    """The connection has claimed all the attempts it may."""


class RateLimited(StoreError):
    """The source address has used up its attempts (or registrations) for this window."""


class CodeSpaceExhausted(StoreError):
    """Every fresh code drawn collided with a live session, up to the configured bound."""


class InvalidToken(StoreError):
    """No resumable place holds this token (unknown, used, or its session is gone)."""


class NotAway(StoreError):
    """The recipient is not away (any more): deliver to it, do not hold."""


class HoldRefused(StoreError):
    """MaxHeldFrames are already held for this away recipient."""
