"""`relay-local`: serve a SAM template's WebSocket API, HTTP routes and tables on this machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from relay_local.apigateway import DEFAULT_IDLE_TIMEOUT_SECONDS, DEFAULT_MAX_CONNECTION_SECONDS
from relay_local.app import Options, RelayLocal, StartupError
from relay_local.http_api import CONTROL_PREFIX
from relay_local.project import project_static_dir
from relay_local.runtimes import default_cache_dir
from relay_local.template import Template


class _Formatter(logging.Formatter):
    """relay-local's own lines, and the functions' log lines prefixed with the function name."""

    def format(self, record: logging.LogRecord) -> str:
        function = getattr(record, "function", None)
        stamp = self.formatTime(record, "%H:%M:%S")
        if function is not None:
            return f"{stamp} {function} | {record.getMessage()}"
        return f"{stamp} {record.levelname:<7} {record.getMessage()}"


def _parameter_overrides(values: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for value in values:
        for item in value.split():
            name, separator, setting = item.partition("=")
            if not separator or not name:
                raise argparse.ArgumentTypeError(f"--parameter-overrides expects Key=Value, got {item!r}")
            # `sam deploy` also accepts ParameterKey=K,ParameterValue=V; so do we.
            if name == "ParameterKey" and ",ParameterValue=" in setting:
                name, _, setting = setting.partition(",ParameterValue=")
            overrides[name] = setting
    return overrides


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 picks a free one)")
    return port


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _not_negative(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    return int(_positive(str(int(text))))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-local",
        description="Serve a SAM template's WebSocket API (with its Management API), its HttpApi routes, "
        "its DynamoDB tables, queues and topics on this machine, running each function as Lambda would. "
        "Other commands: `relay-local expire` (simulate DynamoDB TTL deletions), `relay-local schedule NAME` "
        "(fire a schedule); each has --help.",
    )
    parser.add_argument(
        "--template",
        "-t",
        type=Path,
        default=Path("template.yaml"),
        help="SAM template (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--ws-port",
        type=_port,
        default=3001,
        help="WebSocket and Management API port (default: %(default)s; 0: any free port)",
    )
    parser.add_argument(
        "--http-port",
        type=_port,
        default=3000,
        help="HTTP API and static files port (default: %(default)s; 0: any free port)",
    )
    parser.add_argument("--stage", help="stage name in URLs and events (default: the template's StageName)")
    parser.add_argument(
        "--dynamodb-endpoint",
        metavar="URL",
        help="use this DynamoDB endpoint instead of the embedded one (real AWS included)",
    )
    parser.add_argument(
        "--parameter-overrides", nargs="+", default=[], metavar="KEY=VALUE", help="template parameter values"
    )
    parser.add_argument(
        "--stack-name",
        default="local",
        help="stack name for !Sub ${AWS::StackName} and default resource names (default: %(default)s)",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="AWS region the functions see (default: $AWS_REGION, else us-east-1)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive,
        default=DEFAULT_IDLE_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="close connections idle this long (default: %(default)s, as API Gateway)",
    )
    parser.add_argument(
        "--max-connection-duration",
        type=_positive,
        default=DEFAULT_MAX_CONNECTION_SECONDS,
        metavar="SECONDS",
        help="close connections open this long (default: %(default)s, as API Gateway)",
    )
    parser.add_argument(
        "--disconnect-delay",
        type=_not_negative,
        default=0.0,
        metavar="SECONDS",
        help="invoke $disconnect this long after a connection closes (default: %(default)s). API Gateway's "
        "$disconnect is best effort and may come late: meanwhile posts to the connection answer 410, and "
        "the client may already be back on a new connection",
    )
    parser.add_argument(
        "--workers-per-function",
        type=_positive_int,
        default=4,
        metavar="N",
        help="concurrent invocations per function (default: %(default)s)",
    )
    parser.add_argument(
        "--static-dir",
        type=Path,
        help="serve these files at / on the HTTP port (default: static-dir in [tool.relay-local] of the "
        "pyproject.toml beside the template, if any)",
    )
    parser.add_argument("--reload", action="store_true", help="re-import functions when their files change")
    parser.add_argument(
        "--skip-install",
        action="store_true",
        help="install nothing: run every function on relay-local's own interpreter and packages, as they are",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="where requirements and the runtimes' SDKs are installed, once per content hash (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default: %(default)s)",
    )
    return parser


def parse_options(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> tuple[Options, str]:
    parser = parser or build_parser()
    arguments = parser.parse_args(argv)
    try:
        overrides = _parameter_overrides(arguments.parameter_overrides)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    static_dir = arguments.static_dir
    if static_dir is None:
        static_dir = project_static_dir(arguments.template)
    if static_dir is not None and not static_dir.is_dir():
        parser.error(f"static dir {static_dir} is not a directory")
    given = vars(arguments)
    options = Options(
        **{
            field.name: given[field.name]
            for field in fields(Options)
            if field.name not in ("parameter_overrides", "static_dir")
        },
        parameter_overrides=overrides,
        static_dir=static_dir,
    )
    return options, arguments.log_level


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("relay_local")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _control_parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"relay-local {command}", description=description)
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:3000",
        help="the running relay-local's HTTP API (default: %(default)s)",
    )
    return parser


def _post(url: str) -> int:
    """POST to a running relay-local's control route; its JSON answer goes to stdout."""
    request = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - a URL the user gave
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            print(response.read().decode("utf-8"))
            return 0
    except urllib.error.HTTPError as error:
        print(error.read().decode("utf-8", "replace"), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"relay-local: error: no relay-local answers at {url}: {error}", file=sys.stderr)
        return 2


def expire_main(argv: Sequence[str]) -> int:
    parser = _control_parser(
        "expire",
        "Delete, as DynamoDB's TTL service would, every item of the template's TTL tables whose TTL has passed; "
        "the deletions reach stream consumers with the TTL service's userIdentity.",
    )
    parser.add_argument(
        "--in",
        dest="ahead",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pretend the clock is this many seconds ahead (default: 0)",
    )
    arguments = parser.parse_args(argv)
    at = time.time() + arguments.ahead
    return _post(f"{arguments.url.rstrip('/')}{CONTROL_PREFIX}/expire?at={at}")


def schedule_main(argv: Sequence[str]) -> int:
    parser = _control_parser("schedule", "Fire one of the template's schedules now (Function.EventId or rule name).")
    parser.add_argument("name")
    arguments = parser.parse_args(argv)
    name = urllib.parse.quote(arguments.name, safe="")
    return _post(f"{arguments.url.rstrip('/')}{CONTROL_PREFIX}/schedules/{name}")


def _environment_overrides(path: Path | None, template: Template) -> dict[str, dict[str, str]]:
    """sam local invoke's --env-vars file: {"Parameters": {...}, "<FunctionLogicalId>": {...}}.

    As with SAM, only variables the template gives the function can be overridden.
    """
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StartupError(f"--env-vars {path}: {error}") from None
    if not isinstance(document, dict):
        raise StartupError(f"--env-vars {path}: expected a JSON object")
    overrides: dict[str, dict[str, str]] = {}
    for function_id, function in template.functions.items():
        values = {**(document.get("Parameters") or {}), **(document.get(function_id) or {})}
        overrides[function_id] = {name: str(value) for name, value in values.items() if name in function.environment}
    return overrides


def _read_event(source: str | None) -> Any:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, ValueError) as error:
        raise StartupError(f"--event {source}: {error}") from None


def invoke_main(argv: Sequence[str]) -> int:
    parser = build_parser()
    parser.prog = "relay-local invoke"
    parser.description = (
        "Invoke one function of the template once, as `sam local invoke` does but without Docker: the result "
        "goes to stdout, the logs to stderr; DynamoDB is the embedded one (or --dynamodb-endpoint)."
    )
    parser.add_argument("function", nargs="?", help="logical id or name (may be left out if there is one function)")
    parser.add_argument("--event", "-e", metavar="EVENT.json", help="the event (- for stdin; default: {})")
    parser.add_argument("--env-vars", "-n", type=Path, metavar="FILE", help="JSON file of environment overrides")
    arguments = parser.parse_args(argv)
    options, log_level = parse_options(argv, parser)
    # The function's own log lines, and relay-local's warnings only (a sam local invoke's stderr).
    configure_logging(log_level if log_level != "INFO" else "WARNING")
    logging.getLogger("relay_local.function").setLevel(logging.INFO)
    logging.getLogger("relay_local.install").setLevel(logging.INFO)
    relay = RelayLocal(options)
    try:
        template = relay.load(serve=False)
        function_id = _function_id(template, arguments.function)
        event = _read_event(arguments.event)
        overrides = _environment_overrides(arguments.env_vars, template)
        invocation = asyncio.run(relay.invoke_once(function_id, event, overrides))
    except StartupError as error:
        print(f"relay-local: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    answer = invocation.result if invocation.ok else invocation.error
    print(json.dumps(answer), flush=True)
    return 0 if invocation.ok else 1


def _function_id(template: Template, wanted: str | None) -> str:
    if wanted is None:
        if len(template.functions) == 1:
            return next(iter(template.functions))
        raise StartupError(f"name a function: {', '.join(sorted(template.functions))}")
    for function_id, function in template.functions.items():
        if wanted in (function_id, function.name):
            return function_id
    raise StartupError(f"no function {wanted} in the template; it has {', '.join(sorted(template.functions))}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    commands = {"expire": expire_main, "schedule": schedule_main, "invoke": invoke_main}
    if arguments and arguments[0] in commands:
        return commands[arguments[0]](arguments[1:])
    options, log_level = parse_options(arguments)
    configure_logging(log_level)
    relay = RelayLocal(options)
    try:
        asyncio.run(relay.run())
    except StartupError as error:
        print(f"relay-local: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
