"""Client messages and observations shared by the tests that drive the handlers."""

from __future__ import annotations

from typing import Any

from relay import protocol

from tests.support.aws import TABLE_NAME
from tests.support.harness import Gateway
from tests.support.invariants import DEBUG_BODY_PREFIX

Reply = dict[str, Any]


def active_sessions(gateway: Gateway) -> int:
    response = gateway.debug_sessions()
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"].startswith("text/plain")
    body: str = response["body"]
    assert body.startswith(DEBUG_BODY_PREFIX), body
    return int(body.removeprefix(DEBUG_BODY_PREFIX))


def send(gateway: Gateway, connection_id: str, data: Any, to: Any = None, **extra: Any) -> list[Reply]:
    body: dict[str, Any] = {"action": protocol.Action.SEND.value, "data": data, **extra}
    if to is not None:
        body["to"] = to
    return gateway.message(connection_id, body)


def auth(gateway: Gateway, connection_id: str, code: Any, source_ip: str | None = None) -> list[Reply]:
    return gateway.message(connection_id, {"action": protocol.Action.AUTH.value, "code": code}, source_ip=source_ip)


def register_resumable(gateway: Gateway) -> tuple[str, str, str]:
    """A resumable session: (mac connection, code, mac token)."""
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "mac-1", "resumable": True})
    assert reply["type"] == protocol.MessageType.REGISTERED, reply
    return mac, reply["code"], reply["resume_token"]


def join_resumable(gateway: Gateway, code: str) -> tuple[str, str, str]:
    """A browser in a resumable session: (connection, peer id, token)."""
    browser = gateway.connect()
    (reply,) = auth(gateway, browser, code)
    assert reply["type"] == protocol.MessageType.AUTHENTICATED, reply
    return browser, reply["peer"], reply["resume_token"]


def resume(gateway: Gateway, token: str, source_ip: str | None = None) -> tuple[str, list[Reply]]:
    """`resume` on a fresh connection: (that connection, the replies)."""
    connection = gateway.connect()
    return connection, gateway.message(connection, {"action": "resume", "token": token}, source_ip=source_ip)


def table_items(dynamodb: Any) -> list[dict[str, Any]]:
    paginator = dynamodb.get_paginator("scan")
    return [item for page in paginator.paginate(TableName=TABLE_NAME) for item in page["Items"]]
