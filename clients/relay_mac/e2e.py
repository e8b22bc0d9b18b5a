"""End-to-end encryption between a mac-client and each browser: a layer on v1 `send` data.

The relay carries these objects as opaque `data`; it never sees a key or a plaintext.
Everything here is built from the `cryptography` package (X25519, HKDF-SHA256,
AES-256-GCM, SHA-256); nothing is home-made. docs/PROTOCOL.md ("End-to-end
encryption") specifies the messages; clients/e2e-vectors.json holds test vectors that
this module and the page (clients/browser/app.js) are both checked against.

Handshake, per browser, the browser initiating (a hash commitment keeps a relay that
substitutes keys from choosing its key after seeing ours, so a short string suffices):

    browser → mac   {"e2e":1,"hs":"commit","commit":b64url(SHA-256(browser_public))}
    mac → browser   {"e2e":1,"hs":"key","key":b64url(mac_public),"commit":<the commit answered>}
    browser → mac   {"e2e":1,"hs":"reveal","key":b64url(browser_public)}

then frames are `{"e2e":1,"n":<counter>,"ct":b64url(AES-256-GCM(JSON text))}`. The mac
may ask for a fresh handshake with `{"e2e":1,"hs":"rekey"}` and, with encryption off,
answers a commit with `{"e2e":1,"hs":"decline"}`.

Use: a browser-side program makes a `BrowserHandshake`, a mac-side one a
`MacHandshake` per browser; both end with a `Channel` that seals and opens frames.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from relay import protocol

# The layer's name and version; the name starts the transcript and every HKDF label.
LAYER = "pairing-relay-e2e/1"
VERSION = 1
# The peer id the relay gives the mac-client in frames (`"from":"mac"` in protocol v1).
MAC_PEER = protocol.MAC_PEER
KEY_BYTES = 32  # X25519 public keys, AES-256 keys
TAG_BYTES = 16  # AES-GCM tag
NONCE_BYTES = 12
# Frames may arrive out of order (API Gateway runs invocations concurrently): a receiver
# accepts a counter up to this far behind the highest one it has opened, once each.
REPLAY_WINDOW = 64
# Counters stay exact in a JavaScript number.
MAX_COUNTER = 2**53 - 1
SAS_DIGITS = 6
SAS_BYTES = 8  # reduced mod 10**6: the bias is below 10**6 / 2**64
LABEL_BROWSER_TO_MAC = f"{LAYER} browser->mac"
LABEL_MAC_TO_BROWSER = f"{LAYER} mac->browser"
LABEL_SAS = f"{LAYER} sas"

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class Step(StrEnum):
    COMMIT = "commit"
    KEY = "key"
    REVEAL = "reveal"
    REKEY = "rekey"
    DECLINE = "decline"


class Reason(StrEnum):
    """Why a received e2e message was rejected; the page uses the same words."""

    MALFORMED = "malformed"  # not a well-formed e2e object
    UNSUPPORTED_VERSION = "unsupported_version"
    TRUNCATED = "truncated"  # ciphertext shorter than its tag
    TAMPERED = "tampered"  # authentication failed: altered, or sealed with other keys
    REPLAYED = "replayed"  # that counter was opened already
    TOO_OLD = "too_old"  # behind the replay window
    NO_KEYS = "no_keys"  # sealed, but no key agreement with that peer
    NOT_ENCRYPTED = "not_encrypted"  # a plain frame from a peer that set up encryption
    BAD_HANDSHAKE = "bad_handshake"  # a handshake step that does not fit (stale, wrong commit, bad key)


REASON_TEXT: dict[Reason, str] = {
    Reason.MALFORMED: "not a well-formed encrypted message",
    Reason.UNSUPPORTED_VERSION: "an encryption version this client does not know",
    Reason.TRUNCATED: "the ciphertext was cut short",
    Reason.TAMPERED: "it failed authentication (altered in transit, or not from this peer)",
    Reason.REPLAYED: "a replay of a message already received",
    Reason.TOO_OLD: "too far out of order (older than the replay window)",
    Reason.NO_KEYS: "encrypted, but there is no key agreement with that peer (a new one was requested)",
    Reason.NOT_ENCRYPTED: "not encrypted, from a peer that set up encryption",
    Reason.BAD_HANDSHAKE: "a handshake message that does not fit the handshake in progress",
}


class Rejected(Exception):
    """A received message that must not be shown; `reason` says why."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(REASON_TEXT[reason])
        self.reason = reason


# ---- encodings -----------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: Any, length: int | None = None) -> bytes:
    """Unpadded base64url, strictly (no padding, no other characters); Rejected otherwise."""
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise Rejected(Reason.MALFORMED)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Rejected(Reason.MALFORMED) from None
    if b64url(data) != text or (length is not None and len(data) != length):
        raise Rejected(Reason.MALFORMED)
    return data


def plaintext_of(data: Any) -> bytes:
    """The bytes sealed for a frame's data: its JSON text, UTF-8."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def data_of(plaintext: bytes) -> Any:
    try:
        return json.loads(plaintext.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejected(Reason.MALFORMED) from None


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def commitment(browser_public: bytes) -> bytes:
    return hashlib.sha256(browser_public).digest()


# ---- what a frame's data is ---------------------------------------------------------------


class Kind(StrEnum):
    PLAIN = "plain"  # anything that is not an e2e object: a frame of a client without the layer
    HANDSHAKE = "handshake"
    SEALED = "sealed"


def kind_of(data: Any) -> Kind:
    """An object with an `e2e` member belongs to this layer; `hs` marks a handshake step."""
    if not isinstance(data, dict) or "e2e" not in data:
        return Kind.PLAIN
    return Kind.HANDSHAKE if "hs" in data else Kind.SEALED


def _whole_number(value: Any) -> int | None:
    """A JSON integer, as a JavaScript peer sees it: `1` and `1.0` are the same number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _check_version(message: Mapping[str, Any]) -> None:
    version = _whole_number(message.get("e2e"))
    if version is None:
        raise Rejected(Reason.MALFORMED)
    if version != VERSION:
        raise Rejected(Reason.UNSUPPORTED_VERSION)


def handshake_step(message: Mapping[str, Any]) -> Step:
    _check_version(message)
    try:
        return Step(str(message.get("hs")))
    except ValueError:
        raise Rejected(Reason.MALFORMED) from None


def commit_message(commit: bytes) -> dict[str, Any]:
    return {"e2e": VERSION, "hs": Step.COMMIT.value, "commit": b64url(commit)}


def key_message(mac_public: bytes, commit: bytes) -> dict[str, Any]:
    return {"e2e": VERSION, "hs": Step.KEY.value, "key": b64url(mac_public), "commit": b64url(commit)}


def reveal_message(browser_public: bytes) -> dict[str, Any]:
    return {"e2e": VERSION, "hs": Step.REVEAL.value, "key": b64url(browser_public)}


def rekey_message() -> dict[str, Any]:
    return {"e2e": VERSION, "hs": Step.REKEY.value}


def decline_message() -> dict[str, Any]:
    return {"e2e": VERSION, "hs": Step.DECLINE.value}


# ---- key schedule --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    """What both keys and the short string are bound to."""

    code: str
    mac_peer: str
    browser_peer: str
    browser_public: bytes
    mac_public: bytes

    def encode(self) -> bytes:
        """Each field as a 2-byte big-endian length and its bytes (text as UTF-8), in this order:
        layer name, session code, mac peer id, browser peer id, browser key, mac key."""
        fields = [
            LAYER.encode(),
            self.code.encode(),
            self.mac_peer.encode(),
            self.browser_peer.encode(),
            self.browser_public,
            self.mac_public,
        ]
        out = bytearray()
        for item in fields:
            if len(item) > 0xFFFF:
                raise ValueError("transcript field too long")
            out += len(item).to_bytes(2, "big") + item
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    browser_to_mac: bytes
    mac_to_browser: bytes
    sas: str  # SAS_DIGITS digits


def _hkdf(shared: bytes, salt: bytes, label: str, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=label.encode()).derive(shared)


def derive(shared_secret: bytes, transcript: Transcript) -> SessionKeys:
    """HKDF-SHA256 with the X25519 secret as input and SHA-256(transcript) as salt; one
    output per label: a key per direction and the short authentication string."""
    salt = hashlib.sha256(transcript.encode()).digest()
    sas_number = int.from_bytes(_hkdf(shared_secret, salt, LABEL_SAS, SAS_BYTES), "big") % 10**SAS_DIGITS
    return SessionKeys(
        browser_to_mac=_hkdf(shared_secret, salt, LABEL_BROWSER_TO_MAC, KEY_BYTES),
        mac_to_browser=_hkdf(shared_secret, salt, LABEL_MAC_TO_BROWSER, KEY_BYTES),
        sas=f"{sas_number:0{SAS_DIGITS}d}",
    )


def spaced_sas(sas: str) -> str:
    """`042917` as `042 917`, to compare at a glance."""
    half = len(sas) // 2
    return f"{sas[:half]} {sas[half:]}"


def _shared_secret(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:  # a low-order point: the secret would be all zeros
        raise Rejected(Reason.BAD_HANDSHAKE) from None


# ---- frames ----------------------------------------------------------------------------------


def nonce_of(counter: int) -> bytes:
    return counter.to_bytes(NONCE_BYTES, "big")


class Sealer:
    """One direction's sending side: a counter from 0 that never repeats under its key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.counter = 0

    def seal(self, data: Any) -> dict[str, Any]:
        return self.seal_plaintext(plaintext_of(data))

    def seal_plaintext(self, plaintext: bytes) -> dict[str, Any]:
        counter = self.counter
        if counter > MAX_COUNTER:
            raise OverflowError("counter exhausted: make a new key agreement")
        self.counter += 1
        return {"e2e": VERSION, "n": counter, "ct": b64url(self._aead.encrypt(nonce_of(counter), plaintext, None))}


@dataclass(slots=True)
class ReplayWindow:
    """Accepts each counter once, and none more than REPLAY_WINDOW behind the highest."""

    size: int = REPLAY_WINDOW
    highest: int = -1
    seen: set[int] = field(default_factory=set)

    def check(self, counter: int) -> None:
        if counter <= self.highest - self.size:
            raise Rejected(Reason.TOO_OLD)
        if counter in self.seen:
            raise Rejected(Reason.REPLAYED)

    def accept(self, counter: int) -> None:
        self.seen.add(counter)
        if counter > self.highest:
            self.highest = counter
            self.seen = {n for n in self.seen if n > self.highest - self.size}


class Opener:
    """One direction's receiving side."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.window = ReplayWindow()

    def open(self, envelope: Any) -> Any:
        return data_of(self.open_plaintext(envelope))

    def open_plaintext(self, envelope: Any) -> bytes:
        if not isinstance(envelope, dict) or set(envelope) != {"e2e", "n", "ct"}:
            raise Rejected(Reason.MALFORMED)
        _check_version(envelope)
        counter = _whole_number(envelope["n"])
        if counter is None or not 0 <= counter <= MAX_COUNTER:
            raise Rejected(Reason.MALFORMED)
        sealed = from_b64url(envelope["ct"])
        if len(sealed) < TAG_BYTES:
            raise Rejected(Reason.TRUNCATED)
        # Checked before decrypting, recorded only after: a forged counter cannot move the window.
        self.window.check(counter)
        try:
            plaintext = self._aead.decrypt(nonce_of(counter), sealed, None)
        except InvalidTag:
            raise Rejected(Reason.TAMPERED) from None
        self.window.accept(counter)
        return plaintext


class Channel:
    """An established key agreement, from one side: seals what it sends, opens what it receives."""

    def __init__(self, keys: SessionKeys, *, is_mac: bool) -> None:
        self.keys = keys
        self.sas = keys.sas
        send_key, receive_key = (
            (keys.mac_to_browser, keys.browser_to_mac) if is_mac else (keys.browser_to_mac, keys.mac_to_browser)
        )
        self._sealer = Sealer(send_key)
        self._opener = Opener(receive_key)

    def seal(self, data: Any) -> dict[str, Any]:
        return self._sealer.seal(data)

    def open(self, envelope: Any) -> Any:
        return self._opener.open(envelope)


# ---- the two sides of a handshake -----------------------------------------------------------


def _private(private: X25519PrivateKey | None) -> X25519PrivateKey:
    return private if private is not None else X25519PrivateKey.generate()


class _Side:
    """One side of a handshake: the session, the two peers, a fresh key pair (or the given one)."""

    def __init__(
        self, code: str, browser_peer: str, mac_peer: str = MAC_PEER, private: X25519PrivateKey | None = None
    ) -> None:
        self.code = code
        self.browser_peer = browser_peer
        self.mac_peer = mac_peer
        self._private = _private(private)
        self.public = public_bytes(self._private.public_key())


class BrowserHandshake(_Side):
    """The initiator: `commit()` to send, then `on_key(message)` gives the reveal and the channel."""

    def __init__(
        self, code: str, browser_peer: str, mac_peer: str = MAC_PEER, private: X25519PrivateKey | None = None
    ) -> None:
        super().__init__(code, browser_peer, mac_peer, private)
        self.commit = commitment(self.public)

    def commit_message(self) -> dict[str, Any]:
        return commit_message(self.commit)

    def on_key(self, message: Mapping[str, Any]) -> tuple[dict[str, Any], Channel]:
        if handshake_step(message) != Step.KEY:
            raise Rejected(Reason.BAD_HANDSHAKE)
        if from_b64url(message.get("commit"), KEY_BYTES) != self.commit:
            raise Rejected(Reason.BAD_HANDSHAKE)  # an answer to another (older) commit
        mac_public = from_b64url(message.get("key"), KEY_BYTES)
        transcript = Transcript(self.code, self.mac_peer, self.browser_peer, self.public, mac_public)
        keys = derive(_shared_secret(self._private, mac_public), transcript)
        return reveal_message(self.public), Channel(keys, is_mac=False)


class MacHandshake(_Side):
    """The responder, one per browser: `on_commit` gives the key message, `on_reveal` the channel."""

    commit: bytes | None = None  # the browser's, once on_commit has it

    def on_commit(self, message: Mapping[str, Any]) -> dict[str, Any]:
        if handshake_step(message) != Step.COMMIT:
            raise Rejected(Reason.BAD_HANDSHAKE)
        self.commit = from_b64url(message.get("commit"), KEY_BYTES)
        return key_message(self.public, self.commit)

    def on_reveal(self, message: Mapping[str, Any]) -> Channel:
        if handshake_step(message) != Step.REVEAL or self.commit is None:
            raise Rejected(Reason.BAD_HANDSHAKE)
        browser_public = from_b64url(message.get("key"), KEY_BYTES)
        if commitment(browser_public) != self.commit:
            raise Rejected(Reason.BAD_HANDSHAKE)  # not the key the browser committed to
        transcript = Transcript(self.code, self.mac_peer, self.browser_peer, browser_public, self.public)
        keys = derive(_shared_secret(self._private, browser_public), transcript)
        return Channel(keys, is_mac=True)
