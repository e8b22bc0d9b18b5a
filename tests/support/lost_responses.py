"""Lost responses below botocore's retry loop, and DynamoDB's ClientRequestToken, for moto.

`LostResponses` lets a chosen DynamoDB call reach the table (moto applies it) and then
replaces its response with a read timeout, as a dropped connection would: botocore's
standard retry mode sees `ReadTimeoutError` and sends the same request again. It is a
`before-send` handler; botocore runs handlers of the more specific event name
(before-send.dynamodb) before moto's stub (registered for before-send), so it hands the
request to moto's stub itself (unless the idempotency emulation below already did),
points it away from moto, and raises: botocore's endpoint treats that as a transport
failure (HTTPClientError), below the retry loop.

`IdempotentTransactions` emulates what DynamoDB documents and moto does not do:
TransactWriteItems with a ClientRequestToken seen in the last 10 minutes, with the same
request, succeeds without being applied again; with a different request it fails with
IdempotentParameterMismatchException
(https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).
As in DynamoDB, a token is recorded when its call is applied (not when the caller
hears back), and only if it succeeded. It is a `before-send` handler registered
*first*: it hands a new call to moto's stub itself, to see whether it succeeded, and
answers a repeated one from the token; either way it then points the request at an
address moto does not serve, so that moto's own handler, later in the chain, does not
apply it again (moto's stub answers every request it is handed, even one another
handler has answered; tests/test_faults.py does the same).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.awsrequest
from botocore.exceptions import ReadTimeoutError
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

IDEMPOTENCY_WINDOW_SECONDS = 10 * 60
UNSERVED_URL = "https://idempotency-emulation.invalid/"


def _json_response(status: int, body: dict[str, Any], error_type: str | None = None) -> Any:
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "emulated"}
    if error_type is not None:
        body = {"__type": f"com.amazonaws.dynamodb.v20120810#{error_type}", "message": error_type, **body}
    return botocore.awsrequest.AWSResponse(UNSERVED_URL, status, headers, MockRawResponse(json.dumps(body)))


@dataclass
class IdempotentTransactions:
    """DynamoDB's ClientRequestToken behaviour for TransactWriteItems, which moto lacks."""

    clock: Callable[[], float] = time.time
    enabled: bool = True
    # token -> (the request without its token, when it was applied)
    _seen: dict[str, tuple[str, float]] = field(default_factory=dict)
    replayed: int = 0  # calls answered from a token, not applied again
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, events: Any) -> None:
        events.register_first("before-send.dynamodb.TransactWriteItems", self._before_send)

    def forget(self) -> None:
        """Let every token lapse, as 10 minutes would."""
        with self._lock:
            self._seen.clear()

    @staticmethod
    def _split(body: bytes | str | None) -> tuple[str | None, str]:
        request = json.loads(body or "{}")
        token = request.pop("ClientRequestToken", None)
        return token, json.dumps(request, sort_keys=True)

    def _before_send(self, request: Any, event_name: str, **_: Any) -> Any:
        token, rest = self._split(request.body)
        if not self.enabled or token is None:
            return None
        with self._lock:
            seen = self._seen.get(token)
            if seen is not None and self.clock() - seen[1] > IDEMPOTENCY_WINDOW_SECONDS:
                seen = None
            if seen is not None:
                request.url = UNSERVED_URL
                if seen[0] != rest:
                    return _json_response(400, {}, "IdempotentParameterMismatchException")
                self.replayed += 1
                return _json_response(200, {})
            response = botocore_stubber(event_name, request)
            if response is not None and response.status_code == 200:
                self._seen[token] = (rest, self.clock())
            request.url = UNSERVED_URL
            return response


@dataclass
class _Loss:
    function: str
    operation: str | None  # None: any DynamoDB operation
    contains: str | None  # only a request whose body holds this text
    skip: int  # matching calls to let through first


@dataclass
class LostResponses:
    """Apply a chosen call, then lose its response (a read timeout botocore retries)."""

    current_function: Callable[[], str | None]
    _planned: list[_Loss] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (function, operation)

    def install(self, events: Any) -> None:
        # Runs after IdempotentTransactions (more specific event name, registered first).
        events.register("before-send.dynamodb", self._before_send)

    def lose(self, function: str, operation: str | None = None, contains: str | None = None, skip: int = 0) -> None:
        """Lose the response of the next such call of `function`, after letting `skip` through."""
        self._planned.append(_Loss(function, operation, contains, skip))

    def _before_send(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.split(".")[2]
        function = self.current_function() or ""
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        for loss in self._planned:
            if (
                loss.function == function
                and loss.operation in (None, operation)
                and (loss.contains is None or loss.contains in body)
            ):
                if loss.skip > 0:
                    loss.skip -= 1
                    return
                self._planned.remove(loss)
                self.lost.append((function, operation))
                if request.url != UNSERVED_URL:  # not yet applied by IdempotentTransactions
                    botocore_stubber(event_name, request)
                    request.url = UNSERVED_URL
                raise ReadTimeoutError(endpoint_url=request.url)
