"""The template's HttpApi routes as an HTTP API (payload format 2.0), plus optional static files."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from relay_local.events import http_api_event
from relay_local.invocation import Invoke
from relay_local.template import HttpRoute

log = logging.getLogger("relay_local")


@dataclass(frozen=True)
class CompiledRoute:
    route: HttpRoute
    pattern: re.Pattern[str] | None  # None: the $default route
    specificity: tuple[int, int, int]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.route.method not in ("ANY", method):
            return None
        if self.pattern is None:
            return {}
        found = self.pattern.fullmatch(path)
        return dict(found.groupdict()) if found else None


def compile_route(route: HttpRoute) -> CompiledRoute:
    if route.path == "$default":
        return CompiledRoute(route, None, (0, 0, 0))
    parts: list[str] = []
    literal_segments = greedy = 0
    for segment in route.path.strip("/").split("/"):
        if segment.startswith("{") and segment.endswith("+}"):
            parts.append(f"(?P<{segment[1:-2]}>.+)")
            greedy += 1
        elif segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literal_segments += 1
    pattern = re.compile("/" + "/".join(parts))
    # API Gateway prefers the most specific route: fewer greedy variables, more literal
    # segments, a named method over ANY.
    return CompiledRoute(route, pattern, (1 - greedy, literal_segments, int(route.method != "ANY")))


def _response_from(result: Any) -> web.Response:
    """Payload format 2.0: a dict with statusCode is a response; anything else is a JSON body."""
    if isinstance(result, dict) and "statusCode" in result:
        status = int(result["statusCode"])
        body = result.get("body")
        raw: bytes
        if body is None:
            raw = b""
        elif result.get("isBase64Encoded"):
            raw = base64.b64decode(str(body))
        else:
            raw = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        response = web.Response(status=status, body=raw)
        for name, value in (result.get("headers") or {}).items():
            response.headers[str(name)] = str(value)
        for name, values in (result.get("multiValueHeaders") or {}).items():
            for value in values:
                response.headers.add(str(name), str(value))
        for cookie in result.get("cookies") or []:
            response.headers.add("Set-Cookie", str(cookie))
        if "Content-Type" not in response.headers and raw:
            response.headers["Content-Type"] = "application/json"
        return response
    text = result if isinstance(result, str) else json.dumps(result)
    return web.Response(status=200, body=text.encode("utf-8"), content_type="application/json")


# relay-local's own routes on the HTTP port (under CONTROL_PREFIX): (method, path, handler).
ControlRoute = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
CONTROL_PREFIX = "/_relay-local"


class HttpApi:
    def __init__(
        self,
        routes: list[HttpRoute],
        invoke: Invoke,
        api_id: str,
        static_dir: Path | None,
        control_routes: list[ControlRoute] | None = None,
    ) -> None:
        self.routes = sorted((compile_route(route) for route in routes), key=lambda r: r.specificity, reverse=True)
        self.invoke = invoke
        self.api_id = api_id
        self.static_dir = static_dir.resolve() if static_dir is not None else None
        self._runner: web.AppRunner | None = None
        self.control_routes = control_routes or []

    def find(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]] | None:
        for compiled in self.routes:
            parameters = compiled.match(method, path)
            if parameters is not None and (compiled.pattern is not None or not self._is_static(method, path)):
                return compiled, parameters
        return None

    def _is_static(self, method: str, path: str) -> bool:
        return method in ("GET", "HEAD") and self._static_file(path) is not None

    def _static_file(self, path: str) -> Path | None:
        if self.static_dir is None:
            return None
        relative = path.lstrip("/") or "index.html"
        candidate = (self.static_dir / relative).resolve()
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if not candidate.is_relative_to(self.static_dir) or not candidate.is_file():
            return None
        return candidate

    async def handle(self, request: web.Request) -> web.StreamResponse:
        found = self.find(request.method, request.path)
        if found is None:
            static = self._static_file(request.path) if request.method in ("GET", "HEAD") else None
            if static is not None:
                return web.FileResponse(static)
            return web.json_response({"message": "Not Found"}, status=404)
        compiled, parameters = found
        peer = request.transport.get_extra_info("peername") if request.transport else None
        event = http_api_event(
            method=request.method,
            raw_path=request.raw_path.split("?", 1)[0],
            raw_query_string=request.query_string,
            headers=request.headers.items(),
            body=await request.read(),
            source_ip=str(peer[0]) if peer else "127.0.0.1",
            route_key=compiled.route.route_key,
            path_parameters=parameters,
            api_id=self.api_id,
        )
        invocation, _ = await self.invoke(compiled.route.function_id, event, compiled.route.route_key, "-")
        if invocation.status == "timeout":
            return web.json_response({"message": "Service Unavailable"}, status=503)
        if not invocation.ok:
            return web.json_response({"message": "Internal Server Error"}, status=500)
        try:
            return _response_from(invocation.result)
        except (TypeError, ValueError) as error:
            log.error("%s answered with a response API Gateway cannot use: %s", compiled.route.route_key, error)
            return web.json_response({"message": "Internal Server Error"}, status=500)

    async def start(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        for method, path, handler in self.control_routes:
            app.router.add_route(method, CONTROL_PREFIX + path, handler)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
