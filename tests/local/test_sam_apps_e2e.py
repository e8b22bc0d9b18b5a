"""SAM WebSocket apps written the way public samples write them, run unchanged under relay-local.

Each fixture app in tests/local/fixtures is driven by real WebSocket clients; the tests
check what users see (broadcasts arrive) and what the app keeps (its tables).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support.relay_local import EFFECT_TIMEOUT, FIXTURES, RelayLocalProcess, start_relay_local

pytestmark = pytest.mark.e2e


def serve(app: str, *arguments: str) -> RelayLocalProcess:
    return start_relay_local(
        "--template", str(FIXTURES / app / "template.yaml"), "--ws-port", "0", "--http-port", "0", *arguments
    )


def table_keys(relay: RelayLocalProcess, table: str, key: str) -> set[str]:
    items = relay.dynamodb().scan(TableName=table)["Items"]
    return {item[key]["S"] for item in items}


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + EFFECT_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def receive(ws: ClientConnection) -> str:
    return str(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))


@pytest.fixture(params=["event", "variable"], scope="module")
def chat(request: pytest.FixtureRequest) -> Iterator[RelayLocalProcess]:
    """The plain-ApiGatewayV2 chat, its endpoint built from domainName+stage or from API_ENDPOINT (!Sub)."""
    relay = serve("chat_plain", "--parameter-overrides", f"EndpointStyle={request.param}")
    yield relay
    assert relay.stop() == 0, relay.output()


def test_plain_apigatewayv2_chat_broadcasts_and_tracks_connections(chat: RelayLocalProcess) -> None:
    table = "local-ConnectionsTable"
    assert "/dev" in chat.output()  # the stage comes from the AWS::ApiGatewayV2::Stage

    async def scenario() -> None:
        async with (
            connect(f"{chat.ws_url}/dev") as alice,
            connect(f"{chat.ws_url}/dev") as bob,
            connect(f"{chat.ws_url}/dev") as carol,
        ):
            assert len(table_keys(chat, table, "connectionId")) == 3
            await alice.send(json.dumps({"action": "sendmessage", "data": "hello all"}))
            assert [await receive(ws) for ws in (alice, bob, carol)] == ["hello all"] * 3
            await bob.close()
            await asyncio.to_thread(
                wait_until, lambda: len(table_keys(chat, table, "connectionId")) == 2, "$disconnect"
            )
            await carol.send(json.dumps({"action": "sendmessage", "data": "bob left"}))
            assert [await receive(ws) for ws in (alice, carol)] == ["bob left"] * 2

    asyncio.run(scenario())
    wait_until(lambda: table_keys(chat, table, "connectionId") == set(), "the last $disconnect")
    # Nothing went to AWS or hung on TLS: no error was logged.
    assert "ERROR" not in chat.output()


def test_a_tls_handshake_on_the_plain_port_fails_at_once_with_a_clear_log_line(chat: RelayLocalProcess) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", chat.ws_port), timeout=EFFECT_TIMEOUT) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    wait_until(lambda: "TLS handshake arrived" in chat.output(), "the log line")


def test_one_plain_function_serves_every_route_with_a_layer_and_a_ttl_table() -> None:
    relay = serve("single_function")
    try:
        table = "local-Connections"
        ttl = relay.dynamodb().describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}

        async def scenario() -> None:
            async with connect(f"{relay.ws_url}/live") as ws:
                items = relay.dynamodb().scan(TableName=table)["Items"]
                assert len(items) == 1
                assert int(items[0]["ttl"]["N"]) > time.time()
                await ws.send("whisper")
                # $default is two-way (RouteResponse): the answer comes back, shouted by the layer.
                assert json.loads(await receive(ws)) == {"echo": "WHISPER!", "role": "local-HandlerRole"}

        asyncio.run(scenario())
        wait_until(lambda: relay.dynamodb().scan(TableName=table)["Items"] == [], "$disconnect")
    finally:
        assert relay.stop() == 0, relay.output()


# ---- a $connect guarded by a Lambda REQUEST authorizer -----------------------------------


@pytest.fixture(scope="module")
def authorized() -> Iterator[RelayLocalProcess]:
    relay = serve("authorized")
    yield relay
    assert relay.stop() == 0, relay.output()


def authorizer_calls(relay: RelayLocalProcess) -> int:
    item = relay.dynamodb().get_item(TableName="local-Seen", Key={"id": {"S": "authorizer-calls"}}).get("Item")
    return int(item["calls"]["N"]) if item else 0


async def refused_status(relay: RelayLocalProcess, query: str, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{relay.ws_url}/prod{query}", additional_headers=headers):
            pass
    return refused.value.response.status_code


def test_the_authorizer_context_reaches_every_route_and_is_never_cached(authorized: RelayLocalProcess) -> None:
    before = authorizer_calls(authorized)
    expected = {"principalId": "ann", "tenant": "acme", "level": 3, "integrationLatency": 0}

    async def scenario() -> None:
        for _ in range(2):
            url = f"{authorized.ws_url}/prod?token=allow-ann"
            async with connect(url, additional_headers={"X-Tenant": "acme"}) as ws:
                await ws.send(json.dumps({"action": "whoami"}))
                answer = json.loads(await receive(ws))
                assert answer["authorizer"] == expected

    asyncio.run(scenario())
    assert authorizer_calls(authorized) == before + 2  # two connections, two calls: no caching

    def recorded(route: str) -> list[dict[str, Any]]:
        items = authorized.dynamodb().scan(TableName="local-Seen")["Items"]
        return [json.loads(item["authorizer"]["S"]) for item in items if item["id"]["S"].endswith(f" {route}")]

    wait_until(lambda: len(recorded("$disconnect")) == 2, "both $disconnect")
    for route in ("$connect", "whoami", "$disconnect"):
        assert recorded(route) == [expected, expected], route


@pytest.mark.parametrize(
    ("query", "headers", "status", "calls"),
    [
        ("?token=deny", {"X-Tenant": "acme"}, 403, 1),  # a Deny policy
        ("?token=unauthorized", {"X-Tenant": "acme"}, 401, 1),  # the authorizer says Unauthorized
        ("?token=explode", {"X-Tenant": "acme"}, 500, 1),  # the authorizer fails
        ("", {"X-Tenant": "acme"}, 401, 0),  # an identity source missing: not even called
        ("?token=allow-ann", {}, 401, 0),
    ],
)
def test_the_authorizer_refuses(
    authorized: RelayLocalProcess, query: str, headers: dict[str, str], status: int, calls: int
) -> None:
    before = authorizer_calls(authorized)
    routes_before = route_records(authorized)
    assert asyncio.run(refused_status(authorized, query, headers)) == status
    assert authorizer_calls(authorized) == before + calls
    # $connect never ran: the routes function recorded nothing new.
    assert route_records(authorized) == routes_before


def route_records(relay: RelayLocalProcess) -> set[str]:
    items = relay.dynamodb().scan(TableName="local-Seen")["Items"]
    return {item["id"]["S"] for item in items} - {"authorizer-calls"}


def test_node_es_module_chat_with_the_runtime_sdk_v3() -> None:
    """Node.js 20, ES modules, SDK v3 from the runtime, endpoint built from apiId and region."""
    relay = serve("chat_node")
    try:
        table = "local-ConnectionsTable"

        async def scenario() -> None:
            async with connect(f"{relay.ws_url}/prod") as alice, connect(f"{relay.ws_url}/prod") as bob:
                items = relay.dynamodb().scan(TableName=table)["Items"]
                assert len(items) == 2
                # ttl from the package.json dependency (ms("2h")), installed as sam build would.
                assert all(int(item["ttl"]["N"]) > time.time() + 3600 for item in items)
                await bob.send(json.dumps({"action": "sendmessage", "data": "<b>from node</b>"}))
                # Escaped by the layer's package.json dependency (escape-html).
                assert [await receive(ws) for ws in (alice, bob)] == ["&lt;b&gt;from node&lt;/b&gt;"] * 2

        asyncio.run(scenario())
        wait_until(lambda: relay.dynamodb().scan(TableName=table)["Items"] == [], "$disconnect")
        assert "Invoke Error" not in relay.output()
    finally:
        assert relay.stop() == 0, relay.output()
