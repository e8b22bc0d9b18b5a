"""Starting relay-local as a real process on free loopback ports, and talking to it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^relay-local ready (ws://\S+) (http://\S+)$")
# Generous bounds for start-up and for waiting on an effect; never asserted as durations.
START_TIMEOUT = 120.0
EFFECT_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayLocalProcess:
    """`python -m relay_local` in a child process, with its output collected."""

    def __init__(self, *arguments: str, cwd: Path = REPO_ROOT) -> None:
        self.arguments = [sys.executable, "-m", "relay_local", *arguments]
        self.cwd = cwd
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.ws_url = ""
        self.http_url = ""
        self._ready = threading.Event()

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
        )
        threading.Thread(target=self._read, args=(self.process.stdout, self.stdout_lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.stderr_lines), daemon=True).start()
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
                raise AssertionError(f"relay-local did not start:\n{self.output()}")
        return self

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        time.sleep(0.2)  # let the reader threads drain the pipes
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
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"relay-local did not stop on SIGINT:\n{self.output()}") from None

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout_lines, "--- stderr", *self.stderr_lines])

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


def start_relay_local(*arguments: str, cwd: Path = REPO_ROOT) -> RelayLocalProcess:
    return RelayLocalProcess(*arguments, cwd=cwd).start().wait_ready()


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
