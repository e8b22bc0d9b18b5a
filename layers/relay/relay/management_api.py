"""The API Gateway Management API port: push messages to connections, close them.

A connection that has gone away answers 410 GoneException; that is an expected
outcome here (a closed laptop lid, a lost network), returned as a value rather than
raised, so callers can clean up. Throttling and 5xx answers are retried by botocore's
standard retry mode and, if they persist, raised to the caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from relay import protocol
from relay.model import Delivery

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

# boto3's standard name for a per-service endpoint override. Unset on AWS, where the
# endpoint is built from the event; relay-local sets it to its own management API.
ENDPOINT_OVERRIDE_VARIABLE = "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"

# Broadcasts reach at most MAX_BROWSERS connections; posting them in parallel keeps a
# broadcast as fast as a single post.
_POSTERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="post")

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=16,
)


def endpoint_for(api_id: str, stage: str, region: str | None = None) -> str | None:
    """Where the Management API of the API that sent this event lives:
    https://{api id}.execute-api.{region}.amazonaws.com/{stage}.

    Built from the API's id, not the event's domainName: behind a custom domain name,
    domainName is the custom domain, whose API mapping does not serve @connections.
    None means "let boto3 resolve it", which it does from ENDPOINT_OVERRIDE_VARIABLE.
    """
    if os.environ.get(ENDPOINT_OVERRIDE_VARIABLE):
        return None
    region = region or os.environ["AWS_REGION"]
    return f"https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"


@cache
def management_client(endpoint_url: str | None) -> ApiGatewayManagementApiClient:
    """One client per endpoint and container: creating clients is slow, reusing them is free."""
    client: ApiGatewayManagementApiClient = boto3.client(
        "apigatewaymanagementapi", endpoint_url=endpoint_url, config=CLIENT_CONFIG
    )
    return client


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class ManagementApi:
    """relay.ports.Connections on API Gateway's Management API."""

    def __init__(self, client: ApiGatewayManagementApiClient) -> None:
        self._client = client

    def post(self, connection_id: str, message: protocol.Message) -> Delivery:
        data = protocol.encode(message).encode("utf-8")
        if len(data) > protocol.MAX_MESSAGE_BYTES:
            return Delivery.TOO_LARGE
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as error:
            code = _error_code(error)
            if code == "GoneException":
                return Delivery.GONE
            if code == "PayloadTooLargeException":
                return Delivery.TOO_LARGE
            raise
        return Delivery.DELIVERED

    def post_many(self, messages: Mapping[str, protocol.Message]) -> dict[str, Delivery]:
        """Post to several connections at once.

        Every post is finished (delivered or failed) before this returns or raises, so an
        error report to the sender never overtakes frames still on their way; the first
        unexpected error is then raised.
        """
        if len(messages) <= 1:
            return {cid: self.post(cid, message) for cid, message in messages.items()}
        futures = {cid: _POSTERS.submit(self.post, cid, message) for cid, message in messages.items()}
        wait(futures.values())
        return {cid: future.result() for cid, future in futures.items()}

    def close(self, connection_id: str) -> None:
        try:
            self._client.delete_connection(ConnectionId=connection_id)
        except ClientError as error:
            if _error_code(error) != "GoneException":
                raise
