"""Registration and auth under real concurrency, against moto in server mode.

Many threads call the real handlers at once, each request a real HTTP call to the
DynamoDB endpoint. The code space is shrunk so that codes really collide: uniqueness
must then come from DynamoDB's conditional writes, not from luck.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
import requests
from relay import protocol, session_codes
from relay_local.dynamodb import EmbeddedDynamoDb

from tests.support.aws import REGION, create_sessions_table
from tests.support.harness import Gateway, observed_gateway

SMALL_ALPHABET = protocol.CODE_ALPHABET[:2]  # 2**6 = 64 possible codes
THREADS = 16


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    # relay-local's embedded DynamoDB: moto's server mode with each request atomic, as
    # DynamoDB's are (moto alone lets concurrent transactions interleave). One server for
    # the module: stopping one waits out its poll interval.
    server = EmbeddedDynamoDb()
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_endpoint: str, aws_environment: None, monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = moto_endpoint
    # moto keeps its state in process-wide backends: each test starts from an empty account.
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", endpoint)
    create_sessions_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint))
    return endpoint


@pytest.fixture
def server_gateway(moto_server: str) -> Iterator[Gateway]:
    with observed_gateway() as gw:
        yield gw


@pytest.fixture
def shrunk_code_space(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    drawn: list[str] = []
    lock = threading.Lock()

    def small_code() -> str:
        code = "".join(secrets.choice(SMALL_ALPHABET) for _ in range(protocol.CODE_LENGTH))
        with lock:
            drawn.append(code)
        return code

    monkeypatch.setattr(session_codes, "generate_session_code", small_code)
    monkeypatch.setenv("MAX_CODE_ATTEMPTS", "200")
    return drawn


def test_concurrent_registrations_never_share_a_code(server_gateway: Gateway, shrunk_code_space: list[str]) -> None:
    registrations = 48  # three quarters of the 64-code space
    connections = [server_gateway.new_connection_id() for _ in range(registrations)]
    barrier = threading.Barrier(THREADS)

    def register(connection_id: str) -> list[dict[str, Any]]:
        if connections.index(connection_id) < THREADS:
            barrier.wait()  # the first wave starts together
        return server_gateway.message(connection_id, {"action": "register", "client_id": connection_id})

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        replies = list(pool.map(register, connections))

    assert all(len(reply) == 1 for reply in replies)
    errors = [reply[0] for reply in replies if reply[0]["type"] != "registered"]
    assert errors == []
    codes = [reply[0]["code"] for reply in replies]
    assert len(set(codes)) == registrations  # zero duplicates
    assert len(shrunk_code_space) > registrations  # collisions really happened and were retried
    assert server_gateway.debug_sessions()["body"] == f"Active sessions: {registrations}"


def test_a_full_code_space_fails_cleanly(server_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_codes, "generate_session_code", lambda: "AAAAAA")
    monkeypatch.setenv("MAX_CODE_ATTEMPTS", "3")
    first, second = server_gateway.connect(), server_gateway.connect()
    assert server_gateway.message(first, {"action": "register", "client_id": "a"})[0]["type"] == "registered"
    (reply,) = server_gateway.message(second, {"action": "register", "client_id": "b"})
    assert reply == protocol.error(protocol.ErrorCode.INTERNAL_ERROR)
    assert server_gateway.debug_sessions()["body"] == "Active sessions: 1"
    # The failed connection holds no half-made state: it can still join as a browser.
    (joined,) = server_gateway.message(second, {"action": "auth", "code": "AAAAAA"})
    assert joined["type"] == "authenticated"


def test_concurrent_auths_never_overfill_a_session(server_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BROWSERS", "3")
    mac, code = server_gateway.register()
    browsers = [server_gateway.connect() for _ in range(12)]
    barrier = threading.Barrier(len(browsers))

    def auth(connection_id: str) -> dict[str, Any]:
        barrier.wait()
        (reply,) = server_gateway.message(connection_id, {"action": "auth", "code": code})
        return reply

    with ThreadPoolExecutor(max_workers=len(browsers)) as pool:
        replies = list(pool.map(auth, browsers))

    kinds = sorted(reply.get("error", reply["type"]) for reply in replies)
    assert kinds == ["authenticated"] * 3 + ["session_full"] * 9
    joined = [m for m in server_gateway.sent[mac] if m["type"] == "peer_joined"]
    assert len(joined) == 3


def test_a_browser_never_stays_bound_to_a_session_ending_under_it(server_gateway: Gateway) -> None:
    """The mac-client disconnects while browsers authenticate: each browser either
    joined before the end (and then got session_closed and was unbound) or got
    invalid_code; none can send into the dead session afterwards."""
    for round_ in range(3):
        mac, code = server_gateway.register(client_id=f"mac-{round_}")
        browsers = [server_gateway.connect() for _ in range(6)]
        start = threading.Barrier(len(browsers) + 1)

        def auth(connection_id: str, code: str = code, start: threading.Barrier = start) -> dict[str, Any]:
            start.wait()
            replies = server_gateway.message(connection_id, {"action": "auth", "code": code})
            # session_closed may arrive around the reply when the mac-client leaves meanwhile.
            return next(m for m in replies if m["type"] in ("authenticated", "error"))

        def leave(mac: str = mac, start: threading.Barrier = start) -> None:
            start.wait()
            server_gateway.disconnect(mac)

        with ThreadPoolExecutor(max_workers=len(browsers) + 1) as pool:
            leaving = pool.submit(leave)
            replies = list(pool.map(auth, browsers))
            leaving.result()

        for browser, reply in zip(browsers, replies, strict=True):
            assert reply["type"] == "authenticated" or reply.get("error") == "invalid_code", reply
            if reply["type"] == "authenticated":
                assert server_gateway.sent[browser][-1] == protocol.session_closed()
            (after,) = server_gateway.message(browser, {"action": "send", "data": "still there?"})
            assert after == protocol.error(protocol.ErrorCode.NOT_BOUND)
    assert server_gateway.debug_sessions()["body"] == "Active sessions: 0"


def test_counter_updates_spread_over_the_shards(server_gateway: Gateway, moto_server: str) -> None:
    for _ in range(40):
        server_gateway.register()
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server)
    keys = [{"pk": {"S": f"COUNTER#{n}"}, "sk": {"S": "#COUNT"}} for n in range(protocol.DEFAULT_COUNTER_SHARDS)]
    items = client.batch_get_item(RequestItems={"relay-sessions-test": {"Keys": keys}})["Responses"]
    per_shard = [int(item["sessions"]["N"]) for item in items["relay-sessions-test"]]
    assert sum(per_shard) == 40
    assert len([n for n in per_shard if n > 0]) >= 4  # not one hot item
    assert max(per_shard) < 40
