"""DynamoDB for the functions: an embedded moto server, or any endpoint the user names.

The template's tables are created from their definitions (keys, indexes, billing mode,
streams, TTL) when they do not exist yet.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from relay_local.template import Table

log = logging.getLogger("relay_local")

# moto accepts any credentials; these keep the SDK from looking for real ones.
EMBEDDED_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}

_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


class DynamoDbError(Exception):
    pass


class EmbeddedDynamoDb:
    """moto's DynamoDB in server mode, on a free loopback port, for as long as relay-local runs."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - heavy; only when embedded

        self._server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        # One access-log line per DynamoDB call would drown the invocation log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.endpoint = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        self._server.stop()


def _create_table_request(table: Table) -> dict[str, Any]:
    properties = table.properties
    request: dict[str, Any] = {
        "TableName": table.name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
    }
    billing_mode = properties.get("BillingMode", "PROVISIONED")
    request["BillingMode"] = billing_mode
    if billing_mode == "PROVISIONED":
        request["ProvisionedThroughput"] = properties.get(
            "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        )
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if properties.get(key):
            request[key] = [
                {name: value for name, value in index.items() if name in _INDEX_KEYS}
                for index in properties[key]
            ]
            if key == "GlobalSecondaryIndexes" and billing_mode == "PROVISIONED":
                for index in request[key]:
                    index.setdefault(
                        "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
                    )
    stream = properties.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return request


def create_tables(
    tables: list[Table], *, endpoint: str | None, region: str, credentials: dict[str, str]
) -> list[str]:
    """Create the tables that do not exist; returns the names created."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10),
    )
    created: list[str] = []
    for table in tables:
        try:
            try:
                client.describe_table(TableName=table.name)
                log.info("DynamoDB table %s exists; using it as it is", table.name)
                continue
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
            client.create_table(**_create_table_request(table))
            client.get_waiter("table_exists").wait(
                TableName=table.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
            ttl = table.properties.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                client.update_time_to_live(
                    TableName=table.name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
            created.append(table.name)
        except (ClientError, BotoCoreError, KeyError) as error:
            raise DynamoDbError(
                f"Cannot create DynamoDB table {table.name} ({table.logical_id}): {error}"
            ) from None
    return created
