"""relay-mac's e2e layer against a scripted relay, with relay_mac.e2e playing each browser."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from relay import protocol
from relay_mac import e2e
from relay_mac.client import MacClient

from tests.clients.client_harness import (
    CODE,
    Lines,
    Recorder,
    handshake,
    run_scenario,
    settings_for,
    wait_for_send,
)
from tests.clients.scripted_relay import ScriptedRelay


@pytest.fixture
def relay() -> Any:
    with ScriptedRelay() as server:
        yield server


def test_a_browser_with_the_layer_gets_its_own_keys_and_the_same_string(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        await recorder.wait_for("peer_joined")
        lines.type("typed before the handshake")  # waits for the keys, then goes sealed
        browser = await handshake(relay, recorder, "p1111111")
        secured = await recorder.wait_for("encryption")
        assert secured["sas"] == e2e.spaced_sas(browser.sas)
        assert secured["encrypted"] is True
        sealed = await wait_for_send(relay, "p1111111", 2)
        assert e2e.kind_of(sealed) == e2e.Kind.SEALED
        assert browser.open(sealed) == "typed before the handshake"
        lines.type("and after")
        assert browser.open(await wait_for_send(relay, "p1111111", 3)) == "and after"
        relay.push(protocol.frame("p1111111", browser.seal({"text": "from the page"})))
        await recorder.wait_for("frame")

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.of("frame") == [
        {"event": "frame", "from": "p1111111", "data": {"text": "from the page"}, "encrypted": True}
    ]
    assert [e["encrypted"] for e in recorder.of("sent")] == [True, True]
    # Nothing typed went out in clear.
    assert all(e2e.kind_of(r.message["data"]) != e2e.Kind.PLAIN for r in relay.messages("send"))


def test_tampered_replayed_and_plain_frames_are_rejected_and_reported_never_shown(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        browser = await handshake(relay, recorder, "p1111111")
        await recorder.wait_for("encryption")
        first = browser.seal("first")
        relay.push(protocol.frame("p1111111", first))
        await recorder.wait_for("frame")
        relay.push(protocol.frame("p1111111", first))  # replayed
        tampered = browser.seal("second")
        ct = bytearray(e2e.from_b64url(tampered["ct"]))
        ct[0] ^= 0x01
        relay.push(protocol.frame("p1111111", {**tampered, "ct": e2e.b64url(bytes(ct))}))
        relay.push(protocol.frame("p1111111", {**browser.seal("third"), "ct": "AAAA"}))  # truncated
        relay.push(protocol.frame("p1111111", "a plain frame written by the relay"))
        relay.push(protocol.frame("p1111111", {"e2e": 9, "n": 0, "ct": ""}))
        await recorder.wait_for("rejected", count=5)
        relay.push(protocol.frame("p1111111", browser.seal("fourth")))
        await recorder.wait_for("frame", count=2)

    recorder = run_scenario(settings_for(relay), scenario)
    assert [e["data"] for e in recorder.of("frame")] == ["first", "fourth"]
    assert [e["reason"] for e in recorder.of("rejected")] == [
        "replayed",
        "tampered",
        "truncated",
        "not_encrypted",
        "unsupported_version",
    ]


def test_each_browser_has_its_own_key_agreement(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        relay.push(protocol.peer_joined("p2222222"))
        first = await handshake(relay, recorder, "p1111111")
        second = await handshake(relay, recorder, "p2222222")
        await recorder.wait_for("encryption", count=2)
        lines.type("for everyone")
        one = await wait_for_send(relay, "p1111111", 2)
        two = await wait_for_send(relay, "p2222222", 2)
        assert first.open(one) == "for everyone"
        assert second.open(two) == "for everyone"
        assert one["ct"] != two["ct"]
        with pytest.raises(e2e.Rejected):
            first.open(two)  # the other browser's frame does not open with this one's keys
        # A frame sealed for one browser, passed off by the relay as the other's, is rejected.
        relay.push(protocol.frame("p2222222", first.seal("from the first")))
        await recorder.wait_for("rejected")
        assert first.keys != second.keys

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.of("rejected")[0]["reason"] == "tampered"
    sas = {e["peer"]: e["sas"] for e in recorder.of("encryption")}
    assert set(sas) == {"p1111111", "p2222222"}


def test_a_browser_without_the_layer_is_told_nothing_and_marked_not_encrypted(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        await recorder.wait_for("peer_joined")
        lines.type("hello old page")
        settled = await recorder.wait_for("encryption")
        assert settled["encrypted"] is False
        assert settled["reason"] == "no_handshake"
        assert await wait_for_send(relay, "p1111111", 1) == "hello old page"

    recorder = run_scenario(settings_for(relay, e2e_wait_seconds=0.2), scenario)
    assert recorder.of("sent") == [{"event": "sent", "to": "p1111111", "data": "hello old page", "encrypted": False}]


def test_no_e2e_declines_a_handshake_and_relays_in_clear(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        settled = await recorder.wait_for("encryption")
        assert settled["reason"] == "e2e_off"
        browser = e2e.BrowserHandshake(CODE, "p1111111")
        relay.push(protocol.frame("p1111111", browser.commit_message()))
        assert await wait_for_send(relay, "p1111111", 1) == e2e.decline_message()
        relay.push(protocol.frame("p1111111", "plain text"))
        await recorder.wait_for("frame")

    recorder = run_scenario(settings_for(relay, e2e=False), scenario)
    assert recorder.of("frame") == [{"event": "frame", "from": "p1111111", "data": "plain text", "encrypted": False}]


def test_a_new_handshake_discards_the_old_keys(relay: ScriptedRelay) -> None:
    """What a browser does after it reconnects (or resumes): commit again; old keys die."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        old = await handshake(relay, recorder, "p1111111")
        await recorder.wait_for("encryption")
        new = await handshake(relay, recorder, "p1111111", sent_before=1)
        second = await recorder.wait_for("encryption", count=2)
        assert second["sas"] == e2e.spaced_sas(new.sas)
        relay.push(protocol.frame("p1111111", old.seal("under the old keys")))
        await recorder.wait_for("rejected")
        relay.push(protocol.frame("p1111111", new.seal("under the new keys")))
        await recorder.wait_for("frame")

    recorder = run_scenario(settings_for(relay), scenario)
    assert [e["data"] for e in recorder.of("frame")] == ["under the new keys"]
    assert recorder.of("rejected")[0]["reason"] == "tampered"


def test_a_sealed_frame_without_keys_is_rejected_and_a_new_agreement_requested(relay: ScriptedRelay) -> None:
    """E.g. the mac restarted but the page kept its keys: the mac asks the page to start over."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        stranger = e2e.Channel(
            e2e.SessionKeys(browser_to_mac=bytes(32), mac_to_browser=bytes(32), sas="000000"), is_mac=False
        )
        relay.push(protocol.frame("p1111111", stranger.seal("from a key agreement the mac never made")))
        assert await wait_for_send(relay, "p1111111", 1) == e2e.rekey_message()
        await recorder.wait_for("rejected")
        # The page answers with a fresh handshake, and all is well.
        browser = await handshake(relay, recorder, "p1111111", sent_before=1)
        await recorder.wait_for("encryption")
        relay.push(protocol.frame("p1111111", browser.seal("again")))
        await recorder.wait_for("frame")

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.of("rejected")[0]["reason"] == "no_keys"
    assert [e["data"] for e in recorder.of("frame")] == ["again"]


def test_a_handshake_that_stalls_sends_nothing_in_clear(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        browser = e2e.BrowserHandshake(CODE, "p1111111")
        relay.push(protocol.frame("p1111111", browser.commit_message()))
        await wait_for_send(relay, "p1111111", 1)
        lines.type("must not leak")
        await recorder.wait_for("error", error="e2e_failed")
        # Nor later: it committed, so it speaks the layer; and its plain frames are refused.
        lines.type("must not leak either")
        await recorder.wait_for("error", count=2, error="e2e_failed")
        relay.push(protocol.frame("p1111111", "plain, after a failed handshake"))
        await recorder.wait_for("rejected")
        # A new commit starts over.
        channel = await handshake(relay, recorder, "p1111111", sent_before=1)
        await recorder.wait_for("encryption")
        lines.type("now sealed")
        assert channel.open(await wait_for_send(relay, "p1111111", 3)) == "now sealed"

    recorder = run_scenario(settings_for(relay, e2e_wait_seconds=1.0), scenario)
    assert [r.message["data"].get("hs") for r in relay.messages("send")] == ["key", "key", None]
    assert "1 line(s) not sent" in recorder.of("error")[0]["message"]
    assert recorder.of("rejected")[0]["reason"] == "not_encrypted"
    assert recorder.of("frame") == []


def test_a_reconnect_to_a_new_session_discards_every_key_agreement(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        old = await handshake(relay, recorder, "p1111111")
        await recorder.wait_for("encryption")
        relay.drop()
        await recorder.wait_for("registered", count=2)
        assert client.links.link("p1111111") is None
        relay.push(protocol.peer_joined("p1111111"))
        relay.push(protocol.frame("p1111111", old.seal("stale")))
        await recorder.wait_for("rejected")
        await asyncio.sleep(0)

    recorder = run_scenario(settings_for(relay, resumable=False), scenario)
    assert recorder.of("rejected")[0]["reason"] == "no_keys"


def test_a_sealed_frame_that_overtakes_the_reveal_waits_for_the_keys(relay: ScriptedRelay) -> None:
    """The relay does not keep order: the page's first frame may arrive before its reveal."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        browser = e2e.BrowserHandshake(CODE, "p1111111")
        relay.push(protocol.frame("p1111111", browser.commit_message()))
        reveal, channel = browser.on_key(await wait_for_send(relay, "p1111111", 1))
        relay.push(protocol.frame("p1111111", channel.seal("overtook the reveal")))
        relay.push(protocol.frame("p1111111", reveal))
        await recorder.wait_for("frame")

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.kinds().count("rejected") == 0
    assert [e["data"] for e in recorder.of("frame")] == ["overtook the reveal"]
    assert recorder.kinds().index("encryption") < recorder.kinds().index("frame")
