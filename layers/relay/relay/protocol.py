"""Protocol v1 of the pairing relay: the one place its facts are defined.

Handlers, tests, the Python clients and (through a checked copy) the browser page
take the code alphabet, limits, error codes and message shapes from here.
See docs/PROTOCOL.md for the prose version.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

PROTOCOL_VERSION: Final = 1

# Codes: 6 characters, with 0 O 1 I L left out so that a code read aloud or
# typed from a screen cannot be mistaken for another.
CODE_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH: Final = 6
# Characters a person may type between code characters; dropped when normalising.
CODE_SEPARATORS: Final = " -"

CLIENT_ID_MAX_LENGTH: Final = 128
MAC_PEER: Final = "mac"  # the "from" of frames sent by the mac-client

# API Gateway's own limits (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html).
MAX_FRAME_BYTES: Final = 32 * 1024
MAX_MESSAGE_BYTES: Final = 128 * 1024
IDLE_TIMEOUT_SECONDS: Final = 10 * 60
MAX_CONNECTION_SECONDS: Final = 2 * 60 * 60

# Defaults of the template's parameters (the deployed values arrive as environment).
DEFAULT_MAX_BROWSERS: Final = 8
# Ending a session is one DynamoDB transaction of 3 items plus 2 per browser, and a
# transaction holds at most 100 items.
MAX_BROWSERS_LIMIT: Final = 48
DEFAULT_MAX_AUTH_ATTEMPTS: Final = 5
# A session cannot outlive its mac-client's connection; the margin covers clock skew
# and a $disconnect that arrives late.
DEFAULT_SESSION_TTL_SECONDS: Final = MAX_CONNECTION_SECONDS + 10 * 60
DEFAULT_MAX_CODE_ATTEMPTS: Final = 10
DEFAULT_COUNTER_SHARDS: Final = 10
# Failed auths allowed from one source IP per window, across all its connections.
DEFAULT_AUTH_FAILURES_PER_IP: Final = 20
DEFAULT_AUTH_FAILURE_WINDOW_SECONDS: Final = 10 * 60
# Sessions one source address may register per window (the auth failure window).
DEFAULT_REGISTRATIONS_PER_IP: Final = 60

# Resumable sessions
# How long an away peer's place (and the frames held for it) is kept; SQS's DelaySeconds
# range, which is what times it.
DEFAULT_RESUME_GRACE_SECONDS: Final = 120
MIN_RESUME_GRACE_SECONDS: Final = 1
MAX_RESUME_GRACE_SECONDS: Final = 900
DEFAULT_MAX_HELD_FRAMES: Final = 100
DEFAULT_MAX_SESSION_SECONDS: Final = 24 * 3600
# A resume token: "<code>.<holder>.<secret>", holder "mac" or the browser's peer id, the
# secret 32 URL-safe base64 characters (192 bits). Clients treat it as opaque.
RESUME_TOKEN_SECRET_BYTES: Final = 24
RESUME_TOKEN_MAX_LENGTH: Final = 128


class Action(StrEnum):
    REGISTER = "register"
    AUTH = "auth"
    SEND = "send"
    # Keepalive: API Gateway closes a connection after 10 idle minutes, and WebSocket
    # pings do not count as activity, so clients send this. It has no route of its own
    # and is answered by the $default function with {"type":"pong"}.
    PING = "ping"
    # Admission control by the mac-client.
    KICK = "kick"
    ADMIT = "admit"
    # The mac-client stops (and resumes) new browsers joining with the code.
    LOCK = "lock"
    UNLOCK = "unlock"
    RESUME = "resume"
    END = "end"
    LEAVE = "leave"


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNKNOWN_ACTION = "unknown_action"
    INVALID_CODE = "invalid_code"
    ALREADY_BOUND = "already_bound"
    NOT_BOUND = "not_bound"
    UNKNOWN_PEER = "unknown_peer"
    SESSION_FULL = "session_full"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PEER_GONE = "peer_gone"
    INTERNAL_ERROR = "internal_error"
    RATE_LIMITED = "rate_limited"
    NOT_ADMITTED = "not_admitted"
    NOT_MAC = "not_mac"
    BANNED = "banned"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 (an error code, not a secret)
    PEER_AWAY = "peer_away"


ERROR_MESSAGES: Final[dict[ErrorCode, str]] = {
    ErrorCode.BAD_REQUEST: "The message is not valid for this action.",
    ErrorCode.UNKNOWN_ACTION: (
        "Unknown action; expected register, auth, send, ping, kick, admit, lock, unlock, resume, end or leave."
    ),
    ErrorCode.INVALID_CODE: "That code does not match an open session.",
    ErrorCode.ALREADY_BOUND: "This connection is already part of a session.",
    ErrorCode.NOT_BOUND: "Register or authenticate before sending.",
    ErrorCode.UNKNOWN_PEER: "No browser with that peer id in this session.",
    ErrorCode.SESSION_FULL: "This session has no room for another browser.",
    ErrorCode.TOO_MANY_ATTEMPTS: "Too many failed attempts; the connection will be closed.",
    ErrorCode.PAYLOAD_TOO_LARGE: "The frame is too large to deliver.",
    ErrorCode.PEER_GONE: "The other end has disconnected.",
    ErrorCode.INTERNAL_ERROR: "The relay could not complete the request; try again.",
    ErrorCode.RATE_LIMITED: "Too many attempts from your network; wait a few minutes.",
    ErrorCode.NOT_ADMITTED: "The session's owner has not admitted you yet.",
    ErrorCode.NOT_MAC: "Only the session's mac-client may do that.",
    ErrorCode.BANNED: "The session's owner has removed you; you cannot join this session again.",
    ErrorCode.INVALID_TOKEN: "That resume token is unknown, used or expired.",
    ErrorCode.PEER_AWAY: "The other end is away and no more frames can be held for it.",
}


class MessageType(StrEnum):
    REGISTERED = "registered"
    AUTHENTICATED = "authenticated"
    PEER_JOINED = "peer_joined"
    PEER_LEFT = "peer_left"
    SESSION_CLOSED = "session_closed"
    FRAME = "frame"
    PONG = "pong"
    PENDING = "pending"
    JOIN_REQUEST = "join_request"
    KICKED = "kicked"
    ERROR = "error"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    RESUMED = "resumed"
    PEER_AWAY = "peer_away"
    PEER_BACK = "peer_back"
    ENDED = "ended"
    LEFT = "left"


class PeerState(StrEnum):
    """A peer's state as `resumed` lists it."""

    PRESENT = "present"
    AWAY = "away"
    PENDING = "pending"


Message = dict[str, Any]


def encode(message: Message) -> str:
    """Serialise a relay -> client message the way it goes on the wire."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def encoded_size(message: Message) -> int:
    return len(encode(message).encode("utf-8"))


def registered(code: str) -> Message:
    return {"type": MessageType.REGISTERED.value, "code": code}


def authenticated(code: str, peer: str) -> Message:
    return {"type": MessageType.AUTHENTICATED.value, "code": code, "peer": peer}


def peer_joined(peer: str) -> Message:
    return {"type": MessageType.PEER_JOINED.value, "peer": peer}


def peer_left(peer: str) -> Message:
    return {"type": MessageType.PEER_LEFT.value, "peer": peer}


def session_closed() -> Message:
    return {"type": MessageType.SESSION_CLOSED.value}


def frame(sender: str, data: Any) -> Message:
    return {"type": MessageType.FRAME.value, "from": sender, "data": data}


def pong() -> Message:
    return {"type": MessageType.PONG.value}


def pending() -> Message:
    return {"type": MessageType.PENDING.value}


def join_request(peer: str, ip: str | None, user_agent: str | None) -> Message:
    return {"type": MessageType.JOIN_REQUEST.value, "peer": peer, "ip": ip, "user_agent": user_agent}


def kicked() -> Message:
    return {"type": MessageType.KICKED.value}


def locked() -> Message:
    return {"type": MessageType.LOCKED.value}


def unlocked() -> Message:
    return {"type": MessageType.UNLOCKED.value}


def resumed(role: str, code: str, peers: list[dict[str, str]], resume_token: str, peer: str | None = None) -> Message:
    message: Message = {"type": MessageType.RESUMED.value, "role": role, "code": code}
    if peer is not None:
        message["peer"] = peer
    message["peers"] = peers
    message["resume_token"] = resume_token
    return message


def peer_away(peer: str) -> Message:
    return {"type": MessageType.PEER_AWAY.value, "peer": peer}


def peer_back(peer: str) -> Message:
    return {"type": MessageType.PEER_BACK.value, "peer": peer}


def ended() -> Message:
    return {"type": MessageType.ENDED.value}


def left() -> Message:
    return {"type": MessageType.LEFT.value}


def with_resume_token(message: Message, resume_token: str | None) -> Message:
    """registered / authenticated / pending of a resumable session carry the holder's token."""
    return message if resume_token is None else {**message, "resume_token": resume_token}


def error(code: ErrorCode, message: str | None = None) -> Message:
    return {
        "type": MessageType.ERROR.value,
        "error": code.value,
        "message": message or ERROR_MESSAGES[code],
    }


def normalise_code(raw: str) -> str:
    """What a person typed, as the relay compares it: trimmed, upper case, no spaces or dashes."""
    return "".join(ch for ch in raw.strip().upper() if ch not in CODE_SEPARATORS)


def is_well_formed_code(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(ch in CODE_ALPHABET for ch in code)


def redact_code(code: str) -> str:
    """A code as it may appear in logs: enough to correlate, too little to join."""
    return code[:2] + "*" * max(len(code) - 2, 0)


# ---- client -> relay -------------------------------------------------------------


class ProtocolError(Exception):
    """A client message that cannot be acted on; carries the error reply to send."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or ERROR_MESSAGES[code])
        self.code = code
        self.reply = error(code, message)


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    client_id: str
    approve: bool = False  # browsers wait in "pending" until the mac-client admits them
    resumable: bool = False  # peers that drop are away, not gone (docs/PROTOCOL.md)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    code: str  # as typed; normalise_code() before use


@dataclass(frozen=True, slots=True)
class SendRequest:
    data: Any
    to: str | None = None


@dataclass(frozen=True, slots=True)
class KickRequest:
    peer: str


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    peer: str


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    token: str


@dataclass(frozen=True, slots=True)
class _ActionOnly:
    """A request that is its action alone; each subclass is one such action."""


class PingRequest(_ActionOnly): ...


class LockRequest(_ActionOnly): ...


class UnlockRequest(_ActionOnly): ...


class EndRequest(_ActionOnly): ...


class LeaveRequest(_ActionOnly): ...


ActionOnlyRequest = PingRequest | LockRequest | UnlockRequest | EndRequest | LeaveRequest
_ACTION_ONLY_REQUESTS: Final[dict[Action, type[ActionOnlyRequest]]] = {
    Action.PING: PingRequest,
    Action.LOCK: LockRequest,
    Action.UNLOCK: UnlockRequest,
    Action.END: EndRequest,
    Action.LEAVE: LeaveRequest,
}


ClientRequest = (
    RegisterRequest
    | AuthRequest
    | SendRequest
    | PingRequest
    | KickRequest
    | AdmitRequest
    | LockRequest
    | UnlockRequest
    | ResumeRequest
    | EndRequest
    | LeaveRequest
)


# Python's json module accepts more than RFC 8259: NaN, Infinity and -Infinity, numbers
# too large for a double (which become inf), and lone UTF-16 surrogates, raw or escaped.
# None of them can be relayed as JSON, so each is a bad request.
def _refuse_non_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal} does not fit a double")
    return number


# A cheap scan of the body; only a body that may hold a surrogate pays for the full check.
_MAYBE_LONE_SURROGATE: Final = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


def _is_valid_unicode(message: Any) -> bool:
    """False if a string (key or value) holds a surrogate that is not part of a pair."""
    try:
        encode(message).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_client_message(body: str | None) -> dict[str, Any]:
    """Parse a text frame into a JSON object with a string `action`, or raise ProtocolError."""
    if body is None or body == "":
        raise ProtocolError(ErrorCode.BAD_REQUEST, "Empty message; send a JSON object.")
    try:
        message = json.loads(body, parse_constant=_refuse_non_json_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "Messages must be JSON objects (RFC 8259).") from None
    if _MAYBE_LONE_SURROGATE.search(body) and not _is_valid_unicode(message):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "Messages must be valid Unicode: no lone surrogates.")
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "Messages must be JSON objects.")
    action = message.get("action")
    if not isinstance(action, str):
        raise ProtocolError(ErrorCode.UNKNOWN_ACTION, "Messages need a string `action`.")
    return message


def parse_client_message(body: str | None) -> ClientRequest:
    """Turn a client's text frame into a typed request, or raise ProtocolError."""
    message = decode_client_message(body)
    action = message["action"]
    if action == Action.REGISTER:
        client_id = message.get("client_id")
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= CLIENT_ID_MAX_LENGTH:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"register needs `client_id`, a string of 1 to {CLIENT_ID_MAX_LENGTH} characters.",
            )
        approve = message.get("approve", False)
        if not isinstance(approve, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "`approve` must be true or false.")
        resumable = message.get("resumable", False)
        if not isinstance(resumable, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "`resumable` must be true or false.")
        return RegisterRequest(client_id=client_id, approve=approve, resumable=resumable)
    if action == Action.AUTH:
        code = message.get("code")
        if not isinstance(code, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "auth needs `code`, a string.")
        return AuthRequest(code=code)
    if action == Action.SEND:
        if "data" not in message:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "send needs `data`, any JSON value.")
        to = message.get("to")
        if to is not None and not isinstance(to, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "`to` must be a peer id string.")
        return SendRequest(data=message["data"], to=to)
    if action in (Action.KICK, Action.ADMIT):
        peer = message.get("peer")
        if not isinstance(peer, str) or not peer:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{action} needs `peer`, a peer id string.")
        return KickRequest(peer) if action == Action.KICK else AdmitRequest(peer)
    if action == Action.RESUME:
        token = message.get("token")
        if not isinstance(token, str) or not 1 <= len(token) <= RESUME_TOKEN_MAX_LENGTH:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"resume needs `token`, a string of 1 to {RESUME_TOKEN_MAX_LENGTH} characters."
            )
        return ResumeRequest(token)
    if (action_only := _ACTION_ONLY_REQUESTS.get(action)) is not None:
        return action_only()
    raise ProtocolError(ErrorCode.UNKNOWN_ACTION)
