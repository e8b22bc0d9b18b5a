"""$disconnect: a mac-client leaving ends its session; a browser leaving is removed from it."""

from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.websocket_route import relay_for_event


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=APIGatewayWebSocketEvent)
def lambda_handler(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
    connection_id = event.request_context.connection_id
    logger.append_keys(connection_id=connection_id)
    logger.info("disconnected", extra={"status": event.request_context.disconnect_status_code})
    try:
        relay_for_event(event).disconnect(connection_id)
    except Exception:
        # $disconnect is best effort on AWS too; TTL removes what this could not.
        logger.exception("cleanup after disconnect failed")
    return {"statusCode": 200}
