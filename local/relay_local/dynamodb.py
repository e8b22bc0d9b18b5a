"""DynamoDB for the functions: an embedded moto server, or any endpoint the user names.

The template's tables are created from their definitions (keys, indexes, billing mode,
streams, TTL) when they do not exist yet. The embedded server is moto's whole backend:
it also serves the template's SQS queues and SNS topics (see sources.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from werkzeug.serving import BaseWSGIServer, make_server

from relay_local.template import Table

log = logging.getLogger("relay_local")

# moto accepts any credentials; these keep the SDK from looking for real ones.
EMBEDDED_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}

_IDEMPOTENCY_SECONDS = 10 * 60
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


class DynamoDbError(Exception):
    pass


class _EmbeddedBackend:
    """moto's WSGI app, made safe for concurrent clients and idempotent where DynamoDB is.

    - moto's backends are not thread-safe: concurrent TransactWriteItems on one table
      fail inside moto ("dictionary changed size during iteration"). Connections are
      accepted concurrently (keep-alive clients never block each other); only the work
      on the in-memory tables is serialised, which DynamoDB's item-level atomicity makes
      indistinguishable for clients.
    - DynamoDB makes TransactWriteItems idempotent through ClientRequestToken (which
      the SDKs fill in and reuse on retries) for 10 minutes; moto does not. Without it,
      an SDK retry after a slow first attempt would apply a transaction twice.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.transactions: dict[str, tuple[float, bytes, str, list[tuple[str, str]], bytes]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # The body is read before taking the lock: a client that is slow to send it
        # (a descheduled or killed worker) must not stall every other client.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if environ.get("HTTP_X_AMZ_TARGET", "").endswith(".TransactWriteItems"):
            return self._transaction(body, environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))

    def _transaction(self, body: bytes, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            token = json.loads(body).get("ClientRequestToken")
        except (ValueError, AttributeError):
            token = None
        fingerprint = hashlib.sha256(body).digest()
        with self.lock:
            now = time.monotonic()
            self.transactions = {
                key: entry for key, entry in self.transactions.items() if now - entry[0] < _IDEMPOTENCY_SECONDS
            }
            if token is not None and token in self.transactions:
                _, seen_fingerprint, status, headers, answer = self.transactions[token]
                if seen_fingerprint != fingerprint:
                    error = json.dumps(
                        {
                            "__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                            "message": "ClientRequestToken was reused with different parameters",
                        }
                    ).encode()
                    start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")])
                    return [error]
                start_response(status, headers)
                return [answer]
            captured: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                captured["status"], captured["headers"] = status, headers
                return start_response(status, headers, *args)

            answer = b"".join(self.app(environ, capture))
            if token is not None and str(captured.get("status", "")).startswith("200"):
                self.transactions[token] = (now, fingerprint, captured["status"], captured["headers"], answer)
            return [answer]


class EmbeddedDynamoDb:
    """moto's DynamoDB in server mode, on a free loopback port, for as long as relay-local runs."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.endpoint = ""
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        # The same pieces moto's ThreadedMotoServer is made of, plus the lock above.
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 - heavy; only when embedded
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        # One access-log line per DynamoDB call would drown the invocation log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = _EmbeddedBackend(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self.host, 0, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        self.endpoint = f"http://{self.host}:{self._server.server_port}"
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()


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
                {name: value for name, value in index.items() if name in _INDEX_KEYS} for index in properties[key]
            ]
            if key == "GlobalSecondaryIndexes" and billing_mode == "PROVISIONED":
                for index in request[key]:
                    index.setdefault("ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    stream = properties.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return request


def create_tables(tables: list[Table], *, endpoint: str | None, region: str, credentials: dict[str, str]) -> list[str]:
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
            client.get_waiter("table_exists").wait(TableName=table.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            ttl = table.properties.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                client.update_time_to_live(
                    TableName=table.name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
            created.append(table.name)
        except (ClientError, BotoCoreError, KeyError) as error:
            raise DynamoDbError(f"Cannot create DynamoDB table {table.name} ({table.logical_id}): {error}") from None
    return created
