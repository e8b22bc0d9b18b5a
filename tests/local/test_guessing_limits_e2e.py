"""The guessing limits hold through relay-local with 16 workers per function (issue 10).

Messages sent back to back on one connection, and auths from one address on many
connections, are handled concurrently by relay-local's workers as by API Gateway and
Lambda. "Claim, then look" must still let no more codes be looked up than the limits
allow, and a right code sent past a limit must never join. Every failed auth here comes
from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.codes import other_well_formed_code
from tests.support.files import ROOT
from tests.support.relay_local import EFFECT_TIMEOUT, RelayLocalProcess, start_relay_local

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 16
MAX_AUTH_ATTEMPTS = 5
FAILURES_PER_ADDRESS = 12


def _start(failures_per_address: int) -> RelayLocalProcess:
    return start_relay_local(
        "--template",
        str(ROOT / "template.yaml"),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--workers-per-function",
        str(WORKERS),
        "--log-level",
        "WARNING",
        "--parameter-overrides",
        f"MaxAuthAttempts={MAX_AUTH_ATTEMPTS}",
        f"AuthFailuresPerIp={failures_per_address}",
    )


@pytest.fixture
def generous_address_relay() -> Iterator[RelayLocalProcess]:
    process = _start(failures_per_address=10_000)
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture
def strict_address_relay() -> Iterator[RelayLocalProcess]:
    process = _start(failures_per_address=FAILURES_PER_ADDRESS)
    yield process
    assert process.stop() == 0, process.output()


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
    return message


async def register(relay: RelayLocalProcess) -> tuple[ClientConnection, str]:
    mac = await connect(relay.ws_url, open_timeout=EFFECT_TIMEOUT)
    await mac.send(json.dumps({"action": "register", "client_id": "mac"}))
    registered = await receive(mac)
    assert registered["type"] == "registered", registered
    return mac, str(registered["code"])


async def replies_until_closed(ws: ClientConnection, expected: int) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = []
    try:
        while len(replies) < expected:
            replies.append(await receive(ws))
    except ConnectionClosed:
        pass
    return replies


async def only_peer_joined_is(mac: ClientConnection, relay: RelayLocalProcess, code: str) -> None:
    """A fresh browser joins with the right code; the mac-client's next peer_joined is its."""
    browser = await connect(relay.ws_url, open_timeout=EFFECT_TIMEOUT)
    await browser.send(json.dumps({"action": "auth", "code": code}))
    authenticated = await receive(browser)
    assert authenticated["type"] == "authenticated", authenticated
    while (told := await receive(mac))["type"] != "peer_joined":
        pass
    assert told["peer"] == authenticated["peer"], "a guesser's right code joined the session"
    await browser.close()


def test_pipelined_guesses_on_one_connection_look_up_at_most_the_connections_limit(
    generous_address_relay: RelayLocalProcess,
) -> None:
    relay = generous_address_relay

    async def scenario() -> list[dict[str, Any]]:
        mac, code = await register(relay)
        guesser = await connect(relay.ws_url, open_timeout=EFFECT_TIMEOUT)
        guesses = [other_well_formed_code(code, shift) for shift in range(1, 40)] + [code]
        # Back to back, without waiting for a reply: relay-local hands them to 16 workers.
        for guess in guesses:
            await guesser.send(json.dumps({"action": "auth", "code": guess}))
        replies = await replies_until_closed(guesser, len(guesses))
        await only_peer_joined_is(mac, relay, code)
        await mac.close()
        return replies

    replies = asyncio.run(scenario())
    answers = Counter(reply.get("error", reply["type"]) for reply in replies)
    assert "authenticated" not in answers
    assert "pending" not in answers
    # Each looked-up wrong code answers invalid_code, except the one that reaches the
    # limit, which answers too_many_attempts and closes: at most MAX_AUTH_ATTEMPTS lookups.
    assert answers["invalid_code"] <= MAX_AUTH_ATTEMPTS - 1
    assert answers["too_many_attempts"] >= 1
    assert set(answers) <= {"invalid_code", "too_many_attempts"}


def test_concurrent_guesses_from_one_address_look_up_at_most_the_addresss_limit(
    strict_address_relay: RelayLocalProcess,
) -> None:
    relay = strict_address_relay
    connections = 8
    per_connection = MAX_AUTH_ATTEMPTS - 1  # below the connection's own limit

    async def guess_from_one_connection(code: str, first_shift: int) -> list[dict[str, Any]]:
        guesser = await connect(relay.ws_url, open_timeout=EFFECT_TIMEOUT)
        for shift in range(first_shift, first_shift + per_connection):
            await guesser.send(json.dumps({"action": "auth", "code": other_well_formed_code(code, shift)}))
        replies = [await receive(guesser) for _ in range(per_connection)]
        await guesser.close()
        return replies

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        mac, code = await register(relay)
        batches = await asyncio.gather(
            *(guess_from_one_connection(code, 1 + i * per_connection) for i in range(connections))
        )
        # The right code, from the same address once its budget is spent, is refused unseen.
        late = await connect(relay.ws_url, open_timeout=EFFECT_TIMEOUT)
        await late.send(json.dumps({"action": "auth", "code": code}))
        late_reply = await receive(late)
        await late.close()
        await mac.send(json.dumps({"action": "ping"}))
        told_mac = [await receive(mac)]
        while told_mac[-1]["type"] != "pong":
            told_mac.append(await receive(mac))
        await mac.close()
        return [reply for batch in batches for reply in batch], late_reply, told_mac

    replies, late_reply, told_mac = asyncio.run(scenario())
    answers = Counter(reply.get("error", reply["type"]) for reply in replies)
    looked_up = FAILURES_PER_ADDRESS
    assert answers == {"invalid_code": looked_up, "rate_limited": connections * per_connection - looked_up}
    assert late_reply.get("error") == "rate_limited"
    assert [m["type"] for m in told_mac] == ["pong"]
