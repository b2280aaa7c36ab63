from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from cicd.errors import SchemaTooNewError
from cicd.events import model as ev
from cicd.storage import EventStore, open_database
from cicd.storage.projections import rebuild_projections
from cicd.storage.queries import iter_step_log, run_document
from cicd.storage.store import LogChunk


def _projection_rows(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
        for table in ("runs", "jobs", "steps")
    }


async def _write_sample_run(store: EventStore, run_id: str) -> None:
    base = {"run_id": run_id}
    await store.append(ev.RunRequested(**base, pipeline="p", pipeline_yaml="jobs: {}",
                                       source="/src", jobs=["a"], executor="docker"), wait=True)
    await store.append(ev.JobRequested(**base, job="a", image="busybox", steps=["one", "two"]))
    await store.append(ev.RunStarted(**base))
    await store.append(ev.AssignmentCreated(**base, job="a", node="local"))
    await store.append(ev.JobStarted(**base, job="a", node="local"))
    await store.append(ev.StepStarted(**base, job="a", step=1, step_name="one"))
    await store.append_log(LogChunk(run_id, "a", 1, 1, b"hello \xff"))
    await store.append_log(LogChunk(run_id, "a", 1, 2, b"world\r\n"))
    await store.append(ev.StepCompleted(**base, job="a", step=1, step_name="one", log_size=14))
    await store.append(ev.StepStarted(**base, job="a", step=2, step_name="two"))
    await store.append(ev.StepFailed(**base, job="a", step=2, step_name="two", exit_code=3,
                                     reason="exit_code"))
    await store.append(ev.JobFailed(**base, job="a", reason="exit_code"))
    await store.append(ev.RunFailed(**base, reason="jobs did not succeed: a"), wait=True)


async def test_store_projection_matches_events(db_path: Path) -> None:
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await _write_sample_run(store, "R1")
        await _write_sample_run(store, "R2")
        await store.close()

    conn = open_database(db_path)
    document = run_document(conn, "R2")
    assert document.number == 2
    assert document.state == "failed"
    assert [s.state for s in document.jobs[0].steps] == ["succeeded", "failed"]
    assert document.jobs[0].steps[1].exit_code == 3
    assert b"".join(iter_step_log(conn, "R1", "a", 1)) == b"hello \xffworld\r\n"

    before = _projection_rows(conn)
    assert rebuild_projections(conn) == 22
    assert _projection_rows(conn) == before


async def test_unencodable_event_fails_alone(db_path: Path) -> None:
    # A lone surrogate cannot be written as UTF-8. The event that carries it fails with
    # StorageError; the writer, the events around it and the projections are unharmed.
    from cicd.errors import StorageError

    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await _write_sample_run(store, "R1")
        with pytest.raises(StorageError, match="StepStarted of run 'R1' cannot be stored"):
            await store.append(ev.StepStarted(run_id="R1", job="a", step=3,
                                              step_name="bad \ud800"), wait=True)
        with pytest.raises(StorageError, match="not stored"):
            await store.submit_run(ev.RunRequested(run_id="R2", pipeline="\udfff", jobs=["a"],
                                                   pipeline_yaml="", source="/", executor="local"))
        await store.append(ev.RunCancelled(run_id="R1"))  # unencodable and valid in one batch
        await store.append(ev.StepStarted(run_id="R1", job="a", step=4, step_name="\ud800"))
        await _write_sample_run(store, "R3")
        await store.close()

    conn = open_database(db_path)
    assert [row[0] for row in conn.execute("SELECT id FROM runs ORDER BY seq")] == ["R1", "R3"]
    assert conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = 'R1'").fetchone()[0] == 2
    assert run_document(conn, "R3").state == "failed"


async def test_store_events_ids_monotonic(db_path: Path) -> None:
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        ids = [await store.append(ev.RunCancelled(run_id=f"x{i}"), wait=True) for i in range(5)]
        await store.close()
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


async def test_store_correlation_defaults_to_run(db_path: Path) -> None:
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append(ev.RunCancelled(run_id="R9"), wait=True)
        await store.close()
    conn = open_database(db_path)
    row = conn.execute("SELECT correlation_id, tenant_id, body FROM events").fetchone()
    assert row[0] == "R9"
    assert row[1] == "default"
    assert '"correlation_id":"R9"' in row[2]


def test_database_newer_schema_rejected(db_path: Path) -> None:
    open_database(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="schema version 999, newer than"):
        open_database(db_path)


def test_database_wal_and_full_sync(db_path: Path) -> None:
    conn = open_database(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# One event per target state: the event that requests a run, job or step to move there.
_RUN_EVENTS = {
    "running": lambda: ev.RunStarted(run_id="R"),
    "succeeded": lambda: ev.RunCompleted(run_id="R"),
    "failed": lambda: ev.RunFailed(run_id="R", reason="x"),
    "cancelled": lambda: ev.RunCancelled(run_id="R"),
}
_JOB_EVENTS = {
    "scheduled": lambda: ev.AssignmentCreated(run_id="R", job="a", node="n"),
    "running": lambda: ev.JobStarted(run_id="R", job="a", node="n"),
    "succeeded": lambda: ev.JobCompleted(run_id="R", job="a"),
    "failed": lambda: ev.JobFailed(run_id="R", job="a", reason="x"),
    "timed_out": lambda: ev.JobFailed(run_id="R", job="a", reason="x", state="timed_out"),
    "cancelled": lambda: ev.JobCancelled(run_id="R", job="a", reason="x"),
    "skipped": lambda: ev.JobSkipped(run_id="R", job="a", reason="x"),
}
_STEP_EVENTS = {
    "running": lambda: ev.StepStarted(run_id="R", job="a", step=1),
    "succeeded": lambda: ev.StepCompleted(run_id="R", job="a", step=1),
    "failed": lambda: ev.StepFailed(run_id="R", job="a", step=1, reason="x"),
    "timed_out": lambda: ev.StepFailed(run_id="R", job="a", step=1, reason="x", state="timed_out"),
    "cancelled": lambda: ev.StepFailed(run_id="R", job="a", step=1, reason="x", state="cancelled"),
    "skipped": lambda: ev.StepSkipped(run_id="R", job="a", step=1, reason="x"),
}


@pytest.mark.parametrize("table", ["runs", "jobs", "steps"])
def test_projection_follows_state_machines(db_path: Path, table: str) -> None:
    """Every (current, requested) pair: the row moves, or it stays and the event is rejected."""
    from cicd.orchestration.states import JOB_TRANSITIONS, RUN_TRANSITIONS, STEP_TRANSITIONS, State
    from cicd.storage.projections import apply_event

    machine, events, key = {
        "runs": (RUN_TRANSITIONS, _RUN_EVENTS, "id = 'R'"),
        "jobs": (JOB_TRANSITIONS, _JOB_EVENTS, "run_id = 'R' AND job_id = 'a'"),
        "steps": (STEP_TRANSITIONS, _STEP_EVENTS, "run_id = 'R' AND job_id = 'a' AND step = 1"),
    }[table]
    conn = open_database(db_path)
    apply_event(conn, 1, ev.RunRequested(run_id="R", pipeline="p", pipeline_yaml="", source="/",
                                         jobs=["a"], executor="local"))
    apply_event(conn, 2, ev.JobRequested(run_id="R", job="a", image="i", steps=["s"]))
    checked = 0
    for current in State:
        for target, make in events.items():
            conn.execute(f"UPDATE {table} SET state = ? WHERE {key}", (current.value,))
            rejected = apply_event(conn, 3, make())
            state = conn.execute(f"SELECT state FROM {table} WHERE {key}").fetchone()[0]
            if State(target) in machine.get(current, frozenset()):
                assert rejected is None, (current, target)
                assert state == target
            else:
                assert rejected is not None, (current, target)
                assert (rejected.current, rejected.requested) == (current.value, target)
                assert state == current.value
            checked += 1
    assert checked == len(State) * len(events)


def test_job_retried_only_from_failed(db_path: Path) -> None:
    from cicd.orchestration.states import State
    from cicd.storage.projections import apply_event

    conn = open_database(db_path)
    apply_event(conn, 1, ev.RunRequested(run_id="R", pipeline="p", pipeline_yaml="", source="/",
                                         jobs=["a"], executor="local"))
    apply_event(conn, 2, ev.JobRequested(run_id="R", job="a", image="i", steps=["s"]))
    for current in State:
        conn.execute("UPDATE jobs SET state = ?, attempt = 1", (current.value,))
        conn.execute("UPDATE steps SET state = 'failed', exit_code = 1")
        rejected = apply_event(conn, 3, ev.JobRetried(run_id="R", job="a", attempt=2, reason="x"))
        job = conn.execute("SELECT state, attempt FROM jobs").fetchone()
        step = conn.execute("SELECT state, exit_code FROM steps").fetchone()
        if current is State.FAILED:
            assert rejected is None
            assert job == ("pending", 2)
            assert step == ("pending", None)
        else:
            assert rejected is not None
            assert (rejected.current, rejected.requested) == (current.value, "pending")
            assert job == (current.value, 1)
            assert step == ("failed", 1)


def test_final_rejection_sets_no_wait_reason(db_path: Path) -> None:
    from cicd.storage.projections import apply_event

    conn = open_database(db_path)
    apply_event(conn, 1, ev.RunRequested(run_id="R", pipeline="p", pipeline_yaml="", source="/",
                                         jobs=["a"], executor="local"))
    apply_event(conn, 2, ev.JobRequested(run_id="R", job="a", image="i", steps=["s"]))
    apply_event(conn, 3, ev.AssignmentRejected(run_id="R", job="a", reason="capacity",
                                               message="waiting: no free node"))
    assert conn.execute("SELECT wait_reason FROM jobs").fetchone() == ("capacity",)
    # A job that never fits fails; a final rejection is not a reason to wait.
    apply_event(conn, 4, ev.AssignmentRejected(run_id="R", job="a", reason="cpu",
                                               message="never fits", final=True))
    assert conn.execute("SELECT wait_reason FROM jobs").fetchone() == ("capacity",)


def test_migration_drops_last_event_id(db_path: Path) -> None:
    from cicd.storage import database

    conn = sqlite3.connect(db_path, isolation_level=None)
    for number, _name, sql in database.MIGRATIONS:
        if number > 4:
            break
        for statement in database._split_statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO runs (id, number, pipeline, tenant_id, state, source, executor,"
                 " trigger, pipeline_yaml, created_at, last_event_id)"
                 " VALUES ('R', 1, 'p', 'default', 'succeeded', '/', 'local', 'cli', '', 1, 7)")
    conn.close()

    migrated = open_database(db_path)
    columns = [row[1] for row in migrated.execute("PRAGMA table_info(runs)")]
    assert "last_event_id" not in columns
    assert migrated.execute("SELECT id, state FROM runs").fetchall() == [("R", "succeeded")]


def _database_at(db_path: Path, version: int) -> sqlite3.Connection:
    from cicd.storage import database

    conn = sqlite3.connect(db_path, isolation_level=None)
    for number, _name, sql in database.MIGRATIONS:
        if number > version:
            break
        for statement in database._split_statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    return conn


def test_runs_sort_by_acceptance_before_and_after_migration(db_path: Path) -> None:
    # Schema 5 had no seq: runs sorted by id, so a run with a chosen id ('zzz') stayed
    # on top. A read-only connection to such a file and the migrated file both put the
    # run accepted last first.
    from cicd.storage.queries import list_runs, resolve_run_id

    conn = _database_at(db_path, 5)
    for run_id in ("zzz", "01ABC"):
        conn.execute("INSERT INTO events (name, version, run_id, correlation_id, tenant_id, ts,"
                     " body) VALUES ('RunRequested', 1, ?, 'c', 'default', 1, '{}')", (run_id,))
        conn.execute("INSERT INTO runs (id, number, pipeline, tenant_id, state, source, executor,"
                     " trigger, pipeline_yaml, created_at) VALUES (?, 1, ?, 'default',"
                     " 'succeeded', '/', 'local', 'cli', '', 1)", (run_id, run_id))
    conn.close()

    readonly = open_database(db_path, readonly=True)
    assert readonly.execute("PRAGMA user_version").fetchone()[0] == 5  # not migrated
    assert [run["id"] for run in list_runs(readonly)] == ["01ABC", "zzz"]
    assert resolve_run_id(readonly, "last") == "01ABC"
    readonly.close()

    migrated = open_database(db_path)
    assert migrated.execute("SELECT id, seq FROM main.runs ORDER BY seq").fetchall() == [
        ("zzz", 1), ("01ABC", 2)]
    assert [run["id"] for run in list_runs(migrated)] == ["01ABC", "zzz"]
    assert resolve_run_id(migrated, "last") == "01ABC"


async def test_writer_locked_database_keeps_loop(db_path: Path) -> None:
    """Another connection's write lock makes the writer wait in a thread, not on the loop."""
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append(ev.RunCancelled(run_id="before"), wait=True)
        other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        longest_gap = 0.0

        async def tick() -> None:
            nonlocal longest_gap
            last = trio.current_time()
            while True:
                await trio.sleep(0.01)
                now = trio.current_time()
                longest_gap = max(longest_gap, now - last)
                last = now

        async def release() -> None:
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(other.execute, "COMMIT")

        nursery.start_soon(tick)
        nursery.start_soon(release)
        started = trio.current_time()
        event_id = await store.append(ev.RunCancelled(run_id="after"), wait=True)
        waited = trio.current_time() - started
        nursery.cancel_scope.cancel()
    other.close()
    assert event_id > 0
    assert waited >= 0.4  # it did wait for the lock
    assert longest_gap < 0.25  # and the event loop kept running meanwhile
    conn = open_database(db_path)
    cancelled = conn.execute("SELECT run_id FROM events WHERE name = 'RunCancelled' ORDER BY id")
    assert [row[0] for row in cancelled] == ["before", "after"]


async def test_store_large_log_batch(db_path: Path) -> None:
    from cicd.storage.store import INLINE_LOG_BYTES

    store = EventStore(db_path)
    chunk = bytes(range(256)) * 256  # 64 KiB
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await _write_sample_run(store, "R1")
        await store.append(ev.StepStarted(run_id="R1", job="a", step=1), wait=True)
        for seq in range(3, 3 + 2 * (INLINE_LOG_BYTES // len(chunk)) + 1):
            await store.append_log(LogChunk("R1", "a", 1, seq, chunk))
        await store.flush()
        await store.close()
    conn = open_database(db_path)
    stored = b"".join(iter_step_log(conn, "R1", "a", 1))
    assert stored == b"hello \xffworld\r\n" + chunk * (2 * (INLINE_LOG_BYTES // len(chunk)) + 1)
