"""An in-memory relay.ports.SessionStore, for rule tests that run in milliseconds.

It keeps the same records as the DynamoDB store (sessions, browsers, connections, the
counter, address windows, registration windows, bans, expiry markers) with the same conditions and the same TTL
liveness, one lock around each operation. tests/test_store_contract.py runs one suite
against this and against relay.store.DynamoDbStore on moto, so the two cannot drift.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from relay import protocol, session_codes
from relay.model import (
    AlreadyBound,
    AttemptClaim,
    AuthContext,
    Browser,
    BrowserConnection,
    CodeSpaceExhausted,
    Connection,
    EndedSession,
    ExpiredPlace,
    ExpiredSession,
    HeldMessage,
    HoldRefused,
    InvalidCode,
    InvalidToken,
    Joining,
    MacConnection,
    NotAway,
    RateLimited,
    Registration,
    ResumedBrowser,
    ResumedMac,
    Resumption,
    Role,
    Session,
    SessionFull,
    StoreError,
    TooManyAttempts,
    UnboundConnection,
)
from relay.settings import Settings

# A marker outlives any stream record (the DynamoDB store keeps it 24 hours).
MARKER_SECONDS = 24 * 3600


@dataclass(frozen=True)
class _SessionRecord:
    mac_connection_id: str
    client_id: str
    browser_count: int
    approve: bool
    created_at: int
    expires_at: int
    locked: bool = False
    resumable: bool = False
    mac_token_hash: str | None = None
    mac_away: int | None = None
    held_seq: int = 0
    held_count: int = 0


@dataclass(frozen=True)
class _PeerRecord:
    connection_id: str
    mac_connection_id: str
    admitted: bool
    expires_at: int
    address: str | None = None
    token_hash: str | None = None
    away: int | None = None
    held_seq: int = 0
    held_count: int = 0
    session_created_at: int = 0


@dataclass(frozen=True)
class _Held:
    message: str
    session_created_at: int
    expires_at: int


@dataclass(frozen=True)
class _ConnectionRecord:
    role: Role | None = None
    code: str | None = None
    peer: str | None = None
    mac_connection_id: str | None = None
    admitted: bool = True
    failed_auths: int = 0
    expires_at: int | None = None  # the connection's TTL, whatever its session's lifetime
    resumable: bool = False
    mac_away: bool = False
    session_expires_at: int | None = None  # a resumable session's end


@dataclass(frozen=True)
class _Window:
    failures: int
    expires_at: int


class MemoryStore:
    """relay.ports.SessionStore in a few dictionaries."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.RLock()
        self._sessions: dict[str, _SessionRecord] = {}
        self._peers: dict[tuple[str, str], _PeerRecord] = {}
        self._connections: dict[str, _ConnectionRecord] = {}
        self._windows: dict[tuple[str, int], _Window] = {}
        self._registrations: dict[tuple[str, int], _Window] = {}
        # (code, address) -> (the session's mac-client connections, expires_at)
        self._bans: dict[tuple[str, str], tuple[frozenset[str], int]] = {}
        self._markers: dict[tuple[str, int, str], int] = {}
        self._held: dict[tuple[str, str, int], _Held] = {}
        self._count = 0

    def for_request(self, request_token: str | None) -> MemoryStore:
        """The same store: nothing is lost between it and its caller, so there is no
        retry to make idempotent."""
        return self

    # ---- helpers ------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _expires_at(self) -> int:
        return self._now() + self.settings.session_ttl_seconds

    def _live(self, expires_at: int | None) -> bool:
        return expires_at is None or expires_at > self._now()

    def _window_start(self) -> int:
        window = self.settings.auth_failure_window_seconds
        return self._now() // window * window

    def _session(self, code: str, include_expired: bool = False) -> Session | None:
        record = self._sessions.get(code)
        if record is None or not (include_expired or self._live(record.expires_at)):
            return None
        return Session(
            code,
            record.mac_connection_id,
            record.browser_count,
            record.approve,
            locked=record.locked,
            resumable=record.resumable,
            mac_away=record.mac_away is not None,
            created_at=record.created_at,
            expires_at=record.expires_at,
        )

    def _browsers(self, code: str, mac_connection_id: str, include_expired: bool) -> list[Browser]:
        return [
            Browser(peer, record.connection_id, record.admitted, record.address, record.away is not None)
            for (peer_code, peer), record in sorted(self._peers.items())
            if peer_code == code
            and record.mac_connection_id == mac_connection_id
            and (include_expired or self._live(record.expires_at))
        ]

    def _unbind(self, code: str, browser: Browser) -> bool:
        """Take a browser out of its session, if its records are still this browser's."""
        peer = self._peers.get((code, browser.peer))
        connection = self._connections.get(browser.connection_id)
        if peer is None or peer.connection_id != browser.connection_id:
            return False
        if connection is not None and (connection.code != code or connection.peer != browser.peer):
            return False
        del self._peers[(code, browser.peer)]
        self._connections.pop(browser.connection_id, None)
        return True

    # ---- connections ----------------------------------------------------------------

    def get_connection(self, connection_id: str) -> Connection | None:
        with self._lock:
            record = self._connections.get(connection_id)
            if record is None or not self._live(record.expires_at):
                return None
            if record.session_expires_at is not None and not self._live(record.session_expires_at):
                return None
            if record.role is Role.MAC and record.code is not None:
                return MacConnection(connection_id, record.code, record.resumable)
            if record.role is Role.BROWSER and record.code is not None:
                return BrowserConnection(
                    connection_id,
                    record.code,
                    str(record.peer),
                    str(record.mac_connection_id),
                    record.admitted,
                    record.resumable,
                    record.mac_away,
                )
            return UnboundConnection(connection_id, record.failed_auths)

    def forget_connection(self, connection_id: str) -> None:
        with self._lock:
            self._connections.pop(connection_id, None)

    # ---- limits ---------------------------------------------------------------------

    def _window_count(self, windows: dict[tuple[str, int], _Window], address: str, start: int) -> int:
        window = windows.get((address, start))
        return window.failures if window and self._live(window.expires_at) else 0

    def _add_to_window(self, windows: dict[tuple[str, int], _Window], address: str, start: int, delta: int) -> None:
        window = windows.get((address, start))
        expires = start + 2 * self.settings.auth_failure_window_seconds
        windows[(address, start)] = _Window(
            (window.failures if window else 0) + delta, window.expires_at if window else expires
        )

    def claim_attempt(self, connection_id: str, address: str) -> AttemptClaim:
        with self._lock:
            start = self._window_start()
            record = self._connections.get(connection_id) or _ConnectionRecord()
            if record.failed_auths >= self.settings.max_auth_attempts:
                raise TooManyAttempts
            if self._window_count(self._windows, address, start) >= self.settings.auth_failures_per_ip:
                raise RateLimited
            self._add_to_window(self._windows, address, start, +1)
            self._connections[connection_id] = replace(
                record,
                failed_auths=record.failed_auths + 1,
                expires_at=record.expires_at if record.expires_at is not None else self._expires_at(),
            )
            return AttemptClaim(connection_id, address, start)

    def load_auth_context(self, connection_id: str, code: str | None, address: str) -> AuthContext:
        with self._lock:
            session = self._session(code) if code is not None else None
            ban = self._bans.get((code, address)) if code is not None else None
            banned = (
                session is not None and ban is not None and session.mac_connection_id in ban[0] and self._live(ban[1])
            )
            return AuthContext(connection=self.get_connection(connection_id), session=session, banned=banned)

    def attempts_from(self, address: str) -> int:
        """The address's claimed attempts this window (for tests)."""
        with self._lock:
            return self._window_count(self._windows, address, self._window_start())

    # ---- codes and sessions --------------------------------------------------------

    def register_mac_client(self, registration: Registration) -> str:
        connection_id, client_id, approve = registration.connection_id, registration.client_id, registration.approve
        token_hash, address = registration.token_hash, registration.address
        with self._lock:
            resumable = token_hash is not None
            expires_at = self._now() + self.settings.max_session_seconds if resumable else self._expires_at()
            start = self._window_start()
            for _ in range(self.settings.max_code_attempts):
                code = session_codes.generate_session_code()
                connection = self._connections.get(connection_id) or _ConnectionRecord()
                if connection.role is not None:
                    raise AlreadyBound
                if (
                    address is not None
                    and self._window_count(self._registrations, address, start) >= self.settings.registrations_per_ip
                ):
                    raise RateLimited
                if code in self._sessions:  # even one past its TTL that is not deleted yet
                    continue
                if address is not None:
                    self._add_to_window(self._registrations, address, start, +1)
                self._connections[connection_id] = replace(
                    connection,
                    role=Role.MAC,
                    code=code,
                    expires_at=self._expires_at(),
                    resumable=resumable,
                    session_expires_at=expires_at if resumable else None,
                )
                self._sessions[code] = _SessionRecord(
                    connection_id,
                    client_id,
                    0,
                    approve,
                    self._now(),
                    expires_at,
                    resumable=resumable,
                    mac_token_hash=token_hash(code) if token_hash is not None else None,
                )
                self._count += 1
                return code
            raise CodeSpaceExhausted

    def validate_session_code(self, code: str, include_expired: bool = False) -> Session | None:
        with self._lock:
            return self._session(code, include_expired)

    def set_session_locked(self, code: str, mac_connection_id: str, locked: bool) -> bool:
        with self._lock:
            record = self._sessions.get(code)
            if record is None or record.mac_connection_id != mac_connection_id:
                return False
            self._sessions[code] = replace(record, locked=locked)
            return True

    def remove_session(self, code: str, mac_connection_id: str) -> EndedSession | None:
        with self._lock:
            session = self._session(code, include_expired=True)
            if session is None or session.mac_connection_id != mac_connection_id:
                self._connections.pop(mac_connection_id, None)
                return None
            browsers = self._browsers(code, mac_connection_id, include_expired=True)
            for browser in browsers:
                self._unbind(code, browser)
            del self._sessions[code]
            self._connections.pop(mac_connection_id, None)
            self._count -= 1
            return EndedSession(code, browsers)

    # ---- browsers ------------------------------------------------------------------

    def add_browser(self, joining: Joining) -> None:
        connection_id, session, peer = joining.connection_id, joining.session, joining.peer
        admitted, token_hash, claim = joining.admitted, joining.token_hash, joining.claim
        with self._lock:
            connection = self._connections.get(connection_id) or _ConnectionRecord()
            if connection.role is not None:
                raise AlreadyBound
            current = self._sessions.get(session.code)
            if (
                current is None
                or current.mac_connection_id != session.mac_connection_id
                or current.expires_at <= self._now()
                or current.locked
            ):
                raise InvalidCode
            if claim is not None:
                ban = self._bans.get((session.code, claim.address))
                if ban is not None and session.mac_connection_id in ban[0] and self._live(ban[1]):
                    raise InvalidCode
            if current.browser_count >= self.settings.max_browsers:
                raise SessionFull
            if (session.code, peer) in self._peers:
                raise StoreError("peer id taken")
            expires_at = session.expires_at if session.resumable else self._expires_at()
            self._sessions[session.code] = replace(current, browser_count=current.browser_count + 1)
            self._peers[(session.code, peer)] = _PeerRecord(
                connection_id,
                session.mac_connection_id,
                admitted,
                expires_at,
                claim.address if claim else None,
                token_hash,
                session_created_at=session.created_at if session.resumable else 0,
            )
            if claim is not None:
                self._add_to_window(self._windows, claim.address, claim.window_start, -1)
            self._connections[connection_id] = _ConnectionRecord(
                Role.BROWSER,
                session.code,
                peer,
                session.mac_connection_id,
                admitted,
                0,
                self._expires_at(),
                session.resumable,
                session.mac_away if session.resumable else False,
                expires_at if session.resumable else None,
            )

    def get_browser(self, code: str, mac_connection_id: str, peer: str) -> Browser | None:
        with self._lock:
            record = self._peers.get((code, peer))
            if record is None or not self._live(record.expires_at) or record.mac_connection_id != mac_connection_id:
                return None
            return Browser(peer, record.connection_id, record.admitted, record.address, record.away is not None)

    def list_browsers(self, code: str, mac_connection_id: str, include_expired: bool = False) -> list[Browser]:
        with self._lock:
            return self._browsers(code, mac_connection_id, include_expired)

    def admit_browser(self, code: str, browser: Browser) -> bool:
        with self._lock:
            peer = self._peers.get((code, browser.peer))
            connection = self._connections.get(browser.connection_id)
            if peer is None or peer.connection_id != browser.connection_id or peer.admitted:
                return False
            if connection is None or connection.code != code or connection.peer != browser.peer:
                return False
            self._peers[(code, browser.peer)] = replace(peer, admitted=True)
            self._connections[browser.connection_id] = replace(connection, admitted=True)
            return True

    def remove_browser(self, browser: BrowserConnection, ban_address: str | None = None) -> bool:
        with self._lock:
            if ban_address is not None:
                before = self._bans.get((browser.code, ban_address), (frozenset[str](), 0))[0]
                expires_at = (
                    self._now() + self.settings.max_session_seconds if browser.resumable else self._expires_at()
                )
                self._bans[(browser.code, ban_address)] = (before | {browser.mac_connection_id}, expires_at)
            peer = self._peers.get((browser.code, browser.peer))
            if peer is None or peer.connection_id != browser.connection_id:
                self._connections.pop(browser.connection_id, None)  # already unbound elsewhere
                return False
            del self._peers[(browser.code, browser.peer)]
            self._connections.pop(browser.connection_id, None)
            session = self._sessions.get(browser.code)
            if session is not None and session.mac_connection_id == browser.mac_connection_id:
                self._sessions[browser.code] = replace(session, browser_count=session.browser_count - 1)
            return True

    # ---- resumable sessions ----------------------------------------------------------

    def mark_mac_away(self, code: str, mac_connection_id: str) -> list[Browser] | None:
        with self._lock:
            session = self._sessions.get(code)
            if (
                session is None
                or not self._live(session.expires_at)
                or not session.resumable
                or session.mac_away is not None
                or session.mac_connection_id != mac_connection_id
            ):
                return None
            present = [b for b in self._browsers(code, mac_connection_id, False) if not b.away]
            self._sessions[code] = replace(session, mac_away=self._now())
            self._connections.pop(mac_connection_id, None)
            for browser in present:
                record = self._connections.get(browser.connection_id)
                if record is not None and record.code == code and record.peer == browser.peer:
                    self._connections[browser.connection_id] = replace(record, mac_away=True)
            return present

    def mark_browser_away(self, browser: BrowserConnection) -> bool:
        with self._lock:
            peer = self._peers.get((browser.code, browser.peer))
            if peer is None or peer.connection_id != browser.connection_id or peer.away is not None:
                return False
            self._peers[(browser.code, browser.peer)] = replace(peer, away=self._now())
            self._connections.pop(browser.connection_id, None)
            return True

    def _claim_connection(self, connection_id: str) -> _ConnectionRecord:
        connection = self._connections.get(connection_id) or _ConnectionRecord()
        if connection.role is not None:
            raise AlreadyBound
        return connection

    def resume_mac(self, resumption: Resumption) -> ResumedMac:
        code, token_hash, new_token_hash = resumption.code, resumption.token_hash, resumption.new_token_hash
        connection_id, claim = resumption.connection_id, resumption.claim
        with self._lock:
            session = self._session(code)
            record = self._sessions.get(code)
            if session is None or record is None or not record.resumable or record.mac_token_hash != token_hash:
                raise InvalidToken
            self._claim_connection(connection_id)
            old = record.mac_connection_id
            browsers = self._browsers(code, old, False)
            self._sessions[code] = replace(
                record, mac_connection_id=connection_id, mac_token_hash=new_token_hash, mac_away=None, held_count=0
            )
            self._connections[connection_id] = _ConnectionRecord(
                Role.MAC, code, expires_at=self._expires_at(), resumable=True, session_expires_at=record.expires_at
            )
            self._connections.pop(old, None)
            for browser in browsers:
                peer = self._peers[(code, browser.peer)]
                self._peers[(code, browser.peer)] = replace(peer, mac_connection_id=connection_id)
                bound = self._connections.get(browser.connection_id)
                if not browser.away and bound is not None and bound.code == code and bound.peer == browser.peer:
                    self._connections[browser.connection_id] = replace(
                        bound, mac_connection_id=connection_id, mac_away=False
                    )
            for (ban_code, address), (macs, ban_expires_at) in list(self._bans.items()):
                if ban_code == code and old in macs:
                    self._bans[(ban_code, address)] = (macs | {connection_id}, ban_expires_at)
            if claim is not None:
                self._add_to_window(self._windows, claim.address, claim.window_start, -1)
            now = replace(session, mac_connection_id=connection_id, mac_away=False)
            return ResumedMac(now, old, session.mac_away, browsers)

    def resume_browser(self, resumption: Resumption) -> ResumedBrowser:
        code, peer, token_hash = resumption.code, resumption.holder, resumption.token_hash
        new_token_hash, connection_id, claim = resumption.new_token_hash, resumption.connection_id, resumption.claim
        with self._lock:
            session = self._session(code)
            place = self._peers.get((code, peer))
            if (
                session is None
                or not session.resumable
                or place is None
                or not self._live(place.expires_at)
                or place.token_hash != token_hash
                or place.mac_connection_id != session.mac_connection_id
            ):
                raise InvalidToken
            self._claim_connection(connection_id)
            old = place.connection_id
            self._peers[(code, peer)] = replace(
                place, connection_id=connection_id, token_hash=new_token_hash, away=None, held_count=0
            )
            self._connections[connection_id] = _ConnectionRecord(
                Role.BROWSER,
                code,
                peer,
                session.mac_connection_id,
                place.admitted,
                0,
                self._expires_at(),
                True,
                session.mac_away,
                session.expires_at,
            )
            self._connections.pop(old, None)
            if claim is not None:
                self._add_to_window(self._windows, claim.address, claim.window_start, -1)
            connection = BrowserConnection(
                connection_id, code, peer, session.mac_connection_id, place.admitted, True, session.mac_away
            )
            return ResumedBrowser(connection, old, place.away is not None)

    def hold_message(self, code: str, holder: str, message: protocol.Message) -> None:
        with self._lock:
            if holder == protocol.MAC_PEER:
                session = self._sessions.get(code)
                if session is None or not self._live(session.expires_at) or session.mac_away is None:
                    raise NotAway
                if session.held_count >= self.settings.max_held_frames:
                    raise HoldRefused
                sequence, created_at = session.held_seq + 1, session.created_at
                self._sessions[code] = replace(session, held_seq=sequence, held_count=session.held_count + 1)
            else:
                peer = self._peers.get((code, holder))
                if peer is None or not self._live(peer.expires_at) or peer.away is None:
                    raise NotAway
                if peer.held_count >= self.settings.max_held_frames:
                    raise HoldRefused
                sequence, created_at = peer.held_seq + 1, peer.session_created_at
                self._peers[(code, holder)] = replace(peer, held_seq=sequence, held_count=peer.held_count + 1)
            self._held[(code, holder, sequence)] = _Held(
                protocol.encode(message), created_at, self._now() + self.settings.resume_grace_seconds
            )

    def held_messages(self, code: str, holder: str, session_created_at: int) -> list[HeldMessage]:
        with self._lock:
            return [
                HeldMessage(sequence, json.loads(held.message))
                for (held_code, held_holder, sequence), held in sorted(self._held.items())
                if held_code == code
                and held_holder == holder
                and held.session_created_at == session_created_at
                and self._live(held.expires_at)
            ]

    def drop_held(self, code: str, holder: str, sequences: list[int]) -> None:
        with self._lock:
            for sequence in sequences:
                self._held.pop((code, holder, sequence), None)

    # ---- expiry --------------------------------------------------------------------

    def release_expired_session(self, expired: ExpiredSession) -> EndedSession | None:
        with self._lock:
            marker = (expired.code, expired.created_at, expired.mac_connection_id)
            if marker in self._markers:
                return None
            browsers = self._browsers(expired.code, expired.mac_connection_id, include_expired=True)
            for browser in browsers:
                self._unbind(expired.code, browser)
            self._markers[marker] = self._now() + MARKER_SECONDS
            self._count -= 1
            return EndedSession(expired.code, browsers)

    def release_expired_place(self, expired: ExpiredPlace) -> bool:
        with self._lock:
            session = self._session(expired.code)
            if session is not None and session.mac_connection_id == expired.mac_connection_id:
                return False
            connection = self._connections.get(expired.connection_id)
            if connection is None or connection.code != expired.code or connection.peer != expired.peer:
                return False
            del self._connections[expired.connection_id]
            return True

    def delete_expired_place(self, code: str, peer: str) -> ExpiredPlace | None:
        """Play DynamoDB's TTL: delete a browser's place; what its stream record says
        (None for an away browser's, which the expiry function passes over)."""
        with self._lock:
            record = self._peers.pop((code, peer))
            if record.away is not None:
                return None
            return ExpiredPlace(code, peer, record.connection_id, record.mac_connection_id)

    def sweep_by_ttl(self, first: str) -> list[ExpiredSession | ExpiredPlace]:
        """Play DynamoDB's TTL at the clock's time: delete every session, place and
        connection record past its TTL, those of kind `first` ("sessions", "places" or
        "connections") first; what their stream records say, in that order."""
        with self._lock:
            now = self._now()
            sessions = [code for code, r in self._sessions.items() if r.expires_at <= now]
            places = [key for key, r in self._peers.items() if r.expires_at <= now]
            connections = [c for c, r in self._connections.items() if r.expires_at is not None and r.expires_at <= now]
            kinds = [first, *(kind for kind in ("sessions", "places", "connections") if kind != first)]
            records: list[ExpiredSession | ExpiredPlace] = []
            for kind in kinds:
                if kind == "sessions":
                    records += [self.delete_expired_session(code) for code in sessions]
                elif kind == "places":
                    records += [r for code, peer in places if (r := self.delete_expired_place(code, peer))]
                else:
                    for connection_id in connections:
                        del self._connections[connection_id]
            return records

    def delete_expired_session(self, code: str) -> ExpiredSession:
        """Play DynamoDB's TTL: delete the session item; what its stream record says."""
        with self._lock:
            record = self._sessions.pop(code)
            return ExpiredSession(code, record.mac_connection_id, record.created_at)

    # ---- counter -------------------------------------------------------------------

    def session_count(self) -> int:
        with self._lock:
            return self._count
