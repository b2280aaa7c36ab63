"""The event store: one writer task that commits events and log chunks in groups.

Producers put writes on a bounded channel (a full channel makes them wait: that is
the backpressure). The writer task takes everything waiting, up to a batch limit,
and commits it in one transaction on a worker thread, so many events share one
fsync. :meth:`EventStore.append` returns once its event is durable.

Resource handling: :meth:`EventStore.run` owns the connection; when its channel is
closed (by :meth:`EventStore.close`), it commits what is left and closes the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

import msgspec
import trio

from cicd.errors import StorageError
from cicd.events import model as ev
from cicd.storage.database import open_database
from cicd.storage.projections import apply_event

logger = logging.getLogger("cicd.storage")

MAX_BATCH = 2000
# A batch with at most this much log output is written on the event loop's thread.
INLINE_LOG_BYTES = 64 * 1024
# How long a commit waits for another connection's write lock.
BUSY_TIMEOUT_MS = 30_000


class LogChunk(msgspec.Struct, frozen=True):
    run_id: str
    job_id: str
    step: int
    seq: int
    data: bytes
    byte_offset: int = 0


class DropLogChunks(msgspec.Struct, frozen=True):
    """Delete a step's chunks with ``seq`` in ``[first_seq, last_seq]`` (log truncation)."""

    run_id: str
    job_id: str
    step: int
    first_seq: int
    last_seq: int


class Write(msgspec.Struct, frozen=True):
    """One SQL statement for the writer's next transaction (outbox cursors, dead letters)."""

    sql: str
    params: tuple[object, ...] = ()


class _Append:
    __slots__ = ("done", "error", "event", "event_id", "existing_run_id")

    def __init__(self, event: ev.Event, wait: bool) -> None:
        self.event = event
        self.done: trio.Event | None = trio.Event() if wait else None
        self.event_id = 0
        self.error: BaseException | None = None
        # For a RunRequested whose run id or idempotency key exists: that run's id.
        self.existing_run_id: str | None = None


class EventStore:
    def __init__(self, path: str | os.PathLike[str], *, queue_size: int = 4096) -> None:
        self.path = path
        self._send, self._receive = trio.open_memory_channel[Any](queue_size)
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self.events_written = 0
        self._committed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, report ready, and write until :meth:`close`."""
        self._conn = await trio.to_thread.run_sync(open_database, self.path)
        # With no busy timeout, BEGIN on the event loop's thread fails at once when
        # another connection holds the write lock (see _write_here).
        self._conn.execute("PRAGMA busy_timeout = 0")
        task_status.started()
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._commit(batch)
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    async def _commit(self, batch: list[Any]) -> None:
        try:
            # shield: a batch that reached the database is committed even if we are
            # cancelled meanwhile, so waiters are never left with a half-known outcome.
            with trio.CancelScope(shield=True):
                if self._write_here(batch):
                    await trio.to_thread.run_sync(self._thd_finish, limiter=self._limiter)
                else:
                    await trio.to_thread.run_sync(self._thd_commit, batch, limiter=self._limiter)
            self.events_written += sum(1 for item in batch if isinstance(item, _Append))
        except StorageError as exc:
            logger.error("writing %d records to %s failed: %s", len(batch), self.path, exc)
            for item in batch:
                if isinstance(item, _Append):
                    item.error = exc
            raise
        finally:
            for item in batch:
                if isinstance(item, (_Append, _Barrier)) and item.done is not None:
                    item.done.set()
            committed, self._committed = self._committed, trio.Event()
            committed.set()

    def _write_here(self, batch: list[Any]) -> bool:
        """Write a small batch on this thread, up to its COMMIT, and return True.

        Return False, with nothing written, for a batch that :meth:`_thd_commit` must
        write in a worker thread.

        The statements of a few events take well under a millisecond. In a worker
        thread, each one gives up the interpreter's lock inside SQLite and waits to
        take it back from the event loop, which multiplied a commit's time under load.
        Here only the COMMIT, with its fsync, goes to a thread. Batches with
        arbitrary statements, deletions or much log output are refused, and so is a
        database another connection has locked: :meth:`_thd_commit` waits for
        those in a thread.
        """
        conn = self._conn
        assert conn is not None
        log_bytes = 0
        for item in batch:
            if isinstance(item, LogChunk):
                log_bytes += len(item.data)
            elif not isinstance(item, (_Append, _Barrier)):
                return False
        if log_bytes > INLINE_LOG_BYTES:
            return False
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            # Usually "database is locked": another connection writes. Wait in a thread.
            logger.debug("writing %d records in a thread: %s", len(batch), exc)
            return False
        try:
            self._insert(conn, batch)
        except BaseException as exc:
            # Never leave the transaction open: the next batch could not begin its own.
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot write to database {self.path}: {exc}") from exc
            raise
        return True

    def _thd_finish(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StorageError(f"cannot write to database {self.path}: {exc}") from exc

    def _thd_commit(self, batch: list[Any]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                # Another connection holds the write lock: wait for it here, in the thread.
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")
            self._insert(conn, batch)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot write to database {self.path}: {exc}") from exc
            raise

    def _insert(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        chunks = []
        for item in batch:
            if isinstance(item, LogChunk):
                chunks.append(item)
                continue
            if isinstance(item, _Barrier):
                continue
            if chunks:
                self._insert_chunks(conn, chunks)
                chunks = []
            if isinstance(item, Write):
                conn.execute(item.sql, item.params)
                continue
            if isinstance(item, DropLogChunks):
                conn.execute(
                    "DELETE FROM step_logs WHERE run_id = ? AND job_id = ? AND step = ?"
                    " AND seq BETWEEN ? AND ?",
                    (item.run_id, item.job_id, item.step, item.first_seq, item.last_seq))
                continue
            self._insert_event(conn, item)
        if chunks:
            self._insert_chunks(conn, chunks)

    @staticmethod
    def _insert_chunks(conn: sqlite3.Connection, chunks: list[LogChunk]) -> None:
        conn.executemany(
            "INSERT INTO step_logs (run_id, job_id, step, seq, data, byte_offset)"
            " VALUES (?,?,?,?,?,?)",
            [(c.run_id, c.job_id, c.step, c.seq, c.data, c.byte_offset) for c in chunks],
        )
        totals: dict[tuple[str, str, int], int] = {}
        for c in chunks:
            key = (c.run_id, c.job_id, c.step)
            totals[key] = totals.get(key, 0) + len(c.data)
        conn.executemany(
            "UPDATE steps SET log_size = log_size + ? WHERE run_id = ? AND job_id = ? AND step = ?",
            [(size, *key) for key, size in totals.items()],
        )

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, item: _Append) -> None:
        try:
            body = EventStore._prepare_event(conn, item)
        except (UnicodeError, msgspec.EncodeError) as exc:
            # A string that UTF-8 cannot encode (a lone surrogate) fails this event
            # alone, before it writes anything. The body contains every field, so once
            # it is encoded, the statements below cannot fail on such a value.
            item.error = StorageError(
                f"event {item.event.name} of run {item.event.run_id!r} cannot be stored: {exc}")
            logger.error("%s", item.error)
            return
        if body is None:
            return
        event = item.event
        cursor = conn.execute(
            "INSERT INTO events (name, version, run_id, job_id, step_id, worker_id,"
            " correlation_id, tenant_id, ts, body) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                event.name, event.version, event.run_id, event.job_id, event.step_id,
                event.worker_id, event.correlation_id, event.tenant_id, event.ts, body,
            ),
        )
        item.event_id = int(cursor.lastrowid or 0)
        rejected = apply_event(conn, item.event_id, event)
        if rejected is not None:
            logger.warning("run %s: %s rejected: %s -> %s", rejected.run_id,
                           rejected.rejected_event, rejected.current, rejected.requested)
            EventStore._insert_event(conn, _Append(rejected, False))

    @staticmethod
    def _prepare_event(conn: sqlite3.Connection, item: _Append) -> str | None:
        """Complete ``item.event`` (run number, correlation id) and return its JSON body,
        or None for a RunRequested whose run exists. Reads only; writes nothing."""
        event = item.event
        if isinstance(event, ev.RunRequested):
            # Submitting the same run id or idempotency key twice gives the first run:
            # checked here, in the one writer, so concurrent retries cannot race.
            row = conn.execute("SELECT id FROM runs WHERE id = ?", (event.run_id,)).fetchone()
            if row is None and event.idempotency_key is not None:
                row = conn.execute(
                    "SELECT id FROM runs WHERE tenant_id = ? AND idempotency_key = ?",
                    (event.tenant_id, event.idempotency_key)).fetchone()
            if row is not None:
                item.existing_run_id = str(row[0])
                return None
        if isinstance(event, ev.RunRequested) and event.number is None:
            row = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE tenant_id = ? AND pipeline = ?",
                (event.tenant_id, event.pipeline),
            ).fetchone()
            event = msgspec.structs.replace(event, number=int(row[0]))
        if not event.correlation_id:
            event = msgspec.structs.replace(event, correlation_id=event.run_id)
        item.event = event
        return ev.encode_event(event).decode()

    async def append(self, event: ev.Event, *, wait: bool = False) -> int:
        """Queue ``event``; with ``wait``, return its id once it is durable, else 0."""
        item = _Append(event, wait)
        await self._send.send(item)
        if item.done is None:
            return 0
        await item.done.wait()
        if item.error is not None:
            raise StorageError(f"event {event.name} of run {event.run_id} was not stored: "
                               f"{item.error}") from item.error
        return item.event_id

    async def submit_run(self, event: ev.RunRequested) -> tuple[str, bool, int]:
        """Append ``event`` unless its run id or idempotency key exists.

        Returns the run id, whether this call created the run, and the run's number
        (0 when it existed); durable either way.
        """
        item = _Append(event, True)
        await self._send.send(item)
        assert item.done is not None
        await item.done.wait()
        if item.error is not None:
            raise StorageError(f"run {event.run_id} was not stored: {item.error}") from item.error
        if item.existing_run_id is not None:
            return item.existing_run_id, False, 0
        stored = item.event
        assert isinstance(stored, ev.RunRequested)
        return event.run_id, True, stored.number or 0

    async def append_log(self, chunk: LogChunk | DropLogChunks) -> None:
        await self._send.send(chunk)

    async def write(self, statement: Write, *, wait: bool = True) -> None:
        """Run ``statement`` in the writer's next transaction; with ``wait``, until durable."""
        await self._send.send(statement)
        if wait:
            await self.flush()

    def changed(self) -> trio.Event:
        """Return an event that is set at the next commit (take it before reading)."""
        return self._committed

    async def flush(self) -> None:
        """Wait until everything queued before this call is durable."""
        done = trio.Event()
        await self._send.send(_Barrier(done))
        await done.wait()

    async def close(self) -> None:
        """Close intake; :meth:`run` commits what is queued and returns."""
        await self._send.aclose()


class _Barrier:
    __slots__ = ("done",)

    def __init__(self, done: trio.Event) -> None:
        self.done = done
