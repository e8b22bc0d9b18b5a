"""Table stream, TTL removals only: clean up after sessions whose $disconnect never came.

The browsers of an expired session get session_closed and are unbound, the mac-client's
connection is closed if it is somehow still open, and the session count drops. Records
are processed one by one and failures reported per record, so one bad record never
makes the stream replay the others.
"""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.session_store import expired_session_from_stream
from relay.websocket_route import relay_for_configured_endpoint

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def expire(record: DynamoDBRecord) -> None:
    if record.event_name is not DynamoDBRecordEventName.REMOVE or record.dynamodb is None:
        return
    expired = expired_session_from_stream(record.user_identity, record.dynamodb.old_image)
    if expired is not None:
        relay_for_configured_endpoint().expire_session(*expired)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=expire, processor=processor, context=context)
