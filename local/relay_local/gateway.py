"""The WebSocket API and its Management API, on one port, as API Gateway serves them.

Each TCP connection starts in `FrontDoor`, which reads the request head and hands the
socket either to a `WebSocketConnection` (an upgrade) or to aiohttp (the Management API:
POST/GET/DELETE /@connections/{id}, with or without the stage in front).

WebSocket frames are handled with the `websockets` library's Sans-I/O protocol, which
reports every frame with its size and opcode; that is what lets relay-local enforce API
Gateway's limits exactly: 32 KB per frame and 128 KB per message (close code 1009), no
binary frames (close code 1003).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from relay_local.apigateway import (
    DEFAULT_IDLE_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTION_SECONDS,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    RouteSelector,
    authorizer_decision,
    close_status,
    connect_outcome,
    gateway_error,
    identity_values,
    json_body,
    method_arn,
    route_failure_message,
    route_response_body,
)
from relay_local.events import (
    ConnectionFacts,
    authorizer_event,
    connect_event,
    disconnect_event,
    gateway_id,
    iso_timestamp,
    message_event,
    now_ms,
)
from relay_local.intrinsics import ACCOUNT_ID
from relay_local.invocation import Invoke
from relay_local.template import Authorizer, WebSocketApi

log = logging.getLogger("relay_local")

# A peer that does not answer our close frame within this time is cut off.
_CLOSE_HANDSHAKE_SECONDS = 5.0
_MAX_REQUEST_HEAD_BYTES = 64 * 1024
_TLS_HANDSHAKE = 0x16  # first byte of a TLS ClientHello record


@dataclass(frozen=True)
class GatewaySettings:
    stage: str
    api_id: str
    region: str = "us-east-1"
    idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    max_connection_seconds: float = DEFAULT_MAX_CONNECTION_SECONDS
    # API Gateway delivers $disconnect on a best-effort basis, sometimes late: a delay lets
    # an app be tested against posts to a gone connection (410) before its $disconnect, and
    # against a $disconnect that comes after the client has reconnected.
    disconnect_delay_seconds: float = 0.0


class WebSocketConnection(asyncio.Protocol):
    """One client connection: the handshake with $connect, frames, limits, and $disconnect."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ws = ServerProtocol(max_size=(MAX_MESSAGE_BYTES, MAX_FRAME_BYTES))
        self.transport: asyncio.Transport | None = None
        self.facts: ConnectionFacts | None = None
        self.opened = False
        self.last_active_ms = 0
        self.closed = asyncio.get_running_loop().create_future()
        self._fragments: list[bytes] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._lifetime_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._finished = False
        self._source_ip = "127.0.0.1"

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self._source_ip = str(peer[0])

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    # ---- frames ----------------------------------------------------------------------

    def _process(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_handshake(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            else:
                # End of stream: the server closes the TCP connection once the close
                # handshake is done (RFC 6455, 7.1.1).
                self.transport.close()
                return

    def _on_frame(self, frame: Frame) -> None:
        if not self.opened:
            return
        if frame.opcode is Opcode.BINARY:
            # API Gateway WebSocket APIs carry text only.
            self.ws.fail(CloseCode.UNSUPPORTED_DATA, "Binary frames are not supported")
            return
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                self._on_message(bytes(frame.data))
            else:
                self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._on_message(data)
        # Ping, pong and close frames are answered by the protocol itself; pings do not
        # count as activity for the idle timeout, as on API Gateway.

    def _on_message(self, data: bytes) -> None:
        try:
            body = data.decode("utf-8")
        except UnicodeDecodeError:
            self.ws.fail(CloseCode.INVALID_DATA, "Text frames must be UTF-8")
            return
        self.last_active_ms = now_ms()
        self._arm_idle_timer()
        task = asyncio.create_task(self._route_message(body))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def send_text(self, data: bytes) -> None:
        """Send a message, split into frames of at most 32 KB as API Gateway does."""
        chunks = [data[i : i + MAX_FRAME_BYTES] for i in range(0, len(data), MAX_FRAME_BYTES)] or [b""]
        self.ws.send_text(chunks[0], fin=len(chunks) == 1)
        for index, chunk in enumerate(chunks[1:], start=2):
            self.ws.send_continuation(chunk, fin=index == len(chunks))
        self._flush()

    @property
    def is_open(self) -> bool:
        return self.opened and self.ws.state is State.OPEN and not self._finished

    def close_by_server(self, code: int, reason: str) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
            loop = asyncio.get_running_loop()
            self._abort_timer = loop.call_later(_CLOSE_HANDSHAKE_SECONDS, self._abort)
        elif self.ws.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # ---- timers ----------------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(
            self.gateway.settings.idle_timeout_seconds, self.close_by_server, CloseCode.GOING_AWAY, "Going away"
        )

    # ---- the handshake and $connect --------------------------------------------------

    def _on_handshake(self, request: Request) -> None:
        assert self.transport is not None
        url = urlsplit(request.path)
        stage = self.gateway.settings.stage
        if self.gateway.stopping:
            # Shutting down: a client that reconnects now must not land on a dying relay.
            self._reject(503, {"message": "Service Unavailable"})
            return
        if url.path.rstrip("/") not in ("", f"/{stage}"):
            self._reject(403, {"message": "Forbidden"})
            return
        response = self.ws.accept(request)
        if response.status_code != 101:
            self.ws.send_response(response)
            return
        self.transport.pause_reading()
        task = asyncio.create_task(self._connect(request, response, url.query))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _reject(self, status: int, body: dict[str, Any]) -> None:
        response = self.ws.reject(status, json_body(body))
        # websockets' Headers is a multidict: assigning would add a second value.
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        self.ws.send_response(response)
        self._flush()

    async def _connect(self, request: Request, response: Response, query: str) -> None:
        connected_at = now_ms()
        facts = ConnectionFacts(
            connection_id=gateway_id(),
            connected_at_ms=connected_at,
            source_ip=self._source_ip,
            user_agent=request.headers.get("User-Agent"),
            domain_name=request.headers.get("Host", "localhost"),
            stage=self.gateway.settings.stage,
            api_id=self.gateway.settings.api_id,
        )
        self.facts = facts
        route = self.gateway.api.routes.get("$connect")
        if route is not None and route.authorizer is not None:
            status, authorizer_context = await self._authorize(route.authorizer, request, query)
            if status != 200:
                message = {401: "Unauthorized", 403: "Forbidden"}.get(status, "Internal server error")
                self._reject(status, {"message": message})
                return
            facts = self.facts = replace(facts, authorizer=authorizer_context)
        if route is not None:
            event = connect_event(facts, request.headers.raw_items(), query)
            invocation, _ = await self.gateway.invoke(route.function_id, event, "$connect", facts.connection_id)
            outcome = connect_outcome(
                invocation.ok, invocation.result, facts.connection_id, event["requestContext"]["requestId"]
            )
            if not outcome.accepted:
                self._reject(outcome.status, outcome.body)
                return
            if outcome.subprotocol is not None:
                # websockets' Headers is a multidict: assigning would add a second value.
                if "Sec-WebSocket-Protocol" in response.headers:
                    del response.headers["Sec-WebSocket-Protocol"]
                response.headers["Sec-WebSocket-Protocol"] = outcome.subprotocol
        if self.transport is None or self.transport.is_closing():
            return  # the client gave up during $connect
        self.ws.send_response(response)
        self.opened = True
        self.last_active_ms = connected_at
        self.gateway.connections[facts.connection_id] = self
        self._arm_idle_timer()
        self._lifetime_timer = asyncio.get_running_loop().call_later(
            self.gateway.settings.max_connection_seconds, self.close_by_server, CloseCode.GOING_AWAY, "Going away"
        )
        self._flush()
        self.transport.resume_reading()

    async def _authorize(self, authorizer: Authorizer, request: Request, query: str) -> tuple[int, dict[str, Any]]:
        """Run the $connect route's REQUEST authorizer (never cached); (status, its context)."""
        assert self.facts is not None
        headers = list(request.headers.raw_items())
        if identity_values(authorizer, headers, parse_qsl(query, keep_blank_values=True)) is None:
            return 401, {}
        settings = self.gateway.settings
        arn = method_arn(settings.region, ACCOUNT_ID, settings.api_id, settings.stage, "$connect")
        event = authorizer_event(self.facts, headers, query, arn)
        invocation, _ = await self.gateway.invoke(
            authorizer.function_id, event, "$connect/authorizer", self.facts.connection_id
        )
        message = (invocation.error or {}).get("errorMessage")
        decision = authorizer_decision(invocation.ok, message, invocation.result, arn)
        return decision.status, decision.context

    # ---- messages --------------------------------------------------------------------

    async def _route_message(self, body: str) -> None:
        assert self.facts is not None
        connection_id = self.facts.connection_id
        route_key = self.gateway.selector.select(body)
        if route_key is None:
            # API Gateway's own answer when no route matches and there is no $default.
            self._reply({"message": "Forbidden", "connectionId": connection_id, "requestId": gateway_id()})
            return
        route = self.gateway.api.routes[route_key]
        event = message_event(self.facts, route_key, body)
        invocation, _ = await self.gateway.invoke(route.function_id, event, route_key, connection_id)
        failure = route_failure_message(invocation.status)
        if failure is not None:
            self._reply(gateway_error(failure, connection_id, event["requestContext"]["requestId"]))
        elif invocation.ok and route.route_response_selection_expression:
            # Two-way route: API Gateway forwards the integration's body to the client.
            body_out = route_response_body(invocation.result)
            if body_out is not None and self.is_open:
                self.send_text(body_out.encode("utf-8"))

    def _reply(self, message: dict[str, Any]) -> None:
        if self.is_open:
            self.send_text(json_body(message).encode("utf-8"))

    # ---- the end ---------------------------------------------------------------------

    def close_status(self) -> tuple[int, str]:
        return close_status(self.ws.close_rcvd, self.ws.close_sent, bool(self.ws.close_rcvd_then_sent))

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        for timer in (self._idle_timer, self._lifetime_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        if self.facts is not None:
            self.gateway.connections.pop(self.facts.connection_id, None)
        if self.opened:
            self.gateway.track(asyncio.create_task(self._disconnect()))
        elif not self.closed.done():
            self.closed.set_result(None)

    async def _disconnect(self) -> None:
        assert self.facts is not None
        try:
            # $disconnect comes after the invocations the connection's messages started.
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            delay = self.gateway.settings.disconnect_delay_seconds
            if delay > 0 and not self.gateway.stopping:
                await self.gateway.wait_unless_stopping(delay)
            route = self.gateway.api.routes.get("$disconnect")
            if route is not None:
                code, reason = self.close_status()
                event = disconnect_event(self.facts, code, reason)
                await self.gateway.invoke(route.function_id, event, "$disconnect", self.facts.connection_id)
        finally:
            if not self.closed.done():
                self.closed.set_result(None)


class FrontDoor(asyncio.Protocol):
    """Reads the request head of a new TCP connection and passes the socket to the right protocol."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.buffer and data[:1] == bytes([_TLS_HANDSHAKE]):
            # Someone speaks https:// or wss:// to this plain-HTTP port: fail at once rather
            # than leave the client waiting for a handshake that never comes.
            peer = self.transport.get_extra_info("peername")
            log.error(
                "A TLS handshake arrived from %s on the plain-HTTP port %s; relay-local serves http:// and ws:// "
                "only (a function that builds an https:// endpoint is redirected only through the AWS SDK)",
                peer[0] if peer else "?",
                self.transport.get_extra_info("sockname")[1],
            )
            self.transport.abort()
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_REQUEST_HEAD_BYTES:
                self.transport.close()
            return
        head = bytes(self.buffer[:end]).decode("latin-1").lower()
        is_upgrade = re.search(r"^upgrade:[^\r\n]*websocket", head, re.MULTILINE) is not None
        protocol: asyncio.Protocol = WebSocketConnection(self.gateway) if is_upgrade else self.gateway.http_protocol()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(bytes(self.buffer))


class Gateway:
    """The WebSocket API of the template, served on one port with its Management API."""

    def __init__(self, api: WebSocketApi, settings: GatewaySettings, invoke: Invoke) -> None:
        self.api = api
        self.settings = settings
        self.invoke = invoke
        self.selector = RouteSelector(api)
        self.connections: dict[str, WebSocketConnection] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self.stopping = False
        self._stopping = asyncio.Event()

    async def wait_unless_stopping(self, seconds: float) -> None:
        """Sleep `seconds`, or less if relay-local starts stopping meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def http_protocol(self) -> asyncio.Protocol:
        assert self._runner is not None
        assert self._runner.server is not None
        return self._runner.server()

    async def start(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        management = ConnectionsApi(self)
        for prefix in ("", f"/{self.settings.stage}"):
            app.router.add_route("POST", prefix + "/@connections/{connection_id}", management.post)
            app.router.add_route("GET", prefix + "/@connections/{connection_id}", management.get)
            app.router.add_route("DELETE", prefix + "/@connections/{connection_id}", management.delete)
        app.router.add_route("*", "/{tail:.*}", management.not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: FrontDoor(self), sock=sock)

    async def close(self, timeout: float) -> None:
        """Close every connection as API Gateway would (1001), and let their $disconnect run.

        The port stays open meanwhile: $disconnect handlers use the Management API on it.
        What has not finished within `timeout` seconds (a $disconnect behind a busy handler)
        is cancelled: relay-local stops promptly whatever its functions do.
        """
        self.stopping = True
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        connections = list(self.connections.values())
        for connection in connections:
            connection.close_by_server(CloseCode.GOING_AWAY, "Going away")
        waiting = [connection.closed for connection in connections]
        if waiting:
            await asyncio.wait(waiting, timeout=max(deadline - loop.time(), 0.1))
        if self._background:
            _, late = await asyncio.wait(list(self._background), timeout=max(deadline - loop.time(), 0.1))
            for task in late:
                task.cancel()
            if late:
                log.warning("Stopping: %d $disconnect invocations did not finish in time and were abandoned", len(late))
                await asyncio.wait(late, timeout=1.0)
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()


def _error(status: int, error_type: str, message: str | None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": error_type})


class ConnectionsApi:
    """POST/GET/DELETE /@connections/{id}, answering as API Gateway's Management API does."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _open_connection(self, request: web.Request) -> WebSocketConnection | None:
        connection = self.gateway.connections.get(request.match_info["connection_id"])
        return connection if connection is not None and connection.is_open else None

    async def post(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        if len(data) > MAX_MESSAGE_BYTES:
            return _error(413, "PayloadTooLargeException", "Request entity too large")
        connection = self._open_connection(request)
        if connection is None:
            return _error(410, "GoneException", None)
        connection.send_text(data)
        return web.Response(status=200)

    async def get(self, request: web.Request) -> web.StreamResponse:
        connection = self._open_connection(request)
        if connection is None or connection.facts is None:
            return _error(410, "GoneException", None)
        facts = connection.facts
        identity: dict[str, str] = {"sourceIp": facts.source_ip}
        if facts.user_agent is not None:
            identity["userAgent"] = facts.user_agent
        return web.json_response(
            {
                "connectedAt": iso_timestamp(facts.connected_at_ms),
                "identity": identity,
                "lastActiveAt": iso_timestamp(connection.last_active_ms),
            }
        )

    async def delete(self, request: web.Request) -> web.StreamResponse:
        connection = self._open_connection(request)
        if connection is None:
            return _error(410, "GoneException", None)
        connection.close_by_server(CloseCode.NORMAL_CLOSURE, "")
        return web.Response(status=204)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path.rstrip("/") in ("", f"/{self.gateway.settings.stage}"):
            return web.json_response({"message": "Upgrade Required"}, status=426)
        return web.json_response({"message": "Not Found"}, status=404)
