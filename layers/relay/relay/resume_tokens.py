"""Resume tokens: what a holder of a place in a resumable session presents to take it back.

A token reads "<code>.<holder>.<secret>": the holder is "mac" or the browser's peer id,
the secret comes from `secrets` (RESUME_TOKEN_SECRET_BYTES, URL-safe base64). The first
two parts only say where to look; the store keeps nothing but the SHA-256 of the whole
token, on the holder's own item, and swaps it for the next token's hash in the
transaction that resumes, so a token works once. The secret has far more entropy than
any guesser can search, so a fast hash suffices (as for API keys); a slow password hash
would add nothing but latency.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final

from relay import protocol

_SECRET_LENGTH: Final = len(secrets.token_urlsafe(protocol.RESUME_TOKEN_SECRET_BYTES))
_TOKEN: Final = re.compile(
    rf"^(?P<code>[{protocol.CODE_ALPHABET}]{{{protocol.CODE_LENGTH}}})\."
    rf"(?P<holder>{protocol.MAC_PEER}|p[0-9a-f]{{8}})\."
    rf"(?P<secret>[A-Za-z0-9_-]{{{_SECRET_LENGTH}}})$"
)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # goes to the client once, never stored
    token_hash: str  # what the store keeps


@dataclass(frozen=True, slots=True)
class PresentedToken:
    code: str
    holder: str  # protocol.MAC_PEER or a peer id
    token_hash: str

    @property
    def for_mac(self) -> bool:
        return self.holder == protocol.MAC_PEER


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def issue(code: str, holder: str) -> IssuedToken:
    token = f"{code}.{holder}.{secrets.token_urlsafe(protocol.RESUME_TOKEN_SECRET_BYTES)}"
    return IssuedToken(token, token_hash(token))


def read(token: str) -> PresentedToken | None:
    """Where a presented token points, or None if it cannot be a token at all."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    return PresentedToken(match["code"], match["holder"], token_hash(token))
