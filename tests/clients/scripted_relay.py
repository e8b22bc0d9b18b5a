"""A real WebSocket server that plays the relay for the cases the real one cannot stage.

relay-local is the relay for end-to-end tests. This one exists for what a healthy
relay never does on cue: drop a mac-client's connection, refuse to register, send a
malformed code, or stop listening so reconnects are refused. It is a real
`websockets` server on 127.0.0.1 (free port), running its own event loop in a
thread so both async tests and subprocess tests can talk to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from relay import protocol
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@dataclass
class Received:
    connection: int
    message: dict[str, Any]


@dataclass
class RelayScript:
    # One code per registration, in order.
    codes: list[str] = field(default_factory=lambda: ["K7M2QX", "ABCDEF", "GHJKMN", "PQRSTU", "VWXYZ2"])
    # "ok": answer with the next code; "error": refuse; "malformed": a code outside
    # the alphabet; "silent": never answer.
    register_reply: str = "ok"
    # Codes a browser's auth succeeds with (anything else is invalid_code).
    accept_codes: frozenset[str] = frozenset({"K7M2QX"})
    # Answer a page's e2e commit as `relay-mac --no-e2e` would (decline), so that the page
    # settles on "not encrypted" at once; False: say nothing, like a mac without the layer.
    decline_e2e: bool = True
    # Issue 11: hand out resume tokens to a register with "resumable": true (and to
    # browsers' auths then); False plays a relay without resumable sessions.
    resumable: bool = True
    # "ok": a resume with the latest token of its holder is `resumed`; "invalid": every
    # resume is `invalid_token`; "silent": never answer.
    resume_reply: str = "ok"
    # What `resumed` lists for a mac-client (objects {"peer", "state"}).
    resume_peers: list[dict[str, str]] = field(default_factory=list)
    # The mac-client's state that `resumed` gives a browser: "present" or "away".
    mac_state: str = "present"
    # Messages sent right after the next `resumed` (the frames the relay held), then cleared.
    held: list[dict[str, Any]] = field(default_factory=list)
    # Messages sent right before the next `resumed` (a frame that the relay posted straight
    # to the resuming connection: docs/PROTOCOL.md, Held frames), then cleared.
    before_resumed: list[dict[str, Any]] = field(default_factory=list)
    # Answer `end` with `ended` (False: say nothing, as a relay that lost the message).
    answer_end: bool = True


class ScriptedRelay:
    def __init__(self, script: RelayScript | None = None) -> None:
        self.script = script or RelayScript()
        self._codes: Iterator[str] = iter(self.script.codes)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-relay", daemon=True)
        self._server: Server | None = None
        self._changed = threading.Condition()
        self._connections: list[ServerConnection] = []
        self.received: list[Received] = []
        self.close_codes: dict[int, int | None] = {}
        self.port = 0
        # The latest resume token of each role, and the session code the mac-client holds.
        self._tokens: dict[str, str] = {}
        self._token_count = 0
        self.code = ""

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> ScriptedRelay:
        self._thread.start()
        self._server = self._call(self._start())
        return self

    async def _start(self) -> Server:
        server = await serve(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop_listening(self) -> None:
        """Close the listening socket and every connection: later connects are refused."""
        self._call(self._stop_listening())

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def shutdown(self) -> None:
        if self._server is not None:
            self.stop_listening()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ScriptedRelay:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    # -- the relay's side of the protocol --------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        with self._changed:
            index = len(self._connections)
            self._connections.append(connection)
            self._changed.notify_all()
        try:
            async for raw in connection:
                message = json.loads(raw)
                with self._changed:
                    self.received.append(Received(index, message))
                    self._changed.notify_all()
                await self._answer(connection, message)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self.close_codes[index] = connection.close_code
                self._changed.notify_all()

    def _new_token(self, role: str) -> str:
        self._token_count += 1
        token = f"tok-{role}-{self._token_count}"
        self._tokens[role] = token
        return token

    def token(self, role: str) -> str:
        """The latest token handed to `role` ("mac" or "browser")."""
        with self._changed:
            return self._tokens[role]

    async def _answer(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == protocol.Action.REGISTER:
            reply = self.script.register_reply
            if reply == "ok":
                self.code = next(self._codes)
                registered = protocol.registered(self.code)
                if self.script.resumable and message.get("resumable") is True:
                    registered["resume_token"] = self._new_token("mac")
                await connection.send(protocol.encode(registered))
            elif reply == "error":
                await connection.send(protocol.encode(protocol.error(protocol.ErrorCode.INTERNAL_ERROR)))
            elif reply == "malformed":
                await connection.send(protocol.encode(protocol.registered("O0I1L")))
        elif action == protocol.Action.AUTH:
            code = protocol.normalise_code(str(message.get("code", "")))
            if code in self.script.accept_codes:
                authenticated = protocol.authenticated(code, "pbrowser1")
                if self.script.resumable:
                    authenticated["resume_token"] = self._new_token("browser")
                await connection.send(protocol.encode(authenticated))
            else:
                await connection.send(protocol.encode(protocol.error(protocol.ErrorCode.INVALID_CODE)))
        elif action == protocol.Action.ADMIT:
            await connection.send(protocol.encode(protocol.peer_joined(str(message.get("peer")))))
        elif action == protocol.Action.KICK:
            await connection.send(protocol.encode(protocol.peer_left(str(message.get("peer")))))
        elif action == protocol.Action.PING:
            await connection.send(protocol.encode(protocol.pong()))
        elif action == protocol.Action.RESUME:
            await self._resume(connection, message.get("token"))
        elif action == protocol.Action.LOCK:
            await connection.send(protocol.encode({"type": protocol.MessageType.LOCKED.value}))
        elif action == protocol.Action.UNLOCK:
            await connection.send(protocol.encode({"type": protocol.MessageType.UNLOCKED.value}))
        elif action == protocol.Action.END and self.script.answer_end:
            await connection.send(protocol.encode({"type": protocol.MessageType.ENDED.value}))
        elif action == protocol.Action.LEAVE:
            await connection.send(protocol.encode({"type": protocol.MessageType.LEFT.value}))
        elif action == protocol.Action.SEND and self.script.decline_e2e and _is_e2e_commit(message.get("data")):
            decline = {"e2e": 1, "hs": "decline"}
            await connection.send(protocol.encode(protocol.frame(protocol.MAC_PEER, decline)))

    async def _resume(self, connection: ServerConnection, token: Any) -> None:
        reply = self.script.resume_reply
        if reply == "silent":
            return
        role = next((r for r, t in self._tokens.items() if t == token), None)
        if reply != "ok" or role is None:
            await connection.send(protocol.encode(protocol.error(protocol.ErrorCode.INVALID_TOKEN)))
            return
        resumed: dict[str, Any] = {
            "type": protocol.MessageType.RESUMED.value,
            "role": role,
            "code": self.code or next(iter(self.script.accept_codes)),
            "peers": list(self.script.resume_peers)
            if role == "mac"
            else [{"peer": protocol.MAC_PEER, "state": self.script.mac_state}],
            "resume_token": self._new_token(role),
        }
        if role == "browser":
            resumed["peer"] = "pbrowser1"
        early, self.script.before_resumed = self.script.before_resumed, []
        for message in early:
            await connection.send(protocol.encode(message))
        await connection.send(protocol.encode(resumed))
        held, self.script.held = self.script.held, []
        for message in held:
            await connection.send(protocol.encode(message))

    # -- what tests do ---------------------------------------------------------

    def push(self, message: dict[str, Any], connection: int = -1) -> None:
        """Send a relay -> client message on a connection (the latest by default)."""
        self._call(self._connections[connection].send(protocol.encode(message)))

    def push_raw(self, text: str, connection: int = -1) -> None:
        self._call(self._connections[connection].send(text))

    def drop(self, connection: int = -1) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        target = self._connections[connection]
        self._loop.call_soon_threadsafe(target.transport.abort)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout=timeout):
                raise AssertionError("the scripted relay did not see what the test waited for")

    def messages(self, action: str) -> list[Received]:
        with self._changed:
            return [r for r in self.received if r.message.get("action") == action]

    def user_sends(self) -> list[Received]:
        """`send` messages other than the e2e layer's handshake."""
        return [r for r in self.messages("send") if not _is_e2e(r.message.get("data"))]

    def connection_count(self) -> int:
        with self._changed:
            return len(self._connections)


def _is_e2e(data: Any) -> bool:
    return isinstance(data, dict) and "e2e" in data


def _is_e2e_commit(data: Any) -> bool:
    return _is_e2e(data) and data.get("hs") == "commit"
