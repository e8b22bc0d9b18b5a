"""Issue 11 end to end: the real clients' resumable sessions against the real relay.

relay-local serves the relay's handlers over real sockets; relay-mac runs as the console
script (`--json`); the page runs in headless Chromium, or a `websockets` client plays a
browser where no page is needed. relay-local's `--max-connection-duration` closes every
connection with 1001 after a few seconds, as API Gateway does after two hours, and its
SQS source runs the grace timer. Three relays, one per class, each for the tests that
need its settings: forced closes, steady connections, and a short grace period.

No step waits a fixed time: each waits for an event of relay-mac, a message to the
`websockets` browser, a state the page logs (every change of its status is recorded in
order by a MutationObserver, so a state that lasts a moment is not missed), or the debug
count's answer.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.clients.page_source import ui_message
from tests.support.processes import RunningProcess, console_script
from tests.support.relay_local import EFFECT_TIMEOUT, RelayLocalProcess, start_project_relay

pytestmark = pytest.mark.e2e

# relay-local closes every connection this long after it opened.
FORCED_CLOSE_SECONDS = 4
# Longer than relay-mac's absence after a forced close (SLOW_RETURN, then a connect and a
# resume) and the page's (at most 0.5 s, then the same), shorter than a test's patience.
FORCED_CLOSE_RELAY_GRACE_SECONDS = 8
SHORT_GRACE_SECONDS = 2
# docs/PROTOCOL.md: an away holder's grace ends at most about 15 s late.
GRACE_LATENESS_SECONDS = 15
# relay-local waits this long for a client's answer to its close frame, then drops the
# connection (local/relay_local/gateway.py): a stopped relay-mac is gone only then.
CLOSE_HANDSHAKE_SECONDS = 5
ROUNDS = 3
# relay-mac waits 1.5 to 3 s before it reconnects (its backoff, jittered down to half): long
# enough for the other side to act while it is away, and well over the page's own resume.
SLOW_RETURN = ("--backoff-initial", "3", "--backoff-max", "3")
STORAGE_KEY = "pairing-relay.resume"


# ---- relays ------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def forced_close_relay() -> Iterator[RelayLocalProcess]:
    relay = start_project_relay(
        "--max-connection-duration",
        str(FORCED_CLOSE_SECONDS),
        "--parameter-overrides",
        f"ResumeGraceSeconds={FORCED_CLOSE_RELAY_GRACE_SECONDS}",
    )
    yield relay
    assert relay.stop() == 0, relay.output()


@pytest.fixture(scope="class")
def steady_relay() -> Iterator[RelayLocalProcess]:
    """Connections last (two hours), and the grace period is the default 120 s: anything
    a test sees within its waits did not come from a grace period running out."""
    relay = start_project_relay()
    yield relay
    assert relay.stop() == 0, relay.output()


@pytest.fixture(scope="class")
def short_grace_relay() -> Iterator[RelayLocalProcess]:
    relay = start_project_relay("--parameter-overrides", f"ResumeGraceSeconds={SHORT_GRACE_SECONDS}")
    yield relay
    assert relay.stop() == 0, relay.output()


def wait_for_sessions(relay: RelayLocalProcess, expected: int, timeout: float = EFFECT_TIMEOUT) -> None:
    """Poll the debug count until it says `expected` (an effect of $disconnect, `end` or the grace timer)."""
    deadline = time.monotonic() + timeout
    while (count := relay.active_sessions()) != expected:
        assert time.monotonic() < deadline, f"the debug count stayed at {count}, not {expected}"
        time.sleep(0.2)


# ---- relay-mac ---------------------------------------------------------------------------


def start_mac(relay: RelayLocalProcess, *extra: str) -> RunningProcess:
    return RunningProcess([console_script("relay-mac"), "--json", "--url", relay.ws_url, *extra])


class MacEvents:
    """relay-mac's `--json` events, each taken at most once. Taking one kind never loses
    an event of another kind that came before it: a test may take them in any order."""

    def __init__(self, mac: RunningProcess) -> None:
        self.mac = mac
        self.taken: set[int] = set()

    def mark(self) -> int:
        """Where the events read so far end: `take(..., after=mark)` skips what came before."""
        return len(self.mac.lines)

    def take(self, kind: str, *, after: int = 0, **fields: Any) -> dict[str, Any]:
        """The first event of `kind` with these fields not taken yet; waits for it if need be."""
        return self.take_first((kind, fields), after=after)

    def take_first(self, *choices: tuple[str, dict[str, Any]], after: int = 0) -> dict[str, Any]:
        """The first event not taken yet that matches one of (kind, fields)."""

        def wanted(line: str) -> bool:
            event = json.loads(line)
            return any(_matches(event, kind, fields) for kind, fields in choices)

        for index in range(after, len(self.mac.lines)):
            if index not in self.taken and wanted(self.mac.lines[index]):
                self.taken.add(index)
                return json.loads(self.mac.lines[index])  # type: ignore[no-any-return]
        line = self.mac.wait_for_line(wanted, f"an event of {choices}")
        self.taken.add(len(self.mac.lines) - 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every event of `kind` read so far (after `finish()`, every one relay-mac printed)."""
        return [event for line in self.mac.lines if (event := json.loads(line))["event"] == kind]


def _matches(event: dict[str, Any], kind: str, fields: dict[str, Any]) -> bool:
    return event.get("event") == kind and all(event.get(key) == value for key, value in fields.items())


def mac_types(events: MacEvents, text: str) -> None:
    """Type a line into relay-mac until it has sent it. relay-mac sends nothing while its
    own connection is being replaced, and says so (`not_connected`): then type it again
    once it is back, as a person would."""
    while True:
        mark = events.mark()
        events.mac.type_line(text)
        outcome = events.take_first(("sent", {"data": text}), ("error", {"error": "not_connected"}), after=mark)
        if outcome["event"] == "sent":
            return
        events.take("resumed", after=mark)


def unexpected_errors(events: MacEvents) -> list[dict[str, Any]]:
    """relay-mac's errors, but for lines typed while it was reconnecting (typed again)."""
    return [event for event in events.all("error") if event["error"] != "not_connected"]


# ---- a browser as a websockets client ------------------------------------------------------


class RawBrowser:
    """A browser as a `websockets` client that, like the page, resumes with its latest
    token on a new connection whenever relay-local closed its connection, and keeps what
    comes before `resumed` (a frame racing the resume may: docs/PROTOCOL.md)."""

    def __init__(self, relay: RelayLocalProcess) -> None:
        self.relay = relay
        self.ws: ClientConnection | None = None
        self.token = ""
        self.peer = ""
        self.received: list[dict[str, Any]] = []
        self.frames: list[Any] = []
        self.close_codes: list[int | None] = []
        self._unread: deque[dict[str, Any]] = deque()

    def _open(self) -> ClientConnection:
        # legacy=True: websockets' way to hold a connection open outside a `with` block.
        self.ws = connect(self.relay.ws_url, open_timeout=EFFECT_TIMEOUT, legacy=True)
        return self.ws

    def _read(self, ws: ClientConnection) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(ws.recv(timeout=EFFECT_TIMEOUT))
        self.received.append(message)
        if message.get("type") == "frame":
            self.frames.append(message["data"])
        return message

    def first_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """On a fresh connection: send `request`, return the relay's first answer."""
        ws = self._open()
        ws.send(json.dumps(request))
        return self._read(ws)

    def join(self, code: str) -> str:
        authenticated = self.first_answer({"action": "auth", "code": code})
        assert authenticated["type"] == "authenticated", authenticated
        self.token, self.peer = authenticated["resume_token"], authenticated["peer"]
        return self.peer

    def resume(self) -> dict[str, Any]:
        resumed = self.first_answer({"action": "resume", "token": self.token})
        while resumed["type"] != "resumed":
            assert resumed["type"] != "error", resumed
            self._unread.append(resumed)
            assert self.ws is not None
            resumed = self._read(self.ws)
        assert resumed.get("peer") == self.peer, resumed
        self.token = resumed["resume_token"]
        return resumed

    def _closed(self) -> None:
        assert self.ws is not None
        self.close_codes.append(self.ws.close_code)
        self.resume()

    def next(self, kind: str) -> dict[str, Any]:
        """The next message of `kind`, resuming first if relay-local closed the connection."""
        while True:
            assert self.ws is not None
            try:
                message = self._unread.popleft() if self._unread else self._read(self.ws)
            except ConnectionClosed:
                self._closed()
                continue
            if message.get("type") == kind:
                return message
            assert message.get("type") != "error", message

    def send(self, data: Any) -> None:
        assert self.ws is not None
        try:
            self.ws.send(json.dumps({"action": "send", "data": data}))
        except ConnectionClosed:
            self._closed()  # nothing went out on a closed connection: resume, then send
            self.send(data)

    def drop(self) -> None:
        """Close the connection without `leave`: the relay keeps the seat (away)."""
        assert self.ws is not None
        self.ws.close()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def refused_join(relay: RelayLocalProcess, code: str) -> str:
    """What the relay answers a new browser's `auth` with this code: the error code."""
    browser = RawBrowser(relay)
    try:
        answer = browser.first_answer({"action": "auth", "code": code})
    finally:
        browser.close()
    assert answer["type"] == "error", answer
    return str(answer["error"])


# ---- the page -------------------------------------------------------------------------------

# Every value #status[data-state] takes, in order, into window.__phases (consecutive
# repeats once). Installed before the page's own script runs, on every load.
PHASE_LOG = """
(() => {
  const phases = (window.__phases = []);
  const note = (value) => {
    if (phases[phases.length - 1] !== value) phases.push(value);
  };
  new MutationObserver((records) => {
    const mine = records.filter((record) => record.target.id === "status");
    // A record carries the value before the change; the value after it is the next
    // record's old value, or the current one.
    mine.forEach((record, i) => note(i + 1 < mine.length ? mine[i + 1].oldValue : record.target.dataset.state));
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"], attributeOldValue: true });
})();
"""

FIND_PHASES = """([since, wanted]) => {
  let found = 0;
  for (let k = since; k < window.__phases.length; k++) {
    if (window.__phases[k] === wanted[found] && ++found === wanted.length) return k + 1;
  }
  return 0;
}"""


def open_page(page: Page, relay: RelayLocalProcess) -> None:
    page.add_init_script(PHASE_LOG)
    page.goto(f"{relay.http_url}/?relay={relay.ws_url}")
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def pair(page: Page, code: str) -> None:
    page.locator("#code").press_sequentially(code)
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")


@contextlib.contextmanager
def paired_with_page(
    relay: RelayLocalProcess, page: Page, *mac_args: str
) -> Iterator[tuple[RunningProcess, MacEvents, str, str]]:
    """relay-mac paired with the page: the process, its events, the code, the page's peer id."""
    with start_mac(relay, *mac_args) as mac:
        events = MacEvents(mac)
        code = events.take("registered")["code"]
        open_page(page, relay)
        pair(page, code)
        yield mac, events, code, events.take("peer_joined")["peer"]


def phases(page: Page) -> list[str]:
    return list(page.evaluate("window.__phases"))


def wait_for_phases(page: Page, since: int, *wanted: str, timeout_ms: float | None = None) -> int:
    """Wait until the page's states from index `since` on include `wanted` in this order;
    returns the index just after the last of them."""
    found = page.wait_for_function(FIND_PHASES, arg=[since, list(wanted)], timeout=timeout_ms)
    return int(found.json_value())


def stored(page: Page) -> Any:
    return json.loads(page.evaluate(f"window.sessionStorage.getItem({STORAGE_KEY!r})") or "null")


def page_sends(page: Page, text: str) -> None:
    """Type `text` and press Enter until the page has sent it (it empties the box).

    The page sends nothing while its own connection is being replaced or a new key
    agreement is under way (the box is disabled, the text stays): then press again once
    the box is enabled, as a person would.
    """
    box = page.locator("#message")
    box.fill(text)
    while True:
        box.press("Enter")
        page.wait_for_function(
            "() => { const box = document.getElementById('message'); return box.value === '' || box.disabled; }"
        )
        if box.input_value() == "":
            return
        expect(box).to_be_enabled()


def lines_from_mac(page: Page) -> Any:
    return page.locator(".entry-mac .entry-text")


# ---- forced closes ----------------------------------------------------------------------------


@pytest.mark.slow
class TestForcedCloses:
    """relay-local closes every connection after FORCED_CLOSE_SECONDS."""

    def test_relay_mac_resumes_after_each_forced_close_and_frames_cross_both_ways_once_each(
        self, forced_close_relay: RelayLocalProcess
    ) -> None:
        relay = forced_close_relay
        # A `websockets` browser speaks no end-to-end layer: relay-mac settles it as plain.
        with start_mac(relay, *SLOW_RETURN, "--e2e-wait", "1") as mac:
            events = MacEvents(mac)
            code = events.take("registered")["code"]
            browser = RawBrowser(relay)
            peer = browser.join(code)
            events.take("peer_joined", peer=peer)
            assert events.take("encryption", peer=peer)["encrypted"] is False
            to_mac: list[str] = []
            to_browser: list[str] = []
            for n in range(ROUNDS):
                disconnected = events.take("disconnected")
                assert (disconnected["code"], disconnected["resuming"]) == (1001, True)
                # relay-mac is away for over a second: the relay holds this for it.
                to_mac.append(f"browser to mac {n}")
                browser.send(to_mac[-1])
                resumed = events.take("resumed")
                assert (resumed["code"], resumed["session"]) == (code, 1)
                assert peer in resumed["peers"] + resumed["away"]
                assert events.take("frame")["data"] == to_mac[-1]
                to_browser.append(f"mac to browser {n}")
                mac_types(events, to_browser[-1])
                assert browser.next("frame")["data"] == to_browser[-1]
                # The browser drops too: relay-mac shows it away and sends to it all the same
                # (the relay holds the line), and it gets the line once it resumes.
                mark = events.mark()
                browser.drop()
                events.take("peer_away", after=mark, peer=peer)
                to_browser.append(f"held for the browser {n}")
                mac_types(events, to_browser[-1])
                browser.resume()
                assert browser.next("frame")["data"] == to_browser[-1]
                events.take("peer_back", after=mark, peer=peer)
            assert mac.terminate() == 0
            browser.next("session_closed")
            browser.close()
        # In order, once each, both ways.
        assert [event["data"] for event in events.all("frame")] == to_mac
        assert browser.frames == to_browser
        # One session throughout: registered once, then the same code back after every close.
        assert events.all("registered") == [{"event": "registered", "code": code, "session": 1, "new_session": False}]
        resumed_all = events.all("resumed")
        assert len(resumed_all) >= ROUNDS
        assert {(event["code"], event["session"]) for event in resumed_all} == {(code, 1)}
        assert {(event["code"], event["resuming"]) for event in events.all("disconnected")} == {(1001, True)}
        assert events.all("resume_refused") == []
        assert unexpected_errors(events) == []
        assert [event["event"] for event in events.all("ended") + events.all("stopped")] == ["ended", "stopped"]
        wait_for_sessions(relay, 0)

    @pytest.mark.browser
    def test_the_page_shows_its_mac_reconnecting_then_paired_and_messages_flow_encrypted(
        self, forced_close_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = forced_close_relay, browser_page
        with paired_with_page(relay, page, *SLOW_RETURN) as (mac, events, code, peer):
            secured = events.take("encryption", peer=peer)
            assert secured["encrypted"] is True
            expect(page.locator("#sas")).to_have_text(secured["sas"])
            to_mac: list[str] = []
            to_page: list[str] = []
            seen = 0
            for n in range(ROUNDS - 1):
                disconnected = events.take("disconnected")
                assert (disconnected["code"], disconnected["resuming"]) == (1001, True)
                # Whether the page was connected when the Mac dropped (peer_away) or itself
                # resumed meanwhile (`resumed` says the Mac is away), it shows the Mac
                # reconnecting, then Paired once the Mac is back.
                seen = wait_for_phases(page, seen, "away", "paired")
                assert events.take("resumed")["code"] == code
                # A new key agreement after the resume, then messages both ways, encrypted.
                to_mac.append(f"page to mac {n}")
                page_sends(page, to_mac[-1])
                frame = events.take("frame", data=to_mac[-1])
                assert (frame["from"], frame["encrypted"]) == (peer, True)
                to_page.append(f"mac to page {n}")
                mac_types(events, to_page[-1])
                expect(lines_from_mac(page)).to_have_text(to_page)
            expect(page.locator(".entry-mac[data-encrypted='true']")).to_have_count(len(to_page))
            assert mac.terminate() == 0
        # The end: "Session closed", or, if the page was just replacing its own connection,
        # its resume is refused ("This pairing has ended"); either way it left the session.
        expect(page.locator("#status")).to_have_attribute("data-state", re.compile(r"^(closed|idle)$"))
        assert stored(page) is None
        assert [event["data"] for event in events.all("frame")] == to_mac
        assert events.all("rejected") == []
        assert page.get_by_text("A message was rejected").count() == 0
        assert len(events.all("registered")) == 1

    @pytest.mark.browser
    def test_a_page_reloaded_while_its_mac_is_away_shows_it_reconnecting_then_paired(
        self, forced_close_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = forced_close_relay, browser_page
        with paired_with_page(relay, page, *SLOW_RETURN) as (mac, events, code, peer):
            events.take("encryption", peer=peer, encrypted=True)
            token = stored(page)["token"]
            events.take("disconnected")
            # Keep relay-mac from coming back (its backoff is over a second) while the
            # page reloads: the page then resumes while its Mac is away.
            mac.process.send_signal(signal.SIGSTOP)
            try:
                wait_for_phases(page, 0, "away")
                page.reload()
                expect(page.locator("#status")).to_have_attribute("data-state", "away")
                expect(page.locator("#status-text")).to_contain_text("Mac reconnecting")
                expect(page.locator("#status-text")).to_contain_text(f"{code[:3]} {code[3:]}")
                assert stored(page)["token"] != token
            finally:
                mac.process.send_signal(signal.SIGCONT)
            assert events.take("resumed")["code"] == code
            wait_for_phases(page, 0, "away", "paired")
            # The page's commit, held for the Mac while it was away, makes a new agreement.
            events.take("encryption", peer=peer, encrypted=True)
            page_sends(page, "after the reload")
            assert events.take("frame", data="after the reload")["encrypted"] is True
            mac_types(events, "welcome back")
            expect(lines_from_mac(page)).to_have_text(["welcome back"])
            assert mac.terminate() == 0
        assert events.all("peer_joined") == [{"event": "peer_joined", "peer": peer, "peers": [peer]}]

    @pytest.mark.browser
    def test_lock_after_first_refuses_a_second_browser_before_and_after_resumes(
        self, forced_close_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = forced_close_relay, browser_page
        with paired_with_page(relay, page, *SLOW_RETURN, "--lock-after-first") as (mac, events, code, peer):
            events.take("locked")
            assert refused_join(relay, code) == "invalid_code"
            # relay-mac's connection is closed and resumed; so is the page's (a resume is no
            # join: the lock does not keep the page out).
            events.take("disconnected")
            assert events.take("resumed")["code"] == code
            wait_for_phases(page, 0, "paired", "resuming", "paired")
            assert refused_join(relay, code) == "invalid_code"
            mac_types(events, "still locked, still paired")
            expect(lines_from_mac(page)).to_have_text(["still locked, still paired"])
            assert mac.terminate() == 0
        # Locked once: relay-mac does not lock again after a resume (the relay kept it).
        assert events.all("locked") == [{"event": "locked"}]
        assert events.all("peer_joined") == [{"event": "peer_joined", "peer": peer, "peers": [peer]}]

    @pytest.mark.browser
    def test_no_resume_gives_a_new_code_after_a_forced_close_and_the_page_is_told(
        self, forced_close_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = forced_close_relay, browser_page
        with start_mac(relay, "--no-resume", "--backoff-initial", "0.2", "--backoff-max", "0.5") as mac:
            events = MacEvents(mac)
            first = events.take("registered")["code"]
            # Paired after relay-mac registered, the page's connection outlives relay-mac's.
            open_page(page, relay)
            pair(page, first)
            events.take("peer_joined")
            assert stored(page) is None  # a session that is not resumable hands out no token
            disconnected = events.take("disconnected")
            assert (disconnected["code"], disconnected["resuming"]) == (1001, False)
            second = events.take("registered", session=2)
            assert second["new_session"] is True
            assert second["code"] != first
            expect(page.locator("#status")).to_have_attribute("data-state", "closed")
            expect(page.locator("#alert")).to_have_text(ui_message("sessionClosed"))
            assert "away" not in phases(page)
            assert mac.terminate() == 0
        assert events.all("resumed") == []

    def test_a_refused_resume_registers_a_new_session_and_says_so(self, forced_close_relay: RelayLocalProcess) -> None:
        relay = forced_close_relay
        with start_mac(relay, "--backoff-initial", "0.2", "--backoff-max", "0.5") as mac:
            events = MacEvents(mac)
            first = events.take("registered")["code"]
            sessions = relay.active_sessions()
            # Stopped, relay-mac cannot answer relay-local's close: relay-local drops the
            # connection, the session is away, and its grace period runs out.
            mac.process.send_signal(signal.SIGSTOP)
            try:
                wait_for_sessions(
                    relay,
                    sessions - 1,
                    timeout=FORCED_CLOSE_SECONDS
                    + CLOSE_HANDSHAKE_SECONDS
                    + FORCED_CLOSE_RELAY_GRACE_SECONDS
                    + GRACE_LATENESS_SECONDS
                    + EFFECT_TIMEOUT,
                )
            finally:
                mac.process.send_signal(signal.SIGCONT)
            events.take("disconnected")
            refused = events.take("resume_refused")
            assert (refused["code"], refused["error"]) == (first, "invalid_token")
            second = events.take("registered", session=2)
            assert second["new_session"] is True
            assert second["code"] != first
            assert refused_join(relay, first) == "invalid_code"
            browser = RawBrowser(relay)
            peer = browser.join(second["code"])
            events.take("peer_joined", peer=peer)
            browser.close()
            assert mac.terminate() == 0
        assert events.all("resumed") == []


# ---- steady connections ----------------------------------------------------------------------


@pytest.mark.browser
class TestSteadyConnections:
    """No forced closes, and the default grace period (120 s)."""

    def test_a_reload_keeps_the_pairing_without_the_code(
        self, steady_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = steady_relay, browser_page
        with paired_with_page(relay, page) as (mac, events, code, peer):
            events.take("encryption", peer=peer, encrypted=True)
            token = stored(page)["token"]
            page.reload()
            expect(page.locator("#status")).to_have_attribute("data-state", "paired")
            expect(page.locator("#status-text")).to_contain_text(f"{code[:3]} {code[3:]}")
            expect(page.locator("#code")).to_have_value("")
            # relay-mac sees the same browser back (away first only if the old connection's
            # $disconnect came before the resume), and makes a new agreement with it.
            events.take("peer_back", peer=peer)
            secured = events.take("encryption", peer=peer, encrypted=True)
            expect(page.locator("#sas")).to_have_text(secured["sas"])
            assert stored(page)["token"] != token
            page_sends(page, "from the reloaded page")
            assert events.take("frame", data="from the reloaded page")["encrypted"] is True
            mac.type_line("to the reloaded page")
            expect(lines_from_mac(page)).to_have_text(["to the reloaded page"])
            assert mac.terminate() == 0
        assert events.all("peer_joined") == [{"event": "peer_joined", "peer": peer, "peers": [peer]}]

    def test_sigterm_ends_the_session_at_once_for_the_page_and_the_count(
        self, steady_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = steady_relay, browser_page
        with start_mac(relay) as mac:
            events = MacEvents(mac)
            code = events.take("registered")["code"]
            open_page(page, relay)
            pair(page, code)
            events.take("peer_joined")
            sessions = relay.active_sessions()
            since = len(phases(page))
            assert mac.terminate() == 0
        # `end`, then the close: the relay confirmed the end before relay-mac went.
        assert [json.loads(line)["event"] for line in mac.lines[-2:]] == ["ended", "stopped"]
        # Well within the 120-s grace period: this is the end, not a grace period running out.
        expect(page.locator("#status")).to_have_attribute("data-state", "closed")
        expect(page.locator("#alert")).to_have_text(ui_message("sessionClosed"))
        assert phases(page)[since:] == ["closed"]  # never "Mac reconnecting"
        assert stored(page) is None
        wait_for_sessions(relay, sessions - 1)

    def test_leave_tells_relay_mac_and_the_page_does_not_resume(
        self, steady_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = steady_relay, browser_page
        with paired_with_page(relay, page) as (mac, events, code, peer):
            token = stored(page)["token"]
            page.get_by_role("button", name="Leave session").click()
            assert events.take("peer_left", peer=peer) == {"event": "peer_left", "peer": peer, "peers": []}
            expect(page.locator("#status")).to_have_attribute("data-state", "idle")
            assert stored(page) is None
            # The page's last token is void at the relay too.
            late = RawBrowser(relay)
            answer = late.first_answer({"action": "resume", "token": token})
            late.close()
            assert (answer["type"], answer["error"]) == ("error", "invalid_token")
            page.reload()
            expect(page.locator("#status")).to_have_attribute("data-state", "idle")
            assert "resuming" not in phases(page)
            # The code still works: the page joins again, as a new browser.
            pair(page, code)
            again = events.take("peer_joined")["peer"]
            assert again != peer
            assert mac.terminate() == 0
        assert [event for event in events.all("peer_away") if event["peer"] == peer] == []
        assert [event for event in events.all("peer_back") if event["peer"] == peer] == []


# ---- a short grace period ------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
class TestShortGrace:
    def test_a_killed_relay_mac_leaves_the_page_reconnecting_until_the_grace_period_ends(
        self, short_grace_relay: RelayLocalProcess, browser_page: Page
    ) -> None:
        relay, page = short_grace_relay, browser_page
        with start_mac(relay) as mac:
            code = mac.wait_for_event("registered")["code"]
            open_page(page, relay)
            pair(page, code)
            mac.wait_for_event("peer_joined")
            wait_for_sessions(relay, 1)
            mac.process.kill()  # SIGKILL: no `end`, the connection just goes
            assert mac.finish() == -signal.SIGKILL
        # "Mac reconnecting…" (only for a moment: the grace period is short).
        since = wait_for_phases(page, 0, "paired", "away")
        patience_ms = (SHORT_GRACE_SECONDS + GRACE_LATENESS_SECONDS + EFFECT_TIMEOUT) * 1000
        wait_for_phases(page, since, "closed", timeout_ms=patience_ms)
        expect(page.locator("#alert")).to_have_text(ui_message("sessionClosed"))
        assert stored(page) is None
        wait_for_sessions(relay, 0)
