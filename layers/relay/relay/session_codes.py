"""Where session codes and peer ids come from.

`generate_session_code` is the one and only source of codes: the session store calls
it through this module, so a test can replace it (e.g. with a tiny alphabet) to force
collisions and prove that uniqueness comes from DynamoDB's conditional writes.
"""

from __future__ import annotations

import secrets

from relay.protocol import CODE_ALPHABET, CODE_LENGTH


def generate_session_code() -> str:
    """A fresh code from a cryptographically secure source."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def generate_peer_id() -> str:
    """An opaque id for a browser within its session (never the connection id)."""
    return "p" + secrets.token_hex(4)
