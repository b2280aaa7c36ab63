"""The Docker job worker driven step by step, as the execution context drives it."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import pytest
import trio

from cicd.orchestration.engine import new_run_id
from cicd.workers.base import SourceArchive, StepSpec
from cicd.workers.docker import DockerJobWorker, DockerProvider
from tests.conftest import BUSYBOX, labelled_objects

pytestmark = pytest.mark.docker


def _spec(run_id: str, index: int, script: str = "true") -> StepSpec:
    return StepSpec(run_id=run_id, job_id="job", index=index, name=f"step {index}",
                    script=script, env={})


def _worker(provider: DockerProvider, run_id: str, tmp_path: Path) -> DockerJobWorker:
    source = tmp_path / "src"
    source.mkdir()
    (source / "input.txt").write_text("input\n")
    return DockerJobWorker(provider, run_id=run_id, job_id="job", image=BUSYBOX, cpu_millis=None,
                           memory_bytes=None, source=SourceArchive(str(source)),
                           on_progress=lambda line: None)


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


async def test_work_ahead_removes_finished_steps(docker_engine: docker.DockerClient,
                                                tmp_path: Path) -> None:
    run_id = new_run_id()
    provider = DockerProvider()
    worker = _worker(provider, run_id, tmp_path)
    try:
        await worker.prepare()
        # The calls come in the execution context's order. The work ahead of step 2 runs
        # while step 1 runs, and the work ahead during step 2 removes step 1's container.
        first = await worker.start_step(_spec(run_id, 1))
        await worker.work_ahead(_spec(run_id, 2))
        assert (await first.wait()).exit_code == 0
        await first.release()
        second = await worker.start_step(_spec(run_id, 2))
        await worker.work_ahead(None)
        assert not _exists(docker_engine, first.container_id)  # type: ignore[attr-defined]
        assert (await second.wait()).exit_code == 0
        await second.release()
        await worker.work_ahead(None)
        assert not _exists(docker_engine, second.container_id)  # type: ignore[attr-defined]
    finally:
        await worker.close()
        await provider.aclose()
    assert labelled_objects(docker_engine, run_id) == []


async def test_close_removes_in_background_nursery(docker_engine: docker.DockerClient,
                                                   tmp_path: Path) -> None:
    run_id = new_run_id()
    provider = DockerProvider()
    worker = _worker(provider, run_id, tmp_path)
    try:
        await worker.prepare()
        process = await worker.start_step(_spec(run_id, 1))
        assert (await process.wait()).exit_code == 0
        await process.release()
        async with trio.open_nursery() as removals:
            provider.background_removals = removals
            await worker.close()
            # close() returned before the removal ran: the objects exist until the
            # nursery has ended.
            assert labelled_objects(docker_engine, run_id) != []
        assert labelled_objects(docker_engine, run_id) == []
        assert run_id not in provider.unclean_runs
    finally:
        provider.background_removals = None
        await worker.close()
        await provider.aclose()
