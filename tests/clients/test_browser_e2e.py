"""End to end: relay-local, relay-mac --json and the page in headless Chromium, all real.

relay-local runs the relay's real handlers over its embedded DynamoDB and serves the
page; relay-mac is the console script as a person would run it; Chromium types the
code the mac-client printed. Set UPDATE_SCREENSHOTS=1 to refresh
docs/screenshot-paired.png; every run also leaves a copy in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from relay import protocol

from tests.clients.page_source import page_protocol, ui_message
from tests.support.codes import other_well_formed_code
from tests.support.files import ROOT
from tests.support.processes import RunningProcess, console_script, free_port
from tests.support.relay_local import RelayLocalProcess, start_project_relay

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ROOT / "docs" / "screenshot-paired.png"


@pytest.fixture(scope="module")
def relay_local() -> Iterator[RelayLocalProcess]:
    relay = start_project_relay()
    yield relay
    relay.stop()


def start_mac(relay: RelayLocalProcess, *extra: str) -> RunningProcess:
    mac = RunningProcess([console_script("relay-mac"), "--json", "--url", relay.ws_url, *extra])
    return mac


def open_page(page: Page, relay: RelayLocalProcess) -> None:
    page.goto(f"{relay.http_url}/?relay={relay.ws_url}")
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def test_the_page_served_by_relay_local_finds_its_websocket_url(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    """relay-local runs on free ports here, not the default 3001: the page asks relay-local."""
    assert not relay_local.ws_url.startswith("ws://127.0.0.1:3001")
    page = browser_page
    page.goto(f"{relay_local.http_url}/")
    expect(page.locator("#relay-url")).to_have_value(re.compile(rf"^{re.escape(relay_local.ws_url)}(/[\w-]+)?$"))
    with start_mac(relay_local) as mac:
        code = mac.wait_for_event("registered")["code"]
        page.locator("#code").press_sequentially(code)
        expect(page.locator("#status")).to_have_attribute("data-state", "paired")


def as_typed_by_a_person(code: str) -> str:
    """`K7M2QX` as someone might type it from the screen: `k7m-2qx`."""
    return f"{code[:3]}-{code[3:]}".lower()


def test_pair_a_browser_and_message_both_ways_then_the_mac_leaves(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    with start_mac(relay_local) as mac:
        code = mac.wait_for_event("registered")["code"]
        open_page(page, relay_local)

        # Keyboard only: Tab reaches the code field, and its focus is visible.
        page.keyboard.press("Tab")
        expect(page.locator("#code")).to_be_focused()
        outline = page.locator("#code").evaluate("el => getComputedStyle(el).outlineStyle")
        assert outline != "none"

        page.keyboard.type(as_typed_by_a_person(code))
        expect(page.locator("#status")).to_have_attribute("data-state", "paired")
        expect(page.locator("#status-text")).to_contain_text(f"{code[:3]} {code[3:]}")
        peer = mac.wait_for_event("peer_joined")["peer"]
        expect(page.locator("#log")).to_contain_text(f"as {peer}")
        # Encrypted end to end, and both ends show the same string under "Paired".
        secured = mac.wait_for_event("encryption", peer=peer)
        assert secured["encrypted"] is True
        expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
        expect(page.locator("#sas")).to_have_text(secured["sas"])

        # Browser -> mac.
        page.locator("#message").fill("Hello from the browser")
        page.keyboard.press("Enter")
        assert mac.wait_for_event("frame") == {
            "event": "frame",
            "from": peer,
            "data": "Hello from the browser",
            "encrypted": True,
        }

        # Mac -> browser.
        mac.type_line("Hello from the Mac")
        expect(page.locator(".entry-mac .entry-text")).to_have_text(["Hello from the Mac"])
        expect(page.locator(".entry-me .entry-text")).to_have_text(["Hello from the browser"])

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "screenshot-paired.png"))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(ARTIFACTS / "screenshot-paired.png", SCREENSHOT)

        # The mac-client goes: the page says the session is closed.
        assert mac.terminate() == 0
    expect(page.locator("#alert")).to_have_text(ui_message("sessionClosed"))
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#message")).to_be_disabled()
    assert json.loads(mac.lines[-1]) == {"event": "stopped", "reason": "terminated"}


def test_a_wrong_code_is_reported_and_the_right_one_then_pairs(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    with start_mac(relay_local) as mac:
        code = mac.wait_for_event("registered")["code"]
        open_page(page, relay_local)
        page.locator("#code").press_sequentially(other_well_formed_code(code))
        invalid = page_protocol()["errorMessages"]["invalid_code"]
        expect(page.locator("#alert")).to_have_text(invalid)
        expect(page.locator("#code")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#status")).to_have_attribute("data-state", "idle")
        expect(page.locator("#message")).to_be_disabled()
        # The wrong code is selected, so typing the right one replaces it.
        page.keyboard.type(code)
        expect(page.locator("#status")).to_have_attribute("data-state", "paired")
        mac.wait_for_event("peer_joined")
        mac.terminate()


def test_too_many_wrong_codes_close_the_connection_with_a_clear_message(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    with start_mac(relay_local) as mac:
        code = mac.wait_for_event("registered")["code"]
        open_page(page, relay_local)
        wrong = other_well_formed_code(code)
        for _ in range(protocol.DEFAULT_MAX_AUTH_ATTEMPTS - 1):
            page.locator("#code").fill("")
            page.locator("#code").press_sequentially(wrong)
            # Submitted on the sixth character ("checking"); "idle" again once answered.
            expect(page.locator("#status")).to_have_attribute("data-state", "idle")
            expect(page.locator("#alert")).to_have_text(page_protocol()["errorMessages"]["invalid_code"])
        page.locator("#code").fill("")
        page.locator("#code").press_sequentially(wrong)
        expect(page.locator("#alert")).to_have_text(page_protocol()["errorMessages"]["too_many_attempts"])
        expect(page.locator("#status")).to_have_attribute("data-state", "blocked")
        # The relay closes the connection; that close is expected, not a "lost connection".
        page.wait_for_function("() => state.socket === null")
        expect(page.locator("#alert")).to_have_text(page_protocol()["errorMessages"]["too_many_attempts"])
        expect(page.locator("#status")).to_have_attribute("data-state", "blocked")
        # A fresh connection with the right code still pairs: the limit is per connection.
        page.locator("#code").fill("")
        page.locator("#code").press_sequentially(code)
        expect(page.locator("#status")).to_have_attribute("data-state", "paired")
        mac.terminate()


def test_mac_sends_to_one_browser_with_at_peer(relay_local: RelayLocalProcess, chromium: Browser) -> None:
    contexts = [chromium.new_context(), chromium.new_context()]
    try:
        pages = [context.new_page() for context in contexts]
        with start_mac(relay_local) as mac:
            code = mac.wait_for_event("registered")["code"]
            peers = []
            for page in pages:
                open_page(page, relay_local)
                page.locator("#code").press_sequentially(code)
                expect(page.locator("#status")).to_have_attribute("data-state", "paired")
                peers.append(mac.wait_for_event("peer_joined")["peer"])
            mac.type_line(f"@{peers[1]} only for the second")
            mac.type_line("for everyone")
            # Two sends in a row: the relay does not promise their order (PROTOCOL.md).
            second = pages[1].locator(".entry-mac .entry-text")
            expect(second).to_have_count(2)
            assert sorted(second.all_inner_texts()) == ["for everyone", "only for the second"]
            expect(pages[0].locator(".entry-mac .entry-text")).to_have_text(["for everyone"])
            pages[0].locator("#leave-button").click()
            assert mac.wait_for_event("peer_left")["peers"] == [peers[1]]
            mac.terminate()
    finally:
        for context in contexts:
            context.close()


@pytest.mark.slow
def test_relay_crash_loses_the_page_and_gives_the_mac_a_new_session(browser_page: Page) -> None:
    ws_port, http_port = free_port(), free_port()
    relay = start_project_relay("--ws-port", str(ws_port), "--http-port", str(http_port))
    try:
        with start_mac(relay, "--backoff-initial", "0.2", "--backoff-max", "1") as mac:
            first = mac.wait_for_event("registered")["code"]
            open_page(browser_page, relay)
            browser_page.locator("#code").press_sequentially(first)
            expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")
            assert relay.active_sessions() == 1

            relay.crash()
            # The session is resumable: the page tries to take its place back first.
            expect(browser_page.locator("#alert")).to_have_text(ui_message("resuming"))
            mac.wait_for_event("disconnected")
            mac.wait_for_event("reconnecting")

            relay = start_project_relay("--ws-port", str(ws_port), "--http-port", str(http_port))
            # The crashed relay's sessions are gone with it: both resumes are refused, so
            # session 2 is a new one, and the page asks for a code again.
            second = mac.wait_for_event("registered", session=2, new_session=True)["code"]
            expect(browser_page.locator("#alert")).to_have_text(page_protocol()["errorMessages"]["invalid_token"])
            expect(browser_page.locator("#status")).to_have_attribute("data-state", "idle")
            assert relay.active_sessions() == 1
            browser_page.locator("#code").fill("")
            browser_page.locator("#code").press_sequentially(second)
            expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")
            mac.process.send_signal(signal.SIGTERM)
            assert mac.finish() == 0
    finally:
        relay.stop()


def test_approval_mode_the_mac_admits_then_kicks_the_browser(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    with start_mac(relay_local, "--approve") as mac:
        code = mac.wait_for_event("registered")["code"]
        open_page(page, relay_local)
        page.locator("#code").press_sequentially(code)
        expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
        expect(page.locator("#alert")).to_have_text(ui_message("waiting"))
        expect(page.locator("#message")).to_be_disabled()
        request = mac.wait_for_event("join_request")
        assert request["waiting"] == [request["peer"]]

        mac.type_line(f"/admit {request['peer']}")
        expect(page.locator("#status")).to_have_attribute("data-state", "paired")
        assert mac.wait_for_event("peer_joined")["peers"] == [request["peer"]]

        mac.type_line(f"/kick {request['peer']}")
        expect(page.locator("#alert")).to_have_text(ui_message("kicked"))
        expect(page.locator("#status")).to_have_attribute("data-state", "closed")
        assert mac.wait_for_event("peer_left")["peers"] == []
        mac.terminate()
