"""The in-process AWS the tests run on: moto, the sessions table exactly as template.yaml
declares it, and the relay's cached clients reset between tests."""

from __future__ import annotations

import copy
import os
from functools import cache
from typing import Any

import boto3
import botocore.session
from botocore.handlers import BUILTIN_HANDLERS
from botocore.hooks import HierarchicalEmitter
from botocore.loaders import create_loader

from tests.support.files import load_template

TABLE_NAME = "relay-sessions-test"
REGION = "us-east-1"

# Powertools reads these when relay.observability is first imported, which a test module
# may do before any fixture runs; take them from the template, as deployed.
GLOBAL_ENVIRONMENT = load_template()["Globals"]["Function"]["Environment"]["Variables"]
for _name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
    os.environ.setdefault(_name, str(GLOBAL_ENVIRONMENT[_name]))


@cache
def _sessions_table_properties() -> dict[str, Any]:
    template = load_template()
    table = next(r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table")
    return table["Properties"]  # type: ignore[no-any-return]


def sessions_table_definition() -> dict[str, Any]:
    """The table's key schema and TTL exactly as template.yaml declares them (a fresh copy:
    copying the whole template for every test's table costs seconds a run)."""
    return copy.deepcopy(_sessions_table_properties())


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


GRACE_QUEUE_NAME = "relay-grace-test"


def create_grace_queue(client: Any) -> str:
    """The grace timer's queue (template.yaml's GraceQueue); its URL."""
    return str(client.create_queue(QueueName=GRACE_QUEUE_NAME)["QueueUrl"])


def reset_relay_caches() -> None:
    # Imported late: the handlers' modules must first be loaded with the test environment.
    from relay import wiring  # noqa: PLC0415

    wiring.reset()


# AWS's service models, read once for the whole run: a fresh botocore session would parse
# them again, a tenth of a second for every test.
_SERVICE_MODELS = create_loader()


# botocore's built-in event handlers, registered once and copied into each new session:
# registering them checks every handler's signature, a fifth of a test's set-up. Made
# again if the list grew since (moto adds its stubber to it when first imported).
_builtin_hooks: tuple[int, HierarchicalEmitter] | None = None


def _new_builtin_hooks() -> HierarchicalEmitter:
    global _builtin_hooks  # noqa: PLW0603 - a cache
    if _builtin_hooks is None or _builtin_hooks[0] != len(BUILTIN_HANDLERS):
        hooks = HierarchicalEmitter()
        botocore.session.Session(event_hooks=hooks)  # registers the built-in handlers on `hooks`
        _builtin_hooks = (len(BUILTIN_HANDLERS), hooks)
    return copy.copy(_builtin_hooks[1])


def boto3_session() -> boto3.Session:
    """A new boto3 session (its own event hooks, its own clients) on the shared service models."""
    core = botocore.session.Session(event_hooks=_new_builtin_hooks(), include_builtin_handlers=False)
    core.register_component("data_loader", _SERVICE_MODELS)
    return boto3.Session(botocore_session=core, region_name=REGION)
