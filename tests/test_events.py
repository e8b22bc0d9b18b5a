"""The events/ fixtures are shaped like the events API Gateway really sends.

Each fixture is validated against the Powertools parser model of its event type (the
same models a handler would parse with), and cross-checked against template.yaml so
that every function has a fixture and each fixture would reach its function.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
    DynamoDBStreamModel,
    SqsModel,
)
from pydantic import BaseModel, ValidationError
from relay.grace_timer import absence_from_record
from relay.protocol import (
    AdmitRequest,
    AuthRequest,
    EndRequest,
    ErrorCode,
    KickRequest,
    LeaveRequest,
    ProtocolError,
    RegisterRequest,
    ResumeRequest,
    SendRequest,
    is_well_formed_code,
    normalise_code,
    parse_client_message,
)
from relay.resume_tokens import read as read_token
from relay.store.expiry import expired_session_from_record

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"
TEMPLATE = REPO / "template.yaml"

WEBSOCKET_MODELS: dict[str, type[BaseModel]] = {
    "connect": APIGatewayWebSocketConnectEventModel,
    "register": APIGatewayWebSocketMessageEventModel,
    "auth": APIGatewayWebSocketMessageEventModel,
    "send": APIGatewayWebSocketMessageEventModel,
    "kick": APIGatewayWebSocketMessageEventModel,
    "admit": APIGatewayWebSocketMessageEventModel,
    "lock": APIGatewayWebSocketMessageEventModel,
    "unlock": APIGatewayWebSocketMessageEventModel,
    "resume": APIGatewayWebSocketMessageEventModel,
    "end": APIGatewayWebSocketMessageEventModel,
    "leave": APIGatewayWebSocketMessageEventModel,
    "default": APIGatewayWebSocketMessageEventModel,
    "disconnect": APIGatewayWebSocketDisconnectEventModel,
}
ALL_FIXTURES = [*WEBSOCKET_MODELS, "debug", "expiry", "grace"]

# API Gateway connection ids are 12 random bytes, base64: 16 characters ending in '='.
CONNECTION_ID = re.compile(r"^[A-Za-z0-9+/]{15}=$")


class _TagIgnoringLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Reads template.yaml's structure; CloudFormation tags (!Ref, !Sub...) become plain values."""


def _construct_tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    assert isinstance(node, yaml.MappingNode)
    return loader.construct_mapping(node)


_TagIgnoringLoader.add_multi_constructor("!", _construct_tagged)


def load_event(name: str) -> dict[str, Any]:
    event = json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(event, dict)
    return event


def template_resources() -> dict[str, dict[str, Any]]:
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_TagIgnoringLoader)
    resources: dict[str, dict[str, Any]] = template["Resources"]
    return resources


def template_functions() -> dict[str, dict[str, Any]]:
    resources = template_resources()
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def websocket_routes() -> dict[str, str]:
    """Route key -> function logical id, from the template's WebSocket API."""
    api = template_resources()["RelayApi"]["Properties"]
    # `!GetAtt X.Arn` reads as "X.Arn" with tags ignored.
    return {key: spec["FunctionArn"].split(".")[0] for key, spec in api["Routes"].items()}


def fixture_name(function_properties: dict[str, Any]) -> str:
    """functions/<name>/ -> <name>: a function's fixture is events/<name>.json."""
    code_uri: str = function_properties["CodeUri"]
    return Path(code_uri).name


@pytest.mark.parametrize("name", list(WEBSOCKET_MODELS))
def test_websocket_fixture_matches_powertools_model(name: str) -> None:
    event = load_event(name)
    parsed = WEBSOCKET_MODELS[name].model_validate(event)
    context = parsed.request_context  # type: ignore[attr-defined]
    assert CONNECTION_ID.fullmatch(context.connection_id)
    assert context.api_id == "a1b2c3d4e5"
    assert context.domain_name == f"{context.api_id}.execute-api.us-east-1.amazonaws.com"
    assert context.stage == "prod"
    assert context.request_id == context.extended_request_id
    assert context.connected_at <= context.request_time_epoch
    assert parsed.is_base64_encoded is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["connect", "disconnect"])
def test_handshake_fixtures_carry_matching_multi_value_headers(name: str) -> None:
    event = load_event(name)
    assert event["headers"]["Host"] == event["requestContext"]["domainName"]
    assert event["multiValueHeaders"] == {key: [value] for key, value in event["headers"].items()}


def test_connect_fixture_has_the_upgrade_headers_a_browser_sends() -> None:
    headers = load_event("connect")["headers"]
    for header in ("Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "User-Agent", "X-Forwarded-For"):
        assert headers[header], header
    assert headers["Sec-WebSocket-Version"] == "13"


def test_disconnect_fixture_is_a_going_away_close() -> None:
    context = load_event("disconnect")["requestContext"]
    assert context["disconnectStatusCode"] == 1001
    assert context["disconnectReason"]


def test_message_fixtures_parse_as_their_protocol_requests() -> None:
    register = parse_client_message(load_event("register")["body"])
    assert register == RegisterRequest(client_id="mac-1")
    auth = parse_client_message(load_event("auth")["body"])
    assert isinstance(auth, AuthRequest)
    assert is_well_formed_code(normalise_code(auth.code))
    send = parse_client_message(load_event("send")["body"])
    assert send == SendRequest(data={"text": "hello"})
    assert parse_client_message(load_event("kick")["body"]) == KickRequest(peer="p1a2b3c4d")
    assert parse_client_message(load_event("admit")["body"]) == AdmitRequest(peer="p1a2b3c4d")
    resume = parse_client_message(load_event("resume")["body"])
    assert isinstance(resume, ResumeRequest)
    assert read_token(resume.token) is not None  # shaped like a real token (a mac-client's)
    assert parse_client_message(load_event("end")["body"]) == EndRequest()
    assert parse_client_message(load_event("leave")["body"]) == LeaveRequest()


def test_default_fixture_body_is_rejected_as_bad_request() -> None:
    with pytest.raises(ProtocolError) as rejected:
        parse_client_message(load_event("default")["body"])
    assert rejected.value.code is ErrorCode.BAD_REQUEST


def test_message_fixture_routes_match_route_selection() -> None:
    """API Gateway picks the route from body.action; $default when there is none."""
    for name in ("register", "auth", "send", "kick", "admit", "resume", "end", "leave", "default"):
        event = load_event(name)
        route_key = event["requestContext"]["routeKey"]
        try:
            action = json.loads(event["body"]).get("action")
        except ValueError:
            action = None
        assert route_key == (action if action is not None else "$default"), name


def test_debug_fixture_matches_http_api_v2_model() -> None:
    event = load_event("debug")
    parsed = APIGatewayProxyEventV2Model.model_validate(event)
    assert parsed.version == "2.0"
    assert parsed.routeKey == "GET /debug/sessions"
    assert parsed.rawPath == "/debug/sessions"
    assert parsed.requestContext.http.method == "GET"
    assert parsed.requestContext.http.path == parsed.rawPath
    assert parsed.requestContext.domainPrefix == parsed.requestContext.apiId


def test_expiry_fixture_is_a_ttl_removal_of_a_session() -> None:
    event = load_event("expiry")
    parsed = DynamoDBStreamModel.model_validate(event)
    [record] = parsed.Records
    assert record.eventName == "REMOVE"
    assert record.userIdentity is not None
    assert record.dynamodb.StreamViewType == "OLD_IMAGE"
    assert record.eventSourceARN.startswith("arn:aws:dynamodb:us-east-1:123456789012:table/")
    # What the expiry function does with it: a TTL-deleted session's code and mac-client.
    expired = expired_session_from_record(event["Records"][0])
    assert expired is not None
    assert is_well_formed_code(expired.code)
    assert CONNECTION_ID.fullmatch(expired.mac_connection_id)
    old_image = event["Records"][0]["dynamodb"]["OldImage"]
    assert expired.created_at < int(old_image["expires_at"]["N"])


def test_grace_fixture_is_an_sqs_batch_carrying_an_absence() -> None:
    event = load_event("grace")
    parsed = SqsModel.model_validate(event)
    [record] = parsed.Records
    assert record.eventSource == "aws:sqs"
    absence = absence_from_record(event["Records"][0])
    assert absence is not None
    assert is_well_formed_code(absence.code)
    assert CONNECTION_ID.fullmatch(absence.connection_id)


def test_models_reject_a_fixture_with_the_wrong_event_type() -> None:
    """Guards the validation above: the models are strict enough to tell events apart."""
    with pytest.raises(ValidationError):
        APIGatewayWebSocketConnectEventModel.model_validate(load_event("disconnect"))
    with pytest.raises(ValidationError):
        APIGatewayWebSocketDisconnectEventModel.model_validate(load_event("connect"))
    with pytest.raises(ValidationError):
        APIGatewayProxyEventV2Model.model_validate(load_event("register"))
    with pytest.raises(ValidationError):
        DynamoDBStreamModel.model_validate(load_event("debug"))


def test_every_function_in_the_template_has_a_fixture() -> None:
    names = sorted(fixture_name(props) for props in template_functions().values())
    assert names == sorted(ALL_FIXTURES)
    for name in names:
        assert (EVENTS / f"{name}.json").is_file(), name


def test_every_fixture_targets_the_function_it_is_named_after() -> None:
    functions = template_functions()
    by_fixture = {fixture_name(props): logical_id for logical_id, props in functions.items()}
    for route_key, function in websocket_routes().items():
        fixture_route = next(
            name for name in WEBSOCKET_MODELS if load_event(name)["requestContext"]["routeKey"] == route_key
        )
        assert by_fixture[fixture_route] == function, route_key
    debug_events = functions[by_fixture["debug"]]["Events"].values()
    http_routes = {
        f"{event['Properties']['Method'].upper()} {event['Properties']['Path']}"
        for event in debug_events
        if event["Type"] == "HttpApi"
    }
    assert load_event("debug")["routeKey"] in http_routes
    stream_events = functions[by_fixture["expiry"]]["Events"].values()
    assert [event["Type"] for event in stream_events] == ["DynamoDB"]
    assert {record["eventSource"] for record in load_event("expiry")["Records"]} == {"aws:dynamodb"}
    queue_events = functions[by_fixture["grace"]]["Events"].values()
    assert [event["Type"] for event in queue_events] == ["SQS"]
    assert {record["eventSource"] for record in load_event("grace")["Records"]} == {"aws:sqs"}
