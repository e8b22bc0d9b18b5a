"""relay_mac.e2e against the shared vectors (the page is checked against the same file in Chromium)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from relay_mac import e2e

from tests.clients import e2e_vectors
from tests.clients.e2e_vectors import RFC7748_SHARED

VECTORS = e2e_vectors.load()


def test_the_file_is_what_the_generator_writes() -> None:
    """Regenerating changes nothing: the committed file matches relay_mac.e2e exactly."""
    assert e2e_vectors.build() == VECTORS


def test_constants_match_the_module() -> None:
    assert VECTORS["constants"] == e2e_vectors.constants()


def test_the_first_handshake_uses_rfc7748_keys() -> None:
    assert e2e.from_b64url(VECTORS["handshakes"][0]["sharedSecret"]).hex() == RFC7748_SHARED


@pytest.mark.parametrize("vector", VECTORS["handshakes"], ids=lambda v: v["browserPeer"])
def test_handshake_vectors(vector: dict[str, Any]) -> None:
    browser_private = X25519PrivateKey.from_private_bytes(e2e.from_b64url(vector["browserPrivate"]))
    mac_private = X25519PrivateKey.from_private_bytes(e2e.from_b64url(vector["macPrivate"]))
    browser = e2e.BrowserHandshake(vector["code"], vector["browserPeer"], vector["macPeer"], browser_private)
    mac = e2e.MacHandshake(vector["code"], vector["browserPeer"], vector["macPeer"], mac_private)
    messages = vector["messages"]
    assert browser.commit_message() == messages["commit"]
    assert mac.on_commit(messages["commit"]) == messages["key"]
    reveal, browser_channel = browser.on_key(messages["key"])
    assert reveal == messages["reveal"]
    mac_channel = mac.on_reveal(reveal)
    transcript = e2e.Transcript(
        vector["code"], vector["macPeer"], vector["browserPeer"], browser.public, mac.public
    ).encode()
    assert e2e.b64url(transcript) == vector["transcript"]
    for channel in (browser_channel, mac_channel):
        assert e2e.b64url(channel.keys.browser_to_mac) == vector["browserToMacKey"]
        assert e2e.b64url(channel.keys.mac_to_browser) == vector["macToBrowserKey"]
        assert channel.sas == vector["sas"]
    assert len(vector["sas"]) == e2e.SAS_DIGITS
    assert vector["sas"].isdigit()


def key_of(envelope_vector: dict[str, Any]) -> bytes:
    handshake = VECTORS["handshakes"][envelope_vector["handshake"]]
    return e2e.from_b64url(handshake[f"{envelope_vector['direction']}Key"])


@pytest.mark.parametrize("vector", VECTORS["envelopes"], ids=lambda v: f"{v['direction']}-{v['counter']}")
def test_envelope_vectors_seal_and_open(vector: dict[str, Any]) -> None:
    sealer = e2e.Sealer(key_of(vector))
    sealer.counter = vector["counter"]
    assert e2e.plaintext_of(vector["data"]).decode() == vector["plaintext"]
    assert sealer.seal(vector["data"]) == vector["envelope"]
    assert e2e.Opener(key_of(vector)).open(vector["envelope"]) == vector["data"]


@pytest.mark.parametrize("vector", VECTORS["rejections"], ids=lambda v: v["why"])
def test_rejection_vectors(vector: dict[str, Any]) -> None:
    opener = e2e.Opener(key_of(VECTORS["envelopes"][0]))
    with pytest.raises(e2e.Rejected) as rejected:
        opener.open(vector["envelope"])
    assert rejected.value.reason == vector["reason"]
    # Nothing rejected moves the window: the genuine envelope still opens afterwards.
    assert opener.open(VECTORS["envelopes"][0]["envelope"]) == VECTORS["envelopes"][0]["data"]


@pytest.mark.parametrize("vector", VECTORS["windows"], ids=lambda v: str(v["counters"]))
def test_replay_window_vectors(vector: dict[str, Any]) -> None:
    key = key_of(VECTORS["envelopes"][0])
    sealed: dict[int, dict[str, Any]] = {}
    for counter in set(vector["counters"]):
        sealer = e2e.Sealer(key)
        sealer.counter = counter
        sealed[counter] = sealer.seal(f"frame {counter}")
    opener = e2e.Opener(key)
    outcomes: list[str | None] = []
    for counter in vector["counters"]:
        try:
            assert opener.open(sealed[counter]) == f"frame {counter}"
            outcomes.append(None)
        except e2e.Rejected as rejected:
            outcomes.append(rejected.reason.value)
    assert outcomes == vector["reasons"]
