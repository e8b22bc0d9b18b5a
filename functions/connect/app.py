"""$connect: accept the WebSocket unless it comes from a page whose Origin is not allowed.

A connection is nobody until it registers or authenticates, so nothing is stored here.
"""

import os
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.origins import origin_allowed, parse_allowed_origins

ALLOWED_ORIGINS = parse_allowed_origins(os.environ.get("ALLOWED_ORIGINS", "*"))


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=APIGatewayWebSocketEvent)
def lambda_handler(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(connection_id=event.request_context.connection_id)
    origin = next((value for name, value in (event.headers or {}).items() if name.lower() == "origin"), None)
    if not origin_allowed(origin, ALLOWED_ORIGINS):
        logger.warning("connection refused: origin not allowed", extra={"origin": origin})
        return {"statusCode": 403}
    logger.info("connected")
    return {"statusCode": 200}
