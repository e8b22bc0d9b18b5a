"""Reading a SAM template into what relay-local serves.

Only the parts a local gateway needs are modelled: functions (code, handler, environment,
layers, HttpApi events), layers, DynamoDB tables and the WebSocket API. Intrinsic
functions are resolved against local values: a table's Ref is a local table name, a
function's GetAtt Arn a fake local ARN, parameters take their Default or an override.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"


class TemplateError(Exception):
    """The template cannot be served; the message says why and where."""


# ---- YAML with CloudFormation short-form tags ----------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref X` into `{"Ref": "X"}`, `!Sub s` into `{"Fn::Sub": s}`, etc."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


def load_template_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"Template not found: {path}") from None
    except OSError as error:
        raise TemplateError(f"Cannot read template {path}: {error.strerror}") from None
    try:
        document = yaml.load(text, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise TemplateError(f"Template {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"Template {path} has no Resources section.")
    return document


# ---- the model -----------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRoute:
    method: str  # upper case, or "ANY"
    path: str  # API Gateway syntax: /items/{id}, /files/{proxy+}
    function_id: str

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class WebSocketRoute:
    route_key: str
    function_id: str
    # Only routes with a route response send the integration's answer back (two-way).
    route_response_selection_expression: str | None = None


@dataclass
class WebSocketApi:
    logical_id: str
    stage: str
    route_selection_expression: str
    routes: dict[str, WebSocketRoute]


@dataclass
class Function:
    logical_id: str
    name: str
    code_dir: Path
    handler: str
    runtime: str
    timeout_seconds: float
    memory_mb: int
    environment: dict[str, str]
    layer_paths: list[Path]

    @property
    def handler_module(self) -> str:
        return self.handler.rpartition(".")[0].replace("/", ".")

    @property
    def handler_function(self) -> str:
        return self.handler.rpartition(".")[2]

    def handler_file(self) -> Path | None:
        """The handler's source file, if it exists where Lambda would look for it."""
        relative = Path(*self.handler_module.split("."))
        for candidate in (
            self.code_dir / relative.with_suffix(".py"),
            self.code_dir / relative / "__init__.py",
        ):
            if candidate.is_file():
                return candidate
        return None


@dataclass
class Table:
    logical_id: str
    name: str
    properties: dict[str, Any]


@dataclass
class Template:
    path: Path
    stack_name: str
    region: str
    functions: dict[str, Function]
    tables: dict[str, Table]
    websocket_api: WebSocketApi | None
    http_routes: list[HttpRoute]
    warnings: list[str] = field(default_factory=list)

    def function_arn(self, function: Function) -> str:
        return f"arn:{PARTITION}:lambda:{self.region}:{ACCOUNT_ID}:function:{function.name}"


# ---- intrinsic functions -------------------------------------------------------------

_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class Resolver:
    """Evaluates intrinsic functions with the values a local run has."""

    def __init__(
        self,
        document: dict[str, Any],
        *,
        stack_name: str,
        region: str,
        parameter_overrides: dict[str, str],
    ) -> None:
        self.document = document
        self.resources: dict[str, Any] = document["Resources"]
        self.stack_name = stack_name
        self.region = region
        self.parameters = self._parameter_values(document.get("Parameters") or {}, parameter_overrides)
        self.mappings: dict[str, Any] = document.get("Mappings") or {}
        self.conditions: dict[str, Any] = document.get("Conditions") or {}
        self._condition_cache: dict[str, bool] = {}

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

    # Names a deployed stack would give resources; computed lazily and cached.
    def physical_name(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        properties = resource.get("Properties") or {}
        explicit = {
            "AWS::DynamoDB::Table": "TableName",
            "AWS::Serverless::SimpleTable": "TableName",
            "AWS::Serverless::Function": "FunctionName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::Serverless::LayerVersion": "LayerName",
        }.get(resource.get("Type", ""))
        if explicit and properties.get(explicit) is not None:
            return str(self.resolve(properties[explicit]))
        return f"{self.stack_name}-{logical_id}"

    def ref(self, name: str) -> Any:
        pseudo = self.pseudo_parameter(name)
        if pseudo is not None:
            return pseudo
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            resource_type = self.resources[name].get("Type", "")
            if resource_type in ("AWS::Serverless::WebSocketApi", "AWS::Serverless::HttpApi"):
                return local_api_id(name)
            if resource_type == "AWS::Serverless::LayerVersion":
                return f"arn:{PARTITION}:lambda:{self.region}:{ACCOUNT_ID}:layer:{self.physical_name(name)}:1"
            return self.physical_name(name)
        if name == "ServerlessHttpApi":  # the implicit API SAM creates for HttpApi events
            return local_api_id(name)
        raise TemplateError(f"!Ref {name}: no such parameter or resource")

    def get_att(self, resource: str, attribute: str) -> str:
        if resource not in self.resources and resource != "ServerlessHttpApi":
            raise TemplateError(f"!GetAtt {resource}.{attribute}: no such resource")
        resource_type = self.resources.get(resource, {}).get("Type", "")
        if attribute == "Arn":
            if resource_type in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
                return f"arn:{PARTITION}:dynamodb:{self.region}:{ACCOUNT_ID}:table/{self.physical_name(resource)}"
            if resource_type in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
                return f"arn:{PARTITION}:lambda:{self.region}:{ACCOUNT_ID}:function:{self.physical_name(resource)}"
        if attribute == "StreamArn":
            table_arn = self.get_att(resource, "Arn")
            return f"{table_arn}/stream/1970-01-01T00:00:00.000"
        if attribute == "ApiId":
            return local_api_id(resource)
        return f"arn:{PARTITION}:local:{self.region}:{ACCOUNT_ID}:{resource}/{attribute}"

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

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(str(argument))
            if key == "Fn::GetAtt":
                parts = argument if isinstance(argument, list) else str(argument).split(".", 1)
                return self.get_att(str(self.resolve(parts[0])), str(self.resolve(parts[1])))
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::Join":
                delimiter, items = argument
                return str(delimiter).join(str(item) for item in self.resolve(items))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                delimiter, text = argument
                return str(self.resolve(text)).split(str(delimiter))
            if key == "Fn::If":
                condition, when_true, when_false = argument
                return self.resolve(when_true if self.condition(condition) else when_false)
            if key == "Fn::Equals":
                left, right = (self.resolve(item) for item in argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(argument[0])
            if key == "Fn::And":
                return all(self.resolve(item) for item in argument)
            if key == "Fn::Or":
                return any(self.resolve(item) for item in argument)
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key == "Fn::FindInMap":
                map_name, top, second = (str(self.resolve(item)) for item in argument)
                return self.mappings[map_name][top][second]
            if key == "Fn::Base64":
                import base64  # noqa: PLC0415 - rare

                return base64.b64encode(str(self.resolve(argument)).encode()).decode()
            if key == "Fn::GetAZs":
                return [f"{self.region}a", f"{self.region}b", f"{self.region}c"]
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not _NO_VALUE}


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


def local_api_id(logical_id: str) -> str:
    """A stable, API-Gateway-shaped id (10 lower-case characters) for an API of the template."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256(logical_id.encode()).hexdigest()
    return "".join(ch for ch in digest if ch.isalnum())[:10]


# ---- SAM Globals ---------------------------------------------------------------------


def merge_globals(global_properties: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """SAM's rules: maps merge recursively, lists add up (globals first), scalars: the resource wins."""
    merged = copy.deepcopy(global_properties)
    for key, value in properties.items():
        if key in merged and isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge_globals(merged[key], value)
        elif key in merged and isinstance(merged[key], list) and isinstance(value, list):
            merged[key] = merged[key] + value
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ---- building the model --------------------------------------------------------------

TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable")
FUNCTION_TYPE = "AWS::Serverless::Function"
WEBSOCKET_TYPE = "AWS::Serverless::WebSocketApi"
DEFAULT_WEBSOCKET_STAGE = "default"  # what SAM names the stage when StageName is absent


def _environment_value(function_id: str, name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(
        f"{function_id}: environment variable {name} resolves to {value!r}, which relay-local cannot turn into a string"
    )


def _function(
    logical_id: str,
    properties: dict[str, Any],
    resolver: Resolver,
    template_dir: Path,
    layers: dict[str, Path],
) -> Function:
    code_uri = properties.get("CodeUri")
    if properties.get("InlineCode") is not None:
        raise TemplateError(f"{logical_id}: InlineCode is not supported by relay-local; use CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local path (got {code_uri!r})")
    if properties.get("PackageType", "Zip") != "Zip":
        raise TemplateError(f"{logical_id}: only Zip functions can run in relay-local")
    handler = properties.get("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{logical_id}: Handler must look like module.function (got {handler!r})")
    variables = ((properties.get("Environment") or {}).get("Variables")) or {}
    environment = {name: _environment_value(logical_id, name, value) for name, value in variables.items()}
    layer_paths: list[Path] = []
    for layer in properties.get("Layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("Ref"), str) and layer["Ref"] in layers:
            layer_paths.append(layers[layer["Ref"]])
        else:
            raise TemplateError(
                f"{logical_id}: layer {layer!r} is not a LayerVersion of this template; relay-local "
                "can only put local layers on the import path"
            )
    return Function(
        logical_id=logical_id,
        name=resolver.physical_name(logical_id),
        code_dir=(template_dir / code_uri).resolve(),
        handler=handler,
        runtime=str(properties.get("Runtime", "")),
        timeout_seconds=float(properties.get("Timeout", 3)),
        memory_mb=int(properties.get("MemorySize", 128)),
        environment=environment,
        layer_paths=layer_paths,
    )


def _layer_import_path(logical_id: str, resource: dict[str, Any], template_dir: Path) -> Path:
    content_uri = (resource.get("Properties") or {}).get("ContentUri")
    if not isinstance(content_uri, str):
        raise TemplateError(f"{logical_id}: ContentUri must be a local path (got {content_uri!r})")
    root = (template_dir / content_uri).resolve()
    build_method = str((resource.get("Metadata") or {}).get("BuildMethod", ""))
    # `sam build` with a pythonX.Y build method copies the source root to /opt/python;
    # a pre-built layer already has the python/ folder inside.
    if build_method.startswith("python"):
        return root
    return root / "python"


def _function_reference(value: Any) -> str | None:
    """The logical id of a function referenced by !GetAtt F.Arn, !Ref F or !Sub '${F.Arn}'."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return str(target[0] if isinstance(target, list) else str(target).split(".")[0])
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            match = re.fullmatch(r"\$\{(\w+)\.Arn\}", value["Fn::Sub"])
            return match.group(1) if match else None
    return None


def _http_routes(function_id: str, events: dict[str, Any], resolver: Resolver, warnings: list[str]) -> list[HttpRoute]:
    routes: list[HttpRoute] = []
    for event_id, event in events.items():
        event_type = event.get("Type")
        if event_type != "HttpApi":
            warnings.append(f"{function_id}.{event_id}: event type {event_type} is not served locally")
            continue
        properties = resolver.resolve(event.get("Properties") or {})
        method = str(properties.get("Method", "ANY")).upper()
        routes.append(
            HttpRoute(
                method="ANY" if method == "X-AMAZON-APIGATEWAY-ANY-METHOD" else method,
                path=str(properties.get("Path", "$default")),
                function_id=function_id,
            )
        )
    return routes


def _websocket_api(logical_id: str, properties: dict[str, Any], resolver: Resolver) -> WebSocketApi:
    routes: dict[str, WebSocketRoute] = {}
    for route_key, route in (properties.get("Routes") or {}).items():
        function_id = _function_reference((route or {}).get("FunctionArn"))
        if function_id is None or resolver.resources.get(function_id, {}).get("Type") != FUNCTION_TYPE:
            raise TemplateError(
                f"{logical_id}: route {route_key} must point at a function of this template "
                "with FunctionArn: !GetAtt <Function>.Arn"
            )
        selection = route.get("RouteResponseSelectionExpression")
        routes[str(route_key)] = WebSocketRoute(
            route_key=str(route_key),
            function_id=function_id,
            route_response_selection_expression=str(resolver.resolve(selection)) if selection else None,
        )
    expression = properties.get("RouteSelectionExpression")
    if not isinstance(expression, str):
        raise TemplateError(f"{logical_id}: RouteSelectionExpression is required")
    stage = properties.get("StageName")
    return WebSocketApi(
        logical_id=logical_id,
        stage=str(resolver.resolve(stage)) if stage is not None else DEFAULT_WEBSOCKET_STAGE,
        route_selection_expression=expression,
        routes=routes,
    )


def load_template(
    path: Path,
    *,
    stack_name: str = "local",
    region: str = "us-east-1",
    parameter_overrides: dict[str, str] | None = None,
) -> Template:
    document = load_template_document(path)
    template_dir = path.resolve().parent
    resolver = Resolver(document, stack_name=stack_name, region=region, parameter_overrides=parameter_overrides or {})
    resources: dict[str, Any] = document["Resources"]
    global_sections = document.get("Globals") or {}
    function_globals = global_sections.get("Function") or {}
    websocket_globals = global_sections.get("WebSocketApi") or {}
    warnings: list[str] = []

    layers = {
        logical_id: _layer_import_path(logical_id, resource, template_dir)
        for logical_id, resource in resources.items()
        if resource.get("Type") == "AWS::Serverless::LayerVersion"
    }

    functions: dict[str, Function] = {}
    http_routes: list[HttpRoute] = []
    tables: dict[str, Table] = {}
    websocket_apis: list[WebSocketApi] = []
    for logical_id, resource in resources.items():
        resource_type = resource.get("Type")
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        raw_properties = resource.get("Properties") or {}
        if resource_type == FUNCTION_TYPE:
            # Events are kept unresolved: Ref to a layer must stay a reference we can follow.
            merged = merge_globals(function_globals, raw_properties)
            events = merged.pop("Events", None) or {}
            layer_refs = merged.pop("Layers", None) or []
            properties = resolver.resolve(merged)
            properties["Layers"] = layer_refs
            functions[logical_id] = _function(logical_id, properties, resolver, template_dir, layers)
            http_routes.extend(_http_routes(logical_id, events, resolver, warnings))
        elif resource_type in TABLE_TYPES:
            tables[logical_id] = Table(
                logical_id=logical_id,
                name=resolver.physical_name(logical_id),
                properties=_table_properties(resource_type, resolver.resolve(raw_properties)),
            )
        elif resource_type == WEBSOCKET_TYPE:
            properties = merge_globals(websocket_globals, raw_properties)
            websocket_apis.append(_websocket_api(logical_id, properties, resolver))
        elif resource_type in ("AWS::ApiGatewayV2::Api",) and raw_properties.get("ProtocolType") == "WEBSOCKET":
            warnings.append(
                f"{logical_id}: plain AWS::ApiGatewayV2 WebSocket APIs are not served; "
                "use AWS::Serverless::WebSocketApi"
            )

    for api in websocket_apis:
        for route in api.routes.values():
            if route.function_id not in functions:
                raise TemplateError(
                    f"{api.logical_id}: route {route.route_key} names {route.function_id}, which is not a function"
                )
    if len(websocket_apis) > 1:
        warnings.append(f"{len(websocket_apis)} WebSocket APIs found; serving {websocket_apis[0].logical_id} only")
    return Template(
        path=path,
        stack_name=stack_name,
        region=region,
        functions=functions,
        tables=tables,
        websocket_api=websocket_apis[0] if websocket_apis else None,
        http_routes=http_routes,
        warnings=warnings,
    )


def _table_properties(resource_type: str, properties: dict[str, Any]) -> dict[str, Any]:
    """AWS::Serverless::SimpleTable expressed as AWS::DynamoDB::Table properties."""
    if resource_type == "AWS::DynamoDB::Table":
        return properties
    key = properties.get("PrimaryKey") or {"Name": "id", "Type": "String"}
    attribute_type = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
    return {
        "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": attribute_type}],
        "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
