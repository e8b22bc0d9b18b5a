"""Lambda events shaped as API Gateway sends them (WebSocket API and HTTP API payload v2.0).

The shapes follow events captured from API Gateway; the tests validate them against
Powertools' parser models.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def gateway_id() -> str:
    """An id shaped like API Gateway's connection, request and message ids: 15 characters and '='."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def now_ms() -> int:
    return int(time.time() * 1000)


def request_time(epoch_ms: int) -> str:
    """API Gateway's requestTime format: 26/Nov/2026:01:20:31 +0000."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def iso_timestamp(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ConnectionFacts:
    """What API Gateway knows about a connection and repeats in each of its events."""

    connection_id: str
    connected_at_ms: int
    source_ip: str
    user_agent: str | None
    domain_name: str
    stage: str
    api_id: str
    # requestContext.authorizer of every route, when a $connect authorizer let the connection in
    authorizer: dict[str, Any] | None = None


def _request_context(facts: ConnectionFacts, route_key: str, event_type: str, epoch_ms: int) -> dict[str, Any]:
    request_id = gateway_id()
    context: dict[str, Any] = {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": request_time(epoch_ms),
        "messageDirection": "IN",
        "stage": facts.stage,
        "connectedAt": facts.connected_at_ms,
        "requestTimeEpoch": epoch_ms,
        "identity": {"sourceIp": facts.source_ip},
        "requestId": request_id,
        "domainName": facts.domain_name,
        "connectionId": facts.connection_id,
        "apiId": facts.api_id,
    }
    if facts.authorizer is not None:
        context["authorizer"] = dict(facts.authorizer)
    return context


def _single_and_multi(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
        single[name] = value  # API Gateway keeps the last value in the single-value map
    return single, multi


def connect_event(facts: ConnectionFacts, headers: Iterable[tuple[str, str]], query_string: str) -> dict[str, Any]:
    epoch_ms = now_ms()
    forwarded = [
        ("X-Forwarded-For", facts.source_ip),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Proto", "https"),
    ]
    header_pairs = [
        (name, value)
        for name, value in headers
        if name.lower() not in ("x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "connection", "upgrade")
    ]
    single_headers, multi_headers = _single_and_multi([*header_pairs, *forwarded])
    event: dict[str, Any] = {
        "headers": single_headers,
        "multiValueHeaders": multi_headers,
    }
    query = parse_qsl(query_string, keep_blank_values=True)
    if query:
        single_query, multi_query = _single_and_multi(query)
        event["queryStringParameters"] = single_query
        event["multiValueQueryStringParameters"] = multi_query
    event["requestContext"] = _request_context(facts, "$connect", "CONNECT", epoch_ms)
    if facts.user_agent is not None:
        event["requestContext"]["identity"]["userAgent"] = facts.user_agent
    event["isBase64Encoded"] = False
    return event


def authorizer_event(
    facts: ConnectionFacts, headers: Iterable[tuple[str, str]], query_string: str, method_arn: str
) -> dict[str, Any]:
    """What a Lambda REQUEST authorizer of $connect receives: the $connect request and the method ARN."""
    event = connect_event(facts, headers, query_string)
    event.pop("isBase64Encoded", None)
    return {"type": "REQUEST", "methodArn": method_arn, **event, "stageVariables": {}}


def message_event(facts: ConnectionFacts, route_key: str, body: str) -> dict[str, Any]:
    context = _request_context(facts, route_key, "MESSAGE", now_ms())
    context["messageId"] = gateway_id()
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def disconnect_event(facts: ConnectionFacts, status_code: int, reason: str) -> dict[str, Any]:
    # API Gateway sends these fixed headers with $disconnect, not the handshake's.
    headers = [("Host", facts.domain_name), ("x-api-key", ""), ("X-Forwarded-For", ""), ("x-restapi", "")]
    single_headers, multi_headers = _single_and_multi(headers)
    context = _request_context(facts, "$disconnect", "DISCONNECT", now_ms())
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    if facts.user_agent is not None:
        context["identity"]["userAgent"] = facts.user_agent
    return {
        "headers": single_headers,
        "multiValueHeaders": multi_headers,
        "requestContext": context,
        "isBase64Encoded": False,
    }


# ---- HTTP API, payload format 2.0 ----------------------------------------------------

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")


def http_api_event(
    *,
    method: str,
    raw_path: str,
    raw_query_string: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    route_key: str,
    path_parameters: Mapping[str, str],
    api_id: str,
) -> dict[str, Any]:
    epoch_ms = now_ms()
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        # HTTP API joins repeated headers with commas and lower-cases their names.
        joined[lower] = f"{joined[lower]},{value}" if lower in joined else value
    joined.setdefault("x-forwarded-for", source_ip)
    joined.setdefault("x-forwarded-port", "443")
    joined.setdefault("x-forwarded-proto", "https")
    domain_name = joined.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query_string, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": "123456789012",
        "apiId": api_id,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": gateway_id(),
        "routeKey": route_key,
        "stage": "$default",
        "time": request_time(epoch_ms),
        "timeEpoch": epoch_ms,
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        content_type = joined.get("content-type", "")
        if any(marker in content_type for marker in _TEXT_TYPES):
            try:
                event["body"] = body.decode("utf-8")
                event["isBase64Encoded"] = False
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event
