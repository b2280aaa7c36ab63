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
