"""resume: a fresh connection takes back a place in a resumable session with its token."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.protocol import ResumeRequest
from relay.websocket_event import WebSocketEvent
from relay.websocket_route import answer_client_message


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(raw_event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = WebSocketEvent.from_lambda(raw_event)
    return answer_client_message(
        event,
        ResumeRequest,
        lambda relay, connection_id, request: relay.resume(connection_id, request, event.source_ip),
    )
