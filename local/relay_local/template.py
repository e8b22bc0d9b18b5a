"""The model of a template relay-local serves, built from SAM or plain CloudFormation resources.

Both ways of declaring a WebSocket API give the same `WebSocketApi`:
- `AWS::Serverless::WebSocketApi` with its Routes (FunctionArn per route);
- plain `AWS::ApiGatewayV2::Api` (ProtocolType WEBSOCKET) with Route, Integration,
  Stage, RouteResponse and Authorizer resources; Deployment and `AWS::Lambda::Permission`
  change nothing locally.
Functions (code, handler, runtime, environment, layers, event sources), layers, DynamoDB
tables, SQS queues and SNS topics are modelled too. Intrinsics are in `intrinsics`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay_local.cfn_yaml import TemplateError, load_template_document
from relay_local.intrinsics import (
    ACCOUNT_ID,
    DEFAULT_WEBSOCKET_STAGE,
    FUNCTION_TYPES,
    LAYER_TYPES,
    PARTITION,
    TABLE_TYPES,
    Resolver,
    local_api_id,
    local_id,
)

__all__ = [
    "Authorizer",
    "EventSource",
    "Function",
    "HttpRoute",
    "Queue",
    "Table",
    "Template",
    "TemplateError",
    "Topic",
    "WebSocketApi",
    "WebSocketRoute",
    "load_template",
    "merge_globals",
]

# Environment keys Lambda reserves: a function that sets one is refused at deployment.
RESERVED_ENVIRONMENT_KEYS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


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
class Authorizer:
    """A Lambda REQUEST authorizer; identity sources as API Gateway writes them."""

    logical_id: str
    function_id: str
    # route.request.header.Name or route.request.querystring.name
    identity_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebSocketRoute:
    route_key: str
    function_id: str
    # Only routes with a route response send the integration's answer back (two-way).
    route_response_selection_expression: str | None = None
    authorizer: Authorizer | None = None


@dataclass
class WebSocketApi:
    logical_id: str
    stage: str
    route_selection_expression: str
    routes: dict[str, WebSocketRoute]

    @property
    def api_id(self) -> str:
        return local_api_id(self.logical_id)


@dataclass(frozen=True)
class EventSource:
    """A non-API trigger of a function: kind is SQS, DynamoDB, SNS or Schedule."""

    kind: str
    function_id: str
    name: str  # Function.EventId, for logs and `relay-local schedule`
    target_id: str = ""  # the queue, table or topic's logical id
    batch_size: int = 10
    properties: dict[str, Any] = field(default_factory=dict, compare=False)


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

    @property
    def is_node(self) -> bool:
        return self.runtime.startswith("nodejs")

    def handler_file(self) -> Path | None:
        """The handler's source file, if it exists where Lambda would look for it."""
        relative = Path(*self.handler.rpartition(".")[0].split("/"))
        if self.is_node:
            candidates = [self.code_dir / relative.with_suffix(suffix) for suffix in (".mjs", ".js", ".cjs")]
        else:
            relative = Path(*self.handler_module.split("."))
            candidates = [self.code_dir / relative.with_suffix(".py"), self.code_dir / relative / "__init__.py"]
        return next((candidate for candidate in candidates if candidate.is_file()), None)


@dataclass
class Table:
    logical_id: str
    name: str
    properties: dict[str, Any]


@dataclass
class Queue:
    logical_id: str
    name: str
    url: str
    properties: dict[str, Any]


@dataclass
class Topic:
    logical_id: str
    name: str
    arn: str


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
    queues: dict[str, Queue] = field(default_factory=dict)
    topics: dict[str, Topic] = field(default_factory=dict)
    event_sources: list[EventSource] = field(default_factory=list)
    # Features the template uses that relay-local does not serve, listed once at start-up.
    unsupported: list[str] = field(default_factory=list)

    def function_arn(self, function: Function) -> str:
        return f"arn:{PARTITION}:lambda:{self.region}:{ACCOUNT_ID}:function:{function.name}"


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

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_WEBSOCKET = "AWS::Serverless::WebSocketApi"
_FUNCTION_ARN = re.compile(r"^arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:/]+)(?::[^/]+)?$")
_INTEGRATION_URI = re.compile(r"^arn:[^:]+:apigateway:[^:]*:lambda:path/[^/]+/functions/(.+)/invocations$")


def _environment_value(function_id: str, name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(
        f"{function_id}: environment variable {name} resolves to {value!r}, which relay-local cannot turn into a string"
    )


class _ModelBuilder:
    """One pass over the resources; keeps what the gateway, the workers and the pollers need."""

    def __init__(self, document: dict[str, Any], resolver: Resolver, template_dir: Path) -> None:
        self.document = document
        self.resolver = resolver
        self.template_dir = template_dir
        self.resources: dict[str, Any] = document["Resources"]
        self.globals: dict[str, Any] = document.get("Globals") or {}
        self.warnings: list[str] = []
        self.unsupported: list[str] = []
        self.functions: dict[str, Function] = {}
        self.function_ids_by_name: dict[str, str] = {}
        self.layers: dict[str, Path] = {}
        self.event_sources: list[EventSource] = []
        self.http_routes: list[HttpRoute] = []
        self.active = {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if isinstance(resource, dict)
            and ("Condition" not in resource or resolver.condition(str(resource["Condition"])))
        }

    def of_type(self, *types: str) -> list[tuple[str, dict[str, Any]]]:
        return [(logical_id, resource) for logical_id, resource in self.active.items() if resource.get("Type") in types]

    # ---- functions and layers ----

    def layer_import_path(self, logical_id: str, resource: dict[str, Any]) -> Path:
        properties = resource.get("Properties") or {}
        content_uri = properties.get("ContentUri", properties.get("Content"))
        if not isinstance(content_uri, str):
            raise TemplateError(f"{logical_id}: ContentUri must be a local path (got {content_uri!r})")
        root = (self.template_dir / content_uri).resolve()
        build_method = str((resource.get("Metadata") or {}).get("BuildMethod", ""))
        # `sam build` with a pythonX.Y or nodejs build method builds the source root into
        # /opt/python or /opt/nodejs; a pre-built layer already has that folder inside.
        if build_method.startswith(("python", "nodejs")):
            return root
        if (root / "nodejs").is_dir() and not (root / "python").is_dir():
            return root / "nodejs"
        return root / "python"

    def function(self, logical_id: str, resource: dict[str, Any]) -> Function:
        is_sam = resource.get("Type") == SERVERLESS_FUNCTION
        raw = resource.get("Properties") or {}
        merged = merge_globals(self.globals.get("Function") or {}, raw) if is_sam else dict(raw)
        # Events and layers are kept unresolved: their Refs must stay references we can follow.
        events = merged.pop("Events", None) or {}
        layer_refs = merged.pop("Layers", None) or []
        properties = self.resolver.resolve(merged)
        code_uri = properties.get("CodeUri") if is_sam else (properties.get("Code") or {})
        if properties.get("InlineCode") is not None or (isinstance(code_uri, dict) and "ZipFile" in code_uri):
            raise TemplateError(f"{logical_id}: inline code is not supported by relay-local; use CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri must be a local path (got {code_uri!r})")
        if properties.get("PackageType", "Zip") != "Zip":
            raise TemplateError(f"{logical_id}: only Zip functions can run in relay-local")
        handler = properties.get("Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"{logical_id}: Handler must look like module.function (got {handler!r})")
        variables = ((properties.get("Environment") or {}).get("Variables")) or {}
        environment = {name: _environment_value(logical_id, name, value) for name, value in variables.items()}
        reserved = sorted(set(environment) & RESERVED_ENVIRONMENT_KEYS)
        if reserved:
            raise TemplateError(
                f"{logical_id}: environment variables {', '.join(reserved)} are reserved by Lambda, "
                "which refuses a function that sets them"
            )
        layer_paths: list[Path] = []
        for layer in layer_refs:
            target = layer.get("Ref") if isinstance(layer, dict) else None
            if isinstance(target, str) and target in self.layers:
                layer_paths.append(self.layers[target])
            else:
                raise TemplateError(
                    f"{logical_id}: layer {layer!r} is not a LayerVersion of this template; relay-local "
                    "can only put local layers on the import path"
                )
        if properties.get("VpcConfig"):
            self.unsupported.append(f"{logical_id}: VpcConfig (functions reach everything this machine reaches)")
        function = Function(
            logical_id=logical_id,
            name=self.resolver.physical_name(logical_id),
            code_dir=(self.template_dir / code_uri).resolve(),
            handler=handler,
            runtime=str(properties.get("Runtime", "")),
            timeout_seconds=float(properties.get("Timeout", 3)),
            memory_mb=int(properties.get("MemorySize", 128)),
            environment=environment,
            layer_paths=layer_paths,
        )
        self.add_events(logical_id, events)
        return function

    def add_events(self, function_id: str, events: dict[str, Any]) -> None:
        for event_id, event in events.items():
            event_type = str(event.get("Type"))
            properties = self.resolver.resolve(event.get("Properties") or {})
            name = f"{function_id}.{event_id}"
            if event_type == "HttpApi":
                method = str(properties.get("Method", "ANY")).upper()
                self.http_routes.append(
                    HttpRoute(
                        method="ANY" if method == "X-AMAZON-APIGATEWAY-ANY-METHOD" else method,
                        path=str(properties.get("Path", "$default")),
                        function_id=function_id,
                    )
                )
            elif event_type in ("SQS", "DynamoDB", "SNS"):
                source_property = {"SQS": "Queue", "DynamoDB": "Stream"}.get(event_type, "Topic")
                raw_target = (event.get("Properties") or {}).get(source_property)
                target = self.target_of(raw_target, event_type)
                if target is None:
                    self.unsupported.append(f"{name}: {event_type} source {raw_target!r} is not in this template")
                    continue
                batch = int(properties.get("BatchSize", 100 if event_type == "DynamoDB" else 10))
                self.event_sources.append(EventSource(event_type, function_id, name, target, batch, properties))
            elif event_type in ("Schedule", "ScheduleV2"):
                self.event_sources.append(EventSource("Schedule", function_id, name, "", 1, properties))
            else:
                self.unsupported.append(f"{name}: event type {event_type} is not served locally")

    def target_of(self, raw: Any, event_type: str) -> str | None:
        """The logical id a queue, stream or topic reference names (Ref, GetAtt, or its ARN/URL)."""
        if isinstance(raw, dict):
            if "Ref" in raw:
                return str(raw["Ref"]) if raw["Ref"] in self.active else None
            if "Fn::GetAtt" in raw:
                target = raw["Fn::GetAtt"]
                logical_id = str(target[0] if isinstance(target, list) else str(target).split(".")[0])
                return logical_id if logical_id in self.active else None
        value = str(self.resolver.resolve(raw))
        kinds = {"SQS": ("AWS::SQS::Queue",), "DynamoDB": TABLE_TYPES, "SNS": ("AWS::SNS::Topic",)}[event_type]
        for logical_id, _resource in self.of_type(*kinds):
            name = self.resolver.physical_name(logical_id)
            if value.endswith((f":{name}", f"/{name}")) or f"table/{name}/stream/" in value:
                return logical_id
        return None

    def function_id_for(self, reference: str) -> str | None:
        """The function a resolved ARN, integration URI or name points at."""
        match = _INTEGRATION_URI.match(reference)
        if match:
            reference = match.group(1)
        match = _FUNCTION_ARN.match(reference)
        name = match.group(1) if match else reference
        return self.function_ids_by_name.get(name)

    # ---- plain resources: mappings, subscriptions, rules ----

    def plain_event_sources(self) -> None:
        for logical_id, resource in self.of_type("AWS::Lambda::EventSourceMapping"):
            raw = resource.get("Properties") or {}
            properties = self.resolver.resolve(raw)
            function_id = self.function_id_for(str(properties.get("FunctionName", "")))
            arn = str(properties.get("EventSourceArn", ""))
            kind = "SQS" if ":sqs:" in arn else "DynamoDB" if ":dynamodb:" in arn else ""
            target = self.target_of(raw.get("EventSourceArn"), kind) if kind and function_id else None
            if function_id is None or target is None:
                self.unsupported.append(f"{logical_id}: event source mapping of {arn or 'an unknown source'}")
                continue
            batch = int(properties.get("BatchSize", 100 if kind == "DynamoDB" else 10))
            self.event_sources.append(EventSource(kind, function_id, logical_id, target, batch, properties))
        for logical_id, resource in self.of_type("AWS::SNS::Subscription"):
            raw = resource.get("Properties") or {}
            properties = self.resolver.resolve(raw)
            function_id = self.function_id_for(str(properties.get("Endpoint", "")))
            target = self.target_of(raw.get("TopicArn"), "SNS")
            if properties.get("Protocol") == "lambda" and function_id and target:
                self.event_sources.append(EventSource("SNS", function_id, logical_id, target, 1, properties))
        for logical_id, resource in self.of_type("AWS::Events::Rule"):
            properties = self.resolver.resolve(resource.get("Properties") or {})
            for target in properties.get("Targets") or []:
                function_id = self.function_id_for(str(target.get("Arn", "")))
                if function_id is not None and properties.get("ScheduleExpression"):
                    schedule = {"Schedule": properties["ScheduleExpression"], "Input": target.get("Input")}
                    self.event_sources.append(EventSource("Schedule", function_id, logical_id, "", 1, schedule))

    # ---- WebSocket APIs ----

    def serverless_websocket_api(self, logical_id: str, resource: dict[str, Any]) -> WebSocketApi:
        properties = merge_globals(self.globals.get("WebSocketApi") or {}, resource.get("Properties") or {})
        routes: dict[str, WebSocketRoute] = {}
        for route_key, route in (properties.get("Routes") or {}).items():
            function_id = self.function_id_for(str(self.resolver.resolve((route or {}).get("FunctionArn", ""))))
            if function_id is None:
                raise TemplateError(
                    f"{logical_id}: route {route_key} must point at a function of this template "
                    "with FunctionArn: !GetAtt <Function>.Arn"
                )
            selection = route.get("RouteResponseSelectionExpression")
            routes[str(route_key)] = WebSocketRoute(
                route_key=str(route_key),
                function_id=function_id,
                route_response_selection_expression=str(self.resolver.resolve(selection)) if selection else None,
            )
        auth = self.resolver.resolve(properties.get("Auth") or {})
        if auth and "$connect" in routes:
            routes["$connect"] = self.serverless_authorizer(logical_id, auth, routes["$connect"])
        self.check_api_properties(logical_id, properties)
        stage = properties.get("StageName")
        return WebSocketApi(
            logical_id=logical_id,
            stage=str(self.resolver.resolve(stage)) if stage is not None else DEFAULT_WEBSOCKET_STAGE,
            route_selection_expression=self.route_selection_expression(logical_id, properties),
            routes=routes,
        )

    def serverless_authorizer(self, api_id: str, auth: dict[str, Any], route: WebSocketRoute) -> WebSocketRoute:
        """SAM's Auth: {AuthType: CUSTOM|AWS_IAM|NONE, AuthArn, IdentitySource}."""
        auth_type = str(auth.get("AuthType", "NONE")).upper()
        if auth_type == "AWS_IAM":
            self.unsupported.append(f"{api_id}: IAM authorization on $connect (every connection is let in)")
            return route
        if auth_type != "CUSTOM":
            return route
        function_id = self.function_id_for(str(auth.get("AuthArn", "")))
        if function_id is None:
            raise TemplateError(f"{api_id}: Auth.AuthArn must name a function of this template")
        sources = auth.get("IdentitySource") or []
        authorizer = Authorizer(f"{api_id}Authorizer", function_id, tuple(str(source) for source in sources))
        return WebSocketRoute(route.route_key, route.function_id, route.route_response_selection_expression, authorizer)

    def route_selection_expression(self, logical_id: str, properties: dict[str, Any]) -> str:
        expression = self.resolver.resolve(properties.get("RouteSelectionExpression"))
        if not isinstance(expression, str):
            raise TemplateError(f"{logical_id}: RouteSelectionExpression is required")
        return expression

    def check_api_properties(self, logical_id: str, properties: dict[str, Any]) -> None:
        if properties.get("ApiKeySelectionExpression"):
            self.unsupported.append(f"{logical_id}: ApiKeySelectionExpression (API keys are not checked)")

    def plain_websocket_apis(self) -> list[WebSocketApi]:
        """AWS::ApiGatewayV2::Api and its Route/Integration/Stage/RouteResponse/Authorizer resources."""
        apis = {
            logical_id: resource
            for logical_id, resource in self.of_type("AWS::ApiGatewayV2::Api")
            if (resource.get("Properties") or {}).get("ProtocolType") == "WEBSOCKET"
        }
        ids = {local_api_id(logical_id): logical_id for logical_id in apis}
        # Routes, integrations and authorizers name each other by id, whichever intrinsic built it.
        for logical_id, _resource in self.of_type(
            "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Authorizer", "AWS::ApiGatewayV2::Route"
        ):
            ids[local_id(logical_id, 7)] = logical_id

        def api_of(resource: dict[str, Any]) -> str | None:
            return ids.get(str(self.resolver.resolve((resource.get("Properties") or {}).get("ApiId", ""))))

        integrations = self.integrations()
        authorizers = self.authorizers()
        two_way = {
            ids.get(str(self.resolver.resolve((resource.get("Properties") or {}).get("RouteId", ""))))
            for _logical_id, resource in self.of_type("AWS::ApiGatewayV2::RouteResponse")
        }
        routes: dict[str, dict[str, WebSocketRoute]] = {logical_id: {} for logical_id in apis}
        for logical_id, resource in self.of_type("AWS::ApiGatewayV2::Route"):
            api = api_of(resource)
            if api in routes:
                route = self.plain_route(
                    logical_id,
                    resource,
                    ids=ids,
                    integrations=integrations,
                    authorizers=authorizers,
                    has_route_response=logical_id in two_way,
                )
                if route is not None:
                    routes[api][route.route_key] = route
        stages: dict[str, str] = {}
        for logical_id, resource in self.of_type("AWS::ApiGatewayV2::Stage"):
            api = api_of(resource)
            if api is not None:
                stages.setdefault(api, self.resolver.physical_name(logical_id))
        result: list[WebSocketApi] = []
        for logical_id, resource in apis.items():
            properties = resource.get("Properties") or {}
            self.check_api_properties(logical_id, properties)
            result.append(
                WebSocketApi(
                    logical_id=logical_id,
                    stage=stages.get(logical_id, DEFAULT_WEBSOCKET_STAGE),
                    route_selection_expression=self.route_selection_expression(logical_id, properties),
                    routes=routes[logical_id],
                )
            )
        return result

    def with_function(self, resource_type: str, uri_property: str) -> list[tuple[str, dict[str, Any], str | None]]:
        """Resources of this type, resolved, with the function their URI property names."""
        found = []
        for logical_id, resource in self.of_type(resource_type):
            properties = self.resolver.resolve(resource.get("Properties") or {})
            found.append((logical_id, properties, self.function_id_for(str(properties.get(uri_property, "")))))
        return found

    def integrations(self) -> dict[str, str]:
        """Each Lambda integration's logical id -> its function's logical id."""
        integrations: dict[str, str] = {}
        for logical_id, properties, function_id in self.with_function(
            "AWS::ApiGatewayV2::Integration", "IntegrationUri"
        ):
            if function_id is None:
                raise TemplateError(
                    f"{logical_id}: IntegrationUri {properties.get('IntegrationUri')!r} does not name a function "
                    "of this template"
                )
            integrations[logical_id] = function_id
        return integrations

    def authorizers(self) -> dict[str, Authorizer]:
        authorizers: dict[str, Authorizer] = {}
        for logical_id, properties, function_id in self.with_function("AWS::ApiGatewayV2::Authorizer", "AuthorizerUri"):
            if properties.get("AuthorizerType") != "REQUEST" or function_id is None:
                self.unsupported.append(f"{logical_id}: authorizers other than Lambda REQUEST ones")
                continue
            sources = properties.get("IdentitySource") or []
            sources = [sources] if isinstance(sources, str) else sources
            authorizers[logical_id] = Authorizer(logical_id, function_id, tuple(str(source) for source in sources))
        return authorizers

    def plain_route(
        self,
        logical_id: str,
        resource: dict[str, Any],
        *,
        ids: dict[str, str],
        integrations: dict[str, str],
        authorizers: dict[str, Authorizer],
        has_route_response: bool,
    ) -> WebSocketRoute | None:
        properties = self.resolver.resolve(resource.get("Properties") or {})
        route_key = str(properties.get("RouteKey"))
        target = str(properties.get("Target", ""))
        integration = ids.get(target.rpartition("/")[2]) if target.startswith("integrations/") else None
        if integration is None or integration not in integrations:
            self.unsupported.append(f"{logical_id}: route {route_key} without a Lambda integration")
            return None
        authorizer: Authorizer | None = None
        authorization = str(properties.get("AuthorizationType", "NONE")).upper()
        if authorization == "CUSTOM":
            authorizer = authorizers.get(ids.get(str(properties.get("AuthorizerId")), ""))
        elif authorization == "AWS_IAM":
            self.unsupported.append(f"{logical_id}: IAM authorization on {route_key} (every connection is let in)")
        if properties.get("ApiKeyRequired"):
            self.unsupported.append(f"{logical_id}: ApiKeyRequired (API keys are not checked)")
        selection = properties.get("RouteResponseSelectionExpression")
        if selection is None and has_route_response:
            selection = "$default"
        return WebSocketRoute(route_key, integrations[integration], str(selection) if selection else None, authorizer)


def load_template(
    path: Path,
    *,
    stack_name: str = "local",
    region: str = "us-east-1",
    parameter_overrides: dict[str, str] | None = None,
    api_endpoint: str = "ws://127.0.0.1:3001",
) -> Template:
    document = load_template_document(path)
    resolver = Resolver(
        document,
        stack_name=stack_name,
        region=region,
        parameter_overrides=parameter_overrides or {},
        api_endpoint=api_endpoint,
    )
    builder = _ModelBuilder(document, resolver, path.resolve().parent)
    builder.layers = {
        logical_id: builder.layer_import_path(logical_id, resource)
        for logical_id, resource in builder.of_type(*LAYER_TYPES)
    }
    function_resources = builder.of_type(*FUNCTION_TYPES)
    builder.function_ids_by_name = {
        resolver.physical_name(logical_id): logical_id for logical_id, _ in function_resources
    }
    for logical_id, resource in function_resources:
        builder.functions[logical_id] = builder.function(logical_id, resource)
    builder.plain_event_sources()

    tables = {
        logical_id: Table(
            logical_id=logical_id,
            name=resolver.physical_name(logical_id),
            properties=_table_properties(str(resource["Type"]), resolver.resolve(resource.get("Properties") or {})),
        )
        for logical_id, resource in builder.of_type(*TABLE_TYPES)
    }
    queues = {
        logical_id: Queue(
            logical_id,
            resolver.physical_name(logical_id),
            str(resolver.ref(logical_id)),
            resolver.resolve(resource.get("Properties") or {}),
        )
        for logical_id, resource in builder.of_type("AWS::SQS::Queue")
    }
    topics = {
        logical_id: Topic(logical_id, resolver.physical_name(logical_id), str(resolver.ref(logical_id)))
        for logical_id, _resource in builder.of_type("AWS::SNS::Topic")
    }
    websocket_apis = [
        builder.serverless_websocket_api(logical_id, resource)
        for logical_id, resource in builder.of_type(SERVERLESS_WEBSOCKET)
    ]
    websocket_apis += builder.plain_websocket_apis()
    if len(websocket_apis) > 1:
        builder.warnings.append(
            f"{len(websocket_apis)} WebSocket APIs found; serving {websocket_apis[0].logical_id} only"
        )
    return Template(
        path=path,
        stack_name=stack_name,
        region=region,
        functions=builder.functions,
        tables=tables,
        websocket_api=websocket_apis[0] if websocket_apis else None,
        http_routes=builder.http_routes,
        warnings=[*builder.warnings, *resolver.warnings],
        queues=queues,
        topics=topics,
        event_sources=builder.event_sources,
        unsupported=builder.unsupported,
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
