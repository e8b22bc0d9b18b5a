"""The page's e2e behaviour in Chromium, with a scripted relay and relay_mac.e2e playing the Mac."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from relay import protocol
from relay_mac import e2e

from tests.clients.page_driver import (
    browser_sends,
    open_page,
    open_page_on_a_paused_clock,
    pair,
    play_mac,
    send_message,
    wait_for_send,
)
from tests.clients.page_source import ui_message
from tests.clients.scripted_relay import RelayScript, ScriptedRelay

pytestmark = pytest.mark.browser


@pytest.fixture
def silent_mac() -> Iterator[ScriptedRelay]:
    """A relay whose mac says nothing to a commit: a mac without the layer, or a slow one."""
    with ScriptedRelay(RelayScript(decline_e2e=False)) as server:
        yield server


def test_the_page_pairs_encrypted_and_shows_the_string_under_paired(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, silent_mac.url)
    pair(page)
    expect(page.locator("#message")).to_be_disabled()  # until the link is settled
    mac = play_mac(silent_mac)
    expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
    expect(page.locator("#sas")).to_have_text(e2e.spaced_sas(mac.sas))
    # Under "Paired", in the status area.
    status_box = page.locator("#status").bounding_box()
    e2e_box = page.locator("#e2e-status").bounding_box()
    assert status_box
    assert e2e_box
    assert e2e_box["y"] >= status_box["y"] + status_box["height"]
    send_message(page, "sealed by the page")
    assert mac.open(wait_for_send(silent_mac, 3)) == "sealed by the page"
    silent_mac.push(protocol.frame(protocol.MAC_PEER, mac.seal("sealed by the mac")))
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["sealed by the mac"])
    expect(page.locator(".entry-mac .entry-plain")).to_have_count(0)


def test_replayed_tampered_and_plain_frames_are_rejected_and_never_shown(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    page = browser_page
    open_page(page, static_site, silent_mac.url)
    pair(page)
    mac = play_mac(silent_mac)
    expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
    first = mac.seal("first")
    silent_mac.push(protocol.frame(protocol.MAC_PEER, first))
    silent_mac.push(protocol.frame(protocol.MAC_PEER, first))  # replayed
    tampered = mac.seal("second")
    raw = bytearray(e2e.from_b64url(tampered["ct"]))
    raw[-1] ^= 0x80
    silent_mac.push(protocol.frame(protocol.MAC_PEER, {**tampered, "ct": e2e.b64url(bytes(raw))}))
    silent_mac.push(protocol.frame(protocol.MAC_PEER, {**mac.seal("third"), "ct": "AAAA"}))  # truncated
    silent_mac.push(protocol.frame(protocol.MAC_PEER, "plain text written by the relay"))
    late = [mac.seal(f"m{i}") for i in range(e2e.REPLAY_WINDOW + 2)]
    silent_mac.push(protocol.frame(protocol.MAC_PEER, late[-1]))
    silent_mac.push(protocol.frame(protocol.MAC_PEER, late[0]))  # reordered beyond the window
    silent_mac.push(protocol.frame(protocol.MAC_PEER, late[-2]))  # reordered within it: fine
    expect(page.locator(".entry-mac .entry-text")).to_have_text(
        ["first", f"m{e2e.REPLAY_WINDOW + 1}", f"m{e2e.REPLAY_WINDOW}"]
    )
    reasons = page.locator(".entry-rejected").evaluate_all("items => items.map(item => item.dataset.reason)")
    assert reasons == ["replayed", "tampered", "truncated", "not_encrypted", "too_old"]
    expect(page.locator("#log")).not_to_contain_text("plain text written by the relay")
    expect(page.locator(".entry-rejected").first).to_have_text(
        ui_message("e2eRejected", reason="a replay of a message already received")
    )


def test_a_mac_without_the_layer_gets_plain_frames_and_both_are_marked_not_encrypted(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    page = browser_page
    open_page_on_a_paused_clock(page, static_site, silent_mac.url)
    pair(page)
    wait_for_send(silent_mac, 1)  # the commit, which this mac ignores
    # An old mac may already be talking: held until the page knows the link is plain.
    silent_mac.push(protocol.frame(protocol.MAC_PEER, "hello from an old mac"))
    page.clock.run_for(5_000)
    expect(page.locator("#e2e-status")).to_have_attribute("data-state", "plain")
    expect(page.locator("#e2e-text")).to_have_text(ui_message("e2eNoAnswer"))
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["hello from an old mac"])
    expect(page.locator(".entry-mac .entry-plain")).to_have_text(["not encrypted"])
    send_message(page, "in clear, as the page says")
    assert wait_for_send(silent_mac, 2) == "in clear, as the page says"
    expect(page.locator(".entry-me .entry-plain")).to_have_text(["not encrypted"])


def test_a_mac_with_e2e_off_declines_and_the_page_says_not_encrypted(
    browser_page: Page, static_site: str, relay: ScriptedRelay
) -> None:
    open_page(browser_page, static_site, relay.url)
    pair(browser_page)
    expect(browser_page.locator("#e2e-status")).to_have_attribute("data-state", "plain")
    expect(browser_page.locator("#e2e-text")).to_have_text(ui_message("e2eDeclined"))


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    with ScriptedRelay() as server:
        yield server


def test_a_browser_without_x25519_says_so_and_sends_in_clear(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    page = browser_page
    # As in a browser whose WebCrypto lacks X25519: generateKey rejects the algorithm.
    page.add_init_script(
        """(() => {
          const generateKey = SubtleCrypto.prototype.generateKey;
          SubtleCrypto.prototype.generateKey = function (algorithm, ...rest) {
            if ((algorithm && algorithm.name) === "X25519" || algorithm === "X25519") {
              return Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"));
            }
            return generateKey.call(this, algorithm, ...rest);
          };
        })();"""
    )
    open_page(page, static_site, silent_mac.url)
    pair(page)
    expect(page.locator("#e2e-status")).to_have_attribute("data-state", "plain")
    expect(page.locator("#e2e-text")).to_have_text(ui_message("e2eUnsupported"))
    send_message(page, "no X25519 here")
    assert browser_sends(silent_mac) == ["no X25519 here"]  # no handshake was attempted


def test_a_rekey_from_the_mac_starts_a_fresh_agreement_and_drops_the_old_keys(
    browser_page: Page, static_site: str, silent_mac: ScriptedRelay
) -> None:
    """What a mac that restarted or resumed does: the page makes new keys and a new string."""
    page = browser_page
    open_page(page, static_site, silent_mac.url)
    pair(page)
    old = play_mac(silent_mac)
    expect(page.locator("#sas")).to_have_text(e2e.spaced_sas(old.sas))
    silent_mac.push(protocol.frame(protocol.MAC_PEER, e2e.rekey_message()))
    new = play_mac(silent_mac, sent_before=2)
    expect(page.locator("#sas")).to_have_text(e2e.spaced_sas(new.sas))
    expect(page.locator("#log")).to_contain_text(ui_message("e2eRekey"))
    silent_mac.push(protocol.frame(protocol.MAC_PEER, old.seal("under the old keys")))
    silent_mac.push(protocol.frame(protocol.MAC_PEER, new.seal("under the new keys")))
    expect(page.locator(".entry-mac .entry-text")).to_have_text(["under the new keys"])
    expect(page.locator(".entry-rejected")).to_have_attribute("data-reason", "tampered")
