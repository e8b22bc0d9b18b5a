"""The process one function's handler runs in, as in a Lambda execution environment.

Started by relay-local with the function's environment already in place; it puts the
function's code and layers on the import path, imports the handler once and then
answers invocations one at a time, like a warm Lambda sandbox. It talks to relay-local
over a socket (file descriptor in argv[1]) in JSON lines, so the function's own stdout
and stderr stay free for its logs.

Kept free of imports from the rest of relay_local: a Lambda sandbox has nothing of the
gateway in it either.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, spec: dict[str, Any], request_id: str, deadline_epoch_ms: int) -> None:
        self.function_name: str = spec["function_name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn: str = spec["function_arn"]
        # The Python runtime reads this from the environment, so it is a string there too.
        self.memory_limit_in_mb: str = str(spec["memory_mb"])
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_epoch_ms = deadline_epoch_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_epoch_ms - int(time.time() * 1000), 0)


def _error_payload(error: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def _log_error(payload: dict[str, Any]) -> None:
    # The Python runtime logs an unhandled error like this before reporting it.
    sys.stderr.write(f"[ERROR] {payload['errorType']}: {payload['errorMessage']}\n")
    sys.stderr.write("".join(["Traceback (most recent call last):\n", *payload["stackTrace"]]))
    sys.stderr.flush()


def _isolate_import_path(import_path: list[str]) -> None:
    """The function's own path first (code, its requirements, layers, the runtime SDK), then the
    interpreter's standard library; nothing of relay-local's project."""
    script_dir = os.path.dirname(os.path.abspath(__file__))
    runtime_paths = [
        entry for entry in sys.path if entry and os.path.abspath(entry) != script_dir and entry not in import_path
    ]
    sys.path[:] = [*import_path, *runtime_paths]
    # An editable install of the project would otherwise make its packages importable
    # from every function, layer or not (when relay-local runs functions as they are).
    sys.meta_path[:] = [
        finder for finder in sys.meta_path if not getattr(finder, "__module__", "").startswith("__editable__")
    ]
    for name in [name for name in sys.modules if name == "relay_local" or name.startswith("relay_local.")]:
        del sys.modules[name]


# ---- the Management API, wherever the function sends it --------------------------------

_EXECUTE_API_HOST = re.compile(r"^([a-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$")


def local_management_url(url: str, api_id: str, local_endpoint: str) -> str | None:
    """Where a request the function sends should go instead, if it is meant for the local API.

    Meant for it: the execute-api host of the local API's id (what `https://{apiId}.execute-api.
    {region}.amazonaws.com/{stage}` and `!Sub https://${Api}.execute-api...` build), or any host
    on the local API's port (what `https://{domainName}/{stage}` builds from an event).
    """
    parts = urlsplit(url)
    local = urlsplit(local_endpoint)
    host_match = _EXECUTE_API_HOST.match(parts.hostname or "")
    same_port = parts.port is not None and parts.port == local.port
    if not (same_port or (host_match is not None and host_match.group(1) == api_id)):
        return None
    return urlunsplit((local.scheme, local.netloc, parts.path, parts.query, ""))


def _install_botocore_redirect(api_id: str, local_endpoint: str) -> None:
    """Register a botocore `before-send` handler in every session, once botocore.handlers is imported."""

    def redirect(request: Any, **_: Any) -> None:
        target = local_management_url(request.url, api_id, local_endpoint)
        if target is not None:
            request.url = target

    def add_handler(module: ModuleType) -> None:
        module.BUILTIN_HANDLERS.append(("before-send", redirect))

    sys.meta_path.insert(0, _AfterImport("botocore.handlers", add_handler))


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs a callback right after one module is first imported (and costs nothing if it never is)."""

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.callback = callback
        self._loader: importlib.abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        assert self._loader is not None
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None
        self._loader.exec_module(module)
        self.callback(module)


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    try:
        line = json.dumps(message, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as error:
        line = json.dumps({"id": message.get("id"), "error": _error_payload(error, "Runtime.MarshalError")})
    channel.sendall(line.encode("utf-8") + b"\n")


def _load_handler(spec: dict[str, Any]) -> Callable[[Any, LambdaContext], Any]:
    module = importlib.import_module(spec["module"])
    handler = getattr(module, spec["function"], None)
    if not callable(handler):
        raise AttributeError(f"Handler '{spec['function']}' missing on module '{spec['module']}'")
    return handler  # type: ignore[no-any-return]


def serve(channel: socket.socket, incoming: BinaryIO) -> int:
    spec = json.loads(incoming.readline())
    _isolate_import_path(spec["import_path"])
    if spec.get("management_endpoint"):
        _install_botocore_redirect(spec["api_id"], spec["management_endpoint"])
    os.chdir(spec["code_dir"])  # Lambda's working directory is the task root
    try:
        handler = _load_handler(spec)
    except Exception as error:
        payload = _error_payload(error, "Runtime.ImportModuleError")
        _log_error(payload)
        _send(channel, {"ready": False, "error": payload})
        return 1
    _send(channel, {"ready": True})
    for line in incoming:
        request = json.loads(line)
        context = LambdaContext(spec, request["request_id"], request["deadline_epoch_ms"])
        try:
            result = handler(request["event"], context)
        except Exception as error:
            payload = _error_payload(error)
            _log_error(payload)
            _send(channel, {"id": request["id"], "error": payload})
        else:
            _send(channel, {"id": request["id"], "result": result})
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def main() -> int:
    channel = socket.socket(fileno=int(sys.argv[1]))
    with channel, channel.makefile("rb") as incoming:
        return serve(channel, incoming)


if __name__ == "__main__":
    sys.exit(main())
