"""API Gateway's WebSocket limits as relay-local enforces them, over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.relay_local import (
    EFFECT_TIMEOUT,
    FIXTURES,
    RelayLocalProcess,
    free_port,
    start_relay_local,
    wait_for_record,
)

pytestmark = pytest.mark.e2e

FRAME_LIMIT = 32 * 1024
MESSAGE_LIMIT = 128 * 1024
IDLE_TIMEOUT = 1.5
MAX_DURATION = 5.0


def _start(record_dir: Path, *extra: str) -> RelayLocalProcess:
    return start_relay_local(
        "--template",
        str(FIXTURES / "gateway" / "template.yaml"),
        "--ws-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--parameter-overrides",
        f"RecordDir={record_dir}",
        *extra,
    )


@pytest.fixture(scope="module")
def relay(record_dir: Path) -> Iterator[RelayLocalProcess]:
    process = _start(record_dir)
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def short_lived_relay(record_dir: Path) -> Iterator[RelayLocalProcess]:
    process = _start(record_dir, "--idle-timeout", str(IDLE_TIMEOUT), "--max-connection-duration", str(MAX_DURATION))
    yield process
    assert process.stop() == 0, process.output()


def message_of_size(action: str, size: int) -> str:
    """A JSON message for `action` of exactly `size` bytes."""
    empty = json.dumps({"action": action, "pad": ""})
    message = json.dumps({"action": action, "pad": "p" * (size - len(empty))})
    assert len(message.encode()) == size
    return message


def in_frames(message: str, frame_size: int) -> list[str]:
    return [message[i : i + frame_size] for i in range(0, len(message), frame_size)]


async def connection_id_of(ws: ClientConnection) -> str:
    await ws.send(json.dumps({"action": "echo"}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
    return str(reply["event"]["requestContext"]["connectionId"])


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until relay-local closes the connection; the close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT)
    except ConnectionClosed:
        return ws.close_code, ws.close_reason


async def two_way(ws: ClientConnection, message: str | list[str]) -> dict[str, Any]:
    await ws.send(message)
    answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
    return answer


def test_a_binary_frame_closes_the_connection_with_1003(relay: RelayLocalProcess, record_dir: Path) -> None:
    async def scenario() -> tuple[str, tuple[int | None, str | None]]:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            await ws.send(b'{"action":"echo"}')
            return connection_id, await closed_with(ws)

    connection_id, (code, _) = asyncio.run(scenario())
    assert code == 1003
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1003


def test_a_text_frame_that_is_not_utf8_closes_the_connection_with_1007(relay: RelayLocalProcess) -> None:
    async def scenario() -> int | None:
        async with connect(relay.ws_url) as ws:
            await ws.send(b'{"action":"echo","bad":"\xff"}', text=True)
            code, _ = await closed_with(ws)
            return code

    assert asyncio.run(scenario()) == 1007


def test_a_frame_of_32_kb_passes_and_one_byte_more_closes_with_1009(relay: RelayLocalProcess, record_dir: Path) -> None:
    async def scenario() -> tuple[dict[str, Any], str, int | None]:
        async with connect(relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            at_limit = await two_way(ws, message_of_size("twoway", FRAME_LIMIT))
            await ws.send(message_of_size("twoway", FRAME_LIMIT + 1))
            code, _ = await closed_with(ws)
            return at_limit, connection_id, code

    at_limit, connection_id, code = asyncio.run(scenario())
    assert at_limit["route"] == "twoway"
    assert code == 1009
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1009


def test_a_message_of_128_kb_in_frames_passes_and_one_byte_more_closes_with_1009(
    relay: RelayLocalProcess,
) -> None:
    async def scenario() -> tuple[dict[str, Any], int | None]:
        async with connect(relay.ws_url) as ws:
            # Every frame is within 32 KB; only the message as a whole is measured here.
            at_limit = await two_way(ws, in_frames(message_of_size("twoway", MESSAGE_LIMIT), FRAME_LIMIT))
            await ws.send(in_frames(message_of_size("twoway", MESSAGE_LIMIT + 1), FRAME_LIMIT))
            code, _ = await closed_with(ws)
            return at_limit, code

    at_limit, code = asyncio.run(scenario())
    assert at_limit["route"] == "twoway"
    assert code == 1009


def test_a_fragmented_message_reaches_the_function_whole(relay: RelayLocalProcess) -> None:
    # Multi-byte characters, split across frames: 50 KB in all.
    message = json.dumps({"action": "echo", "text": "é✓" * 10_000}, ensure_ascii=False)

    async def scenario() -> str:
        async with connect(relay.ws_url) as ws:
            await ws.send(in_frames(message, 10_000))
            reply = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
            return str(reply["event"]["body"])

    assert asyncio.run(scenario()) == message


def test_an_idle_connection_is_closed_with_1001_and_disconnect_runs(
    short_lived_relay: RelayLocalProcess, record_dir: Path
) -> None:
    async def scenario() -> tuple[str, int | None]:
        # The client's automatic pings keep flowing: they do not count as activity.
        async with connect(short_lived_relay.ws_url, ping_interval=0.2) as ws:
            connection_id = await connection_id_of(ws)
            code, _ = await closed_with(ws)
            return connection_id, code

    connection_id, code = asyncio.run(scenario())
    assert code == 1001
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1001


def test_messages_keep_a_connection_open_until_its_maximum_duration(
    short_lived_relay: RelayLocalProcess, record_dir: Path
) -> None:
    async def scenario() -> tuple[str, int, int | None]:
        async with connect(short_lived_relay.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            answered = 0
            try:
                while True:
                    await asyncio.sleep(IDLE_TIMEOUT / 3)
                    await two_way(ws, json.dumps({"action": "twoway"}))
                    answered += 1
            except ConnectionClosed:
                pass
            return connection_id, answered, ws.close_code

    connection_id, answered, code = asyncio.run(scenario())
    assert code == 1001
    # Activity outlived several idle periods, so only the maximum duration ended it.
    assert answered * (IDLE_TIMEOUT / 3) > 2 * IDLE_TIMEOUT
    event = wait_for_record(record_dir, "disconnect", connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1001
