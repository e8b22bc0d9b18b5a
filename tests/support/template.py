"""template.yaml as the tests read it: SAM's own parser and translator, and the stack
CloudFormation would deploy with given parameters (conditions resolved)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import yaml
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import intrinsics_multi_constructor

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"

# Function -> its folder under functions/.
FUNCTION_DIRS = {
    "ConnectFunction": "connect",
    "RegisterFunction": "register",
    "AuthFunction": "auth",
    "SendFunction": "send",
    "DefaultFunction": "default",
    "DisconnectFunction": "disconnect",
    "KickFunction": "kick",
    "AdmitFunction": "admit",
    "LockFunction": "lock",
    "UnlockFunction": "unlock",
    "ExpiryFunction": "expiry",
    "ResumeFunction": "resume",
    "EndFunction": "end",
    "LeaveFunction": "leave",
    "GraceFunction": "grace",
    "DebugFunction": "debug",
}


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML loader for CloudFormation short-form tags (!Ref, !Sub, !GetAtt...), on
    libyaml where PyYAML has it (ten times faster than the pure-Python parser)."""


_CfnLoader.add_multi_constructor("!", intrinsics_multi_constructor)


def load_sam_template(text: str | None = None) -> dict[str, Any]:
    """`text` (template.yaml by default, parsed once a run), a fresh copy each call."""
    if text is None:
        return copy.deepcopy(_parsed_template())
    template: dict[str, Any] = yaml.load(text, Loader=_CfnLoader)
    return template


@cache
def _parsed_template() -> dict[str, Any]:
    return load_sam_template(TEMPLATE.read_text(encoding="utf-8"))


def translate(sam_template: dict[str, Any], parameter_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Expand SAM resources into CloudFormation, as the Serverless transform does."""
    template = copy.deepcopy(sam_template)
    # The transform wants S3 locations; `sam build`/`sam deploy` put the local paths
    # there (the same substitution cfn-lint makes before it transforms).
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://bucket/{properties[key].strip('/')}.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    # No IAM lookup: the template names no managed policies by name.
    cloudformation: dict[str, Any] = translator.translate(
        template, parameter_values=dict(parameter_values or {}), get_managed_policy_map=dict
    )
    return cloudformation


# ---- what CloudFormation creates for given parameter values -------------------------


def _parameter_value(value: Any, parameters: dict[str, str]) -> str:
    if isinstance(value, dict):
        assert set(value) == {"Ref"}, f"conditions here compare parameters and literals only: {value}"
        return parameters[value["Ref"]]
    return str(value)


def condition_holds(expression: Any, conditions: dict[str, Any], parameters: dict[str, str]) -> bool:
    """Evaluate a CloudFormation condition (Fn::Equals/Not/And/Or, Condition)."""
    ((function, argument),) = expression.items()
    if function == "Fn::Equals":
        left, right = argument
        return _parameter_value(left, parameters) == _parameter_value(right, parameters)
    if function == "Fn::Not":
        return not condition_holds(argument[0], conditions, parameters)
    if function == "Fn::And":
        return all(condition_holds(part, conditions, parameters) for part in argument)
    if function == "Fn::Or":
        return any(condition_holds(part, conditions, parameters) for part in argument)
    if function == "Condition":
        return condition_holds(conditions[argument], conditions, parameters)
    raise AssertionError(f"unsupported condition function {function}")


_NO_VALUE = {"Ref": "AWS::NoValue"}


def _choose_branches(value: Any, truth: dict[str, bool]) -> Any:
    """Resolve Fn::If by the conditions' truth, dropping what resolves to AWS::NoValue."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            return _choose_branches(when_true if truth[condition] else when_false, truth)
        chosen = {key: _choose_branches(item, truth) for key, item in value.items()}
        return {key: item for key, item in chosen.items() if item != _NO_VALUE}
    if isinstance(value, list):
        return [item for item in (_choose_branches(item, truth) for item in value) if item != _NO_VALUE]
    return value


def as_deployed(cloudformation: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources and outputs CloudFormation creates with these parameter values.

    Resources and outputs whose Condition is false are left out and every Fn::If is
    replaced by its chosen branch; everything else is kept as written.
    """
    parameters = {
        name: str((overrides or {}).get(name, spec.get("Default", "")))
        for name, spec in cloudformation.get("Parameters", {}).items()
    }
    unknown = set(overrides or {}) - set(parameters)
    assert not unknown, f"no such parameters: {unknown}"
    for name, spec in cloudformation.get("Parameters", {}).items():
        if "AllowedValues" in spec:
            assert parameters[name] in [str(v) for v in spec["AllowedValues"]], (name, parameters[name])
    conditions = cloudformation.get("Conditions", {})
    truth = {name: condition_holds(expression, conditions, parameters) for name, expression in conditions.items()}

    def kept(section: dict[str, Any]) -> dict[str, Any]:
        return {
            logical_id: _choose_branches(entry, truth)
            for logical_id, entry in section.items()
            if "Condition" not in entry or truth[entry["Condition"]]
        }

    return {
        **cloudformation,
        "Resources": kept(cloudformation["Resources"]),
        "Outputs": kept(cloudformation.get("Outputs", {})),
    }


def resources_of_type(cfn: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource for logical_id, resource in cfn["Resources"].items() if resource["Type"] == resource_type
    }
