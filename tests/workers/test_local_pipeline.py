"""Pipelines run end to end with the local executor (host processes, no Docker)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cicd.orchestration.states import State
from cicd.workers.local import LocalProvider
from tests.support import run_pipeline
from tests.workers.test_docker_pipeline import HOSTILE_BYTES, HOSTILE_SCRIPT, _yaml_block


async def test_local_success_and_isolation(db_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "data.txt").write_text("x\n")
    yaml_text = """
env: {A: pipeline}
jobs:
  one:
    image: ignored
    env: {A: job}
    steps:
      - run: |
          echo "A=$A CI=$CI ws=$(basename $CICD_WORKSPACE)"
          echo changed > data.txt
  two:
    needs: [one]
    image: ignored
    steps:
      - run: cat data.txt
"""
    result = await run_pipeline(yaml_text, LocalProvider(), db_path, source)
    assert result.summary.state is State.SUCCEEDED
    assert result.log("one", 1) == b"A=job CI=true ws=workspace\n"
    assert result.log("two", 1) == b"x\n"  # each job starts from a fresh copy
    assert (source / "data.txt").read_text() == "x\n"


async def test_local_hostile_output_byte_exact(db_path: Path, tmp_path: Path) -> None:
    yaml_text = f"""
jobs:
  noisy:
    image: ignored
    steps:
      - run: {_yaml_block(HOSTILE_SCRIPT, 10)}
"""
    result = await run_pipeline(yaml_text, LocalProvider(), db_path, tmp_path)
    assert result.log("noisy", 1) == HOSTILE_BYTES


async def test_local_timeout_kills_stubborn_step(db_path: Path, tmp_path: Path) -> None:
    yaml_text = """
jobs:
  stubborn:
    image: ignored
    timeout: 1s
    steps:
      - run: |
          trap 'echo got TERM' TERM
          while true; do sleep 0.1 || true; done
"""
    result = await run_pipeline(yaml_text, LocalProvider(), db_path, tmp_path, grace=0.5)
    job = result.job("stubborn")
    assert job.state == "timed_out"
    assert job.steps[0].exit_code == 137
    assert b"got TERM" in result.log("stubborn", 1)


async def test_local_pipefail_and_errexit(db_path: Path, tmp_path: Path) -> None:
    yaml_text = """
jobs:
  strict:
    image: ignored
    steps:
      - run: |
          echo one
          false
          echo two
"""
    result = await run_pipeline(yaml_text, LocalProvider(), db_path, tmp_path)
    step = result.job("strict").steps[0]
    assert step.state == "failed"
    assert step.exit_code == 1
    assert result.log("strict", 1) == b"one\n"


class _RecordCheckingProvider(LocalProvider):
    """A local provider whose steps record, before they start, whether the database
    contains the step's StepStarted event (read through a connection of their own)."""

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self.db_path = db_path
        self.seen: list[tuple[str, int]] = []

    def job_worker(self, **kwargs):  # type: ignore[no-untyped-def]
        worker = super().job_worker(**kwargs)
        start_step = worker.start_step
        provider = self

        async def checked_start(spec):  # type: ignore[no-untyped-def]
            conn = sqlite3.connect(provider.db_path)
            try:
                found = conn.execute(
                    "SELECT COUNT(*) FROM events WHERE name = 'StepStarted' AND run_id = ?"
                    " AND job_id = ? AND step_id = ?",
                    (spec.run_id, spec.job_id, f"{spec.job_id}/{spec.index}")).fetchone()[0]
            finally:
                conn.close()
            provider.seen.append((spec.job_id, found))
            return await start_step(spec)

        worker.start_step = checked_start  # type: ignore[method-assign]
        return worker


async def test_step_started_committed_before_step(db_path: Path, tmp_path: Path) -> None:
    # A server restarted after a step began must find the step's start in the log.
    provider = _RecordCheckingProvider(db_path)
    yaml_text = """
jobs:
  one:
    image: ignored
    steps: [{run: "true"}, {run: "true"}, {run: "true"}]
"""
    result = await run_pipeline(yaml_text, provider, db_path, tmp_path)
    assert result.summary.state is State.SUCCEEDED
    assert provider.seen == [("one", 1)] * 3
