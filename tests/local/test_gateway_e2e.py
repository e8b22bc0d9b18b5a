"""relay-local's WebSocket API, Management API and HTTP API, over real sockets.

One relay-local process serves tests/local/fixtures/gateway/template.yaml for the whole
module; each test opens its own connections with the `websockets` client library.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from botocore.exceptions import ClientError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.relay_local import (
    EFFECT_TIMEOUT,
    FIXTURES,
    RelayLocalProcess,
    free_port,
    management_client,
    read_records,
    start_fixture_gateway,
    start_relay_local,
    wait_for_record,
)

pytestmark = pytest.mark.e2e

STAGE = "test"
CONNECTION_ID = re.compile(r"^[A-Za-z0-9_-]{15}=$")
# The requestContext keys of events captured from API Gateway (Powertools' test events).
MESSAGE_CONTEXT_KEYS = {
    "routeKey", "messageId", "eventType", "extendedRequestId", "requestTime", "messageDirection", "stage",
    "connectedAt", "requestTimeEpoch", "identity", "requestId", "domainName", "connectionId", "apiId",
}  # fmt: skip
CONNECT_CONTEXT_KEYS = MESSAGE_CONTEXT_KEYS - {"messageId"}
DISCONNECT_CONTEXT_KEYS = CONNECT_CONTEXT_KEYS | {"disconnectStatusCode", "disconnectReason"}


@pytest.fixture(scope="module")
def relay(record_dir: Path) -> Iterator[RelayLocalProcess]:
    process = start_relay_local(
        "--template",
        str(FIXTURES / "gateway" / "template.yaml"),
        "--ws-port",
        str(free_port()),
        "--http-port",
        "0",
        "--parameter-overrides",
        f"RecordDir={record_dir}",
        "--stack-name",
        "fixture",
        "--static-dir",
        str(FIXTURES / "gateway" / "static"),
    )
    yield process
    assert process.stop() == 0, process.output()


async def recv_json(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))


async def echo(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    reply: dict[str, Any] = await recv_json(ws)
    return reply


async def connection_id_of(ws: ClientConnection) -> str:
    return str((await echo(ws, {"action": "echo"}))["event"]["requestContext"]["connectionId"])


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# ---- events --------------------------------------------------------------------------


def test_message_event_is_shaped_like_api_gateway_and_validates(relay: RelayLocalProcess) -> None:
    body = json.dumps({"action": "echo", "payload": [1, "two", None]})

    async def scenario() -> dict[str, Any]:
        async with connect(relay.ws_url) as ws:
            return await echo(ws, body)

    reply = run(scenario())
    event = reply["event"]
    model = APIGatewayWebSocketMessageEventModel(**event)
    assert model.body == body
    assert set(event) == {"requestContext", "body", "isBase64Encoded"}
    context = event["requestContext"]
    assert set(context) == MESSAGE_CONTEXT_KEYS
    assert context["routeKey"] == "echo"
    assert context["eventType"] == "MESSAGE"
    assert context["messageDirection"] == "IN"
    assert context["stage"] == STAGE
    assert context["domainName"] == f"127.0.0.1:{relay.ws_port}"
    assert CONNECTION_ID.match(context["connectionId"])
    assert re.match(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$", context["requestTime"])
    assert context["requestTimeEpoch"] >= context["connectedAt"]
    assert context["identity"] == {"sourceIp": "127.0.0.1"}


def test_function_gets_lambda_context_and_template_environment(relay: RelayLocalProcess) -> None:
    async def scenario() -> dict[str, Any]:
        async with connect(relay.ws_url) as ws:
            return await echo(ws, {"action": "echo"})

    reply = run(scenario())
    assert reply["context"]["function_name"] == "fixture-echo"
    assert reply["context"]["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fixture-echo"
    assert reply["context"]["memory_limit_in_mb"] == "256"
    assert 0 < reply["context"]["remaining_ms"] <= 10_000
    assert re.match(r"^[0-9a-f-]{36}$", reply["context"]["aws_request_id"])
    assert reply["environment"] == {
        "TABLE_NAME": "fixture-ItemsTable",
        "TABLE_ARN": "arn:aws:dynamodb:us-east-1:123456789012:table/fixture-ItemsTable",
        "GREETING": "hello-fixture",
        "STAGE_KIND": "test-stage",
        "SHARED_NAME": "from-globals",
        "AWS_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "fixture-echo",
    }
    assert Path(reply["cwd"]) == (FIXTURES / "gateway" / "functions" / "echo").resolve()


def test_connect_event_carries_headers_and_query_string(relay: RelayLocalProcess, record_dir: Path) -> None:
    async def scenario() -> str:
        async with connect(
            relay.ws_url + f"/{STAGE}?tag=a&tag=b&mode=ok", additional_headers={"X-Fixture": "yes"}
        ) as ws:
            return await connection_id_of(ws)

    connection_id = run(scenario())
    event = wait_for_record(record_dir, "connect", connection_id)
    APIGatewayWebSocketConnectEventModel(**event)
    assert set(event["requestContext"]) == CONNECT_CONTEXT_KEYS
    assert event["requestContext"]["routeKey"] == "$connect"
    assert event["requestContext"]["eventType"] == "CONNECT"
    assert event["queryStringParameters"] == {"tag": "b", "mode": "ok"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "mode": ["ok"]}
    assert event["headers"]["X-Fixture"] == "yes"
    assert event["headers"]["Host"] == f"127.0.0.1:{relay.ws_port}"
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert "Sec-WebSocket-Key" in event["headers"]
    assert event["multiValueHeaders"]["X-Fixture"] == ["yes"]


def test_disconnect_event_has_the_close_code_and_reason_the_client_sent(
    relay: RelayLocalProcess, record_dir: Path
) -> None:
    async def scenario() -> tuple[str, str]:
        async with connect(relay.ws_url) as with_reason:
            first = await connection_id_of(with_reason)
            await with_reason.close(4001, "done here")
        async with connect(relay.ws_url) as without_code:
            second = await connection_id_of(without_code)
            # A close frame without a status code: the client reports 1005.
            await without_code.close(None)  # type: ignore[arg-type]
        return first, second

    first, second = run(scenario())
    event = wait_for_record(record_dir, "disconnect", first)
    APIGatewayWebSocketDisconnectEventModel(**event)
    assert set(event["requestContext"]) == DISCONNECT_CONTEXT_KEYS
    assert event["requestContext"]["disconnectStatusCode"] == 4001
    assert event["requestContext"]["disconnectReason"] == "done here"
    assert event["requestContext"]["eventType"] == "DISCONNECT"
    assert event["headers"]["Host"] == f"127.0.0.1:{relay.ws_port}"
    silent = wait_for_record(record_dir, "disconnect", second)
    assert silent["requestContext"]["disconnectStatusCode"] == 1005
    assert silent["requestContext"]["disconnectReason"] == "Client-side close frame status not set"


def test_disconnect_after_a_dropped_tcp_connection_reports_1006(relay: RelayLocalProcess, record_dir: Path) -> None:
    async def scenario() -> str:
        ws = await connect(relay.ws_url)
        connection_id = await connection_id_of(ws)
        ws.transport.abort()
        return connection_id

    connection_id = run(scenario())
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1006


# ---- route selection -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "route_key"),
    [
        ('{"action":"echo"}', "echo"),
        ("this is not JSON", "$default"),
        ('{"action":"no-such-route"}', "$default"),
        ('{"action":5}', "$default"),
        ('["action","echo"]', "$default"),
        ('{"action":"$connect"}', "$default"),
        ('{"no_action":true}', "$default"),
    ],
)
def test_route_selection_expression_picks_the_route(relay: RelayLocalProcess, body: str, route_key: str) -> None:
    async def scenario() -> dict[str, Any]:
        async with connect(relay.ws_url) as ws:
            return await echo(ws, body)

    event = run(scenario())["event"]
    assert event["requestContext"]["routeKey"] == route_key
    assert event["body"] == body


# ---- failures ------------------------------------------------------------------------


def test_a_raising_handler_gives_api_gateways_error_and_the_connection_stays_open(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            error = await echo(ws, {"action": "boom"})
            after = await echo(ws, {"action": "echo"})
            return error, after, connection_id

    error, after, connection_id = run(scenario())
    assert set(error) == {"message", "connectionId", "requestId"}
    assert error["message"] == "Internal server error"
    assert error["connectionId"] == connection_id
    assert after["event"]["requestContext"]["connectionId"] == connection_id
    # The function's own output, traceback included, is passed through with its name.
    output = "\n".join(relay.stderr_lines)
    assert "fixture-RaisingFunction | about to fail" in output
    assert "fixture-RaisingFunction | [ERROR] ValueError: this handler always fails" in output


def test_a_handler_past_its_timeout_is_stopped_and_the_client_told(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with connect(relay.ws_url) as ws:
            timed_out = await echo(ws, {"action": "slow"})
            after = await echo(ws, {"action": "echo"})
            return timed_out, after

    timed_out, after = run(scenario())
    assert timed_out["message"] == "Endpoint request timed out"
    assert after["event"]["requestContext"]["routeKey"] == "echo"
    assert any("Task timed out after 1.00 seconds" in line for line in relay.stderr_lines)


def test_connect_answering_non_2xx_rejects_the_upgrade_with_403(relay: RelayLocalProcess, record_dir: Path) -> None:
    async def scenario() -> int:
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(relay.ws_url + "?mode=reject"):
                pass
        return rejected.value.response.status_code

    before = len(read_records(record_dir, "connect"))
    assert run(scenario()) == 403
    connects = read_records(record_dir, "connect")
    assert len(connects) == before + 1
    rejected_id = connects[-1]["requestContext"]["connectionId"]
    # The client sees only 403; the log shows why the handler refused.
    deadline = time.monotonic() + EFFECT_TIMEOUT
    while not any(rejected_id in line and "401 no entry" in line for line in relay.stderr_lines):
        assert time.monotonic() < deadline, relay.output()
        time.sleep(0.05)
    # A connection that never opened gets no $disconnect.
    assert all(
        event["requestContext"]["connectionId"] != rejected_id for event in read_records(record_dir, "disconnect")
    )


def test_connect_that_raises_fails_the_upgrade_with_500(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(relay.ws_url + "?mode=raise"):
                pass
        response = rejected.value.response
        return response.status_code, json.loads(response.body)

    status, body = run(scenario())
    assert status == 500
    assert body["message"] == "Internal server error"


def test_connect_can_choose_the_subprotocol(relay: RelayLocalProcess) -> None:
    async def scenario() -> str | None:
        async with connect(relay.ws_url + "?mode=protocol", subprotocols=["other", "fixture.v1"]) as ws:  # type: ignore[list-item]
            return ws.subprotocol

    assert run(scenario()) == "fixture.v1"


def test_an_unknown_path_is_refused(relay: RelayLocalProcess) -> None:
    async def scenario() -> int:
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(relay.ws_url + "/not-the-stage"):
                pass
        return rejected.value.response.status_code

    assert run(scenario()) == 403


# ---- route responses and warm functions ----------------------------------------------


def test_only_a_route_with_a_route_response_sends_the_handlers_body(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with connect(relay.ws_url) as ws:
            await ws.send(json.dumps({"action": "oneway"}))
            # The one-way route's body is dropped, so the next message is the echo.
            after_oneway = await echo(ws, {"action": "echo"})
            twoway = await echo(ws, {"action": "twoway"})
            return after_oneway, twoway

    after_oneway, twoway = run(scenario())
    assert after_oneway["event"]["requestContext"]["routeKey"] == "echo"
    assert twoway["route"] == "twoway"


def test_a_function_is_imported_once_and_kept_warm(relay: RelayLocalProcess) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with connect(relay.ws_url) as ws:
            return [await echo(ws, {"action": "twoway"}) for _ in range(3)]

    answers = run(scenario())
    assert len({answer["pid"] for answer in answers}) == 1
    counts = [answer["invocations"] for answer in answers]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]


def test_functions_have_their_own_environment_module_and_process(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with connect(relay.ws_url) as ws:
            return await echo(ws, {"action": "envA"}), await echo(ws, {"action": "envB"})

    env_a, env_b = run(scenario())
    assert env_a == {
        "module": "env_a",
        "SHARED_NAME": "only-a",
        "A_ONLY": "1",
        "SET_AT_IMPORT_BY_A": "yes",
        "function_name": "fixture-EnvAFunction",
    }
    assert env_b == {
        "module": "env_b",
        "SHARED_NAME": "only-b",
        "A_ONLY": None,
        "SET_AT_IMPORT_BY_A": None,
        "function_name": "fixture-EnvBFunction",
    }


def test_concurrent_invocations_of_different_connections_do_not_wait_for_each_other(
    relay: RelayLocalProcess,
) -> None:
    # While a slow invocation holds one worker, other connections are still served.
    async def scenario() -> list[str]:
        async with connect(relay.ws_url) as slow, connect(relay.ws_url) as quick:
            await slow.send(json.dumps({"action": "slow"}))
            replies = [(await echo(quick, {"action": "echo"}))["event"]["requestContext"]["routeKey"] for _ in range(3)]
            finished_first = await recv_json(slow)
            return [*replies, finished_first["message"]]

    assert run(scenario()) == ["echo", "echo", "echo", "Endpoint request timed out"]


def test_tables_are_created_from_their_definitions(relay: RelayLocalProcess) -> None:
    async def scenario() -> dict[str, Any]:
        async with connect(relay.ws_url) as ws:
            return await echo(ws, {"action": "table"})

    table = run(scenario())
    assert table["name"] == "fixture-ItemsTable"
    assert table["keys"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert table["indexes"] == ["by-owner"]
    assert table["billing"] == "PAY_PER_REQUEST"
    assert table["stream"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert table["ttl"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


# ---- the Management API --------------------------------------------------------------


def test_post_to_connection_delivers_the_data_as_a_text_message(relay: RelayLocalProcess) -> None:
    client = management_client(relay, STAGE)

    async def scenario() -> list[str]:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            small = "héllo ✓"
            large = "x" * (100 * 1024)  # more than one 32 KB frame
            await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=small.encode())
            await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=large.encode())
            received = [await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT) for _ in range(2)]
            return [small, large, *map(str, received)]

    small, large, first, second = run(scenario())
    assert (first, second) == (small, large)


def test_get_connection_reports_connected_at_last_active_at_and_identity(relay: RelayLocalProcess) -> None:
    client = management_client(relay, STAGE)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with connect(relay.ws_url, user_agent_header="fixture-agent/1.0") as ws:
            connection_id = await connection_id_of(ws)
            first = await asyncio.to_thread(client.get_connection, ConnectionId=connection_id)
            await asyncio.sleep(0.05)
            await echo(ws, {"action": "echo"})
            second = await asyncio.to_thread(client.get_connection, ConnectionId=connection_id)
            return first, second

    first, second = run(scenario())
    assert first["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "fixture-agent/1.0"}
    assert first["LastActiveAt"] >= first["ConnectedAt"]
    assert second["ConnectedAt"] == first["ConnectedAt"]
    assert second["LastActiveAt"] > first["LastActiveAt"]


def test_unknown_and_closed_connections_answer_410_gone(relay: RelayLocalProcess) -> None:
    client = management_client(relay, STAGE)

    async def scenario() -> str:
        async with connect(relay.ws_url) as ws:
            return await connection_id_of(ws)

    closed_id = run(scenario())
    for connection_id in ("AAAAAAAAAAAAAAA=", closed_id):
        calls: list[Callable[[str], Any]] = [
            lambda cid: client.post_to_connection(ConnectionId=cid, Data=b"{}"),
            lambda cid: client.get_connection(ConnectionId=cid),
            lambda cid: client.delete_connection(ConnectionId=cid),
        ]
        for call in calls:
            with pytest.raises(ClientError) as gone:
                call(connection_id)
            assert gone.value.response["Error"]["Code"] == "GoneException"
            assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_a_disconnect_delay_keeps_posts_gone_before_disconnect_and_a_stop_cuts_it_short(
    tmp_path: Path,
) -> None:
    """--disconnect-delay: API Gateway's late $disconnect. Within the delay the connection is
    already gone (410) and no $disconnect has run; stopping runs it at once, not after an hour."""
    process = start_fixture_gateway(tmp_path, "--stack-name", "fixture", "--disconnect-delay", "3600")
    try:

        async def scenario() -> str:
            async with connect(process.ws_url) as ws:
                return await connection_id_of(ws)

        connection_id = run(scenario())
        with pytest.raises(ClientError) as gone:
            management_client(process, STAGE).post_to_connection(ConnectionId=connection_id, Data=b"{}")
        assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
        assert read_records(tmp_path, "disconnect") == []
    finally:
        assert process.stop() == 0, process.output()
    (disconnect,) = read_records(tmp_path, "disconnect")
    assert disconnect["requestContext"]["connectionId"] == connection_id


def test_a_payload_over_128_kb_answers_413_and_128_kb_is_delivered(relay: RelayLocalProcess) -> None:
    client = management_client(relay, STAGE)

    async def scenario() -> tuple[str, int]:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            with pytest.raises(ClientError) as too_large:
                await asyncio.to_thread(
                    client.post_to_connection, ConnectionId=connection_id, Data=b"x" * (128 * 1024 + 1)
                )
            await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=b"y" * (128 * 1024))
            received = await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT)
            error = too_large.value.response
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
            return str(error["Error"]["Code"]), len(received)

    assert run(scenario()) == ("PayloadTooLargeException", 128 * 1024)


def test_delete_connection_closes_it_and_runs_disconnect(relay: RelayLocalProcess, record_dir: Path) -> None:
    client = management_client(relay, STAGE)

    async def scenario() -> tuple[str, int | None]:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            await asyncio.to_thread(client.delete_connection, ConnectionId=connection_id)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT)
            return connection_id, ws.close_code

    connection_id, close_code = run(scenario())
    assert close_code == 1000
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1000
    with pytest.raises(ClientError) as gone:
        client.get_connection(ConnectionId=connection_id)
    assert gone.value.response["Error"]["Code"] == "GoneException"


def test_management_api_answers_without_the_stage_in_the_path_too(relay: RelayLocalProcess) -> None:
    client = management_client(relay, "")

    async def scenario() -> str:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=b"no stage")
            return str(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))

    assert run(scenario()) == "no stage"


# ---- the HTTP API --------------------------------------------------------------------


def http(
    relay: RelayLocalProcess, path: str, method: str = "GET", data: bytes | None = None
) -> tuple[int, dict[str, Any], bytes]:
    request = urllib.request.Request(relay.http_url + path, method=method, data=data)
    request.add_header("Cookie", "session=abc; theme=dark")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=EFFECT_TIMEOUT) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def test_http_route_gets_a_payload_v2_event(relay: RelayLocalProcess) -> None:
    status, _, body = http(relay, "/hello/world?x=1&x=2&y=")
    assert status == 200
    event = json.loads(body)["event"]
    APIGatewayProxyEventV2Model(**event)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /hello/{name}"
    assert event["rawPath"] == "/hello/world"
    assert event["rawQueryString"] == "x=1&x=2&y="
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["pathParameters"] == {"name": "world"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["stage"] == "$default"


def test_http_greedy_route_with_a_body(relay: RelayLocalProcess) -> None:
    status, _, body = http(relay, "/items/a/b", method="POST", data=b'{"n": 1}')
    assert status == 200
    event = json.loads(body)["event"]
    APIGatewayProxyEventV2Model(**event)
    assert event["routeKey"] == "ANY /items/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b"}
    assert event["body"] == '{"n": 1}'
    assert event["isBase64Encoded"] is False


def test_http_responses_follow_payload_v2_rules(relay: RelayLocalProcess) -> None:
    status, headers, body = http(relay, "/hello/teapot")
    assert (status, body) == (418, b"short and stout")
    assert headers["x-fixture"] == "yes"
    status, headers, body = http(relay, "/hello/plain")
    # No statusCode: the whole answer is a JSON body with status 200.
    assert (status, json.loads(body)) == (200, {"greeting": "no statusCode here"})
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("name", ["raise", "unserialisable"])
def test_http_handler_failure_gives_api_gateways_500(relay: RelayLocalProcess, name: str) -> None:
    status, _, body = http(relay, f"/hello/{name}")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_a_served_page_finds_the_websocket_url_in_a_json_document(relay: RelayLocalProcess) -> None:
    status, headers, body = http(relay, "/_relay-local/endpoints.json")
    assert status == 200
    assert json.loads(body) == {
        "webSocketUrl": f"{relay.ws_url}/{STAGE}",
        "stage": STAGE,
        "managementApiUrl": f"http://127.0.0.1:{relay.ws_port}/{STAGE}",
    }
    assert headers.get("Cache-Control") == "no-store"


def test_http_unknown_route_is_404_and_static_files_are_served(relay: RelayLocalProcess) -> None:
    status, _, body = http(relay, "/no/such/route")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"})
    status, _, body = http(relay, "/")
    assert status == 200
    assert b"served by relay-local" in body
    status, _, _ = http(relay, "/../template.yaml")
    assert status == 404
