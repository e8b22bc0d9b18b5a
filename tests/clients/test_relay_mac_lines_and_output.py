"""What a typed line means, and how events are printed."""

from __future__ import annotations

import io
import json

import pytest
from relay_mac import events
from relay_mac.client import Command, InputLineError, Outgoing, parse_input_line
from relay_mac.render import HumanRenderer, JsonRenderer, spaced_code


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello\n", Outgoing(data="hello")),
        ("hello\r\n", Outgoing(data="hello")),
        ("  padded  \n", Outgoing(data="  padded  ")),
        ("@p1a2b3c4d hi there\n", Outgoing(data="hi there", to="p1a2b3c4d")),
        ("@@not a peer\n", Outgoing(data="@not a peer")),
        ("//not a command\n", Outgoing(data="/not a command")),
        ("/admit p1a2b3c4d\n", Command(name="admit", peer="p1a2b3c4d")),
        ("/kick  p1a2b3c4d \n", Command(name="kick", peer="p1a2b3c4d")),
        ("/peers\n", Command(name="peers")),
        ("email me@example.com\n", Outgoing(data="email me@example.com")),
        ("\n", None),
        ("   \t\n", None),
    ],
)
def test_parse_input_line(line: str, expected: Outgoing | Command | None) -> None:
    assert parse_input_line(line) == expected


@pytest.mark.parametrize("line", ["@p1a2b3c4d\n", "@ hi\n", "@p1a2b3c4d \n"])
def test_peer_lines_without_text_are_usage_errors(line: str) -> None:
    with pytest.raises(InputLineError, match="@peer"):
        parse_input_line(line)


def test_outgoing_messages_follow_the_protocol() -> None:
    assert Outgoing(data="x").message() == {"action": "send", "data": "x"}
    assert Outgoing(data="x", to="p1").message() == {"action": "send", "data": "x", "to": "p1"}


def test_json_renderer_prints_one_compact_object_per_line() -> None:
    out = io.StringIO()
    render = JsonRenderer(out)
    render(events.registered("K7M2QX", 1))
    render(events.frame("p1", "line one\nline two ✓", encrypted=True))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "event": "registered",
        "code": "K7M2QX",
        "session": 1,
        "new_session": False,
    }
    assert json.loads(lines[1]) == {"event": "frame", "from": "p1", "data": "line one\nline two ✓", "encrypted": True}


def test_the_code_is_shown_in_two_spaced_halves() -> None:
    assert spaced_code("K7M2QX") == "K 7 M   2 Q X"


def terminal(encoding: str) -> io.TextIOWrapper:
    """A text stream with a real `encoding`, like a terminal's."""
    return io.TextIOWrapper(io.BytesIO(), encoding=encoding, write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode(stream.encoding)


@pytest.mark.parametrize(("encoding", "corner"), [("utf-8", "╭"), ("ascii", "+")])
def test_human_renderer_boxes_the_code_in_what_the_terminal_can_show(encoding: str, corner: str) -> None:
    out, err = terminal(encoding), io.StringIO()
    HumanRenderer(out, err)(events.registered("K7M2QX", 1))
    text = _text(out)
    assert "K 7 M   2 Q X" in text
    assert corner in text
    text.encode(encoding)  # printable on that terminal
    assert "NEW" not in text


def test_human_renderer_marks_a_new_session_clearly() -> None:
    out, err = terminal("utf-8"), io.StringIO()
    HumanRenderer(out, err)(events.registered("ABCDEF", 2))
    assert "NEW session code" in _text(out)
    assert "browsers must enter the new code" in _text(out)


def test_human_renderer_lists_peers_and_prints_frames() -> None:
    out, err = terminal("utf-8"), io.StringIO()
    render = HumanRenderer(out, err)
    render(events.peer_joined("p1", ["p1"]))
    render(events.peer_joined("p2", ["p1", "p2"]))
    render(events.peer_left("p1", ["p2"]))
    render(events.peer_left("p2", []))
    render(events.frame("p2", {"k": 1}, encrypted=True))
    render(events.frame("p1", "in clear", encrypted=False))
    render(events.sent(None, "typed", encrypted=True))
    render(events.error("unknown_peer", "No browser with that peer id in this session."))
    assert _text(out).splitlines() == [
        "+ browser p1 joined (1 browser: p1)",
        "+ browser p2 joined (2 browsers: p1, p2)",
        "- browser p1 left (1 browser: p2)",
        "- browser p2 left (no browsers connected)",
        '[p2] {"k": 1}',
        "[p1, not encrypted] in clear",
    ]
    assert err.getvalue().splitlines() == ["! No browser with that peer id in this session."]


@pytest.mark.parametrize(
    ("line", "complaint"),
    [("/nope\n", "Unknown command /nope"), ("/admit\n", "needs one peer id"), ("/peers x\n", "no arguments")],
)
def test_bad_commands_are_usage_errors(line: str, complaint: str) -> None:
    with pytest.raises(InputLineError, match=complaint):
        parse_input_line(line)


def test_human_renderer_asks_about_join_requests() -> None:
    out, err = terminal("utf-8"), io.StringIO()
    render = HumanRenderer(out, err)
    render(events.join_request("p9", "203.0.113.9", "Firefox", ["p9"]))
    render(events.peers(["p1"], ["p9"]))
    assert _text(out).splitlines() == [
        "? browser p9 (203.0.113.9, Firefox) asks to join: type /admit p9 to let it in, or /kick p9",
        "  1 browser: p1; waiting: p9",
    ]


# Issue 10, item 5: what a browser (or the relay) sends must not drive the terminal
# nor forge relay-mac's own lines.
@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ("\x1b]0;pwned\x07", "[p1] \\x1b]0;pwned\\x07"),  # window title (OSC)
        ("\x1b[2J\x1b[H", "[p1] \\x1b[2J\\x1b[H"),  # clear screen, cursor home
        ("a\rb", "[p1] a\\x0db"),  # carriage return would overwrite the line
        ("nul\x00 del\x7f", "[p1] nul\\x00 del\\x7f"),
        ("c1\x85\x9b", "[p1] c1\\x85\\x9b"),  # NEL, CSI
        ("tab\tkept", "[p1] tab\tkept"),
    ],
)
def test_human_renderer_escapes_control_characters_in_frames(data: str, shown: str) -> None:
    out, err = terminal("utf-8"), io.StringIO()
    HumanRenderer(out, err)(events.frame("p1", data, encrypted=True))
    assert _text(out) == shown + "\n"


def test_a_frame_cannot_forge_a_status_line() -> None:
    out, err = terminal("utf-8"), io.StringIO()
    HumanRenderer(out, err)(
        events.frame("p1", encrypted=True, data="hi\n+ browser p2 joined (2 browsers: p1, p2)\n! Disconnected")
    )
    lines = _text(out).splitlines()
    assert lines[0] == "[p1] hi"
    # Continuation lines are indented under the sender, so none starts like a status line.
    assert all(line.startswith("     ") for line in lines[1:])
    assert [line.strip() for line in lines[1:]] == ["+ browser p2 joined (2 browsers: p1, p2)", "! Disconnected"]


def test_everything_received_is_escaped_not_only_frame_text() -> None:
    out, err = terminal("utf-8"), io.StringIO()
    render = HumanRenderer(out, err)
    render(events.frame("p\x1b[31m1", "x", encrypted=True))
    render(events.join_request("p9", "203.0.113.9", "Evil\x1b]0;t\x07", ["p9"]))
    render(events.error("internal_error", "relay says\x1b[2J"))
    render(events.disconnected(1011, "bye\x1b[2J"))
    assert "\x1b" not in _text(out) + err.getvalue()
    assert "[p\\x1b[31m1] x" in _text(out)
    assert "Evil\\x1b]0;t\\x07" in _text(out)
    assert "relay says\\x1b[2J" in err.getvalue()
    assert "bye\\x1b[2J" in err.getvalue()


def test_json_mode_escapes_control_characters_already() -> None:
    out = io.StringIO()
    JsonRenderer(out)(events.frame("p1", "\x1b[2J\x85", encrypted=False))
    assert "\x1b" not in out.getvalue()
    assert json.loads(out.getvalue())["data"] == "\x1b[2J\x85"


def test_human_renderer_shows_each_browsers_encryption_and_rejections() -> None:
    out, err = terminal("utf-8"), io.StringIO()
    render = HumanRenderer(out, err)
    render(events.encryption("p1", encrypted=True, sas="042 917"))
    render(events.encryption("p2", encrypted=False, reason="no_handshake", message="it did not start one"))
    render(events.rejected("p1", "tampered", "it failed authentication"))
    render(
        events.peers(
            ["p1", "p2"], [], {"p1": {"encrypted": True, "sas": "042 917"}, "p2": {"encrypted": False, "sas": None}}
        )
    )
    lines = _text(out).splitlines()
    assert "browser p1 is end-to-end encrypted" in lines[0]
    assert "042 917" in lines[0]
    assert "browser p2 is NOT ENCRYPTED: it did not start one." in lines[1]
    assert lines[3:] == ["    p1: encrypted, string 042 917", "    p2: NOT encrypted"]
    assert err.getvalue() == "! Rejected a frame from browser p1, not shown: it failed authentication.\n"
