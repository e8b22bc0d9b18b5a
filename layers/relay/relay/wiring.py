"""The object graph, built in one place: the DynamoDB store, the Management API clients,
and the Relay that joins them, each made once per container and reused across
invocations (creating AWS clients is slow, reusing them is free).

Handlers take what they need from here; tests reset the caches (tests/support) to start
a container cold.
"""

from __future__ import annotations

from functools import cache

import boto3
from botocore.config import Config

from relay.grace_timer import SqsGraceTimer
from relay.management_api import ManagementApi, endpoint_for, management_client
from relay.pairing import Relay
from relay.settings import Settings
from relay.store import DynamoDbStore
from relay.websocket_event import WebSocketEvent

DYNAMODB_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=2,
    read_timeout=3,
)


@cache
def settings() -> Settings:
    return Settings.from_environment()


@cache
def session_store() -> DynamoDbStore:
    return DynamoDbStore(boto3.client("dynamodb", config=DYNAMODB_CONFIG), settings())


@cache
def sqs_client() -> object:
    return boto3.client("sqs", config=DYNAMODB_CONFIG)


@cache
def grace_timer() -> SqsGraceTimer | None:
    """None where the function has no GRACE_QUEUE_URL (nobody there can go away)."""
    configured = settings()
    if not configured.grace_queue_url:
        return None
    return SqsGraceTimer(sqs_client, configured.grace_queue_url, configured.resume_grace_seconds)


@cache
def relay_for(api_id: str, stage: str) -> Relay:
    api = ManagementApi(management_client(endpoint_for(api_id, stage)))
    return Relay(session_store(), api, settings(), grace_timer=grace_timer())


@cache
def relay_for_configured_endpoint() -> Relay:
    """For functions no WebSocket event reaches (the TTL stream, the grace timer): the
    endpoint comes from AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI, which the template sets."""
    return Relay(session_store(), ManagementApi(management_client(None)), settings(), grace_timer=grace_timer())


def relay_for_event(event: WebSocketEvent) -> Relay:
    """The relay of the event's API, answering this one request (its writes idempotent)."""
    return relay_for(event.api_id, event.stage).for_request(event.request_id)


def reset() -> None:
    """Forget every cached object, as a new container would (for tests)."""
    for factory in (
        settings,
        session_store,
        sqs_client,
        grace_timer,
        relay_for,
        relay_for_configured_endpoint,
        management_client,
    ):
        factory.cache_clear()
