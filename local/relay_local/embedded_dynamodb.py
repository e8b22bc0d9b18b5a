"""An embedded DynamoDB-compatible endpoint: moto's server mode, one request at a time.

DynamoDB makes each request atomic: a conditional write or a transaction either
happens whole or not at all, whatever else runs at the same time. moto's backends are
plain Python objects (a transaction deep-copies the table and restores it on failure),
so two requests served on two threads can interleave and lose writes. Serving one
request at a time restores DynamoDB's per-request atomicity while callers still race
each other exactly as they would against the real service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def one_request_at_a_time(app: WsgiApp) -> WsgiApp:
    lock = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            # Drain the body inside the lock: the work happens while it is produced.
            return list(app(environ, start_response))

    return serialised


class EmbeddedDynamoDB(ThreadedMotoServer):
    """`ThreadedMotoServer` whose requests are atomic, as DynamoDB's are.

    Port 0 picks a free port; `endpoint_url` tells which.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)

    def _server_entry(self) -> None:
        app = one_request_at_a_time(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
