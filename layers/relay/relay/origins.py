"""Which web pages may open a connection ($connect's Origin check)."""

from __future__ import annotations

ANY_ORIGIN = "*"


def parse_allowed_origins(setting: str) -> frozenset[str] | None:
    """`*` (None: any origin) or a comma-separated list of exact origins."""
    origins = frozenset(o.strip().rstrip("/").lower() for o in setting.split(",") if o.strip())
    return None if not origins or ANY_ORIGIN in origins else origins


def origin_allowed(origin: str | None, allowed: frozenset[str] | None) -> bool:
    """Browsers always send Origin on a WebSocket handshake and a page cannot forge it,
    so checking it stops a hostile page from driving a visitor's browser into the relay.
    Native clients (the mac-client) send none; they could send any, so nothing is gained
    by refusing them."""
    if allowed is None or origin is None:
        return True
    return origin.strip().rstrip("/").lower() in allowed
