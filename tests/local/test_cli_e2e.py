"""relay-local as a command: start-up errors, the banner, Ctrl-C, --reload, a minimal API."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.relay_local import (
    EFFECT_TIMEOUT,
    FIXTURES,
    RelayLocalProcess,
    free_port,
    read_records,
    start_relay_local,
    wait_for_record,
)

pytestmark = pytest.mark.e2e


def run_to_exit(*arguments: str) -> RelayLocalProcess:
    process = RelayLocalProcess(*arguments).start()
    process.wait_exit()
    return process


def test_a_template_without_websocket_api_is_an_error() -> None:
    process = run_to_exit(
        "--template", str(FIXTURES / "no_websocket" / "template.yaml"), "--ws-port", "0", "--http-port", "0"
    )
    assert process.process is not None
    assert process.process.returncode == 2
    assert "has no WebSocket API" in process.output()
    assert "AWS::Serverless::WebSocketApi" in process.output()


def test_a_missing_handler_file_is_an_error() -> None:
    process = run_to_exit(
        "--template", str(FIXTURES / "missing_handler" / "template.yaml"), "--ws-port", "0", "--http-port", "0"
    )
    assert process.process is not None
    assert process.process.returncode == 2
    expected = FIXTURES / "missing_handler" / "functions" / "empty" / "app.py"
    assert f"GoneFunction: handler file {expected} is missing" in process.output()


def test_a_handler_that_fails_to_import_is_an_error() -> None:
    process = run_to_exit(
        "--template", str(FIXTURES / "broken_import" / "template.yaml"), "--ws-port", "0", "--http-port", "0"
    )
    assert process.process is not None
    assert process.process.returncode == 1
    assert "BrokenFunction: cannot import handler app.handler" in process.output()
    assert "fails while being imported, on purpose" in process.output()


def test_a_missing_template_is_an_error(tmp_path: Path) -> None:
    process = run_to_exit("--template", str(tmp_path / "nope.yaml"), "--ws-port", "0", "--http-port", "0")
    assert process.process is not None
    assert process.process.returncode == 2
    assert "Template not found" in process.output()


def test_an_unknown_parameter_override_is_an_error() -> None:
    process = run_to_exit(
        "--template", str(FIXTURES / "gateway" / "template.yaml"), "--parameter-overrides", "NoSuchParameter=1"
    )
    assert process.process is not None
    assert process.process.returncode == 2
    assert "unknown parameters: NoSuchParameter" in process.output()


@pytest.mark.parametrize("taken", ["--ws-port", "--http-port"])
def test_a_port_in_use_is_an_error(taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {"--ws-port": str(free_port()), "--http-port": str(free_port()), taken: str(port)}
        process = run_to_exit(
            "--template",
            str(FIXTURES / "gateway" / "template.yaml"),
            *[item for pair in ports.items() for item in pair],
        )
    assert process.process is not None
    assert process.process.returncode == 2
    assert f"Port {port} on 127.0.0.1 is already in use" in process.output()


def test_banner_ctrl_c_and_disconnect_of_open_connections(record_dir: Path) -> None:
    ws_port, http_port = free_port(), free_port()
    relay = start_relay_local(
        "--template",
        str(FIXTURES / "gateway" / "template.yaml"),
        "--ws-port",
        str(ws_port),
        "--http-port",
        str(http_port),
        "--parameter-overrides",
        f"RecordDir={record_dir}",
    )
    banner = "\n".join(relay.stdout_lines)
    assert f"ws://127.0.0.1:{ws_port}" in banner
    assert f"http://127.0.0.1:{http_port}" in banner
    assert f"AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI=http://127.0.0.1:{ws_port}/test" in banner
    for route in ("$connect", "$disconnect", "$default", "echo", "boom", "GET /hello/{name}", "ANY /items/{proxy+}"):
        assert route in banner

    async def scenario() -> tuple[str, int | None]:
        async with connect(relay.ws_url) as ws:
            await ws.send(json.dumps({"action": "echo"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
            relay.interrupt()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT)
            return reply["event"]["requestContext"]["connectionId"], ws.close_code

    connection_id, close_code = asyncio.run(scenario())
    assert close_code == 1001
    assert relay.wait_exit() == 0, relay.output()
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1001
    # One log line per invocation: route, connection, function, duration, status.
    assert any(line.split()[2:4] == ["echo", connection_id] and line.endswith(" 200") for line in relay.stderr_lines), (
        relay.output()
    )


def test_reload_reimports_a_function_whose_file_changed(tmp_path: Path, record_dir: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "gateway", project)
    relay = start_relay_local(
        "--template",
        str(project / "template.yaml"),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--parameter-overrides",
        f"RecordDir={record_dir}",
        "--reload",
    )
    answer_file = project / "functions" / "answer" / "app.py"

    async def ask() -> dict[str, Any]:
        async with connect(relay.ws_url) as ws:
            await ws.send(json.dumps({"action": "twoway"}))
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
            return answer

    try:
        assert asyncio.run(ask())["route"] == "twoway"
        answer_file.write_text(
            "import json\n\n\n"
            "def handler(event, context):\n"
            '    return {"statusCode": 200, "body": json.dumps({"route": "reloaded"})}\n',
            encoding="utf-8",
        )
        deadline = time.monotonic() + EFFECT_TIMEOUT
        answer = asyncio.run(ask())
        while answer["route"] != "reloaded" and time.monotonic() < deadline:
            time.sleep(0.2)
            answer = asyncio.run(ask())
        assert answer["route"] == "reloaded", relay.output()
        assert any("Reloaded AnswerFunction" in line for line in relay.stderr_lines)
    finally:
        assert relay.stop() == 0, relay.output()


def test_an_api_without_connect_default_or_disconnect_routes(record_dir: Path) -> None:
    relay = start_relay_local(
        "--template",
        str(FIXTURES / "minimal" / "template.yaml"),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--parameter-overrides",
        f"RecordDir={record_dir}",
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        # Stage path: SAM's default stage name when the template sets none.
        async with connect(relay.ws_url + "/default") as ws:
            await ws.send(json.dumps({"action": "echo"}))
            echoed = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
            await ws.send(json.dumps({"action": "unrouted"}))
            unrouted = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
            await ws.send("not json at all")
            not_json = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
            return echoed, unrouted, not_json

    try:
        echoed, unrouted, not_json = asyncio.run(scenario())
    finally:
        assert relay.stop() == 0, relay.output()
    connection_id = echoed["event"]["requestContext"]["connectionId"]
    assert echoed["event"]["requestContext"]["stage"] == "default"
    for answer in (unrouted, not_json):
        assert set(answer) == {"message", "connectionId", "requestId"}
        assert answer["message"] == "Forbidden"
        assert answer["connectionId"] == connection_id


def test_a_stopping_relay_refuses_new_connections(record_dir: Path) -> None:
    """While Ctrl-C runs the open connections' $disconnect, a client that reconnects
    must be refused rather than land on a relay that is about to vanish."""
    relay = start_relay_local(
        "--template",
        str(FIXTURES / "gateway" / "template.yaml"),
        "--ws-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--parameter-overrides",
        f"RecordDir={record_dir}",
    )
    (record_dir / "slow-disconnect").touch()

    async def scenario() -> int:
        async with connect(relay.ws_url) as ws:
            relay.interrupt()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT)
        deadline = time.monotonic() + EFFECT_TIMEOUT
        while not read_records(record_dir, "disconnect") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert read_records(record_dir, "disconnect")  # its (slow) $disconnect is running now
        with pytest.raises(InvalidStatus) as refused:
            async with connect(relay.ws_url):
                pass
        return refused.value.response.status_code

    assert asyncio.run(scenario()) == 503
    assert relay.wait_exit() == 0, relay.output()


def test_sigterm_stops_relay_local_promptly_even_with_busy_workers() -> None:
    """Handlers busy for minutes (their own $disconnect too) do not hold relay-local up."""
    relay = start_relay_local(
        "--template", str(FIXTURES / "busy" / "template.yaml"), "--ws-port", "0", "--http-port", "0"
    )
    loop = asyncio.new_event_loop()
    # The clients live on their own loop, so that they answer relay-local's close frames and
    # their $disconnect (busy too) really runs.
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def keep_two_workers_busy() -> list[Any]:
        clients = [await connect(relay.ws_url) for _ in range(2)]
        for ws in clients:
            await ws.send("work")
        return clients

    clients = asyncio.run_coroutine_threadsafe(keep_two_workers_busy(), loop).result(EFFECT_TIMEOUT)
    deadline = time.monotonic() + EFFECT_TIMEOUT
    while sum("busy with $default" in line for line in relay.stderr_lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.process is not None
    relay.process.send_signal(signal.SIGTERM)
    try:
        # The bound the issue sets (10 s); the handlers would take 10 minutes.
        assert relay.wait_exit(timeout=10) == 0, relay.output()
        assert "abandoned" in relay.output()
    finally:
        for ws in clients:
            asyncio.run_coroutine_threadsafe(ws.close(), loop).result(EFFECT_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def test_unsupported_features_and_invented_values_are_listed_once_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("def handler(event, context):\n    return {'statusCode': 200}\n")
    (tmp_path / "template.yaml").write_text(
        """\
Resources:
  Api:
    Type: AWS::Serverless::WebSocketApi
    Properties:
      RouteSelectionExpression: $request.body.action
      ApiKeySelectionExpression: $request.header.x-api-key
      Routes:
        $default: {FunctionArn: !GetAtt Fn.Arn}
  Bucket:
    Type: AWS::S3::Bucket
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Runtime: python3.13
      VpcConfig: {SubnetIds: [subnet-1], SecurityGroupIds: [sg-1]}
      Environment:
        Variables:
          BUCKET: !Ref Bucket
          ALSO_BUCKET: !Ref Bucket
"""
    )
    relay = start_relay_local("--template", str(tmp_path / "template.yaml"), "--ws-port", "0", "--http-port", "0")
    try:
        output = relay.output()
        assert output.count("Not served by relay-local (listed once)") == 1
        assert "Api: ApiKeySelectionExpression" in output
        assert "Fn: VpcConfig" in output
        assert output.count("!Ref Bucket (AWS::S3::Bucket) is not modelled") == 1
    finally:
        assert relay.stop() == 0
