"""The Docker job worker driven step by step, as the execution context drives it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import docker.errors
import pytest
import trio

from cicd.errors import ProviderError
from cicd.orchestration.engine import new_run_id
from cicd.workers.base import SourceArchive, StepSpec
from cicd.workers.docker import GATE_CLOSED_EXIT, DockerJobWorker, DockerProvider
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


@contextlib.asynccontextmanager
async def _prepared_worker(docker_engine: docker.DockerClient, run_id: str,
                           tmp_path: Path) -> AsyncIterator[DockerJobWorker]:
    """Yield a prepared worker, close it afterwards, and check the run left no objects."""
    provider = DockerProvider()
    worker = _worker(provider, run_id, tmp_path)
    try:
        await worker.prepare()
        yield worker
    finally:
        await worker.close()
        await provider.aclose()
    assert labelled_objects(docker_engine, run_id) == []


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


async def test_work_ahead_removes_finished_steps(docker_engine: docker.DockerClient,
                                                tmp_path: Path) -> None:
    run_id = new_run_id()
    async with _prepared_worker(docker_engine, run_id, tmp_path) as worker:
        # The calls come in the execution context's order. The work ahead of step 2 runs
        # while step 1 runs, and the work ahead during step 2 removes step 1's container.
        first = await worker.start_step(_spec(run_id, 1))
        await worker.work_ahead([_spec(run_id, 2)])
        assert (await first.wait()).exit_code == 0
        await first.release()
        second = await worker.start_step(_spec(run_id, 2))
        await worker.work_ahead([])
        assert not _exists(docker_engine, first.container_id)  # type: ignore[attr-defined]
        assert (await second.wait()).exit_code == 0
        await second.release()
        await worker.work_ahead([])
        assert not _exists(docker_engine, second.container_id)  # type: ignore[attr-defined]


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


async def _collect(process: object) -> bytes:
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    await process.pump_output(sink)  # type: ignore[attr-defined]
    return b"".join(chunks)


async def test_step_started_ahead_waits_for_its_turn(docker_engine: docker.DockerClient,
                                                     tmp_path: Path) -> None:
    run_id = new_run_id()
    second_script = "echo second >> /workspace/order; printf 'first bytes\\n'"
    async with _prepared_worker(docker_engine, run_id, tmp_path) as worker:
        first = await worker.start_step(_spec(run_id, 1, "sleep 1; echo first >> /workspace/order"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.work_ahead, [_spec(run_id, 2, second_script)])
            assert (await first.wait()).exit_code == 0
        await first.release()
        # Step 2's container runs already, its script held behind the gate.
        container_id = worker._created[2][0]
        state = docker_engine.api.inspect_container(container_id)["State"]
        assert state["Running"] and state["Pid"] > 0
        second = await worker.start_step(_spec(run_id, 2, second_script))
        assert second.container_id == container_id  # type: ignore[attr-defined]
        output = await _collect(second)
        assert (await second.wait()).exit_code == 0
        await second.release()
        assert output == b"first bytes\n"  # nothing of the gate, nothing lost
        third = await worker.start_step(_spec(run_id, 3, "cat /workspace/order"))
        assert await _collect(third) == b"first\nsecond\n"
        assert (await third.wait()).exit_code == 0
        await third.release()


async def _step_ahead_left_at_gate(worker: DockerJobWorker, docker_engine: docker.DockerClient,
                                   run_id: str, script: str) -> tuple[str, int]:
    """Run step 1, make step 2 ready ahead with ``script``, then close step 2's attach
    stream as the kernel does when its process ends. Return step 2's container id and
    the status it exited with."""
    first = await worker.start_step(_spec(run_id, 1))
    await worker.work_ahead([_spec(run_id, 2, script)])
    assert (await first.wait()).exit_code == 0
    await first.release()
    container_id, sock, started = worker._created.pop(2)
    assert started
    getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
    result = await trio.to_thread.run_sync(
        lambda: docker_engine.api.wait(container_id, timeout=30))
    return container_id, int(result["StatusCode"])


async def test_step_ahead_never_runs_when_its_stream_closes(docker_engine: docker.DockerClient,
                                                            tmp_path: Path) -> None:
    # As when the process that made it ready ends before the step's turn: the engine
    # closes the container's input, and the container exits without running the script.
    run_id = new_run_id()
    async with _prepared_worker(docker_engine, run_id, tmp_path) as worker:
        _container_id, status = await _step_ahead_left_at_gate(
            worker, docker_engine, run_id, "touch /workspace/ran")
        assert status == GATE_CLOSED_EXIT
        check = await worker.start_step(_spec(run_id, 3, "test ! -e /workspace/ran"))
        assert (await check.wait()).exit_code == 0
        await check.release()


async def test_reattach_runs_step_that_never_began(docker_engine: docker.DockerClient,
                                                   tmp_path: Path) -> None:
    # A server recorded StepStarted for steps 2 and 3, then died: step 2's container
    # exited at its gate, step 3's was created and never started.
    run_id = new_run_id()
    script = "echo ran >> /workspace/count; cat /workspace/count"
    async with _prepared_worker(docker_engine, run_id, tmp_path) as worker:
        gated, _status = await _step_ahead_left_at_gate(worker, docker_engine, run_id, script)
        created, sock = await worker._create_attached(_spec(run_id, 3, script))
        sock.close()

        for index, container_id in ((2, gated), (3, created)):
            taken_over = await worker.reattach_step(_spec(run_id, index, script), container_id,
                                                    skip_bytes=0)
            assert taken_over.container_id != container_id  # type: ignore[attr-defined]
            output = await _collect(taken_over)
            assert (await taken_over.wait()).exit_code == 0
            await taken_over.release()
            assert output == b"ran\n" * (index - 1)
            assert not _exists(docker_engine, container_id)


async def test_reattach_keeps_step_that_exited_125_silently(docker_engine: docker.DockerClient,
                                                            tmp_path: Path) -> None:
    # The script exits with the gate's status on its own and writes nothing. It ran,
    # so a process taking the step over keeps its result instead of running it again.
    run_id = new_run_id()
    script = "echo ran >> /workspace/count; exit 125"
    async with _prepared_worker(docker_engine, run_id, tmp_path) as worker:
        step = await worker.start_step(_spec(run_id, 1, script))
        assert await _collect(step) == b""
        assert (await step.wait()).exit_code == GATE_CLOSED_EXIT
        container_id = step.container_id  # type: ignore[attr-defined]

        taken_over = await worker.reattach_step(_spec(run_id, 1, script), container_id,
                                                skip_bytes=0)
        assert taken_over.container_id == container_id  # type: ignore[attr-defined]
        assert (await taken_over.wait()).exit_code == GATE_CLOSED_EXIT
        await taken_over.release()
        check = await worker.start_step(_spec(run_id, 2, "cat /workspace/count"))
        assert await _collect(check) == b"ran\n"
        assert (await check.wait()).exit_code == 0
        await check.release()


async def test_step_that_ran_unrecorded_not_rerun(docker_engine: docker.DockerClient,
                                                 tmp_path: Path) -> None:
    # A container of the step exists and ran its script, but the new process has no
    # record of the step's start: the step fails instead of running a second time.
    run_id = new_run_id()
    provider = DockerProvider()
    earlier = _worker(provider, run_id, tmp_path)
    later = DockerJobWorker(provider, run_id=run_id, job_id="job", image=BUSYBOX,
                            cpu_millis=None, memory_bytes=None, source=earlier.source,
                            on_progress=lambda line: None)
    try:
        await earlier.prepare()
        ran = await earlier.start_step(_spec(run_id, 1, "echo ran"))
        assert (await ran.wait()).exit_code == 0
        await later.adopt()
        with pytest.raises(ProviderError, match="does not run the step again"):
            await later.start_step(_spec(run_id, 1, "echo ran"))
        assert _exists(docker_engine, ran.container_id)  # type: ignore[attr-defined]
        await ran.release()
    finally:
        await later.close()
        await earlier.close()
        await provider.aclose()
    assert labelled_objects(docker_engine, run_id) == []
