"""Logger and Metrics shared by every function (Powertools for AWS Lambda).

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE in the template. Logs carry the connection id, never a
full session code (see protocol.redact_code) and never a frame's data.

No Powertools Tracer: it imports aws-xray-sdk (and patches botocore) in every cold
start, even with tracing disabled, which alone put the functions well past their
cold-start budget (docs/PERFORMANCE.md). The template's `Tracing: Active` still gives
each invocation its X-Ray segment (initialisation, invocation, overhead) without any
SDK in the function.
"""

from __future__ import annotations

import warnings
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
metrics = Metrics()

# Most invocations (a ping, a disconnect) have nothing to count; Powertools would print a
# UserWarning to the function's log for each of them.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


class Metric(StrEnum):
    SESSIONS_REGISTERED = "SessionsRegistered"
    AUTH_FAILURES = "AuthFailures"
    AUTH_RATE_LIMITED = "AuthRateLimited"
    FRAMES_RELAYED = "FramesRelayed"
    PAYLOAD_REJECTIONS = "PayloadRejections"
    REGISTRATIONS_RATE_LIMITED = "RegistrationsRateLimited"
    AUTH_BANNED = "AuthBanned"
    FRAMES_HELD = "FramesHeld"
    SESSIONS_RESUMED = "SessionsResumed"
    GRACE_EXPIRIES = "GraceExpiries"


def count(metric: Metric, value: int = 1) -> None:
    metrics.add_metric(name=metric.value, unit=MetricUnit.Count, value=value)
