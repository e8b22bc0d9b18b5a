"""Shared fixtures: moto-backed AWS in-process, the handlers behind the harness, the
relay's ERROR log. The code behind them lives in tests/support."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.aws import (
    GLOBAL_ENVIRONMENT,
    REGION,
    TABLE_NAME,
    boto3_session,
    create_grace_queue,
    create_sessions_table,
)
from tests.support.harness import Gateway, observed_gateway
from tests.support.invariants import FailureLog, relay_logger


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("TABLE_NAME", TABLE_NAME)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", str(GLOBAL_ENVIRONMENT["POWERTOOLS_SERVICE_NAME"]))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", str(GLOBAL_ENVIRONMENT["POWERTOOLS_METRICS_NAMESPACE"]))


@pytest.fixture
def dynamodb(aws_environment: None) -> Iterator[Any]:
    # Imported here: moto takes seconds to import, and the in-memory tests never need it.
    from moto import mock_aws  # noqa: PLC0415

    from tests.support.operation_costs import moto_transactions_at_dynamodb_cost  # noqa: PLC0415

    with mock_aws(), moto_transactions_at_dynamodb_cost():
        client = boto3_session().client("dynamodb")
        create_sessions_table(client)
        yield client


@pytest.fixture
def grace_queue(dynamodb: Any) -> Iterator[str]:
    """The grace timer's queue, for tests where a resumable session's holder goes away
    (without GRACE_QUEUE_URL the relay has no timer, and such a test fails loudly)."""
    os.environ["GRACE_QUEUE_URL"] = url = create_grace_queue(boto3_session().client("sqs"))
    try:
        yield url
    finally:
        os.environ.pop("GRACE_QUEUE_URL", None)


@pytest.fixture
def gateway(dynamodb: Any) -> Iterator[Gateway]:
    """The real handlers behind a simulated API Gateway, over moto's DynamoDB."""
    with observed_gateway() as gw:
        yield gw


@pytest.fixture
def failure_log() -> Iterator[FailureLog]:
    """What the relay logs at ERROR during the test."""
    log = FailureLog()
    relay_logger().addHandler(log)
    yield log
    relay_logger().removeHandler(log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An end-to-end test starts relay-local: it belongs to the process tier too."""
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.process)
