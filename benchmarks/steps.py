"""Micro-benchmark of the step design: a container per step or exec in a job container.

The variants run `true` steps on busybox through docker-py in this process, with
the settings cicd gives a step container (docker-init as PID 1, the job's volume at
/workspace, the ``local`` log driver):

- container per step: create, start, wait and remove one container per step;
- container per step, started ahead, as cicd runs steps: while a step runs, a
  pool of two threads creates, attaches to and starts the next step's container and
  removes finished ones. The next step's script waits behind cicd's gate
  (``STEP_GATE``) until its turn, when one line sent on the attach stream opens it;
- exec: create and start one job container running ``sleep``, then per step
  exec_create, exec_start (which attaches and returns when the process ends) and
  exec_inspect for the exit code, then remove the job container.

Each variant runs one step and ten steps, so the per-step cost is ``(10 - 1) / 9``.
What each design allows beyond speed is checked by the step-checks benchmark.
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import docker

from benchmarks.measure import (
    IMAGE,
    BenchmarkError,
    Case,
    Difference,
    Plan,
    docker_api,
    time_call,
    wait_for_exec,
)
from cicd.workers.docker import STEP_GATE

NAME = "steps"
TITLE = "Step design: a container per step versus exec in one job container"

WORKSPACE = "/workspace"


def containers_label(steps: int) -> str:
    return f"container per step, {_steps_text(steps)}"


def ahead_label(steps: int) -> str:
    return f"container per step, started ahead, {_steps_text(steps)}"


def exec_label(steps: int) -> str:
    return f"exec in one job container, {_steps_text(steps)}"


def _steps_text(steps: int) -> str:
    return "1 step" if steps == 1 else f"{steps} steps"


def _host_config(api: docker.APIClient, volume: str) -> dict[str, Any]:
    return dict(api.create_host_config(
        binds={volume: {"bind": WORKSPACE, "mode": "rw"}},
        init=True,
        log_config={"type": "local", "config": {}},
    ))


def containers_per_step(api: docker.APIClient, volume: str, steps: int) -> None:
    """Run ``steps`` `true` steps, each in its own container."""
    for _ in range(steps):
        container = api.create_container(IMAGE, ["/bin/sh", "-e", "-c", "true"],
                                          working_dir=WORKSPACE,
                                          host_config=_host_config(api, volume))["Id"]
        try:
            api.start(container)
            code = int(api.wait(container)["StatusCode"])
        finally:
            api.remove_container(container, force=True)
        if code != 0:
            raise BenchmarkError(f"a `true` step container exited with code {code}")


def containers_started_ahead(api: docker.APIClient, volume: str, steps: int) -> None:
    """Run ``steps`` `true` steps, each in a container started while the previous one runs."""

    def make_ready() -> tuple[str, Any]:
        container = api.create_container(IMAGE, ["/bin/sh", "-e", "-c", STEP_GATE + "true"],
                                          working_dir=WORKSPACE, stdin_open=True,
                                          host_config=_host_config(api, volume))["Id"]
        sock = api.attach_socket(container, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                    "stream": 1})
        api.start(container)
        return container, sock

    with ThreadPoolExecutor(max_workers=2) as helper:
        ready: Future[tuple[str, Any]] = helper.submit(make_ready)
        for index in range(steps):
            container, sock = ready.result()
            if index + 1 < steps:
                ready = helper.submit(make_ready)
            try:
                sock._sock.sendall(b"go\n")
                code = int(api.wait(container)["StatusCode"])
            finally:
                sock.close()
                helper.submit(api.remove_container, container, force=True)
            if code != 0:
                raise BenchmarkError(f"a `true` step container exited with code {code}")


def exec_in_job_container(api: docker.APIClient, volume: str, steps: int) -> None:
    """Run ``steps`` `true` steps as exec processes in one long-lived job container."""
    container = api.create_container(IMAGE, ["sleep", "3600"], working_dir=WORKSPACE,
                                      host_config=_host_config(api, volume))["Id"]
    try:
        api.start(container)
        for _ in range(steps):
            exec_id = api.exec_create(container, ["/bin/sh", "-e", "-c", "true"],
                                      workdir=WORKSPACE)["Id"]
            api.exec_start(exec_id)
            code = wait_for_exec(api, exec_id)
            if code != 0:
                raise BenchmarkError(f"a `true` exec step exited with code {code}")
    finally:
        api.remove_container(container, force=True)


def plan(stack: ExitStack) -> Plan:
    api = docker_api()
    stack.callback(api.close)
    volume = f"cicd-bench-steps-{uuid.uuid4().hex[:12]}"
    api.create_volume(name=volume)
    stack.callback(api.remove_volume, volume, force=True)

    cases: list[Case] = []
    for steps in (1, 10):
        cases.append(_case(containers_label(steps), containers_per_step, api, volume, steps))
        cases.append(_case(ahead_label(steps), containers_started_ahead, api, volume, steps))
        cases.append(_case(exec_label(steps), exec_in_job_container, api, volume, steps))
    return Plan(
        NAME, TITLE, cases,
        differences=[
            Difference("container per step, per step ((10 - 1) / 9)",
                       containers_label(10), containers_label(1), 9),
            Difference("container per step, started ahead, per step ((10 - 1) / 9)",
                       ahead_label(10), ahead_label(1), 9),
            Difference("exec in one job container, per step ((10 - 1) / 9)",
                       exec_label(10), exec_label(1), 9),
        ],
        notes=["docker-py in the benchmark process; times include removing the containers."],
    )


def _case(label: str, variant: Any, api: docker.APIClient, volume: str, steps: int) -> Case:
    def case() -> dict[str, float]:
        return {label: time_call(lambda: variant(api, volume, steps))}
    return case
