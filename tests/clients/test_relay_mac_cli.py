"""The relay-mac console script as a person or a script runs it."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from collections.abc import Iterator

import pytest
from relay import protocol
from relay_mac.cli import build_parser, settings_from_args

from tests.clients.scripted_relay import ScriptedRelay
from tests.support.processes import RunningProcess, console_script, free_port

pytestmark = pytest.mark.process


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    with ScriptedRelay() as server:
        yield server


def run_to_exit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("relay-mac"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bad_url_exits_with_one_clear_line() -> None:
    result = run_to_exit("--url", "nonsense")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "relay-mac: 'nonsense' is not a WebSocket URL; expected ws://host:port or wss://host/stage"
    ]


def test_a_refused_connection_exits_with_one_clear_line() -> None:
    port = free_port()
    result = run_to_exit("--url", f"ws://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"relay-mac: cannot connect to ws://127.0.0.1:{port}: connection refused (is the relay running?)"
    ]


def test_json_mode_reports_a_startup_failure_as_an_event_too() -> None:
    port = free_port()
    result = run_to_exit("--json", "--url", f"ws://127.0.0.1:{port}")
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "error"
    assert events[-1]["error"] == "startup_failed"
    assert "connection refused" in events[-1]["message"]
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--keepalive", "600"], "must be under 600 s"),
        (["--keepalive", "soon"], "'soon' is not a number of seconds"),
        (["--backoff-max", "0"], "must be more than 0 seconds"),
        (["--max-reconnects", "-2"], "cannot be negative"),
        (["--client-id", "x" * 129], "client id must be 1 to 128 characters"),
        (["--e2e-wait", "0"], "must be more than 0 seconds"),
    ],
)
def test_bad_options_are_rejected_before_connecting(args: list[str], complaint: str) -> None:
    result = run_to_exit(*args)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_json_mode_end_to_end_against_a_relay(relay: ScriptedRelay) -> None:
    args = [console_script("relay-mac"), "--json", "--url", relay.url, "--keepalive", "0.05"]
    with RunningProcess(args) as mac:
        assert mac.wait_for_event("registered") == {
            "event": "registered",
            "code": "K7M2QX",
            "session": 1,
            "new_session": False,
        }
        relay.push(protocol.peer_joined("p1111111"))
        assert mac.wait_for_event("peer_joined")["peers"] == ["p1111111"]
        relay.push(protocol.frame("p1111111", "from the browser"))
        assert mac.wait_for_event("frame") == {
            "event": "frame",
            "from": "p1111111",
            "data": "from the browser",
            "encrypted": False,
        }
        mac.type_line("from the mac")
        mac.type_line("@p1111111 only you")
        relay.wait_until(lambda: len(relay.messages("send")) == 2)
        relay.wait_until(lambda: len(relay.messages("ping")) >= 2)
        relay.push(protocol.peer_left("p1111111"))
        mac.wait_for_event("peer_left", peer="p1111111")
        assert mac.terminate() == 0
    assert [r.message for r in relay.messages("send")] == [
        # The browser sent a plain frame, so it is a client without encryption: lines go to
        # it in clear, one send per browser (each browser has its own keys, or none).
        {"action": "send", "data": "from the mac", "to": "p1111111"},
        {"action": "send", "data": "only you", "to": "p1111111"},
    ]
    # SIGTERM closes the session properly, so the relay can tell the browsers at once.
    relay.wait_until(lambda: 0 in relay.close_codes)
    assert relay.close_codes[0] == 1000
    events = [json.loads(line) for line in mac.lines]
    # ... and ends it first (`end`), so no browser waits out a grace period.
    assert [r.message for r in relay.messages("end")] == [{"action": "end"}]
    assert events[-2:] == [{"event": "ended"}, {"event": "stopped", "reason": "terminated"}]
    assert "pong" not in {e["event"] for e in events}
    assert mac.stderr_lines == []


def test_human_mode_keeps_the_same_code_marked_reconnected_after_a_drop(relay: ScriptedRelay) -> None:
    args = [console_script("relay-mac"), "--url", relay.url, "--backoff-initial", "0.01"]
    with RunningProcess(args, env={"PYTHONIOENCODING": "utf-8"}) as mac:
        mac.wait_for_line(lambda line: "K 7 M   2 Q X" in line, "the spaced code")
        relay.drop()
        mac.wait_for_line(lambda line: "Session code (reconnected)" in line, "the reconnected title")
        mac.wait_for_line(lambda line: "K 7 M   2 Q X" in line, "the same code")
        mac.wait_for_line(lambda line: "Reconnected to the same session" in line, "the reconnected line")
        assert mac.terminate() == 0
    assert not any("NEW session" in line for line in mac.lines)
    assert any("Resuming the same session" in line for line in mac.stderr_lines)
    assert not any("no longer works" in line for line in mac.stderr_lines)


def test_no_resume_and_lock_after_first_options() -> None:
    defaults = settings_from_args(build_parser().parse_args([]))
    assert defaults.resumable is True
    assert defaults.lock_after_first is False
    chosen = settings_from_args(build_parser().parse_args(["--no-resume", "--lock-after-first"]))
    assert chosen.resumable is False
    assert chosen.lock_after_first is True


def test_human_mode_shows_the_code_big_and_a_new_code_after_a_reconnect(relay: ScriptedRelay) -> None:
    args = [console_script("relay-mac"), "--url", relay.url, "--backoff-initial", "0.01", "--no-resume"]
    with RunningProcess(args, env={"PYTHONIOENCODING": "utf-8"}) as mac:
        mac.wait_for_line(lambda line: "K 7 M   2 Q X" in line, "the spaced code")
        relay.push(protocol.peer_joined("p1111111"))
        mac.wait_for_line(lambda line: "p1111111 joined" in line, "the peer joining")
        relay.push(protocol.frame("p1111111", "hi"))
        mac.wait_for_line(lambda line: "p1111111 is NOT ENCRYPTED" in line, "the browser marked not encrypted")
        mac.wait_for_line(lambda line: line == "[p1111111, not encrypted] hi", "the frame")
        relay.drop()
        mac.wait_for_line(lambda line: "NEW session code" in line, "the new-session title")
        mac.wait_for_line(lambda line: "A B C   D E F" in line, "the new code")
        assert mac.terminate() == 0
    assert any("Disconnected from the relay" in line for line in mac.stderr_lines)
    assert not any("Traceback" in line for line in mac.stderr_lines)


def test_end_of_piped_input_does_not_end_the_session(relay: ScriptedRelay) -> None:
    """`relay-mac --json < /dev/null` is how a script listens without typing."""
    args = [console_script("relay-mac"), "--json", "--url", relay.url]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "connecting"
        assert json.loads(process.stdout.readline())["event"] == "registered"
        relay.push(protocol.frame("p1111111", "still listening"))
        assert json.loads(process.stdout.readline())["event"] == "encryption"  # a plain frame: not encrypted
        assert json.loads(process.stdout.readline()) == {
            "event": "frame",
            "from": "p1111111",
            "data": "still listening",
            "encrypted": False,
        }
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_ctrl_d_at_a_terminal_quits(relay: ScriptedRelay) -> None:
    controller, terminal = pty.openpty()
    args = [console_script("relay-mac"), "--json", "--url", relay.url]
    process = subprocess.Popen(args, stdin=terminal, stdout=subprocess.PIPE, text=True)
    os.close(terminal)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "connecting"
        assert json.loads(process.stdout.readline())["event"] == "registered"
        os.write(controller, b"\x04")  # Ctrl-D: end of input at a terminal
        assert json.loads(process.stdout.readline()) == {"event": "ended"}  # no browser waits out a grace period
        assert json.loads(process.stdout.readline()) == {"event": "stopped", "reason": "end of input"}
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        os.close(controller)
    relay.wait_until(lambda: 0 in relay.close_codes)
    assert relay.close_codes[0] == 1000


def test_e2e_is_on_by_default_and_no_e2e_turns_it_off() -> None:
    parser = build_parser()
    assert settings_from_args(parser.parse_args([])).e2e is True
    off = settings_from_args(parser.parse_args(["--no-e2e", "--e2e-wait", "2.5"]))
    assert off.e2e is False
    assert off.e2e_wait_seconds == 2.5


def test_no_e2e_through_the_console_script_declines_and_marks_frames(relay: ScriptedRelay) -> None:
    args = [console_script("relay-mac"), "--json", "--no-e2e", "--url", relay.url]
    with RunningProcess(args) as mac:
        mac.wait_for_event("registered")
        relay.push(protocol.peer_joined("p1111111"))
        assert mac.wait_for_event("encryption")["reason"] == "e2e_off"
        relay.push(protocol.frame("p1111111", {"e2e": 1, "hs": "commit", "commit": "A" * 43}))
        relay.wait_until(lambda: len(relay.messages("send")) == 1)
        relay.push(protocol.frame("p1111111", "in clear"))
        assert mac.wait_for_event("frame")["encrypted"] is False
        mac.type_line("everyone, in clear")
        relay.wait_until(lambda: len(relay.messages("send")) == 2)
        assert mac.terminate() == 0
    assert [r.message for r in relay.messages("send")] == [
        {"action": "send", "to": "p1111111", "data": {"e2e": 1, "hs": "decline"}},
        {"action": "send", "data": "everyone, in clear"},  # one broadcast, as before
    ]
