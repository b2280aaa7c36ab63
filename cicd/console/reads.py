"""The console's read-only SQL over the store's projections and step logs.

Each function takes an open ``sqlite3.Connection`` and runs in a worker thread, passed
to ``ReaderPool.run``. They read the tables of ``migrations/`` directly, because the
run service offers none of these: run summaries without their jobs, counts per state,
a ref filter. Reads of a long log here seek by chunk number, where the service scans
every chunk of the step.
"""

from __future__ import annotations

import sqlite3
import threading

from cicd.console.overview import WINDOWS, Overview, bucket_runs
from cicd.console.protocol import RunFilter, RunSummary
from cicd.errors import NotFoundError

_SUMMARY_COLUMNS = (
    "r.id, r.number, r.pipeline, r.tenant_id, r.state, r.reason, r.source, r.source_commit,"
    " r.trigger, r.created_at, r.started_at, r.finished_at,"
    " (SELECT json_extract(e.body, '$.source_ref') FROM events e"
    "  WHERE e.run_id = r.id AND e.name = 'RunRequested' LIMIT 1), r.seq"
)

# Step states in which the step may still write output.
_OPEN_STEP_STATES = ("pending", "running")


def _summary(row: tuple[object, ...]) -> RunSummary:
    started, finished = row[10], row[11]
    return RunSummary(
        id=str(row[0]), number=int(row[1]), pipeline=str(row[2]),  # type: ignore[call-overload]
        tenant_id=str(row[3]), state=str(row[4]), reason=str(row[5]), source=str(row[6]),
        commit=str(row[7] or ""), trigger=str(row[8]), created_at=row[9],  # type: ignore[arg-type]
        started_at=started, finished_at=finished,  # type: ignore[arg-type]
        duration_ms=finished - started  # type: ignore[operator]
        if started is not None and finished is not None else None,
        ref=str(row[12] or ""), seq=int(row[13]),  # type: ignore[call-overload]
    )


def _where(wanted: RunFilter, *, with_state: bool) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    columns = [("r.pipeline", wanted.pipeline), ("r.tenant_id", wanted.tenant)]
    if with_state:
        columns.append(("r.state", wanted.state))
    for column, value in columns:
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses) or "1", params


class RefIndex:
    """The git ref of every run, read once from the RunRequested events and then kept.

    Filtering by ref in SQL would parse the JSON body of every RunRequested event on
    each request. The index reads only the events stored since its last use. Reader
    threads share it, so a lock guards it.
    """

    def __init__(self) -> None:
        self._refs: dict[str, str] = {}
        self._after = 0
        self._lock = threading.Lock()

    def runs_with(self, conn: sqlite3.Connection, ref: str) -> set[str]:
        with self._lock:
            last = last_event_id(conn)
            rows = conn.execute(
                "SELECT run_id, json_extract(body, '$.source_ref') FROM events"
                " WHERE id > ? AND id <= ? AND name = 'RunRequested'", (self._after, last))
            for run_id, run_ref in rows:
                self._refs[str(run_id)] = str(run_ref or "")
            self._after = max(self._after, last)
            return {run_id for run_id, run_ref in self._refs.items() if run_ref == ref}


def last_event_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])


def run_summaries(conn: sqlite3.Connection, wanted: RunFilter, refs: RefIndex, *, limit: int,
                  cursor: str | None = None) -> tuple[list[RunSummary], str | None]:
    """Return the newest runs matching ``wanted`` (accepted before the run ``cursor``)
    and the next cursor. Raises LookupError when ``cursor`` names no run."""
    where, params = _where(wanted, with_state=True)
    if cursor:
        found = conn.execute("SELECT seq FROM runs WHERE id = ?", (cursor,)).fetchone()
        if found is None:
            raise LookupError(cursor)
        where += " AND r.seq < ?"
        params.append(int(found[0]))
    if wanted.ref:
        with_ref = refs.runs_with(conn, wanted.ref)
        ids: list[str] = []
        for (run_id,) in conn.execute(f"SELECT r.id FROM runs r WHERE {where} ORDER BY r.seq DESC",
                                      params):
            if run_id in with_ref:
                ids.append(str(run_id))
                if len(ids) > limit:
                    break
        runs = summaries_by_id(conn, ids[:limit])
        return runs, runs[-1].id if len(ids) > limit else None
    rows = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM runs r WHERE {where} ORDER BY r.seq DESC LIMIT ?",
        (*params, limit + 1)).fetchall()
    runs = [_summary(row) for row in rows[:limit]]
    return runs, runs[-1].id if len(rows) > limit else None


def summaries_by_id(conn: sqlite3.Connection, run_ids: list[str]) -> list[RunSummary]:
    """Return the summaries of the runs that exist among ``run_ids``, newest first."""
    found: list[RunSummary] = []
    # SQLite allows 999 parameters per statement in older builds.
    for start in range(0, len(run_ids), 500):
        part = run_ids[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = conn.execute(f"SELECT {_SUMMARY_COLUMNS} FROM runs r WHERE r.id IN ({marks})",
                            part).fetchall()
        found.extend(_summary(row) for row in rows)
    found.sort(key=lambda run: run.seq, reverse=True)
    return found


def state_counts(conn: sqlite3.Connection, wanted: RunFilter, refs: RefIndex) -> dict[str, int]:
    """Count the runs per state that match ``wanted`` apart from its state."""
    where, params = _where(wanted, with_state=False)
    if wanted.ref:
        with_ref = refs.runs_with(conn, wanted.ref)
        counts: dict[str, int] = {}
        for run_id, state in conn.execute(f"SELECT r.id, r.state FROM runs r WHERE {where}",
                                          params):
            if run_id in with_ref:
                counts[str(state)] = counts.get(str(state), 0) + 1
        return counts
    rows = conn.execute(f"SELECT r.state, COUNT(*) FROM runs r WHERE {where} GROUP BY r.state",
                        params).fetchall()
    return {str(state): int(count) for state, count in rows}


def changed_runs(conn: sqlite3.Connection, after: int, limit: int) -> tuple[list[str], int]:
    """Return the distinct run ids of the events after ``after`` and the last event id read.

    At most ``limit`` events are read. Events of no run (a node's CapacityUpdated has an
    empty run id) move the last id on but name no run.
    """
    rows = conn.execute("SELECT id, run_id FROM events WHERE id > ? ORDER BY id LIMIT ?",
                        (after, limit)).fetchall()
    if not rows:
        return [], after
    return list(dict.fromkeys(str(row[1]) for row in rows if row[1])), int(rows[-1][0])


class StepLog:
    """The position of one step's output: its index, size, whether it can still grow,
    and how many bytes of it the log limit dropped."""

    __slots__ = ("complete", "index", "size", "truncated_bytes")

    def __init__(self, index: int, size: int, complete: bool, truncated_bytes: int = 0) -> None:
        self.index = index
        self.size = size
        self.complete = complete
        self.truncated_bytes = truncated_bytes


def step_log(conn: sqlite3.Connection, run_id: str, job_id: str, step: str) -> StepLog:
    """Find a step by 1-based index or name; raise ``NotFoundError`` when there is none."""
    rows = conn.execute("SELECT step, name, state, log_size, truncated_bytes FROM steps"
                        " WHERE run_id = ? AND job_id = ? ORDER BY step",
                        (run_id, job_id)).fetchall()
    if not rows:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise NotFoundError(f"run {run_id!r} not found")
        raise NotFoundError(f"run {run_id} has no job {job_id!r}")
    chosen = next((row for row in rows if row[1] == step), None)
    if chosen is None and step.isdigit():
        chosen = next((row for row in rows if int(row[0]) == int(step)), None)
    if chosen is None:
        listing = ", ".join(f"{row[0]} ({row[1]})" for row in rows)
        raise NotFoundError(f"job {job_id} of run {run_id} has no step {step!r}; steps: {listing}")
    return StepLog(int(chosen[0]), int(chosen[3]), str(chosen[2]) not in _OPEN_STEP_STATES,
                   int(chosen[4]))


def _first_seq_at(conn: sqlite3.Connection, key: tuple[str, str, int], offset: int) -> int | None:
    """Return the seq of the chunk that contains ``offset`` (or the first chunk after it).

    Chunk offsets grow with seq, so a binary search over seq finds it with a few index
    lookups, however many chunks the step has.
    """
    bounds = conn.execute("SELECT MIN(seq), MAX(seq) FROM step_logs WHERE run_id = ? AND"
                          " job_id = ? AND step = ?", key).fetchone()
    if bounds[0] is None:
        return None
    low, high = int(bounds[0]), int(bounds[1])
    # Find the last chunk that starts at or before offset.
    probe = ("SELECT seq, byte_offset FROM step_logs WHERE run_id = ? AND job_id = ? AND"
             " step = ? AND seq >= ? ORDER BY seq LIMIT 1")
    found = low
    while low <= high:
        middle = (low + high) // 2
        row = conn.execute(probe, (*key, middle)).fetchone()
        if row is None or int(row[0]) > high:
            high = middle - 1
            continue
        if int(row[1]) <= offset:
            found = int(row[0])
            low = int(row[0]) + 1
        else:
            high = middle - 1
    return found


def read_range(conn: sqlite3.Connection, run_id: str, job_id: str, step: StepLog,
               offset: int, limit: int) -> tuple[int, bytes]:
    """Return up to ``limit`` stored bytes from ``offset`` and the offset they start at.

    The start is later than ``offset`` when ``offset`` falls in a truncation gap; the
    bytes stop before the next gap.
    """
    key = (run_id, job_id, step.index)
    first = _first_seq_at(conn, key, offset)
    if first is None:
        return offset, b""
    cursor = conn.execute("SELECT byte_offset, data FROM step_logs WHERE run_id = ? AND"
                          " job_id = ? AND step = ? AND seq >= ? ORDER BY seq", (*key, first))
    parts: list[bytes] = []
    start: int | None = None
    taken = 0
    for chunk_offset, data in cursor:
        if chunk_offset + len(data) <= offset:
            continue
        if start is not None and chunk_offset != start + taken:
            break
        piece = bytes(data[max(0, offset - chunk_offset) :][: limit - taken])
        if start is None:
            start = max(offset, chunk_offset)
        parts.append(piece)
        taken += len(piece)
        if taken >= limit:
            break
    cursor.close()
    return (offset if start is None else start), b"".join(parts)


def tail(conn: sqlite3.Connection, run_id: str, job_id: str, index: int, after_seq: int,
         limit: int) -> tuple[list[tuple[int, int, bytes]], int, bool]:
    """Return the chunks after ``after_seq`` (about ``limit`` bytes at most), the step's
    size and whether it ended, as ``([(seq, offset, data)], size, complete)``.

    The step's state is read first: when it is an end state, the chunks read after it
    are all there will be.
    """
    row = conn.execute("SELECT state, log_size FROM steps WHERE run_id = ? AND job_id = ?"
                       " AND step = ?", (run_id, job_id, index)).fetchone()
    complete = row is None or str(row[0]) not in _OPEN_STEP_STATES
    cursor = conn.execute("SELECT seq, byte_offset, data FROM step_logs WHERE run_id = ? AND"
                          " job_id = ? AND step = ? AND seq > ? ORDER BY seq",
                          (run_id, job_id, index, after_seq))
    chunks: list[tuple[int, int, bytes]] = []
    taken = 0
    for seq, chunk_offset, data in cursor:
        chunks.append((int(seq), int(chunk_offset), bytes(data)))
        taken += len(data)
        if taken >= limit:
            complete = False  # more may follow: read again before trusting the end
            break
    cursor.close()
    size = max([int(row[1]) if row else 0] + [c[1] + len(c[2]) for c in chunks])
    return chunks, size, complete


def last_seq(conn: sqlite3.Connection, run_id: str, job_id: str, index: int) -> tuple[int, int]:
    """Return the last chunk's seq and the offset after it, or (0, 0) for no output."""
    row = conn.execute("SELECT seq, byte_offset + length(data) FROM step_logs WHERE run_id = ?"
                       " AND job_id = ? AND step = ? ORDER BY seq DESC LIMIT 1",
                       (run_id, job_id, index)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def overview(conn: sqlite3.Connection, *, window: str, now: int) -> Overview:
    window_ms, bucket_ms = WINDOWS[window]
    queued_runs = int(conn.execute(
        "SELECT COUNT(*) FROM runs WHERE state = 'pending'").fetchone()[0])
    # A job the scheduler could not place has a wait reason; a pending job without one
    # waits for the jobs it needs.
    queued_jobs = int(conn.execute(
        "SELECT COUNT(*) FROM jobs j JOIN runs r ON r.id = j.run_id"
        " WHERE r.state = 'running' AND j.state = 'pending' AND j.wait_reason != ''"
    ).fetchone()[0])
    rows = conn.execute("SELECT created_at, state, started_at, finished_at FROM runs"
                        " WHERE created_at >= ?", (now - window_ms,)).fetchall()
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row[1])] = counts.get(str(row[1]), 0) + 1
    return Overview(window=window, bucket_ms=bucket_ms, now=now,
                    queued_runs=queued_runs, queued_jobs=queued_jobs,
                    counts=counts,
                    buckets=bucket_runs(rows, now=now, window_ms=window_ms, bucket_ms=bucket_ms))
