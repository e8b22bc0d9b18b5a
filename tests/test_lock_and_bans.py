"""Finding 3 (kick bans), lock/unlock, and finding 6 (the Management API endpoint),
through the real handlers over moto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import botocore.awsrequest
import pytest
from moto.core.botocore_stubber import MockRawResponse
from relay import protocol, wiring
from relay.protocol import ErrorCode, MessageType

from tests.support.harness import Gateway
from tests.support.invariants import assert_invariants

Message = dict[str, Any]
KICKED_FROM = "198.51.100.70"


def auth(gateway: Gateway, connection_id: str, code: str, source_ip: str | None = None) -> list[Message]:
    return gateway.message(connection_id, {"action": "auth", "code": code}, source_ip=source_ip)


def before_auths_join(gateway: Gateway, action: Callable[[], object]) -> None:
    """Run `action` once, after the next auth has read the session and before it joins it
    (its second transaction; the first is its claim)."""
    seen: list[str] = []

    def hook(model: Any, **_: Any) -> None:
        if gateway.current_function != "AuthFunction" or model.name != "TransactWriteItems":
            return
        seen.append(model.name)
        if len(seen) == 2:
            running = gateway.current_function
            action()
            gateway.current_function = running

    # On the store's client itself: it exists already and copied the session's hooks then.
    wiring.session_store().table.client.meta.events.register("before-call.dynamodb.TransactWriteItems", hook)


# ---- lock and unlock ---------------------------------------------------------------------


def test_a_locked_code_answers_exactly_as_an_unknown_code_and_counts_as_a_failure(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, dynamodb: Any
) -> None:
    monkeypatch.setenv("MAX_AUTH_ATTEMPTS", "2")
    mac, code = gateway.register()
    browser, peer = gateway.join(code)

    assert gateway.message(mac, {"action": "lock"}) == [protocol.locked()]

    guesser = gateway.connect()
    locked = auth(gateway, guesser, code)
    unknown = auth(gateway, gateway.connect(), "ZZZZZZ")
    assert locked == unknown == [protocol.error(ErrorCode.INVALID_CODE)]
    assert auth(gateway, guesser, code) == [protocol.error(ErrorCode.TOO_MANY_ATTEMPTS)]  # counted
    assert [m["type"] for m in gateway.sent[mac]] == ["registered", "peer_joined", "locked"]
    # The browser already in keeps working, both ways.
    assert gateway.message(browser, {"action": "send", "data": "hi"}) == []
    assert gateway.last(mac) == protocol.frame(peer, "hi")
    gateway.message(mac, {"action": "send", "data": "hello"})
    assert gateway.last(browser) == protocol.frame(protocol.MAC_PEER, "hello")

    assert gateway.message(mac, {"action": "unlock"}) == [protocol.unlocked()]
    (joined,) = auth(gateway, gateway.connect(), code)
    assert joined["type"] == MessageType.AUTHENTICATED
    assert_invariants(gateway, dynamodb)


def test_lock_and_unlock_are_for_the_mac_client_only(gateway: Gateway) -> None:
    _, code = gateway.register()
    browser, _ = gateway.join(code)

    assert gateway.message(browser, {"action": "lock"}) == [protocol.error(ErrorCode.NOT_MAC)]
    assert gateway.message(browser, {"action": "unlock"}) == [protocol.error(ErrorCode.NOT_MAC)]
    assert gateway.message(gateway.connect(), {"action": "lock"}) == [protocol.error(ErrorCode.NOT_BOUND)]
    assert auth(gateway, gateway.connect(), code)[0]["type"] == MessageType.AUTHENTICATED  # not locked


def test_a_lock_landing_between_an_auths_read_and_its_join_keeps_it_out(gateway: Gateway, dynamodb: Any) -> None:
    mac, code = gateway.register()
    browser = gateway.connect()
    before_auths_join(gateway, lambda: gateway.message(mac, {"action": "lock"}))

    assert auth(gateway, browser, code) == [protocol.error(ErrorCode.INVALID_CODE)]

    assert [m["type"] for m in gateway.sent[mac]] == ["registered", "locked"]
    assert assert_invariants(gateway, dynamodb).peers == {}


# ---- kick bans ---------------------------------------------------------------------------


@pytest.mark.parametrize("approve", [False, True])
def test_a_kicked_browsers_address_cannot_authenticate_into_that_session_again(gateway: Gateway, approve: bool) -> None:
    mac = gateway.connect()
    (registered,) = gateway.message(mac, {"action": "register", "client_id": "m", "approve": approve})
    code = registered["code"]
    browser = gateway.connect()
    (first,) = auth(gateway, browser, code, KICKED_FROM)
    peer = first["peer"] if not approve else gateway.last(mac)["peer"]
    gateway.message(mac, {"action": "kick", "peer": peer})
    heard_by_mac = len(gateway.sent[mac])

    for connection in (browser, gateway.connect()):  # the same socket, or a new one
        assert auth(gateway, connection, code, KICKED_FROM) == [protocol.error(ErrorCode.BANNED)]

    assert len(gateway.sent[mac]) == heard_by_mac  # no join_request, no peer_joined
    (elsewhere,) = auth(gateway, gateway.connect(), code, "192.0.2.71")
    assert elsewhere["type"] == (MessageType.PENDING if approve else MessageType.AUTHENTICATED)


def test_a_kick_landing_between_an_auths_read_and_its_join_keeps_that_address_out(
    gateway: Gateway, dynamodb: Any
) -> None:
    mac, code = gateway.register()
    first = gateway.connect()
    (joined,) = auth(gateway, first, code, KICKED_FROM)
    second = gateway.connect()  # another tab behind the same address
    before_auths_join(gateway, lambda: gateway.message(mac, {"action": "kick", "peer": joined["peer"]}))

    replies = auth(gateway, second, code, KICKED_FROM)

    assert replies == [protocol.error(ErrorCode.INVALID_CODE)]
    assert assert_invariants(gateway, dynamodb).peers == {}
    assert auth(gateway, second, code, KICKED_FROM) == [protocol.error(ErrorCode.BANNED)]


# ---- the Management API endpoint ---------------------------------------------------------


def posted_to(gateway: Gateway, answer: bool = False) -> list[str]:
    """The URLs the relay posts to (answered here with a 200 when `answer`: no network)."""
    urls: list[str] = []

    def record(request: Any, **_: Any) -> Any:
        urls.append(request.url)
        return botocore.awsrequest.AWSResponse(request.url, 200, {}, MockRawResponse(b"")) if answer else None

    boto3.DEFAULT_SESSION.events.register_first("before-send.apigatewaymanagementapi.PostToConnection", record)
    return urls


def test_posts_go_to_the_apis_own_endpoint_behind_a_custom_domain(gateway: Gateway) -> None:
    urls = posted_to(gateway)
    mac = gateway.connect()
    event = gateway._event("register", mac, body='{"action":"register","client_id":"m"}')
    event["requestContext"]["domainName"] = "relay.example.com"  # a custom domain name
    event["requestContext"]["apiId"] = "q1w2e3r4t5"
    event["requestContext"]["stage"] = "live"

    assert gateway.invoke("register", event) == {"statusCode": 200}

    assert [url.split("/@connections/")[0] for url in urls] == [
        "https://q1w2e3r4t5.execute-api.us-east-1.amazonaws.com/live"
    ]
    assert gateway.sent[mac][0]["type"] == MessageType.REGISTERED


def test_the_endpoint_override_still_wins(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", "http://127.0.0.1:9/local")
    urls = posted_to(gateway, answer=True)
    mac = gateway.connect()
    event = gateway._event("register", mac, body='{"action":"register","client_id":"m"}')
    event["requestContext"]["domainName"] = "relay.example.com"

    assert gateway.invoke("register", event) == {"statusCode": 200}

    assert [url.split("/@connections/")[0] for url in urls] == ["http://127.0.0.1:9/local"]


# ---- with resumable sessions -------------------------------------------------------------


def test_a_kicked_address_stays_banned_and_a_lock_stays_after_the_mac_client_resumes(gateway: Gateway) -> None:
    """The Mac's Wi-Fi blips after a kick and a lock: neither may lapse with its connection."""
    mac = gateway.connect()
    (registered,) = gateway.message(mac, {"action": "register", "client_id": "m", "resumable": True})
    code, token = registered["code"], registered["resume_token"]
    browser = gateway.connect()
    (joined,) = auth(gateway, browser, code, KICKED_FROM)
    gateway.message(mac, {"action": "kick", "peer": joined["peer"]})

    gateway.disconnect(mac)  # away
    new_mac = gateway.connect()
    (resumed,) = gateway.message(new_mac, {"action": "resume", "token": token})
    assert resumed["type"] == MessageType.RESUMED

    assert auth(gateway, gateway.connect(), code, KICKED_FROM) == [protocol.error(ErrorCode.BANNED)]
    (elsewhere,) = auth(gateway, gateway.connect(), code, "192.0.2.71")
    assert elsewhere["type"] == MessageType.AUTHENTICATED

    assert gateway.message(new_mac, {"action": "lock"}) == [protocol.locked()]
    # A second resume, before any $disconnect of the first connection.
    (again,) = gateway.message(gateway.connect(), {"action": "resume", "token": resumed["resume_token"]})
    assert again["type"] == MessageType.RESUMED
    assert auth(gateway, gateway.connect(), code, "192.0.2.72") == [protocol.error(ErrorCode.INVALID_CODE)]
    assert auth(gateway, gateway.connect(), code, KICKED_FROM) == [protocol.error(ErrorCode.INVALID_CODE)]
