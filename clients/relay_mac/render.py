"""Turning client events into output: one JSON object per line, or text for a person."""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

from relay.protocol import CODE_LENGTH

from relay_mac.events import Event


class JsonRenderer:
    """`--json` mode: each event verbatim, one per line, flushed so a pipe sees it at once."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def __call__(self, event: Event) -> None:
        self._out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._out.flush()


def spaced_code(code: str) -> str:
    """`K7M2QX` as `K 7 M   2 Q X`: read aloud or copied by eye in two halves."""
    if len(code) != CODE_LENGTH:
        return " ".join(code)
    half = CODE_LENGTH // 2
    return " ".join(code[:half]) + "   " + " ".join(code[half:])


def code_box(code: str, title: str, *, unicode_ok: bool) -> list[str]:
    top_left, top_right, bottom_left, bottom_right, horizontal, vertical = (
        ("╭", "╮", "╰", "╯", "─", "│") if unicode_ok else ("+", "+", "+", "+", "-", "|")
    )
    shown = spaced_code(code)
    width = max(len(title), len(shown)) + 8
    return [
        top_left + horizontal * width + top_right,
        vertical + title.center(width) + vertical,
        vertical + " " * width + vertical,
        vertical + shown.center(width) + vertical,
        vertical + " " * width + vertical,
        bottom_left + horizontal * width + bottom_right,
    ]


# C0 controls but tab and newline, DEL, C1 controls, and the Unicode line and paragraph
# separators: a terminal acts on them (ESC starts every escape sequence), so what was
# received shows them as `\x1b`, never raw. Newline is kept only where a text may span
# lines (frame data), and handled there.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029"
_CONTROL_IN_TEXT = re.compile(f"[{_CONTROLS}]")
_CONTROL_IN_LINE = re.compile(f"[{_CONTROLS}\n]")


def _escape(match: re.Match[str]) -> str:
    point = ord(match.group())
    return f"\\x{point:02x}" if point <= 0xFF else f"\\u{point:04x}"


def shown(value: Any) -> str:
    """Something received, for one line of the display: controls (newline too) escaped."""
    return _CONTROL_IN_LINE.sub(_escape, value if isinstance(value, str) else str(value))


def shown_text(text: str, indent: int) -> str:
    """A received text that may span lines: controls escaped, and every line after the first
    indented by `indent` spaces, so that no line of it can pass for one of relay-mac's own."""
    lines = _CONTROL_IN_TEXT.sub(_escape, text).split("\n")
    return ("\n" + " " * indent).join(lines)


def _data_text(data: Any) -> str:
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)


def _security_text(security: dict[str, Any]) -> str:
    if security["encrypted"] is None:
        return "encryption being set up"
    return f"encrypted, string {security['sas']}" if security["encrypted"] else "NOT encrypted"


def _peer_list(peers: list[str]) -> str:
    if not peers:
        return "no browsers connected"
    noun = "browser" if len(peers) == 1 else "browsers"
    return f"{len(peers)} {noun}: " + ", ".join(shown(peer) for peer in peers)


class HumanRenderer:
    """For a person at a terminal: the code big and boxed, peers listed, frames as chat lines."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out = out
        self._err = err
        encoding = (getattr(out, "encoding", None) or "ascii").lower().replace("-", "")
        self._unicode_ok = encoding in ("utf8", "utf16", "utf32")

    def _print(self, text: str = "", *, to_err: bool = False) -> None:
        stream = self._err if to_err else self._out
        stream.write(text + "\n")
        stream.flush()

    def __call__(self, event: Event) -> None:
        if self._resume_or_lock(event):
            return
        kind = event["event"]
        if kind == "connecting":
            if event["attempt"] == 1:
                self._print(f"Connecting to {event['url']} ...")
        elif kind == "registered":
            self._show_code(event)
        elif kind == "peer_joined":
            self._print(f"+ browser {shown(event['peer'])} joined ({_peer_list(event['peers'])})")
        elif kind == "peer_left":
            self._print(f"- browser {shown(event['peer'])} left ({_peer_list(event['peers'])})")
        elif kind == "join_request":
            peer = shown(event["peer"])
            source = ", ".join(shown(part) for part in (event["ip"], event["user_agent"]) if part)
            self._print(
                f"? browser {peer}{f' ({source})' if source else ''} asks to join: "
                f"type /admit {peer} to let it in, or /kick {peer}"
            )
        elif kind == "peers":
            waiting = f"; waiting: {', '.join(shown(peer) for peer in event['waiting'])}" if event["waiting"] else ""
            away = f"; away: {', '.join(shown(peer) for peer in event['away'])}" if event.get("away") else ""
            self._print(f"  {_peer_list(event['peers'])}{away}{waiting}")
            for peer, security in event["encryption"].items():
                self._print(f"    {shown(peer)}: {_security_text(security)}")
        elif kind == "frame":
            marker = "" if event["encrypted"] else ", not encrypted"
            prefix = f"[{shown(event['from'])}{marker}] "
            self._print(prefix + shown_text(_data_text(event["data"]), len(prefix)))
        elif kind == "encryption":
            peer = shown(event["peer"])
            if event["encrypted"]:
                self._print(
                    f"  browser {peer} is end-to-end encrypted. Its page shows: {event['sas']}  "
                    "(a different string there means someone is in between: /kick it)"
                )
            else:
                self._print(
                    f"  browser {peer} is NOT ENCRYPTED: {event['message']}. "
                    "The relay can read what you exchange with it."
                )
        elif kind == "rejected":
            self._print(
                f"! Rejected a frame from browser {shown(event['from'])}, not shown: {event['message']}.", to_err=True
            )
        elif kind == "sent":
            # The person just typed the text; echoing it again would only add noise.
            pass
        elif kind == "error":
            self._print(f"! {shown(event['message'] or event['error'])}", to_err=True)
        elif kind == "disconnected":
            after = (
                "Resuming the same session: browsers stay paired and their frames are held meanwhile."
                if event.get("resuming")
                else "The code above no longer works."
            )
            self._print(f"! Disconnected from the relay ({shown(event['reason'])}). {after}", to_err=True)
        elif kind == "reconnecting":
            self._print(f"  Reconnecting in {event['delay']:.1f} s (attempt {event['attempt']}) ...", to_err=True)
        elif kind == "stopped":
            self._print(f"Stopped: {event['reason']}.")

    def _resume_or_lock(self, event: Event) -> bool:
        """Issue 10 and 11's events (resumed sessions, away browsers, lock); False if none."""
        kind = event["event"]
        if kind == "resumed":
            self._show_resumed(event)
        elif kind == "resume_refused":
            self._print(
                f"! The relay could not resume session {spaced_code(shown(event['code']))} "
                f"({shown(event['message'])}). Registering a NEW session: browsers must enter the new code.",
                to_err=True,
            )
        elif kind == "peer_away":
            self._print(
                f"~ browser {shown(event['peer'])} is away (reconnecting); what you send it is held for it "
                f"({_peer_list(event['peers'])})"
            )
        elif kind == "peer_back":
            self._print(f"+ browser {shown(event['peer'])} is back ({_peer_list(event['peers'])})")
        elif kind == "locked":
            self._print("  Session locked: no new browser can join with the code (/unlock to open it again).")
        elif kind == "unlocked":
            self._print("  Session unlocked: browsers can join with the code again.")
        elif kind == "ended":
            self._print("  Session ended: the browsers were told at once.")
        else:
            return False
        return True

    def _show_resumed(self, event: Event) -> None:
        self._print()
        for line in code_box(event["code"], "Session code (reconnected)", unicode_ok=self._unicode_ok):
            self._print("  " + line)
        away = f"; away: {', '.join(shown(peer) for peer in event['away'])}" if event["away"] else ""
        waiting = f"; waiting: {', '.join(shown(peer) for peer in event['waiting'])}" if event["waiting"] else ""
        self._print(f"  Reconnected to the same session ({_peer_list(event['peers'])}{away}{waiting}).")
        self._print()

    def _show_code(self, event: Event) -> None:
        title = "NEW session code" if event["new_session"] else "Session code"
        self._print()
        for line in code_box(event["code"], title, unicode_ok=self._unicode_ok):
            self._print("  " + line)
        if event["new_session"]:
            self._print("  This is a new session: browsers must enter the new code.")
        self._print("  Enter it on the pairing page. Type a line to send it to every browser,")
        self._print("  or '@peer text' to send to one; /peers lists browsers, /kick PEER removes")
        self._print("  one (and /admit PEER lets one in with --approve); /lock keeps newcomers out.")
        self._print("  Ctrl-D or Ctrl-C ends the session and quits.")
        self._print()
