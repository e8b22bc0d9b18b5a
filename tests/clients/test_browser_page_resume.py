"""The page and resumable sessions (issue 11), and the new error codes of issues 10 and 11,
in Chromium against a scripted relay that plays the wire protocol as the issues define it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from relay import protocol
from relay_mac import e2e

from tests.clients.page_driver import (
    GOOD_CODE,
    PEER,
    browser_sends,
    open_page,
    pair,
    play_mac,
    send_message,
    wait_for_send,
)
from tests.clients.page_source import page_protocol, ui_message
from tests.clients.scripted_relay import RelayScript, ScriptedRelay

pytestmark = pytest.mark.browser

STORAGE_KEY = "pairing-relay.resume"


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    with ScriptedRelay() as server:
        yield server


@pytest.fixture
def silent_mac() -> Iterator[ScriptedRelay]:
    """The mac says nothing to a commit, so the test plays it with relay_mac.e2e."""
    with ScriptedRelay(RelayScript(decline_e2e=False)) as server:
        yield server


def paired_and_encrypted(page: Page, site: str, relay: ScriptedRelay) -> e2e.Channel:
    """The page paired, its key agreed with the test playing the mac; the mac's channel."""
    open_page(page, site, relay.url)
    pair(page)
    channel = play_mac(relay)
    expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
    return channel


def stored(page: Page) -> Any:
    return json.loads(page.evaluate(f"window.sessionStorage.getItem({STORAGE_KEY!r})") or "null")


def actions_on(relay: ScriptedRelay, connection: int) -> list[str]:
    return [r.message["action"] for r in relay.received if r.connection == connection]


def peer_away_mac() -> dict[str, Any]:
    return {"type": protocol.MessageType.PEER_AWAY.value, "peer": protocol.MAC_PEER}


def peer_back_mac() -> dict[str, Any]:
    return {"type": protocol.MessageType.PEER_BACK.value, "peer": protocol.MAC_PEER}


def error_text(code: str) -> str:
    return str(page_protocol()["errorMessages"][code])


def test_the_token_is_kept_in_session_storage_and_a_drop_resumes_with_it(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    first = relay.token("browser")
    assert stored(page)["token"] == first
    relay.drop()
    relay.wait_until(lambda: relay.connection_count() == 2 and len(relay.messages("resume")) == 1)
    assert relay.messages("resume")[0].message == {"action": "resume", "token": first}
    assert actions_on(relay, 1)[0] == "resume"  # no auth: the code is not asked for again
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")
    expect(page.locator("#status-text")).to_contain_text("K7M 2QX")
    expect(page.locator(".entry-system").last).to_have_text(ui_message("e2eDeclined"))
    expect(page.get_by_text("Reconnected: still paired with session K7M 2QX.")).to_be_visible()
    assert stored(page)["token"] == relay.token("browser") != first
    # A new key agreement after the resume (here the mac declines it).
    assert [d.get("hs") for d in browser_sends(relay)] == ["commit", "commit"]
    send_message(page, "after the drop")
    relay.wait_until(lambda: "after the drop" in browser_sends(relay))


def test_reconnects_back_off_while_the_relay_is_unreachable(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    relay.stop_listening()
    expect(page.locator("#status")).to_have_attribute("data-state", "resuming")
    expect(page.locator("#alert")).to_have_text(ui_message("resuming"))
    expect(page.locator("#leave-button")).to_be_visible()
    expect(page.locator("#message")).to_be_disabled()


def test_a_reload_keeps_the_pairing(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    token = relay.token("browser")
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")
    expect(page.locator("#status-text")).to_contain_text("K7M 2QX")
    relay.wait_until(lambda: len(relay.messages("resume")) == 1)
    assert relay.messages("resume")[0].message == {"action": "resume", "token": token}
    assert len(relay.messages("auth")) == 1
    assert stored(page)["token"] == relay.token("browser")
    expect(page.locator("#code")).to_be_disabled()
    expect(page.locator("#leave-button")).to_be_visible()


def test_a_refused_resume_says_so_and_forgets_the_token(browser_page: Page, static_site: str) -> None:
    with ScriptedRelay(RelayScript(resume_reply="invalid")) as relay:
        page = browser_page
        open_page(page, static_site, relay.url)
        pair(page)
        page.reload()
        expect(page.locator("#alert")).to_have_text(error_text("invalid_token"))
        expect(page.locator("#status")).to_have_attribute("data-state", "idle")
        assert stored(page) is None
        # The code can be entered again, on the same connection.
        pair(page)
        assert len(relay.messages("auth")) == 2


def test_the_mac_away_shows_mac_reconnecting_and_back_shows_paired(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    expect(page.locator("#message")).to_be_enabled()
    relay.push(peer_away_mac())
    expect(page.locator("#status")).to_have_attribute("data-state", "away")
    expect(page.locator("#status-text")).to_have_text("Mac reconnecting\u2026 \u00b7 session K7M 2QX")
    # The relay holds what is sent meanwhile, so sending stays open.
    expect(page.locator("#message")).to_be_enabled()
    send_message(page, "held for the mac")
    relay.wait_until(lambda: "held for the mac" in browser_sends(relay))
    relay.push({"type": "peer_away", "peer": "psomeone"})  # another browser: nothing to show
    relay.push(peer_back_mac())
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")
    expect(page.locator("#status-text")).to_have_text("Paired \u00b7 session K7M 2QX")


def test_a_page_that_resumes_while_its_mac_is_away_shows_mac_reconnecting(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    """It gets no `peer_away` then (it was not connected): `resumed` says the Mac is away."""
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    relay.script.mac_state = "away"
    page.reload()
    relay.wait_until(lambda: len(relay.messages("resume")) == 1)
    expect(page.locator("#status")).to_have_attribute("data-state", "away")
    expect(page.locator("#status-text")).to_have_text("Mac reconnecting\u2026 \u00b7 session K7M 2QX")
    expect(page.get_by_text(ui_message("macAway"))).to_be_visible()
    relay.push(peer_back_mac())
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")
    expect(page.get_by_text(ui_message("macBack"))).to_be_visible()


def test_leave_sends_leave_and_a_reload_then_does_not_resume(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    page.get_by_role("button", name="Leave session").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")
    relay.wait_until(lambda: len(relay.messages("leave")) == 1)
    assert relay.messages("leave")[0].message == {"action": "leave"}
    relay.wait_until(lambda: 0 in relay.close_codes)  # closed once `left` came
    assert stored(page) is None
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")
    assert relay.messages("resume") == []


@pytest.mark.parametrize("closing", ["session_closed", "ended"])
def test_a_closed_session_forgets_the_token(
    browser_page: Page, static_site: str, relay: ScriptedRelay, closing: str
) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    relay.push({"type": closing})
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#alert")).to_have_text(ui_message("sessionClosed"))
    assert stored(page) is None


def test_banned_gets_its_own_message(browser_page: Page, static_site: str, relay: ScriptedRelay) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    relay.script.accept_codes = frozenset()
    page.locator("#code").press_sequentially(GOOD_CODE)
    relay.wait_until(lambda: len(relay.messages("auth")) == 1)
    relay.push(protocol.error(protocol.ErrorCode.BANNED))
    expect(page.locator("#alert")).to_contain_text(error_text("banned"))
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def test_a_frame_that_could_not_be_held_is_explained(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, relay.url)
    pair(page)
    relay.push(peer_away_mac())
    relay.push(protocol.error(protocol.ErrorCode.PEER_AWAY))
    expect(page.locator("#alert")).to_have_text(error_text("peer_away"))
    expect(page.locator("#status")).to_have_attribute("data-state", "away")


# ---- encryption across a resume -------------------------------------------------------------


def test_frames_held_for_the_page_open_with_the_old_keys_then_a_new_agreement_is_made(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    page, relay = browser_page, silent_mac
    old = paired_and_encrypted(page, static_site, relay)
    relay.script.held = [
        protocol.frame(protocol.MAC_PEER, old.seal("held 1")),
        protocol.frame(protocol.MAC_PEER, old.seal("held 2")),
    ]
    relay.drop()
    # After `resumed` the page commits again; the held frames open with the keys it kept.
    commit = wait_for_send(relay, 3)
    assert commit["hs"] == "commit"
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["held 1", "held 2"])
    expect(page.locator(".entry-mac .entry-plain")).to_have_count(0)
    mac = e2e.MacHandshake(GOOD_CODE, PEER)
    relay.push(protocol.frame(protocol.MAC_PEER, mac.on_commit(commit)))
    new = mac.on_reveal(wait_for_send(relay, 4))
    expect(page.locator("#sas")).to_have_text(e2e.spaced_sas(new.sas))
    # The old keys are dropped once the new ones exist.
    relay.push(protocol.frame(protocol.MAC_PEER, old.seal("stale")))
    expect(page.locator(".entry-rejected")).to_have_count(1)
    relay.push(protocol.frame(protocol.MAC_PEER, new.seal("fresh")))
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["held 1", "held 2", "fresh"])
    send_message(page, "sealed anew")
    assert new.open(wait_for_send(relay, 5)) == "sealed anew"


def test_a_frame_that_comes_before_resumed_is_shown(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    """The relay may post a frame straight to the resuming connection, before `resumed`."""
    page, relay = browser_page, silent_mac
    old = paired_and_encrypted(page, static_site, relay)
    relay.script.before_resumed = [protocol.frame(protocol.MAC_PEER, old.seal("straight to the new connection"))]
    relay.drop()
    assert wait_for_send(relay, 3)["hs"] == "commit"
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["straight to the new connection"])
    expect(page.locator(".entry-rejected")).to_have_count(0)


def test_after_a_reload_held_frames_cannot_be_opened_and_are_reported(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    """The keys are not extractable and live in memory only: a reload loses them."""
    page, relay = browser_page, silent_mac
    old = paired_and_encrypted(page, static_site, relay)
    relay.script.held = [protocol.frame(protocol.MAC_PEER, old.seal("held"))]
    page.reload()
    expect(page.locator(".entry-rejected")).to_have_count(1)
    expect(page.locator(".entry-rejected")).to_have_attribute("data-reason", "no_keys")
    expect(page.locator(".entry-mac")).to_have_count(0)
    assert wait_for_send(relay, 3)["hs"] == "commit"


def test_a_rekey_that_crosses_the_pages_own_commit_is_answered_by_that_commit(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    """Both sides resumed and start over at once: the Mac's answer to the page's commit is
    the new agreement its rekey asks for. Starting over again would leave that answer
    stale (rejected, reported to the person) and make a second agreement."""
    page = browser_page
    relay = silent_mac
    open_page(page, static_site, relay.url)
    pair(page)
    assert wait_for_send(relay, 1)["hs"] == "commit"
    relay.push(protocol.frame(protocol.MAC_PEER, e2e.rekey_message()))
    channel = play_mac(relay)
    expect(page.locator("#sas")).to_have_text(e2e.spaced_sas(channel.sas))
    send_message(page, "one agreement")
    assert channel.open(wait_for_send(relay, 3)) == "one agreement"
    assert [d.get("hs") for d in browser_sends(relay)[:2]] == ["commit", "reveal"]
    expect(page.locator(".entry-rejected")).to_have_count(0)


def test_the_mac_back_from_away_rekeys_and_earlier_frames_still_open(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    page, relay = browser_page, silent_mac
    old = paired_and_encrypted(page, static_site, relay)
    relay.push(peer_away_mac())
    expect(page.locator("#status")).to_have_attribute("data-state", "away")
    relay.push(peer_back_mac())
    relay.push(protocol.frame(protocol.MAC_PEER, e2e.rekey_message()))
    commit = wait_for_send(relay, 3)
    assert commit["hs"] == "commit"
    # Sealed by the mac before its rekey, arriving after it: still opens.
    relay.push(protocol.frame(protocol.MAC_PEER, old.seal("sent before the rekey")))
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["sent before the rekey"])
    mac = e2e.MacHandshake(GOOD_CODE, PEER)
    relay.push(protocol.frame(protocol.MAC_PEER, mac.on_commit(commit)))
    new = mac.on_reveal(wait_for_send(relay, 4))
    expect(page.locator("#sas")).to_have_text(e2e.spaced_sas(new.sas))
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")
