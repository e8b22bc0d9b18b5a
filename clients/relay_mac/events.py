"""What the mac-client reports, as JSON-ready dicts with an `event` key.

One builder per event keeps the shapes in one place: `--json` mode prints these
objects verbatim (one per line), and the human renderer formats the same objects.
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]

# Error codes the client raises itself (the relay's own codes come from relay.protocol.ErrorCode).
LOCAL_NOT_CONNECTED = "not_connected"
LOCAL_NO_BROWSERS = "no_browsers"
LOCAL_USAGE = "usage"
LOCAL_TOO_LARGE = "payload_too_large"
LOCAL_BAD_MESSAGE = "bad_message"
LOCAL_CONNECT_FAILED = "connect_failed"  # a reconnect attempt failed
LOCAL_STARTUP_FAILED = "startup_failed"  # the first connection failed: the client exits
LOCAL_E2E_FAILED = "e2e_failed"  # a browser's encryption handshake did not complete


def connecting(url: str, attempt: int) -> Event:
    return {"event": "connecting", "url": url, "attempt": attempt}


def registered(code: str, session: int) -> Event:
    # `new_session` tells a script (and the person) that an earlier code stopped working.
    return {"event": "registered", "code": code, "session": session, "new_session": session > 1}


def resumed(code: str, session: int, connected: list[str], away: list[str], waiting: list[str]) -> Event:
    """The same session, back after a dropped connection: the code still works."""
    return {"event": "resumed", "code": code, "session": session, "peers": connected, "away": away, "waiting": waiting}


def resume_refused(code: str, error_code: str, message: str) -> Event:
    """The relay would not resume session `code` (its grace period ran out): a new one follows."""
    return {"event": "resume_refused", "code": code, "error": error_code, "message": message}


def peer_away(peer: str, connected: list[str], away: list[str]) -> Event:
    return {"event": "peer_away", "peer": peer, "peers": connected, "away": away}


def peer_back(peer: str, connected: list[str], away: list[str]) -> Event:
    return {"event": "peer_back", "peer": peer, "peers": connected, "away": away}


def locked(is_locked: bool) -> Event:
    """The relay confirmed /lock (no new browser can join with the code) or /unlock."""
    return {"event": "locked" if is_locked else "unlocked"}


def ended() -> Event:
    """The relay confirmed `end`: the session is over for every browser at once."""
    return {"event": "ended"}


def peer_joined(peer: str, peers: list[str]) -> Event:
    return {"event": "peer_joined", "peer": peer, "peers": peers}


def peer_left(peer: str, peers: list[str]) -> Event:
    return {"event": "peer_left", "peer": peer, "peers": peers}


def join_request(peer: str, ip: Any, user_agent: Any, waiting: list[str]) -> Event:
    return {"event": "join_request", "peer": peer, "ip": ip, "user_agent": user_agent, "waiting": waiting}


def peers(
    connected: list[str],
    waiting: list[str],
    encryption: dict[str, dict[str, Any]] | None = None,
    away: list[str] | None = None,
) -> Event:
    # encryption: peer -> {"encrypted": true|false|null (not settled yet), "sas": "042 917"|null}
    return {
        "event": "peers",
        "peers": connected,
        "waiting": waiting,
        "away": away or [],
        "encryption": encryption or {},
    }


def frame(sender: str, data: Any, *, encrypted: bool) -> Event:
    return {"event": "frame", "from": sender, "data": data, "encrypted": encrypted}


def sent(to: str | None, data: Any, *, encrypted: bool) -> Event:
    return {"event": "sent", "to": to, "data": data, "encrypted": encrypted}


def encryption(
    peer: str, *, encrypted: bool, sas: str | None = None, reason: str | None = None, message: str | None = None
) -> Event:
    """A browser's link is settled: encrypted, with the string to compare, or plain and why."""
    return {
        "event": "encryption",
        "peer": peer,
        "encrypted": encrypted,
        "sas": sas,
        "reason": reason,
        "message": message,
    }


def rejected(sender: str, reason: str, message: str) -> Event:
    """A frame that was not shown: replayed, reordered too far, truncated, tampered, ..."""
    return {"event": "rejected", "from": sender, "reason": reason, "message": message}


def error(code: str, message: str) -> Event:
    return {"event": "error", "error": code, "message": message}


def disconnected(code: int | None, reason: str, *, resuming: bool = False) -> Event:
    # resuming: the session is resumable, so the next connection asks for it back (same code).
    return {"event": "disconnected", "code": code, "reason": reason, "resuming": resuming}


def reconnecting(delay: float, attempt: int) -> Event:
    return {"event": "reconnecting", "delay": round(delay, 3), "attempt": attempt}


def stopped(reason: str) -> Event:
    return {"event": "stopped", "reason": reason}
