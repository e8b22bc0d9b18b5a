"""GET /debug/sessions: the number of live sessions, as plain text. Never codes or connection ids."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.wiring import session_store

TEXT = {"content-type": "text/plain; charset=utf-8"}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        count = session_store().session_count()
    except Exception:
        logger.exception("could not count sessions")
        return {"statusCode": 500, "headers": TEXT, "body": "Session count unavailable"}
    return {"statusCode": 200, "headers": TEXT, "body": f"Active sessions: {count}"}
