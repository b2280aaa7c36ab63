"""Retention, the outbox with dead letters, and log truncation, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import trio

from cicd.artifacts.retention import apply_retention
from cicd.events import model as ev
from cicd.execution.output import StepOutput
from cicd.storage import EventStore, open_database
from cicd.storage.outbox import YIELD_EVERY, Subscriber
from cicd.storage.queries import read_step_log, run_document, step_log_state
from cicd.storage.readers import ReaderPool
from cicd.storage.store import LogChunk, Write


async def _finished_run(store: EventStore, run_id: str, pipeline: str, *, ts: int,
                        log: bytes, ended: int | None = None) -> None:
    base = {"run_id": run_id, "ts": ts}
    await store.append(ev.RunRequested(**base, pipeline=pipeline, pipeline_yaml="", source="/",
                                       jobs=["a"], executor="local"))
    await store.append(ev.JobRequested(**base, job="a", image="x", steps=["s"]))
    await store.append(ev.RunStarted(**base))
    await store.append(ev.StepStarted(**base, job="a", step=1))
    await store.append_log(LogChunk(run_id, "a", 1, 1, log, 0))
    await store.append(ev.StepCompleted(**base, job="a", step=1, log_size=len(log)))
    await store.append(ev.RunCompleted(run_id=run_id, ts=ts if ended is None else ended),
                       wait=True)


async def test_retention_policies_keep_records(db_path: Path, tmp_path: Path) -> None:
    store = EventStore(db_path)
    readers = ReaderPool(db_path)
    now = ev.now_ms()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await _finished_run(store, "R1-old", "p", ts=now - 40 * 86400_000, log=b"old")
        for index in range(2, 6):
            await _finished_run(store, f"R{index}", "p", ts=now, log=b"x" * 100)
        await _finished_run(store, "R6-other", "q", ts=now, log=b"y" * 1000)
        # Started 40 days ago and ended now: max_age counts from the end.
        await _finished_run(store, "R7-long", "r", ts=now - 40 * 86400_000, log=b"z",
                            ended=now)
        (tmp_path / "ws" / "R2").mkdir(parents=True)
        pruned = await apply_retention(store, readers, tmp_path / "ws", max_age=30 * 86400.0,
                                       max_runs=3, max_total_bytes=1201)
        await store.close()
    conn = open_database(db_path)
    policies = dict(conn.execute(
        "SELECT run_id, json_extract(body, '$.policy') FROM events WHERE name = 'LogsPruned'"))
    assert policies == {"R1-old": "max_age", "R2": "max_runs_per_pipeline",
                        "R3": "max_total_log_size"}
    assert pruned == 3
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 7
    assert conn.execute("SELECT COUNT(*) FROM step_logs WHERE run_id IN ('R1-old', 'R2', 'R3')"
                        ).fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM step_logs").fetchone()[0] == 4
    # The pruned step still reports how much it wrote, and that retention removed it.
    assert step_log_state(conn, "R2", "a", 1) == (100, True, 0, "succeeded", True)
    assert step_log_state(conn, "R4", "a", 1) == (100, True, 0, "succeeded", False)
    assert run_document(conn, "R2").logs_pruned
    assert not run_document(conn, "R4").logs_pruned
    assert not (tmp_path / "ws" / "R2").exists()
    readers.close()


async def test_outbox_retries_then_dead_letters(db_path: Path) -> None:
    store = EventStore(db_path)
    readers = ReaderPool(db_path)
    seen: list[int] = []
    failures: dict[int, int] = {}

    async def handler(event_id: int, event: ev.Event) -> None:
        if event.run_id == "poison":
            failures[event_id] = failures.get(event_id, 0) + 1
            raise ValueError("cannot handle this one")
        if event.run_id == "flaky" and failures.get(event_id, 0) < 2:
            failures[event_id] = failures.get(event_id, 0) + 1
            raise ConnectionError("try again")
        seen.append(event_id)

    subscriber = Subscriber("test", handler, tries=3, base_delay=0.001)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(subscriber.run, store, readers)
        ids = [await store.append(ev.RunRequested(run_id=run_id, pipeline="p", pipeline_yaml="",
                                                  source="/", jobs=[], executor="local"),
                                  wait=True)
               for run_id in ("ok-1", "flaky", "poison", "ok-2")]
        with trio.fail_after(10):
            while subscriber.position < ids[-1]:
                await trio.sleep(0.01)
        assert seen == [ids[0], ids[1], ids[3]]
        assert failures[ids[2]] == 3
        conn = open_database(db_path)
        dead = conn.execute("SELECT id, event_id, attempts, error FROM dead_letters").fetchall()
        assert [(row[1], row[2]) for row in dead] == [(ids[2], 3)]
        assert "cannot handle this one" in dead[0][3]

        async def fixed(event_id: int, event: ev.Event) -> None:
            seen.append(event_id)

        subscriber.handler = fixed
        assert await subscriber.replay(store, readers, dead[0][0]) is True
        assert seen[-1] == ids[2]
        replayed = conn.execute("SELECT replayed_at FROM dead_letters").fetchone()[0]
        assert replayed is not None
        nursery.cancel_scope.cancel()
    readers.close()


async def test_outbox_batch_lets_other_tasks_run(db_path: Path) -> None:
    # A handler that never awaits: the subscriber itself must give other tasks turns.
    store = EventStore(db_path)
    readers = ReaderPool(db_path)
    ticks_at_delivery: list[int] = []
    ticks = 0

    async def handler(event_id: int, event: ev.Event) -> None:
        ticks_at_delivery.append(ticks)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    subscriber = Subscriber("test", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        nursery.start_soon(ticker)
        for index in range(200):
            await store.append(ev.WorkerTerminated(run_id="R", job="j", worker=f"w{index}"))
        last = await store.append(ev.WorkerTerminated(run_id="R", job="j", worker="last"),
                                  wait=True)
        # Subscribed from the log's start, the subscriber reads them in one batch.
        await store.write(Write("INSERT INTO subscriptions VALUES ('test', 0)", ()))
        await nursery.start(subscriber.run, store, readers)
        with trio.fail_after(10):
            while subscriber.position < last:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    readers.close()
    assert len(ticks_at_delivery) == 201
    # Trio may run the two tasks of consecutive batches in either order, so two groups
    # of deliveries can fall between the same two ticks.
    longest = max(ticks_at_delivery.count(tick) for tick in set(ticks_at_delivery))
    assert longest <= 2 * YIELD_EVERY


async def _store_output(db_path: Path, writes: list[bytes]) -> StepOutput:
    """Store ``writes`` as the output of step 1 of job a of run R, limited to 1,000 bytes."""
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append(ev.RunRequested(run_id="R", pipeline="p", pipeline_yaml="",
                                           source="/", jobs=["a"], executor="local"))
        await store.append(ev.JobRequested(run_id="R", job="a", image="x", steps=["s"]))
        sink = StepOutput(store, None, run_id="R", job="a", step=1, step_name="s", limit=1000)
        for data in writes:
            await sink(data)
        await store.flush()
        await store.close()
    return sink


async def test_truncation_keeps_head_and_tail(db_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes in 100-byte writes
    sink = await _store_output(db_path, [data[start:start + 100]
                                         for start in range(0, len(data), 100)])
    assert sink.size == len(data)
    conn = open_database(db_path)
    head, start = read_step_log(conn, "R", "a", 1, 0, None)
    assert start == 0
    assert head == data[:500]
    tail, tail_start = read_step_log(conn, "R", "a", 1, 500, None)
    assert tail_start > 500
    assert tail == data[tail_start:]
    assert 500 <= len(tail) < 600
    assert sink.truncated_bytes == tail_start - 500
    size, complete, _truncated, _state, _pruned = step_log_state(conn, "R", "a", 1)
    assert size == len(data)
    assert complete is False


async def test_illegal_transition_becomes_event(db_path: Path) -> None:
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append(ev.RunRequested(run_id="R", pipeline="p", pipeline_yaml="",
                                           source="/", jobs=["a"], executor="local"))
        await store.append(ev.JobRequested(run_id="R", job="a", image="x", steps=["s"]))
        await store.append(ev.JobCompleted(run_id="R", job="a"))  # pending -> succeeded
        await store.append(ev.JobCancelled(run_id="R", job="a"), wait=True)
        await store.close()
    conn = open_database(db_path)
    rows = conn.execute("SELECT json_extract(body, '$.rejected_event'),"
                        " json_extract(body, '$.current'), json_extract(body, '$.requested')"
                        " FROM events WHERE name = 'TransitionRejected'").fetchall()
    assert rows == [("JobCompleted", "pending", "succeeded")]
    assert conn.execute("SELECT state FROM jobs").fetchone()[0] == "cancelled"


async def test_truncation_cuts_one_large_chunk(db_path: Path) -> None:
    # A fast step hands over its output in large chunks: one chunk past the head
    # keeps only its last limit / 2 bytes.
    data = bytes(range(256)) * 20  # 5,120 bytes in one write
    sink = await _store_output(db_path, [data])
    assert sink.size == len(data)
    assert sink.truncated_bytes == len(data) - 1000
    conn = open_database(db_path)
    head, _start = read_step_log(conn, "R", "a", 1, 0, None)
    assert head == data[:500]
    tail, tail_start = read_step_log(conn, "R", "a", 1, 500, None)
    assert tail_start == len(data) - 500
    assert tail == data[-500:]
