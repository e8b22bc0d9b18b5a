"""relay-mac against relay-local (the real handlers), with a `websockets` client as the browser.

No Chromium here: these run with `-m "not browser"` too, so the mac-client is always
checked against the real relay, including the relay's own error answers.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import RunningProcess, console_script
from tests.support.relay_local import RelayLocalProcess, start_project_relay

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def relay_local() -> Iterator[RelayLocalProcess]:
    relay = start_project_relay()
    yield relay
    relay.stop()


def receive(browser: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of type `kind` (pongs and the like are skipped)."""
    while True:
        message: dict[str, Any] = json.loads(browser.recv(timeout=30))
        if message.get("type") == kind:
            return message


@contextlib.contextmanager
def joined(relay: RelayLocalProcess, code: str) -> Iterator[tuple[ClientConnection, str]]:
    """A browser in the session, with the code typed the way a person might."""
    with connect(relay.ws_url, open_timeout=30) as browser:
        browser.send(json.dumps({"action": "auth", "code": f" {code[:3].lower()}-{code[3:].lower()} "}))
        yield browser, str(receive(browser, "authenticated")["peer"])


def wait_for_sessions(relay: RelayLocalProcess, expected: int) -> None:
    # $disconnect runs after the socket closes; poll the debug function for its effect.
    for _ in range(150):
        if relay.active_sessions() == expected:
            return
        time.sleep(0.2)
    assert relay.active_sessions() == expected


def test_frames_both_ways_peers_and_the_relays_own_errors(relay_local: RelayLocalProcess) -> None:
    with RunningProcess([console_script("relay-mac"), "--json", "--url", relay_local.ws_url]) as mac:
        code = mac.wait_for_event("registered")["code"]
        wait_for_sessions(relay_local, 1)
        with joined(relay_local, code) as (browser, peer):
            assert mac.wait_for_event("peer_joined") == {"event": "peer_joined", "peer": peer, "peers": [peer]}

            browser.send(json.dumps({"action": "send", "data": {"n": 1, "text": "from the browser"}}))
            assert mac.wait_for_event("frame") == {
                "event": "frame",
                "from": peer,
                "data": {"n": 1, "text": "from the browser"},
                "encrypted": False,
            }

            mac.type_line(f"@{peer} just for you")
            assert receive(browser, "frame") == {"type": "frame", "from": "mac", "data": "just for you"}
            mac.type_line("for everyone")
            assert receive(browser, "frame")["data"] == "for everyone"

            # The relay's answer for a peer that is not in the session.
            mac.type_line("@pnobody123 hello?")
            assert mac.wait_for_event("error")["error"] == "unknown_peer"
            # relay-mac registers resumable: a browser that only closed its socket would be
            # away (peer_away), so this one says goodbye.
            browser.send(json.dumps({"action": "leave"}))
            assert receive(browser, "left") == {"type": "left"}

        assert mac.wait_for_event("peer_left") == {"event": "peer_left", "peer": peer, "peers": []}
        mac.type_line("anyone there?")
        assert mac.wait_for_event("error")["error"] == "no_browsers"

        with joined(relay_local, code) as (second, _):
            mac.wait_for_event("peer_joined")
            assert mac.terminate() == 0
            # SIGTERM closes the mac's connection cleanly: the browser hears at once.
            assert receive(second, "session_closed") == {"type": "session_closed"}
    wait_for_sessions(relay_local, 0)


def test_keepalive_pings_are_answered_by_the_relay_without_noise(relay_local: RelayLocalProcess) -> None:
    args = [console_script("relay-mac"), "--json", "--url", relay_local.ws_url, "--keepalive", "0.1"]
    with RunningProcess(args) as mac:
        code = mac.wait_for_event("registered")["code"]
        with joined(relay_local, code) as (browser, _):
            mac.wait_for_event("peer_joined")
            # Let several keepalive periods pass (a count of pings, not a timing check),
            # then show the session is still there and nothing was reported.
            time.sleep(1.0)
            browser.send(json.dumps({"action": "send", "data": "still here"}))
            mac.wait_for_event("frame", data="still here")
        mac.terminate()
    events = [json.loads(line) for line in mac.lines]
    # The goodbyes at the end (the browser's socket closed: away; SIGTERM: end) are not noise.
    goodbyes = ("peer_left", "peer_away", "ended", "stopped")
    assert [e["event"] for e in events if e["event"] not in goodbyes] == [
        "connecting",
        "registered",
        "peer_joined",
        "encryption",  # a raw socket client: not encrypted
        "frame",
    ]
    assert mac.stderr_lines == []


def test_the_browser_page_is_served_by_relay_local(relay_local: RelayLocalProcess) -> None:
    with urllib.request.urlopen(f"{relay_local.http_url}/", timeout=30) as response:
        body = response.read().decode()
        assert response.status == 200
    assert '<script src="app.js"' in body
    with urllib.request.urlopen(f"{relay_local.http_url}/app.js", timeout=30) as response:
        assert "PROTOCOL-BEGIN" in response.read().decode()
