"""The page's e2e code (WebCrypto in Chromium) against the shared vectors, and its copy of the layer's facts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.clients import e2e_vectors
from tests.clients.page_source import APP_JS

pytestmark = pytest.mark.browser

VECTORS = e2e_vectors.load()
E2E_BLOCK = re.compile(r"/\* E2E-BEGIN \*/(?P<json>.*?)/\* E2E-END \*/", re.DOTALL)


def page_e2e_constants() -> dict[str, Any]:
    blocks = E2E_BLOCK.findall(APP_JS)
    assert len(blocks) == 1, "app.js must hold exactly one E2E-BEGIN ... E2E-END block"
    return json.loads(blocks[0])  # type: ignore[no-any-return]


def test_the_pages_copy_of_the_layer_matches_the_vectors_and_so_the_module() -> None:
    assert page_e2e_constants() == VECTORS["constants"] == e2e_vectors.constants()


def test_the_page_explains_every_rejection_reason() -> None:
    body = re.search(r"const E2E_REASON_TEXT = Object\.freeze\(\{(.*?)\}\);", APP_JS, re.DOTALL)
    assert body
    assert set(re.findall(r"^\s+(\w+):", body.group(1), re.MULTILINE)) == set(VECTORS["constants"]["reasons"])


@pytest.fixture
def page(browser_page: Page, static_site: str) -> Page:
    browser_page.goto(f"{static_site}/")
    browser_page.wait_for_function("() => typeof deriveSession === 'function'")
    return browser_page


# Runs in the page: every check returns what it computed, and Python compares.
RUN_VECTORS = """
async (vectors) => {
  const out = { handshakes: [], envelopes: [], rejections: [], windows: [] };
  async function privateKey(handshake, side) {
    const jwk = { kty: "OKP", crv: "X25519", d: handshake[side + "Private"], x: handshake[side + "Public"] };
    return crypto.subtle.importKey("jwk", jwk, { name: "X25519" }, false, ["deriveBits"]);
  }
  for (const h of vectors.handshakes) {
    const browserPublic = b64urlDecode(h.browserPublic, 32);
    const macPublic = b64urlDecode(h.macPublic, 32);
    const transcript = transcriptBytes(h.code, h.macPeer, h.browserPeer, browserPublic, macPublic);
    const keys = await deriveSession(await privateKey(h, "browser"), macPublic, transcript);
    out.handshakes.push({
      commit: b64urlEncode(await sha256(browserPublic)),
      transcript: b64urlEncode(transcript),
      browserToMacKey: b64urlEncode(keys.browserToMac),
      macToBrowserKey: b64urlEncode(keys.macToBrowser),
      sas: keys.sas,
    });
  }
  async function keyOf(vector, usage) {
    const raw = b64urlDecode(vectors.handshakes[vector.handshake][vector.direction + "Key"]);
    return aesKey(raw, usage);
  }
  for (const v of vectors.envelopes) {
    const sealed = await sealBytes(await keyOf(v, "encrypt"), v.counter, new TextEncoder().encode(v.plaintext));
    const opened = await openEnvelope(await keyOf(v, "decrypt"), new ReplayWindow(), v.envelope);
    out.envelopes.push({ sealed, opened, stringified: JSON.stringify(v.data) });
  }
  const first = vectors.envelopes[0];
  for (const r of vectors.rejections) {
    const window = new ReplayWindow();
    const key = await keyOf(first, "decrypt");
    let reason = null;
    try {
      await openEnvelope(key, window, r.envelope);
    } catch (error) {
      reason = error instanceof E2eError ? error.reason : "unexpected: " + error;
    }
    const stillOpens = JSON.stringify(await openEnvelope(key, window, first.envelope)) === JSON.stringify(first.data);
    out.rejections.push({ reason, stillOpens });
  }
  for (const w of vectors.windows) {
    const sealKey = await keyOf(first, "encrypt");
    const openKey = await keyOf(first, "decrypt");
    const window = new ReplayWindow();
    const reasons = [];
    for (const counter of w.counters) {
      const envelope = await sealEnvelope(sealKey, counter, "frame " + counter);
      try {
        const data = await openEnvelope(openKey, window, envelope);
        reasons.push(data === "frame " + counter ? null : "wrong data");
      } catch (error) {
        reasons.push(error.reason);
      }
    }
    out.windows.push(reasons);
  }
  return out;
}
"""


def test_the_page_computes_every_vector(page: Page) -> None:
    result = page.evaluate(RUN_VECTORS, VECTORS)
    for computed, vector in zip(result["handshakes"], VECTORS["handshakes"], strict=True):
        assert computed == {
            "commit": vector["messages"]["commit"]["commit"],
            "transcript": vector["transcript"],
            "browserToMacKey": vector["browserToMacKey"],
            "macToBrowserKey": vector["macToBrowserKey"],
            "sas": vector["sas"],
        }
    for computed, vector in zip(result["envelopes"], VECTORS["envelopes"], strict=True):
        assert computed["sealed"] == vector["envelope"]
        assert computed["opened"] == vector["data"]
    for computed, vector in zip(result["rejections"], VECTORS["rejections"], strict=True):
        assert computed == {"reason": vector["reason"], "stillOpens": True}, vector["why"]
    assert result["windows"] == [w["reasons"] for w in VECTORS["windows"]]


def test_a_low_order_key_is_a_bad_handshake_in_the_page(page: Page) -> None:
    reason = page.evaluate(
        """async () => {
          const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
          try {
            await deriveSession(pair.privateKey, new Uint8Array(32), new Uint8Array(0));
            return "accepted";
          } catch (error) {
            return error.reason;
          }
        }"""
    )
    assert reason == "bad_handshake"
