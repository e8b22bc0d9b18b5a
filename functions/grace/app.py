"""Grace timer (SQS, each message delayed by ResumeGraceSeconds): a holder of a resumable
session that went away and has not resumed loses its place. An away mac-client's session
ends (its present browsers get session_closed); an away browser is removed (the
mac-client gets peer_left). A timer whose holder has resumed meanwhile does nothing.
Failures are reported per message (ReportBatchItemFailures), so SQS retries only those.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.grace_timer import absence_from_record
from relay.observability import logger, metrics
from relay.wiring import relay_for_configured_endpoint


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    for record in event.get("Records", []):
        absence = absence_from_record(record)
        if absence is None:
            logger.warning("ignored a grace message the relay did not write", extra={"id": record.get("messageId")})
            continue
        try:
            # The message id keys its writes: SQS redelivers a message with the same id.
            relay_for_configured_endpoint().for_request(record.get("messageId")).grace_expired(absence)
        except Exception:
            logger.exception("could not expire an absence", extra={"id": record.get("messageId")})
            failures.append({"itemIdentifier": str(record.get("messageId", ""))})
    return {"batchItemFailures": failures}
