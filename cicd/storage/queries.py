"""Read-only queries over the projections and step logs."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from typing import TypedDict, cast

from cicd.orchestration.documents import JobDocument, RunDocument, StepDocument, gap_marker


def iso_time(ms: int | None) -> str | None:
    """Return a millisecond timestamp as ISO 8601 in UTC, or None."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def _duration(start: int | None, end: int | None) -> int | None:
    return end - start if start is not None and end is not None else None


class RunNotFound(LookupError):
    pass


def resolve_run_id(conn: sqlite3.Connection, ref: str) -> str:
    """Return the run id for ``ref``: a full id, a unique id prefix, ``last``, or ``NAME#N``."""
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    if ref == "last":
        rows = list(db.query("SELECT id FROM runs ORDER BY seq DESC LIMIT 1"))
    elif "#" in ref:
        pipeline, _, number = ref.rpartition("#")
        if not number.isdigit():
            raise RunNotFound(f"run {ref!r}: the part after '#' must be a run number, like build#3")
        if pipeline:
            rows = list(db.query("SELECT id FROM runs WHERE pipeline = ? AND number = ?",
                                 [pipeline, int(number)]))
        else:
            rows = list(db.query("SELECT id FROM runs WHERE number = ?", [int(number)]))
    else:
        rows = list(db.query("SELECT id FROM runs WHERE id LIKE ? ORDER BY id LIMIT 2",
                             [ref.upper() + "%"]))
    if not rows:
        raise RunNotFound(f"no run matches {ref!r}; `cicd runs` lists the runs")
    if len(rows) > 1:
        raise RunNotFound(f"{ref!r} matches several runs; give more of the id or PIPELINE#NUMBER")
    return str(rows[0]["id"])


def _query(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[sqlite3.Row]:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params).fetchall()


def run_document(conn: sqlite3.Connection, run_id: str) -> RunDocument:
    """Build the document of one run from the projections (plain sqlite3: `cicd run` calls
    this at its end, and sqlite-utils would add 0.1 s to its start-up)."""
    rows = _query(conn, "SELECT * FROM runs WHERE id = ?", (run_id,))
    if not rows:
        raise RunNotFound(f"no run with id {run_id!r}")
    run = rows[0]
    steps_by_job: dict[str, list[StepDocument]] = {}
    for s in _query(conn, "SELECT * FROM steps WHERE run_id = ? ORDER BY job_id, step", (run_id,)):
        steps_by_job.setdefault(s["job_id"], []).append(StepDocument(
            index=s["step"], name=s["name"], state=s["state"], exit_code=s["exit_code"],
            reason=s["reason"], message=s["message"], allowed_failure=bool(s["allowed"]),
            started_at=iso_time(s["started_at"]), finished_at=iso_time(s["finished_at"]),
            duration_ms=_duration(s["started_at"], s["finished_at"]), log_size=s["log_size"],
        ))
    jobs = [
        JobDocument(
            id=j["job_id"], state=j["state"], image=j["image"], needs=json.loads(j["needs"]),
            allow_failure=bool(j["allow_failure"]), reason=j["reason"], message=j["message"],
            node=j["node"], worker=j["worker"], wait_reason=j["wait_reason"],
            wait_message=j["wait_message"], attempt=j["attempt"],
            started_at=iso_time(j["started_at"]),
            finished_at=iso_time(j["finished_at"]),
            duration_ms=_duration(j["started_at"], j["finished_at"]),
            steps=steps_by_job.get(j["job_id"], []),
        )
        for j in _query(conn, "SELECT * FROM jobs WHERE run_id = ? ORDER BY position", (run_id,))
    ]
    return RunDocument(
        id=run["id"], number=run["number"], pipeline=run["pipeline"], tenant_id=run["tenant_id"],
        state=run["state"], reason=run["reason"], source=run["source"],
        source_ref=run["source_ref"], source_commit=run["source_commit"], executor=run["executor"],
        trigger=run["trigger"], created_at=iso_time(run["created_at"]),
        started_at=iso_time(run["started_at"]), finished_at=iso_time(run["finished_at"]),
        duration_ms=_duration(run["started_at"], run["finished_at"]), jobs=jobs,
        logs_pruned=bool(dict(run).get("logs_pruned", 0)),
    )


class RunRow(TypedDict):
    """One row of :func:`list_runs`, typed as the ``runs`` table declares its columns."""

    id: str
    number: int
    pipeline: str
    state: str
    reason: str
    created_at: int
    started_at: int | None
    finished_at: int | None


def list_runs(conn: sqlite3.Connection, *, limit: int = 20) -> list[RunRow]:
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    rows = db.query(
        "SELECT id, number, pipeline, state, reason, created_at, started_at, finished_at"
        " FROM runs ORDER BY seq DESC LIMIT ?", [limit])
    # The SELECT names exactly the RunRow keys.
    return [cast(RunRow, row) for row in rows]


def iter_step_log(conn: sqlite3.Connection, run_id: str, job_id: str, step: int, *,
                  gaps: bool = False) -> Iterator[bytes]:
    """Yield the stored chunks of one step's output in order.

    With ``gaps``, a :func:`gap_marker` line comes where the log limit dropped bytes
    from the middle, as the log API's plain read gives it.
    """
    cursor = conn.execute(
        "SELECT data, byte_offset FROM step_logs WHERE run_id = ? AND job_id = ? AND step = ?"
        " ORDER BY seq",
        (run_id, job_id, step),
    )
    position = 0
    for data, offset in cursor:
        if gaps and offset > position:
            yield gap_marker(offset - position)
        position = offset + len(data)
        yield bytes(data)


def list_run_documents(
    conn: sqlite3.Connection, *, state: str | None, tenant: str | None, pipeline: str | None,
    since_ms: int | None, cursor: str | None, limit: int,
) -> tuple[list[RunDocument], str | None]:
    """Return one page of runs, newest first, and the cursor of the next page (or None).

    The cursor is the last run id of the page. Runs sort by ``seq``, the order in which
    the server accepted them, because an id chosen by a client need not sort by time.
    A cursor that names no run raises RunNotFound.
    """
    clauses: list[str] = []
    params: list[str | int] = []
    for column, value in (("state", state), ("tenant_id", tenant), ("pipeline", pipeline)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since_ms is not None:
        clauses.append("created_at >= ?")
        params.append(since_ms)
    if cursor:
        found = conn.execute("SELECT seq FROM runs WHERE id = ?", (cursor,)).fetchone()
        if found is None:
            raise RunNotFound(f"the cursor {cursor!r} names no run; start again without it")
        clauses.append("seq < ?")
        params.append(int(found[0]))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT id FROM runs {where} ORDER BY seq DESC LIMIT ?",
                        (*params, limit + 1)).fetchall()
    ids = [str(row[0]) for row in rows]
    next_cursor = ids[limit - 1] if len(ids) > limit else None
    return [run_document(conn, run_id) for run_id in ids[:limit]], next_cursor


def read_step_log(conn: sqlite3.Connection, run_id: str, job_id: str, step: int, offset: int,
                  limit: int | None) -> tuple[bytes, int]:
    """Return stored output of one step from ``offset`` (at most ``limit`` bytes) and the
    offset where the returned bytes start (later than ``offset`` inside a truncation gap)."""
    rows = conn.execute(
        "SELECT byte_offset, data FROM step_logs WHERE run_id = ? AND job_id = ? AND step = ?"
        " AND byte_offset + length(data) > ? ORDER BY seq",
        (run_id, job_id, step, offset),
    ).fetchall()
    parts: list[bytes] = []
    start: int | None = None
    taken = 0
    for chunk_offset, data in rows:
        data = bytes(data)
        if start is not None and chunk_offset != start + taken:
            break  # a truncation gap: stop at it, the next read starts after it
        skip = max(0, offset - chunk_offset)
        piece = data[skip:]
        if start is None:
            start = chunk_offset + skip
        if limit is not None and taken + len(piece) > limit:
            piece = piece[: limit - taken]
        parts.append(piece)
        taken += len(piece)
        if limit is not None and taken >= limit:
            break
    return b"".join(parts), offset if start is None else start


def step_log_state(conn: sqlite3.Connection, run_id: str, job_id: str,
                   step: int) -> tuple[int, bool, int, str, bool]:
    """Return (bytes written, whether the step ended, bytes truncated, step state, whether
    retention removed the run's output)."""
    row = conn.execute(
        "SELECT s.state, s.truncated_bytes, s.log_size, r.logs_pruned FROM steps s"
        " JOIN runs r ON r.id = s.run_id WHERE s.run_id = ? AND s.job_id = ? AND s.step = ?",
        (run_id, job_id, step)).fetchone()
    end = conn.execute(
        "SELECT MAX(byte_offset + length(data)) FROM step_logs WHERE run_id = ? AND job_id = ?"
        " AND step = ?", (run_id, job_id, step)).fetchone()
    # A step that ended records its size, which stays after retention removed the bytes.
    size = max(int(end[0] or 0), int(row[2] or 0) if row else 0)
    state = str(row[0]) if row else "missing"
    complete = state not in ("pending", "running", "missing")
    return size, complete, int(row[1]) if row else 0, state, bool(row and row[3])


# id, name, version, run_id, job_id, step_id, worker_id, correlation_id, tenant_id, ts and
# body of one event, typed as the ``events`` table declares its columns.
EventRow = tuple[int, str, int, str, str | None, str | None, str | None, str, str, int, str]


def events_after(conn: sqlite3.Connection, after: int, limit: int) -> list[EventRow]:
    return conn.execute(
        "SELECT id, name, version, run_id, job_id, step_id, worker_id, correlation_id,"
        " tenant_id, ts, body FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit),
    ).fetchall()
