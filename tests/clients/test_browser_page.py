"""The browser page in headless Chromium: code entry, messages, keyboard use, keepalive.

The page is served over HTTP from clients/browser as any static host would. Where it
needs a relay that misbehaves on cue (a dropped connection) or whose traffic the
test counts (keepalive pings), it talks to the scripted relay; the pairing with the
real relay is in test_browser_e2e.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, Route, expect
from relay import protocol

from tests.clients.page_driver import GOOD_CODE, open_page, open_page_on_a_paused_clock, pair, send_message
from tests.clients.page_source import page_protocol, ui_message
from tests.clients.scripted_relay import RelayScript, ScriptedRelay
from tests.support.browser import BROWSER_DIR
from tests.support.processes import free_port

pytestmark = pytest.mark.browser


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    with ScriptedRelay() as server:
        yield server


def outline_of(page: Page, selector: str) -> tuple[str, str]:
    style: list[str] = page.locator(selector).evaluate(
        "el => { const s = getComputedStyle(el); return [s.outlineStyle, s.outlineWidth]; }"
    )
    return style[0], style[1]


# ---- code entry ------------------------------------------------------------------


def test_typing_uppercases_and_accepts_spaces_and_dashes(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site, f"ws://127.0.0.1:{free_port()}")
    browser_page.locator("#code").press_sequentially("k7m- 2q")
    expect(browser_page.locator("#code")).to_have_value("K7M- 2Q")
    expect(browser_page.locator("#code-feedback")).to_have_text("")
    expect(browser_page.locator("#code")).to_have_attribute("aria-invalid", "false")
    # Five code characters: nothing submitted yet.
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "idle")


@pytest.mark.parametrize("typed", ["0", "o", "O", "1", "i", "I", "l", "L"])
def test_excluded_characters_are_rejected_with_a_hint(browser_page: Page, static_site: str, typed: str) -> None:
    open_page(browser_page, static_site, f"ws://127.0.0.1:{free_port()}")
    browser_page.locator("#code").press_sequentially(f"ab{typed}")
    expect(browser_page.locator("#code")).to_have_value("AB")
    expect(browser_page.locator("#code-feedback")).to_have_text(ui_message("codeExcluded", char=typed.upper()))
    expect(browser_page.locator("#code")).to_have_attribute("aria-invalid", "true")


def test_characters_outside_the_alphabet_are_rejected(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site, f"ws://127.0.0.1:{free_port()}")
    browser_page.locator("#code").press_sequentially("a%")
    expect(browser_page.locator("#code")).to_have_value("A")
    expect(browser_page.locator("#code-feedback")).to_have_text(ui_message("codeNotAllowed", char="%"))
    # The hint goes once the person types something valid.
    browser_page.locator("#code").press_sequentially("b")
    expect(browser_page.locator("#code")).to_have_value("AB")
    expect(browser_page.locator("#code-feedback")).to_have_text("")


def test_a_pasted_code_with_bad_characters_keeps_only_the_good_ones(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site, f"ws://127.0.0.1:{free_port()}")
    browser_page.locator("#code").fill("k7m!2")
    expect(browser_page.locator("#code")).to_have_value("K7M2")


def test_enter_on_an_incomplete_code_explains_the_length(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site, f"ws://127.0.0.1:{free_port()}")
    browser_page.locator("#code").press_sequentially("k7m")
    browser_page.keyboard.press("Enter")
    length = page_protocol()["codeLength"]
    expect(browser_page.locator("#code-feedback")).to_have_text(ui_message("codeIncomplete", length=length, count=3))
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "idle")


def test_a_seventh_character_is_refused(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    browser_page.locator("#leave-button").click()
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "idle")
    browser_page.locator("#code").fill("")
    browser_page.locator("#code").fill("ABCDEFG")
    expect(browser_page.locator("#code")).to_have_value("ABCDEF")
    expect(browser_page.locator("#code-feedback")).to_have_text(ui_message("codeTooLong", length=6))


# ---- relay URL -----------------------------------------------------------------------


def test_relay_url_comes_from_the_query_parameter(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site, "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod")
    expect(browser_page.locator("#relay-url")).to_have_value("wss://abc123.execute-api.eu-west-1.amazonaws.com/prod")


def test_relay_url_defaults_to_relay_local_when_served_locally(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site)
    expect(browser_page.locator("#relay-url")).to_have_value("ws://127.0.0.1:3001")


def test_relay_url_is_empty_when_served_from_elsewhere(browser_page: Page) -> None:
    """Deployed as a static file on some host, the page cannot guess the relay."""

    def serve_page_files(route: Route) -> None:
        name = route.request.url.split("static.example/", 1)[1].split("?", 1)[0] or "index.html"
        if not (BROWSER_DIR / name).is_file():  # e.g. relay-local's endpoints document
            route.fulfill(status=404, body="not found")
            return
        types = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
        route.fulfill(
            status=200,
            body=(BROWSER_DIR / name).read_bytes(),
            content_type=types[name.rsplit(".", 1)[1]],
        )

    browser_page.route("http://static.example/**", serve_page_files)
    browser_page.goto("http://static.example/")
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "idle")
    expect(browser_page.locator("#relay-url")).to_have_value("")
    browser_page.locator("#code").press_sequentially(GOOD_CODE)
    expect(browser_page.locator("#alert")).to_have_text(ui_message("relayUrlInvalid"))
    expect(browser_page.locator("#relay-url")).to_be_focused()


def test_an_unreachable_relay_is_reported(browser_page: Page, static_site: str) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    open_page(browser_page, static_site, url)
    browser_page.locator("#code").press_sequentially(GOOD_CODE)
    expect(browser_page.locator("#alert")).to_have_text(ui_message("relayUnreachable", url=url))
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "lost")


# ---- pairing, messages, errors (scripted relay) ---------------------------------------


def test_send_box_is_enabled_only_while_paired(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    open_page(browser_page, static_site, relay.url)
    expect(browser_page.locator("#message")).to_be_disabled()
    expect(browser_page.locator("#send-button")).to_be_disabled()
    pair(browser_page)
    expect(browser_page.locator("#message")).to_be_enabled()
    expect(browser_page.locator("#send-button")).to_be_enabled()
    browser_page.locator("#leave-button").click()
    expect(browser_page.locator("#message")).to_be_disabled()
    expect(browser_page.locator("#send-button")).to_be_disabled()


def test_a_wrong_code_can_be_corrected_on_the_same_connection(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    open_page(browser_page, static_site, relay.url)
    browser_page.locator("#code").press_sequentially("abc-def")
    invalid = page_protocol()["errorMessages"]["invalid_code"]
    expect(browser_page.locator("#alert")).to_have_text(invalid)
    expect(browser_page.locator("#code")).to_have_attribute("aria-invalid", "true")
    expect(browser_page.locator("#code")).to_be_focused()
    # The wrong code is selected, so typing replaces it.
    browser_page.keyboard.type("k7m2qx")
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")
    expect(browser_page.locator("#alert")).to_be_hidden()
    auths = relay.messages("auth")
    assert [a.message["code"] for a in auths] == ["ABCDEF", "K7M2QX"]
    assert {a.connection for a in auths} == {0}


def test_a_dropped_connection_shows_lost_connection_when_the_session_is_not_resumable(
    browser_page: Page, static_site: str
) -> None:
    with ScriptedRelay(RelayScript(resumable=False)) as relay:
        open_page(browser_page, static_site, relay.url)
        pair(browser_page)
        relay.drop()
        expect(browser_page.locator("#alert")).to_have_text(ui_message("connectionLost"))
        expect(browser_page.locator("#status")).to_have_attribute("data-state", "lost")
        expect(browser_page.locator("#message")).to_be_disabled()
        assert relay.messages("resume") == []


def test_frames_are_shown_as_text_never_as_markup(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    relay.push(protocol.frame(protocol.MAC_PEER, "<img src=x onerror=alert(1)>"))
    relay.push(protocol.frame(protocol.MAC_PEER, {"n": 1}))
    mac_entries = browser_page.locator(".entry-mac .entry-text")
    expect(mac_entries).to_have_text(["<img src=x onerror=alert(1)>", '{"n":1}'])
    expect(browser_page.locator("#log img")).to_have_count(0)


@pytest.mark.parametrize("code", [c.value for c in protocol.ErrorCode])
def test_every_relay_error_shows_the_pages_message(
    browser_page: Page, static_site: str, relay: ScriptedRelay, code: str
) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    relay.push({"type": "error", "error": code, "message": "relay text"})
    expect(browser_page.locator("#alert")).to_have_text(page_protocol()["errorMessages"][code])


def test_an_unknown_error_code_shows_the_relays_own_text(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    relay.push({"type": "error", "error": "brand_new_code", "message": "Something new went wrong."})
    expect(browser_page.locator("#alert")).to_have_text("Something new went wrong.")
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")


def test_a_non_json_reply_is_reported_not_fatal(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    relay.push_raw("not json")
    expect(browser_page.locator("#alert")).to_have_text(ui_message("unexpectedReply"))
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")


def test_waiting_for_admission_then_kicked(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    relay.push({"type": "pending"})
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "waiting")
    expect(browser_page.locator("#alert")).to_have_text(ui_message("waiting"))
    relay.push({"type": "kicked"})
    expect(browser_page.locator("#alert")).to_have_text(ui_message("kicked"))
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "closed")


# ---- keepalive (the page's timers run on Playwright's fake clock) -------------------------


def test_the_page_pings_every_keepalive_period_while_paired_and_hides_the_pongs(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    period_ms = page_protocol()["keepaliveSeconds"] * 1000
    open_page_on_a_paused_clock(browser_page, static_site, relay.url)
    pair(browser_page)
    browser_page.clock.run_for(period_ms - 1000)
    # Messages on one connection arrive in order: no ping may precede this one.
    send_message(browser_page, "marker")
    relay.wait_until(lambda: len(relay.user_sends()) == 1)
    assert relay.messages("ping") == []
    browser_page.clock.run_for(1000)
    relay.wait_until(lambda: len(relay.messages("ping")) == 1)
    browser_page.clock.run_for(2 * period_ms)
    relay.wait_until(lambda: len(relay.messages("ping")) == 3)
    assert all(r.message == {"action": "ping"} for r in relay.messages("ping"))
    send_message(browser_page, "after the pongs")
    relay.wait_until(lambda: len(relay.user_sends()) == 2)
    # "Paired", "Not encrypted" (this mac declines e2e) and the two messages: pongs leave no trace.
    expect(browser_page.locator("#log li")).to_have_count(4)
    expect(browser_page.locator("#alert")).to_be_hidden()


def test_no_keepalive_before_pairing(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    period_ms = page_protocol()["keepaliveSeconds"] * 1000
    open_page_on_a_paused_clock(browser_page, static_site, relay.url)
    browser_page.locator("#code").press_sequentially("abcdef")
    expect(browser_page.locator("#alert")).to_be_visible()
    browser_page.clock.run_for(3 * period_ms)
    browser_page.locator("#code").press_sequentially("ghjkmn")
    relay.wait_until(lambda: len(relay.messages("auth")) == 2)
    assert relay.messages("ping") == []


def test_no_keepalive_after_leaving(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    period_ms = page_protocol()["keepaliveSeconds"] * 1000
    open_page_on_a_paused_clock(browser_page, static_site, relay.url)
    pair(browser_page)
    browser_page.locator("#leave-button").click()
    relay.wait_until(lambda: 0 in relay.close_codes)
    browser_page.clock.run_for(3 * period_ms)
    # The code is still in the field: Pair joins again.
    browser_page.locator("#pair-button").click()
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")
    send_message(browser_page, "second session")
    relay.wait_until(lambda: len(relay.user_sends()) == 1)
    assert relay.messages("ping") == []


# ---- keyboard only -----------------------------------------------------------------------


def test_keyboard_only_pairing_and_sending_with_visible_focus(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    open_page(browser_page, static_site, relay.url)
    browser_page.keyboard.press("Tab")
    expect(browser_page.locator("#code")).to_be_focused()
    style, width = outline_of(browser_page, "#code")
    assert style != "none"
    assert width != "0px"
    browser_page.keyboard.press("Tab")
    expect(browser_page.locator("#relay-url")).to_be_focused()
    browser_page.keyboard.press("Tab")
    expect(browser_page.locator("#pair-button")).to_be_focused()
    assert outline_of(browser_page, "#pair-button")[0] != "none"
    browser_page.keyboard.press("Shift+Tab")
    browser_page.keyboard.press("Shift+Tab")
    expect(browser_page.locator("#code")).to_be_focused()
    browser_page.keyboard.type("k7m 2qx")
    expect(browser_page.locator("#status")).to_have_attribute("data-state", "paired")
    # Focus moves to the message box, ready to type.
    expect(browser_page.locator("#message")).to_be_focused()
    browser_page.keyboard.type("typed without a mouse")
    browser_page.keyboard.press("Enter")
    relay.wait_until(lambda: len(relay.user_sends()) == 1)
    assert relay.user_sends()[0].message == {"action": "send", "data": "typed without a mouse"}
    expect(browser_page.locator(".entry-me .entry-text")).to_have_text(["typed without a mouse"])
    expect(browser_page.locator("#message")).to_have_value("")


def test_status_is_announced_politely(browser_page: Page, static_site: str) -> None:
    open_page(browser_page, static_site, f"ws://127.0.0.1:{free_port()}")
    expect(browser_page.locator("#status")).to_have_attribute("role", "status")
    expect(browser_page.locator("#log")).to_have_attribute("aria-live", "polite")
    expect(browser_page.get_by_label("Session code")).to_be_visible()
    expect(browser_page.get_by_label("Relay URL")).to_be_visible()
    expect(browser_page.get_by_label("Message to your Mac")).to_be_visible()
    assert re.search(r"\S", browser_page.locator("#status-text").inner_text())
