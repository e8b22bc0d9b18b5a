"""The relay's nouns and the store's outcomes, apart from any storage.

A connection is exactly one of three things: unbound (nobody yet, perhaps with failed
auths on record), a session's mac-client, or one of its browsers. The store answers
with these types and raises the StoreError subclasses below; nothing here knows how
they are kept.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class BrowserConnection:
    """A browser of the session `code`; its frames go to `mac_connection_id`."""

    connection_id: str
    code: str
    peer: str
    mac_connection_id: str
    admitted: bool = True  # False while it waits for the mac-client's approval


Connection = UnboundConnection | MacConnection | BrowserConnection
BoundConnection = MacConnection | BrowserConnection


@dataclass(frozen=True, slots=True)
class Session:
    code: str
    mac_connection_id: str
    browser_count: int
    approve: bool = False  # browsers wait for the mac-client's admission
    locked: bool = False  # the code opens nothing new until the mac-client unlocks


@dataclass(frozen=True, slots=True)
class Browser:
    """A browser as its session lists it: its peer id and its connection."""

    peer: str
    connection_id: str
    admitted: bool = True
    address: str | None = None  # the limit key (relay.addresses) it authenticated from

    def connection_in(self, mac: MacConnection) -> BrowserConnection:
        """This browser's connection, as its record in the mac-client's session describes it."""
        return BrowserConnection(
            connection_id=self.connection_id,
            code=mac.code,
            peer=self.peer,
            mac_connection_id=mac.connection_id,
            admitted=self.admitted,
        )


@dataclass(frozen=True, slots=True)
class AttemptClaim:
    """One attempt to present a secret, counted against the connection and the address
    (its limit key and window) before anything was looked up."""

    connection_id: str
    address: str
    window_start: int


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
