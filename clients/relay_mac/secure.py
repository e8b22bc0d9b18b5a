"""The mac-client's side of the e2e layer: one key agreement per browser, and what to do
with each frame received and each line typed.

A browser is *unknown* when it joins. A page with the layer starts a handshake at once
(`commit`); the browser is then *handshaking*, and *encrypted* after its `reveal`. A
browser that sends a plain frame first, or no commit within `wait_seconds`, is *plain*:
it is told nothing, frames to it go in clear, and the person is told "not encrypted".
A plain browser may still start a handshake later (an upgrade); nothing ever goes back
from encrypted to plain: a plain frame from such a browser is rejected, since anyone
who runs the relay could have written it. Lines typed for a browser that is not settled
yet wait (in order) until it is.

A new agreement (the browser's new `commit`, or our `rekey` after we resumed) keeps the
previous keys for receiving until it completes: frames sealed before it, such as those
the relay held while one side was away, still open. They are dropped once the new keys
exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from relay.protocol import ERROR_MESSAGES, ErrorCode

from relay_mac import e2e, events
from relay_mac.events import Event

DEFAULT_WAIT_SECONDS = 5.0

# (to, data) -> whether it went out; the client reports any failure itself.
SendData = Callable[[str | None, Any], Awaitable[bool]]
EventSink = Callable[[Event], None]


class LinkState(StrEnum):
    UNKNOWN = "unknown"
    HANDSHAKING = "handshaking"
    ENCRYPTED = "encrypted"
    PLAIN = "plain"
    # It committed but its handshake did not complete: it speaks the layer, so nothing goes
    # to it in clear and plain frames from it are rejected, until it commits again.
    FAILED = "failed"


# Why a browser is not encrypted (the `reason` of an `encryption` event).
PLAIN_NO_HANDSHAKE = "no_handshake"  # it sent no commit in time: a client without the layer
PLAIN_FIRST_FRAME = "plain_frame"  # its first frame was plain
PLAIN_E2E_OFF = "e2e_off"  # relay-mac --no-e2e
PLAIN_HANDSHAKE_FAILED = "handshake_failed"

PLAIN_TEXT = {
    PLAIN_NO_HANDSHAKE: "it did not start an encryption handshake (a client without end-to-end encryption)",
    PLAIN_FIRST_FRAME: "it sent a plain frame (a client without end-to-end encryption)",
    PLAIN_E2E_OFF: "end-to-end encryption is off (--no-e2e)",
    PLAIN_HANDSHAKE_FAILED: "its encryption handshake did not complete",
}


@dataclass
class Link:
    peer: str
    state: LinkState = LinkState.UNKNOWN
    handshake: e2e.MacHandshake | None = None
    channel: e2e.Channel | None = None
    # The keys of the agreement being replaced: only for opening frames sealed before it.
    previous: e2e.Channel | None = None
    waiting_lines: list[Any] = field(default_factory=list)
    # Sealed frames that overtook the reveal (the relay does not keep order): opened once
    # the keys are there, rejected if they never come.
    held_sealed: list[Any] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class SecureLinks:
    """Every browser's link in the current session."""

    def __init__(self, *, enabled: bool, wait_seconds: float, sink: EventSink, send: SendData) -> None:
        self.enabled = enabled
        self.wait_seconds = wait_seconds
        self._sink = sink
        self._send = send
        self._code = ""
        self._links: dict[str, Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- session and peers -----------------------------------------------------------------

    def reset(self, code: str) -> None:
        """A new session (or none): every key agreement is discarded."""
        for link in self._links.values():
            link.cancel_timer()
        self._links = {}
        self._code = code

    def joined(self, peer: str) -> None:
        if peer in self._links:
            return
        link = self._links[peer] = Link(peer)
        if not self.enabled:
            self._settle_plain(link, PLAIN_E2E_OFF)
            return
        link.timer = asyncio.get_running_loop().call_later(self.wait_seconds, self._wait_over, peer)

    def left(self, peer: str) -> None:
        link = self._links.pop(peer, None)
        if link is not None:
            link.cancel_timer()
            if link.waiting_lines:
                self._sink(
                    events.error(
                        events.LOCAL_NOT_CONNECTED,
                        f"Browser {peer} left before its encryption was set up; "
                        f"{len(link.waiting_lines)} line(s) not sent to it.",
                    )
                )

    def security(self, peer: str) -> dict[str, Any]:
        link = self._links.get(peer)
        if link is None or link.state in (LinkState.UNKNOWN, LinkState.HANDSHAKING, LinkState.FAILED):
            return {"encrypted": None, "sas": None}
        return {"encrypted": link.state == LinkState.ENCRYPTED, "sas": link.channel.sas if link.channel else None}

    def link(self, peer: str) -> Link | None:
        return self._links.get(peer)

    # ---- receiving ---------------------------------------------------------------------------

    async def received(self, peer: str, data: Any) -> None:
        link = self._links.get(peer)
        if link is None:  # a frame from a browser whose peer_joined we have not seen: treat as just joined
            self.joined(peer)
            link = self._links[peer]
        kind = e2e.kind_of(data)
        if kind == e2e.Kind.PLAIN:
            if link.state in (LinkState.ENCRYPTED, LinkState.HANDSHAKING, LinkState.FAILED):
                self._reject(peer, e2e.Reason.NOT_ENCRYPTED)
                return
            if link.state == LinkState.UNKNOWN:
                await self._settle_plain_and_flush(link, PLAIN_FIRST_FRAME)
            self._sink(events.frame(peer, data, encrypted=False))
        elif kind == e2e.Kind.HANDSHAKE:
            await self._handshake_step(link, data)
        else:
            await self._sealed(link, data)

    async def rekey(self, peer: str) -> None:
        """Ask an encrypted browser for a new agreement (we resumed: both sides start over).
        Lines for it wait for the new keys; the old ones still open what was sealed before."""
        link = self._links.get(peer)
        if not self.enabled or link is None or link.state in (LinkState.UNKNOWN, LinkState.PLAIN):
            return
        if link.state == LinkState.HANDSHAKING and link.handshake is not None:
            # We answered its commit (one the relay held for us, say): a fresh agreement is
            # already under way, and a rekey now would make its reveal arrive out of turn.
            return
        link.cancel_timer()
        link.previous = link.channel or link.previous
        link.handshake, link.channel, link.state = None, None, LinkState.HANDSHAKING
        link.held_sealed = []
        link.timer = asyncio.get_running_loop().call_later(self.wait_seconds, self._wait_over, peer)
        await self._send(peer, e2e.rekey_message())

    def _open_with_previous(self, link: Link, data: Any) -> bool:
        if link.previous is None:
            return False
        try:
            opened = link.previous.open(data)
        except e2e.Rejected:
            return False  # not sealed with the old keys: perhaps with the new ones, once they exist
        self._sink(events.frame(link.peer, opened, encrypted=True))
        return True

    async def _sealed(self, link: Link, data: Any) -> None:
        if link.state == LinkState.HANDSHAKING:
            if self._open_with_previous(link, data):
                return
            if len(link.held_sealed) < e2e.REPLAY_WINDOW:
                link.held_sealed.append(data)
                return
        if link.channel is None or link.state != LinkState.ENCRYPTED:
            self._reject(link.peer, e2e.Reason.NO_KEYS)
            if self.enabled and link.state != LinkState.HANDSHAKING:
                # Its keys are gone here (we restarted, or a late frame): ask for a new agreement.
                await self._send(link.peer, e2e.rekey_message())
            return
        try:
            opened = link.channel.open(data)
        except e2e.Rejected as rejected:
            self._reject(link.peer, rejected.reason)
            return
        self._sink(events.frame(link.peer, opened, encrypted=True))

    async def _handshake_step(self, link: Link, message: dict[str, Any]) -> None:
        try:
            step = e2e.handshake_step(message)
        except e2e.Rejected as rejected:
            self._reject(link.peer, rejected.reason)
            return
        if step == e2e.Step.COMMIT:
            if not self.enabled:
                await self._send(link.peer, e2e.decline_message())
                return
            handshake = e2e.MacHandshake(self._code, link.peer)
            try:
                answer = handshake.on_commit(message)
            except e2e.Rejected as rejected:
                self._reject(link.peer, rejected.reason)
                return
            # A new commit starts over: its keys are replaced once the new agreement completes.
            link.cancel_timer()
            link.previous = link.channel or link.previous
            link.handshake, link.channel, link.state = handshake, None, LinkState.HANDSHAKING
            link.held_sealed = []
            link.timer = asyncio.get_running_loop().call_later(self.wait_seconds, self._wait_over, link.peer)
            await self._send(link.peer, answer)
        elif step == e2e.Step.REVEAL and link.handshake is not None and link.state == LinkState.HANDSHAKING:
            try:
                channel = link.handshake.on_reveal(message)
            except e2e.Rejected as rejected:
                self._reject(link.peer, rejected.reason)
                return
            link.cancel_timer()
            link.handshake, link.channel, link.state = None, channel, LinkState.ENCRYPTED
            link.previous = None
            self._sink(events.encryption(link.peer, encrypted=True, sas=e2e.spaced_sas(channel.sas)))
            held, link.held_sealed = link.held_sealed, []
            for sealed in held:
                await self._sealed(link, sealed)
            await self._flush(link)
        else:
            # key, rekey and decline are the mac's to send; a reveal out of turn is stale.
            self._reject(link.peer, e2e.Reason.BAD_HANDSHAKE)

    def _reject(self, peer: str, reason: e2e.Reason) -> None:
        self._sink(events.rejected(peer, reason.value, e2e.REASON_TEXT[reason]))

    # ---- settling --------------------------------------------------------------------------------

    def _wait_over(self, peer: str) -> None:
        link = self._links.get(peer)
        if link is None:
            return
        link.timer = None
        if link.state == LinkState.UNKNOWN:
            self._spawn(self._settle_plain_and_flush(link, PLAIN_NO_HANDSHAKE))
        elif link.state == LinkState.HANDSHAKING:
            # It committed, so it speaks the layer and would reject a plain frame: nothing
            # goes to it in clear. A new commit from it starts over.
            link.handshake = None
            link.previous = None
            link.state = LinkState.FAILED
            for _ in link.held_sealed:
                self._reject(peer, e2e.Reason.NO_KEYS)
            link.held_sealed = []
            dropped, link.waiting_lines = link.waiting_lines, []
            self._sink(
                events.error(
                    events.LOCAL_E2E_FAILED,
                    f"The encryption handshake with browser {peer} did not complete"
                    + (f"; {len(dropped)} line(s) not sent to it." if dropped else "."),
                )
            )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle_plain(self, link: Link, reason: str) -> None:
        link.cancel_timer()
        link.state = LinkState.PLAIN
        self._sink(events.encryption(link.peer, encrypted=False, reason=reason, message=PLAIN_TEXT[reason]))

    async def _settle_plain_and_flush(self, link: Link, reason: str) -> None:
        self._settle_plain(link, reason)
        await self._flush(link)

    async def _flush(self, link: Link) -> None:
        lines, link.waiting_lines = link.waiting_lines, []
        for data in lines:
            await self._send_to(link, data)

    # ---- sending ------------------------------------------------------------------------------------

    async def send_line(self, to: str | None, data: Any, peers: list[str]) -> None:
        """A typed line for one browser (`to`) or every browser in `peers`."""
        if not self.enabled:
            if await self._send(to, data):
                self._sink(events.sent(to, data, encrypted=False))
            return
        # Each browser has its own keys, so a line for everyone goes to each browser in turn.
        for peer in [to] if to is not None else peers:
            link = self._links.get(peer)
            if link is None:
                # Without keys nothing may go out in clear: it could reach a page that expects
                # them. A browser we have not seen join is, for us, not in the session.
                self._sink(events.error(ErrorCode.UNKNOWN_PEER.value, ERROR_MESSAGES[ErrorCode.UNKNOWN_PEER]))
                continue
            await self._send_to(link, data)

    async def _send_to(self, link: Link, data: Any) -> None:
        if link.state == LinkState.FAILED:
            self._sink(
                events.error(
                    events.LOCAL_E2E_FAILED,
                    f"Encryption with browser {link.peer} failed; nothing sent to it (it can pair again).",
                )
            )
            return
        if link.state in (LinkState.UNKNOWN, LinkState.HANDSHAKING):
            link.waiting_lines.append(data)
            return
        if link.state == LinkState.ENCRYPTED and link.channel is not None:
            if await self._send(link.peer, link.channel.seal(data)):
                self._sink(events.sent(link.peer, data, encrypted=True))
            return
        if await self._send(link.peer, data):
            self._sink(events.sent(link.peer, data, encrypted=False))

    async def close(self) -> None:
        self.reset("")
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
