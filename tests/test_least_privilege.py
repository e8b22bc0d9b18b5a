"""Each function's IAM policy grants exactly what its code calls: nothing missing, nothing spare.

A scenario drives every path of the relay (including the GoneException and
too-many-attempts paths) through the real handlers, while botocore hooks record each
DynamoDB and Management API operation with the function that made it. The template's
policies must cover every recorded operation (else the function fails on AWS) and
grant no other (least privilege).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import boto3
import pytest
from relay import protocol

from tests.support.harness import Gateway

# Holders of resumable sessions go away here: their grace timers need the queue.
pytestmark = pytest.mark.usefixtures("grace_queue")

TRANSACTION_PARTS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
MANAGEMENT_METHODS = {"PostToConnection": "POST", "DeleteConnection": "DELETE", "GetConnection": "GET"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted_permissions(template: dict[str, Any]) -> dict[str, set[str]]:
    """function -> {"dynamodb:GetItem", "execute-api:POST", ...} from its inline policies."""
    grants: dict[str, set[str]] = {}
    for function_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        permissions: set[str] = set()
        for policy in _as_list(resource["Properties"].get("Policies", [])):
            assert isinstance(policy, dict), f"{function_id}: only inline statements are used"
            for statement in _as_list(policy["Statement"]):
                for action in _as_list(statement["Action"]):
                    if action == "execute-api:ManageConnections":
                        for arn in _as_list(statement["Resource"]):
                            text = str(arn)
                            method = next(m for m in ("POST", "DELETE", "GET") if f"/{m}/@connections" in text)
                            permissions.add(f"execute-api:{method}")
                    else:
                        permissions.add(action)
        grants[function_id] = permissions
    return grants


@pytest.fixture
def recorded(gateway: Gateway) -> dict[str, set[str]]:
    used: dict[str, set[str]] = defaultdict(set)

    def record_dynamodb(model: Any, params: dict[str, Any], **_: Any) -> None:
        function = gateway.current_function or "test"
        if model.name == "TransactWriteItems":
            for part in params["TransactItems"]:
                used[function].add("dynamodb:" + TRANSACTION_PARTS[next(iter(part))])
        else:
            used[function].add("dynamodb:" + model.name)

    def record_management(model: Any, **_: Any) -> None:
        used[gateway.current_function or "test"].add("execute-api:" + MANAGEMENT_METHODS[model.name])

    assert boto3.DEFAULT_SESSION is not None
    # provide-client-params sees the operation's parameters before serialisation.
    boto3.DEFAULT_SESSION.events.register("provide-client-params.dynamodb.*", record_dynamodb)
    boto3.DEFAULT_SESSION.events.register("provide-client-params.apigatewaymanagementapi.*", record_management)

    def record_sqs(model: Any, **_: Any) -> None:
        used[gateway.current_function or "test"].add("sqs:" + model.name)

    boto3.DEFAULT_SESSION.events.register("provide-client-params.sqs.*", record_sqs)
    return used


def exercise_every_path(gw: Gateway) -> None:
    gw.connect()
    stranger = gw.connect()
    gw.message(stranger, "not json")
    gw.message(stranger, {"action": "ping"})
    gw.message(stranger, {"action": "send", "data": 1})  # not_bound
    for _ in range(protocol.DEFAULT_MAX_AUTH_ATTEMPTS):
        gw.message(stranger, {"action": "auth", "code": "ZZZZZZ"})  # ends in too_many_attempts + close
    gw.disconnect(stranger)

    mac, code = gw.register()
    gw.message(mac, {"action": "register", "client_id": "again"})  # already_bound
    browser, peer = gw.join(code)
    other, other_peer = gw.join(code)
    gw.message(browser, {"action": "send", "data": "to mac"})
    gw.message(mac, {"action": "send", "data": "to all"})
    gw.message(mac, {"action": "send", "to": peer, "data": "to one"})
    gw.message(mac, {"action": "send", "to": "nobody", "data": 1})
    gw.vanished.add(other)
    gw.message(mac, {"action": "send", "to": other_peer, "data": "to a vanished browser"})
    gw.disconnect(browser)
    gw.debug_sessions()
    gw.disconnect(mac)

    # A mac-client that vanished: found by a browser's send, by a browser joining,
    # and by its own registration reply.
    mac2, code2 = gw.register()
    browser2, _ = gw.join(code2)
    gw.vanished.add(mac2)
    gw.message(browser2, {"action": "send", "data": "anyone?"})
    mac3, code3 = gw.register()
    gw.vanished.add(mac3)
    gw.message(gw.connect(), {"action": "auth", "code": code3})
    ghost = gw.connect()
    gw.vanished.add(ghost)
    gw.message(ghost, {"action": "register", "client_id": "ghost"})
    gw.disconnect(browser2)

    # Admission control: approval mode, admit, kick, and callers who may not.
    mac4 = gw.connect()
    (registered,) = gw.message(mac4, {"action": "register", "client_id": "strict", "approve": True})
    waiting = gw.connect()
    gw.message(waiting, {"action": "auth", "code": registered["code"]})
    gw.message(waiting, {"action": "send", "data": "let me in"})  # not_admitted
    waiting_peer = next(m["peer"] for m in gw.sent[mac4] if m["type"] == "join_request")
    gw.message(waiting, {"action": "kick", "peer": waiting_peer})  # not_mac
    gw.message(mac4, {"action": "admit", "peer": "nobody"})  # unknown_peer
    gw.vanished.add(waiting)
    gw.message(mac4, {"action": "admit", "peer": waiting_peer})  # gone while waiting
    latecomer = gw.connect()
    gw.message(latecomer, {"action": "auth", "code": registered["code"]})
    late_peer = next(m["peer"] for m in reversed(gw.sent[mac4]) if m["type"] == "join_request")
    gw.message(mac4, {"action": "admit", "peer": late_peer})
    gw.message(mac4, {"action": "kick", "peer": late_peer})
    gw.message(gw.connect(), {"action": "admit", "peer": late_peer})  # not_bound
    gw.message(mac4, {"action": "lock"})
    gw.message(gw.connect(), {"action": "auth", "code": registered["code"]})  # locked: invalid_code
    gw.message(mac4, {"action": "unlock"})
    gw.message(gw.connect(), {"action": "lock"})  # not_bound

    # The mac-client closes right after admitting a browser that has gone too.
    mac6 = gw.connect()
    (strict,) = gw.message(mac6, {"action": "register", "client_id": "brief", "approve": True})
    leaver = gw.connect()
    gw.message(leaver, {"action": "auth", "code": strict["code"]})
    leaver_peer = next(m["peer"] for m in gw.sent[mac6] if m["type"] == "join_request")
    gw.vanished.update({leaver, mac6})
    gw.message(mac6, {"action": "admit", "peer": leaver_peer})

    # A session whose $disconnect never came, removed by TTL.
    _, code5 = gw.register()
    gw.join(code5)
    gw.expire(code5)
    # One whose browser's place TTL removed before the session item.
    _, code7 = gw.register()
    _, peer7 = gw.join(code7)
    gw.expire_place_first(code7, peer7)
    gw.expire(code7)

    exercise_resumable_sessions(gw)


def resumable(gw: Gateway, approve: bool = False) -> tuple[str, str, str]:
    mac = gw.connect()
    (reply,) = gw.message(mac, {"action": "register", "client_id": "r", "resumable": True, "approve": approve})
    return mac, reply["code"], reply["resume_token"]


def exercise_resumable_sessions(gw: Gateway) -> None:
    """Away, held frames, resume (and its refusals), goodbyes and the grace timer."""
    mac, code, mac_token = resumable(gw)
    browser = gw.connect()
    (joined,) = gw.message(browser, {"action": "auth", "code": code})
    peer, browser_token = joined["peer"], joined["resume_token"]
    gw.disconnect(mac)  # the mac-client away
    gw.message(browser, {"action": "send", "data": "held"})
    gw.message(gw.connect(), {"action": "auth", "code": code})  # joins while the mac-client is away
    mac = gw.connect()
    (back,) = gw.message(mac, {"action": "resume", "token": mac_token})[:1]
    mac_token = back["resume_token"]
    gw.message(mac, {"action": "resume", "token": mac_token})  # already_bound
    gw.message(gw.connect(), {"action": "resume", "token": "nonsense"})  # invalid_token
    gw.vanished.add(browser)  # found away by a post
    gw.message(mac, {"action": "send", "data": "to an away browser"})
    gw.message(mac, {"action": "send", "to": peer, "data": "held too"})
    browser = gw.connect()
    (back,) = gw.message(browser, {"action": "resume", "token": browser_token})[:1]
    gw.vanished.add(mac)  # no $disconnect: found by the browser's post
    gw.message(browser, {"action": "send", "data": "mac gone?"})
    gw.message(browser, {"action": "leave"})  # the mac-client away: it learns from resumed
    gw.fire_grace_timers()  # the mac-client's session ends
    # An away browser expires; a browser leaves; the mac-client ends.
    mac, code, _ = resumable(gw, approve=True)
    waiting = gw.connect()
    gw.message(waiting, {"action": "auth", "code": code})
    waiting_peer = gw.last(mac)["peer"]
    gw.disconnect(waiting)
    gw.message(mac, {"action": "admit", "peer": waiting_peer})  # held for the away browser
    vanishing = gw.connect()
    gw.message(vanishing, {"action": "auth", "code": code})
    vanishing_peer = gw.last(mac)["peer"]
    gw.vanished.add(vanishing)
    gw.message(mac, {"action": "admit", "peer": vanishing_peer})  # found away by the admission
    gw.fire_grace_timers()
    stayer = gw.connect()
    gw.message(stayer, {"action": "auth", "code": code})
    gw.message(mac, {"action": "admit", "peer": gw.last(mac)["peer"]})
    leaver = gw.connect()
    gw.message(leaver, {"action": "auth", "code": code})
    gw.message(leaver, {"action": "leave"})
    gw.message(mac, {"action": "end"})
    # Mac-clients found gone (no $disconnect yet) by a join, a leave, a grace expiry and
    # their own resumed reply; an old connection superseded by a resume.
    mac, code, mac_token = resumable(gw)
    leaver = gw.connect()
    gw.message(leaver, {"action": "auth", "code": code})
    expiring = gw.connect()
    gw.message(expiring, {"action": "auth", "code": code})
    gw.disconnect(expiring)
    gw.vanished.add(mac)
    gw.message(gw.connect(), {"action": "auth", "code": code})
    mac = gw.connect()
    (back,) = gw.message(mac, {"action": "resume", "token": mac_token})[:1]
    gw.vanished.add(mac)
    gw.message(leaver, {"action": "leave"})
    gw.fire_grace_timers()
    mac, _, mac_token = resumable(gw)
    gw.message(gw.connect(), {"action": "resume", "token": mac_token})  # superseded: closed
    vanishing = gw.connect()
    gw.vanished.add(vanishing)
    mac, _, mac_token = resumable(gw)
    gw.disconnect(mac)
    gw.message(vanishing, {"action": "resume", "token": mac_token})
    gw.fire_grace_timers()
    # A browser's grace expires while its mac-client has gone unnoticed.
    mac, code, _ = resumable(gw)
    expiring = gw.connect()
    gw.message(expiring, {"action": "auth", "code": code})
    gw.disconnect(expiring)
    gw.vanished.add(mac)
    gw.fire_grace_timers()


def test_each_function_is_granted_exactly_what_it_uses(gateway: Gateway, recorded: dict[str, set[str]]) -> None:
    exercise_every_path(gateway)
    granted = granted_permissions(gateway.template)
    functions = (
        set(gateway.routes.values())
        | {gateway.debug_function}
        | set(gateway.stream_functions)
        | set(gateway.queue_functions)
    )
    assert functions <= set(granted)
    problems = []
    for function in sorted(functions):
        used = recorded.get(function, set())
        if not used <= granted[function]:
            problems.append(f"{function} calls what it may not: {sorted(used - granted[function])}")
        if not granted[function] <= used:
            problems.append(f"{function} is granted what it never uses: {sorted(granted[function] - used)}")
    assert not problems, "\n".join(problems)
    assert not any("dynamodb:Scan" in ops for ops in recorded.values())
