"""relay-local as a real process for the clients' end-to-end tests."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

from tests.support.files import ROOT
from tests.support.processes import RunningProcess, console_script

READY = re.compile(r"^relay-local ready (?P<ws>ws://\S+) (?P<http>http://\S+)$")
RELAY_START_SECONDS = 120.0


@dataclass
class RelayLocal:
    process: RunningProcess
    ws_url: str
    http_url: str

    def stop(self) -> int:
        return self.process.terminate()

    def crash(self) -> None:
        """Kill it and its workers at once: connections drop without a close frame, and
        (unlike a graceful stop) it accepts nothing more while going."""
        self.process.kill_group()

    def active_sessions(self) -> int:
        """What the debug function answers: `Active sessions: N`."""
        with urllib.request.urlopen(f"{self.http_url}/debug/sessions", timeout=30) as response:
            text: str = response.read().decode()
        return int(text.rsplit(":", 1)[1])


def start_relay_local(ws_port: int = 0, http_port: int = 0) -> RelayLocal:
    """Port 0: any free port (relay-local prints the ones it took on its ready line)."""
    args = [
        console_script("relay-local"),
        "--ws-port",
        str(ws_port),
        "--http-port",
        str(http_port),
        "--log-level",
        "WARNING",
    ]
    process = RunningProcess(args, merge_stderr=True, cwd=ROOT, own_process_group=True)
    try:
        # Generous: it starts a DynamoDB and a worker per function, on a possibly busy machine.
        line = process.wait_for_line(
            lambda text: READY.match(text) is not None, "its ready line", timeout=RELAY_START_SECONDS
        )
    except AssertionError:
        process.terminate()
        raise
    match = READY.match(line)
    assert match
    return RelayLocal(process, match["ws"], match["http"])
