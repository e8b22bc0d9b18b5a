"""Issue 13 end to end: the page (Chromium) and relay-mac pair through relay-local, each
through a recording WebSocket proxy that plays the relay's operator.

- what is typed never crosses the proxy in clear, while both ends show it;
- a proxy that flips one bit makes the receiver reject that frame (reported, never shown);
- a proxy that substitutes keys (a man in the middle) makes the two strings differ.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from relay_mac import e2e

from tests.clients.recording_proxy import DOWN, UP, RecordingProxy, Rewrite
from tests.support.processes import RunningProcess, console_script
from tests.support.relay_local import RelayLocalProcess, start_project_relay

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def relay_local() -> Iterator[RelayLocalProcess]:
    relay = start_project_relay()
    yield relay
    relay.stop()


def pair_through(
    proxy: RecordingProxy, relay: RelayLocalProcess, page: Page, *mac_args: str
) -> tuple[RunningProcess, str]:
    mac = RunningProcess([console_script("relay-mac"), "--json", "--url", proxy.url, *mac_args])
    code = mac.wait_for_event("registered")["code"]
    page.goto(f"{relay.http_url}/?relay={proxy.url}")
    page.locator("#code").press_sequentially(code)
    expect(page.locator("#status")).to_have_attribute("data-state", "paired")
    peer = mac.wait_for_event("peer_joined")["peer"]
    return mac, peer


def send_from_page(page: Page, text: str) -> None:
    page.locator("#message").fill(text)
    page.locator("#message").press("Enter")
    expect(page.locator("#message")).to_have_value("")


def test_typed_text_never_crosses_the_relay_in_clear(relay_local: RelayLocalProcess, browser_page: Page) -> None:
    page = browser_page
    with RecordingProxy(relay_local.ws_url) as proxy:
        mac, peer = pair_through(proxy, relay_local, page)
        with mac:
            secured = mac.wait_for_event("encryption", peer=peer)
            expect(page.locator("#sas")).to_have_text(secured["sas"])
            send_from_page(page, "The launch code is swordfish")
            assert mac.wait_for_event("frame")["data"] == "The launch code is swordfish"
            mac.type_line("Roger, the password is tuna")
            expect(page.locator(".entry-mac .entry-text")).to_have_text(["Roger, the password is tuna"])
            expect(page.locator(".entry-mac")).to_have_attribute("data-encrypted", "true")
            mac.terminate()
        crossed = proxy.all_text()
        # The proxy saw the traffic (sealed frames both ways)...
        assert len(proxy.of("browser", UP)) >= 3
        assert any(e2e.kind_of(m.get("data")) == e2e.Kind.SEALED for m in proxy.of("mac", UP))
        # ...but never the words.
        for secret in ("swordfish", "launch code", "tuna", "Roger"):
            assert secret not in crossed


def flip_first_sealed_bit(from_role: str) -> tuple[Rewrite, list[str]]:
    """Flip one bit of the first sealed frame `from_role` sends; note the text it carried."""
    flipped: list[str] = []

    def rewrite(role: str, direction: str, message: dict[str, Any]) -> dict[str, Any]:
        data: Any = message.get("data")
        if role != from_role or direction != UP or flipped or e2e.kind_of(data) != e2e.Kind.SEALED:
            return message
        raw = bytearray(e2e.from_b64url(data["ct"]))
        raw[len(raw) // 2] ^= 0x04
        flipped.append(data["ct"])
        return {**message, "data": {**data, "ct": e2e.b64url(bytes(raw))}}

    return rewrite, flipped


def test_a_flipped_bit_from_the_page_is_rejected_by_relay_mac(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    rewrite, flipped = flip_first_sealed_bit("browser")
    with RecordingProxy(relay_local.ws_url, rewrite) as proxy:
        mac, peer = pair_through(proxy, relay_local, page)
        with mac:
            mac.wait_for_event("encryption", peer=peer)
            expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
            send_from_page(page, "altered on the way")
            rejected = mac.wait_for_event("rejected")
            assert rejected["from"] == peer
            assert rejected["reason"] == "tampered"
            send_from_page(page, "this one is intact")
            assert mac.wait_for_event("frame")["data"] == "this one is intact"
            mac.terminate()
        assert flipped
        frames = [line for line in mac.lines if '"event":"frame"' in line]
        assert len(frames) == 1
        assert "altered on the way" not in "\n".join(mac.lines)


def test_a_flipped_bit_from_relay_mac_is_rejected_by_the_page(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    rewrite, flipped = flip_first_sealed_bit("mac")
    with RecordingProxy(relay_local.ws_url, rewrite) as proxy:
        mac, peer = pair_through(proxy, relay_local, page)
        with mac:
            mac.wait_for_event("encryption", peer=peer)
            expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
            mac.type_line("altered on the way")
            expect(page.locator(".entry-rejected")).to_have_attribute("data-reason", "tampered")
            mac.type_line("this one is intact")
            expect(page.locator(".entry-mac .entry-text")).to_have_text(["this one is intact"])
            mac.terminate()
        assert flipped
        expect(page.locator("#log")).not_to_contain_text("altered on the way")


class KeySubstitutingOperator:
    """The relay's operator as a man in the middle: its own handshake with each side,
    reading every frame and sealing it again for the other."""

    def __init__(self) -> None:
        self.code = ""
        self.peer = ""
        self.to_mac: e2e.BrowserHandshake | None = None  # poses as the browser
        self.to_browser: e2e.MacHandshake | None = None  # poses as the mac
        self.browser_commit: dict[str, Any] | None = None
        self.reveal_for_mac: dict[str, Any] | None = None
        self.mac_side: e2e.Channel | None = None
        self.browser_side: e2e.Channel | None = None
        self.read: list[Any] = []

    def __call__(self, role: str, direction: str, message: dict[str, Any]) -> dict[str, Any]:
        if role == "browser" and direction == DOWN and message.get("type") == "authenticated":
            self.code, self.peer = message["code"], message["peer"]
        if direction != UP or message.get("action") != "send":
            return message
        data: Any = message.get("data")
        kind = e2e.kind_of(data)
        if role == "browser" and kind == e2e.Kind.HANDSHAKE and data["hs"] == "commit":
            self.browser_commit = data
            self.to_mac = e2e.BrowserHandshake(self.code, self.peer)
            self.to_browser = e2e.MacHandshake(self.code, self.peer)
            return {**message, "data": self.to_mac.commit_message()}
        if role == "mac" and kind == e2e.Kind.HANDSHAKE and data["hs"] == "key":
            assert self.to_mac
            assert self.to_browser
            assert self.browser_commit
            self.reveal_for_mac, self.mac_side = self.to_mac.on_key(data)
            return {**message, "data": self.to_browser.on_commit(self.browser_commit)}
        if role == "browser" and kind == e2e.Kind.HANDSHAKE and data["hs"] == "reveal":
            assert self.to_browser
            assert self.reveal_for_mac
            self.browser_side = self.to_browser.on_reveal(data)
            return {**message, "data": self.reveal_for_mac}
        if kind == e2e.Kind.SEALED and self.mac_side and self.browser_side:
            source, target = self.browser_side, self.mac_side
            if role == "mac":
                source, target = target, source
            plain = source.open(data)
            self.read.append(plain)
            return {**message, "data": target.seal(copy.deepcopy(plain))}
        return message


def test_a_key_substituting_relay_makes_the_two_strings_differ(
    relay_local: RelayLocalProcess, browser_page: Page
) -> None:
    page = browser_page
    operator = KeySubstitutingOperator()
    with RecordingProxy(relay_local.ws_url, operator) as proxy:
        mac, peer = pair_through(proxy, relay_local, page)
        with mac:
            mac_sas = mac.wait_for_event("encryption", peer=peer)["sas"]
            expect(page.locator("#e2e-status")).to_have_attribute("data-state", "encrypted")
            page_sas = page.locator("#sas").inner_text()
            # The attack works on the wire: both ends think they are encrypted, and the
            # operator reads everything...
            send_from_page(page, "read by the man in the middle")
            assert mac.wait_for_event("frame")["data"] == "read by the man in the middle"
            assert operator.read == ["read by the man in the middle"]
            mac.terminate()
        # ...but the person comparing the two strings sees it.
        assert page_sas != mac_sas
        assert operator.browser_side is not None
        assert operator.mac_side is not None
        assert e2e.spaced_sas(operator.browser_side.sas) == page_sas
        assert e2e.spaced_sas(operator.mac_side.sas) == mac_sas


def test_two_browsers_have_separate_key_agreements_and_strings(
    relay_local: RelayLocalProcess, chromium: Browser
) -> None:
    contexts = [chromium.new_context(), chromium.new_context()]
    try:
        pages = [context.new_page() for context in contexts]
        with RecordingProxy(relay_local.ws_url) as proxy:
            mac = RunningProcess([console_script("relay-mac"), "--json", "--url", proxy.url])
            with mac:
                code = mac.wait_for_event("registered")["code"]
                for page in pages:
                    page.goto(f"{relay_local.http_url}/?relay={proxy.url}")
                    page.locator("#code").press_sequentially(code)
                    peer = mac.wait_for_event("peer_joined")["peer"]
                    mac_sas = mac.wait_for_event("encryption", peer=peer)["sas"]
                    expect(page.locator("#sas")).to_have_text(mac_sas)
                mac.type_line("to both, sealed twice")
                for page in pages:
                    expect(page.locator(".entry-mac .entry-text")).to_have_text(["to both, sealed twice"])
                mac.terminate()
            # One send per browser, each sealed under that browser's own key.
            sealed = [m for m in proxy.of("mac", UP) if e2e.kind_of(m.get("data")) == e2e.Kind.SEALED]
            assert len(sealed) == 2
            assert sealed[0]["to"] != sealed[1]["to"]
            assert sealed[0]["data"]["ct"] != sealed[1]["data"]["ct"]
            assert "to both" not in proxy.all_text()
    finally:
        for context in contexts:
            context.close()
