"""The shared test vectors of the e2e layer (clients/e2e-vectors.json): load, and (re)write.

`python -m tests.clients.e2e_vectors` rewrites the file from relay_mac.e2e; the tests
check the Python module (test_e2e_vectors.py) and the page in Chromium
(test_browser_e2e_crypto.py) against the committed file, so neither can drift.
The first handshake uses RFC 7748's X25519 keys, whose shared secret the RFC gives.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from relay_mac import e2e

from tests.support.files import ROOT

VECTORS_PATH = ROOT / "clients" / "e2e-vectors.json"

RFC7748_ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
RFC7748_BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
RFC7748_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def load() -> dict[str, Any]:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def constants() -> dict[str, Any]:
    return {
        "layer": e2e.LAYER,
        "version": e2e.VERSION,
        "macPeer": e2e.MAC_PEER,
        "replayWindow": e2e.REPLAY_WINDOW,
        "maxCounter": e2e.MAX_COUNTER,
        "sasDigits": e2e.SAS_DIGITS,
        "sasBytes": e2e.SAS_BYTES,
        "labels": {
            "browserToMac": e2e.LABEL_BROWSER_TO_MAC,
            "macToBrowser": e2e.LABEL_MAC_TO_BROWSER,
            "sas": e2e.LABEL_SAS,
        },
        "reasons": [reason.value for reason in e2e.Reason],
    }


def _handshake(code: str, browser_peer: str, browser_private_hex: str, mac_private_hex: str) -> dict[str, Any]:
    browser_private = X25519PrivateKey.from_private_bytes(bytes.fromhex(browser_private_hex))
    mac_private = X25519PrivateKey.from_private_bytes(bytes.fromhex(mac_private_hex))
    browser = e2e.BrowserHandshake(code, browser_peer, private=browser_private)
    mac = e2e.MacHandshake(code, browser_peer, private=mac_private)
    commit = browser.commit_message()
    key = mac.on_commit(commit)
    reveal, browser_channel = browser.on_key(key)
    mac_channel = mac.on_reveal(reveal)
    assert browser_channel.keys == mac_channel.keys
    transcript = e2e.Transcript(code, e2e.MAC_PEER, browser_peer, browser.public, mac.public)
    keys = browser_channel.keys
    return {
        "code": code,
        "macPeer": e2e.MAC_PEER,
        "browserPeer": browser_peer,
        "browserPrivate": e2e.b64url(bytes.fromhex(browser_private_hex)),
        "browserPublic": e2e.b64url(browser.public),
        "macPrivate": e2e.b64url(bytes.fromhex(mac_private_hex)),
        "macPublic": e2e.b64url(mac.public),
        "sharedSecret": e2e.b64url(browser_private.exchange(mac_private.public_key())),
        "transcript": e2e.b64url(transcript.encode()),
        "browserToMacKey": e2e.b64url(keys.browser_to_mac),
        "macToBrowserKey": e2e.b64url(keys.mac_to_browser),
        "sas": keys.sas,
        "messages": {"commit": commit, "key": key, "reveal": reveal},
    }


def _envelope(handshake: dict[str, Any], direction: str, counter: int, data: Any) -> dict[str, Any]:
    key = e2e.from_b64url(handshake[f"{direction}Key"])
    sealer = e2e.Sealer(key)
    sealer.counter = counter
    plaintext = e2e.plaintext_of(data)
    return {
        "handshake": 0 if handshake["browserPeer"] == "p3f9a01c2" else 1,
        "direction": direction,
        "counter": counter,
        "data": data,
        "plaintext": plaintext.decode("utf-8"),
        "envelope": sealer.seal_plaintext(plaintext),
    }


def _flip_bit(text: str, byte: int) -> str:
    raw = bytearray(e2e.from_b64url(text))
    raw[byte] ^= 0x01
    return e2e.b64url(bytes(raw))


def build() -> dict[str, Any]:
    first = _handshake("K7M2QX", "p3f9a01c2", RFC7748_ALICE_PRIVATE, RFC7748_BOB_PRIVATE)
    assert e2e.from_b64url(first["sharedSecret"]).hex() == RFC7748_SHARED
    second = _handshake(
        "ABCDEF",
        "p0c7d11e9",
        "a8abababababababababababababababababababababababababababababab6b",
        "c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7",
    )
    envelopes = [
        _envelope(first, "browserToMac", 0, "Hello from the browser"),
        _envelope(first, "macToBrowser", 0, "Hello back"),
        _envelope(first, "browserToMac", 1, {"text": "ünïcødé ✓ 🙂", "n": [1, 2.5, None, True]}),
        _envelope(first, "macToBrowser", e2e.MAX_COUNTER, ""),
        _envelope(second, "browserToMac", 7, "line one\nline two"),
    ]
    sealed = envelopes[0]["envelope"]
    ct = sealed["ct"]

    def rejection(why: str, envelope: dict[str, Any], reason: str) -> dict[str, Any]:
        return {"why": why, "envelope": envelope, "reason": reason}

    cut = e2e.b64url(e2e.from_b64url(ct)[:-1])
    rejections = [
        rejection("one bit of the ciphertext flipped", {**sealed, "ct": _flip_bit(ct, 0)}, "tampered"),
        rejection("one bit of the tag flipped", {**sealed, "ct": _flip_bit(ct, -1)}, "tampered"),
        rejection("the counter changed", {**sealed, "n": 1}, "tampered"),
        rejection("the last byte cut off", {**sealed, "ct": cut}, "tampered"),
        rejection("shorter than a tag", {**sealed, "ct": e2e.b64url(b"\x00" * 15)}, "truncated"),
        rejection("an unknown version", {**sealed, "e2e": 2}, "unsupported_version"),
        rejection("padding in the base64url", {**sealed, "ct": ct + "="}, "malformed"),
        rejection("a negative counter", {**sealed, "n": -1}, "malformed"),
        rejection("a fractional counter", {**sealed, "n": 0.5}, "malformed"),
        rejection("an extra member", {**sealed, "x": 1}, "malformed"),
        rejection("no ciphertext", {"e2e": 1, "n": 0}, "malformed"),
    ]
    windows = [
        {"counters": [0, 1, 2, 2], "reasons": [None, None, None, "replayed"]},
        {"counters": [3, 0, 1, 0], "reasons": [None, None, None, "replayed"]},
        {"counters": [100, 37, 36, 99, 164, 100, 101], "reasons": [None, None, "too_old", None, None, "too_old", None]},
    ]
    return {
        "about": "Test vectors of the pairing relay's end-to-end layer (docs/PROTOCOL.md). "
        "Byte strings are unpadded base64url. Written by `python -m tests.clients.e2e_vectors`; "
        "checked by tests/clients/test_e2e_vectors.py and, in Chromium, test_browser_e2e_crypto.py.",
        "constants": constants(),
        "handshakes": [first, second],
        "envelopes": envelopes,
        "rejections": rejections,
        "windows": windows,
    }


if __name__ == "__main__":
    VECTORS_PATH.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")
