"""The template's security parts (docs/SECURITY.md).

- checkov over template.yaml: no failed check; every accepted one skipped, with a
  reason, in the template;
- the AuthFailures alarm watches exactly the metric the functions emit (the EMF a real
  handler prints is parsed here);
- the DebugEndpoint parameter: public, behind IAM, or gone, as CloudFormation would
  create the stack for each value;
- the debug endpoint answers one number and nothing else.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from relay import protocol
from relay_local import template as relay_local_template

from tests.support.files import load_template
from tests.support.harness import Gateway
from tests.support.template import as_deployed, load_sam_template, resources_of_type, translate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    # Not --quiet: it would leave the passed and skipped checks out of the report.
    result = subprocess.run(
        [str(REPO / "scripts" / "checkov"), "--output", "json", "--soft-fail"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, f"checkov did not run:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.process
def test_checkov_finds_no_failed_check(checkov_report: dict[str, Any]) -> None:
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in checkov_report["results"].get("failed_checks", [])
    ]
    assert failed == [], "checkov failed checks:\n" + "\n".join(failed)
    assert checkov_report["summary"]["passed"] > 0


@pytest.mark.slow
@pytest.mark.process
def test_every_skipped_check_says_why(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"].get("skipped_checks", [])
    assert skipped, "expected the accepted checks to be skipped explicitly in the template"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) >= 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_skip_annotations_name_real_checks_and_reasons() -> None:
    """The skips live next to their resources (Metadata.checkov.skip) and each has a comment."""
    template = load_template()
    annotated = 0
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            annotated += 1
            assert str(skip["id"]).startswith("CKV_"), logical_id
            assert len(str(skip.get("comment", "")).strip()) >= 20, f"{logical_id}: {skip['id']} has no reason"
    assert annotated > 0


# The checks the relay accepts (docs/SECURITY.md, and the reasons in template.yaml):
# adding a skip for any other check is a decision this test makes visible.
ACCEPTED_CHECKS = {
    "AWS::Serverless::Function": {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173"},
    "AWS::Logs::LogGroup": {"CKV_AWS_158"},
    "AWS::DynamoDB::Table": {"CKV_AWS_28", "CKV_AWS_119"},
    "AWS::Serverless::HttpApi": {"CKV_AWS_95"},
    # The grace queues use SSE-SQS, which CKV_AWS_27 does not recognise (it wants a KMS key).
    "AWS::SQS::Queue": {"CKV_AWS_27"},
}


def test_only_the_accepted_checks_are_skipped() -> None:
    template = load_template()
    for logical_id, resource in template["Resources"].items():
        skipped = [skip["id"] for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])]
        assert len(skipped) == len(set(skipped)), f"{logical_id} skips a check twice"
        assert set(skipped) <= ACCEPTED_CHECKS.get(resource["Type"], set()), logical_id


# ---- the AuthFailures alarm ------------------------------------------------------------


def emitted_metric_documents(stdout: str) -> list[dict[str, Any]]:
    """The CloudWatch embedded-metric-format documents among a function's output lines."""
    documents = []
    for line in stdout.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "_aws" in document:
            documents.append(document)
    return documents


def auth_failure_metric(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> tuple[str, str, dict[str, str]]:
    """Namespace, metric name and dimensions of what the auth function emits on a wrong code."""
    browser = gateway.connect()
    capsys.readouterr()
    wrong_code = protocol.CODE_ALPHABET[0] * protocol.CODE_LENGTH
    (reply,) = gateway.message(browser, {"action": "auth", "code": wrong_code})
    assert reply["error"] == protocol.ErrorCode.INVALID_CODE
    found = []
    for document in emitted_metric_documents(capsys.readouterr().out):
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                if metric["Name"] == "AuthFailures":
                    assert document["AuthFailures"] in (1, [1], [1.0]), document
                    for dimension_set in directive["Dimensions"]:
                        dimensions = {name: document[name] for name in dimension_set}
                        found.append((directive["Namespace"], metric["Name"], dimensions))
    assert len(found) == 1, f"expected one AuthFailures data point, got {found}"
    return found[0]


def alarm(cfn: dict[str, Any]) -> dict[str, Any]:
    (alarm_resource,) = resources_of_type(cfn, "AWS::CloudWatch::Alarm").values()
    properties: dict[str, Any] = alarm_resource["Properties"]
    return properties


def test_alarm_watches_the_metric_a_failed_auth_emits(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    namespace, metric_name, dimensions = auth_failure_metric(gateway, capsys)
    watched = alarm(as_deployed(translate(load_sam_template())))
    assert watched["Namespace"] == namespace
    assert watched["MetricName"] == metric_name
    # CloudWatch matches a metric by its exact set of dimensions.
    assert {d["Name"]: d["Value"] for d in watched["Dimensions"]} == dimensions
    assert len(watched["Dimensions"]) == len(dimensions)


def test_functions_are_configured_with_the_namespace_and_service_the_alarm_watches(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test run emits with the template's Powertools settings, so the test above speaks for AWS."""
    namespace, _, dimensions = auth_failure_metric(gateway, capsys)
    variables = load_sam_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == namespace
    assert dimensions == {"service": variables["POWERTOOLS_SERVICE_NAME"]}
    for name, function in resources_of_type(
        as_deployed(translate(load_sam_template())), "AWS::Lambda::Function"
    ).items():
        function_variables = function["Properties"]["Environment"]["Variables"]
        assert function_variables["POWERTOOLS_METRICS_NAMESPACE"] == namespace, name
        assert function_variables["POWERTOOLS_SERVICE_NAME"] == dimensions["service"], name


def test_alarm_fires_on_the_sum_of_failures_in_five_minutes() -> None:
    sam = load_sam_template()
    threshold = sam["Parameters"]["AuthFailureAlarmThreshold"]
    assert threshold["Type"] == "Number"
    assert threshold["Default"] == 100
    assert threshold["MinValue"] >= 1
    watched = alarm(as_deployed(translate(sam)))
    assert watched["Statistic"] == "Sum"
    assert watched["Period"] * watched["EvaluationPeriods"] == 300
    assert watched["Threshold"] == {"Ref": "AuthFailureAlarmThreshold"}
    assert watched["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert watched["TreatMissingData"] == "notBreaching"


def test_alarm_notifies_the_topic_only_when_one_is_given() -> None:
    sam = load_sam_template()
    assert sam["Parameters"]["AlarmTopicArn"]["Default"] == ""
    translated = translate(sam)
    silent = alarm(as_deployed(translated))
    assert "AlarmActions" not in silent
    assert "OKActions" not in silent
    topic = "arn:aws:sns:eu-west-1:123456789012:relay-alerts"
    told = alarm(as_deployed(translated, {"AlarmTopicArn": topic}))
    assert told["AlarmActions"] == [{"Ref": "AlarmTopicArn"}]
    assert told["OKActions"] == [{"Ref": "AlarmTopicArn"}]


def test_alarm_topic_must_be_an_sns_topic_arn_or_empty() -> None:
    pattern = re.compile(load_sam_template()["Parameters"]["AlarmTopicArn"]["AllowedPattern"])
    for accepted in (
        "",
        "arn:aws:sns:eu-west-1:123456789012:relay-alerts",
        "arn:aws-cn:sns:cn-north-1:123456789012:a.fifo",
    ):
        assert pattern.fullmatch(accepted), accepted
    for refused in ("relay-alerts", "arn:aws:sqs:eu-west-1:123456789012:queue", "arn:aws:sns:eu-west-1:1234:t"):
        assert not pattern.fullmatch(refused), refused


# ---- the DebugEndpoint parameter -------------------------------------------------------

DEBUG_PATH = "/debug/sessions"
# The OpenAPI security scheme API Gateway reads as "AWS_IAM authorization" on an HTTP API.
SIGV4_SCHEME = {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "awsSigv4"}
PSEUDO_PARAMETERS = {
    "AWS::AccountId", "AWS::NotificationARNs", "AWS::NoValue", "AWS::Partition", "AWS::Region",
    "AWS::StackId", "AWS::StackName", "AWS::URLSuffix",
}  # fmt: skip


def deployed_with_debug_endpoint(value: str) -> dict[str, Any]:
    return as_deployed(translate(load_sam_template(), {"DebugEndpoint": value}), {"DebugEndpoint": value})


def debug_get_method(stack: dict[str, Any]) -> dict[str, Any]:
    (api,) = [
        resource["Properties"]["Body"]
        for resource in resources_of_type(stack, "AWS::ApiGatewayV2::Api").values()
        if "Body" in resource["Properties"]
    ]
    assert list(api["paths"]) == [DEBUG_PATH]
    method: dict[str, Any] = api["paths"][DEBUG_PATH]["get"]
    assert "${DebugFunction.Arn}" in method["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
    return method


def references(value: Any) -> set[str]:
    """Logical ids and parameters a value refers to (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    if isinstance(value, list):
        return set().union(*(references(item) for item in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, argument in value.items():
        if key == "Ref" and isinstance(argument, str):
            found.add(argument)
        elif key == "Fn::GetAtt":
            found.add(argument[0] if isinstance(argument, list) else argument.split(".")[0])
        elif key == "Fn::Sub":
            text, local = (argument, {}) if isinstance(argument, str) else argument
            names = {name.split(".")[0] for name in re.findall(r"\$\{([^}!][^}]*)\}", text)}
            found |= (names - set(local)) | references(local)
        else:
            found |= references(argument)
    return found


def assert_every_reference_resolves(stack: dict[str, Any]) -> None:
    known = set(stack["Resources"]) | set(stack["Parameters"]) | PSEUDO_PARAMETERS
    for section in ("Resources", "Outputs"):
        for logical_id, entry in stack[section].items():
            missing = references(entry) - known
            assert not missing, f"{section}.{logical_id} refers to {missing}, which this stack does not create"


def test_debug_endpoint_parameter() -> None:
    parameter = load_sam_template()["Parameters"]["DebugEndpoint"]
    assert parameter["AllowedValues"] == ["public", "iam", "off"]
    assert parameter["Default"] == "public"


def test_public_debug_endpoint_needs_no_authorization() -> None:
    stack = deployed_with_debug_endpoint("public")
    assert "security" not in debug_get_method(stack)
    assert {"DebugFunction", "DebugFunctionLogGroup", "DebugHttpApi"} <= set(stack["Resources"])
    assert "DebugUrl" in stack["Outputs"]
    assert_every_reference_resolves(stack)


def test_iam_debug_endpoint_requires_sigv4() -> None:
    stack = deployed_with_debug_endpoint("iam")
    method = debug_get_method(stack)
    assert method["security"] == [{"AWS_IAM": []}]
    body = stack["Resources"]["DebugHttpApi"]["Properties"]["Body"]
    assert body["components"]["securitySchemes"]["AWS_IAM"] == SIGV4_SCHEME
    assert "DebugUrl" in stack["Outputs"]
    assert_every_reference_resolves(stack)


def test_iam_debug_endpoint_is_what_sams_documented_iam_authorizer_generates() -> None:
    """Our conditional OpenAPI equals SAM's `EnableIamAuthorizer` + `DefaultAuthorizer: AWS_IAM`."""
    documented = copy.deepcopy(load_sam_template())
    api = documented["Resources"]["DebugHttpApi"]["Properties"]
    del api["DefinitionBody"]["paths"][DEBUG_PATH]["get"]["security"]
    del api["DefinitionBody"]["components"]
    api["Auth"] = {"EnableIamAuthorizer": True, "DefaultAuthorizer": "AWS_IAM"}
    expected = as_deployed(translate(documented, {"DebugEndpoint": "iam"}), {"DebugEndpoint": "iam"})
    expected_body = expected["Resources"]["DebugHttpApi"]["Properties"]["Body"]
    actual_body = deployed_with_debug_endpoint("iam")["Resources"]["DebugHttpApi"]["Properties"]["Body"]
    assert debug_get_method(expected)["security"] == [{"AWS_IAM": []}]
    assert actual_body["paths"] == expected_body["paths"]
    assert actual_body["components"]["securitySchemes"] == expected_body["components"]["securitySchemes"]


def test_debug_endpoint_off_leaves_no_function_log_group_api_or_output() -> None:
    stack = deployed_with_debug_endpoint("off")
    assert not [logical_id for logical_id in stack["Resources"] if logical_id.startswith("Debug")]
    assert resources_of_type(stack, "AWS::ApiGatewayV2::Api").keys() == {"RelayApi"}
    assert {
        function["Properties"]["FunctionName"]["Fn::Sub"]
        for function in resources_of_type(stack, "AWS::Lambda::Function").values()
    }.isdisjoint({"${AWS::StackName}-debug"})
    for permission in resources_of_type(stack, "AWS::Lambda::Permission").values():
        assert "DebugFunction" not in json.dumps(permission)
    assert "DebugUrl" not in stack["Outputs"]
    # The WebSocket relay itself is untouched.
    assert {"RelayApi", "SessionsTable", "AuthFunction", "AuthFailureAlarm"} <= set(stack["Resources"])
    assert_every_reference_resolves(stack)


def test_reference_check_notices_a_dangling_reference() -> None:
    """The reference check above can fail: an output left without its condition is caught."""
    translated = translate(load_sam_template(), {"DebugEndpoint": "off"})
    del translated["Outputs"]["DebugUrl"]["Condition"]
    with pytest.raises(AssertionError, match="DebugHttpApi"):
        assert_every_reference_resolves(as_deployed(translated, {"DebugEndpoint": "off"}))


def test_debug_api_is_throttled() -> None:
    stages = resources_of_type(deployed_with_debug_endpoint("public"), "AWS::ApiGatewayV2::Stage")
    (debug_stage,) = [s["Properties"] for s in stages.values() if s["Properties"]["ApiId"] == {"Ref": "DebugHttpApi"}]
    settings = debug_stage["DefaultRouteSettings"]
    assert 0 < settings["ThrottlingRateLimit"] <= settings["ThrottlingBurstLimit"] <= 100


# ---- what the debug endpoint says -------------------------------------------------------


def test_debug_endpoint_answers_one_number_and_nothing_else(gateway: Gateway) -> None:
    first_mac, first_code = gateway.register("mac-1")
    second_mac, second_code = gateway.register("mac-2")
    browser, peer = gateway.join(first_code)
    response = gateway.debug_sessions()
    assert response["statusCode"] == 200
    assert response["headers"] == {"content-type": "text/plain; charset=utf-8"}
    assert response["body"] == "Active sessions: 2"
    everything = json.dumps(response)
    for secret in (first_code, second_code, first_mac, second_mac, browser, peer):
        assert secret not in everything


@pytest.mark.parametrize(
    ("value", "routes"), [("public", ["GET /debug/sessions"]), ("iam", ["GET /debug/sessions"]), ("off", [])]
)
def test_relay_local_serves_the_debug_route_unless_it_is_off(value: str, routes: list[str]) -> None:
    """relay-local reads the same Conditions: DebugEndpoint=off drops the function and its route."""
    served = relay_local_template.load_template(REPO / "template.yaml", parameter_overrides={"DebugEndpoint": value})
    assert [route.route_key for route in served.http_routes] == routes
    assert ("DebugFunction" in served.functions) == bool(routes)
