"""Read-only connections for the server, used from worker threads.

In WAL mode readers never block the writer and see the last committed state.
Each read borrows one connection from a small pool for the length of one
``_thd_*`` function, so a connection is never shared by two threads at once.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

from cicd.storage.database import open_database

T = TypeVar("T")


class ReaderPool:
    def __init__(self, path: str | os.PathLike[str], *, size: int = 4) -> None:
        self.path = path
        self.size = size
        self._free: list[sqlite3.Connection] = []
        self._limiter = trio.CapacityLimiter(size)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a worker thread and return its result."""
        return await trio.to_thread.run_sync(self._thd_run, fn, limiter=self._limiter)

    def _thd_run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._free.pop() if self._free else self._thd_connect()
        try:
            return fn(conn)
        finally:
            self._free.append(conn)

    def _thd_connect(self) -> sqlite3.Connection:
        conn = open_database(self.path, readonly=True)
        conn.execute("PRAGMA query_only = ON")
        return conn

    def close(self) -> None:
        while self._free:
            self._free.pop().close()
