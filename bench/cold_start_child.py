"""One cold start, in this fresh process: prints one JSON line of what it cost.

    cold_start_child.py function <code-uri> <layer-dir> <module>   the function's init
    cold_start_child.py floor <service>...                          boto3 + those clients only

With --list-modules the report also names every module loaded, and with --import-only
a function's clients are not created (both for tests/test_import_budget.py).

"function" imports the handler module from its CodeUri with the layer behind it on
sys.path (as Lambda puts /var/task before /opt/python), then creates the AWS clients
its first invocation creates, through the relay's own cached factories. "floor" imports
boto3 and creates the same clients and nothing else. Both clocks start at the first
statement after the interpreter is up, so interpreter start-up (equal for both) is
left out. CPU time is this process's own; wall time includes waiting for the CPU.
"""

from __future__ import annotations

import time

# Taken before anything else is imported, so that the measured span covers every import.
CPU_START = time.process_time()
WALL_START = time.perf_counter()

import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

MANAGEMENT_ENDPOINT = "https://example.execute-api.us-east-1.amazonaws.com/prod"


def first_invocation_clients(module: Any) -> str:
    """Create the clients the function's first invocation would, the way it would.

    Which factory a function uses is read off the names its module imports; returns
    the factory's name for the report.
    """
    names = vars(module)
    if "answer_client_message" in names or "relay_for_event" in names:
        from relay import wiring  # noqa: PLC0415

        wiring.relay_for("a1b2c3d4e5", "prod")
        return "relay_for"
    if "relay_for_configured_endpoint" in names:
        names["relay_for_configured_endpoint"]()
        return "relay_for_configured_endpoint"
    if "session_store" in names:
        names["session_store"]()
        return "session_store"
    return "none"


def live_client_services() -> list[str]:
    import botocore.client  # noqa: PLC0415

    return sorted(
        obj.meta.service_model.service_name for obj in gc.get_objects() if isinstance(obj, botocore.client.BaseClient)
    )


def main() -> None:
    mode = sys.argv[1]
    if mode == "function":
        code_uri, layer, module_name = sys.argv[2:5]
        sys.path[:0] = [code_uri, layer]
        module = importlib.import_module(module_name)
        factory = "none" if "--import-only" in sys.argv else first_invocation_clients(module)
    else:
        import boto3  # noqa: PLC0415

        for service in (name for name in sys.argv[2:] if not name.startswith("--")):
            endpoint = MANAGEMENT_ENDPOINT if service == "apigatewaymanagementapi" else None
            boto3.client(service, endpoint_url=endpoint)
        factory = "boto3.client"
    cpu_ms = (time.process_time() - CPU_START) * 1000
    wall_ms = (time.perf_counter() - WALL_START) * 1000
    report = {
        "cpu_ms": cpu_ms,
        "wall_ms": wall_ms,
        "factory": factory,
        "clients": live_client_services(),
        "modules": len(sys.modules),
        "heavy_modules": sorted(
            name for name in ("aws_xray_sdk", "pydantic", "wrapt", "asyncio", "moto") if name in sys.modules
        ),
    }
    if "--list-modules" in sys.argv:
        report["module_names"] = sorted(sys.modules)
    print(json.dumps(report))


main()
