"""Intrinsic functions and parameters, evaluated with the values a local run has.

Ref and GetAtt return what CloudFormation returns for the resource types relay-local
models (a table's Ref is its name, a stage's Ref its name, a queue's Ref its URL, ...).
For anything else a value has to be invented; each invented one is named once in
`Resolver.warnings`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, ClassVar

from relay_local.cfn_yaml import TemplateError

ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
DEFAULT_WEBSOCKET_STAGE = "default"  # what SAM names a WebSocketApi's stage when StageName is absent

API_TYPES = ("AWS::Serverless::WebSocketApi", "AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api")
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable")
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
# Resources whose Ref is an API Gateway id (the ids of routes, integrations, ...).
_ID_TYPES = (
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Deployment",
    "AWS::ApiGatewayV2::Authorizer",
    "AWS::ApiGatewayV2::RouteResponse",
    "AWS::ApiGatewayV2::IntegrationResponse",
)
# Resources whose Ref is their name.
_NAMED_BY_REF = ("AWS::ApiGatewayV2::Stage", "AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::Events::Rule")
# The property that names a resource, where the template may set it.
_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::IAM::Role": "RoleName",
    "AWS::ApiGatewayV2::Stage": "StageName",
    "AWS::Events::Rule": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
}

_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def local_id(logical_id: str, length: int = 10) -> str:
    """A stable, API-Gateway-shaped id (lower-case letters and digits) for a resource of the template."""
    return hashlib.sha256(logical_id.encode()).hexdigest()[:length]


def local_api_id(logical_id: str) -> str:
    return local_id(logical_id, 10)


class Resolver:
    """Evaluates intrinsic functions with the values a local run has."""

    def __init__(
        self,
        document: dict[str, Any],
        *,
        stack_name: str,
        region: str,
        parameter_overrides: dict[str, str],
        api_endpoint: str = "ws://127.0.0.1:3001",
    ) -> None:
        self.document = document
        self.resources: dict[str, Any] = document["Resources"]
        self.stack_name = stack_name
        self.region = region
        self.api_endpoint = api_endpoint
        self.parameters = self._parameter_values(document.get("Parameters") or {}, parameter_overrides)
        self.mappings: dict[str, Any] = document.get("Mappings") or {}
        self.conditions: dict[str, Any] = document.get("Conditions") or {}
        self._condition_cache: dict[str, bool] = {}
        self.warnings: list[str] = []
        self._invented: set[str] = set()

    @staticmethod
    def _parameter_values(declared: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"--parameter-overrides names unknown parameters: {', '.join(unknown)}")
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if name in overrides:
                values[name] = overrides[name]
            elif isinstance(spec, dict) and "Default" in spec:
                default = spec["Default"]
                values[name] = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            else:
                raise TemplateError(f"Parameter {name} has no Default; pass --parameter-overrides {name}=VALUE")
            _check_parameter(name, spec if isinstance(spec, dict) else {}, values[name])
        return values

    def pseudo_parameter(self, name: str) -> str | None:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{ACCOUNT_ID}:stack/"
            f"{self.stack_name}/00000000-0000-0000-0000-000000000000",
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
        }.get(name)

    def resource_type(self, logical_id: str) -> str:
        return str(self.resources.get(logical_id, {}).get("Type", ""))

    def physical_name(self, logical_id: str) -> str:
        """The name a deployed stack would give the resource: its own, or `<stack>-<logical id>`."""
        resource = self.resources[logical_id]
        properties = resource.get("Properties") or {}
        name_property = _NAME_PROPERTY.get(self.resource_type(logical_id))
        if name_property and properties.get(name_property) is not None:
            return str(self.resolve(properties[name_property]))
        if self.resource_type(logical_id) == "AWS::ApiGatewayV2::Stage":
            return DEFAULT_WEBSOCKET_STAGE
        return f"{self.stack_name}-{logical_id}"

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{PARTITION}:{service}:{self.region}:{ACCOUNT_ID}:{resource}"

    def _invent(self, what: str, value: str) -> str:
        if what not in self._invented:
            self._invented.add(what)
            self.warnings.append(f"{what} is not modelled by relay-local; it stands for {value!r}")
        return value

    def ref(self, name: str) -> Any:
        pseudo = self.pseudo_parameter(name)
        if pseudo is not None:
            return pseudo
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name == "ServerlessHttpApi" and name not in self.resources:  # the API SAM makes for HttpApi events
            return local_api_id(name)
        if name not in self.resources:
            raise TemplateError(f"!Ref {name}: no such parameter or resource")
        resource_type = self.resource_type(name)
        if resource_type in API_TYPES:
            return local_api_id(name)
        if resource_type in _ID_TYPES:
            return local_id(name, 7)
        if resource_type in LAYER_TYPES:
            return self.arn("lambda", f"layer:{self.physical_name(name)}:1")
        if resource_type == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.{URL_SUFFIX}/{ACCOUNT_ID}/{self.physical_name(name)}"
        if resource_type == "AWS::SNS::Topic":
            return self.arn("sns", self.physical_name(name))
        if resource_type in (*FUNCTION_TYPES, *TABLE_TYPES, *_NAMED_BY_REF):
            return self.physical_name(name)
        return self._invent(f"!Ref {name} ({resource_type})", self.physical_name(name))

    def get_att(self, resource: str, attribute: str) -> str:
        if resource not in self.resources:
            raise TemplateError(f"!GetAtt {resource}.{attribute}: no such resource")
        resource_type = self.resource_type(resource)
        name = self.physical_name(resource)
        known: dict[str, str] = {}
        if resource_type in TABLE_TYPES:
            known = {"Arn": self.arn("dynamodb", f"table/{name}")}
            known["StreamArn"] = f"{known['Arn']}/stream/1970-01-01T00:00:00.000"
        elif resource_type in FUNCTION_TYPES:
            known = {"Arn": self.arn("lambda", f"function:{name}")}
        elif resource_type in API_TYPES:
            known = {"ApiId": local_api_id(resource), "ApiEndpoint": self.api_endpoint}
        elif resource_type == "AWS::SQS::Queue":
            known = {"Arn": self.arn("sqs", name), "QueueName": name, "QueueUrl": str(self.ref(resource))}
        elif resource_type == "AWS::SNS::Topic":
            known = {"TopicArn": self.arn("sns", name), "TopicName": name}
        elif resource_type == "AWS::IAM::Role":
            known = {"Arn": f"arn:{PARTITION}:iam::{ACCOUNT_ID}:role/{name}", "RoleId": local_id(resource, 21).upper()}
        elif resource_type in LAYER_TYPES:
            known = {"Arn": str(self.ref(resource))}
        elif resource_type == "AWS::Events::Rule":
            known = {"Arn": self.arn("events", f"rule/{name}")}
        elif resource_type == "AWS::Logs::LogGroup":
            known = {"Arn": self.arn("logs", f"log-group:{name}:*")}
        elif resource_type == "AWS::ApiGatewayV2::Authorizer":
            known = {"AuthorizerId": local_id(resource, 7)}
        if attribute in known:
            return known[attribute]
        return self._invent(
            f"!GetAtt {resource}.{attribute} ({resource_type})", self.arn("local", f"{resource}/{attribute}")
        )

    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self.conditions:
                raise TemplateError(f"Condition {name} is not defined")
            self._condition_cache[name] = bool(self.resolve(self.conditions[name]))
        return self._condition_cache[name]

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {k: self.resolve(v) for k, v in (argument[1] or {}).items()}
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                resource, _, attribute = name.partition(".")
                return self.get_att(resource, attribute)
            return str(self.ref(name))

        return _SUB_VARIABLE.sub(replace, str(text))

    def _import_value(self, argument: Any) -> str:
        name = str(self.resolve(argument))
        return self._invent(f"!ImportValue {name} (another stack's export)", f"imported-{name}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            function = self._functions.get(key)
            if function is not None and not (key == "Condition" and not isinstance(argument, str)):
                return function(self, argument)
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not _NO_VALUE}

    def _get_att_argument(self, argument: Any) -> str:
        parts = argument if isinstance(argument, list) else str(argument).split(".", 1)
        return self.get_att(str(self.resolve(parts[0])), str(self.resolve(parts[1])))

    def _join(self, argument: Any) -> str:
        delimiter, items = argument
        return str(delimiter).join(str(item) for item in self.resolve(items))

    def _select(self, argument: Any) -> Any:
        index, items = argument
        return self.resolve(items)[int(self.resolve(index))]

    def _split(self, argument: Any) -> list[str]:
        delimiter, text = argument
        return str(self.resolve(text)).split(str(delimiter))

    def _if(self, argument: Any) -> Any:
        condition, when_true, when_false = argument
        return self.resolve(when_true if self.condition(condition) else when_false)

    def _equals(self, argument: Any) -> bool:
        left, right = (self.resolve(item) for item in argument)
        return str(left) == str(right)

    def _find_in_map(self, argument: Any) -> Any:
        map_name, top, second = (str(self.resolve(item)) for item in argument)
        try:
            return self.mappings[map_name][top][second]
        except KeyError:
            raise TemplateError(f"!FindInMap [{map_name}, {top}, {second}]: no such entry") from None

    _functions: ClassVar[dict[str, Any]] = {
        "Ref": lambda self, argument: self.ref(str(argument)),
        "Fn::GetAtt": _get_att_argument,
        "Fn::Sub": _sub,
        "Fn::Join": _join,
        "Fn::Select": _select,
        "Fn::Split": _split,
        "Fn::If": _if,
        "Fn::Equals": _equals,
        "Fn::Not": lambda self, argument: not self.resolve(argument[0]),
        "Fn::And": lambda self, argument: all(self.resolve(item) for item in argument),
        "Fn::Or": lambda self, argument: any(self.resolve(item) for item in argument),
        "Condition": lambda self, argument: self.condition(argument),
        "Fn::FindInMap": _find_in_map,
        "Fn::ImportValue": _import_value,
        "Fn::Base64": lambda self, argument: base64.b64encode(str(self.resolve(argument)).encode()).decode(),
        "Fn::GetAZs": lambda self, _argument: [f"{self.region}a", f"{self.region}b", f"{self.region}c"],
    }


def _check_parameter(name: str, spec: dict[str, Any], value: str) -> None:
    """The constraints CloudFormation checks before it creates anything."""
    problem: str | None = None
    allowed = spec.get("AllowedValues")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            problem = "is not a number"
        else:
            if "MinValue" in spec and number < float(spec["MinValue"]):
                problem = f"is below MinValue {spec['MinValue']}"
            elif "MaxValue" in spec and number > float(spec["MaxValue"]):
                problem = f"is above MaxValue {spec['MaxValue']}"
    if problem is None and allowed is not None and value not in [str(item) for item in allowed]:
        problem = f"is not one of {', '.join(map(str, allowed))}"
    if problem is None and "AllowedPattern" in spec and not re.fullmatch(str(spec["AllowedPattern"]), value):
        problem = f"does not match AllowedPattern {spec['AllowedPattern']}"
    if problem is None and "MinLength" in spec and len(value) < int(spec["MinLength"]):
        problem = f"is shorter than MinLength {spec['MinLength']}"
    if problem is None and "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        problem = f"is longer than MaxLength {spec['MaxLength']}"
    if problem is not None:
        raise TemplateError(f"Parameter {name}: {value!r} {problem}")
