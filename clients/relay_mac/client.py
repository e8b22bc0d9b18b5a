"""The mac-client's logic, free of any terminal.

`MacClient` connects to the relay, registers for a session code, keeps the
connection alive, relays frames, and reconnects with backoff when the connection
drops. Everything it has to say goes to an event sink (see `events`), and the lines
to send come from an async iterator, so the CLI, a GUI or a test can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from relay import protocol
from relay.protocol import Action, ErrorCode, MessageType
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.uri import parse_uri

from relay_mac import events
from relay_mac.backoff import Backoff, BackoffPolicy
from relay_mac.events import Event
from relay_mac.secure import DEFAULT_WAIT_SECONDS, SecureLinks

DEFAULT_URL = "ws://127.0.0.1:3001"
# Nine minutes: one application message inside API Gateway's ten idle minutes, with
# a minute to spare for a slow send. WebSocket pings do not count as activity there.
DEFAULT_KEEPALIVE_SECONDS = 540.0
DEFAULT_OPEN_TIMEOUT_SECONDS = 10.0
DEFAULT_REGISTER_TIMEOUT_SECONDS = 10.0
# How long a deliberate exit waits for the relay's `ended` before it just closes.
DEFAULT_END_TIMEOUT_SECONDS = 2.0

EventSink = Callable[[Event], None]


class StartupError(Exception):
    """The first connection or registration failed; the message is one line for a person."""


class _AttemptFailed(Exception):
    """A connection attempt failed; carries the one-line explanation."""


def new_client_id() -> str:
    return f"relay-mac-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    url: str = DEFAULT_URL
    client_id: str = field(default_factory=new_client_id)
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # None: keep trying for as long as the client runs.
    max_reconnect_attempts: int | None = None
    open_timeout_seconds: float = DEFAULT_OPEN_TIMEOUT_SECONDS
    register_timeout_seconds: float = DEFAULT_REGISTER_TIMEOUT_SECONDS
    # Approval mode: browsers with the right code wait until the person admits them.
    approve: bool = False
    # End-to-end encryption with each browser that supports it (relay_mac.e2e).
    e2e: bool = True
    # How long a browser that joined has to start its handshake before it counts as a
    # client without encryption (and lines typed for it meanwhile go in clear).
    e2e_wait_seconds: float = DEFAULT_WAIT_SECONDS
    # Issue 11: register resumable and resume the same session (same code) after a drop.
    resumable: bool = True
    # Lock the session as soon as the first browser is in (issue 10).
    lock_after_first: bool = False
    end_timeout_seconds: float = DEFAULT_END_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.keepalive_seconds < protocol.IDLE_TIMEOUT_SECONDS:
            raise ValueError(
                f"keepalive must be between 0 and {protocol.IDLE_TIMEOUT_SECONDS} seconds "
                "(the relay's idle timeout), exclusive"
            )
        if not 1 <= len(self.client_id) <= protocol.CLIENT_ID_MAX_LENGTH:
            raise ValueError(f"client id must be 1 to {protocol.CLIENT_ID_MAX_LENGTH} characters")
        if self.max_reconnect_attempts is not None and self.max_reconnect_attempts < 0:
            raise ValueError("max reconnect attempts cannot be negative")
        if not self.e2e_wait_seconds > 0:
            raise ValueError("the e2e wait must be more than 0 seconds")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One line typed by the person, as a send request."""

    data: Any
    to: str | None = None  # None: every browser in the session

    def message(self) -> dict[str, Any]:
        body: dict[str, Any] = {"action": Action.SEND.value, "data": self.data}
        if self.to is not None:
            body["to"] = self.to
        return body


@dataclass(frozen=True, slots=True)
class Command:
    """A `/command` typed by the person: admission control and the peer list."""

    name: str  # one of COMMANDS
    peer: str | None = None


# name -> whether it takes a peer id
COMMANDS: dict[str, bool] = {"admit": True, "kick": True, "peers": False, "lock": False, "unlock": False}
COMMAND_HELP = "Commands: /admit PEER, /kick PEER, /peers, /lock, /unlock; start a line with // to send a literal /."


class InputLineError(ValueError):
    pass


def parse_input_line(line: str) -> Outgoing | Command | None:
    """`text` goes to every browser, `@peer text` to one; `/admit PEER`, `/kick PEER` and
    `/peers` are commands; `@@text` and `//text` send a literal `@text` or `/text`.

    Blank lines send nothing (None).
    """
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith(("@@", "//")):
        return Outgoing(data=text[1:])
    if text.startswith("/"):
        return _parse_command(text[1:])
    if text.startswith("@"):
        peer, _, rest = text[1:].partition(" ")
        if not peer or not rest:
            raise InputLineError("To send to one browser, type @peer followed by a space and the text.")
        return Outgoing(data=rest, to=peer)
    return Outgoing(data=text)


def _parse_command(text: str) -> Command:
    name, *arguments = text.split()
    if name not in COMMANDS:
        raise InputLineError(f"Unknown command /{name}. {COMMAND_HELP}")
    takes_peer = COMMANDS[name]
    if takes_peer and len(arguments) != 1:
        raise InputLineError(f"/{name} needs one peer id, e.g. /{name} p1a2b3c4d.")
    if not takes_peer and arguments:
        raise InputLineError(f"/{name} takes no arguments.")
    return Command(name=name, peer=arguments[0] if takes_peer else None)


def describe_connect_failure(url: str, exc: BaseException, open_timeout: float) -> str:
    """One line that says what went wrong, without a traceback."""
    if isinstance(exc, InvalidURI):
        return f"{url!r} is not a WebSocket URL; expected ws://host:port or wss://host/stage"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {url}: connection refused (is the relay running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot connect to {url}: unknown host {parse_uri(url).host!r}"
    if isinstance(exc, TimeoutError):
        return f"cannot connect to {url}: no answer within {open_timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"cannot connect to {url}: TLS failed ({exc.reason or exc})"
    if isinstance(exc, InvalidStatus):
        return f"the server at {url} refused the WebSocket upgrade (HTTP {exc.response.status_code})"
    if isinstance(exc, InvalidHandshake):
        return f"the server at {url} did not answer as a WebSocket relay ({exc})"
    if isinstance(exc, OSError):
        return f"cannot connect to {url}: {exc.strerror or exc}"
    return f"cannot connect to {url}: {exc}"


@dataclass(frozen=True, slots=True)
class _Resumed:
    """The relay's `resumed` for the mac-client: the same session, on a new connection."""

    code: str
    token: str
    peers: list[str]
    away: list[str]
    waiting: list[str]


def _resumed_from(message: dict[str, Any], code: str) -> _Resumed:
    token = message.get("resume_token")
    if not isinstance(token, str) or not token:
        raise _AttemptFailed("the relay resumed the session without a new resume token")
    listed = message.get("peers")
    states: dict[str, list[str]] = {"present": [], "away": [], "pending": []}
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and isinstance(peer := entry.get("peer"), str):
            states.setdefault(str(entry.get("state")), []).append(peer)
    resumed_code = message.get("code")
    return _Resumed(
        code=resumed_code if isinstance(resumed_code, str) and resumed_code else code,
        token=token,
        peers=states["present"],
        away=states["away"],
        waiting=states["pending"],
    )


class MacClient:
    """One mac-client: one session at a time, resumed after a drop (or a new one if it cannot be)."""

    def __init__(
        self,
        settings: ClientSettings,
        sink: EventSink,
        lines: AsyncIterator[str],
        *,
        rng: random.Random | None = None,
        stop_at_end_of_input: bool = True,
    ) -> None:
        self.settings = settings
        self._stop_at_end_of_input = stop_at_end_of_input
        self._sink = sink
        self._lines = lines
        self._backoff = Backoff(settings.backoff, rng)
        self._stop = asyncio.Event()
        self.stop_reason = "stopped"
        self.gave_up = False
        self._connection: ClientConnection | None = None
        self.code: str | None = None
        self.peers: list[str] = []
        # Browsers that asked to join (approval mode) and are not admitted yet.
        self.waiting: list[str] = []
        # Browsers of a resumable session whose connection dropped; the relay holds their frames.
        self.away: list[str] = []
        # The token that resumes this session (None: not resumable, or no session).
        self.resume_token: str | None = None
        self.resumes = 0
        self.locked = False
        self._lock_requested = False
        # Set by the relay's `ended` (or an old relay's refusal of `end`) while saying goodbye.
        self._ended = asyncio.Event()
        self._ending = False
        self._just_resumed = False
        # What the relay sent the resuming connection before `resumed` (see _resume).
        self._before_resumed: list[dict[str, Any]] = []
        self.sessions = 0
        # Counted, not reported: the keepalive is invisible to the person by design.
        self.pings_sent = 0
        self.pongs_received = 0
        self.links = SecureLinks(
            enabled=settings.e2e, wait_seconds=settings.e2e_wait_seconds, sink=sink, send=self._send_data
        )

    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()

    async def run(self) -> None:
        """Serve until `stop()`, the end of input, or too many failed reconnects.

        Raises StartupError when the very first connection or registration fails:
        at start a bad URL or a relay that is not running is the person's to fix.
        """
        input_task = asyncio.create_task(self._pump_input(), name="relay-mac input")
        try:
            await self._run_sessions()
        finally:
            input_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await input_task
            await self._close_connection()
            await self.links.close()
        self._sink(events.stopped(self.stop_reason))

    async def _run_sessions(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self._sink(events.connecting(self.settings.url, attempt))
            try:
                connection = await self._open_session_unless_stopped()
            except _AttemptFailed as failure:
                if self.sessions == 0:
                    raise StartupError(str(failure)) from None
                self._sink(events.error(events.LOCAL_CONNECT_FAILED, str(failure)))
                if not await self._wait_before_reconnect():
                    return
                continue
            if connection is None:
                return
            self._backoff.reset()
            attempt = 0
            close_code, close_reason = await self._serve(connection)
            if self._stop.is_set():
                return
            self._sink(events.disconnected(close_code, close_reason, resuming=self.resume_token is not None))
            if not await self._wait_before_reconnect():
                return

    async def _wait_before_reconnect(self) -> bool:
        """Sleep the backoff delay; False when the client should give up instead."""
        limit = self.settings.max_reconnect_attempts
        if limit is not None and self._backoff.failures >= limit:
            self.gave_up = True
            self.stop(f"gave up after {limit} failed reconnect attempts")
            return False
        delay = self._backoff.next_delay()
        self._sink(events.reconnecting(delay, self._backoff.failures))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        return not self._stop.is_set()

    async def _open_session_unless_stopped(self) -> ClientConnection | None:
        """Open and register, or None if the client is stopped first.

        A stop (Ctrl-C, SIGTERM) must not wait for a slow relay's open timeout.
        """
        opening = asyncio.create_task(self._open_session(), name="relay-mac open")
        stopping = asyncio.create_task(self._stop.wait(), name="relay-mac stop")
        await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, _AttemptFailed):
                await opening
            return None
        return opening.result()

    async def _open_session(self) -> ClientConnection:
        url = self.settings.url
        timeout = self.settings.open_timeout_seconds
        try:
            connection = await connect(url, open_timeout=timeout, max_size=protocol.MAX_MESSAGE_BYTES)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise _AttemptFailed(describe_connect_failure(url, exc, timeout)) from exc
        try:
            resumed = await asyncio.wait_for(self._resume(connection), timeout=self.settings.register_timeout_seconds)
            if resumed is not None:
                self._connection = connection
                self._on_resumed(resumed)
                return connection
            code, token = await asyncio.wait_for(
                self._register(connection), timeout=self.settings.register_timeout_seconds
            )
        except TimeoutError:
            await connection.close()
            raise _AttemptFailed(
                f"the relay at {url} did not answer the register request within "
                f"{self.settings.register_timeout_seconds:g} s"
            ) from None
        except ConnectionClosed as closed:
            raise _AttemptFailed(
                f"the relay at {url} closed the connection before registering ({_close_text(closed)})"
            ) from None
        except (_AttemptFailed, asyncio.CancelledError):
            await connection.close()
            raise
        self._connection = connection
        self.code = code
        self.resume_token = token
        self._forget_session(code)
        self.sessions += 1
        self._sink(events.registered(code, self.sessions))
        return connection

    def _forget_session(self, code: str) -> None:
        self.peers = []
        self.waiting = []
        self.away = []
        self.locked = False
        self._lock_requested = False
        self.links.reset(code)

    async def _resume(self, connection: ClientConnection) -> _Resumed | None:
        """Ask for the session back with its token; None when there is none to resume, or the
        relay refused (`invalid_token`: the grace period is over), which is then reported."""
        token, code = self.resume_token, self.code
        if token is None or code is None:
            return None
        await connection.send(json.dumps({"action": Action.RESUME.value, "token": token}))
        # A frame sent to us while the relay resumes us may come straight to this connection,
        # even before `resumed` (docs/PROTOCOL.md, Held frames): kept, and handled right after.
        before_resumed: list[dict[str, Any]] = []
        while True:
            message = _decode(await connection.recv())
            if message is None:
                continue
            kind = message.get("type")
            if kind == MessageType.RESUMED:
                resumed = _resumed_from(message, code)
                self._before_resumed = before_resumed
                return resumed
            if kind == MessageType.ERROR:
                error_code = str(message.get("error"))
                text = str(message.get("message") or error_code)
                if error_code != ErrorCode.INVALID_TOKEN:
                    # Busy, rate limited, ...: the token may still be good, so try it again later.
                    raise _AttemptFailed(f"the relay did not resume the session: {text}")
                self.resume_token = None
                self._sink(events.resume_refused(code, error_code, text))
                return None
            before_resumed.append(message)

    def _on_resumed(self, resumed: _Resumed) -> None:
        known = set(self.peers) | set(self.away) | set(self.waiting)
        for gone in known - set(resumed.peers) - set(resumed.away) - set(resumed.waiting):
            self.links.left(gone)  # removed while we were away (their grace ran out)
        self.code = resumed.code
        self.resume_token = resumed.token
        self.peers, self.away, self.waiting = list(resumed.peers), list(resumed.away), list(resumed.waiting)
        self.resumes += 1
        self._just_resumed = True
        self._sink(events.resumed(resumed.code, self.sessions, list(self.peers), list(self.away), list(self.waiting)))
        for peer in self.peers:
            self.links.joined(peer)  # a browser that joined while we were away; known ones keep their link
        # An unknown away browser gets its link when it is back: its wait for a handshake
        # must not run out (and settle it as plain) while it cannot send one.

    async def _after_resume(self) -> None:
        # Our keys survived the drop (same process), so the frames the relay held for us,
        # delivered right after `resumed`, still open. Then each present browser makes a new
        # agreement; an away browser makes one itself when it resumes.
        for peer in list(self.peers):
            await self.links.rekey(peer)
        await self._lock_if_first_is_in()

    async def _register(self, connection: ClientConnection) -> tuple[str, str | None]:
        register: dict[str, Any] = {"action": Action.REGISTER.value, "client_id": self.settings.client_id}
        if self.settings.approve:
            register["approve"] = True
        if self.settings.resumable:
            register["resumable"] = True
        await connection.send(json.dumps(register))
        while True:
            message = _decode(await connection.recv())
            if message is None:
                continue
            kind = message.get("type")
            if kind == MessageType.REGISTERED:
                code = message.get("code")
                if not isinstance(code, str) or not protocol.is_well_formed_code(code):
                    raise _AttemptFailed(f"the relay sent a malformed session code: {code!r}")
                token = message.get("resume_token")
                # A relay without resumable sessions sends no token: reconnects then register anew.
                return code, token if isinstance(token, str) and token else None
            if kind == MessageType.ERROR:
                raise _AttemptFailed(f"the relay refused to register: {message.get('message') or message.get('error')}")

    async def _serve(self, connection: ClientConnection) -> tuple[int | None, str]:
        """Relay until the connection closes or the client stops; returns the close code and reason."""
        receiving = asyncio.create_task(self._receive(connection), name="relay-mac receive")
        keepalive = asyncio.create_task(self._keepalive(connection), name="relay-mac keepalive")
        stopping = asyncio.create_task(self._stop.wait(), name="relay-mac stop")
        tasks = [receiving, keepalive, stopping]
        if self._just_resumed:
            self._just_resumed = False
            tasks.append(asyncio.create_task(self._after_resume(), name="relay-mac after resume"))
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set() and not receiving.done():
                await self._say_goodbye(connection, receiving)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._connection = None
            if self.resume_token is None or self._stop.is_set():
                self.code = None
                self.resume_token = None
                self._forget_session("")
            # else: the session, its browsers and their keys wait for the resume.
        if self._stop.is_set():
            await connection.close()
        return connection.close_code, connection.close_reason or _default_close_reason(connection)

    async def _say_goodbye(self, connection: ClientConnection, receiving: asyncio.Task[None]) -> None:
        """A deliberate exit ends the session at once (`end`), so that no browser waits out a
        grace period for a Mac that is not coming back. Bounded: a silent relay only delays
        the exit by `end_timeout_seconds`."""
        self._ending = True
        self._ended.clear()
        try:
            await connection.send(json.dumps({"action": Action.END.value}))
        except ConnectionClosed:
            return
        ended = asyncio.create_task(self._ended.wait())
        try:
            await asyncio.wait(
                {ended, receiving}, timeout=self.settings.end_timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ended.cancel()

    async def _receive(self, connection: ClientConnection) -> None:
        early, self._before_resumed = self._before_resumed, []
        for message_before in early:
            await self._handle(message_before)
        # Ends when the connection closes; a drop without a close frame ends it the same way.
        with contextlib.suppress(ConnectionClosed):
            async for raw in connection:
                message = _decode(raw)
                if message is None:
                    self._sink(events.error(events.LOCAL_BAD_MESSAGE, "The relay sent a frame that is not JSON."))
                    continue
                await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == MessageType.PONG:
            self.pongs_received += 1
        elif kind == MessageType.PEER_JOINED and isinstance(peer := message.get("peer"), str):
            _discard(self.waiting, peer)
            if peer not in self.peers:
                self.peers.append(peer)
            self._sink(events.peer_joined(peer, list(self.peers)))
            self.links.joined(peer)
            await self._lock_if_first_is_in()
        elif kind == MessageType.PEER_LEFT and isinstance(peer := message.get("peer"), str):
            _discard(self.waiting, peer)
            _discard(self.peers, peer)
            _discard(self.away, peer)
            self.links.left(peer)
            self._sink(events.peer_left(peer, list(self.peers)))
        elif kind == MessageType.PEER_AWAY and isinstance(peer := message.get("peer"), str):
            # Its link (and keys) stay: what we send it meanwhile is held by the relay, sealed
            # as before, and it opens that with the keys it still has.
            _discard(self.peers, peer)
            if peer not in self.away:
                self.away.append(peer)
            self._sink(events.peer_away(peer, list(self.peers), list(self.away)))
        elif kind == MessageType.PEER_BACK and isinstance(peer := message.get("peer"), str):
            # It resumed; it starts a new key agreement itself (a `commit`).
            _discard(self.away, peer)
            if peer not in self.peers:
                self.peers.append(peer)
            self._sink(events.peer_back(peer, list(self.peers), list(self.away)))
            self.links.joined(peer)  # a no-op for a browser we knew
        elif kind in (MessageType.LOCKED, MessageType.UNLOCKED):
            self.locked = kind == MessageType.LOCKED
            self._sink(events.locked(self.locked))
        elif kind == MessageType.ENDED:
            self.resume_token = None
            self._sink(events.ended())
            self._ended.set()
        elif kind == MessageType.ERROR and self._ending and message.get("error") == ErrorCode.UNKNOWN_ACTION:
            self._ended.set()  # a relay without `end`: closing the connection ends the session there
        elif kind == MessageType.JOIN_REQUEST and isinstance(peer := message.get("peer"), str):
            if peer not in self.waiting:
                self.waiting.append(peer)
            self._sink(events.join_request(peer, message.get("ip"), message.get("user_agent"), list(self.waiting)))
        elif kind == MessageType.FRAME:
            await self.links.received(str(message.get("from")), message.get("data"))
        elif kind == MessageType.ERROR:
            self._sink(events.error(str(message.get("error", "error")), str(message.get("message", ""))))
        # Other types (and ones a newer relay may add) carry nothing the person needs.

    async def _lock_if_first_is_in(self) -> None:
        if not self.settings.lock_after_first or self._lock_requested or not (self.peers or self.away):
            return
        connection = self._connection
        if connection is None:
            return
        self._lock_requested = True
        with contextlib.suppress(ConnectionClosed):
            await connection.send(json.dumps({"action": Action.LOCK.value}))

    async def _keepalive(self, connection: ClientConnection) -> None:
        ping = json.dumps({"action": Action.PING.value})
        while True:
            await asyncio.sleep(self.settings.keepalive_seconds)
            try:
                await connection.send(ping)
            except ConnectionClosed:
                return
            self.pings_sent += 1

    async def _pump_input(self) -> None:
        async for line in self._lines:
            await self.send_line(line)
        if self._stop_at_end_of_input:
            self.stop("end of input")

    async def send_line(self, line: str) -> None:
        """Send one typed line; problems become error events, never exceptions."""
        try:
            outgoing = parse_input_line(line)
        except InputLineError as exc:
            self._sink(events.error(events.LOCAL_USAGE, str(exc)))
            return
        if outgoing is None:
            return
        if isinstance(outgoing, Command) and outgoing.name == "peers":
            encryption = {peer: self.links.security(peer) for peer in self.peers + self.away}
            self._sink(events.peers(list(self.peers), list(self.waiting), encryption, list(self.away)))
            return
        connection = self._connection
        if connection is None:
            self._sink(events.error(events.LOCAL_NOT_CONNECTED, "Not connected to the relay; nothing sent."))
            return
        if isinstance(outgoing, Command):
            await self._send_command(connection, outgoing)
            return
        if outgoing.to is None and not (self.peers or self.away):
            self._sink(events.error(events.LOCAL_NO_BROWSERS, "No browser has joined yet; nothing sent."))
            return
        # Checked here in clear so that the person hears at once; again once sealed.
        if not self._fits(outgoing.message()):
            return
        # An away browser is still in the session: the relay holds what is sent to it.
        await self.links.send_line(outgoing.to, outgoing.data, self.peers + self.away)

    def _fits(self, message: dict[str, Any]) -> bool:
        wire = json.dumps(message, ensure_ascii=False)
        if len(wire.encode("utf-8")) <= protocol.MAX_FRAME_BYTES:
            return True
        self._sink(
            events.error(
                events.LOCAL_TOO_LARGE,
                f"That line is too long to send (the limit is {protocol.MAX_FRAME_BYTES} bytes).",
            )
        )
        return False

    async def _send_data(self, to: str | None, data: Any) -> bool:
        """One `send` to the relay (for one browser, or all with `to` None); False, reported, if not sent."""
        message = Outgoing(data=data, to=to).message()
        connection = self._connection
        if connection is None:
            self._sink(events.error(events.LOCAL_NOT_CONNECTED, "Not connected to the relay; nothing sent."))
            return False
        if not self._fits(message):
            return False
        try:
            await connection.send(json.dumps(message, ensure_ascii=False))
        except ConnectionClosed:
            self._sink(events.error(events.LOCAL_NOT_CONNECTED, "The connection dropped; nothing sent."))
            return False
        return True

    async def _send_command(self, connection: ClientConnection, command: Command) -> None:
        # The relay answers admit with peer_joined and kick with peer_left (or an error),
        # which is what the person sees; nothing is reported here on success.
        message: dict[str, Any] = {"action": command.name}
        if command.peer is not None:
            message["peer"] = command.peer
        try:
            await connection.send(json.dumps(message))
        except ConnectionClosed:
            self._sink(events.error(events.LOCAL_NOT_CONNECTED, "The connection dropped; nothing sent."))

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


def _discard(items: list[str], item: str) -> None:
    if item in items:
        items.remove(item)


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def _close_text(closed: ConnectionClosed) -> str:
    if closed.rcvd is None:
        return "no close frame"
    return f"code {closed.rcvd.code}" + (f": {closed.rcvd.reason}" if closed.rcvd.reason else "")


def _default_close_reason(connection: ClientConnection) -> str:
    return "connection lost" if connection.close_code in (None, 1006) else "closed by the relay"
