"""Driving the browser page in Chromium: open it, pair it, send a line."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from playwright.sync_api import Page, expect
from relay import protocol
from relay_mac import e2e

from tests.clients.scripted_relay import ScriptedRelay

GOOD_CODE = "K7M2QX"
PEER = "pbrowser1"  # the scripted relay's peer id for a browser
HOUR_MS = 3_600_000


def open_page(page: Page, site: str, relay_url: str | None = None) -> None:
    suffix = f"?relay={quote(relay_url, safe=':/')}" if relay_url is not None else ""
    page.goto(f"{site}/{suffix}")
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def pair(page: Page, code: str = GOOD_CODE) -> None:
    page.locator("#code").press_sequentially(code)
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")


def open_page_on_a_paused_clock(page: Page, site: str, relay_url: str) -> None:
    """The page's timers then fire only when the test runs the clock, however slow the machine."""
    page.clock.install(time=0)
    open_page(page, site, relay_url)
    # Installed, the fake clock still follows real time; paused, it moves only on run_for.
    page.clock.pause_at(HOUR_MS)


def send_message(page: Page, text: str) -> None:
    page.locator("#message").fill(text)
    page.locator("#message").press("Enter")
    expect(page.locator("#message")).to_have_value("")


# ---- playing the Mac with relay_mac.e2e ---------------------------------------------


def browser_sends(relay: ScriptedRelay) -> list[Any]:
    return [r.message["data"] for r in relay.messages("send")]


def wait_for_send(relay: ScriptedRelay, count: int) -> Any:
    relay.wait_until(lambda: len(browser_sends(relay)) >= count)
    return browser_sends(relay)[count - 1]


def play_mac(relay: ScriptedRelay, sent_before: int = 0) -> e2e.Channel:
    """Answer the page's commit as relay-mac would; return the mac's side of the link."""
    commit = wait_for_send(relay, sent_before + 1)
    assert commit["hs"] == "commit"
    mac = e2e.MacHandshake(GOOD_CODE, PEER)
    relay.push(protocol.frame(protocol.MAC_PEER, mac.on_commit(commit)))
    return mac.on_reveal(wait_for_send(relay, sent_before + 2))
