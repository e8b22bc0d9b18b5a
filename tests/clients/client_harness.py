"""Driving a MacClient in-process: a recording event sink and a feedable input source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from relay import protocol
from relay_mac import e2e
from relay_mac.backoff import BackoffPolicy
from relay_mac.client import ClientSettings, MacClient
from relay_mac.events import Event

from tests.clients.scripted_relay import ScriptedRelay

WAIT_SECONDS = 10.0


class Recorder:
    """The event sink: keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["event"] == kind]

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def wait_for(self, kind: str, count: int = 1, **fields: Any) -> Event:
        """The `count`-th event of `kind` whose fields match."""

        def matching() -> list[Event]:
            return [e for e in self.of(kind) if all(e.get(k) == v for k, v in fields.items())]

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(matching()) >= count), WAIT_SECONDS)
        return matching()[count - 1]


class Lines:
    """The input source: lines a test types, then optionally the end of input."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def type(self, line: str) -> None:
        self._queue.put_nowait(line + "\n")

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[str]:
        while (line := await self._queue.get()) is not None:
            yield line


async def in_thread(condition_waiter: Callable[[], None]) -> None:
    """Run a blocking wait (the scripted relay's) without stalling the client's loop."""
    await asyncio.to_thread(condition_waiter)


FAST_BACKOFF = BackoffPolicy(initial_seconds=0.01, max_seconds=0.05)


def settings_for(relay: ScriptedRelay, **overrides: Any) -> ClientSettings:
    values: dict[str, Any] = {"url": relay.url, "client_id": "mac-test", "backoff": FAST_BACKOFF}
    values.update(overrides)
    return ClientSettings(**values)


Scenario = Callable[[MacClient, Recorder, Lines], Awaitable[None]]


def run_scenario(settings: ClientSettings, scenario: Scenario, **client_options: Any) -> Recorder:
    """Run the client while `scenario` drives it, then stop it and wait for it to finish."""

    async def main() -> Recorder:
        recorder = Recorder()
        lines = Lines()
        client = MacClient(settings, recorder, lines.stream(), **client_options)
        running = asyncio.create_task(client.run())
        try:
            await scenario(client, recorder, lines)
        finally:
            client.stop("test over")
            await asyncio.wait_for(running, 10)
        return recorder

    return asyncio.run(main())


# ---- playing a page with the e2e layer -------------------------------------------------

CODE = "K7M2QX"  # the scripted relay's first code


def sends_to(relay: ScriptedRelay, peer: str) -> list[Any]:
    return [r.message["data"] for r in relay.messages("send") if r.message.get("to") == peer]


async def wait_for_send(relay: ScriptedRelay, peer: str, count: int) -> Any:
    await in_thread(lambda: relay.wait_until(lambda: len(sends_to(relay, peer)) >= count))
    return sends_to(relay, peer)[count - 1]


async def handshake(relay: ScriptedRelay, recorder: Recorder, peer: str, sent_before: int = 0) -> e2e.Channel:
    """Play a page with the layer: commit, take the mac's key, reveal."""
    browser = e2e.BrowserHandshake(CODE, peer)
    relay.push(protocol.frame(peer, browser.commit_message()))
    key = await wait_for_send(relay, peer, sent_before + 1)
    assert key["hs"] == "key"
    reveal, channel = browser.on_key(key)
    relay.push(protocol.frame(peer, reveal))
    return channel
