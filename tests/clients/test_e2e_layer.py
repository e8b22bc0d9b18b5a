"""The e2e layer's rules, beyond the vectors: fresh keys, key substitution, replay, handshake misuse."""

from __future__ import annotations

from typing import Any

import pytest
from relay_mac import e2e


def paired(code: str = "K7M2QX", peer: str = "p3f9a01c2") -> tuple[e2e.Channel, e2e.Channel]:
    browser = e2e.BrowserHandshake(code, peer)
    mac = e2e.MacHandshake(code, peer)
    reveal, browser_channel = browser.on_key(mac.on_commit(browser.commit_message()))
    return browser_channel, mac.on_reveal(reveal)


def test_both_sides_agree_and_frames_flow_both_ways() -> None:
    browser, mac = paired()
    assert browser.sas == mac.sas
    assert mac.open(browser.seal({"text": "hi"})) == {"text": "hi"}
    assert browser.open(mac.seal("back")) == "back"


def test_each_handshake_has_fresh_keys_and_each_direction_its_own() -> None:
    first, _ = paired()
    second, _ = paired()
    assert first.keys.browser_to_mac != second.keys.browser_to_mac
    assert first.keys.browser_to_mac != first.keys.mac_to_browser
    # A frame sealed for one direction does not open in the other.
    browser, _mac = paired()
    with pytest.raises(e2e.Rejected) as rejected:
        browser.open(browser.seal("echo"))
    assert rejected.value.reason == e2e.Reason.TAMPERED


def test_counters_never_repeat() -> None:
    browser, _ = paired()
    counters = [browser.seal(i)["n"] for i in range(100)]
    assert counters == list(range(100))


def test_the_transcript_binds_code_and_peers() -> None:
    browser = e2e.BrowserHandshake("K7M2QX", "p3f9a01c2")
    mac = e2e.MacHandshake("K7M2QX", "pOTHER001")  # the mac thinks it talks to another browser
    reveal, browser_channel = browser.on_key(mac.on_commit(browser.commit_message()))
    mac_channel = mac.on_reveal(reveal)
    assert browser_channel.keys != mac_channel.keys
    with pytest.raises(e2e.Rejected):
        mac_channel.open(browser_channel.seal("x"))


class KeySubstitutingRelay:
    """A man in the middle: runs its own handshake with each side and re-seals every frame."""

    def __init__(self, code: str, peer: str) -> None:
        self.to_mac = e2e.BrowserHandshake(code, peer)  # poses as the browser to the mac
        self.to_browser = e2e.MacHandshake(code, peer)  # poses as the mac to the browser


def test_a_key_substituting_relay_makes_the_strings_differ() -> None:
    """It can read and forward everything, but the person sees two different strings."""
    code, peer = "K7M2QX", "p3f9a01c2"
    browser = e2e.BrowserHandshake(code, peer)
    mac = e2e.MacHandshake(code, peer)
    relay = KeySubstitutingRelay(code, peer)
    # browser → relay: commit; relay → mac: its own commit; the mac answers the relay.
    commit = browser.commit_message()
    answer_to_relay = mac.on_commit(relay.to_mac.commit_message())
    relay_reveal, relay_mac_side = relay.to_mac.on_key(answer_to_relay)
    mac_channel = mac.on_reveal(relay_reveal)
    # relay → browser: its own key, answering the browser's commit.
    browser_reveal, browser_channel = browser.on_key(relay.to_browser.on_commit(commit))
    relay_browser_side = relay.to_browser.on_reveal(browser_reveal)
    # The relay can read and re-seal...
    assert relay_browser_side.open(browser_channel.seal("secret")) == "secret"
    assert mac_channel.open(relay_mac_side.seal("secret")) == "secret"
    # ...but each side's string comes from a different transcript.
    assert browser_channel.sas != mac_channel.sas
    assert relay_browser_side.sas == browser_channel.sas
    assert relay_mac_side.sas == mac_channel.sas


def test_a_relay_that_swaps_only_the_public_keys_is_caught() -> None:
    """Forwarding a different key than the one committed to fails the commitment check."""
    browser = e2e.BrowserHandshake("K7M2QX", "p1")
    mac = e2e.MacHandshake("K7M2QX", "p1")
    key = mac.on_commit(browser.commit_message())
    reveal, _ = browser.on_key(key)
    impostor = e2e.BrowserHandshake("K7M2QX", "p1")
    with pytest.raises(e2e.Rejected) as rejected:
        mac.on_reveal(e2e.reveal_message(impostor.public))
    assert rejected.value.reason == e2e.Reason.BAD_HANDSHAKE
    assert mac.on_reveal(reveal).sas  # the genuine reveal still completes


def test_an_answer_to_an_older_commit_is_rejected() -> None:
    old = e2e.BrowserHandshake("K7M2QX", "p1")
    new = e2e.BrowserHandshake("K7M2QX", "p1")
    mac = e2e.MacHandshake("K7M2QX", "p1")
    stale = mac.on_commit(old.commit_message())
    with pytest.raises(e2e.Rejected) as rejected:
        new.on_key(stale)
    assert rejected.value.reason == e2e.Reason.BAD_HANDSHAKE


@pytest.mark.parametrize(
    "message",
    [
        {"e2e": 1, "hs": "key", "key": "AAAA", "commit": "AAAA"},
        {"e2e": 1, "hs": "nope"},
        {"e2e": True, "hs": "key"},
        {"e2e": 1, "hs": "commit", "commit": "x"},
    ],
)
def test_malformed_handshake_messages_are_rejected(message: dict[str, Any]) -> None:
    with pytest.raises(e2e.Rejected):
        e2e.BrowserHandshake("K7M2QX", "p1").on_key(message)


def test_a_low_order_key_is_rejected() -> None:
    browser = e2e.BrowserHandshake("K7M2QX", "p1")
    zero_key = e2e.key_message(bytes(32), browser.commit)
    with pytest.raises(e2e.Rejected) as rejected:
        browser.on_key(zero_key)
    assert rejected.value.reason == e2e.Reason.BAD_HANDSHAKE


def test_replayed_and_reordered_frames() -> None:
    browser, mac = paired()
    frames = [browser.seal(f"m{i}") for i in range(e2e.REPLAY_WINDOW + 5)]
    assert mac.open(frames[3]) == "m3"
    assert mac.open(frames[1]) == "m1"  # reordered within the window: fine
    for replay in (frames[3], frames[1]):
        with pytest.raises(e2e.Rejected) as rejected:
            mac.open(replay)
        assert rejected.value.reason == e2e.Reason.REPLAYED
    assert mac.open(frames[-1]) == f"m{len(frames) - 1}"
    with pytest.raises(e2e.Rejected) as rejected:
        mac.open(frames[2])  # now more than the window behind
    assert rejected.value.reason == e2e.Reason.TOO_OLD


@pytest.mark.parametrize("data", [float("nan"), {"x": float("inf")}])
def test_non_json_data_is_refused_before_sealing(data: Any) -> None:
    browser, _ = paired()
    with pytest.raises(ValueError):
        browser.seal(data)


def test_kind_of() -> None:
    assert e2e.kind_of("text") == e2e.Kind.PLAIN
    assert e2e.kind_of({"text": "x"}) == e2e.Kind.PLAIN
    assert e2e.kind_of(e2e.rekey_message()) == e2e.Kind.HANDSHAKE
    assert e2e.kind_of({"e2e": 1, "n": 0, "ct": ""}) == e2e.Kind.SEALED


def test_spaced_sas() -> None:
    assert e2e.spaced_sas("042917") == "042 917"


def test_whole_numbers_written_as_floats_are_the_same_numbers_as_in_javascript() -> None:
    """JSON does not tell 1 from 1.0, and the page cannot: neither may the Python side."""
    browser, mac = paired()
    envelope = browser.seal("x")
    assert mac.open({**envelope, "e2e": 1.0, "n": float(envelope["n"])}) == "x"
    with pytest.raises(e2e.Rejected) as rejected:
        mac.open({**browser.seal("y"), "n": 1.5})
    assert rejected.value.reason == e2e.Reason.MALFORMED
