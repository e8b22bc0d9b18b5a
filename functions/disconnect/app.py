"""$disconnect: a mac-client leaving ends its session; a browser leaving is removed from it."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.websocket_event import WebSocketEvent
from relay.wiring import relay_for_event


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(raw_event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = WebSocketEvent.from_lambda(raw_event)
    connection_id = event.connection_id
    logger.append_keys(connection_id=connection_id)
    logger.info("disconnected", extra={"status": event.disconnect_status_code})
    try:
        relay_for_event(event).disconnect(connection_id)
    except Exception:
        # $disconnect is best effort on AWS too; TTL removes what this could not.
        logger.exception("cleanup after disconnect failed")
    return {"statusCode": 200}
