"""What one invocation of a function gave back, and the signature of the call that runs one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Invocation:
    """What came back from one invocation."""

    # "ok", "error" (the handler raised), "timeout", "crash", or "dropped" (queued while
    # relay-local was stopping, never run)
    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Runs one function: (function logical id, event, route key or source, connection id or
# label for the log line) -> the invocation and its request id.
Invoke = Callable[[str, dict[str, Any], str, str], Awaitable[tuple[Invocation, str]]]
