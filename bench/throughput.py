"""Local throughput and latency: round trips through relay-local next to a plain echo server.

Each pair is a browser and a mac-client on real WebSockets: the browser sends a frame,
the mac-client sends it straight back to that browser, the browser times the round
trip and sends the next (one frame in flight per pair). Every round trip is two relayed
frames, two Lambda invocations of `send` and two PostToConnection calls. The floor is
the same client against a `websockets` echo server in this process: what the machine
and the socket library cost before any relay is involved.

relay-local is started as users start it (`relay-local --ws-port 0 --http-port 0`,
loopback only) and stopped with Ctrl-C (SIGINT) at the end.

    .venv/bin/python bench/throughput.py [--pairs 1 20] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchlib import ROOT, percentile, print_table, write_results
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

READY = re.compile(r"^relay-local ready (ws://\S+) (http://\S+)$")
START_TIMEOUT = 120.0
WARM_UP_SECONDS = 2.0
WARM_UP_ROUND_TRIPS = 8


@dataclass
class Run:
    round_trips_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        count = len(self.round_trips_ms)
        return {
            "round_trips": count,
            "seconds": round(self.seconds, 3),
            "round_trips_per_second": round(count / self.seconds, 1) if self.seconds else 0.0,
            "frames_per_second": round(2 * count / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(percentile(self.round_trips_ms, 0.50), 2) if count else None,
            "p99_ms": round(percentile(self.round_trips_ms, 0.99), 2) if count else None,
        }


class RelayLocal:
    """relay-local as a child process on free loopback ports."""

    def __init__(self) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        executable = Path(sys.executable).with_name("relay-local")
        self.process = subprocess.Popen(
            [str(executable), "--ws-port", "0", "--http-port", "0", "--log-level", "WARNING"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ws_url = ""
        self.output: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.output.append(line.rstrip("\n"))
            match = READY.match(line.strip())
            if match:
                self.ws_url = match.group(1)
                self._ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("relay-local did not start:\n" + "\n".join(self.output))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of this type, skipping keepalive noise; fails on an error."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message.get("type") == kind:
            return message
        if message.get("type") == "error":
            raise RuntimeError(f"relay answered {message} while waiting for {kind}")


async def pair_up(url: str) -> tuple[ClientConnection, ClientConnection]:
    mac = await connect(url, max_size=None)
    await mac.send(json.dumps({"action": "register", "client_id": "bench"}))
    code = (await expect(mac, "registered"))["code"]
    browser = await connect(url, max_size=None)
    await browser.send(json.dumps({"action": "auth", "code": code}))
    await expect(browser, "authenticated")
    await expect(mac, "peer_joined")
    return browser, mac


async def mac_echo(mac: ClientConnection) -> None:
    """The mac-client's side: every frame goes back to the browser it came from."""
    async for raw in mac:
        message = json.loads(raw)
        if message.get("type") == "frame":
            await mac.send(json.dumps({"action": "send", "to": message["from"], "data": message["data"]}))


async def browser_loop(browser: ClientConnection, until: float, run: Run, at_least: int = 0) -> None:
    sequence = 0
    while time.perf_counter() < until or sequence < at_least:
        sequence += 1
        started = time.perf_counter()
        await browser.send(json.dumps({"action": "send", "data": {"seq": sequence}}))
        while True:
            message = json.loads(await asyncio.wait_for(browser.recv(), 60))
            # The relay delivers {"type": "frame", "data": ...}; the echo server returns
            # the request itself, whose "data" is in the same place.
            data = message.get("data")
            if isinstance(data, dict) and data.get("seq") == sequence:
                break
            if message.get("type") == "error":
                raise RuntimeError(f"relay answered {message}")
        run.round_trips_ms.append((time.perf_counter() - started) * 1000)


async def measure_relay(url: str, pairs: int, seconds: float) -> Run:
    connections = await asyncio.gather(*(pair_up(url) for _ in range(pairs)))
    echoes = [asyncio.create_task(mac_echo(mac)) for _, mac in connections]
    run = Run()
    # Warm-up, not counted: relay-local runs several worker processes per function and
    # each has its own cold start (imports, clients); enough round trips reach them all.
    await asyncio.gather(
        *(browser_loop(b, time.perf_counter() + WARM_UP_SECONDS, Run(), WARM_UP_ROUND_TRIPS) for b, _ in connections)
    )
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(browser_loop(b, until, run) for b, _ in connections))
    run.seconds = time.perf_counter() - started
    for browser, mac in connections:
        await browser.close()
        await mac.close()
    for echo in echoes:
        echo.cancel()
    return run


async def echo_handler(ws: ServerConnection) -> None:
    async for raw in ws:
        await ws.send(raw)


async def measure_floor(pairs: int, seconds: float) -> Run:
    async with serve(echo_handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        browsers = [await connect(url, max_size=None) for _ in range(pairs)]
        await asyncio.gather(*(browser_loop(b, time.perf_counter(), Run(), WARM_UP_ROUND_TRIPS) for b in browsers))
        run = Run()
        started = time.perf_counter()
        await asyncio.gather(*(browser_loop(b, started + seconds, run) for b in browsers))
        run.seconds = time.perf_counter() - started
        for browser in browsers:
            await browser.close()
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    arguments = parser.parse_args(argv)

    relay = RelayLocal()
    results: dict[str, Any] = {"seconds": arguments.seconds, "websockets": version("websockets"), "runs": {}}
    try:
        relay.wait_ready()
        for pairs in arguments.pairs:
            through_relay = asyncio.run(measure_relay(relay.ws_url, pairs, arguments.seconds)).summary()
            floor = asyncio.run(measure_floor(pairs, arguments.seconds)).summary()
            results["runs"][str(pairs)] = {"relay_local": through_relay, "echo_floor": floor}
    finally:
        relay.stop()

    rows = []
    for pairs, run in results["runs"].items():
        relay_run, floor = run["relay_local"], run["echo_floor"]
        run["ratios"] = {
            "frames_per_second": round(relay_run["frames_per_second"] / floor["frames_per_second"], 4),
            "p50": round(relay_run["p50_ms"] / floor["p50_ms"], 1),
            "p99": round(relay_run["p99_ms"] / floor["p99_ms"], 1),
        }
        rows.append(
            [
                pairs,
                f"{relay_run['frames_per_second']:.0f}",
                f"{floor['frames_per_second']:.0f}",
                f"{run['ratios']['frames_per_second']:.3f}",
                f"{relay_run['p50_ms']:.1f}",
                f"{floor['p50_ms']:.2f}",
                f"{run['ratios']['p50']:.0f}x",
                f"{relay_run['p99_ms']:.1f}",
                f"{floor['p99_ms']:.2f}",
                f"{run['ratios']['p99']:.0f}x",
                relay_run["round_trips"],
            ]
        )
    print(
        f"Round trips browser -> mac-client -> browser through relay-local vs a direct echo server "
        f"({arguments.seconds:g} s each)"
    )
    print_table(
        [
            "pairs",
            "relay frames/s",
            "echo frames/s",
            "relay/echo",
            "relay p50 ms",
            "echo p50 ms",
            "p50 ratio",
            "relay p99 ms",
            "echo p99 ms",
            "p99 ratio",
            "round trips",
        ],
        rows,
    )
    path = write_results("throughput", results)
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
