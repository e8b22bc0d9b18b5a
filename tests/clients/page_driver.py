"""Driving the browser page in Chromium: open it, pair it, send a line."""

from __future__ import annotations

from urllib.parse import quote

from playwright.sync_api import Page, expect

GOOD_CODE = "K7M2QX"
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
