"""$connect: accept the WebSocket unless it comes from a page whose Origin is not allowed.

A connection is nobody until it registers or authenticates, so nothing is stored here.
"""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.origins import origin_allowed, parse_allowed_origins
from relay.websocket_event import WebSocketEvent

ALLOWED_ORIGINS = parse_allowed_origins(os.environ.get("ALLOWED_ORIGINS", "*"))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(raw_event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = WebSocketEvent.from_lambda(raw_event)
    logger.append_keys(connection_id=event.connection_id)
    origin = next((value for name, value in (event.headers or {}).items() if name.lower() == "origin"), None)
    if not origin_allowed(origin, ALLOWED_ORIGINS):
        logger.warning("connection refused: origin not allowed", extra={"origin": origin})
        return {"statusCode": 403}
    logger.info("connected")
    return {"statusCode": 200}
