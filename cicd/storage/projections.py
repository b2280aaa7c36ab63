"""Projections: the runs, jobs and steps tables, kept in step with the event log.

:func:`apply_event` runs inside the transaction that appends the event, so the
tables never disagree with the log; :func:`rebuild_projections` replays the whole
log into empty tables, which gives the same rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from cicd.events import model as ev
from cicd.orchestration.states import JOB_TRANSITIONS, RUN_TRANSITIONS, STEP_TRANSITIONS, State


def apply_event(conn: sqlite3.Connection, event_id: int, event: ev.Event) -> ev.TransitionRejected | None:
    """Update the projections for one event already inserted with ``event_id``.

    An event that asks for a transition the state machines forbid changes nothing;
    the returned TransitionRejected records it (the caller appends it to the log).
    Each state change is one UPDATE guarded by the states it may leave, so a legal
    transition reads nothing. The current state is read only to describe a rejection.
    """
    handler = _HANDLERS.get(type(event))
    if handler is None or handler(conn, event_id, event):
        return None
    return _rejection(conn, event)


_JOB_TARGETS: dict[type, str] = {
    ev.AssignmentCreated: "scheduled", ev.JobStarted: "running", ev.JobCompleted: "succeeded",
    ev.JobCancelled: "cancelled", ev.JobSkipped: "skipped",
}
_STEP_TARGETS: dict[type, str] = {
    ev.StepStarted: "running", ev.StepCompleted: "succeeded", ev.StepSkipped: "skipped",
}
_RUN_TARGETS: dict[type, str] = {
    ev.RunStarted: "running", ev.RunCompleted: "succeeded", ev.RunFailed: "failed",
    ev.RunCancelled: "cancelled",
}


def _from(table: dict[State, frozenset[State]], target: str) -> str:
    """Return the SQL condition "the row's state may move to ``target``"."""
    sources = sorted(current.value for current, targets in table.items()
                     if any(allowed.value == target for allowed in targets))
    if not sources:
        return "0"
    return "state IN (" + ", ".join(f"'{source}'" for source in sources) + ")"


_JOB_FROM = {state.value: _from(JOB_TRANSITIONS, state.value) for state in State}
_STEP_FROM = {state.value: _from(STEP_TRANSITIONS, state.value) for state in State}
_RUN_FROM = {state.value: _from(RUN_TRANSITIONS, state.value) for state in State}


def _rejection(conn: sqlite3.Connection, e: ev.Event) -> ev.TransitionRejected:
    """Describe why the state change that ``e`` requested was not made."""
    if isinstance(e, ev._StepEvent):
        row = conn.execute("SELECT state FROM steps WHERE run_id = ? AND job_id = ? AND step = ?",
                           (e.run_id, e.job, e.step)).fetchone()
        target = e.state if isinstance(e, ev.StepFailed) else _STEP_TARGETS[type(e)]
        job, step = e.job, e.step
    elif isinstance(e, ev._JobEvent):
        row = conn.execute("SELECT state FROM jobs WHERE run_id = ? AND job_id = ?",
                           (e.run_id, e.job)).fetchone()
        if isinstance(e, ev.JobRetried):
            target = "pending"
        else:
            target = e.state if isinstance(e, ev.JobFailed) else _JOB_TARGETS[type(e)]
        job, step = e.job, 0
    else:
        row = conn.execute("SELECT state FROM runs WHERE id = ?", (e.run_id,)).fetchone()
        target, job, step = _RUN_TARGETS[type(e)], "", 0
    return ev.TransitionRejected(run_id=e.run_id, tenant_id=e.tenant_id, rejected_event=e.name,
                                 job=job, step=step, current=row[0] if row else "missing",
                                 requested=target)


def _run_requested(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
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
        " pipeline_yaml, created_at, idempotency_key, retry_of, source_ref, seq)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            e.run_id, number, e.pipeline, e.tenant_id, "pending", e.source, e.executor,
            e.trigger, e.pipeline_yaml, e.ts, e.idempotency_key, e.retry_of, e.source_ref,
            event_id,
        ),
    )
    return True


def _source_resolved(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    assert isinstance(e, ev.SourceResolved)
    conn.execute("UPDATE runs SET source_commit = ? WHERE id = ?", (e.commit, e.run_id))
    return True


def _logs_pruned(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    conn.execute("UPDATE runs SET logs_pruned = 1 WHERE id = ?", (e.run_id,))
    return True


# A handler returns False when the event requested a state change that its row's
# state does not allow. It then changed nothing.
_Handler = Callable[[sqlite3.Connection, int, ev.Event], bool]


def _run_state(state: str) -> _Handler:
    if state == "running":
        sql = f"UPDATE runs SET state = ?, started_at = ? WHERE id = ? AND {_RUN_FROM[state]}"
    else:
        sql = (f"UPDATE runs SET state = ?, reason = ?, finished_at = ? WHERE id = ?"
               f" AND {_RUN_FROM[state]}")

    def handler(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
        if state == "running":
            params: tuple[object, ...] = (state, e.ts, e.run_id)
        else:
            params = (state, getattr(e, "reason", ""), e.ts, e.run_id)
        return conn.execute(sql, params).rowcount > 0

    return handler


def _job_requested(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
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
    return True


def _assignment_created(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    assert isinstance(e, ev.AssignmentCreated)
    return conn.execute(
        "UPDATE jobs SET state = 'scheduled', node = ?, wait_reason = '', wait_message = ''"
        f" WHERE run_id = ? AND job_id = ? AND {_JOB_FROM['scheduled']}",
        (e.node, e.run_id, e.job),
    ).rowcount > 0


def _assignment_rejected(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    assert isinstance(e, ev.AssignmentRejected)
    if e.final:
        return True  # the job never fits: it fails (JobFailed), it does not wait
    conn.execute(
        "UPDATE jobs SET wait_reason = ?, wait_message = ?"
        " WHERE run_id = ? AND job_id = ? AND state = 'pending'",
        (e.reason, e.message, e.run_id, e.job),
    )
    return True


def _job_retried(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    # The job starts over: its steps are pending again. Their stored output was
    # dropped before this event, by the engine. Only a failed job starts again (not
    # a state machine edge: a retry is a new attempt).
    assert isinstance(e, ev.JobRetried)
    changed = conn.execute(
        "UPDATE jobs SET state = 'pending', attempt = ?, node = '', worker = '',"
        " reason = ?, message = ?, wait_reason = '', wait_message = '', started_at = NULL,"
        " finished_at = NULL WHERE run_id = ? AND job_id = ? AND state = 'failed'",
        (e.attempt, e.reason, f"attempt {e.attempt - 1} failed: {e.reason}", e.run_id, e.job),
    ).rowcount
    if not changed:
        return False
    conn.execute(
        "UPDATE steps SET state = 'pending', exit_code = NULL, reason = '', message = '',"
        " allowed = 0, log_size = 0, truncated_bytes = 0, started_at = NULL, finished_at = NULL"
        " WHERE run_id = ? AND job_id = ?",
        (e.run_id, e.job),
    )
    return True


def _job_started(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    assert isinstance(e, ev.JobStarted)
    return conn.execute(
        "UPDATE jobs SET state = 'running', started_at = ? WHERE run_id = ? AND job_id = ?"
        f" AND {_JOB_FROM['running']}",
        (e.ts, e.run_id, e.job),
    ).rowcount > 0


def _job_ended(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
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
    guard = _JOB_FROM.get(state, "0")
    return conn.execute(
        "UPDATE jobs SET state = ?, reason = ?, message = ?, finished_at = ?"
        f" WHERE run_id = ? AND job_id = ? AND {guard}",
        (state, reason, message, e.ts, e.run_id, e.job),
    ).rowcount > 0


def _worker_created(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    assert isinstance(e, ev.WorkerCreated)
    conn.execute(
        "UPDATE jobs SET worker = ? WHERE run_id = ? AND job_id = ?", (e.worker, e.run_id, e.job)
    )
    return True


def _step_started(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    assert isinstance(e, ev.StepStarted)
    return conn.execute(
        "UPDATE steps SET state = 'running', started_at = ? WHERE run_id = ? AND job_id = ?"
        f" AND step = ? AND {_STEP_FROM['running']}",
        (e.ts, e.run_id, e.job, e.step),
    ).rowcount > 0


def _step_ended(conn: sqlite3.Connection, event_id: int, e: ev.Event) -> bool:
    values: tuple[object, ...]
    if isinstance(e, ev.StepCompleted):
        values = ("succeeded", e.exit_code, "", "", 0, e.log_size, e.truncated_bytes)
    elif isinstance(e, ev.StepFailed):
        values = (e.state, e.exit_code, e.reason, e.message, int(e.allowed), e.log_size,
                  e.truncated_bytes)
    else:
        assert isinstance(e, ev.StepSkipped)
        values = ("skipped", None, e.reason, "", 0, 0, 0)
    assert isinstance(e, ev._StepEvent)
    guard = _STEP_FROM.get(str(values[0]), "0")
    return conn.execute(
        "UPDATE steps SET state = ?, exit_code = ?, reason = ?, message = ?, allowed = ?,"
        " log_size = ?, truncated_bytes = ?, finished_at = ?"
        f" WHERE run_id = ? AND job_id = ? AND step = ? AND {guard}",
        (*values, e.ts, e.run_id, e.job, e.step),
    ).rowcount > 0


_HANDLERS: dict[type[ev.Event], _Handler] = {
    ev.RunRequested: _run_requested,
    ev.SourceResolved: _source_resolved,
    ev.LogsPruned: _logs_pruned,
    ev.RunStarted: _run_state("running"),
    ev.RunCompleted: _run_state("succeeded"),
    ev.RunFailed: _run_state("failed"),
    ev.RunCancelled: _run_state("cancelled"),
    ev.JobRequested: _job_requested,
    ev.AssignmentCreated: _assignment_created,
    ev.AssignmentRejected: _assignment_rejected,
    ev.JobRetried: _job_retried,
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
            # A rejected transition was rejected the first time too, and its
            # TransitionRejected event is already in the log: nothing to append.
            apply_event(conn, event_id, ev.decode_event(body))
            count += 1
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return count
