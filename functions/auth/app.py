"""auth: an unbound connection joins a session as a browser, with the code the person typed."""

from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.protocol import AuthRequest
from relay.websocket_route import answer_client_message


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=APIGatewayWebSocketEvent)
def lambda_handler(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
    identity = event.request_context.identity
    return answer_client_message(
        event,
        AuthRequest,
        lambda relay, connection_id, request: relay.authenticate(
            connection_id, request, identity.source_ip, identity.user_agent
        ),
    )
