"""Running functions as Lambda does: each in its own processes, imported once, kept warm.

Every function gets a pool of worker processes (`python -m relay_local.worker`), each
started with exactly the function's environment. A worker runs one invocation at a
time, as a Lambda execution environment does; the pool starts more workers, up to its
limit, when invocations overlap, so that connections do not wait on one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relay_local.invocation import Invocation
from relay_local.template import Function

log = logging.getLogger("relay_local")
function_log = logging.getLogger("relay_local.function")

# Events are at most 128 KB of body plus metadata; answers may be larger.
_CHANNEL_LIMIT = 64 * 1024 * 1024
_START_TIMEOUT_SECONDS = 60.0


class FunctionStartError(Exception):
    """A worker could not import its handler (Lambda's Runtime.ImportModuleError)."""


class Worker:
    def __init__(
        self, function: Function, environment: Mapping[str, str], spec: dict[str, Any], command: list[str]
    ) -> None:
        self.function = function
        self.command = command
        self.environment = dict(environment)
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._log_tasks: list[asyncio.Task[None]] = []
        self._next_id = 0

    async def start(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                str(child_end.fileno()),
                cwd=self.function.code_dir,
                env=self.environment,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_end.fileno(),),
                # Its own session: a Ctrl-C in the terminal is for relay-local, which
                # still needs its workers to run $disconnect while it shuts down.
                start_new_session=True,
            )
        finally:
            child_end.close()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._log_tasks = [
            asyncio.create_task(self._pass_through(self.process.stdout)),
            asyncio.create_task(self._pass_through(self.process.stderr)),
        ]
        self._reader, self._writer = await asyncio.open_connection(sock=parent_end, limit=_CHANNEL_LIMIT)
        self._write(self.spec)
        try:
            line = await asyncio.wait_for(self._reader.readline(), _START_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.stop()
            raise FunctionStartError(f"{self.function.logical_id}: handler import took too long") from None
        if not line:
            await self.stop()
            code = self.process.returncode
            raise FunctionStartError(
                f"{self.function.logical_id}: the worker process exited (code {code}) before importing its handler"
            )
        ready: dict[str, Any] = json.loads(line)
        if not ready.get("ready"):
            await self.stop()
            error = ready.get("error") or {}
            raise FunctionStartError(
                f"{self.function.logical_id}: cannot import handler {self.function.handler}: "
                f"{error.get('errorMessage', 'unknown error')}"
            )

    async def _pass_through(self, stream: asyncio.StreamReader) -> None:
        # The function's logs (structured JSON from Powertools, print(), tracebacks) are
        # passed through as they are, one record per line, prefixed with the function.
        while line := await stream.readline():
            function_log.info(
                "%s", line.decode("utf-8", "replace").rstrip("\n"), extra={"function": self.function.name}
            )

    def _write(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")

    async def invoke(self, event: dict[str, Any], request_id: str) -> Invocation:
        invocation = await self._invoke(event, request_id)
        # Lambda's own report line, at DEBUG: one per invocation, after it ended.
        function_log.debug(
            "REPORT RequestId: %s Duration: %.2f ms Status: %s",
            request_id,
            invocation.duration_ms,
            invocation.status,
            extra={"function": self.function.name},
        )
        return invocation

    async def _invoke(self, event: dict[str, Any], request_id: str) -> Invocation:
        assert self._reader is not None
        assert self._writer is not None
        self._next_id += 1
        timeout = self.function.timeout_seconds
        started = time.perf_counter()
        self._write(
            {
                "id": self._next_id,
                "event": event,
                "request_id": request_id,
                "deadline_epoch_ms": int((time.time() + timeout) * 1000),
            }
        )
        try:
            await self._writer.drain()
            line = await asyncio.wait_for(self._reader.readline(), timeout)
        except TimeoutError:
            duration = (time.perf_counter() - started) * 1000
            function_log.info("Task timed out after %.2f seconds", timeout, extra={"function": self.function.name})
            return Invocation("timeout", error={"errorMessage": "Task timed out"}, duration_ms=duration)
        except (ConnectionError, asyncio.IncompleteReadError):
            line = b""
        duration = (time.perf_counter() - started) * 1000
        if not line:
            return Invocation("crash", error={"errorMessage": "Runtime exited"}, duration_ms=duration)
        answer = json.loads(line)
        if "error" in answer:
            return Invocation("error", error=answer["error"], duration_ms=duration)
        return Invocation("ok", result=answer.get("result"), duration_ms=duration)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        if self.process is not None and self.process.returncode is None:
            # Closing the channel ends the worker's read loop; kill it if it is stuck in a handler.
            try:
                await asyncio.wait_for(self.process.wait(), 1.0)
            except TimeoutError:
                self.kill()
                await self.process.wait()
        for task in self._log_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 2.0)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may have exited just now
                self.process.kill()


class FunctionPool:
    """Up to `max_workers` warm workers of one function; each runs one invocation at a time."""

    def __init__(
        self,
        function: Function,
        environment: Mapping[str, str],
        spec: dict[str, Any],
        max_workers: int,
        command: list[str],
    ) -> None:
        self.function = function
        self.environment = environment
        self.spec = spec
        self.command = command
        self.max_workers = max_workers
        self._idle: list[Worker] = []
        self._slots = asyncio.Semaphore(max_workers)
        self._generation = 0
        self._worker_generation: dict[Worker, int] = {}
        self._all: set[Worker] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        # Set while relay-local stops: droppable invocations still queued are not run,
        # so that $disconnect does not wait behind them.
        self.dropping = False

    async def _new_worker(self) -> Worker:
        worker = Worker(self.function, self.environment, self.spec, self.command)
        self._all.add(worker)
        try:
            await worker.start()
        except BaseException:
            self._all.discard(worker)
            raise
        self._worker_generation[worker] = self._generation
        return worker

    async def warm_up(self) -> None:
        """Start one worker now, so that a handler that cannot be imported is reported at start-up."""
        worker = await self._new_worker()
        self._idle.append(worker)

    async def invoke(self, event: dict[str, Any], *, droppable: bool = False) -> tuple[Invocation, str]:
        request_id = str(uuid.uuid4())
        async with self._slots:
            if droppable and self.dropping:
                return Invocation("dropped"), request_id
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                try:
                    worker = await self._new_worker()
                except FunctionStartError as error:
                    log.error("%s", error)
                    return Invocation("crash", error={"errorMessage": str(error)}), request_id
            try:
                invocation = await worker.invoke(event, request_id)
            except BaseException:
                # Cancelled (relay-local is stopping) or broken mid-invocation: the
                # sandbox's state is unknown, so it is not reused.
                worker.kill()
                self.track_retirement(worker)
                raise
            if invocation.status in ("timeout", "crash") or not worker.alive:
                # A timed-out or dead sandbox is thrown away; the next invocation is a cold start.
                worker.kill()
                await self._retire(worker)
            elif self._worker_generation.get(worker) != self._generation:
                await self._retire(worker)
            else:
                self._idle.append(worker)
            return invocation, request_id

    def track_retirement(self, worker: Worker) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(worker))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, worker: Worker) -> None:
        self._all.discard(worker)
        self._worker_generation.pop(worker, None)
        await worker.stop()

    async def recycle(self) -> None:
        """Drop every warm worker, so that the next invocations import the code afresh."""
        self._generation += 1
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._retire(worker) for worker in idle))

    async def close(self) -> None:
        self._generation += 1
        self._idle = []
        await asyncio.gather(*(self._retire(worker) for worker in list(self._all)), *self._retiring)


def worker_environment(
    function: Function,
    *,
    region: str,
    extra: Mapping[str, str],
    passthrough: Mapping[str, str],
) -> dict[str, str]:
    """The environment a Lambda sandbox of this function would have, plus the local endpoints."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime or 'python3'}",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{uuid.uuid4().hex}",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "_HANDLER": function.handler,
        # The flag `sam local` sets; Powertools and the AWS SDKs use it to skip what only
        # works inside AWS (X-Ray segments, for one).
        "AWS_SAM_LOCAL": "true",
    }
    environment.update(passthrough)
    environment.update(extra)
    environment.update(function.environment)
    return environment


def worker_spec(
    function: Function,
    function_arn: str,
    import_path: list[Path],
    *,
    api_id: str = "",
    management_endpoint: str = "",
) -> dict[str, Any]:
    """What a worker needs to know: code, handler, import path, context values, where the local API is."""
    return {
        "api_id": api_id,
        "management_endpoint": management_endpoint,
        "code_dir": str(function.code_dir),
        "import_path": [str(path) for path in import_path],
        "handler": function.handler,
        "module": function.handler_module,
        "function": function.handler_function,
        "function_name": function.name,
        "function_arn": function_arn,
        "memory_mb": function.memory_mb,
    }
