"""relay-local as a real process on free loopback ports, and talking to it: the one
launcher of relay-local's own tests and of the clients' end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.support.files import ROOT
from tests.support.processes import free_port

__all__ = [
    "EFFECT_TIMEOUT",
    "FIXTURES",
    "RelayLocalProcess",
    "free_port",
    "management_client",
    "read_records",
    "start_fixture_gateway",
    "start_project_relay",
    "start_relay_local",
    "wait_for_record",
]

FIXTURES = ROOT / "tests" / "local" / "fixtures"
READY = re.compile(r"^relay-local ready (ws://\S+) (http://\S+)$")
# Generous bounds for start-up (a DynamoDB and a worker per function, on a possibly busy
# machine) and for waiting on an effect; never asserted as durations.
START_TIMEOUT = 120.0
EFFECT_TIMEOUT = 30.0


class RelayLocalProcess:
    """`python -m relay_local` in a child process of its own process group, with its
    output collected. AWS_* variables of the test run are not passed on: relay-local
    chooses its own endpoints and credentials, as it does on a fresh machine."""

    def __init__(self, *arguments: str, cwd: Path = ROOT) -> None:
        self.arguments = [sys.executable, "-m", "relay_local", *arguments]
        self.cwd = cwd
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.ws_url = ""
        self.http_url = ""
        self._ready = threading.Event()
        self._readers: list[threading.Thread] = []

    def start(self) -> RelayLocalProcess:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        self.process = subprocess.Popen(
            self.arguments,
            cwd=self.cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        for stream, lines in ((self.process.stdout, self.stdout_lines), (self.process.stderr, self.stderr_lines)):
            reader = threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            match = READY.match(line.strip())
            if match:
                self.ws_url, self.http_url = match.groups()
                self._ready.set()

    def wait_ready(self) -> RelayLocalProcess:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"relay-local did not start:\n{self.output()}")
        return self

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)  # the pipes are drained once the process and its workers are gone
        return code

    def interrupt(self) -> None:
        """Ctrl-C, without waiting for the process to end."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)

    def stop(self) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.wait_exit(120)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"relay-local did not stop on SIGINT:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL to relay-local and its workers at once."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def crash(self) -> None:
        """Kill it and its workers at once: connections drop without a close frame, and
        (unlike a graceful stop) it accepts nothing more while going."""
        self.kill()

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout_lines, "--- stderr", *self.stderr_lines])

    def control(self, *arguments: str) -> Any:
        """A relay-local command for this running relay (`expire --in 60`, `schedule NAME`),
        run as a user runs it; its JSON answer."""
        completed = subprocess.run(
            [sys.executable, "-m", "relay_local", *arguments, "--url", self.http_url],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=EFFECT_TIMEOUT,
            check=True,
        )
        return json.loads(completed.stdout)

    def active_sessions(self) -> int:
        """What the relay's debug function answers: `Active sessions: N`."""
        with urllib.request.urlopen(f"{self.http_url}/debug/sessions", timeout=EFFECT_TIMEOUT) as response:
            text: str = response.read().decode()
        return int(text.rsplit(":", 1)[1])

    @property
    def dynamodb_endpoint(self) -> str:
        """The DynamoDB endpoint relay-local's banner names (the embedded one, or --dynamodb-endpoint)."""
        for line in self.stdout_lines:
            match = re.match(r"^\s+DynamoDB\s+(http://\S+)", line)
            if match:
                return match.group(1)
        raise AssertionError(f"no DynamoDB line in the banner:\n{self.output()}")

    def dynamodb(self) -> Any:
        """A boto3 DynamoDB client of relay-local's DynamoDB."""
        return boto3.client(
            "dynamodb",
            endpoint_url=self.dynamodb_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    @property
    def ws_port(self) -> int:
        return int(self.ws_url.rsplit(":", 1)[1])

    @property
    def http_port(self) -> int:
        return int(self.http_url.rsplit(":", 1)[1])


def start_relay_local(*arguments: str, cwd: Path = ROOT) -> RelayLocalProcess:
    return RelayLocalProcess(*arguments, cwd=cwd).start().wait_ready()


def start_project_relay(*arguments: str) -> RelayLocalProcess:
    """The relay of this repository (template.yaml, its static dir), as `make run` serves
    it but on any free ports (0) and quietly; later arguments override these."""
    return start_relay_local(
        "--template", str(ROOT / "template.yaml"), "--ws-port", "0", "--http-port", "0", "--log-level", "WARNING",
        *arguments,
    )  # fmt: skip


def start_fixture_gateway(record_dir: Path, *arguments: str) -> RelayLocalProcess:
    """relay-local serving tests/local/fixtures/gateway (functions that record their
    events in `record_dir`) on free ports; later arguments add to these."""
    return start_relay_local(
        "--template", str(FIXTURES / "gateway" / "template.yaml"), "--ws-port", "0", "--http-port", "0",
        "--parameter-overrides", f"RecordDir={record_dir}", *arguments,
    )  # fmt: skip


def management_client(relay: RelayLocalProcess, stage: str) -> Any:
    """An unchanged boto3 Management API client, pointed at relay-local as a handler's would be."""
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"http://127.0.0.1:{relay.ws_port}/{stage}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def read_records(record_dir: Path, name: str) -> list[dict[str, Any]]:
    path = record_dir / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wait_for_record(record_dir: Path, name: str, connection_id: str) -> dict[str, Any]:
    """The event of `name` (connect, disconnect) that a function recorded for this connection."""
    deadline = time.monotonic() + EFFECT_TIMEOUT
    while time.monotonic() < deadline:
        for event in read_records(record_dir, name):
            if event["requestContext"]["connectionId"] == connection_id:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no {name} event recorded for {connection_id}")
