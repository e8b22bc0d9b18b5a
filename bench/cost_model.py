"""Cost model in US dollars, from the measured figures, next to a Scan-per-message design.

Reads bench/results/call_counts.json (requests per operation) and handler_time.json
(handler durations), so run those two first (`make bench` does). The Scan-per-message
design is AWS's WebSocket chat sample's way of finding recipients: every message Scans
the whole connections table. Its read units are measured here, not estimated: moto
gets N connection items shaped like the sample's ({"connectionId": ...}), the Scan runs
page by page as the sample's would (eventually consistent), and tests/support/capacity.py
prices what it read. Everything else of a frame (the inbound message, one post, one
invocation) is given the same cost as ours, which flatters the Scan design: its
Lambda would also run longer, reading up to 1 MB per page.

    .venv/bin/python bench/cost_model.py [--frames-per-session-hour 720]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from benchlib import REGION, RESULTS, ROOT, print_table, write_results

from tests.support.capacity import UnitRecorder

# US East (N. Virginia) list prices as AWS publishes them on these pages. They were not
# re-read from this machine (it has no network): check them before quoting a figure.
# https://aws.amazon.com/api-gateway/pricing/ (WebSocket APIs, first billion messages)
# https://aws.amazon.com/lambda/pricing/ (Arm, first 7.5 billion GB-seconds)
# https://aws.amazon.com/dynamodb/pricing/on-demand/ (since the November 2024 price cut)
PRICES = {
    "api_gateway_message": 1.00 / 1e6,  # per message (32 KB increments)
    "api_gateway_connection_minute": 0.25 / 1e6,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm64": 0.0000133334,
    "dynamodb_read_request_unit": 0.125 / 1e6,
    "dynamodb_write_request_unit": 0.625 / 1e6,
}
MEMORY_GB = 256 / 1024  # template.yaml Globals: MemorySize 256, arm64
KEEPALIVE_SECONDS = 540  # relay-mac and the browser page ping this often
SCAN_USERS = (100, 10_000)
SAMPLE_CONNECTION_ID = "L0SM9cOFvHcCIhw="  # API Gateway connection ids are 16 characters


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        sys.exit(f"{path.relative_to(ROOT)} is missing: run bench/{name}.py first (or make bench)")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def lambda_cost(invocations: float, billed_ms: float) -> float:
    seconds = billed_ms / 1000
    return invocations * (PRICES["lambda_request"] + MEMORY_GB * seconds * PRICES["lambda_gb_second_arm64"])


def operation_cost(figures: dict[str, Any], duration_ms: float) -> dict[str, float]:
    """Dollars of one operation, by service; Lambda bills each invocation in whole milliseconds."""
    return {
        "api_gateway": figures["api_gateway_messages"] * PRICES["api_gateway_message"],
        "lambda": lambda_cost(figures["lambda_invocations"], math.ceil(duration_ms)),
        "dynamodb": figures["read_units"] * PRICES["dynamodb_read_request_unit"]
        + figures["write_units"] * PRICES["dynamodb_write_request_unit"],
    }


def scan_read_units(users: int) -> float:
    """Read units of one Scan of a connections table holding `users` items, as the sample runs it."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": REGION})
    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    with mock_aws():
        uncounted = boto3.session.Session(region_name=REGION).client("dynamodb")
        uncounted.create_table(
            TableName="simplechat_connections",
            KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "connectionId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for start in range(0, users, 25):
            uncounted.batch_write_item(
                RequestItems={
                    "simplechat_connections": [
                        {"PutRequest": {"Item": {"connectionId": {"S": f"{n:016d}"}}}}
                        for n in range(start, min(users, start + 25))
                    ]
                }
            )
        counted = boto3.session.Session(region_name=REGION)
        recorder = UnitRecorder(lambda table, key: None)
        recorder.observe(counted.events)
        client = counted.client("dynamodb")

        def scan_all() -> None:
            for _ in client.get_paginator("scan").paginate(TableName="simplechat_connections"):
                pass

        units: float = recorder.during(scan_all).read_units
        return units


def dollars(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.1 else f"${value:,.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--frames-per-session-hour",
        type=int,
        default=720,
        help="frames a session relays in an hour (default: one each way every 10 s)",
    )
    arguments = parser.parse_args(argv)
    counts = load("call_counts")
    timing = load("handler_time")
    large = str(counts["sizes"][1])
    ops = counts["figures"][large]
    send_ms = {name: k["total_ms_p50"] for name, k in timing["kinds"].items()}
    route_ms = {route: f["total_ms_p50"] for route, f in timing["lifecycle"].items()}

    # ---- per million frames ------------------------------------------------------------
    frame_kinds = {
        "browser -> mac": ("send browser -> mac", send_ms["browser -> mac"], 1),
        "mac -> one browser": ("send mac -> one browser", send_ms["mac -> one browser"], 1),
        "mac -> all 8 browsers": (
            next(n for n in ops if n.startswith("send mac -> all")),
            send_ms["mac -> all (8 browsers)"],
            8,
        ),
    }
    per_million: dict[str, Any] = {}
    rows = []
    for label, (operation, duration_ms, delivered) in frame_kinds.items():
        cost = operation_cost(ops[operation], duration_ms)
        frames_factor = 1e6 / delivered  # sends needed for a million delivered frames
        by_service = {service: value * frames_factor for service, value in cost.items()}
        total = sum(by_service.values())
        per_million[label] = {**by_service, "total": total, "billed_ms": math.ceil(duration_ms)}
        rows.append(
            [
                f"this relay, {label}",
                f"{ops[operation]['api_gateway_messages']}",
                f"{ops[operation]['read_units']:g} / {ops[operation]['write_units']:g}",
                math.ceil(duration_ms),
                dollars(by_service["api_gateway"]),
                dollars(by_service["lambda"]),
                dollars(by_service["dynamodb"]),
                dollars(total),
            ]
        )
    browser_frame = ops["send browser -> mac"]
    scans: dict[str, Any] = {}
    for users in SCAN_USERS:
        units = scan_read_units(users)
        figures = {**browser_frame, "read_units": units}
        cost = {service: value * 1e6 for service, value in operation_cost(figures, send_ms["browser -> mac"]).items()}
        total = sum(cost.values())
        scans[str(users)] = {"scan_read_units": units, **cost, "total": total}
        rows.append(
            [
                f"Scan per message, {users:,} users",
                browser_frame["api_gateway_messages"],
                f"{units:g} / 0",
                math.ceil(send_ms["browser -> mac"]),
                dollars(cost["api_gateway"]),
                dollars(cost["lambda"]),
                dollars(cost["dynamodb"]),
                dollars(total),
            ]
        )
    print("Per million relayed frames (US East list prices)")
    print_table(
        ["design", "API GW msgs/send", "RRU / WRU per send", "billed ms", "API Gateway", "Lambda", "DynamoDB", "total"],
        rows,
    )

    # ---- per 1,000 session-hours -------------------------------------------------------
    # One session-hour: a mac-client and one browser connected for the hour, each pinging
    # every KEEPALIVE_SECONDS, the session opened and closed once, and the given frames
    # (half each way).
    pings = 2 * 3600 / KEEPALIVE_SECONDS
    fixed = {
        "connection minutes": {"api_gateway": 2 * 60 * PRICES["api_gateway_connection_minute"]},
        "$connect x2": operation_cost(ops["$connect"], route_ms["$connect"]),
        "register": operation_cost(ops["register"], route_ms["register"]),
        "auth": operation_cost(ops["auth"], route_ms["auth"]),
        "keepalive pings": {k: v * pings for k, v in operation_cost(ops["ping"], route_ms["$default"]).items()},
        "$disconnect x2": operation_cost(ops["browser $disconnect"], route_ms["$disconnect"]),
    }
    fixed["$connect x2"] = {k: 2 * v for k, v in fixed["$connect x2"].items()}
    mac_leaves = operation_cost(ops["mac $disconnect (1 browser)"], route_ms["$disconnect"])
    fixed["$disconnect x2"] = {k: v + mac_leaves[k] for k, v in fixed["$disconnect x2"].items()}
    fixed_total = 1000 * sum(sum(parts.values()) for parts in fixed.values())
    half = arguments.frames_per_session_hour / 2
    ours_frames = (
        1000
        * half
        * (
            sum(operation_cost(ops["send browser -> mac"], send_ms["browser -> mac"]).values())
            + sum(operation_cost(ops["send mac -> one browser"], send_ms["mac -> one browser"]).values())
        )
    )
    session_rows = [
        ["this relay", dollars(fixed_total), dollars(ours_frames), dollars(fixed_total + ours_frames)],
    ]
    per_session_hours: dict[str, Any] = {
        "fixed_per_1000": fixed_total,
        "fixed_parts_per_1000": {name: 1000 * sum(parts.values()) for name, parts in fixed.items()},
        "this_relay_frames_per_1000": ours_frames,
        "frames_per_session_hour": arguments.frames_per_session_hour,
        "scan": {},
    }
    for users in SCAN_USERS:
        scan_frames = 1000 * arguments.frames_per_session_hour * scans[str(users)]["total"] / 1e6
        per_session_hours["scan"][str(users)] = scan_frames
        session_rows.append(
            [
                f"Scan per message, {users:,} users",
                dollars(fixed_total),
                dollars(scan_frames),
                dollars(fixed_total + scan_frames),
            ]
        )
    print()
    print(f"Per 1,000 session-hours (1 mac-client + 1 browser, {arguments.frames_per_session_hour} frames/hour)")
    print_table(["design", "connections, set-up, keepalive", "frames", "total"], session_rows)
    path = write_results(
        "cost_model",
        {
            "prices": PRICES,
            "memory_gb": MEMORY_GB,
            "per_million_frames": per_million,
            "scan_per_message": scans,
            "per_1000_session_hours": per_session_hours,
        },
    )
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
