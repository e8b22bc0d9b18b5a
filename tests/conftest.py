"""Shared fixtures: moto-backed AWS in-process, the sessions table from template.yaml."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.relay_harness import Gateway, load_template

TABLE_NAME = "relay-sessions-test"
REGION = "us-east-1"

# Powertools reads these when relay.observability is first imported, which a test module
# may do before any fixture runs; take them from the template, as deployed.
_GLOBAL_ENVIRONMENT = load_template()["Globals"]["Function"]["Environment"]["Variables"]
for _name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
    os.environ.setdefault(_name, str(_GLOBAL_ENVIRONMENT[_name]))


def sessions_table_definition() -> dict[str, Any]:
    """The table's key schema and TTL exactly as template.yaml declares them."""
    template = load_template()
    table = next(r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table")
    return table["Properties"]  # type: ignore[no-any-return]


def create_sessions_table(client: Any, name: str = TABLE_NAME) -> None:
    definition = sessions_table_definition()
    client.create_table(
        TableName=name,
        KeySchema=definition["KeySchema"],
        AttributeDefinitions=definition["AttributeDefinitions"],
        BillingMode=definition["BillingMode"],
    )
    ttl = definition["TimeToLiveSpecification"]
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": ttl["Enabled"]},
    )


def reset_relay_caches() -> None:
    # Imported late: the handlers' modules must first be loaded with the test environment.
    from relay import management_api, websocket_route  # noqa: PLC0415

    websocket_route.session_store.cache_clear()
    websocket_route.relay_for.cache_clear()
    websocket_route.relay_for_configured_endpoint.cache_clear()
    management_api.management_client.cache_clear()


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
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", str(_GLOBAL_ENVIRONMENT["POWERTOOLS_SERVICE_NAME"]))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", str(_GLOBAL_ENVIRONMENT["POWERTOOLS_METRICS_NAMESPACE"]))


@pytest.fixture
def dynamodb(aws_environment: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_sessions_table(client)
        yield client


@contextmanager
def observed_gateway() -> Iterator[Gateway]:
    """A Gateway whose handlers start cold (fresh clients) and whose posts are observed."""
    reset_relay_caches()
    boto3.setup_default_session(region_name=REGION)
    gw = Gateway()
    gw.observe(boto3.DEFAULT_SESSION.events)
    try:
        yield gw
    finally:
        reset_relay_caches()
        boto3.DEFAULT_SESSION = None


@pytest.fixture
def gateway(dynamodb: Any) -> Iterator[Gateway]:
    """The real handlers behind a simulated API Gateway, over moto's DynamoDB."""
    with observed_gateway() as gw:
        yield gw
