"""Cold-start budget, as an import graph: what each function loads beyond boto3 and its clients.

A timing test would be flaky; the import graph is not. Each function's init (import of
its handler module with its template environment, then the clients its first
invocation creates) runs in a fresh interpreter through bench/cold_start_child.py, the
script bench/cold_start.py times, and is compared with its floor: boto3 and the same
clients. docs/PERFORMANCE.md has the timings these budgets stand for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

from tests.support.functions import LAMBDA_ENVIRONMENT, ROOT, Function, functions

pytestmark = pytest.mark.process

CHILD = ROOT / "bench" / "cold_start_child.py"
LAYER = ROOT / "layers" / "relay"

# Each of these alone costs a large share of a cold start (docs/PERFORMANCE.md): the X-Ray
# SDK that Powertools Tracer imports (wrapt comes with it), pydantic (Powertools' parser
# and validation models), and what only tests and relay-local may use.
FORBIDDEN = ("aws_xray_sdk", "wrapt", "pydantic", "aws_lambda_powertools.utilities.parser", "moto", "requests")
# Powertools' event data classes (all of them, whichever one is imported) and its batch
# utility (asyncio with it), which the stream function once used.
FORBIDDEN_EVENT_CLASSES = (
    "aws_lambda_powertools.utilities.data_classes",
    "aws_lambda_powertools.utilities.batch",
    "asyncio",
)

# Modules a function may load beyond its floor: the handler, the relay package, Powertools'
# logger and metrics (the counts per function are in docs/PERFORMANCE.md). Powertools'
# event data classes would add about 40, its batch utility about 75 more, Tracer about 100
# and pydantic about 150. Measured on the merge of issues 10 and 11: 69 for the message
# functions (issue 10's relay.addresses, and issue 11's relay.resume_tokens,
# relay.grace_timer and relay.store.resume; stdlib and boto3 only), 68 for the others.
EXTRA_MODULES_BUDGET = 69
# Functions no WebSocket event reaches (the TTL stream, the grace timer's queue).
STREAM_FUNCTIONS = frozenset({"expiry", "grace"})

FUNCTIONS = functions()


def run_child(arguments: list[str], extra_environment: dict[str, str]) -> dict[str, Any]:
    environment = {"PATH": "/usr/bin:/bin", **LAMBDA_ENVIRONMENT, **extra_environment}
    completed = subprocess.run(
        [sys.executable, str(CHILD), *arguments, "--list-modules"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def function_environment(function: Function) -> dict[str, str]:
    endpoint = {"AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": "https://example.execute-api.us-east-1.amazonaws.com/prod"}
    return {
        **function.environment,
        "AWS_LAMBDA_FUNCTION_NAME": f"test-{function.name}",
        **(endpoint if function.name in STREAM_FUNCTIONS else {}),
    }


@cache
def init_report(name: str, import_only: bool = False) -> dict[str, Any]:
    function = next(f for f in FUNCTIONS if f.name == name)
    module = function.handler.rsplit(".", 1)[0]
    arguments = ["function", str(function.code_uri), str(LAYER), module]
    return run_child([*arguments, "--import-only"] if import_only else arguments, function_environment(function))


@cache
def floor_modules(clients: tuple[str, ...]) -> frozenset[str]:
    return frozenset(run_child(["floor", *clients], {})["module_names"])


def test_every_function_folder_is_measured() -> None:
    folders = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
    assert sorted(f.name for f in FUNCTIONS) == folders
    assert len(folders) >= 7


@pytest.mark.parametrize("name", [f.name for f in FUNCTIONS])
def test_function_loads_nothing_heavy(name: str) -> None:
    loaded = init_report(name)["module_names"]
    forbidden = FORBIDDEN + FORBIDDEN_EVENT_CLASSES

    heavy = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))

    assert heavy == []


@pytest.mark.parametrize("name", [f.name for f in FUNCTIONS])
def test_function_stays_within_its_module_budget(name: str) -> None:
    report = init_report(name)
    floor = floor_modules(tuple(report["clients"]))

    extra = sorted(set(report["module_names"]) - floor)

    assert len(extra) <= EXTRA_MODULES_BUDGET, f"{name} loads {len(extra)} modules beyond its floor: {extra}"


@pytest.mark.parametrize("name", [f.name for f in FUNCTIONS])
def test_importing_a_handler_creates_no_aws_client(name: str) -> None:
    """Clients are made at the first invocation, once per container, not at import."""
    assert init_report(name, import_only=True)["clients"] == []


def test_message_functions_create_exactly_their_two_clients() -> None:
    assert init_report("send")["clients"] == ["apigatewaymanagementapi", "dynamodb"]
    assert init_report("debug")["clients"] == ["dynamodb"]
    assert init_report("connect")["clients"] == []


def test_the_floor_is_boto3_and_nothing_of_ours() -> None:
    floor = floor_modules(("apigatewaymanagementapi", "dynamodb"))

    assert "boto3" in floor
    assert not any(m.startswith(("relay", "aws_lambda_powertools")) for m in floor)
