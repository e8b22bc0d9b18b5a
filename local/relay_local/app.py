"""Putting relay-local together: template, DynamoDB, function workers, the two servers."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from relay_local.apigateway import DEFAULT_IDLE_TIMEOUT_SECONDS, DEFAULT_MAX_CONNECTION_SECONDS, RouteSelector
from relay_local.dynamodb import EMBEDDED_CREDENTIALS, DynamoDbError, EmbeddedDynamoDb, create_tables
from relay_local.gateway import Gateway, GatewaySettings
from relay_local.http_api import ControlRoute, HttpApi
from relay_local.intrinsics import local_api_id
from relay_local.invocation import Invocation
from relay_local.runtimes import Installer, InstallError, InterpreterChooser, default_cache_dir, prepare_sandbox
from relay_local.sources import EventSources, SourceError
from relay_local.template import Template, TemplateError, load_template
from relay_local.workers import FunctionPool, FunctionStartError, worker_environment, worker_spec

log = logging.getLogger("relay_local")

MANAGEMENT_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"
# GET <http port>/_relay-local/endpoints.json: {"webSocketUrl", "stage", "managementApiUrl"}.
ENDPOINTS_PATH = "/endpoints.json"
DYNAMODB_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_DYNAMODB"
# What a worker may inherit from relay-local's own environment: how to find credentials
# when --dynamodb-endpoint points at real AWS (the SDK's usual chain).
_CREDENTIAL_VARIABLES = (
    "HOME",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CA_BUNDLE",
)


_LOGGED_BODY_CHARACTERS = 500
# How long $disconnect invocations may take once relay-local is asked to stop; workers still
# busy after that are killed, so that it stops within 10 s of SIGTERM.
_STOP_GRACE_SECONDS = 5.0


class StartupError(Exception):
    """relay-local cannot start; the message is for the user, the exit code for scripts."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Options:
    template: Path = Path("template.yaml")
    host: str = "127.0.0.1"
    ws_port: int = 3001
    http_port: int = 3000
    stage: str | None = None
    dynamodb_endpoint: str | None = None
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    stack_name: str = "local"
    region: str = "us-east-1"
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    max_connection_duration: float = DEFAULT_MAX_CONNECTION_SECONDS
    disconnect_delay: float = 0.0
    workers_per_function: int = 4
    reload: bool = False
    static_dir: Path | None = None
    skip_install: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)


def bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(512)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise StartupError(
                f"Port {port} on {host} is already in use ({what}); stop what uses it or pass another port"
            ) from None
        raise StartupError(f"Cannot listen on {host}:{port} ({what}): {error.strerror}") from None
    sock.setblocking(False)
    return sock


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - we only translate it


def _describe(invocation: Invocation) -> str:
    if invocation.status == "ok":
        result = invocation.result
        if isinstance(result, dict) and "statusCode" in result:
            status = str(result["statusCode"])
            if not status.startswith("2") and result.get("body"):
                # A refusal's reason is in its body; API Gateway's clients never see it.
                return f"{status} {str(result['body'])[:_LOGGED_BODY_CHARACTERS]}"
            return status
        return "ok"
    if invocation.status == "error" and invocation.error:
        return f"error {invocation.error.get('errorType', '')}: {invocation.error.get('errorMessage', '')}"
    return invocation.status


class RelayLocal:
    def __init__(self, options: Options, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.template: Template | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.gateway: Gateway | None = None
        self.http_api: HttpApi | None = None
        self.dynamodb: EmbeddedDynamoDb | None = None  # moto: DynamoDB, SQS and SNS
        self.moto_endpoint = ""
        self.dynamodb_endpoint = ""
        self.credentials: dict[str, str] = {}
        self.sources: EventSources | None = None
        self.ws_port = 0
        self.http_port = 0
        self._stop = asyncio.Event()

    # ---- start-up --------------------------------------------------------------------

    def load(self, *, serve: bool = True) -> Template:
        options = self.options
        try:
            template = load_template(
                options.template,
                stack_name=options.stack_name,
                region=options.region,
                parameter_overrides=options.parameter_overrides,
                api_endpoint=f"ws://{_client_host(options.host)}:{options.ws_port}",
            )
        except TemplateError as error:
            raise StartupError(str(error)) from None
        if template.websocket_api is None and serve:
            raise StartupError(
                f"{options.template} has no WebSocket API (AWS::Serverless::WebSocketApi, or AWS::ApiGatewayV2::Api "
                "with ProtocolType WEBSOCKET); "
                "relay-local has nothing to serve"
            )
        try:
            if template.websocket_api is not None:
                RouteSelector(template.websocket_api)
        except ValueError as error:
            raise StartupError(str(error)) from None
        for function_id, function in sorted(template.functions.items()):
            if not function.code_dir.is_dir():
                raise StartupError(f"{function_id}: CodeUri {function.code_dir} does not exist")
            if function.handler_file() is None:
                suffix = ".mjs or .js" if function.is_node else ".py"
                module_path = function.handler.rpartition(".")[0] + suffix
                raise StartupError(
                    f"{function_id}: handler file {function.code_dir / module_path} is missing "
                    f"(Handler: {function.handler})"
                )
        for layer_path in {path for function in template.functions.values() for path in function.layer_paths}:
            if not layer_path.is_dir():
                raise StartupError(f"Layer content {layer_path} does not exist")
        for warning in template.warnings:
            log.warning("%s", warning)
        if template.unsupported:
            log.warning(
                "Not served by relay-local (listed once):\n%s",
                "\n".join(f"  - {item}" for item in template.unsupported),
            )
        self.template = template
        return template

    def _credentials(self, embedded: bool) -> dict[str, str]:
        if embedded:
            return dict(EMBEDDED_CREDENTIALS)
        passthrough = {name: os.environ[name] for name in _CREDENTIAL_VARIABLES if name in os.environ}
        has_credentials = (
            "AWS_ACCESS_KEY_ID" in passthrough
            or "AWS_PROFILE" in passthrough
            or Path(passthrough.get("AWS_SHARED_CREDENTIALS_FILE", Path.home() / ".aws" / "credentials")).exists()
        )
        if not has_credentials:
            log.warning("No AWS credentials found; the functions sign their requests with dummy ones")
            passthrough.update(EMBEDDED_CREDENTIALS)
        return passthrough

    async def start_backends(self, template: Template) -> None:
        """DynamoDB (embedded or --dynamodb-endpoint) with the template's tables; queues and topics."""
        options = self.options
        embedded = options.dynamodb_endpoint is None
        needs_moto = embedded or bool(template.queues or template.topics)
        if needs_moto:
            self.dynamodb = EmbeddedDynamoDb()
            self.moto_endpoint = await asyncio.to_thread(self.dynamodb.start)
        self.dynamodb_endpoint = self.moto_endpoint if embedded else str(options.dynamodb_endpoint)
        self.credentials = self._credentials(embedded)
        try:
            self.created_tables = await asyncio.to_thread(
                create_tables,
                list(template.tables.values()),
                endpoint=self.dynamodb_endpoint,
                region=options.region,
                credentials=self.credentials,
            )
        except DynamoDbError as error:
            raise StartupError(str(error)) from None
        self.sources = EventSources(
            template,
            self.invoke,
            endpoint=self.moto_endpoint or self.dynamodb_endpoint,
            dynamodb_endpoint=self.dynamodb_endpoint,
            region=options.region,
            credentials=self.credentials,
        )
        try:
            await asyncio.to_thread(self.sources.create)
        except SourceError as error:
            raise StartupError(str(error)) from None

    def endpoint_variables(self) -> dict[str, str]:
        """The SDK endpoint variables that send the functions' AWS calls to the local backends."""
        variables = {DYNAMODB_ENDPOINT_VARIABLE: self.dynamodb_endpoint}
        if self.options.dynamodb_endpoint is None:
            variables["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] = self.dynamodb_endpoint
        if self.moto_endpoint:
            variables["AWS_ENDPOINT_URL_SQS"] = self.moto_endpoint
            variables["AWS_ENDPOINT_URL_SNS"] = self.moto_endpoint
        return variables

    async def start_functions(
        self,
        template: Template,
        *,
        management_endpoint: str,
        stage: str,
        only: str | None = None,
        environment_overrides: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """A warm pool of workers per function (one worker started now, to report import errors)."""
        extra = self.endpoint_variables()
        if management_endpoint:
            extra[MANAGEMENT_ENDPOINT_VARIABLE] = f"{management_endpoint}/{stage}"
        api_id = template.websocket_api.api_id if template.websocket_api is not None else ""
        chooser = InterpreterChooser()
        installer = None if self.options.skip_install else Installer(self.options.cache_dir)
        chosen = {
            function_id: function for function_id, function in template.functions.items() if only in (None, function_id)
        }
        try:
            sandboxes = await asyncio.to_thread(
                lambda: {
                    function_id: prepare_sandbox(function, chooser, installer)
                    for function_id, function in chosen.items()
                }
            )
        except InstallError as error:
            raise StartupError(str(error), exit_code=1) from None
        if self.options.skip_install:
            log.warning(
                "--skip-install: Python functions run on relay-local's own interpreter (%s) and packages, "
                "whatever their Runtime",
                f"python{sys.version_info.major}.{sys.version_info.minor}",
            )
        for warning in chooser.warnings:
            if not (self.options.skip_install and warning.startswith("python")):
                log.warning("%s", warning)
        for function_id, function in chosen.items():
            function.environment.update((environment_overrides or {}).get(function_id, {}))
            sandbox = sandboxes[function_id]
            environment = worker_environment(
                function,
                region=self.options.region,
                extra={**extra, **sandbox.environment()},
                passthrough=self.credentials,
            )
            self.pools[function_id] = FunctionPool(
                function,
                environment,
                worker_spec(
                    function,
                    template.function_arn(function),
                    sandbox.import_path,
                    api_id=api_id,
                    management_endpoint=management_endpoint,
                ),
                self.options.workers_per_function,
                sandbox.command(),
            )
        try:
            await asyncio.gather(*(pool.warm_up() for pool in self.pools.values()))
        except FunctionStartError as error:
            raise StartupError(str(error), exit_code=1) from None

    async def start(self) -> None:
        template = self.load()
        assert template.websocket_api is not None
        options = self.options
        stage = options.stage or template.websocket_api.stage
        ws_socket = bind(options.host, options.ws_port, "WebSocket API")
        try:
            http_socket = bind(options.host, options.http_port, "HTTP API")
        except StartupError:
            ws_socket.close()
            raise
        self.ws_port = ws_socket.getsockname()[1]
        self.http_port = http_socket.getsockname()[1]
        await self.start_backends(template)
        client_host = _client_host(options.host)
        api_id = template.websocket_api.api_id
        await self.start_functions(template, management_endpoint=f"http://{client_host}:{self.ws_port}", stage=stage)

        self.gateway = Gateway(
            template.websocket_api,
            GatewaySettings(
                stage=stage,
                api_id=api_id,
                region=options.region,
                idle_timeout_seconds=options.idle_timeout,
                max_connection_seconds=options.max_connection_duration,
                disconnect_delay_seconds=options.disconnect_delay,
            ),
            self.invoke,
        )
        await self.gateway.start(ws_socket)
        static_dir = options.static_dir
        self.static_dir = static_dir
        self.stage = stage
        self.http_api = HttpApi(
            template.http_routes, self.invoke, local_api_id("ServerlessHttpApi"), static_dir, self.control_routes()
        )
        await self.http_api.start(http_socket)
        assert self.sources is not None
        self.sources.start()

    # ---- relay-local's own routes on the HTTP port -------------------------------------

    def control_routes(self) -> list[ControlRoute]:
        return [
            ("GET", ENDPOINTS_PATH, self._endpoints),
            ("POST", "/expire", self._expire),
            ("POST", "/schedules/{name}", self._fire_schedule),
        ]

    async def _endpoints(self, request: web.Request) -> web.StreamResponse:
        """Where a page served here finds the WebSocket API: the host it was loaded from, the WebSocket port."""
        host = request.url.host or _client_host(self.options.host)
        host = f"[{host}]" if ":" in host else host
        return web.json_response(
            {
                "webSocketUrl": f"ws://{host}:{self.ws_port}/{self.stage}",
                "stage": self.stage,
                "managementApiUrl": f"http://{host}:{self.ws_port}/{self.stage}",
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _expire(self, request: web.Request) -> web.StreamResponse:
        assert self.sources is not None
        try:
            at = float(request.query["at"]) if "at" in request.query else None
        except ValueError:
            return web.json_response({"message": "at must be a number of seconds since the epoch"}, status=400)
        deleted = await asyncio.to_thread(self.sources.expire, at)
        log.info("TTL simulation deleted %s", ", ".join(f"{count} from {name}" for name, count in deleted.items()))
        return web.json_response({"deleted": deleted})

    async def _fire_schedule(self, request: web.Request) -> web.StreamResponse:
        assert self.sources is not None
        name = request.match_info["name"]
        invocation = await self.sources.fire(name)
        if invocation is None:
            known = ", ".join(sorted(self.sources.schedules())) or "none"
            return web.json_response({"message": f"no schedule {name}; the template has: {known}"}, status=404)
        return web.json_response({"status": invocation.status, "result": invocation.result, "error": invocation.error})

    async def invoke(
        self, function_id: str, event: dict[str, Any], route_key: str, connection_id: str
    ) -> tuple[Invocation, str]:
        pool = self.pools[function_id]
        invocation, request_id = await pool.invoke(event, droppable=route_key != "$disconnect")
        log.info(
            "%-12s %-17s %-24s %8.1f ms  %s",
            route_key,
            connection_id,
            pool.function.name,
            invocation.duration_ms,
            _describe(invocation),
        )
        return invocation, request_id

    def banner(self) -> str:
        template = self.template
        assert template is not None
        assert template.websocket_api is not None
        host = _client_host(self.options.host)
        ws_url = f"ws://{host}:{self.ws_port}"
        http_url = f"http://{host}:{self.http_port}"
        lines = [
            f"relay-local serving {self.options.template}",
            f"  WebSocket API   {ws_url}  (also {ws_url}/{self.stage})",
            f"  Management API  http://{host}:{self.ws_port}/{self.stage}/@connections/{{connectionId}}",
            f"  HTTP API        {http_url}",
        ]
        if self.static_dir is not None:
            lines.append(f"  Static files    {http_url}/  ({self.static_dir})")
        kind = "embedded moto" if self.dynamodb is not None else "external"
        tables = ", ".join(table.name for table in template.tables.values()) or "none"
        lines.append(f"  DynamoDB        {self.dynamodb_endpoint}  ({kind}; tables: {tables})")
        lines.append("  Routes:")
        for route in template.websocket_api.routes.values():
            function = template.functions[route.function_id]
            lines.append(f"    WS   {route.route_key:<22} -> {route.function_id} ({function.name})")
        for http_route in template.http_routes:
            function = template.functions[http_route.function_id]
            lines.append(f"    HTTP {http_route.route_key:<22} -> {http_route.function_id} ({function.name})")
        lines.append(
            f"  Functions reach the Management API through {MANAGEMENT_ENDPOINT_VARIABLE}="
            f"http://{host}:{self.ws_port}/{self.stage}"
        )
        if self.options.reload:
            lines.append("  Reloading functions when their files change")
        lines.append(f"relay-local ready {ws_url} {http_url}")
        return "\n".join(lines)

    # ---- running and stopping --------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def invoke_once(
        self, function_id: str, event: Any, environment_overrides: dict[str, dict[str, str]]
    ) -> Invocation:
        """`relay-local invoke`: one function, once, against the local backends (sam local invoke's job)."""
        template = self.template
        assert template is not None
        management_endpoint = ""
        stage = template.websocket_api.stage if template.websocket_api is not None else ""
        try:
            if template.websocket_api is not None:
                # Its @connections, with nobody connected: a post answers 410 Gone, as AWS would
                # for the connection id of a fixture.
                ws_socket = bind(_client_host(self.options.host), 0, "Management API")
                self.ws_port = ws_socket.getsockname()[1]
                management_endpoint = f"http://{_client_host(self.options.host)}:{self.ws_port}"
                self.gateway = Gateway(
                    template.websocket_api,
                    GatewaySettings(stage=stage, api_id=template.websocket_api.api_id, region=self.options.region),
                    self.invoke,
                )
                await self.gateway.start(ws_socket)
            await self.start_backends(template)
            await self.start_functions(
                template,
                management_endpoint=management_endpoint,
                stage=stage,
                only=function_id,
                environment_overrides=environment_overrides,
            )
            invocation, _ = await self.invoke(function_id, event, "invoke", "-")
            return invocation
        finally:
            await self.stop()

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            print(self.banner(), file=self.out, flush=True)
            if on_ready is not None:
                on_ready()
            watcher = asyncio.create_task(self._watch()) if self.options.reload else None
            await self._stop.wait()
            log.info("Stopping: closing connections and running $disconnect")
            if watcher is not None:
                watcher.cancel()
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self.sources is not None:
            await self.sources.close()
        for pool in self.pools.values():
            pool.dropping = True
        if self.gateway is not None:
            await self.gateway.close(timeout=_STOP_GRACE_SECONDS)
        if self.http_api is not None:
            await self.http_api.close()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))
        if self.dynamodb is not None:
            await asyncio.to_thread(self.dynamodb.stop)

    async def _watch(self) -> None:
        from watchfiles import awatch  # noqa: PLC0415 - only with --reload

        assert self.template is not None
        roots: dict[str, list[FunctionPool]] = {}
        for function_id, pool in self.pools.items():
            function = self.template.functions[function_id]
            for root in (function.code_dir, *function.layer_paths):
                roots.setdefault(str(root), []).append(pool)
        template_path = str(self.template.path.resolve())
        watched = [*roots, template_path]

        def relevant(_change: object, path: str) -> bool:
            return path.endswith((".py", ".js", ".mjs", ".cjs")) or path == template_path

        async for changes in awatch(*watched, watch_filter=relevant):
            changed = [path for _change, path in changes]
            if template_path in changed:
                log.warning("%s changed: restart relay-local to serve the new template", template_path)
                changed.remove(template_path)
                if not changed:
                    continue
            affected = {
                pool
                for root, pools in roots.items()
                for pool in pools
                if any(path.startswith(root + os.sep) for path in changed)
            }
            for pool in affected:
                await pool.recycle()
            names = ", ".join(sorted(pool.function.logical_id for pool in affected))
            log.info("Reloaded %s (changed: %s)", names, ", ".join(sorted(changed)))
