"""Pipelines run end to end on a real Docker engine."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
import trio

from cicd.execution.control import StopRequest
from cicd.orchestration.states import State
from cicd.workers.docker import DockerProvider
from tests.conftest import BUSYBOX, labelled_objects
from tests.support import run_pipeline

pytestmark = pytest.mark.docker

HOSTILE_SCRIPT = r"""
printf 'invalid utf-8: \377\376 end\n'
head -c 1200000 /dev/zero | tr '\0' a
printf '\n'
printf 'progress 10%%\rprogress 50%%\rprogress 100%%\n'
printf 'split euro: \342\202'
sleep 0.2
printf '\254\n'
printf '<img src=x onerror=alert(1)> \033[31mred\033[0m\n'
printf 'no trailing newline'
"""

HOSTILE_BYTES = (
    b"invalid utf-8: \xff\xfe end\n"
    + b"a" * 1_200_000
    + b"\n"
    + b"progress 10%\rprogress 50%\rprogress 100%\n"
    + b"split euro: \xe2\x82\xac\n"
    + b"<img src=x onerror=alert(1)> \x1b[31mred\x1b[0m\n"
    + b"no trailing newline"
)


def _yaml_block(script: str, indent: int) -> str:
    pad = " " * indent
    return "|\n" + "".join(pad + line + "\n" for line in script.strip("\n").splitlines())


@pytest.fixture
def provider(docker_engine: docker.DockerClient) -> DockerProvider:
    return DockerProvider()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "input.txt").write_text("from the source\n")
    return src


async def test_success_env_and_workspace(provider: DockerProvider, db_path: Path,
                                         source: Path) -> None:
    yaml_text = f"""
name: envcheck
env: {{LEVEL: pipeline, P_ONLY: p, TRICKY: "a=b 'q' \\"dq\\" $HOME \\n next"}}
jobs:
  build:
    image: {BUSYBOX}
    env: {{LEVEL: job, J_ONLY: j}}
    steps:
      - name: show
        env: {{LEVEL: step}}
        run: |
          echo "LEVEL=$LEVEL P=$P_ONLY J=$J_ONLY CI=$CI CICD=$CICD"
          echo "JOB=$CICD_JOB STEP=$CICD_STEP WS=$CICD_WORKSPACE PIPE=$CICD_PIPELINE"
          printf '%s' "$TRICKY" > /workspace/tricky.txt
          cat input.txt
          echo written > new-file.txt
      - name: shared workspace
        run: cat new-file.txt tricky.txt
"""
    result = await run_pipeline(yaml_text, provider, db_path, source)
    assert result.summary.state is State.SUCCEEDED
    first = result.log("build", 1).decode()
    assert "LEVEL=step P=p J=j CI=true CICD=true" in first
    assert "JOB=build STEP=show WS=/workspace PIPE=envcheck" in first
    assert "from the source" in first
    assert result.log("build", 2) == b"written\n" + b"a=b 'q' \"dq\" $HOME \n next"
    assert not (source / "new-file.txt").exists()  # the user's directory is never written
    assert labelled_objects(docker.from_env(), result.summary.run_id) == []


async def test_failure_skips_dependents(provider: DockerProvider, db_path: Path,
                                        source: Path) -> None:
    yaml_text = f"""
jobs:
  a:
    image: {BUSYBOX}
    steps:
      - run: |
          echo before
          sh -c 'exit 3'
          echo never printed
      - run: echo never runs
  b:
    needs: [a]
    image: {BUSYBOX}
    steps: [{{run: echo b}}]
  c:
    needs: [b]
    image: {BUSYBOX}
    steps: [{{run: echo c}}]
  independent:
    image: {BUSYBOX}
    steps: [{{run: echo independent}}]
  lint:
    image: {BUSYBOX}
    allow_failure: true
    steps: [{{run: exit 1}}]
  after-lint:
    needs: [lint]
    image: {BUSYBOX}
    steps: [{{run: echo after lint}}]
"""
    result = await run_pipeline(yaml_text, provider, db_path, source)
    assert result.summary.state is State.FAILED
    states = {job.id: job.state for job in result.document.jobs}
    assert states == {"a": "failed", "b": "skipped", "c": "skipped", "independent": "succeeded",
                      "lint": "failed", "after-lint": "succeeded"}
    a = result.job("a")
    assert a.steps[0].exit_code == 3
    assert [s.state for s in a.steps] == ["failed", "skipped"]
    assert result.log("a", 1) == b"before\n"
    names = result.event_names()
    assert names[0] == "RunRequested"
    assert names[-1] == "RunFailed"
    assert "JobSkipped" in names


async def test_dag_order_respected(provider: DockerProvider, db_path: Path, source: Path) -> None:
    yaml_text = f"""
jobs:
  first:
    image: {BUSYBOX}
    steps: [{{run: sleep 0.3}}]
  second:
    image: {BUSYBOX}
    steps: [{{run: sleep 0.3}}]
  join:
    needs: [first, second]
    image: {BUSYBOX}
    steps: [{{run: "true"}}]
"""
    result = await run_pipeline(yaml_text, provider, db_path, source, parallel=2)
    assert result.summary.state is State.SUCCEEDED
    first, second, join = result.job("first"), result.job("second"), result.job("join")
    assert join.started_at >= max(first.finished_at, second.finished_at)
    # With two slots the roots overlap in time.
    assert second.started_at < first.finished_at and first.started_at < second.finished_at


async def test_timeout_ignoring_sigterm(provider: DockerProvider, db_path: Path,
                                        source: Path) -> None:
    yaml_text = f"""
jobs:
  stubborn:
    image: {BUSYBOX}
    steps:
      - timeout: 1s
        run: |
          trap 'echo got TERM' TERM
          while true; do sleep 0.1 || true; done
      - run: echo not reached
"""
    result = await run_pipeline(yaml_text, provider, db_path, source, grace=1.0)
    job = result.job("stubborn")
    assert job.state == "timed_out"
    assert job.steps[0].state == "timed_out"
    assert job.steps[0].exit_code == 137
    assert b"got TERM" in result.log("stubborn", 1)
    assert job.steps[1].state == "skipped"
    assert result.summary.state is State.FAILED


async def test_oom_kill_reported(provider: DockerProvider, db_path: Path, source: Path) -> None:
    yaml_text = f"""
jobs:
  hungry:
    image: {BUSYBOX}
    resources: {{memory: 16Mi}}
    steps:
      - run: head -c 200000000 /dev/zero | tail > /dev/null
"""
    result = await run_pipeline(yaml_text, provider, db_path, source)
    step = result.job("hungry").steps[0]
    assert step.state == "failed"
    assert step.reason == "OOMKilled"
    assert step.exit_code == 137
    assert result.summary.state is State.FAILED


async def test_hostile_output_byte_exact(provider: DockerProvider, db_path: Path,
                                         source: Path) -> None:
    yaml_text = f"""
jobs:
  noisy:
    image: {BUSYBOX}
    steps:
      - run: {_yaml_block(HOSTILE_SCRIPT, 10)}
"""
    result = await run_pipeline(yaml_text, provider, db_path, source)
    assert result.summary.state is State.SUCCEEDED
    assert result.log("noisy", 1) == HOSTILE_BYTES
    assert result.job("noisy").steps[0].log_size == len(HOSTILE_BYTES)


async def test_cancel_removes_everything(provider: DockerProvider, db_path: Path,
                                         source: Path) -> None:
    yaml_text = f"""
jobs:
  long:
    image: {BUSYBOX}
    steps: [{{run: "echo started; sleep 60"}}]
  later:
    needs: [long]
    image: {BUSYBOX}
    steps: [{{run: echo later}}]
"""
    stop = StopRequest()
    client = docker.from_env()
    async with trio.open_nursery() as nursery:
        async def cancel_when_running() -> None:
            while not client.containers.list(filters={"label": "io.cicd.job=long"}):
                await trio.sleep(0.05)
            await trio.sleep(0.3)
            stop.request()

        nursery.start_soon(cancel_when_running)
        result = await run_pipeline(yaml_text, provider, db_path, source, grace=2.0, stop=stop)
    assert result.summary.state is State.CANCELLED
    assert result.job("long").state == "cancelled"
    assert result.job("later").state == "cancelled"
    assert labelled_objects(client, result.summary.run_id) == []


async def test_missing_image_pull_fails(provider: DockerProvider, db_path: Path,
                                        source: Path) -> None:
    # A registry on a closed loopback port: the pull fails without leaving this machine.
    image = "127.0.0.1:9/cicd-test/missing:1"
    yaml_text = f"""
jobs:
  pull:
    image: "{image}"
    steps: [{{run: "true"}}]
"""
    result = await run_pipeline(yaml_text, provider, db_path, source)
    job = result.job("pull")
    assert job.state == "failed"
    assert job.reason == "image_pull_failed"
    assert image in job.message
    assert result.summary.state is State.FAILED
