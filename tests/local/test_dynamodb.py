"""relay-local's DynamoDB: the embedded moto server and --dynamodb-endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from relay_local.dynamodb import EMBEDDED_CREDENTIALS, EmbeddedDynamoDb, create_tables
from relay_local.template import Table
from websockets.asyncio.client import connect

from tests.support.relay_local import EFFECT_TIMEOUT, free_port, start_fixture_gateway

# moto's backends are per process, and this one is pytest's: every test uses its own
# table name, and the fixture resets moto afterwards.
TABLE_PROPERTIES: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "owner", "AttributeType": "S"},
    ],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    # No BillingMode: CloudFormation's default is PROVISIONED.
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by-owner",
            "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
            "ContributorInsightsSpecification": {"Enabled": False},
        }
    ],
    "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
}


@pytest.fixture
def table() -> Table:
    return Table(logical_id="Things", name=f"things-{uuid.uuid4().hex}", properties=TABLE_PROPERTIES)


@pytest.fixture
def embedded(table: Table) -> Iterator[Any]:
    database = EmbeddedDynamoDb()
    endpoint = database.start()
    create_tables([table], endpoint=endpoint, region="us-east-1", credentials=EMBEDDED_CREDENTIALS)
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=32),
    )
    yield client
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    database.stop()


def test_tables_are_created_from_cloudformation_properties(embedded: Any, table: Table) -> None:
    described = embedded.describe_table(TableName=table.name)["Table"]
    assert described["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert described["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert [index["IndexName"] for index in described["GlobalSecondaryIndexes"]] == ["by-owner"]
    ttl = embedded.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}


def test_creating_tables_again_keeps_the_existing_ones(embedded: Any, table: Table) -> None:
    embedded.put_item(TableName=table.name, Item={"pk": {"S": "kept"}})
    endpoint = embedded.meta.endpoint_url
    created = create_tables([table], endpoint=endpoint, region="us-east-1", credentials=EMBEDDED_CREDENTIALS)
    assert created == []
    assert "Item" in embedded.get_item(TableName=table.name, Key={"pk": {"S": "kept"}})


def _transaction(table_name: str, pk: str, token: str | None = None, value: str = "1") -> dict[str, Any]:
    request: dict[str, Any] = {
        "TransactItems": [
            {
                "Put": {
                    "TableName": table_name,
                    "Item": {"pk": {"S": pk}, "value": {"S": value}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
    }
    if token is not None:
        request["ClientRequestToken"] = token
    return request


def test_a_retried_transaction_with_the_same_token_is_applied_once(embedded: Any, table: Table) -> None:
    embedded.transact_write_items(**_transaction(table.name, "once", token="token-1"))
    # The retry an SDK makes after a lost answer: same token, same request.
    embedded.transact_write_items(**_transaction(table.name, "once", token="token-1"))
    with pytest.raises(ClientError) as mismatch:
        embedded.transact_write_items(**_transaction(table.name, "once", token="token-1", value="2"))
    assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    with pytest.raises(ClientError) as conflict:
        embedded.transact_write_items(**_transaction(table.name, "once", token="token-2"))
    assert conflict.value.response["Error"]["Code"] == "TransactionCanceledException"


def test_concurrent_transactions_on_one_table_all_succeed(embedded: Any, table: Table) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        for n in range(25):
            try:
                embedded.transact_write_items(**_transaction(table.name, f"w{worker}-{n}"))
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert embedded.scan(TableName=table.name, Select="COUNT")["Count"] == 8 * 25


@pytest.mark.e2e
def test_dynamodb_endpoint_option_uses_that_endpoint(tmp_path: Path) -> None:
    external = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    external.start()
    host, port = external.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        relay = start_fixture_gateway(tmp_path, "--dynamodb-endpoint", endpoint)
        try:

            async def describe() -> dict[str, Any]:
                async with connect(relay.ws_url) as ws:
                    await ws.send(json.dumps({"action": "table"}))
                    answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
                    return answer

            seen_by_function = asyncio.run(describe())
        finally:
            assert relay.stop() == 0, relay.output()
        assert "(external; tables: local-ItemsTable)" in "\n".join(relay.stdout_lines)
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        # The table was created at that endpoint, and the function used that one.
        assert "local-ItemsTable" in client.list_tables()["TableNames"]
        assert seen_by_function["name"] == "local-ItemsTable"
    finally:
        external.stop()
