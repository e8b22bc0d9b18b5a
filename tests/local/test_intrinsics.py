"""Ref and GetAtt give CloudFormation's values; what relay-local must invent, it names once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from relay_local.cfn_yaml import TemplateError, load_template_document
from relay_local.intrinsics import Resolver, local_api_id
from relay_local.template import load_template

from tests.support.relay_local import FIXTURES

RESOURCES = """\
Parameters:
  Stage: {Type: String, Default: beta}
Resources:
  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.a}}
  Stage: {Type: AWS::ApiGatewayV2::Stage, Properties: {ApiId: !Ref Api, StageName: !Ref Stage}}
  Fn: {Type: AWS::Serverless::Function, Properties: {FunctionName: fn-name}}
  Table: {Type: AWS::DynamoDB::Table, Properties: {TableName: tbl}}
  Queue: {Type: AWS::SQS::Queue, Properties: {QueueName: jobs}}
  Topic: {Type: AWS::SNS::Topic}
  Role: {Type: AWS::IAM::Role, Properties: {RoleName: the-role}}
  Layer: {Type: AWS::Serverless::LayerVersion, Properties: {LayerName: lib}}
  Bucket: {Type: AWS::S3::Bucket}
"""


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    path = tmp_path / "t.yaml"
    path.write_text(RESOURCES)
    return Resolver(
        load_template_document(path),
        stack_name="stk",
        region="eu-west-1",
        parameter_overrides={},
        api_endpoint="ws://127.0.0.1:4001",
    )


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ({"Ref": "Api"}, local_api_id("Api")),
        ({"Fn::GetAtt": ["Api", "ApiEndpoint"]}, "ws://127.0.0.1:4001"),
        ({"Fn::GetAtt": ["Api", "ApiId"]}, local_api_id("Api")),
        ({"Ref": "Stage"}, "beta"),
        ({"Ref": "Fn"}, "fn-name"),
        ({"Fn::GetAtt": ["Fn", "Arn"]}, "arn:aws:lambda:eu-west-1:123456789012:function:fn-name"),
        ({"Ref": "Table"}, "tbl"),
        ({"Fn::GetAtt": ["Table", "Arn"]}, "arn:aws:dynamodb:eu-west-1:123456789012:table/tbl"),
        (
            {"Fn::GetAtt": ["Table", "StreamArn"]},
            "arn:aws:dynamodb:eu-west-1:123456789012:table/tbl/stream/1970-01-01T00:00:00.000",
        ),
        ({"Ref": "Queue"}, "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"),
        ({"Fn::GetAtt": ["Queue", "Arn"]}, "arn:aws:sqs:eu-west-1:123456789012:jobs"),
        ({"Ref": "Topic"}, "arn:aws:sns:eu-west-1:123456789012:stk-Topic"),
        ({"Ref": "Role"}, "the-role"),
        ({"Fn::GetAtt": ["Role", "Arn"]}, "arn:aws:iam::123456789012:role/the-role"),
        ({"Ref": "Layer"}, "arn:aws:lambda:eu-west-1:123456789012:layer:lib:1"),
        ({"Fn::Join": ["/", ["a", {"Fn::Select": [1, {"Fn::Split": [",", "x,y"]}]}]]}, "a/y"),
        ({"Fn::If": ["Never", "a", "b"]}, None),
        ({"Fn::And": [{"Fn::Equals": ["a", "a"]}, {"Fn::Not": [{"Fn::Or": [False, False]}]}]}, True),
    ],
)
def test_real_values(resolver: Resolver, expression: dict[str, object], value: object) -> None:
    if value is None:
        with pytest.raises(TemplateError, match="Condition Never is not defined"):
            resolver.resolve(expression)
        return
    assert resolver.resolve(expression) == value
    assert resolver.warnings == []


def test_each_invented_value_is_named_once(resolver: Resolver) -> None:
    for _ in range(3):
        resolver.resolve({"Ref": "Bucket"})
        resolver.resolve({"Fn::GetAtt": ["Bucket", "DomainName"]})
        resolver.resolve({"Fn::ImportValue": "shared-vpc"})
    assert len(resolver.warnings) == 3
    assert "!Ref Bucket (AWS::S3::Bucket)" in resolver.warnings[0]
    assert "!GetAtt Bucket.DomainName" in resolver.warnings[1]
    assert "!ImportValue shared-vpc" in resolver.warnings[2]


def test_plain_apigatewayv2_fixtures_are_modelled() -> None:
    chat = load_template(FIXTURES / "chat_plain" / "template.yaml")
    assert chat.websocket_api is not None
    assert chat.websocket_api.stage == "dev"
    assert {key: route.function_id for key, route in chat.websocket_api.routes.items()} == {
        "$connect": "OnConnectFunction",
        "$disconnect": "OnDisconnectFunction",
        "sendmessage": "SendMessageFunction",
    }
    assert chat.warnings == []
    assert chat.unsupported == []
    single = load_template(FIXTURES / "single_function" / "template.yaml")
    assert single.websocket_api is not None
    assert {route.function_id for route in single.websocket_api.routes.values()} == {"Handler"}
    assert single.websocket_api.routes["$default"].route_response_selection_expression == "$default"


def test_plain_authorizer_and_unsupported_features(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    path = tmp_path / "template.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            Resources:
              Api:
                Type: AWS::ApiGatewayV2::Api
                Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.a,
                             ApiKeySelectionExpression: $request.header.x-api-key}
              Auth:
                Type: AWS::ApiGatewayV2::Authorizer
                Properties:
                  ApiId: !Ref Api
                  AuthorizerType: REQUEST
                  IdentitySource: [route.request.header.Authorization]
                  AuthorizerUri: !Sub
                    - arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${F}/invocations
                    - {F: !GetAtt Fn.Arn}
              Integration:
                Type: AWS::ApiGatewayV2::Integration
                Properties: {ApiId: !Ref Api, IntegrationType: AWS_PROXY, IntegrationUri: !GetAtt Fn.Arn}
              Connect:
                Type: AWS::ApiGatewayV2::Route
                Properties: {ApiId: !Ref Api, RouteKey: $connect, AuthorizationType: CUSTOM,
                             AuthorizerId: !Ref Auth, Target: !Sub "integrations/${Integration}"}
              Send:
                Type: AWS::ApiGatewayV2::Route
                Properties: {ApiId: !Ref Api, RouteKey: send, AuthorizationType: AWS_IAM,
                             Target: !Sub "integrations/${Integration}"}
              Fn:
                Type: AWS::Serverless::Function
                Properties: {CodeUri: code/, Handler: app.handler, Runtime: python3.13,
                             VpcConfig: {SubnetIds: [s], SecurityGroupIds: [g]}}
            """
        )
    )
    template = load_template(path)
    assert template.websocket_api is not None
    authorizer = template.websocket_api.routes["$connect"].authorizer
    assert authorizer is not None
    assert (authorizer.function_id, authorizer.identity_sources) == ("Fn", ("route.request.header.Authorization",))
    assert template.websocket_api.stage == "default"
    listed = "\n".join(template.unsupported)
    assert "ApiKeySelectionExpression" in listed
    assert "IAM authorization on send" in listed
    assert "VpcConfig" in listed


def test_reserved_environment_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      CodeUri: code/\n      Handler: app.handler\n"
        "      Environment: {Variables: {AWS_REGION: eu-west-1, OK: x}}\n"
    )
    with pytest.raises(TemplateError, match="AWS_REGION are reserved by Lambda"):
        load_template(path)


def test_an_integration_uri_naming_no_function_of_the_template_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, "
        "RouteSelectionExpression: $request.body.a}}\n"
        "  I: {Type: AWS::ApiGatewayV2::Integration, Properties: {ApiId: !Ref Api, "
        "IntegrationUri: 'arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
        "arn:aws:lambda:us-east-1:1:function:elsewhere/invocations'}}\n"
    )
    with pytest.raises(TemplateError, match="does not name a function of this template"):
        load_template(path)
