"""How relay-local reads SAM templates: short-form tags, intrinsics, Globals, parameters."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from relay_local.apigateway import RouteSelector
from relay_local.template import (
    TemplateError,
    WebSocketApi,
    WebSocketRoute,
    load_template,
    merge_globals,
)

from tests.support.files import ROOT
from tests.support.relay_local import FIXTURES

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
    AllowedPattern: "^[a-z]+$"
  Size:
    Type: Number
    Default: 3
    MinValue: 1
    MaxValue: 10
  Colour:
    Type: String
    Default: red
    AllowedValues: [red, blue]
Mappings:
  Sizes:
    small: {Bytes: "1024"}
Conditions:
  IsDev: !Equals [!Ref Stage, dev]
  NotDev: !Not [!Condition IsDev]
Globals:
  Function:
    Runtime: python3.11
    Timeout: 7
    Layers: [!Ref Shared]
    Environment:
      Variables:
        FROM_GLOBALS: g
        OVERRIDDEN: global
Resources:
  Api:
    Type: AWS::Serverless::WebSocketApi
    Properties:
      RouteSelectionExpression: $request.body.kind
      StageName: !Ref Stage
      Routes:
        $default: {FunctionArn: !GetAtt Fn.Arn}
        hello:
          FunctionArn: !Sub "${Fn.Arn}"
          RouteResponseSelectionExpression: $default
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: shared/}
    Metadata: {BuildMethod: python3.11}
  Prebuilt:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: prebuilt/}
  Named:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-named-${Stage}"
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
  Unnamed:
    Type: AWS::Serverless::SimpleTable
    Properties:
      PrimaryKey: {Name: key, Type: Number}
  OnlyOutsideDev:
    Type: AWS::DynamoDB::Table
    Condition: NotDev
    Properties:
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: pkg/app.main
      Timeout: 2
      Layers: [!Ref Prebuilt]
      Environment:
        Variables:
          OVERRIDDEN: own
          TABLE: !Ref Named
          TABLE_ARN: !GetAtt Unnamed.Arn
          JOINED: !Join ["-", [a, !Ref Size, !Select [1, !Split [",", "x,y,z"]]]]
          PICKED: !If [IsDev, dev-value, other-value]
          MAPPED: !FindInMap [Sizes, small, Bytes]
          REGION: !Sub "${AWS::Region}/${AWS::AccountId}/${!Literal}"
          FLAG: true
          GONE: !Ref AWS::NoValue
      Events:
        Get:
          Type: HttpApi
          Properties: {Path: "/things/{id}", Method: get}
        Queue:
          Type: SQS
          Properties: {Queue: arn:aws:sqs:us-east-1:123456789012:q}
"""


@pytest.fixture
def template_path(tmp_path: Path) -> Path:
    for folder in ("code/pkg", "shared", "prebuilt/python"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "code" / "pkg" / "app.py").write_text("def main(event, context):\n    return None\n")
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


def test_intrinsics_resolve_to_local_values(template_path: Path) -> None:
    template = load_template(template_path, stack_name="stk", region="eu-west-1")
    function = template.functions["Fn"]
    assert function.environment == {
        "FROM_GLOBALS": "g",
        "OVERRIDDEN": "own",
        "TABLE": "stk-named-dev",
        "TABLE_ARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/stk-Unnamed",
        "JOINED": "a-3-y",
        "PICKED": "dev-value",
        "MAPPED": "1024",
        "REGION": "eu-west-1/123456789012/${Literal}",
        "FLAG": "true",
    }
    assert function.name == "stk-Fn"
    assert template.function_arn(function) == "arn:aws:lambda:eu-west-1:123456789012:function:stk-Fn"


def test_globals_merge_as_sam_does(template_path: Path) -> None:
    function = load_template(template_path).functions["Fn"]
    assert function.timeout_seconds == 2  # the function's own value wins
    assert function.runtime == "python3.11"  # taken from Globals
    # Layers add up, Globals first; a layer built with a python build method is its own
    # root, a pre-built one has python/ inside.
    root = template_path.parent
    assert function.layer_paths == [(root / "shared").resolve(), (root / "prebuilt" / "python").resolve()]
    assert function.code_dir == (root / "code").resolve()
    assert function.handler_module == "pkg.app"
    assert function.handler_function == "main"
    assert function.handler_file() == (root / "code" / "pkg" / "app.py").resolve()


def test_merge_globals_rules() -> None:
    merged = merge_globals(
        {"A": 1, "L": [1], "M": {"x": 1, "y": {"deep": 1}}},
        {"A": 2, "L": [2], "M": {"y": {"other": 2}}, "N": 3},
    )
    assert merged == {"A": 2, "L": [1, 2], "M": {"x": 1, "y": {"deep": 1, "other": 2}}, "N": 3}


def test_websocket_api_routes_stage_and_http_routes(template_path: Path) -> None:
    template = load_template(template_path, parameter_overrides={"Stage": "beta"})
    api = template.websocket_api
    assert api is not None
    assert api.stage == "beta"
    assert api.route_selection_expression == "$request.body.kind"
    assert api.routes == {
        "$default": WebSocketRoute("$default", "Fn", None),
        "hello": WebSocketRoute("hello", "Fn", "$default"),
    }
    assert [route.route_key for route in template.http_routes] == ["GET /things/{id}"]
    assert any("Fn.Queue: SQS source" in item for item in template.unsupported)


def test_tables_and_conditions(template_path: Path) -> None:
    template = load_template(template_path, stack_name="stk")
    assert {table.name for table in template.tables.values()} == {"stk-named-dev", "stk-Unnamed"}
    assert template.tables["Unnamed"].properties["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    assert template.tables["Unnamed"].properties["AttributeDefinitions"][0]["AttributeType"] == "N"
    other_stage = load_template(template_path, stack_name="stk", parameter_overrides={"Stage": "prod"})
    assert "OnlyOutsideDev" in other_stage.tables


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Nope": "1"}, "unknown parameters: Nope"),
        ({"Size": "11"}, "Parameter Size: '11' is above MaxValue 10"),
        ({"Size": "0"}, "Parameter Size: '0' is below MinValue 1"),
        ({"Size": "many"}, "Parameter Size: 'many' is not a number"),
        ({"Colour": "green"}, "Parameter Colour: 'green' is not one of red, blue"),
        ({"Stage": "Dev-1"}, "does not match AllowedPattern"),
    ],
)
def test_parameter_overrides_are_checked_like_cloudformation(
    template_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        load_template(template_path, parameter_overrides=overrides)


def test_unreadable_templates_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="Template not found"):
        load_template(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("Resources:\n  A: [unclosed\n")
    with pytest.raises(TemplateError, match="is not valid YAML") as invalid:
        load_template(broken)
    # Where: the line quoted and the column marked, as PyYAML's own parser says it.
    assert "line 2, column 6:\n      A: [unclosed\n         ^" in str(invalid.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("Description: nothing\n")
    with pytest.raises(TemplateError, match="has no Resources section"):
        load_template(empty)


def test_a_route_must_name_a_function_of_the_template(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            Resources:
              Api:
                Type: AWS::Serverless::WebSocketApi
                Properties:
                  RouteSelectionExpression: $request.body.action
                  Routes:
                    $default: {FunctionArn: arn:aws:lambda:us-east-1:123456789012:function:elsewhere}
            """
        )
    )
    with pytest.raises(TemplateError, match=r"route \$default must point at a function of this template"):
        load_template(path)


def test_the_projects_template_is_understood() -> None:
    template = load_template(ROOT / "template.yaml")
    api = template.websocket_api
    assert api is not None
    assert api.route_selection_expression == "$request.body.action"
    assert {"$connect", "$disconnect", "$default", "register", "auth", "send"} <= set(api.routes)
    assert any(route.route_key == "GET /debug/sessions" for route in template.http_routes)
    table_names = {table.name for table in template.tables.values()}
    for route in api.routes.values():
        function = template.functions[route.function_id]
        assert function.handler_file() is not None
        assert function.environment["TABLE_NAME"] in table_names


def test_fixture_templates_load() -> None:
    for name in ("gateway", "minimal", "no_websocket", "missing_handler", "broken_import"):
        load_template(FIXTURES / name / "template.yaml")


def _api(expression: str, routes: list[str]) -> WebSocketApi:
    return WebSocketApi(
        logical_id="Api",
        stage="s",
        route_selection_expression=expression,
        routes={key: WebSocketRoute(key, "Fn") for key in routes},
    )


def test_route_selection_follows_a_nested_body_path() -> None:
    selector = RouteSelector(_api("${request.body.meta.kind}", ["go", "$default"]))
    assert selector.select('{"meta": {"kind": "go"}}') == "go"
    assert selector.select('{"meta": {"kind": "stop"}}') == "$default"
    assert selector.select('{"kind": "go"}') == "$default"


def test_route_selection_sends_json_nested_too_deeply_to_default() -> None:
    selector = RouteSelector(_api("$request.body.action", ["go", "$default"]))
    assert selector.select("[" * 100_000 + "]" * 100_000) == "$default"


def test_route_selection_without_default_route_matches_nothing() -> None:
    selector = RouteSelector(_api("$request.body.action", ["go"]))
    assert selector.select('{"action": "go"}') == "go"
    assert selector.select("not json") is None


def test_unsupported_route_selection_expressions_are_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        RouteSelector(_api("$request.header.X-Route", ["go"]))
