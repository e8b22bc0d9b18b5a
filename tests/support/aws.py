"""The in-process AWS the tests run on: moto, the sessions table exactly as template.yaml
declares it, and the relay's cached clients reset between tests."""

from __future__ import annotations

import os
from typing import Any

from tests.support.files import load_template

TABLE_NAME = "relay-sessions-test"
REGION = "us-east-1"

# Powertools reads these when relay.observability is first imported, which a test module
# may do before any fixture runs; take them from the template, as deployed.
GLOBAL_ENVIRONMENT = load_template()["Globals"]["Function"]["Environment"]["Variables"]
for _name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
    os.environ.setdefault(_name, str(GLOBAL_ENVIRONMENT[_name]))


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
    from relay import wiring  # noqa: PLC0415

    wiring.reset()
