"""API Gateway's WebSocket rules, without I/O: route selection, what $connect and an
authorizer's answers mean, status codes, route responses, close codes and quotas.

The asyncio shell in `gateway` asks these functions what to do and does it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.frames import Close, CloseCode

from relay_local.template import Authorizer, WebSocketApi

# API Gateway's quotas for WebSocket APIs.
MAX_FRAME_BYTES = 32 * 1024
MAX_MESSAGE_BYTES = 128 * 1024
DEFAULT_IDLE_TIMEOUT_SECONDS = 10 * 60
DEFAULT_MAX_CONNECTION_SECONDS = 2 * 60 * 60


class RouteSelector:
    """Evaluates a RouteSelectionExpression such as `$request.body.action` on a message body."""

    _EXPRESSION = re.compile(r"^\$\{?request\.body\.([A-Za-z0-9_.\-]+)\}?$")

    def __init__(self, api: WebSocketApi) -> None:
        match = self._EXPRESSION.match(api.route_selection_expression.strip())
        if match is None:
            raise ValueError(
                f"RouteSelectionExpression {api.route_selection_expression!r} is not supported; "
                "relay-local understands $request.body.<path>"
            )
        self.path = match.group(1).split(".")
        self.routes = api.routes

    def select(self, body: str) -> str | None:
        """The route key for this message, `$default`, or None when nothing matches."""
        try:
            value: Any = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
            value = None
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and not value.startswith("$") and value in self.routes:
            return value
        return "$default" if "$default" in self.routes else None


def json_body(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def gateway_error(message: str, connection_id: str, request_id: str) -> dict[str, str]:
    """The message API Gateway sends a client when a route fails ("Internal server error", ...)."""
    return {"message": message, "connectionId": connection_id, "requestId": request_id}


def route_failure_message(status: str) -> str | None:
    """What the client is told when a route's invocation did not succeed (None: nothing)."""
    return {
        "ok": None,
        "dropped": None,
        "timeout": "Endpoint request timed out",
    }.get(status, "Internal server error")


def status_code(value: Any) -> int | None:
    """A proxy integration's statusCode; one that is not a number counts as a failure (500)."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return 500


@dataclass(frozen=True)
class ConnectOutcome:
    """What the handshake answers after $connect: 101 with an optional subprotocol, or a refusal."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    subprotocol: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 101


def connect_outcome(ok: bool, result: Any, connection_id: str, request_id: str) -> ConnectOutcome:
    if not ok:
        return ConnectOutcome(500, gateway_error("Internal server error", connection_id, request_id))
    status = status_code(result.get("statusCode") if isinstance(result, dict) else None)
    if status is not None and not 200 <= status < 300:
        return ConnectOutcome(403, {"message": "Forbidden"})
    headers = result.get("headers") if isinstance(result, dict) else None
    subprotocol = None
    if isinstance(headers, dict):
        for name, value in headers.items():
            if name.lower() == "sec-websocket-protocol":
                subprotocol = str(value)
    return ConnectOutcome(101, subprotocol=subprotocol)


def route_response_body(result: Any) -> str | None:
    """The body a two-way route sends back to its client, if any."""
    if result is None:
        return None
    if isinstance(result, dict):
        body = result.get("body")
        if body is None:
            return None
        return body if isinstance(body, str) else json.dumps(body)
    return result if isinstance(result, str) else json.dumps(result)


def close_status(received: Close | None, sent: Close | None, received_first: bool) -> tuple[int, str]:
    """The close code and reason a connection ended with, as $disconnect reports them."""
    # Whoever closed first set the code; the other side only echoed it.
    client_closed_first = received is not None and (sent is None or received_first)
    close = received if client_closed_first else sent
    if close is None:
        return CloseCode.ABNORMAL_CLOSURE, "Connection lost without a close frame"
    if close.code == CloseCode.NO_STATUS_RCVD:
        return CloseCode.NO_STATUS_RCVD, "Client-side close frame status not set"
    return close.code, close.reason


# ---- Lambda REQUEST authorizers on $connect --------------------------------------------


def identity_values(
    authorizer: Authorizer, headers: Iterable[tuple[str, str]], query: Iterable[tuple[str, str]]
) -> dict[str, str] | None:
    """The identity sources' values, or None when one is missing (API Gateway answers 401 then)."""
    header_values = {name.lower(): value for name, value in headers}
    query_values = dict(query)
    values: dict[str, str] = {}
    for source in authorizer.identity_sources:
        kind, _, name = source.removeprefix("route.request.").partition(".")
        value = header_values.get(name.lower()) if kind == "header" else query_values.get(name)
        if kind not in ("header", "querystring") or not value:
            return None
        values[source] = value
    return values


def method_arn(region: str, account_id: str, api_id: str, stage: str, route_key: str) -> str:
    return f"arn:aws:execute-api:{region}:{account_id}:{api_id}/{stage}/{route_key}"


def _matches(patterns: Any, value: str) -> bool:
    items = patterns if isinstance(patterns, list) else [patterns]
    for pattern in items:
        expression = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in str(pattern))
        if re.fullmatch(expression, value):
            return True
    return False


@dataclass(frozen=True)
class AuthorizerDecision:
    status: int  # 200: let in; 401, 403 or 500: refused with that status
    context: dict[str, Any] = field(default_factory=dict)  # requestContext.authorizer of every route


def authorizer_decision(ok: bool, error_message: str | None, result: Any, arn: str) -> AuthorizerDecision:
    """What API Gateway makes of a REQUEST authorizer's answer for this method ARN."""
    if not ok:
        # A Lambda authorizer refuses a caller by failing with the message "Unauthorized".
        return AuthorizerDecision(401 if error_message == "Unauthorized" else 500)
    if not isinstance(result, dict) or not isinstance(result.get("policyDocument"), dict):
        return AuthorizerDecision(500)
    statements = result["policyDocument"].get("Statement") or []
    statements = statements if isinstance(statements, list) else [statements]
    allowed = denied = False
    for statement in statements:
        if not isinstance(statement, dict):
            return AuthorizerDecision(500)
        applies = _matches(statement.get("Action", ""), "execute-api:Invoke") and _matches(
            statement.get("Resource", ""), arn
        )
        if applies and statement.get("Effect") == "Deny":
            denied = True
        elif applies and statement.get("Effect") == "Allow":
            allowed = True
    if denied or not allowed:
        return AuthorizerDecision(403)
    context: dict[str, Any] = {"principalId": result.get("principalId", "")}
    extra = result.get("context")
    if isinstance(extra, dict):
        context.update({key: value for key, value in extra.items() if isinstance(value, str | int | float | bool)})
    context["integrationLatency"] = 0
    return AuthorizerDecision(200, context)
