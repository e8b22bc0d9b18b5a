"""The fields of an API Gateway WebSocket event that the handlers read, typed.

Powertools' event data classes would serve, but importing any one of them runs their
package's __init__, which imports all of them (some forty modules): about a fifth of
a function's cold-start budget over its boto3 floor (docs/PERFORMANCE.md). The relay
reads eleven fields; they are taken here, by the names API Gateway documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WebSocketEvent:
    connection_id: str
    route_key: str
    request_id: str  # API Gateway's id for this one invocation: keys idempotent writes
    api_id: str
    domain_name: str
    stage: str
    source_ip: str
    user_agent: str | None
    disconnect_status_code: int | None
    body: str | None
    headers: Mapping[str, str]

    @classmethod
    def from_lambda(cls, event: Mapping[str, Any]) -> WebSocketEvent:
        context = event["requestContext"]
        identity = context.get("identity") or {}
        return cls(
            connection_id=context["connectionId"],
            route_key=context["routeKey"],
            request_id=context.get("requestId", ""),
            api_id=context.get("apiId", ""),
            domain_name=context["domainName"],
            stage=context["stage"],
            source_ip=identity.get("sourceIp", ""),
            user_agent=identity.get("userAgent"),
            disconnect_status_code=context.get("disconnectStatusCode"),
            body=event.get("body"),
            headers=event.get("headers") or {},
        )
