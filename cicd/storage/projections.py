"""Projections: the runs, jobs and steps tables, kept in step with the event log.

:func:`apply_event` runs inside the transaction that appends the event, so the
tables never disagree with the log; :func:`rebuild_projections` replays the whole
log into empty tables, which gives the same rows.
"""

from __future__ import annotations

import json
import sqlite3

from cicd.events import model as ev


def apply_event(conn: sqlite3.Connection, event_id: int, event: ev.Event) -> None:
    """Update the projections for one event already inserted with ``event_id``."""
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(conn, event_id, event)
    if not isinstance(event, ev.RunRequested):
        conn.execute("UPDATE runs SET last_event_id = ? WHERE id = ?", (event_id, event.run_id))


def _run_requested(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev.RunRequested)
    number = e.number
    if number is None:
        row = conn.execute(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE tenant_id = ? AND pipeline = ?",
            (e.tenant_id, e.pipeline),
        ).fetchone()
        number = int(row[0])
    conn.execute(
        "INSERT INTO runs (id, number, pipeline, tenant_id, state, source, executor, trigger,"
        " pipeline_yaml, created_at, last_event_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            e.run_id, number, e.pipeline, e.tenant_id, "pending", e.source, e.executor,
            e.trigger, e.pipeline_yaml, e.ts, event_id,
        ),
    )


def _run_state(state: str) -> object:
    def handler(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
        reason = getattr(e, "reason", "")
        if state == "running":
            conn.execute(
                "UPDATE runs SET state = ?, started_at = ? WHERE id = ?", (state, e.ts, e.run_id)
            )
        else:
            conn.execute(
                "UPDATE runs SET state = ?, reason = ?, finished_at = ? WHERE id = ?",
                (state, reason, e.ts, e.run_id),
            )

    return handler


def _job_requested(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev.JobRequested)
    position = conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE run_id = ?", (e.run_id,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO jobs (run_id, job_id, position, state, image, needs, allow_failure)"
        " VALUES (?,?,?,?,?,?,?)",
        (e.run_id, e.job, position, "pending", e.image, json.dumps(e.needs), int(e.allow_failure)),
    )
    conn.executemany(
        "INSERT INTO steps (run_id, job_id, step, name, state) VALUES (?,?,?,?,?)",
        [(e.run_id, e.job, index, name, "pending") for index, name in enumerate(e.steps, 1)],
    )


def _assignment_created(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev.AssignmentCreated)
    conn.execute(
        "UPDATE jobs SET state = 'scheduled', node = ? WHERE run_id = ? AND job_id = ?",
        (e.node, e.run_id, e.job),
    )


def _job_started(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev.JobStarted)
    conn.execute(
        "UPDATE jobs SET state = 'running', started_at = ? WHERE run_id = ? AND job_id = ?",
        (e.ts, e.run_id, e.job),
    )


def _job_ended(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev._JobEvent)
    if isinstance(e, ev.JobCompleted):
        state, reason, message = "succeeded", "", ""
    elif isinstance(e, ev.JobFailed):
        state, reason, message = e.state, e.reason, e.message
    elif isinstance(e, ev.JobCancelled):
        state, reason, message = "cancelled", e.reason, ""
    else:
        assert isinstance(e, ev.JobSkipped)
        state, reason, message = "skipped", e.reason, ""
    conn.execute(
        "UPDATE jobs SET state = ?, reason = ?, message = ?, finished_at = ?"
        " WHERE run_id = ? AND job_id = ?",
        (state, reason, message, e.ts, e.run_id, e.job),
    )


def _worker_created(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev.WorkerCreated)
    conn.execute(
        "UPDATE jobs SET worker = ? WHERE run_id = ? AND job_id = ?", (e.worker, e.run_id, e.job)
    )


def _step_started(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    assert isinstance(e, ev.StepStarted)
    conn.execute(
        "UPDATE steps SET state = 'running', started_at = ? WHERE run_id = ? AND job_id = ?"
        " AND step = ?",
        (e.ts, e.run_id, e.job, e.step),
    )


def _step_ended(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> None:
    if isinstance(e, ev.StepCompleted):
        values = ("succeeded", e.exit_code, "", "", 0, e.log_size)
    elif isinstance(e, ev.StepFailed):
        values = (e.state, e.exit_code, e.reason, e.message, int(e.allowed), e.log_size)
    else:
        assert isinstance(e, ev.StepSkipped)
        values = ("skipped", None, e.reason, "", 0, 0)
    assert isinstance(e, ev._StepEvent)
    conn.execute(
        "UPDATE steps SET state = ?, exit_code = ?, reason = ?, message = ?, allowed = ?,"
        " log_size = ?, finished_at = ? WHERE run_id = ? AND job_id = ? AND step = ?",
        (*values, e.ts, e.run_id, e.job, e.step),
    )


_HANDLERS = {
    ev.RunRequested: _run_requested,
    ev.RunStarted: _run_state("running"),
    ev.RunCompleted: _run_state("succeeded"),
    ev.RunFailed: _run_state("failed"),
    ev.RunCancelled: _run_state("cancelled"),
    ev.JobRequested: _job_requested,
    ev.AssignmentCreated: _assignment_created,
    ev.JobStarted: _job_started,
    ev.JobCompleted: _job_ended,
    ev.JobFailed: _job_ended,
    ev.JobCancelled: _job_ended,
    ev.JobSkipped: _job_ended,
    ev.WorkerCreated: _worker_created,
    ev.StepStarted: _step_started,
    ev.StepCompleted: _step_ended,
    ev.StepFailed: _step_ended,
    ev.StepSkipped: _step_ended,
}


def rebuild_projections(conn: sqlite3.Connection) -> int:
    """Empty the projection tables and replay every event into them; return the count."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in ("steps", "jobs", "runs"):
            conn.execute(f"DELETE FROM {table}")
        count = 0
        for event_id, body in conn.execute("SELECT id, body FROM events ORDER BY id").fetchall():
            apply_event(conn, event_id, ev.decode_event(body))
            count += 1
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return count
