"""The relay's two ports: where session state lives, and how messages reach connections.

Relay (relay.pairing) speaks only to these protocols. relay.store.DynamoDbStore and
relay.management_api.ManagementApi implement them on AWS; tests/support has an
in-memory store that one contract suite (tests/test_store_contract.py) holds to the
same behaviour as the DynamoDB one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from relay import protocol
from relay.model import (
    Absence,
    AttemptClaim,
    AuthContext,
    Browser,
    BrowserConnection,
    Connection,
    Delivery,
    EndedSession,
    ExpiredPlace,
    ExpiredSession,
    HeldMessage,
    Joining,
    Registration,
    ResumedBrowser,
    ResumedMac,
    Resumption,
    Session,
)


class SessionStore(Protocol):
    """Session state. Every method raises only StoreError subclasses (relay.model).

    Outcomes a caller must answer are exceptions named for them (AlreadyBound,
    InvalidCode, SessionFull, CodeSpaceExhausted, TooManyAttempts, RateLimited);
    StoreUnavailable means the store itself failed.

    `address` is always a limit key (relay.addresses.limit_key).
    """

    def for_request(self, request_token: str | None) -> SessionStore:
        """This store, writing for one invocation: `request_token` is its API Gateway
        request id, and a write botocore retries after a lost response is then applied
        once and reported as done."""
        ...

    # ---- connections ---------------------------------------------------------------
    def get_connection(self, connection_id: str) -> Connection | None:
        """What this connection is, or None if the relay knows nothing of it."""
        ...

    def forget_connection(self, connection_id: str) -> None:
        """Drop whatever is recorded about this connection (its failed auths too)."""
        ...

    # ---- limits --------------------------------------------------------------------
    def claim_attempt(self, connection_id: str, address: str) -> AttemptClaim:
        """Claim one attempt to present a secret against the connection's limit and the
        address's (this window), atomically, before anything is looked up. Raises
        TooManyAttempts (the connection's limit, checked first) or RateLimited."""
        ...

    def load_auth_context(self, connection_id: str, code: str | None, address: str) -> AuthContext:
        """The connection, the live session with `code` (if given) and whether `address`
        was kicked from that session, in one round trip."""
        ...

    # ---- codes and sessions -------------------------------------------------------
    def register_mac_client(self, registration: Registration) -> str:
        """A new session with a fresh code, the registering connection its mac-client;
        the code. Raises AlreadyBound, RateLimited or CodeSpaceExhausted."""
        ...

    def set_session_locked(self, code: str, mac_connection_id: str, locked: bool) -> bool:
        """Lock or unlock the mac-client's session (a locked code opens nothing new);
        False if the session has ended."""
        ...

    def validate_session_code(self, code: str, include_expired: bool = False) -> Session | None:
        """The live session with this code (or, with include_expired, one past its TTL)."""
        ...

    def remove_session(self, code: str, mac_connection_id: str) -> EndedSession | None:
        """End the mac-client's session and unbind its browsers at once; None if it had ended."""
        ...

    # ---- browsers -----------------------------------------------------------------
    def add_browser(self, joining: Joining) -> None:
        """Bind the connection to that very session as a browser, giving the claim's
        address share back. Raises AlreadyBound, InvalidCode (the session is gone or
        locked, or the claim's address was kicked from it) or SessionFull."""
        ...

    def get_browser(self, code: str, mac_connection_id: str, peer: str) -> Browser | None:
        """Browser `peer` of the session this mac-client owns, if it is there."""
        ...

    def list_browsers(self, code: str, mac_connection_id: str, include_expired: bool = False) -> list[Browser]:
        """The browsers of the session this mac-client owns."""
        ...

    def admit_browser(self, code: str, browser: Browser) -> bool:
        """Let a pending browser's frames flow; False if it is no longer waiting."""
        ...

    def remove_browser(self, browser: BrowserConnection, ban_address: str | None = None) -> bool:
        """Unbind the browser and forget its connection; False if it was already gone.
        With `ban_address`, that address can no longer join this session (a kick)."""
        ...

    # ---- resumable sessions --------------------------------------------------------
    def mark_mac_away(self, code: str, mac_connection_id: str) -> list[Browser] | None:
        """The mac-client dropped: away, its connection forgotten. The present browsers to
        tell; None if not resumable, not this mac-client's session, or already away."""
        ...

    def mark_browser_away(self, browser: BrowserConnection) -> bool:
        """The browser dropped: its place is away, its connection forgotten; False if it
        was not there (any more) or already away."""
        ...

    def resume_mac(self, resumption: Resumption) -> ResumedMac:
        """Move the mac-client's session to the resuming connection and replace the
        token, giving the claim's address share back. Raises InvalidToken or AlreadyBound."""
        ...

    def resume_browser(self, resumption: Resumption) -> ResumedBrowser:
        """Move the browser's place (the resumption's holder) to the resuming connection
        and replace the token, giving the claim's address share back. Raises
        InvalidToken or AlreadyBound."""
        ...

    def hold_message(self, code: str, holder: str, message: protocol.Message) -> None:
        """Keep a message for an away holder. Raises NotAway or HoldRefused."""
        ...

    def held_messages(self, code: str, holder: str, session_created_at: int) -> list[HeldMessage]:
        """The messages held for this holder of this session, oldest first."""
        ...

    def drop_held(self, code: str, holder: str, sequences: list[int]) -> None:
        """Forget delivered held messages."""
        ...

    # ---- expiry -------------------------------------------------------------------
    def release_expired_session(self, expired: ExpiredSession) -> EndedSession | None:
        """After TTL deleted a session: drop the count and unbind its browsers, exactly
        once however often the stream delivers it; None if released before."""
        ...

    def release_expired_place(self, expired: ExpiredPlace) -> bool:
        """After TTL deleted a browser's place, perhaps before its session's item: unbind
        its connection if still bound there and the session has ended; True (once) if
        the browser is to be told."""
        ...

    # ---- counter ------------------------------------------------------------------
    def session_count(self) -> int:
        """The number of live sessions."""
        ...


class Connections(Protocol):
    """Pushing to WebSocket connections (API Gateway's Management API on AWS)."""

    def post(self, connection_id: str, message: protocol.Message) -> Delivery:
        """Send one message; a closed connection is Delivery.GONE, not an error."""
        ...

    def post_many(self, messages: Mapping[str, protocol.Message]) -> dict[str, Delivery]:
        """Send to several connections; every post finishes before this returns or raises."""
        ...

    def close(self, connection_id: str) -> None:
        """Close the connection; one already gone is not an error."""
        ...


class GraceTimer(Protocol):
    """Calls back (Relay.grace_expired) ResumeGraceSeconds after a holder went away."""

    def start(self, absence: Absence) -> None: ...
