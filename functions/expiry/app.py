"""Table stream, TTL removals only: clean up after sessions whose $disconnect never came.

The browsers of an expired session get session_closed and are unbound, the mac-client's
connection is closed if it is somehow still open, and the session count drops. TTL
deletes in no set order: a browser whose place goes before its session's item is told
when its place's record comes. Records
are processed one by one and failures reported per record (the event source mapping's
ReportBatchItemFailures), so one bad record never makes the stream replay the others.
A plain loop: Powertools' batch utility would import asyncio and every event data class.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relay.observability import logger, metrics
from relay.store.expiry import expired_place_from_record, expired_session_from_record
from relay.wiring import relay_for_configured_endpoint


class EveryRecordFailed(Exception):
    """Raised when no record of a batch could be processed, so that Lambda retries it whole."""


def expire(record: dict[str, Any]) -> None:
    session = expired_session_from_record(record)
    if session is not None:
        relay_for_configured_endpoint().expire_session(session)
        return
    place = expired_place_from_record(record)
    if place is not None:
        relay_for_configured_endpoint().expire_place(place)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    for record in event.get("Records", []):
        try:
            expire(record)
        except Exception:
            logger.exception("could not process stream record", extra={"event_id": record.get("eventID")})
            failures.append({"itemIdentifier": (record.get("dynamodb") or {}).get("SequenceNumber", "")})
    if failures and len(failures) == len(event["Records"]):
        raise EveryRecordFailed(f"all {len(failures)} records failed")
    return {"batchItemFailures": failures}
