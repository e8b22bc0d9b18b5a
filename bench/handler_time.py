"""Handler time: where the send handler's time goes, per frame, split into own code and AWS calls.

The real send handler runs in this process behind the test harness's simulated API
Gateway; DynamoDB and the Management API are moto in server mode on loopback
(relay-local's embedded DynamoDB, which serves both), so every AWS call is a real HTTP
request. The time inside AWS calls is measured with botocore's own events, from
`provide-client-params` (the first thing a call does) to `after-call` (the last), as
the union of those intervals (a broadcast posts in parallel); the rest of the handler's
time is its own code: event parsing, Powertools' logger and metrics, the relay's rules.

    .venv/bin/python bench/handler_time.py [--frames 300]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchlib import REGION, ROOT, TABLE_NAME, in_process_environment, median, percentile, print_table, write_results

sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "relay"), str(ROOT / "local")]

import boto3  # noqa: E402
import requests  # noqa: E402
from relay_local.dynamodb import EmbeddedDynamoDb  # noqa: E402

from tests.support.aws import create_sessions_table, reset_relay_caches  # noqa: E402
from tests.support.harness import Gateway  # noqa: E402

# The deployed default level: INFO lines are written on every rejection, none per frame.
ENVIRONMENT = in_process_environment(log_level="INFO")
WARM_UP_FRAMES = 20


class AwsCallClock:
    """Intervals spent inside botocore API calls, from any thread."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self.calls = 0
        self._lock = threading.Lock()

    def observe(self, events: Any) -> None:
        events.register_first("provide-client-params", self._start)
        events.register_last("after-call", self._stop)
        events.register_last("after-call-error", self._stop)

    def _start(self, context: dict[str, Any], **_: Any) -> None:
        context["aws_call_started"] = time.perf_counter()

    def _stop(self, context: dict[str, Any], **_: Any) -> None:
        started = context.pop("aws_call_started", None)
        if started is not None:
            with self._lock:
                self.intervals.append((started, time.perf_counter()))
                self.calls += 1

    def busy_between(self, start: float, end: float) -> float:
        """Seconds in [start, end] covered by at least one call (overlaps counted once)."""
        clipped = sorted((max(a, start), min(b, end)) for a, b in self.intervals if b > start and a < end)
        total = 0.0
        current_start, current_end = None, None
        for a, b in clipped:
            if current_end is None or a > current_end:
                if current_end is not None and current_start is not None:
                    total += current_end - current_start
                current_start, current_end = a, b
            else:
                current_end = max(current_end, b)
        if current_end is not None and current_start is not None:
            total += current_end - current_start
        return total


class TimedHandler:
    """The handler as Lambda calls it, with the span of its last invocation recorded.

    Timing the handler rather than the harness's message() leaves out what only the
    harness does (building the event from its fixture, selecting the route).
    """

    def __init__(self, handler: Callable[[Any, Any], Any]) -> None:
        self.handler = handler
        self.span = (0.0, 0.0)

    def __call__(self, event: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.handler(event, context)
        finally:
            self.span = (started, time.perf_counter())


def time_frames(
    handler: TimedHandler, clock: AwsCallClock, frames: int, send: Callable[[int], object]
) -> dict[str, Any]:
    for n in range(WARM_UP_FRAMES):
        send(n)
    totals, aws, own, calls = [], [], [], []
    for n in range(frames):
        calls_before = clock.calls
        send(n)
        started, ended = handler.span
        busy = clock.busy_between(started, ended)
        totals.append((ended - started) * 1000)
        aws.append(busy * 1000)
        own.append((ended - started - busy) * 1000)
        calls.append(clock.calls - calls_before)
    return {
        "frames": frames,
        "aws_calls_per_frame": median(calls),
        "total_ms_p50": round(median(totals), 3),
        "total_ms_p99": round(percentile(totals, 0.99), 3),
        "aws_ms_p50": round(median(aws), 3),
        "own_ms_p50": round(median(own), 3),
        "own_ms_p99": round(percentile(own, 0.99), 3),
        "own_share_p50": round(median([o / t for o, t in zip(own, totals, strict=True)]), 3),
    }


def time_lifecycle(gateway: Gateway, clock: AwsCallClock, sessions: int) -> dict[str, dict[str, Any]]:
    """Handler time of every other route, over whole sessions: connect, register, auth,
    ping, the browser leaving, the mac-client leaving (for the cost model's durations)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    timed = {route: TimedHandler(handler) for route, handler in gateway.handlers.items() if route != "send"}
    originals = dict(gateway.handlers)
    for route, handler in timed.items():
        gateway.handlers[route] = handler

    def record(route: str) -> None:
        spans.setdefault(route, []).append(timed[route].span)

    for _ in range(sessions):
        mac = gateway.connect()
        record("$connect")
        gateway.message(mac, {"action": "register", "client_id": "bench-mac"})
        record("register")
        code = gateway.last(mac)["code"]
        browser = gateway.connect()
        gateway.message(browser, {"action": "auth", "code": code})
        record("auth")
        gateway.message(browser, {"action": "ping"})
        record("$default")
        gateway.disconnect(browser)
        record("$disconnect")
        gateway.disconnect(mac)
        record("$disconnect")
    gateway.handlers.update(originals)
    figures = {}
    for route, route_spans in spans.items():
        totals = [(end - start) * 1000 for start, end in route_spans]
        aws = [clock.busy_between(start, end) * 1000 for start, end in route_spans]
        figures[route] = {
            "invocations": len(route_spans),
            "total_ms_p50": round(median(totals), 3),
            "aws_ms_p50": round(median(aws), 3),
            "own_ms_p50": round(median([t - a for t, a in zip(totals, aws, strict=True)]), 3),
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="measured frames per kind of send")
    parser.add_argument("--sessions", type=int, default=30, help="measured session lifecycles")
    arguments = parser.parse_args(argv)

    saved = dict(os.environ)
    os.environ.update(ENVIRONMENT)
    server = EmbeddedDynamoDb()
    endpoint = server.start()
    results: dict[str, Any] = {"frames": arguments.frames, "sessions": arguments.sessions, "kinds": {}}
    try:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        os.environ["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] = endpoint
        create_sessions_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint), TABLE_NAME)
        reset_relay_caches()
        boto3.setup_default_session(region_name=REGION)
        gateway = Gateway()
        gateway.observe(boto3.DEFAULT_SESSION.events)
        clock = AwsCallClock()
        clock.observe(boto3.DEFAULT_SESSION.events)

        handler = TimedHandler(gateway.handlers["send"])
        gateway.handlers["send"] = handler

        # The handlers log and print metrics to stdout, which is our table's.
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            mac, code = gateway.register("bench-mac")
            browsers = [gateway.join(code) for _ in range(8)]
            browser, peer = browsers[0]
            kinds: dict[str, Callable[[int], object]] = {
                "browser -> mac": lambda n: gateway.message(browser, {"action": "send", "data": {"n": n}}),
                "mac -> one browser": lambda n: gateway.message(mac, {"action": "send", "to": peer, "data": {"n": n}}),
                "mac -> all (8 browsers)": lambda n: gateway.message(mac, {"action": "send", "data": {"n": n}}),
            }
            for name, send in kinds.items():
                results["kinds"][name] = time_frames(handler, clock, arguments.frames, send)
            results["lifecycle"] = time_lifecycle(gateway, clock, arguments.sessions)
        reset_relay_caches()
        boto3.DEFAULT_SESSION = None
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)

    rows = [
        [
            name,
            f"{k['aws_calls_per_frame']:g}",
            f"{k['total_ms_p50']:.2f}",
            f"{k['aws_ms_p50']:.2f}",
            f"{k['own_ms_p50']:.2f}",
            f"{100 * k['own_share_p50']:.0f}%",
            f"{k['total_ms_p99']:.2f}",
            f"{k['own_ms_p99']:.2f}",
        ]
        for name, k in results["kinds"].items()
    ]
    print(f"send handler, in process, AWS on loopback (moto server): per frame, {arguments.frames} frames each")
    print_table(
        ["frame", "AWS calls", "total p50 ms", "in AWS calls p50", "own code p50", "own share", "total p99", "own p99"],
        rows,
    )
    print()
    print(f"other routes, over {arguments.sessions} whole sessions (ms, p50)")
    print_table(
        ["route", "invocations", "total", "in AWS calls", "own code"],
        [
            [route, f["invocations"], f"{f['total_ms_p50']:.2f}", f"{f['aws_ms_p50']:.2f}", f"{f['own_ms_p50']:.2f}"]
            for route, f in results["lifecycle"].items()
        ],
    )
    path = write_results("handler_time", results)
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
