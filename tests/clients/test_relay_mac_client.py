"""MacClient against a scripted relay: registration, peers, frames, keepalive, reconnects."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from relay import protocol
from relay_mac.backoff import Backoff, BackoffPolicy
from relay_mac.client import ClientSettings, MacClient, StartupError

from tests.clients.client_harness import FAST_BACKOFF, Lines, Recorder, in_thread, run_scenario, settings_for
from tests.clients.scripted_relay import RelayScript, ScriptedRelay


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    with ScriptedRelay() as server:
        yield server


def test_registers_with_its_client_id_and_reports_the_code(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        registered = await recorder.wait_for("registered")
        assert registered == {"event": "registered", "code": "K7M2QX", "session": 1, "new_session": False}
        assert client.code == "K7M2QX"

    recorder = run_scenario(settings_for(relay), scenario)
    assert [r.message for r in relay.messages("register")] == [
        {"action": "register", "client_id": "mac-test", "resumable": True}
    ]
    assert recorder.kinds() == ["connecting", "registered", "ended", "stopped"]


def test_stopping_closes_the_connection_with_a_normal_close_frame(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")

    recorder = run_scenario(settings_for(relay), scenario)
    relay.wait_until(lambda: 0 in relay.close_codes)
    assert relay.close_codes[0] == 1000
    assert recorder.of("stopped") == [{"event": "stopped", "reason": "test over"}]
    assert recorder.of("disconnected") == []


def test_keepalive_sends_pings_and_handles_pongs_silently(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        await in_thread(lambda: relay.wait_until(lambda: len(relay.messages("ping")) >= 3))
        while client.pongs_received < 3:
            await asyncio.sleep(0.01)

    recorder = run_scenario(settings_for(relay, keepalive_seconds=0.02), scenario)
    assert all(r.message == {"action": "ping"} for r in relay.messages("ping"))
    # The person sees nothing of the keepalive.
    assert recorder.kinds() == ["connecting", "registered", "ended", "stopped"]


def test_no_keepalive_before_the_interval_has_passed(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        lines.type("@p1 hello")
        await recorder.wait_for("sent")

    run_scenario(settings_for(relay, keepalive_seconds=300, e2e=False), scenario)
    assert relay.messages("ping") == []


def test_peers_are_listed_as_they_join_and_leave(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        relay.push(protocol.peer_joined("p2222222"))
        relay.push(protocol.peer_left("p1111111"))
        await recorder.wait_for("peer_left")
        assert client.peers == ["p2222222"]

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.of("peer_joined") == [
        {"event": "peer_joined", "peer": "p1111111", "peers": ["p1111111"]},
        {"event": "peer_joined", "peer": "p2222222", "peers": ["p1111111", "p2222222"]},
    ]
    assert recorder.of("peer_left") == [{"event": "peer_left", "peer": "p1111111", "peers": ["p2222222"]}]


def test_frames_from_browsers_are_reported_with_sender_and_data(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.frame("p1111111", "hello mac"))
        relay.push(protocol.frame("p1111111", {"x": [1, 2]}))
        await recorder.wait_for("frame", count=2)

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.of("frame") == [
        {"event": "frame", "from": "p1111111", "data": "hello mac", "encrypted": False},
        {"event": "frame", "from": "p1111111", "data": {"x": [1, 2]}, "encrypted": False},
    ]


def test_relay_errors_and_garbage_become_error_events(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.error(protocol.ErrorCode.UNKNOWN_PEER))
        relay.push_raw("not json {")
        await recorder.wait_for("error", count=2)

    recorder = run_scenario(settings_for(relay), scenario)
    errors = recorder.of("error")
    assert errors[0] == {
        "event": "error",
        "error": "unknown_peer",
        "message": protocol.ERROR_MESSAGES[protocol.ErrorCode.UNKNOWN_PEER],
    }
    assert errors[1]["error"] == "bad_message"
    # A bad frame does not cost the session.
    assert recorder.of("disconnected") == []


def test_typed_lines_go_to_all_browsers_or_to_one(relay: ScriptedRelay) -> None:
    """With --no-e2e: the plain wire format, one broadcast for every browser."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        await recorder.wait_for("peer_joined")
        lines.type("hello everyone")
        lines.type("   ")
        lines.type("@p1111111 just you")
        lines.type("@@mention")
        lines.type("héllo ✓")
        await recorder.wait_for("sent", count=4)
        await in_thread(lambda: relay.wait_until(lambda: len(relay.messages("send")) >= 4))

    recorder = run_scenario(settings_for(relay, e2e=False), scenario)
    assert [r.message for r in relay.messages("send")] == [
        {"action": "send", "data": "hello everyone"},
        {"action": "send", "data": "just you", "to": "p1111111"},
        {"action": "send", "data": "@mention"},
        {"action": "send", "data": "héllo ✓"},
    ]
    assert recorder.of("sent")[1] == {"event": "sent", "to": "p1111111", "data": "just you", "encrypted": False}


def test_lines_that_cannot_be_sent_are_explained_not_sent(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        lines.type("nobody is here yet")
        await recorder.wait_for("error", error="no_browsers")
        relay.push(protocol.peer_joined("p1111111"))
        await recorder.wait_for("peer_joined")
        lines.type("@p1111111")
        await recorder.wait_for("error", error="usage")
        lines.type("x" * protocol.MAX_FRAME_BYTES)
        await recorder.wait_for("error", error="payload_too_large")
        lines.type("still connected")
        await recorder.wait_for("sent")

    # The browser never commits to a key, so its frames wait out the e2e wait, then go plain.
    recorder = run_scenario(settings_for(relay, e2e_wait_seconds=0.2), scenario)
    assert [r.message["data"] for r in relay.messages("send")] == ["still connected"]
    assert recorder.of("disconnected") == []


def test_without_resume_a_dropped_connection_reconnects_with_a_new_session_code(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        await recorder.wait_for("peer_joined")
        relay.drop()
        second = await recorder.wait_for("registered", count=2)
        assert second == {"event": "registered", "code": "ABCDEF", "session": 2, "new_session": True}
        assert client.code == "ABCDEF"
        # Browsers of the old session are not in the new one.
        assert client.peers == []

    recorder = run_scenario(settings_for(relay, resumable=False), scenario)
    kinds = recorder.kinds()
    assert kinds[: kinds.index("registered", 2) + 1] == [
        "connecting",
        "registered",
        "peer_joined",
        "disconnected",
        "reconnecting",
        "connecting",
        "registered",
    ]
    assert recorder.of("disconnected")[0]["code"] == 1006
    delay = recorder.of("reconnecting")[0]["delay"]
    assert FAST_BACKOFF.initial_seconds * (1 - FAST_BACKOFF.jitter) <= delay <= FAST_BACKOFF.initial_seconds
    assert relay.connection_count() == 2
    assert len(relay.messages("register")) == 2


def test_reconnect_delays_grow_to_the_cap_then_the_client_gives_up(relay: ScriptedRelay) -> None:
    policy = BackoffPolicy(initial_seconds=0.01, max_seconds=0.04, factor=2, jitter=0)

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        await asyncio.to_thread(relay.stop_listening)
        await recorder.wait_for("stopped")

    recorder = run_scenario(settings_for(relay, backoff=policy, max_reconnect_attempts=5), scenario)
    assert [e["delay"] for e in recorder.of("reconnecting")] == [0.01, 0.02, 0.04, 0.04, 0.04]
    failures = recorder.of("error")
    assert len(failures) == 5
    assert all(e["error"] == "connect_failed" and "connection refused" in e["message"] for e in failures)
    assert recorder.of("stopped") == [{"event": "stopped", "reason": "gave up after 5 failed reconnect attempts"}]


def test_backoff_resets_after_a_successful_reconnect(relay: ScriptedRelay) -> None:
    policy = BackoffPolicy(initial_seconds=0.01, max_seconds=1, factor=2, jitter=0)

    def connections_reach(count: int) -> Callable[[], bool]:
        return lambda: relay.connection_count() == count

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        for session in (1, 2, 3):
            if session == 1:
                await recorder.wait_for("registered")
            else:
                await recorder.wait_for("resumed", count=session - 1)
            await asyncio.to_thread(relay.wait_until, connections_reach(session))
            relay.drop()
        await recorder.wait_for("resumed", count=3)

    recorder = run_scenario(settings_for(relay, backoff=policy), scenario)
    assert [e["delay"] for e in recorder.of("reconnecting")] == [0.01, 0.01, 0.01]


def test_end_of_input_stops_the_client_when_asked_to(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        lines.end()
        await recorder.wait_for("stopped")

    recorder = run_scenario(settings_for(relay), scenario)
    assert recorder.of("stopped") == [{"event": "stopped", "reason": "end of input"}]


def test_end_of_input_keeps_the_session_when_input_is_not_a_terminal(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        lines.end()
        relay.push(protocol.frame("p1111111", "after end of input"))
        await recorder.wait_for("frame")

    recorder = run_scenario(settings_for(relay), scenario, stop_at_end_of_input=False)
    assert recorder.of("stopped") == [{"event": "stopped", "reason": "test over"}]


@pytest.mark.parametrize(
    ("register_reply", "expected"),
    [
        (
            "error",
            "the relay refused to register: " + protocol.ERROR_MESSAGES[protocol.ErrorCode.INTERNAL_ERROR],
        ),
        ("malformed", "the relay sent a malformed session code: 'O0I1L'"),
    ],
)
def test_a_refused_first_registration_is_a_startup_error(register_reply: str, expected: str) -> None:
    with ScriptedRelay(RelayScript(register_reply=register_reply)) as relay:
        client = MacClient(settings_for(relay), Recorder(), Lines().stream())
        with pytest.raises(StartupError) as raised:
            asyncio.run(client.run())
    assert str(raised.value) == expected


def test_a_relay_that_never_answers_register_is_a_startup_error() -> None:
    with ScriptedRelay(RelayScript(register_reply="silent")) as relay:
        settings = settings_for(relay, register_timeout_seconds=0.2)
        client = MacClient(settings, Recorder(), Lines().stream())
        with pytest.raises(StartupError, match=r"did not answer the register request within 0\.2 s"):
            asyncio.run(client.run())


def test_a_refused_connection_at_start_is_a_startup_error_not_a_retry(relay: ScriptedRelay) -> None:
    url = relay.url
    relay.stop_listening()

    async def main() -> Recorder:
        recorder = Recorder()
        client = MacClient(ClientSettings(url=url, backoff=FAST_BACKOFF), recorder, Lines().stream())
        with pytest.raises(StartupError, match="connection refused"):
            await client.run()
        return recorder

    recorder = asyncio.run(main())
    assert recorder.of("reconnecting") == []


def test_an_http_server_that_is_not_a_relay_is_a_startup_error() -> None:
    async def main() -> str:
        async def not_websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(not_websocket, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            client = MacClient(ClientSettings(url=f"ws://127.0.0.1:{port}"), Recorder(), Lines().stream())
            with pytest.raises(StartupError) as raised:
                await client.run()
            return str(raised.value)
        finally:
            server.close()
            await server.wait_closed()

    message = asyncio.run(main())
    assert "refused the WebSocket upgrade (HTTP 404)" in message


def test_jittered_delays_stay_within_their_bounds() -> None:
    policy = BackoffPolicy(initial_seconds=1, max_seconds=30, factor=2, jitter=0.5)
    backoff = Backoff(policy, random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(30.0, 2.0**n) for n in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # Jitter spreads clients out: the delays are not simply the ceilings.
    assert delays != ceilings
    backoff.reset()
    assert backoff.ceiling() == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"keepalive_seconds": 0},
        {"keepalive_seconds": protocol.IDLE_TIMEOUT_SECONDS},
        {"client_id": ""},
        {"client_id": "x" * (protocol.CLIENT_ID_MAX_LENGTH + 1)},
        {"max_reconnect_attempts": -1},
    ],
)
def test_settings_reject_values_the_relay_would_punish(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClientSettings(**bad)


@pytest.mark.parametrize(
    "policy",
    [
        {"initial_seconds": -1},
        {"initial_seconds": 5, "max_seconds": 1},
        {"factor": 0.5},
        {"jitter": 1.5},
    ],
)
def test_backoff_policy_rejects_nonsense(policy: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**policy)


def test_events_are_json_serialisable(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.frame("p1111111", {"nested": [1, None, True]}))
        await recorder.wait_for("frame")
        relay.drop()
        await recorder.wait_for("resumed")

    recorder = run_scenario(settings_for(relay), scenario)
    for event in recorder.events:
        assert json.loads(json.dumps(event)) == event


def test_approval_mode_lists_waiting_browsers_and_admits_or_kicks_them(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.join_request("p1111111", "203.0.113.9", "Firefox"))
        relay.push(protocol.join_request("p2222222", None, None))
        await recorder.wait_for("join_request", count=2)
        assert client.waiting == ["p1111111", "p2222222"]
        lines.type("/admit p1111111")
        await recorder.wait_for("peer_joined")
        lines.type("/peers")
        await recorder.wait_for("peers")
        lines.type("/kick p2222222")
        await recorder.wait_for("peer_left")
        assert client.waiting == []
        assert client.peers == ["p1111111"]

    recorder = run_scenario(settings_for(relay, approve=True), scenario)
    assert relay.messages("register")[0].message == {
        "action": "register",
        "client_id": "mac-test",
        "approve": True,
        "resumable": True,
    }
    assert recorder.of("join_request")[0] == {
        "event": "join_request",
        "peer": "p1111111",
        "ip": "203.0.113.9",
        "user_agent": "Firefox",
        "waiting": ["p1111111"],
    }
    assert [r.message for r in relay.messages("admit")] == [{"action": "admit", "peer": "p1111111"}]
    assert [r.message for r in relay.messages("kick")] == [{"action": "kick", "peer": "p2222222"}]
    assert recorder.of("peers") == [
        {
            "event": "peers",
            "peers": ["p1111111"],
            "waiting": ["p2222222"],
            "away": [],
            "encryption": {"p1111111": {"encrypted": None, "sas": None}},  # no handshake yet
        }
    ]
    assert recorder.of("peer_joined")[0]["peers"] == ["p1111111"]


def test_bad_commands_are_explained_and_nothing_is_sent(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined("p1111111"))
        await recorder.wait_for("peer_joined")
        lines.type("/frobnicate")
        lines.type("/kick")
        lines.type("/peers extra")
        await recorder.wait_for("error", count=3, error="usage")
        lines.type("//slash is literal")
        await recorder.wait_for("sent")

    recorder = run_scenario(settings_for(relay, e2e=False), scenario)
    assert [e["message"] for e in recorder.of("error")] == [
        "Unknown command /frobnicate. Commands: /admit PEER, /kick PEER, /peers, /lock, /unlock; "
        "start a line with // to send a literal /.",
        "/kick needs one peer id, e.g. /kick p1a2b3c4d.",
        "/peers takes no arguments.",
    ]
    assert [r.message for r in relay.received if r.message["action"] not in ("register", "ping", "end")] == [
        {"action": "send", "data": "/slash is literal"}
    ]


def test_stopping_does_not_wait_for_a_relay_that_never_answers() -> None:
    with ScriptedRelay(RelayScript(register_reply="silent")) as relay:
        # The register timeout is far longer than the test's 10 s bound on run().
        settings = settings_for(relay, register_timeout_seconds=3600)

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await asyncio.to_thread(relay.wait_until, lambda: len(relay.messages("register")) == 1)

        recorder = run_scenario(settings, scenario)
    assert recorder.kinds() == ["connecting", "stopped"]
