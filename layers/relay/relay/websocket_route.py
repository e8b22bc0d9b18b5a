"""What every WebSocket message handler does around its one line of domain logic.

Gets the container's Relay from relay.wiring, parses the client's message, runs the
route's action (a Relay method, such as `Relay.send`), and turns every failure a client can
cause (or an AWS fault) into an error reply: no exception ever reaches API Gateway,
which would answer the client with a bare "Internal server error".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from relay import protocol
from relay.observability import logger
from relay.pairing import Relay
from relay.websocket_event import WebSocketEvent
from relay.wiring import relay_for_event

OK: dict[str, Any] = {"statusCode": 200}

Request = TypeVar("Request", bound=protocol.ClientRequest)


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
