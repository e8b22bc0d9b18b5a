"""What every WebSocket message handler does around its one line of domain logic.

Builds the Relay once per container (clients are reused across invocations), parses
the client's message, runs the route's action, and turns every failure a client can
cause (or an AWS fault) into an error reply: no exception ever reaches API Gateway,
which would answer the client with a bare "Internal server error".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from relay import protocol
from relay.management_api import ManagementApi, endpoint_for, management_client
from relay.observability import logger
from relay.pairing import Relay
from relay.session_store import SessionStore
from relay.settings import Settings
from relay.websocket_event import WebSocketEvent

OK: dict[str, Any] = {"statusCode": 200}

DYNAMODB_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=2,
    read_timeout=3,
)

Request = TypeVar("Request", bound=protocol.ClientRequest)


@cache
def session_store() -> SessionStore:
    settings = Settings.from_environment()
    return SessionStore(boto3.client("dynamodb", config=DYNAMODB_CONFIG), settings)


@cache
def relay_for(domain_name: str, stage: str) -> Relay:
    store = session_store()
    api = ManagementApi(management_client(endpoint_for(domain_name, stage)))
    return Relay(store, api, Settings.from_environment())


@cache
def relay_for_configured_endpoint() -> Relay:
    """For functions no WebSocket event reaches (the TTL stream): the endpoint comes from
    AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI, which the template sets for them."""
    return Relay(session_store(), ManagementApi(management_client(None)), Settings.from_environment())


def relay_for_event(event: WebSocketEvent) -> Relay:
    return relay_for(event.domain_name, event.stage)


def answer_client_message(
    event: WebSocketEvent,
    expected: type[Request],
    action: Callable[[Relay, str, Request], object],
) -> dict[str, Any]:
    """Parse the message, check it is the route's action, run it; reply with any error."""
    connection_id = event.connection_id
    logger.append_keys(connection_id=connection_id, route=event.route_key)
    relay = relay_for_event(event)
    try:
        request = protocol.parse_client_message(event.body)
        if not isinstance(request, expected):
            raise protocol.ProtocolError(protocol.ErrorCode.UNKNOWN_ACTION)
        action(relay, connection_id, request)
    except protocol.ProtocolError as problem:
        logger.info("rejected client message", extra={"error": problem.code.value})
        relay.reply(connection_id, problem.reply)
    except Exception:
        logger.exception("request failed")
        reply_internal_error(relay, connection_id)
    return OK


def reply_internal_error(relay: Relay, connection_id: str) -> None:
    try:
        relay.reply_error(connection_id, protocol.ErrorCode.INTERNAL_ERROR)
    except Exception:
        logger.exception("could not report the failure to the client")
