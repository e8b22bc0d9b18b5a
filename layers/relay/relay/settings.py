"""The relay's configuration, read once per container from the function's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from relay import protocol


@dataclass(frozen=True, slots=True)
class Settings:
    table_name: str
    max_browsers: int = protocol.DEFAULT_MAX_BROWSERS
    max_auth_attempts: int = protocol.DEFAULT_MAX_AUTH_ATTEMPTS
    session_ttl_seconds: int = protocol.DEFAULT_SESSION_TTL_SECONDS
    max_code_attempts: int = protocol.DEFAULT_MAX_CODE_ATTEMPTS
    counter_shards: int = protocol.DEFAULT_COUNTER_SHARDS
    auth_failures_per_ip: int = protocol.DEFAULT_AUTH_FAILURES_PER_IP
    auth_failure_window_seconds: int = protocol.DEFAULT_AUTH_FAILURE_WINDOW_SECONDS
    registrations_per_ip: int = protocol.DEFAULT_REGISTRATIONS_PER_IP
    # Resumable sessions
    resume_grace_seconds: int = protocol.DEFAULT_RESUME_GRACE_SECONDS
    max_held_frames: int = protocol.DEFAULT_MAX_HELD_FRAMES
    max_session_seconds: int = protocol.DEFAULT_MAX_SESSION_SECONDS
    grace_queue_url: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def number(name: str, default: int) -> int:
            raw = environ.get(name)
            if raw is None or raw == "":
                return default
            value = int(raw)
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {raw!r}")
            return value

        max_browsers = number("MAX_BROWSERS", protocol.DEFAULT_MAX_BROWSERS)
        if max_browsers > protocol.MAX_BROWSERS_LIMIT:
            raise ValueError(f"MAX_BROWSERS may be at most {protocol.MAX_BROWSERS_LIMIT}, got {max_browsers}")
        grace = number("RESUME_GRACE_SECONDS", protocol.DEFAULT_RESUME_GRACE_SECONDS)
        if not protocol.MIN_RESUME_GRACE_SECONDS <= grace <= protocol.MAX_RESUME_GRACE_SECONDS:
            raise ValueError(
                f"RESUME_GRACE_SECONDS must be {protocol.MIN_RESUME_GRACE_SECONDS} to "
                f"{protocol.MAX_RESUME_GRACE_SECONDS} (SQS's DelaySeconds), got {grace}"
            )
        return cls(
            table_name=environ["TABLE_NAME"],
            max_browsers=max_browsers,
            max_auth_attempts=number("MAX_AUTH_ATTEMPTS", protocol.DEFAULT_MAX_AUTH_ATTEMPTS),
            session_ttl_seconds=number("SESSION_TTL_SECONDS", protocol.DEFAULT_SESSION_TTL_SECONDS),
            max_code_attempts=number("MAX_CODE_ATTEMPTS", protocol.DEFAULT_MAX_CODE_ATTEMPTS),
            counter_shards=number("COUNTER_SHARDS", protocol.DEFAULT_COUNTER_SHARDS),
            auth_failures_per_ip=number("AUTH_FAILURES_PER_IP", protocol.DEFAULT_AUTH_FAILURES_PER_IP),
            auth_failure_window_seconds=number(
                "AUTH_FAILURE_WINDOW_SECONDS", protocol.DEFAULT_AUTH_FAILURE_WINDOW_SECONDS
            ),
            registrations_per_ip=number("REGISTRATIONS_PER_IP", protocol.DEFAULT_REGISTRATIONS_PER_IP),
            resume_grace_seconds=grace,
            max_held_frames=number("MAX_HELD_FRAMES", protocol.DEFAULT_MAX_HELD_FRAMES),
            max_session_seconds=number("MAX_SESSION_SECONDS", protocol.DEFAULT_MAX_SESSION_SECONDS),
            grace_queue_url=environ.get("GRACE_QUEUE_URL", ""),
        )
