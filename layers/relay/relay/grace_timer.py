"""The grace timer on SQS: one message per absence, delayed by ResumeGraceSeconds
(DelaySeconds, 1 to 900), delivered to the grace function. Nothing runs, and nothing is
paid, while nobody is away."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from relay.model import Absence


def encode_absence(absence: Absence) -> str:
    return json.dumps({"code": absence.code, "holder": absence.holder, "connection_id": absence.connection_id})


def absence_from_record(record: Mapping[str, Any]) -> Absence | None:
    """The absence an SQS record carries; None for a body the relay did not write."""
    try:
        body = json.loads(record["body"])
        return Absence(str(body["code"]), str(body["holder"]), str(body["connection_id"]))
    except (KeyError, TypeError, ValueError):
        return None


class SqsGraceTimer:
    def __init__(self, client: Callable[[], Any], queue_url: str, delay_seconds: int) -> None:
        self._client = client  # made on first use: most invocations never start a timer
        self.queue_url = queue_url
        self.delay_seconds = delay_seconds

    def start(self, absence: Absence) -> None:
        self._client().send_message(
            QueueUrl=self.queue_url, MessageBody=encode_absence(absence), DelaySeconds=self.delay_seconds
        )
