"""Drive the real handlers the way API Gateway would, wired by template.yaml.

`Gateway` plays API Gateway for in-process tests: it reads the template's
WebSocket routes, loads each function's handler from its CodeUri, turns client
messages into events cloned from the events/ fixtures, selects routes with the
template's RouteSelectionExpression, and observes the Management API calls the
handlers make (botocore's `before-call` hook: each post is recorded, then moto
handles it, unless the test has made that connection vanish, in which case the call
answers 410 GoneException, as API Gateway does for a closed connection).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import os
import sys
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import botocore.awsrequest

from tests.support.aws import boto3_session, reset_relay_caches
from tests.support.files import ROOT, load_event, load_template
from tests.support.stream_records import ttl_removal_record


def _function_id(route: dict[str, Any]) -> str:
    arn = route["FunctionArn"]
    # !GetAtt X.Arn parses to {"Fn::GetAtt": ["X", "Arn"]} (or "X.Arn").
    target = arn["Fn::GetAtt"]
    return str(target[0] if isinstance(target, list) else target.split(".")[0]).strip()


def load_handler(template: dict[str, Any], function_id: str) -> Any:
    """Import the function's handler from its CodeUri, under a name of its own."""
    properties = template["Resources"][function_id]["Properties"]
    module_name, handler_name = properties["Handler"].rsplit(".", 1)
    path = ROOT / properties["CodeUri"] / f"{module_name.replace('.', '/')}.py"
    spec = importlib.util.spec_from_file_location(f"functions_{function_id}", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, handler_name)


_REQUEST_IDS = itertools.count(1)


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@dataclass
class Gateway:
    template: dict[str, Any] = field(default_factory=load_template)
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    closed_by_relay: list[str] = field(default_factory=list)
    vanished: set[str] = field(default_factory=set)
    post_calls: int = 0
    # What the relay sent to the grace queue (SendMessage parameters), not yet fired.
    grace_timers: list[dict[str, Any]] = field(default_factory=list)
    current_function: str | None = None  # the function being invoked, for per-function accounting
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # API Gateway's request ids are unique, and the relay's ClientRequestTokens derive
    # from them: unique across the run, since a DynamoDB (moto server) may outlive a test.
    _request_ids: itertools.count[int] = field(default_factory=lambda: _REQUEST_IDS)

    def __post_init__(self) -> None:
        api = next(
            r["Properties"] for r in self.template["Resources"].values() if r["Type"] == "AWS::Serverless::WebSocketApi"
        )
        self.route_selection = api["RouteSelectionExpression"]
        self.routes = {key: _function_id(route) for key, route in api["Routes"].items()}
        self.handlers = {key: load_handler(self.template, fid) for key, fid in self.routes.items()}
        debug_id = next(
            fid
            for fid, r in self.template["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"
            and any(e.get("Type") == "HttpApi" for e in r["Properties"].get("Events", {}).values())
        )
        self.debug_function = debug_id
        self.debug_handler = load_handler(self.template, debug_id)
        self.queue_functions = {
            fid: load_handler(self.template, fid)
            for fid, r in self.template["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"
            and any(e.get("Type") == "SQS" for e in r["Properties"].get("Events", {}).values())
        }
        self.stream_functions = {
            fid: load_handler(self.template, fid)
            for fid, r in self.template["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"
            and any(e.get("Type") == "DynamoDB" for e in r["Properties"].get("Events", {}).values())
        }

    # ---- observing the Management API -----------------------------------------

    def observe(self, events: Any) -> None:
        """Hook a botocore event emitter (a session's: clients created later copy it)."""
        events.register("before-call.apigatewaymanagementapi.*", self._before_call)
        events.register("before-call.sqs.SendMessage", self._before_send_message)

    def _before_send_message(self, params: dict[str, Any], **_: Any) -> None:
        body = params["body"]
        self.grace_timers.append(dict(body) if isinstance(body, dict) else json.loads(body or b"{}"))

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        connection_id = urllib.parse.unquote(params["url_path"].rsplit("/", 1)[-1])
        if model.name == "PostToConnection":
            self.post_calls += 1
        if connection_id in self.vanished:
            return self._gone()
        if model.name == "PostToConnection":
            self.sent[connection_id].append(json.loads(params["body"]))
        elif model.name == "DeleteConnection":
            self.closed_by_relay.append(connection_id)
        return None

    @staticmethod
    def _gone() -> Any:
        response = botocore.awsrequest.AWSResponse("https://example/", 410, {}, None)
        return response, {
            "Error": {"Code": "GoneException", "Message": "Gone"},
            "ResponseMetadata": {"HTTPStatusCode": 410},
        }

    # ---- playing API Gateway ---------------------------------------------------

    def new_connection_id(self) -> str:
        return f"conn{next(self._ids):04d}AAAAAAA="

    def _event(self, fixture: str, connection_id: str, **overrides: Any) -> dict[str, Any]:
        event = copy.deepcopy(load_event(fixture))
        event["requestContext"]["connectionId"] = connection_id
        # API Gateway gives every invocation its own request id (idempotent writes key on it).
        event["requestContext"]["requestId"] = f"req{next(self._request_ids):06d}="
        event["requestContext"].update(overrides.pop("requestContext", {}))
        event.update(overrides)
        return event

    def invoke(self, route_key: str, event: dict[str, Any]) -> Any:
        handler = self.handlers[route_key]
        self.current_function = self.routes[route_key]
        try:
            return handler(event, LambdaContext(function_name=self.routes[route_key]))
        finally:
            self.current_function = None

    def connect(self) -> str:
        connection_id, status = self.try_connect()
        assert status == 200
        return connection_id

    def try_connect(self, headers: dict[str, str] | None = None) -> tuple[str, int]:
        """Run $connect with the fixture's headers, minus Origin, plus `headers`."""
        connection_id = self.new_connection_id()
        event = self._event("connect", connection_id)
        for name in list(event["headers"]):
            if name.lower() == "origin":
                del event["headers"][name]
                event["multiValueHeaders"].pop(name, None)
        for name, value in (headers or {}).items():
            event["headers"][name] = value
            event["multiValueHeaders"][name] = [value]
        return connection_id, int(self.invoke("$connect", event)["statusCode"])

    def select_route(self, body: str) -> str:
        assert self.route_selection == "$request.body.action"
        try:
            action = json.loads(body).get("action")
        except (ValueError, AttributeError, RecursionError):
            return "$default"
        return action if isinstance(action, str) and action in self.routes else "$default"

    def message(
        self, connection_id: str, body: str | dict[str, Any], source_ip: str | None = None
    ) -> list[dict[str, Any]]:
        """Send a client message; returns what this connection received because of it."""
        text = body if isinstance(body, str) else json.dumps(body)
        route = self.select_route(text)
        fixture = {"register": "register", "auth": "auth", "send": "send"}.get(route, "default")
        before = len(self.sent[connection_id])
        event = self._event(fixture, connection_id, body=text, requestContext={"routeKey": route})
        if source_ip is not None:
            event["requestContext"]["identity"]["sourceIp"] = source_ip
        result = self.invoke(route, event)
        assert result == {"statusCode": 200}, result
        return self.sent[connection_id][before:]

    def disconnect(self, connection_id: str, status: int = 1001) -> None:
        self.vanished.add(connection_id)
        event = self._event("disconnect", connection_id)
        event["requestContext"]["disconnectStatusCode"] = status
        assert self.invoke("$disconnect", event) == {"statusCode": 200}

    def debug_sessions(self) -> dict[str, Any]:
        self.current_function = self.debug_function
        try:
            return self.debug_handler(load_event("debug"), LambdaContext(function_name=self.debug_function))  # type: ignore[no-any-return]
        finally:
            self.current_function = None

    def expire(self, code: str) -> dict[str, Any]:
        """Play DynamoDB's TTL: delete the session item and deliver the stream record."""
        import boto3  # noqa: PLC0415

        client = boto3.client("dynamodb")
        table = os.environ["TABLE_NAME"]
        key = {"pk": {"S": f"S#{code}"}, "sk": {"S": "#META"}}
        old = client.get_item(TableName=table, Key=key)["Item"]
        client.delete_item(TableName=table, Key=key)
        return self.deliver_stream_records([ttl_removal_record(table, old)])

    def expire_place_first(self, code: str, peer: str) -> dict[str, Any]:
        """Play DynamoDB's TTL once the session is past its expiry, deleting a browser's
        place before the session item (TTL keeps no order); deliver that record."""
        import boto3  # noqa: PLC0415

        client = boto3.client("dynamodb")
        table = os.environ["TABLE_NAME"]
        client.update_item(
            TableName=table,
            Key={"pk": {"S": f"S#{code}"}, "sk": {"S": "#META"}},
            UpdateExpression="SET expires_at = :past",
            ExpressionAttributeValues={":past": {"N": "1"}},
        )
        key = {"pk": {"S": f"S#{code}"}, "sk": {"S": f"P#{peer}"}}
        old = client.get_item(TableName=table, Key=key)["Item"]
        client.delete_item(TableName=table, Key=key)
        return self.deliver_stream_records([ttl_removal_record(table, old)])

    def deliver_stream_records(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        ((function_id, handler),) = self.stream_functions.items()
        self.current_function = function_id
        try:
            return handler({"Records": records}, LambdaContext(function_name=function_id))  # type: ignore[no-any-return]
        finally:
            self.current_function = None

    def fire_grace_timers(self) -> dict[str, Any]:
        """Play SQS after the delay: deliver every timer started so far to the grace
        function, in one batch shaped as Lambda's SQS event source sends it."""
        sent, self.grace_timers = self.grace_timers, []
        records = [
            {
                "messageId": f"00000000-0000-4000-8000-{index:012d}",
                "receiptHandle": f"handle-{index}",
                "body": message["MessageBody"],
                "attributes": {"ApproximateReceiveCount": "1", "DelaySeconds": str(message.get("DelaySeconds", 0))},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:relay-grace-test",
                "awsRegion": "us-east-1",
            }
            for index, message in enumerate(sent)
        ]
        ((function_id, handler),) = self.queue_functions.items()
        self.current_function = function_id
        try:
            return handler({"Records": records}, LambdaContext(function_name=function_id))  # type: ignore[no-any-return]
        finally:
            self.current_function = None

    # ---- conveniences ----------------------------------------------------------

    def register(self, client_id: str = "mac-1") -> tuple[str, str]:
        mac = self.connect()
        (reply,) = self.message(mac, {"action": "register", "client_id": client_id})
        assert reply["type"] == "registered", reply
        return mac, reply["code"]

    def join(self, code: str) -> tuple[str, str]:
        browser = self.connect()
        (reply,) = self.message(browser, {"action": "auth", "code": code})
        assert reply["type"] == "authenticated", reply
        return browser, reply["peer"]

    def last(self, connection_id: str) -> dict[str, Any]:
        return self.sent[connection_id][-1]


@contextmanager
def observed_gateway() -> Iterator[Gateway]:
    """A Gateway whose handlers start cold (fresh clients) and whose posts are observed."""
    reset_relay_caches()
    boto3.DEFAULT_SESSION = boto3_session()
    gw = Gateway()
    gw.observe(boto3.DEFAULT_SESSION.events)
    try:
        yield gw
    finally:
        reset_relay_caches()
        boto3.DEFAULT_SESSION = None
