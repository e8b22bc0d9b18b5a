"""Finding 7: a write that lands but whose response is lost (botocore retries it).

botocore itself puts a fresh ClientRequestToken on each TransactWriteItems call and
keeps it across its retries, so on DynamoDB a retried transaction was already applied
once; the tests that fail on the old relay are the ones where that does not help: a
single-item write (the failed-auth count) and a retry the token no longer covers
(it lapsed, or the store does not honour it, as moto and relay-local's do not).

Each test lets one of a handler's DynamoDB writes reach the table, then replaces its
response with a read timeout below botocore's retry loop (tests/support/lost_responses.py),
so the relay's own retry configuration sends the same request again. DynamoDB answers
a retried TransactWriteItems with the same ClientRequestToken as a success without
applying it again; moto does not, so the harness emulates it (documented there). The
relay derives the token from API Gateway's request id and the step, and, where a
retry still fails its condition (the token lapsed), re-reads and recognises its own
write.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff
from relay import protocol
from relay.protocol import ErrorCode, MessageType

from tests.support.aws import TABLE_NAME
from tests.support.harness import Gateway
from tests.support.invariants import assert_invariants, debug_count, read_table
from tests.support.lost_responses import IdempotentTransactions, LostResponses
from tests.support.messages import auth, join_resumable, register_resumable, resume

# Holders of resumable sessions go away here: their grace timers need the queue.
pytestmark = pytest.mark.usefixtures("grace_queue")

Message = dict[str, Any]
# The join's write (it binds the connection as a browser), whatever else auth writes.
JOIN = "REMOVE failed_auths"


@pytest.fixture
def idempotency(gateway: Gateway) -> IdempotentTransactions:
    emulation = IdempotentTransactions()
    emulation.install(boto3.DEFAULT_SESSION.events)
    return emulation


@pytest.fixture
def lost(gateway: Gateway, idempotency: IdempotentTransactions, monkeypatch: pytest.MonkeyPatch) -> LostResponses:
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    injector = LostResponses(lambda: gateway.current_function)
    injector.install(boto3.DEFAULT_SESSION.events)
    return injector


def registered(gateway: Gateway) -> tuple[str, str]:
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "mac-1"})
    return mac, reply["code"]


# ---- register --------------------------------------------------------------------------


def test_register_whose_response_is_lost_answers_registered_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    lost.lose("RegisterFunction", "TransactWriteItems")
    mac = gateway.connect()

    (reply,) = gateway.message(mac, {"action": "register", "client_id": "mac-1"})

    assert lost.lost == [("RegisterFunction", "TransactWriteItems")]
    assert reply["type"] == MessageType.REGISTERED
    assert idempotency.replayed == 1
    assert debug_count(gateway) == 1
    state = assert_invariants(gateway, dynamodb)
    assert list(state.sessions) == [reply["code"]]
    assert state.sessions[reply["code"]]["mac_connection_id"]["S"] == mac


def test_register_recognises_its_own_write_when_the_token_has_lapsed(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    idempotency.enabled = False  # the retry reaches the table and fails its condition
    lost.lose("RegisterFunction", "TransactWriteItems")
    mac = gateway.connect()

    (reply,) = gateway.message(mac, {"action": "register", "client_id": "mac-1"})

    assert lost.lost == [("RegisterFunction", "TransactWriteItems")]
    assert reply["type"] == MessageType.REGISTERED
    assert debug_count(gateway) == 1
    assert list(assert_invariants(gateway, dynamodb).sessions) == [reply["code"]]


# ---- auth ------------------------------------------------------------------------------


def test_auth_whose_join_response_is_lost_joins_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    mac, code = registered(gateway)
    browser = gateway.connect()
    lost.lose("AuthFunction", "TransactWriteItems", contains=JOIN)

    (reply,) = auth(gateway, browser, code)

    assert lost.lost == [("AuthFunction", "TransactWriteItems")]
    assert reply["type"] == MessageType.AUTHENTICATED
    assert [m["type"] for m in gateway.sent[mac]] == ["registered", "peer_joined"]
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions[code]["browser_count"]["N"] == "1"
    assert len(state.peers) == 1


def test_auth_recognises_its_own_join_when_the_token_has_lapsed(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    mac, code = registered(gateway)
    browser = gateway.connect()
    idempotency.enabled = False
    lost.lose("AuthFunction", "TransactWriteItems", contains=JOIN)

    (reply,) = auth(gateway, browser, code)

    assert lost.lost == [("AuthFunction", "TransactWriteItems")]
    assert reply["type"] == MessageType.AUTHENTICATED
    assert [m["type"] for m in gateway.sent[mac]] == ["registered", "peer_joined"]
    assert len(assert_invariants(gateway, dynamodb).peers) == 1


def test_a_claim_whose_response_is_lost_counts_once(
    gateway: Gateway, lost: LostResponses, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_AUTH_ATTEMPTS", "2")
    registered(gateway)
    guesser = gateway.connect()
    lost.lose("AuthFunction", contains="ADD failed_auths")  # whichever write counts the attempt

    # Counted twice, the first guess would already have closed the connection.
    assert auth(gateway, guesser, "ZZZZZZ") == [protocol.error(ErrorCode.INVALID_CODE)]
    assert len(lost.lost) == 1
    assert read_table(dynamodb).connections[guesser]["failed_auths"]["N"] == "1"
    assert auth(gateway, guesser, "ZZZZZZ") == [protocol.error(ErrorCode.TOO_MANY_ATTEMPTS)]


# ---- kick and admit --------------------------------------------------------------------


def test_kick_whose_response_is_lost_still_tells_the_browser_and_bans_it(
    gateway: Gateway, lost: LostResponses, dynamodb: Any
) -> None:
    mac, code = registered(gateway)
    browser, peer = gateway.join(code)
    lost.lose("KickFunction", "TransactWriteItems")

    assert gateway.message(mac, {"action": "kick", "peer": peer}) == [protocol.peer_left(peer)]

    assert lost.lost == [("KickFunction", "TransactWriteItems")]
    assert gateway.last(browser) == protocol.kicked()
    state = assert_invariants(gateway, dynamodb)
    assert state.peers == {}
    assert state.sessions[code]["browser_count"]["N"] == "0"
    assert auth(gateway, browser, code) == [protocol.error(ErrorCode.BANNED)]


def test_admit_whose_response_is_lost_lets_the_browser_in(gateway: Gateway, lost: LostResponses, dynamodb: Any) -> None:
    mac = gateway.connect()
    (reply,) = gateway.message(mac, {"action": "register", "client_id": "m", "approve": True})
    browser = gateway.connect()
    assert auth(gateway, browser, reply["code"]) == [protocol.pending()]
    peer = gateway.last(mac)["peer"]
    lost.lose("AdmitFunction", "TransactWriteItems")

    assert gateway.message(mac, {"action": "admit", "peer": peer}) == [protocol.peer_joined(peer)]

    assert lost.lost == [("AdmitFunction", "TransactWriteItems")]
    assert gateway.last(browser) == protocol.authenticated(reply["code"], peer)
    assert_invariants(gateway, dynamodb)


# ---- disconnect ------------------------------------------------------------------------


def test_a_browser_disconnect_whose_response_is_lost_still_tells_the_mac(
    gateway: Gateway, lost: LostResponses, dynamodb: Any
) -> None:
    mac, code = registered(gateway)
    browser, peer = gateway.join(code)
    lost.lose("DisconnectFunction", "TransactWriteItems")

    gateway.disconnect(browser)

    assert lost.lost == [("DisconnectFunction", "TransactWriteItems")]
    assert gateway.last(mac) == protocol.peer_left(peer)
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions[code]["browser_count"]["N"] == "0"


def test_a_mac_disconnect_whose_response_is_lost_still_closes_the_session(
    gateway: Gateway, lost: LostResponses, dynamodb: Any
) -> None:
    mac, code = registered(gateway)
    browser, _ = gateway.join(code)
    lost.lose("DisconnectFunction", "TransactWriteItems")

    gateway.disconnect(mac)

    assert lost.lost == [("DisconnectFunction", "TransactWriteItems")]
    assert gateway.last(browser) == protocol.session_closed()
    assert debug_count(gateway) == 0
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}


# ---- resumable sessions (issue 11's writes) ----------------------------------------------
# The resume's own transaction swaps the token hash; the claim before it is another.
RESUME_MAC = "mac_token_hash = :next"
RESUME_BROWSER = "token_hash = :next REMOVE away"


def address_attempts(dynamodb: Any) -> int:
    """Attempts the address windows hold (claimed, less those given back)."""
    items = dynamodb.scan(TableName=TABLE_NAME, ConsistentRead=True)["Items"]
    return sum(
        int(item.get("failures", {"N": "0"})["N"])
        for item in items
        if item["pk"]["S"].startswith("IP#") and item["sk"]["S"].startswith("W#")
    )


def of_type(gateway: Gateway, connection_id: str, message_type: MessageType) -> list[Message]:
    return [m for m in gateway.sent[connection_id] if m["type"] == message_type]


@pytest.mark.parametrize("lapsed", [False, True], ids=["token", "lapsed-token"])
def test_a_mac_resume_whose_response_is_lost_resumes_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any, lapsed: bool
) -> None:
    mac, code, token = register_resumable(gateway)
    browser, peer, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    assert gateway.message(browser, {"action": "send", "data": "held"}) == []
    attempts_before = address_attempts(dynamodb)
    idempotency.enabled = not lapsed  # lapsed: the retry reaches the table and fails its condition
    lost.lose("ResumeFunction", "TransactWriteItems", contains=RESUME_MAC)

    new_mac, replies = resume(gateway, token)

    assert lost.lost == [("ResumeFunction", "TransactWriteItems")]
    assert [m["type"] for m in replies] == [MessageType.RESUMED, MessageType.FRAME]
    assert replies[0]["peers"] == [{"peer": peer, "state": "present"}]
    assert replies[1]["data"] == "held"
    assert of_type(gateway, browser, MessageType.PEER_BACK) == [protocol.peer_back(protocol.MAC_PEER)]
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions[code]["mac_connection_id"]["S"] == new_mac
    assert "mac_away" not in state.sessions[code]
    assert address_attempts(dynamodb) == attempts_before  # claimed once, given back once
    # The new token works once; the old one is void.
    assert resume(gateway, token)[1] == [protocol.error(ErrorCode.INVALID_TOKEN)]
    _, again = resume(gateway, replies[0]["resume_token"])
    assert again[0]["type"] == MessageType.RESUMED


@pytest.mark.parametrize("lapsed", [False, True], ids=["token", "lapsed-token"])
def test_a_browser_resume_whose_response_is_lost_resumes_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any, lapsed: bool
) -> None:
    mac, code, _ = register_resumable(gateway)
    browser, peer, token = join_resumable(gateway, code)
    gateway.disconnect(browser)
    assert gateway.message(mac, {"action": "send", "to": peer, "data": "held"}) == []
    idempotency.enabled = not lapsed
    lost.lose("ResumeFunction", "TransactWriteItems", contains=RESUME_BROWSER)

    new_browser, replies = resume(gateway, token)

    assert lost.lost == [("ResumeFunction", "TransactWriteItems")]
    assert [m["type"] for m in replies] == [MessageType.RESUMED, MessageType.FRAME]
    assert replies[0]["peer"] == peer
    assert replies[1]["data"] == "held"
    assert of_type(gateway, mac, MessageType.PEER_BACK) == [protocol.peer_back(peer)]
    state = assert_invariants(gateway, dynamodb)
    assert state.peers[(code, peer)]["connection_id"]["S"] == new_browser
    assert state.sessions[code]["browser_count"]["N"] == "1"
    assert resume(gateway, token)[1] == [protocol.error(ErrorCode.INVALID_TOKEN)]


def test_marking_a_mac_client_away_whose_response_is_lost_tells_its_browsers_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    mac, code, token = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    lost.lose("DisconnectFunction", "TransactWriteItems", contains="SET mac_away")

    gateway.disconnect(mac)

    assert lost.lost == [("DisconnectFunction", "TransactWriteItems")]
    assert idempotency.replayed == 1
    assert of_type(gateway, browser, MessageType.PEER_AWAY) == [protocol.peer_away(protocol.MAC_PEER)]
    state = assert_invariants(gateway, dynamodb)
    assert "mac_away" in state.sessions[code]
    assert debug_count(gateway) == 1
    assert len(gateway.grace_timers) == 1
    _, replies = resume(gateway, token)
    assert replies[0]["type"] == MessageType.RESUMED


def test_a_held_frame_whose_response_is_lost_is_delivered_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    mac, code, token = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    lost.lose("SendFunction", "TransactWriteItems")

    assert gateway.message(browser, {"action": "send", "data": "held once"}) == []

    assert lost.lost == [("SendFunction", "TransactWriteItems")]
    assert idempotency.replayed == 1
    _, replies = resume(gateway, token)
    assert [m.get("data") for m in replies[1:]] == ["held once"]
    assert_invariants(gateway, dynamodb)


@pytest.mark.parametrize("resumable", [False, True], ids=["v1", "resumable"])
def test_end_whose_response_is_lost_ends_the_session_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any, resumable: bool
) -> None:
    mac, code = register_resumable(gateway)[:2] if resumable else registered(gateway)
    browser = join_resumable(gateway, code)[0] if resumable else gateway.join(code)[0]
    lost.lose("EndFunction", "TransactWriteItems")

    assert gateway.message(mac, {"action": "end"}) == [protocol.ended()]

    assert lost.lost == [("EndFunction", "TransactWriteItems")]
    assert idempotency.replayed == 1
    assert of_type(gateway, browser, MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert debug_count(gateway) == 0
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}
    assert auth(gateway, gateway.connect(), code) == [protocol.error(ErrorCode.INVALID_CODE)]


@pytest.mark.parametrize("resumable", [False, True], ids=["v1", "resumable"])
def test_leave_whose_response_is_lost_leaves_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any, resumable: bool
) -> None:
    mac, code = register_resumable(gateway)[:2] if resumable else registered(gateway)
    browser, peer = join_resumable(gateway, code)[:2] if resumable else gateway.join(code)
    other, _ = gateway.join(code)
    lost.lose("LeaveFunction", "TransactWriteItems")

    assert gateway.message(browser, {"action": "leave"}) == [protocol.left()]

    assert lost.lost == [("LeaveFunction", "TransactWriteItems")]
    assert idempotency.replayed == 1
    assert of_type(gateway, mac, MessageType.PEER_LEFT) == [protocol.peer_left(peer)]
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions[code]["browser_count"]["N"] == "1"
    assert (code, peer) not in state.peers
    assert browser not in state.connections
    assert gateway.message(other, {"action": "send", "data": "still here"}) == []
    assert gateway.last(mac)["data"] == "still here"


def test_grace_expiry_whose_response_is_lost_ends_the_session_once(
    gateway: Gateway, lost: LostResponses, idempotency: IdempotentTransactions, dynamodb: Any
) -> None:
    mac, code, _ = register_resumable(gateway)
    browser, _, _ = join_resumable(gateway, code)
    gateway.disconnect(mac)
    lost.lose("GraceFunction", "TransactWriteItems")

    assert gateway.fire_grace_timers() == {"batchItemFailures": []}

    assert lost.lost == [("GraceFunction", "TransactWriteItems")]
    assert idempotency.replayed == 1
    assert of_type(gateway, browser, MessageType.SESSION_CLOSED) == [protocol.session_closed()]
    assert debug_count(gateway) == 0
    state = assert_invariants(gateway, dynamodb)
    assert state.sessions == {}
    assert state.peers == {}
