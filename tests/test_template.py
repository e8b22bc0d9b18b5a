"""template.yaml: lint-clean, and its CloudFormation (as SAM expands it) follows our rules.

The rules are checked on the output of aws-sam-translator, the library behind
`sam deploy`'s transform, so they hold for what CloudFormation will actually create
(routes, integrations, generated roles), not just for what the YAML says.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint, lint_file
from cfnlint.helpers import REGIONS
from relay import protocol

from tests.support.template import (
    FUNCTION_DIRS,
    REPO,
    TEMPLATE,
    as_deployed,
    load_sam_template,
    resources_of_type,
    translate,
)

# Function -> route key of the WebSocket API that invokes it.
WEBSOCKET_ROUTES = {
    "$connect": "ConnectFunction",
    "$disconnect": "DisconnectFunction",
    "register": "RegisterFunction",
    "auth": "AuthFunction",
    "send": "SendFunction",
    "kick": "KickFunction",
    "admit": "AdmitFunction",
    "lock": "LockFunction",
    "unlock": "UnlockFunction",
    "resume": "ResumeFunction",
    "end": "EndFunction",
    "leave": "LeaveFunction",
    "$default": "DefaultFunction",
}

# Least privilege: exactly these DynamoDB actions per function, on the table only.
DYNAMODB_ACTIONS: dict[str, set[str]] = {
    "ConnectFunction": set(),
    "DefaultFunction": set(),
    "RegisterFunction": {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"},
    "AuthFunction": {"BatchGetItem", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem", "Query"},
    "SendFunction": {"GetItem", "PutItem", "ConditionCheckItem", "Query", "UpdateItem", "DeleteItem"},
    "DisconnectFunction": {"GetItem", "Query", "UpdateItem", "DeleteItem"},
    "KickFunction": {"GetItem", "UpdateItem", "DeleteItem"},
    "AdmitFunction": {"GetItem", "PutItem", "ConditionCheckItem", "UpdateItem", "DeleteItem", "Query"},
    "LockFunction": {"GetItem", "UpdateItem"},
    "UnlockFunction": {"GetItem", "UpdateItem"},
    "ExpiryFunction": {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"},
    "ResumeFunction": {
        "BatchGetItem",
        "GetItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "ConditionCheckItem",
    },
    "EndFunction": {"GetItem", "UpdateItem", "DeleteItem", "Query"},
    "LeaveFunction": {"GetItem", "UpdateItem", "DeleteItem", "Query"},
    "GraceFunction": {"GetItem", "UpdateItem", "DeleteItem", "Query"},
    "DebugFunction": {"BatchGetItem"},
}
# Management API methods on @connections each function may call: POST (PostToConnection)
# to reply, DELETE (DeleteConnection) to close: auth after too many attempts, expiry the
# connection of a mac-client whose session outlived it.
CONNECTION_METHODS: dict[str, set[str]] = {
    "ConnectFunction": set(),
    "DebugFunction": set(),
    "RegisterFunction": {"POST"},
    "DefaultFunction": {"POST"},
    "AuthFunction": {"POST", "DELETE"},
    "SendFunction": {"POST"},
    "DisconnectFunction": {"POST"},
    "KickFunction": {"POST"},
    "AdmitFunction": {"POST"},
    "LockFunction": {"POST"},
    "UnlockFunction": {"POST"},
    "ExpiryFunction": {"POST", "DELETE"},
    "ResumeFunction": {"POST", "DELETE"},
    "EndFunction": {"POST"},
    "LeaveFunction": {"POST"},
    "GraceFunction": {"POST"},
}
# Functions that can see a peer of a resumable session go away start its grace timer.
GRACE_TIMER_STARTERS = {
    "AuthFunction",
    "SendFunction",
    "DisconnectFunction",
    "AdmitFunction",
    "ResumeFunction",
    "LeaveFunction",
    "GraceFunction",
}
CONNECTIONS_ARN = re.compile(
    r"arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
    r"\$\{RelayApi\}/\$\{StageName\}/(?P<method>POST|DELETE)/@connections/\*"
)
# What SAM attaches to every role it generates: logs and X-Ray (Tracing: Active).
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
# ...and, for a function with a DynamoDB stream event, the stream-reading policy.
STREAM_READER_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"
# ...and, for the function fed by the grace queue, SAM's queue-reading policy.
QUEUE_READER_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
STREAM_FUNCTIONS = {"ExpiryFunction"}
TTL_REMOVALS_ONLY = {
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
}
CLOUDWATCH_RETENTION_DAYS = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
]  # fmt: skip


@cache
def _cloudformation_json() -> str:
    return json.dumps(translate(load_sam_template()))


@pytest.fixture
def sam() -> dict[str, Any]:
    return load_sam_template()


@pytest.fixture
def cfn() -> dict[str, Any]:
    """The stack CloudFormation creates from the template with default parameters."""
    # A fresh copy per test: the translation is cached, the dicts are not shared.
    translated: dict[str, Any] = json.loads(_cloudformation_json())
    return as_deployed(translated)


def role_statements(cfn: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role_arn = cfn["Resources"][function]["Properties"]["Role"]
    assert role_arn == {"Fn::GetAtt": [f"{function}Role", "Arn"]}, f"{function} must use its own role"
    role = cfn["Resources"][f"{function}Role"]["Properties"]
    return [statement for policy in role.get("Policies", []) for statement in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---- cfn-lint ----------------------------------------------------------------------


def describe(matches: list[Any]) -> str:
    return "\n".join(f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches)


def test_cfn_lint_reports_nothing_in_any_region() -> None:
    # Errors and warnings (cfn-lint's default), checked in every region so that
    # python3.13/arm64 availability and resource support are validated everywhere.
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=REGIONS))
    assert matches == [], describe(matches)


def test_cfn_lint_catches_a_broken_template() -> None:
    """The lint test above can fail: a retired runtime is an error cfn-lint reports."""
    broken = TEMPLATE.read_text(encoding="utf-8").replace("Runtime: python3.13", "Runtime: python2.7", 1)
    assert broken != TEMPLATE.read_text(encoding="utf-8")
    errors = [m for m in lint(broken, regions=["us-east-1"]) if m.rule.severity == "error"]
    assert errors


# ---- WebSocket API -----------------------------------------------------------------


def test_websocket_api_selects_routes_by_action(cfn: dict[str, Any]) -> None:
    api = cfn["Resources"]["RelayApi"]
    assert api["Type"] == "AWS::ApiGatewayV2::Api"
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    assert api["Properties"]["RouteSelectionExpression"] == "$request.body.action"


def test_each_route_integrates_its_function(cfn: dict[str, Any]) -> None:
    routes = resources_of_type(cfn, "AWS::ApiGatewayV2::Route")
    integrations = resources_of_type(cfn, "AWS::ApiGatewayV2::Integration")
    targets: dict[str, str] = {}
    for route in routes.values():
        properties = route["Properties"]
        assert properties["ApiId"] == {"Ref": "RelayApi"}
        join = properties["Target"]["Fn::Join"]
        assert join[0] == "/"
        assert join[1][0] == "integrations"
        integration = integrations[join[1][1]["Ref"]]["Properties"]
        assert integration["ApiId"] == {"Ref": "RelayApi"}
        assert integration["IntegrationType"] == "AWS_PROXY"
        uri, variables = integration["IntegrationUri"]["Fn::Sub"]
        assert uri.endswith("/functions/${FunctionArn}/invocations")
        function_arn = variables["FunctionArn"]["Fn::GetAtt"]
        assert function_arn[1] == "Arn"
        targets[properties["RouteKey"]] = function_arn[0]
    assert targets == WEBSOCKET_ROUTES


def test_api_gateway_may_invoke_each_route_function(cfn: dict[str, Any]) -> None:
    permissions = resources_of_type(cfn, "AWS::Lambda::Permission")
    invocable: set[str] = set()
    for permission in permissions.values():
        properties = permission["Properties"]
        assert properties["Principal"] == "apigateway.amazonaws.com"
        assert properties["Action"] == "lambda:InvokeFunction"
        function = properties["FunctionName"]
        # SAM names WebSocket route functions by ARN and HTTP API event functions by Ref.
        invocable.add(function["Fn::GetAtt"][0] if "Fn::GetAtt" in function else function["Ref"])
    assert invocable == set(FUNCTION_DIRS) - STREAM_FUNCTIONS - {"GraceFunction"}  # SQS polls for it


def test_stage_name_comes_from_a_parameter(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    stages = [
        stage["Properties"]
        for stage in resources_of_type(cfn, "AWS::ApiGatewayV2::Stage").values()
        if stage["Properties"]["ApiId"] == {"Ref": "RelayApi"}
    ]
    assert len(stages) == 1
    assert stages[0]["StageName"] == {"Ref": "StageName"}
    assert stages[0]["AutoDeploy"] is True
    assert sam["Parameters"]["StageName"]["Default"] == "prod"


def test_debug_route_is_get_debug_sessions(cfn: dict[str, Any]) -> None:
    http_api = cfn["Resources"]["DebugHttpApi"]
    assert http_api["Type"] == "AWS::ApiGatewayV2::Api"
    assert "ProtocolType" not in http_api["Properties"]  # HTTP, from the OpenAPI body
    paths = http_api["Properties"]["Body"]["paths"]
    assert list(paths) == ["/debug/sessions"]
    assert list(paths["/debug/sessions"]) == ["get"]
    integration = paths["/debug/sessions"]["get"]["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    assert integration["payloadFormatVersion"] == "2.0"
    assert "${DebugFunction.Arn}" in integration["uri"]["Fn::Sub"]


# ---- DynamoDB ----------------------------------------------------------------------


def test_sessions_table(cfn: dict[str, Any]) -> None:
    tables = resources_of_type(cfn, "AWS::DynamoDB::Table")
    assert list(tables) == ["SessionsTable"]
    table = tables["SessionsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["StreamSpecification"] == {"StreamViewType": "OLD_IMAGE"}


def test_expiry_function_reads_only_ttl_removals_from_the_table_stream(cfn: dict[str, Any]) -> None:
    mappings = resources_of_type(cfn, "AWS::Lambda::EventSourceMapping")
    [mapping] = [
        m["Properties"] for m in mappings.values() if m["Properties"]["FunctionName"] != {"Ref": "GraceFunction"}
    ]
    assert mapping["FunctionName"] == {"Ref": "ExpiryFunction"}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["SessionsTable", "StreamArn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    [pattern] = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    assert pattern == TTL_REMOVALS_ONLY


# ---- IAM ---------------------------------------------------------------------------


def dynamodb_grants(cfn: dict[str, Any], function: str) -> set[str]:
    """The function's DynamoDB actions, asserting each is granted on the sessions table only."""
    granted: set[str] = set()
    for statement in role_statements(cfn, function):
        actions = as_list(statement["Action"])
        if not any(action.startswith("dynamodb:") for action in actions):
            continue
        assert statement["Effect"] == "Allow"
        assert all(action.startswith("dynamodb:") for action in actions), statement
        assert as_list(statement["Resource"]) == [{"Fn::GetAtt": ["SessionsTable", "Arn"]}], statement
        granted.update(action.removeprefix("dynamodb:") for action in actions)
    return granted


@pytest.mark.parametrize("function", list(FUNCTION_DIRS))
def test_function_role_grants_exactly_its_dynamodb_actions_on_the_table(cfn: dict[str, Any], function: str) -> None:
    assert dynamodb_grants(cfn, function) == DYNAMODB_ACTIONS[function]


@pytest.mark.parametrize("function", list(FUNCTION_DIRS))
def test_function_role_manages_only_this_apis_connections(cfn: dict[str, Any], function: str) -> None:
    methods: set[str] = set()
    for statement in role_statements(cfn, function):
        if as_list(statement["Action"]) != ["execute-api:ManageConnections"]:
            continue
        assert statement["Effect"] == "Allow"
        for resource in as_list(statement["Resource"]):
            match = CONNECTIONS_ARN.fullmatch(resource["Fn::Sub"])
            assert match, resource
            methods.add(match["method"])
    assert methods == CONNECTION_METHODS[function]


def assert_role_has_nothing_else(cfn: dict[str, Any], function: str) -> None:
    role = cfn["Resources"][f"{function}Role"]["Properties"]
    stream_reader = {STREAM_READER_POLICY} if function in STREAM_FUNCTIONS else set()
    queue_reader = {QUEUE_READER_POLICY} if function == "GraceFunction" else set()
    assert set(role["ManagedPolicyArns"]) == SAM_MANAGED_POLICIES | stream_reader | queue_reader
    for statement in role_statements(cfn, function):
        actions = as_list(statement["Action"])
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        if actions == ["sqs:SendMessage"]:
            assert function in GRACE_TIMER_STARTERS, function
            assert as_list(statement["Resource"]) == [{"Fn::GetAtt": ["GraceQueue", "Arn"]}], statement
            continue
        assert all(action.startswith(("dynamodb:", "execute-api:ManageConnections")) for action in actions)
        assert all("*" not in action for action in actions), statement
        for resource in as_list(statement["Resource"]):
            assert resource != "*"
            assert isinstance(resource, dict), f"{function}: literal resource {resource!r}"


@pytest.mark.parametrize("function", list(FUNCTION_DIRS))
def test_function_role_has_nothing_else(cfn: dict[str, Any], function: str) -> None:
    assert_role_has_nothing_else(cfn, function)


def test_iam_checks_notice_a_wildcard_resource(sam: dict[str, Any]) -> None:
    """The IAM tests above can fail: widening one statement to '*' is caught."""
    statement = sam["Resources"]["SendFunction"]["Properties"]["Policies"][0]["Statement"][0]
    statement["Resource"] = "*"
    widened = translate(sam)
    with pytest.raises(AssertionError):
        dynamodb_grants(widened, "SendFunction")
    with pytest.raises(AssertionError):
        assert_role_has_nothing_else(widened, "SendFunction")


# ---- functions, layer, logs --------------------------------------------------------


def test_functions_run_python313_on_arm64_from_their_folders(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    functions = resources_of_type(cfn, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTION_DIRS)
    for name, function in functions.items():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.13", name
        assert properties["Architectures"] == ["arm64"], name
        assert properties["Handler"] == "app.lambda_handler", name
        assert properties["MemorySize"] == 256, name
        assert properties["Timeout"] == 10, name
        assert properties["TracingConfig"] == {"Mode": "Active"}, name
        assert sam["Resources"][name]["Properties"]["CodeUri"] == f"functions/{FUNCTION_DIRS[name]}/"
        assert (REPO / "functions" / FUNCTION_DIRS[name] / "app.py").is_file(), name


def test_functions_use_the_relay_layer(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    layers = resources_of_type(cfn, "AWS::Lambda::LayerVersion")
    assert len(layers) == 1
    [(layer_id, layer)] = layers.items()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    for name, function in resources_of_type(cfn, "AWS::Lambda::Function").items():
        assert function["Properties"]["Layers"] == [{"Ref": layer_id}], name
    source = sam["Resources"]["RelayLayer"]
    assert source["Properties"]["ContentUri"] == "layers/relay"
    assert source["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}


def test_functions_get_their_settings_from_parameters(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    expected_refs = {
        "TABLE_NAME": "SessionsTable",
        "MAX_BROWSERS": "MaxBrowsers",
        "MAX_AUTH_ATTEMPTS": "MaxAuthAttempts",
        "SESSION_TTL_SECONDS": "SessionTtlSeconds",
        "MAX_CODE_ATTEMPTS": "MaxCodeAttempts",
        "COUNTER_SHARDS": "CounterShards",
        "AUTH_FAILURES_PER_IP": "AuthFailuresPerIp",
        "AUTH_FAILURE_WINDOW_SECONDS": "AuthFailureWindowSeconds",
        "REGISTRATIONS_PER_IP": "RegistrationsPerIp",
        "RESUME_GRACE_SECONDS": "ResumeGraceSeconds",
        "MAX_HELD_FRAMES": "MaxHeldFrames",
        "MAX_SESSION_SECONDS": "MaxSessionSeconds",
        "GRACE_QUEUE_URL": "GraceQueue",
        "POWERTOOLS_LOG_LEVEL": "LogLevel",
    }
    only_for: dict[str, dict[str, Any]] = {
        "ConnectFunction": {"ALLOWED_ORIGINS": {"Ref": "AllowedOrigins"}},
        # The stream event carries no API address, so the endpoint is configured.
        "ExpiryFunction": {
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": {
                "Fn::Sub": "https://${RelayApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
            }
        },
        # Nor does the grace timer's SQS event.
        "GraceFunction": {
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": {
                "Fn::Sub": "https://${RelayApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
            }
        },
    }
    for name, function in resources_of_type(cfn, "AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables == {
            **{key: {"Ref": target} for key, target in expected_refs.items()},
            "POWERTOOLS_SERVICE_NAME": "pairing-relay",
            "POWERTOOLS_METRICS_NAMESPACE": "PairingRelay",
            **only_for.get(name, {}),
        }, name
    parameters = sam["Parameters"]
    assert parameters["LogLevel"]["Default"] == "INFO"
    assert parameters["AllowedOrigins"]["Default"] == "*"
    for parameter in (
        "MaxBrowsers",
        "MaxAuthAttempts",
        "SessionTtlSeconds",
        "MaxCodeAttempts",
        "CounterShards",
        "AuthFailuresPerIp",
        "AuthFailureWindowSeconds",
    ):
        spec = parameters[parameter]
        assert spec["Type"] == "Number"
        assert 1 <= spec["MinValue"] <= spec["Default"] <= spec["MaxValue"], parameter


def test_parameter_defaults_match_the_protocol_module(sam: dict[str, Any]) -> None:
    parameters = sam["Parameters"]
    assert parameters["MaxBrowsers"]["Default"] == protocol.DEFAULT_MAX_BROWSERS
    assert parameters["MaxAuthAttempts"]["Default"] == protocol.DEFAULT_MAX_AUTH_ATTEMPTS
    assert parameters["SessionTtlSeconds"]["Default"] == protocol.DEFAULT_SESSION_TTL_SECONDS
    assert parameters["MaxCodeAttempts"]["Default"] == protocol.DEFAULT_MAX_CODE_ATTEMPTS
    assert parameters["CounterShards"]["Default"] == protocol.DEFAULT_COUNTER_SHARDS
    assert parameters["AuthFailuresPerIp"]["Default"] == protocol.DEFAULT_AUTH_FAILURES_PER_IP
    assert parameters["AuthFailureWindowSeconds"]["Default"] == protocol.DEFAULT_AUTH_FAILURE_WINDOW_SECONDS
    assert parameters["RegistrationsPerIp"]["Default"] == protocol.DEFAULT_REGISTRATIONS_PER_IP


def test_max_browsers_stays_within_what_one_transaction_can_end(sam: dict[str, Any]) -> None:
    # Ending a session deletes it, its mac-client's record and the counter share (3 items)
    # plus 2 items per browser in one TransactWriteItems, which takes at most 100 items.
    assert sam["Parameters"]["MaxBrowsers"]["MaxValue"] == protocol.MAX_BROWSERS_LIMIT
    assert 3 + 2 * protocol.MAX_BROWSERS_LIMIT <= 100


def test_each_function_logs_to_its_own_group_with_the_retention_parameter(
    sam: dict[str, Any], cfn: dict[str, Any]
) -> None:
    log_groups = resources_of_type(cfn, "AWS::Logs::LogGroup")
    assert set(log_groups) == {f"{name}LogGroup" for name in FUNCTION_DIRS}
    for name, function in resources_of_type(cfn, "AWS::Lambda::Function").items():
        properties = function["Properties"]
        group = log_groups[f"{name}LogGroup"]["Properties"]
        assert properties["LoggingConfig"] == {"LogGroup": {"Ref": f"{name}LogGroup"}}, name
        # /aws/lambda/<function name>, the group Lambda would otherwise create unmanaged.
        assert group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/" + properties["FunctionName"]["Fn::Sub"]}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    retention = sam["Parameters"]["LogRetentionDays"]
    assert retention["Default"] == 14
    assert retention["AllowedValues"] == CLOUDWATCH_RETENTION_DAYS


def test_outputs(sam: dict[str, Any]) -> None:
    outputs = {name: output["Value"] for name, output in sam["Outputs"].items()}
    assert outputs == {
        "WebSocketUrl": {"Fn::Sub": "wss://${RelayApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"},
        "DebugUrl": {"Fn::Sub": "https://${DebugHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/debug/sessions"},
        "AuthFailureAlarmName": {"Ref": "AuthFailureAlarm"},
        "TableName": {"Ref": "SessionsTable"},
        "ManagementApiEndpoint": {
            "Fn::Sub": "https://${RelayApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
        },
        "CustomDomainUrl": {"Fn::Sub": "wss://${CustomDomainName}"},
        "RegionalDomainName": {"Fn::GetAtt": ["RelayDomainName", "RegionalDomainName"]},
    }
    assert sam["Outputs"]["CustomDomainUrl"]["Condition"] == "CustomDomainGiven"
    assert sam["Outputs"]["RegionalDomainName"]["Condition"] == "CustomDomainGiven"


def websocket_stages(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    stages = resources_of_type(cfn, "AWS::ApiGatewayV2::Stage").items()
    return {name: stage for name, stage in stages if stage["Properties"]["ApiId"] == {"Ref": "RelayApi"}}


def test_stage_throttles_every_route_by_parameters(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    (stage,) = websocket_stages(cfn).values()
    assert stage["Properties"]["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
    }
    parameters = sam["Parameters"]
    # Below API Gateway's account-wide defaults (5,000 burst, 10,000 per second), which
    # every API of the account in the region shares.
    assert 0 < parameters["ThrottlingBurstLimit"]["Default"] <= parameters["ThrottlingBurstLimit"]["MaxValue"] <= 5000
    assert 0 < parameters["ThrottlingRateLimit"]["Default"] <= parameters["ThrottlingRateLimit"]["MaxValue"] <= 10000


def test_no_custom_domain_resources_by_default(cfn: dict[str, Any]) -> None:
    assert not resources_of_type(cfn, "AWS::ApiGatewayV2::DomainName")
    assert not resources_of_type(cfn, "AWS::ApiGatewayV2::ApiMapping")
    assert "CustomDomainUrl" not in cfn["Outputs"]


def test_a_custom_domain_maps_to_the_stage() -> None:
    translated: dict[str, Any] = json.loads(_cloudformation_json())
    certificate = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"
    cfn = as_deployed(translated, {"CustomDomainName": "relay.example.com", "CertificateArn": certificate})
    (domain,) = resources_of_type(cfn, "AWS::ApiGatewayV2::DomainName").values()
    assert domain["Properties"] == {
        "DomainName": {"Ref": "CustomDomainName"},
        "DomainNameConfigurations": [
            {"CertificateArn": {"Ref": "CertificateArn"}, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}
        ],
    }
    (mapping,) = resources_of_type(cfn, "AWS::ApiGatewayV2::ApiMapping").values()
    (stage_id,) = websocket_stages(cfn)
    assert mapping["Properties"] == {
        "DomainName": {"Ref": "RelayDomainName"},
        "ApiId": {"Ref": "RelayApi"},
        "Stage": {"Ref": stage_id},
    }
    assert "CustomDomainUrl" in cfn["Outputs"]


def test_grace_timer_is_an_encrypted_queue_with_a_delay_range_matching_the_parameter(
    sam: dict[str, Any], cfn: dict[str, Any]
) -> None:
    """ResumeGraceSeconds becomes SQS DelaySeconds, whose range is 0..900; the queue feeds
    only the grace function, failures reported per message, and keeps what keeps failing."""
    grace = sam["Parameters"]["ResumeGraceSeconds"]
    assert (grace["MinValue"], grace["MaxValue"], grace["Default"]) == (1, 900, 120)
    queue = cfn["Resources"]["GraceQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * 10  # six times the function's timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["GraceDeadLetterQueue", "Arn"]}
    [mapping] = [
        m["Properties"]
        for m in resources_of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["GraceQueue", "Arn"]}
    ]
    assert mapping["FunctionName"] == {"Ref": "GraceFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
