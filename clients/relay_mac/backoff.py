"""Reconnect delays: exponential growth, a hard cap, and jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_INITIAL_SECONDS = 1.0
DEFAULT_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_seconds: float = DEFAULT_INITIAL_SECONDS
    max_seconds: float = DEFAULT_MAX_SECONDS
    factor: float = 2.0
    # Each delay is drawn from [(1 - jitter) * d, d]: after a relay restart, the
    # mac-clients it dropped spread their reconnects instead of arriving together.
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial_seconds < 0 or self.max_seconds < self.initial_seconds:
            raise ValueError("backoff needs 0 <= initial <= max")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")


class Backoff:
    """Successive delays for one run of failed attempts; `reset` after a success."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.failures = 0

    def ceiling(self) -> float:
        """The delay before jitter for the next attempt."""
        policy = self.policy
        # min() before the power would still overflow for huge failure counts; cap the exponent.
        exponent = min(self.failures, 64)
        return float(min(policy.max_seconds, policy.initial_seconds * policy.factor**exponent))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.failures += 1
        return self._rng.uniform((1 - self.policy.jitter) * ceiling, ceiling)

    def reset(self) -> None:
        self.failures = 0
