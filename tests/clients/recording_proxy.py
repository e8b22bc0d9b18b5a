"""A WebSocket proxy between a client and the relay: records every message, and may rewrite one.

It stands where a hostile relay operator (or anyone on the relay's side of TLS) stands:
it sees each frame as the relay does and can change it. A real `websockets` server on
127.0.0.1 (free port) with its own event loop in a thread; each client connection gets
its own upstream connection to the relay, with the client's Origin passed on.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

UP = "up"  # client -> relay
DOWN = "down"  # relay -> client

# (role, direction, message) -> the message to pass on (the same object: unchanged).
# role: "mac" once the client registered, "browser" once it sent auth, "" before.
Rewrite = Callable[[str, str, dict[str, Any]], dict[str, Any]]


@dataclass
class Crossing:
    connection: int
    role: str
    direction: str
    text: str


class RecordingProxy:
    def __init__(self, upstream_url: str, rewrite: Rewrite | None = None) -> None:
        self.upstream_url = upstream_url
        self.rewrite = rewrite
        self.crossings: list[Crossing] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recording-proxy", daemon=True)
        self._server: Server | None = None
        self._count = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def all_text(self) -> str:
        with self._lock:
            return "\n".join(crossing.text for crossing in self.crossings)

    def of(self, role: str, direction: str) -> list[dict[str, Any]]:
        with self._lock:
            chosen = [c for c in self.crossings if c.role == role and c.direction == direction]
        return [json.loads(c.text) for c in chosen]

    async def _handle(self, client: ServerConnection) -> None:
        index = self._count
        self._count += 1
        role = [""]
        origin = client.request.headers.get("Origin") if client.request else None
        extra: dict[str, Any] = {"origin": origin} if origin else {}
        try:
            async with connect(self.upstream_url, open_timeout=30, **extra) as relay:
                await asyncio.gather(
                    self._pump(client, relay, index, role, UP),
                    self._pump(relay, client, index, role, DOWN),
                )
        except (ConnectionClosed, OSError):
            pass

    async def _pump(
        self,
        source: ServerConnection | ClientConnection,
        target: ServerConnection | ClientConnection,
        index: int,
        role: list[str],
        direction: str,
    ) -> None:
        try:
            async for raw in source:
                text = raw if isinstance(raw, str) else raw.decode()
                if direction == UP and not role[0]:
                    action = json.loads(text).get("action")
                    role[0] = {"register": "mac", "auth": "browser"}.get(action, "")
                if self.rewrite is not None:
                    message = json.loads(text)
                    rewritten = self.rewrite(role[0], direction, message)
                    if rewritten is not message:
                        text = json.dumps(rewritten)
                with self._lock:
                    self.crossings.append(Crossing(index, role[0], direction, text))
                await target.send(text)
        except ConnectionClosed:
            pass
        finally:
            await target.close()
