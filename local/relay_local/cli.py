"""`relay-local`: serve a SAM template's WebSocket API, HTTP routes and tables on this machine."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from relay_local.apigateway import DEFAULT_IDLE_TIMEOUT_SECONDS, DEFAULT_MAX_CONNECTION_SECONDS
from relay_local.app import Options, RelayLocal, StartupError
from relay_local.project import project_static_dir


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


def _positive_int(text: str) -> int:
    return int(_positive(str(int(text))))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-local",
        description="Serve a SAM template's WebSocket API (with its Management API), its HttpApi routes "
        "and its DynamoDB tables on this machine, running each function as Lambda would.",
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
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default: %(default)s)",
    )
    return parser


def parse_options(argv: Sequence[str] | None = None) -> tuple[Options, str]:
    parser = build_parser()
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


def main(argv: Sequence[str] | None = None) -> int:
    options, log_level = parse_options(argv)
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
