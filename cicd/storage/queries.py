"""Read-only queries over the projections and step logs."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator


from cicd.orchestration.documents import JobDocument, RunDocument, StepDocument


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def _duration(start: int | None, end: int | None) -> int | None:
    return end - start if start is not None and end is not None else None


class RunNotFound(LookupError):
    pass


def resolve_run_id(conn: sqlite3.Connection, ref: str) -> str:
    """Return the run id for ``ref``: a full id, a unique id prefix, ``last``, or ``NAME#N``."""
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    if ref == "last":
        rows = list(db.query("SELECT id FROM runs ORDER BY id DESC LIMIT 1"))
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
            started_at=_iso(s["started_at"]), finished_at=_iso(s["finished_at"]),
            duration_ms=_duration(s["started_at"], s["finished_at"]), log_size=s["log_size"],
        ))
    jobs = [
        JobDocument(
            id=j["job_id"], state=j["state"], image=j["image"], needs=json.loads(j["needs"]),
            allow_failure=bool(j["allow_failure"]), reason=j["reason"], message=j["message"],
            node=j["node"], worker=j["worker"], started_at=_iso(j["started_at"]),
            finished_at=_iso(j["finished_at"]),
            duration_ms=_duration(j["started_at"], j["finished_at"]),
            steps=steps_by_job.get(j["job_id"], []),
        )
        for j in _query(conn, "SELECT * FROM jobs WHERE run_id = ? ORDER BY position", (run_id,))
    ]
    return RunDocument(
        id=run["id"], number=run["number"], pipeline=run["pipeline"], tenant_id=run["tenant_id"],
        state=run["state"], reason=run["reason"], source=run["source"], executor=run["executor"],
        trigger=run["trigger"], created_at=_iso(run["created_at"]),
        started_at=_iso(run["started_at"]), finished_at=_iso(run["finished_at"]),
        duration_ms=_duration(run["started_at"], run["finished_at"]), jobs=jobs,
    )


def list_runs(conn: sqlite3.Connection, *, limit: int = 20) -> list[dict[str, object]]:
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    return list(db.query(
        "SELECT id, number, pipeline, state, reason, created_at, started_at, finished_at"
        " FROM runs ORDER BY id DESC LIMIT ?", [limit]))


def iter_step_log(conn: sqlite3.Connection, run_id: str, job_id: str, step: int) -> Iterator[bytes]:
    """Yield the stored chunks of one step's output in order."""
    cursor = conn.execute(
        "SELECT data FROM step_logs WHERE run_id = ? AND job_id = ? AND step = ? ORDER BY seq",
        (run_id, job_id, step),
    )
    for (data,) in cursor:
        yield bytes(data)
