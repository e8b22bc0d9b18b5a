"""Resumable sessions through relay-local over real sockets (issue 11).

relay-local closes every connection after --max-connection-duration with 1001, as API
Gateway does after two hours; the session survives each forced close, and frames sent
to the side that is away are held and delivered right after it resumes, in order and
once each. A late $disconnect (relay-local's --disconnect-delay) leaves a post to the
gone connection meeting a 410 first, and must not throw out the connection that resumed
meanwhile. The grace timer runs through relay-local's SQS event source: an away
mac-client's session ends, and a silent browser is told, without sending anything.
Frames beyond MaxHeldFrames are refused with peer_away; the resumed mac-client sees
each browser's state; leave and end work in v1 sessions too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from relay import protocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.files import ROOT
from tests.support.relay_local import EFFECT_TIMEOUT, RelayLocalProcess, start_relay_local

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_CONNECTION_SECONDS = 4.0
# The browser opens this long after the mac-client, so that their forced closes alternate
# with margin: the mac-client's first, then the browser's, each while the other is open.
BROWSER_OFFSET_SECONDS = 1.5
ROUNDS = 3
GRACE_SECONDS = 2
# docs/PROTOCOL.md: an away side's grace ends at most about 15 s late.
GRACE_LATENESS_SECONDS = 15.0


def _serving(*overrides: str, extra: tuple[str, ...] = ()) -> Iterator[RelayLocalProcess]:
    """The project's relay for one test (`yield from` it in a fixture); it must stop cleanly."""
    process = start_relay_local(
        "--template",
        str(ROOT / "template.yaml"),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--log-level",
        "WARNING",
        *extra,
        "--parameter-overrides",
        "AuthFailuresPerIp=10000",
        *overrides,
    )
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture
def short_connections_relay() -> Iterator[RelayLocalProcess]:
    yield from _serving(extra=("--max-connection-duration", str(MAX_CONNECTION_SECONDS)))


@pytest.fixture
def short_grace_relay() -> Iterator[RelayLocalProcess]:
    yield from _serving(f"ResumeGraceSeconds={GRACE_SECONDS}")


class Side:
    """One end (mac-client or browser) whose connection may be closed and resumed."""

    def __init__(self, relay: RelayLocalProcess) -> None:
        self.relay = relay
        self.ws: ClientConnection | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_codes: list[int | None] = []
        self.token = ""
        self.frames: list[Any] = []
        self.received: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await connect(self.relay.ws_url, open_timeout=EFFECT_TIMEOUT)
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                message = json.loads(text)
                self.received.append(message)
                if message.get("type") == "frame":
                    self.frames.append(message["data"])
                await self.inbox.put(message)
        except ConnectionClosed:
            pass
        self.close_codes.append(ws.close_code)
        self.closed.set()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))

    async def next(self, message_type: str, timeout: float = EFFECT_TIMEOUT) -> dict[str, Any]:
        """The next message of this type; every other type in between is skipped."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), timeout)
            if message.get("type") == message_type:
                return message
            assert message.get("type") != "error", message

    async def forced_close(self) -> int | None:
        await asyncio.wait_for(self.closed.wait(), MAX_CONNECTION_SECONDS + EFFECT_TIMEOUT)
        return self.close_codes[-1]

    async def resume(self) -> dict[str, Any]:
        await self.open()
        await self.send({"action": "resume", "token": self.token})
        resumed = await self.next("resumed")
        self.token = resumed["resume_token"]
        return resumed

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader


def test_a_pairing_survives_forced_closes_with_frames_both_ways_in_order_once_each(
    short_connections_relay: RelayLocalProcess,
) -> None:
    relay = short_connections_relay

    async def scenario() -> tuple[Side, Side, list[Any], list[Any], str]:
        mac, browser = Side(relay), Side(relay)
        await mac.open()
        await mac.send({"action": "register", "client_id": "mac", "resumable": True})
        registered = await mac.next("registered")
        code, mac.token = registered["code"], registered["resume_token"]
        await asyncio.sleep(BROWSER_OFFSET_SECONDS)
        await browser.open()
        await browser.send({"action": "auth", "code": code})
        authenticated = await browser.next("authenticated")
        peer, browser.token = authenticated["peer"], authenticated["resume_token"]
        await mac.next("peer_joined")
        to_mac: list[Any] = []
        to_browser: list[Any] = []
        for round_number in range(ROUNDS):
            # The mac-client's connection is closed first; the browser keeps sending.
            assert await mac.forced_close() == 1001
            assert (await browser.next("peer_away"))["peer"] == "mac"
            # One frame at a time: two sent back to back run concurrently, in no set order.
            to_mac.append(f"held for mac {round_number}")
            await browser.send({"action": "send", "data": to_mac[-1]})
            resumed = await mac.resume()
            assert (resumed["role"], resumed["code"]) == ("mac", code)
            assert [p["peer"] for p in resumed["peers"]] == [peer]
            assert (await browser.next("peer_back"))["peer"] == "mac"
            to_browser.append(f"live to browser {round_number}")
            await mac.send({"action": "send", "data": to_browser[-1]})
            to_mac.append(f"live to mac {round_number}")
            await browser.send({"action": "send", "data": to_mac[-1]})
            # Then the browser's; the mac-client's frames for it are held.
            assert await browser.forced_close() == 1001
            assert (await mac.next("peer_away"))["peer"] == peer
            to_browser.append(f"held for browser {round_number}")
            await mac.send({"action": "send", "to": peer, "data": to_browser[-1]})
            resumed = await browser.resume()
            assert (resumed["role"], resumed["code"], resumed["peer"]) == ("browser", code, peer)
            assert (await mac.next("peer_back"))["peer"] == peer
        # One last frame each way, and then everything sent has arrived.
        to_browser.append("last to browser")
        await mac.send({"action": "send", "data": to_browser[-1]})
        to_mac.append("last to mac")
        await browser.send({"action": "send", "data": to_mac[-1]})
        while to_mac[-1] not in mac.frames:
            await mac.next("frame")
        while to_browser[-1] not in browser.frames:
            await browser.next("frame")
        await mac.send({"action": "end"})
        await mac.next("ended")
        await mac.close()
        await browser.close()
        return mac, browser, to_mac, to_browser, code

    mac, browser, to_mac, to_browser, _ = asyncio.run(scenario())
    assert mac.frames == to_mac
    assert browser.frames == to_browser
    assert len(mac.close_codes) >= ROUNDS + 1
    assert relay.active_sessions() == 0


def test_an_away_mac_clients_session_ends_at_grace_and_a_silent_browser_is_told(
    short_grace_relay: RelayLocalProcess,
) -> None:
    relay = short_grace_relay

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        mac, browser = Side(relay), Side(relay)
        await mac.open()
        await mac.send({"action": "register", "client_id": "mac", "resumable": True})
        registered = await mac.next("registered")
        mac.token = registered["resume_token"]
        await browser.open()
        await browser.send({"action": "auth", "code": registered["code"]})
        await browser.next("authenticated")
        await mac.close()  # a close without `end`: away, not gone
        await browser.next("peer_away")
        counted_while_away = relay.active_sessions()
        # The browser sends nothing; the grace timer tells it.
        closed = await browser.next("session_closed", timeout=GRACE_SECONDS + GRACE_LATENESS_SECONDS)
        late = Side(relay)
        await late.open()
        await late.send({"action": "resume", "token": mac.token})
        refused = await late.next("error")
        await late.close()
        await browser.close()
        return closed, refused, counted_while_away

    closed, refused, counted_while_away = asyncio.run(scenario())
    assert closed == {"type": "session_closed"}
    assert refused["error"] == "invalid_token"
    assert counted_while_away == 1
    assert relay.active_sessions() == 0


def test_an_away_browser_is_removed_at_grace_and_the_mac_client_told(short_grace_relay: RelayLocalProcess) -> None:
    relay = short_grace_relay

    async def scenario() -> tuple[str, dict[str, Any]]:
        mac, browser = Side(relay), Side(relay)
        await mac.open()
        await mac.send({"action": "register", "client_id": "mac", "resumable": True})
        registered = await mac.next("registered")
        await browser.open()
        await browser.send({"action": "auth", "code": registered["code"]})
        peer = (await browser.next("authenticated"))["peer"]
        await mac.next("peer_joined")
        await browser.close()
        assert (await mac.next("peer_away"))["peer"] == peer
        left = await mac.next("peer_left", timeout=GRACE_SECONDS + GRACE_LATENESS_SECONDS)
        await mac.send({"action": "end"})
        await mac.next("ended")
        await mac.close()
        return peer, left

    peer, left = asyncio.run(scenario())
    assert left == {"type": "peer_left", "peer": peer}


@pytest.fixture
def relay_with_limits() -> Iterator[RelayLocalProcess]:
    yield from _serving("MaxAuthAttempts=5")


def test_a_token_resumes_once_and_end_voids_every_token_while_a_browser_is_away(
    relay_with_limits: RelayLocalProcess,
) -> None:
    relay = relay_with_limits

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], int]:
        mac, browser = Side(relay), Side(relay)
        await mac.open()
        await mac.send({"action": "register", "client_id": "mac", "resumable": True})
        registered = await mac.next("registered")
        await browser.open()
        await browser.send({"action": "auth", "code": registered["code"]})
        first_token = (await browser.next("authenticated"))["resume_token"]
        await browser.close()
        await mac.next("peer_away")
        browser.token = first_token
        resumed = await browser.resume()
        reused = await _attempt(relay, first_token)  # single use: the resume above spent it
        await browser.close()
        await mac.next("peer_away")
        await mac.send({"action": "end"})
        ended = await mac.next("ended")
        after_end = await _attempt(relay, browser.token)  # the browser's latest token, void with the session
        await mac.close()
        return resumed, reused, ended, after_end, relay.active_sessions()

    resumed, reused, ended, after_end, active = asyncio.run(scenario())
    assert resumed["type"] == "resumed"
    assert reused["error"] == "invalid_token"
    assert ended == {"type": "ended"}
    assert after_end["error"] == "invalid_token"
    assert active == 0


def test_bad_tokens_count_against_the_guessing_limit_and_close_the_connection(
    relay_with_limits: RelayLocalProcess,
) -> None:
    relay = relay_with_limits

    async def scenario() -> tuple[list[str], list[int | None]]:
        guesser = Side(relay)
        await guesser.open()
        errors: list[str] = []
        for n in range(5):
            await guesser.send({"action": "resume", "token": f"AAAAAA.mac.not-a-token-{n}"})
            errors.append((await guesser.next("error"))["error"])
        await asyncio.wait_for(guesser.closed.wait(), EFFECT_TIMEOUT)
        return errors, guesser.close_codes

    errors, close_codes = asyncio.run(scenario())
    assert errors == ["invalid_token"] * 4 + ["too_many_attempts"]
    assert len(close_codes) == 1


# ---- what only a real gateway shows: races, a 410 before $disconnect, a late $disconnect ----


@pytest.fixture
def relay() -> Iterator[RelayLocalProcess]:
    yield from _serving()


async def _paired(relay: RelayLocalProcess) -> tuple[Side, Side, str, str]:
    """A resumable session with one browser: (mac, browser, code, the browser's peer id)."""
    mac, browser = Side(relay), Side(relay)
    await mac.open()
    await mac.send({"action": "register", "client_id": "mac", "resumable": True})
    registered = await mac.next("registered")
    code, mac.token = registered["code"], registered["resume_token"]
    await browser.open()
    await browser.send({"action": "auth", "code": code})
    authenticated = await browser.next("authenticated")
    browser.token = authenticated["resume_token"]
    await mac.next("peer_joined")
    return mac, browser, code, authenticated["peer"]


async def _attempt(relay: RelayLocalProcess, token: str) -> dict[str, Any]:
    """`resume` with this token on a fresh connection: the first answer."""
    side = Side(relay)
    await side.open()
    await side.send({"action": "resume", "token": token})
    answer = await asyncio.wait_for(side.inbox.get(), EFFECT_TIMEOUT)
    await side.close()
    return answer


def test_two_resumes_racing_with_one_token_exactly_one_wins(relay: RelayLocalProcess) -> None:
    """relay-local runs four invocations of each function at once: both resumes are in flight
    together, each on its own connection, and the token's single use decides."""

    async def scenario() -> tuple[list[dict[str, Any]], list[Any], list[str]]:
        mac, browser, _, _ = await _paired(relay)
        await mac.close()
        await browser.next("peer_away")
        racers = [Side(relay), Side(relay)]
        await asyncio.gather(*(racer.open() for racer in racers))
        await asyncio.gather(*(racer.send({"action": "resume", "token": mac.token}) for racer in racers))
        answers = list(await asyncio.gather(*(asyncio.wait_for(r.inbox.get(), EFFECT_TIMEOUT) for r in racers)))
        await browser.next("peer_back")
        await browser.send({"action": "send", "data": "to the winner"})
        (winner,) = (r for r, a in zip(racers, answers, strict=True) if a["type"] == "resumed")
        await winner.next("frame")
        await winner.send({"action": "end"})
        await winner.next("ended")
        await browser.next("session_closed")
        for side in (*racers, browser):
            await side.close()
        return answers, winner.frames, [m["type"] for m in browser.received]

    answers, winner_frames, browser_saw = asyncio.run(scenario())
    assert sorted(a["type"] for a in answers) == ["error", "resumed"]
    assert next(a for a in answers if a["type"] == "error")["error"] == "invalid_token"
    assert winner_frames == ["to the winner"]
    assert browser_saw.count("peer_back") == 1
    assert relay.active_sessions() == 0


def test_a_browsers_token_never_resumes_the_mac_client(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
        mac, browser, _, peer = await _paired(relay)
        await mac.close()
        await browser.next("peer_away")
        # The token names its role; rewritten to the mac-client's, its secret still is a browser's.
        as_mac = await _attempt(relay, browser.token.replace(f".{peer}.", ".mac."))
        as_itself = await browser.resume()
        mac_back = await mac.resume()
        await mac.send({"action": "end"})
        await mac.next("ended")
        await mac.close()
        await browser.close()
        return as_mac, as_itself, mac_back, peer

    as_mac, as_itself, mac_back, peer = asyncio.run(scenario())
    assert (as_mac["type"], as_mac["error"]) == ("error", "invalid_token")
    assert (as_itself["role"], as_itself["peer"]) == ("browser", peer)
    assert mac_back["role"] == "mac"


DISCONNECT_DELAY_SECONDS = 5.0


@pytest.fixture
def late_disconnect_relay() -> Iterator[RelayLocalProcess]:
    # DEBUG: relay-local's REPORT line tells when each $disconnect invocation has ended.
    yield from _serving(extra=("--disconnect-delay", str(DISCONNECT_DELAY_SECONDS), "--log-level", "DEBUG"))


def _disconnects_ended(relay: RelayLocalProcess) -> int:
    lines = relay.stdout_lines + relay.stderr_lines
    return sum("-disconnect | REPORT RequestId:" in line for line in lines)


async def _until(condition: Any) -> None:
    deadline = asyncio.get_running_loop().time() + DISCONNECT_DELAY_SECONDS + EFFECT_TIMEOUT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_a_410_before_the_disconnect_holds_the_frame_and_the_late_disconnect_keeps_the_resumed_mac(
    late_disconnect_relay: RelayLocalProcess,
) -> None:
    relay = late_disconnect_relay

    async def scenario() -> tuple[int, list[Any], list[Any], list[str], int]:
        mac, browser, _, peer = await _paired(relay)
        await mac.close()  # without `end`; its $disconnect comes DISCONNECT_DELAY_SECONDS later
        await browser.send({"action": "send", "data": "meets a 410"})
        await browser.next("peer_away")  # from the 410: no $disconnect has run yet
        disconnects_before_resume = _disconnects_ended(relay)
        resumed = await mac.resume()
        assert [p["peer"] for p in resumed["peers"]] == [peer]
        await mac.next("frame")
        await browser.next("peer_back")
        # The old connection's $disconnect, after the resume: it must change nothing.
        await _until(lambda: _disconnects_ended(relay) >= 1)
        await browser.send({"action": "send", "data": "after the late disconnect"})
        await mac.next("frame")
        await mac.send({"action": "send", "data": "still here"})
        await browser.next("frame")
        active = relay.active_sessions()
        await mac.send({"action": "end"})
        await mac.next("ended")
        await mac.close()
        await browser.close()
        return disconnects_before_resume, mac.frames, browser.frames, [m["type"] for m in browser.received], active

    disconnects_before_resume, mac_frames, browser_frames, browser_saw, active = asyncio.run(scenario())
    assert disconnects_before_resume == 0
    assert mac_frames == ["meets a 410", "after the late disconnect"]
    assert browser_frames == ["still here"]
    assert browser_saw.count("peer_away") == 1
    assert active == 1


# ---- held frames beyond the limit, the mac-client's view of its browsers, goodbyes ----

MAX_HELD_FRAMES = 3


@pytest.fixture
def one_worker_relay() -> Iterator[RelayLocalProcess]:
    # One worker per function: a connection's messages are handled in the order sent, so
    # which frames are held and which are refused does not depend on scheduling.
    yield from _serving(f"MaxHeldFrames={MAX_HELD_FRAMES}", extra=("--workers-per-function", "1"))


def test_frames_beyond_max_held_frames_are_refused_with_peer_away_and_never_delivered(
    one_worker_relay: RelayLocalProcess,
) -> None:
    relay = one_worker_relay
    refused_count = 2

    async def scenario() -> tuple[list[dict[str, Any]], list[Any], list[Any]]:
        mac, browser, _, _ = await _paired(relay)
        await mac.close()
        await browser.next("peer_away")
        for n in range(MAX_HELD_FRAMES + refused_count):
            await browser.send({"action": "send", "data": n})
        refusals = [await browser.next("error") for _ in range(refused_count)]
        await mac.resume()
        held = [(await mac.next("frame"))["data"] for _ in range(MAX_HELD_FRAMES)]
        await browser.next("peer_back")
        # A frame sent after the resume comes next: nothing refused was held after all.
        await browser.send({"action": "send", "data": "after"})
        await mac.next("frame")
        await mac.send({"action": "end"})
        await mac.next("ended")
        await mac.close()
        await browser.close()
        return refusals, held, mac.frames

    refusals, held, mac_frames = asyncio.run(scenario())
    assert [r["error"] for r in refusals] == ["peer_away"] * refused_count
    assert held == list(range(MAX_HELD_FRAMES))
    assert mac_frames == [*range(MAX_HELD_FRAMES), "after"]


def test_the_resumed_mac_client_sees_each_browsers_state_and_a_bound_connection_cannot_resume(
    relay: RelayLocalProcess,
) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str], dict[str, str]]:
        mac = Side(relay)
        await mac.open()
        await mac.send({"action": "register", "client_id": "mac", "resumable": True, "approve": True})
        registered = await mac.next("registered")
        code, mac.token = registered["code"], registered["resume_token"]
        browsers = {name: Side(relay) for name in ("admitted", "away", "waiting")}
        pendings: list[dict[str, Any]] = []
        peers: dict[str, str] = {}
        for name, browser in browsers.items():
            await browser.open()
            await browser.send({"action": "auth", "code": code})
            pendings.append(await browser.next("pending"))
            peers[name] = (await mac.next("join_request"))["peer"]
        for name in ("admitted", "away"):
            await mac.send({"action": "admit", "peer": peers[name]})
            await browsers[name].next("authenticated")
            await mac.next("peer_joined")
        await browsers["away"].close()
        await mac.next("peer_away")
        # The mac-client's own token, on its own (bound) connection.
        await mac.send({"action": "resume", "token": mac.token})
        bound = await mac.inbox.get()
        await mac.close()
        resumed = await mac.resume()
        await mac.send({"action": "end"})
        await mac.next("ended")
        for side in (mac, *browsers.values()):
            await side.close()
        states = {p["peer"]: p["state"] for p in resumed["peers"]}
        return pendings, bound, states, peers

    pendings, bound, states, peers = asyncio.run(scenario())
    assert all(p["resume_token"] for p in pendings)
    assert len({p["resume_token"] for p in pendings}) == len(pendings)
    assert (bound["type"], bound["error"]) == ("error", "already_bound")
    assert states == {peers["admitted"]: "present", peers["away"]: "away", peers["waiting"]: "pending"}


@pytest.mark.parametrize("resumable", [False, True], ids=["v1", "resumable"])
def test_leave_and_end_take_effect_at_once(relay: RelayLocalProcess, resumable: bool) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], int, int, str]:
        mac, leaving, staying = Side(relay), Side(relay), Side(relay)
        peers: list[str] = []
        await mac.open()
        await mac.send({"action": "register", "client_id": "mac", "resumable": resumable})
        code = (await mac.next("registered"))["code"]
        for browser in (leaving, staying):
            await browser.open()
            await browser.send({"action": "auth", "code": code})
            authenticated = await browser.next("authenticated")
            browser.token = authenticated.get("resume_token", "")
            assert (await mac.next("peer_joined"))["peer"] == authenticated["peer"]
            peers.append(authenticated["peer"])
        await leaving.send({"action": "leave"})
        left = await leaving.next("left")
        peer_left = await mac.next("peer_left")
        await mac.send({"action": "end"})
        ended = await mac.next("ended")
        closed = await staying.next("session_closed")
        active = relay.active_sessions()
        for side in (mac, leaving, staying):
            await side.close()
        return left, peer_left, ended, closed, active, len(leaving.token), peers[0]

    left, peer_left, ended, closed, active, token_length, leaving_peer = asyncio.run(scenario())
    assert left == {"type": "left"}
    assert peer_left == {"type": "peer_left", "peer": leaving_peer}
    assert ended == {"type": "ended"}
    assert closed == {"type": "session_closed"}
    assert active == 0
    # v1 is unchanged: no token unless the session asked to be resumable.
    assert (token_length > 0) == resumable


# The template's least (MinValue): far shorter than a v1 session's TTL, so that the
# clock relay-local's TTL simulation runs ahead never outruns an open connection's
# life (API Gateway ends every connection within two hours).
MAX_SESSION_SECONDS = 60


@pytest.fixture
def short_lived_sessions_relay() -> Iterator[RelayLocalProcess]:
    yield from _serving(f"MaxSessionSeconds={MAX_SESSION_SECONDS}")


def test_a_resumable_session_lives_max_session_seconds_across_resumes_then_ends_as_expired(
    short_lived_sessions_relay: RelayLocalProcess,
) -> None:
    """TTL deletes all of the session's items at once, in no set order; the browser still
    connected is told, once, and the resumed mac-client's connection is closed."""
    relay = short_lived_sessions_relay
    assert MAX_SESSION_SECONDS < protocol.DEFAULT_SESSION_TTL_SECONDS

    async def scenario() -> tuple[list[Any], list[str], int | None, dict[str, Any], list[str], int]:
        v1_mac = Side(relay)
        await v1_mac.open()
        await v1_mac.send({"action": "register", "client_id": "v1"})
        await v1_mac.next("registered")
        mac, browser, _, _ = await _paired(relay)
        await mac.close()
        await browser.next("peer_away")
        await mac.resume()
        await browser.next("peer_back")
        await browser.send({"action": "send", "data": "before the end"})
        await mac.next("frame")
        # Past MaxSessionSeconds from registration: the resumable session ends as expired,
        # the v1 session (its TTL is SessionTtlSeconds) lives on.
        await asyncio.to_thread(relay.control, "expire", "--in", str(MAX_SESSION_SECONDS + 60))
        await browser.next("session_closed")
        await asyncio.wait_for(mac.closed.wait(), EFFECT_TIMEOUT)
        refused = await _attempt(relay, mac.token)
        await v1_mac.send({"action": "ping"})
        await v1_mac.next("pong")
        active = relay.active_sessions()  # the v1 session's
        await v1_mac.close()
        await browser.close()
        told = [m["type"] for m in browser.received]
        v1_saw = [m["type"] for m in v1_mac.received]
        return mac.frames, told, mac.close_codes[-1], refused, v1_saw, active

    mac_frames, told, mac_close, refused, v1_saw, active = asyncio.run(scenario())
    assert mac_frames == ["before the end"]
    assert told.count("session_closed") == 1
    assert mac_close == 1000
    assert refused["error"] == "invalid_token"
    assert v1_saw == ["registered", "pong"]
    assert active == 1
