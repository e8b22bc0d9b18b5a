"""Lines typed on stdin as an async iterator that never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator

_READ_SIZE = 64 * 1024


async def stdin_lines(fd: int) -> AsyncIterator[str]:
    """Yield decoded lines read from file descriptor `fd` until end of input.

    A daemon thread does the blocking reads: unlike the event loop's pipe readers it
    works for terminals, pipes and redirected files alike, and it does not keep the
    process alive at exit. It reads the raw descriptor with os.read rather than
    sys.stdin: a daemon thread parked inside a buffered reader holds that reader's
    lock, and the interpreter aborts when it finds the lock taken at shutdown.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def deliver(line: bytes) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, line.decode("utf-8", errors="replace"))

    def read() -> None:
        pending = b""
        # OSError: stdin closed underneath us, which is the end of input too.
        # RuntimeError: the loop is gone because the process is shutting down.
        with contextlib.suppress(OSError, RuntimeError):
            while chunk := os.read(fd, _READ_SIZE):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    deliver(line + b"\n")
            if pending:
                deliver(pending)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="relay-mac stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line
