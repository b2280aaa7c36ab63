"""Helpers for tests that run pipelines through the engine in-process."""

from __future__ import annotations

from pathlib import Path

import trio

from cicd.execution.control import StopRequest
from cicd.orchestration.documents import RunDocument
from cicd.orchestration.engine import RunEngine, RunRequest, RunSummary
from cicd.pipeline import parse_pipeline
from cicd.storage import EventStore, open_database
from cicd.storage.queries import iter_step_log, run_document
from cicd.workers.base import Provider


class RunResult:
    def __init__(self, summary: RunSummary, document: RunDocument, db_path: Path) -> None:
        self.summary = summary
        self.document = document
        self.db_path = db_path

    def job(self, job_id: str):  # type: ignore[no-untyped-def]
        return next(job for job in self.document.jobs if job.id == job_id)

    def log(self, job_id: str, step: int) -> bytes:
        conn = open_database(self.db_path)
        try:
            return b"".join(iter_step_log(conn, self.summary.run_id, job_id, step))
        finally:
            conn.close()

    def event_names(self) -> list[str]:
        conn = open_database(self.db_path)
        try:
            return [row[0] for row in conn.execute(
                "SELECT name FROM events WHERE run_id = ? ORDER BY id", (self.summary.run_id,))]
        finally:
            conn.close()


async def run_pipeline(
    yaml_text: str,
    provider: Provider,
    db_path: Path,
    source_dir: Path,
    *,
    grace: float = 10.0,
    parallel: int = 4,
    stop: StopRequest | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> RunResult:
    pipeline = parse_pipeline(yaml_text, file="test.cicd.yml")
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        engine = RunEngine(store, provider, stop=stop)
        request = RunRequest(pipeline=pipeline, pipeline_yaml=yaml_text,
                             source_dir=str(source_dir), grace=grace, parallel=parallel)
        task_status.started()
        summary = await engine.execute(request)
        await store.close()
    conn = open_database(db_path)
    try:
        document = run_document(conn, summary.run_id)
    finally:
        conn.close()
    return RunResult(summary, document, db_path)
