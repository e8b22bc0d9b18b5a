"""The relay's protocol v1 end to end: the project's template.yaml and handlers, served by
relay-local as a real process, driven by real WebSocket clients over loopback."""

from __future__ import annotations

import asyncio
import json
import traceback
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from relay import protocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.files import ROOT
from tests.support.relay_local import EFFECT_TIMEOUT, RelayLocalProcess, start_relay_local

pytestmark = pytest.mark.e2e

# Every failed auth of this module comes from 127.0.0.1; the per-address limit must not
# be what a test trips over (it is the handlers' tests' business).
OVERRIDES = ("--parameter-overrides", "AuthFailuresPerIp=10000")


def _start(*extra: str) -> RelayLocalProcess:
    return start_relay_local(
        "--template", str(ROOT / "template.yaml"), "--ws-port", "0", "--http-port", "0", *OVERRIDES, *extra
    )


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayLocalProcess]:
    process = _start()
    yield process
    assert process.stop() == 0, process.output()


class Client:
    """A mac-client or browser: one WebSocket connection speaking protocol v1."""

    def __init__(self, ws: ClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), self.timeout))
        return message

    async def ask(self, message: dict[str, Any] | str) -> dict[str, Any]:
        await self.send(message)
        return await self.receive()


async def open_client(relay: RelayLocalProcess, timeout: float = EFFECT_TIMEOUT) -> Client:
    return Client(await connect(relay.ws_url, max_size=None, open_timeout=timeout), timeout)


async def paired(
    relay: RelayLocalProcess, browsers: int = 1, timeout: float = EFFECT_TIMEOUT
) -> tuple[Client, str, list[tuple[Client, str]]]:
    """A registered mac-client, its code, and browsers authenticated with that code."""
    mac = await open_client(relay, timeout)
    registered = await mac.ask({"action": "register", "client_id": "test-mac"})
    assert registered.get("type") == "registered", registered
    code = registered["code"]
    joined: list[tuple[Client, str]] = []
    for _ in range(browsers):
        browser = await open_client(relay, timeout)
        authenticated = await browser.ask({"action": "auth", "code": code})
        assert authenticated.get("type") == "authenticated", authenticated
        assert await mac.receive() == {"type": "peer_joined", "peer": authenticated["peer"]}
        joined.append((browser, authenticated["peer"]))
    return mac, code, joined


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_register_then_auth_with_the_typed_code(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        mac = await open_client(relay)
        registered = await mac.ask({"action": "register", "client_id": "studio-mac"})
        code = registered["code"]
        typed = f"  {code[:3].lower()}-{code[3:].lower()} "  # as a person might type it
        browser = await open_client(relay)
        authenticated = await browser.ask({"action": "auth", "code": typed})
        joined = await mac.receive()
        await mac.ws.close()
        await browser.ws.close()
        return registered, authenticated, joined

    registered, authenticated, joined = run(scenario())
    assert registered.get("type") == "registered", registered
    assert protocol.is_well_formed_code(registered["code"])
    assert authenticated["type"] == "authenticated"
    assert authenticated["code"] == registered["code"]
    assert joined == {"type": "peer_joined", "peer": authenticated["peer"]}


def test_frames_travel_both_ways_and_to_one_or_all_browsers(relay: RelayLocalProcess) -> None:
    async def scenario() -> dict[str, Any]:
        mac, _, [(first, first_peer), (second, second_peer)] = await paired(relay, browsers=2)
        await first.send({"action": "send", "data": {"text": "from the first browser"}})
        at_mac = await mac.receive()
        await mac.send({"action": "send", "to": second_peer, "data": ["only", "second"]})
        at_second = await second.receive()
        await mac.send({"action": "send", "data": None})
        broadcast = [await first.receive(), await second.receive()]
        unknown = await mac.ask({"action": "send", "to": "pnobody00", "data": 1})
        for client in (mac, first, second):
            await client.ws.close()
        return {
            "at_mac": at_mac,
            "first_peer": first_peer,
            "at_second": at_second,
            "broadcast": broadcast,
            "unknown": unknown,
        }

    seen = run(scenario())
    assert seen["at_mac"] == {"type": "frame", "from": seen["first_peer"], "data": {"text": "from the first browser"}}
    assert seen["at_second"] == {"type": "frame", "from": "mac", "data": ["only", "second"]}
    assert seen["broadcast"] == [{"type": "frame", "from": "mac", "data": None}] * 2
    assert seen["unknown"]["type"] == "error"
    assert seen["unknown"]["error"] == "unknown_peer"


def test_a_browser_leaving_tells_the_mac_client(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], str]:
        mac, _, [(browser, peer)] = await paired(relay)
        await browser.ws.close()
        left = await mac.receive()
        await mac.ws.close()
        return left, peer

    left, peer = run(scenario())
    assert left == {"type": "peer_left", "peer": peer}


def test_the_mac_client_leaving_closes_the_session(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        mac, code, browsers = await paired(relay, browsers=2)
        await mac.ws.close()
        closed = [await browser.receive() for browser, _ in browsers]
        # The browser is unbound again, and the code no longer opens anything.
        retry = await browsers[0][0].ask({"action": "auth", "code": code})
        for browser, _ in browsers:
            await browser.ws.close()
        return closed, retry

    closed, retry = run(scenario())
    assert closed == [{"type": "session_closed"}] * 2
    assert retry["error"] == "invalid_code"


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (["this is not JSON"], "bad_request"),
        ([{"action": "dance"}], "unknown_action"),
        ([{"action": "register"}], "bad_request"),
        ([{"action": "send", "data": 1}], "not_bound"),
        ([{"action": "auth", "code": "ZZZZZZ"}], "invalid_code"),
        ([{"action": "register", "client_id": "a"}, {"action": "register", "client_id": "b"}], "already_bound"),
    ],
)
def test_requests_that_cannot_be_done_get_an_error(
    relay: RelayLocalProcess, messages: list[dict[str, Any] | str], error: str
) -> None:
    async def scenario() -> dict[str, Any]:
        client = await open_client(relay)
        for message in messages[:-1]:
            await client.ask(message)
        answer = await client.ask(messages[-1])
        await client.ws.close()
        return answer

    answer = run(scenario())
    assert answer["type"] == "error"
    assert answer["error"] == error
    assert answer["message"]


def test_ping_gets_pong(relay: RelayLocalProcess) -> None:
    async def scenario() -> dict[str, Any]:
        client = await open_client(relay)
        answer = await client.ask({"action": "ping"})
        await client.ws.close()
        return answer

    assert run(scenario()) == {"type": "pong"}


def test_a_session_holds_eight_browsers(relay: RelayLocalProcess) -> None:
    async def scenario() -> dict[str, Any]:
        mac, code, browsers = await paired(relay, browsers=protocol.DEFAULT_MAX_BROWSERS)
        ninth = await open_client(relay)
        answer = await ninth.ask({"action": "auth", "code": code})
        for client in (mac, ninth, *(browser for browser, _ in browsers)):
            await client.ws.close()
        return answer

    assert run(scenario())["error"] == "session_full"


def test_a_frame_too_large_to_deliver_is_refused(relay: RelayLocalProcess) -> None:
    # The request fits in one API Gateway message, but wrapped as a frame it would not.
    request_envelope = len(json.dumps({"action": "send", "data": ""}))
    data = "d" * (protocol.MAX_MESSAGE_BYTES - request_envelope)
    assert protocol.encoded_size(protocol.frame("p00000000", data)) > protocol.MAX_MESSAGE_BYTES

    async def scenario() -> dict[str, Any]:
        mac, _, [(browser, _peer)] = await paired(relay)
        message = json.dumps({"action": "send", "data": data})
        await browser.ws.send([message[i : i + 32 * 1024] for i in range(0, len(message), 32 * 1024)])
        answer = await browser.receive()
        await mac.ws.close()
        await browser.ws.close()
        return answer

    assert run(scenario())["error"] == "payload_too_large"


def test_too_many_failed_auths_close_the_connection(relay: RelayLocalProcess) -> None:
    async def scenario() -> tuple[list[str], bool]:
        client = await open_client(relay)
        errors = []
        for _ in range(protocol.DEFAULT_MAX_AUTH_ATTEMPTS):
            errors.append((await client.ask({"action": "auth", "code": "ZZZZZZ"}))["error"])
        try:
            await asyncio.wait_for(client.ws.recv(), EFFECT_TIMEOUT)
        except ConnectionClosed:
            return errors, True
        return errors, False

    errors, closed = run(scenario())
    assert errors == ["invalid_code"] * (protocol.DEFAULT_MAX_AUTH_ATTEMPTS - 1) + ["too_many_attempts"]
    assert closed


def _debug_sessions(relay: RelayLocalProcess) -> str:
    # `localhost`, as in the README's check.
    with urllib.request.urlopen(f"http://localhost:{relay.http_port}/debug/sessions", timeout=EFFECT_TIMEOUT) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


def test_debug_route_counts_active_sessions() -> None:
    relay = _start()
    try:
        assert _debug_sessions(relay) == "Active sessions: 0"

        async def scenario() -> list[str]:
            mac, _, _ = await paired(relay, browsers=0)
            during = await asyncio.to_thread(_debug_sessions, relay)
            await mac.ws.close()
            after = during
            for _ in range(200):  # $disconnect runs after the close; poll for its effect
                after = await asyncio.to_thread(_debug_sessions, relay)
                if after != during:
                    break
                await asyncio.sleep(0.05)
            return [during, after]

        assert run(scenario()) == ["Active sessions: 1", "Active sessions: 0"]
    finally:
        assert relay.stop() == 0, relay.output()


# ---- load --------------------------------------------------------------------------

PAIRS = 50
FRAMES_EACH_WAY = 10  # 20 frames per pair, 1,000 in all
# 1,000 invocations of `send` queue up behind a few workers per function; a frame may
# wait for most of them on a small, busy machine. A bound, not a measurement.
LOAD_TIMEOUT = 600.0


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_fifty_pairs_exchange_frames_each_delivered_exactly_once() -> None:
    # Two warm workers per function: on a small machine more only add cold starts and
    # CPU contention, which could push invocations past their 10-second Timeout.
    relay = _start("--workers-per-function", "2")

    async def pair_traffic(pair: int) -> tuple[Counter[str], Counter[str], Counter[str]]:
        mac, _, [(browser, peer)] = await paired(relay, timeout=LOAD_TIMEOUT)
        expected_at_mac = [json.dumps({"pair": pair, "seq": n, "to": "mac"}) for n in range(FRAMES_EACH_WAY)]
        expected_at_browser = [json.dumps({"pair": pair, "seq": n, "to": "browser"}) for n in range(FRAMES_EACH_WAY)]
        received_at_mac: Counter[str] = Counter()
        received_at_browser: Counter[str] = Counter()

        async def collect(client: Client, into: Counter[str], sender: str) -> None:
            for _ in range(FRAMES_EACH_WAY):
                message = await client.receive()
                assert message["type"] == "frame", message
                assert message["from"] == sender, message
                into[json.dumps(message["data"])] += 1

        async def send_all(client: Client, frames: list[str], extra: dict[str, Any]) -> None:
            for frame in frames:
                await client.send({"action": "send", "data": json.loads(frame), **extra})

        await asyncio.gather(
            collect(mac, received_at_mac, peer),
            collect(browser, received_at_browser, "mac"),
            send_all(browser, expected_at_mac, {}),
            send_all(mac, expected_at_browser, {"to": peer}),
        )
        # Nothing beyond the expected frames arrives: no duplicates in flight.
        for client in (mac, browser):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.ws.recv(), 0.5)
        await browser.ws.close()
        await mac.ws.close()
        return Counter(expected_at_mac + expected_at_browser), received_at_mac, received_at_browser

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(pair_traffic(pair) for pair in range(PAIRS)), return_exceptions=True)

    try:
        results = run(scenario())
    finally:
        assert relay.stop() == 0, relay.output()
    failures = ["".join(traceback.format_exception(result)) for result in results if isinstance(result, BaseException)]
    unsuccessful = [
        line for line in relay.stderr_lines if " INFO " in f" {line} " and not line.endswith((" 200", " ok"))
    ]
    assert not failures, (failures[:5], unsuccessful[:20])
    total = 0
    for expected, at_mac, at_browser in results:
        assert at_mac + at_browser == expected
        assert all(count == 1 for count in (at_mac + at_browser).values())
        total += sum(at_mac.values()) + sum(at_browser.values())
    assert total == PAIRS * FRAMES_EACH_WAY * 2


def test_a_session_the_ttl_removes_is_ended_by_the_expiry_function(relay: RelayLocalProcess) -> None:
    """The relay's own stream consumer, fed by relay-local's TTL simulation (`relay-local expire`)."""

    async def scenario() -> tuple[dict[str, Any], int | None]:
        mac, code, _browsers = await paired(relay, browsers=0)
        ahead = str(protocol.DEFAULT_SESSION_TTL_SECONDS + 60)
        answer = await asyncio.to_thread(relay.control, "expire", "--in", ahead)
        assert answer["deleted"]["local-SessionsTable"] > 0, answer
        # The expiry function closes the mac-client's connection through the Management API
        # (its endpoint: the template's !Sub https://${RelayApi}.execute-api...).
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(mac.ws.recv(), EFFECT_TIMEOUT)
        browser = await open_client(relay)
        retry = await browser.ask({"action": "auth", "code": code})
        await browser.ws.close()
        return retry, mac.ws.close_code

    try:
        retry, mac_close_code = run(scenario())
    except TimeoutError:
        raise AssertionError(relay.output()) from None
    assert mac_close_code == 1000
    assert retry["error"] == "invalid_code"
