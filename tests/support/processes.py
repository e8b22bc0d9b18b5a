"""Running the project's console scripts as real processes and reading their output."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
WAIT_SECONDS = 30.0


def console_script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: install the project with `pip install -e '.[test]'`")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningProcess:
    """A child process whose stdout lines (and stderr) are collected by threads."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        merge_stderr: bool = False,
        cwd: Path | None = None,
        own_process_group: bool = False,
    ) -> None:
        self.args = list(args)
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, **(env or {})},
            cwd=cwd,
            # Its own group, so that `kill_group` can take its children down with it.
            start_new_session=own_process_group,
        )
        self._own_process_group = own_process_group
        self.lines: list[str] = []
        self._new_lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True)]
        if not merge_stderr:
            self._readers.append(threading.Thread(target=self._read_stderr, daemon=True))
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new_lines.put(line.rstrip("\n"))
        self._new_lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def wait_for_line(self, predicate: Callable[[str], bool], what: str, timeout: float = WAIT_SECONDS) -> str:
        """Read stdout until a line satisfies `predicate`; fail clearly if it never comes."""
        while True:
            try:
                line = self._new_lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self.args[0]} printed no line with {what}: {self.output()}") from None
            if line is None:
                self._new_lines.put(None)
                raise AssertionError(f"{self.args[0]} ended before printing {what}: {self.output()}")
            self.lines.append(line)
            if predicate(line):
                return line

    def wait_for_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """For `--json` output: the next event of `kind` whose fields match."""

        def matches(line: str) -> bool:
            event = json.loads(line)
            return bool(event.get("event") == kind and all(event.get(k) == v for k, v in fields.items()))

        return json.loads(self.wait_for_line(matches, f"a {kind} event {fields or ''}"))  # type: ignore[no-any-return]

    def type_line(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def terminate(self) -> int:
        """SIGTERM, then wait; the rest of stdout is collected into `lines`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish()

    def kill_group(self) -> int:
        """SIGKILL the process and everything it started: a crash, with no goodbyes."""
        assert self._own_process_group, "only for processes started with own_process_group=True"
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.finish()

    def finish(self) -> int:
        try:
            code = self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=WAIT_SECONDS)
        for reader in self._readers:
            reader.join(timeout=WAIT_SECONDS)
        while (line := self._new_lines.get_nowait() if not self._new_lines.empty() else None) is not None:
            self.lines.append(line)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code

    def output(self) -> str:
        return "stdout: " + repr(self.lines[-20:]) + " stderr: " + repr(self.stderr_lines[-20:])

    def __enter__(self) -> RunningProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()
