"""Baselines: the cost of running `true` in containers without cicd.

Two ways, one and ten containers each:

- the Docker CLI, ``docker run --rm busybox:latest true``, one process per container;
- docker-py in this process: create, start, wait and remove per container, which is
  the least work any Docker-based runner does for a step.

The cicd and gitlab-ci-local benchmarks are compared with these medians.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack

from benchmarks.measure import (
    IMAGE,
    BenchmarkError,
    Difference,
    Plan,
    docker_api,
    run_checked,
    run_container,
    time_call,
)

NAME = "baselines"
TITLE = "Baselines: raw docker run and docker-py"

CLI_ONE = "docker run --rm, 1 container"
CLI_TEN = "docker run --rm, 10 containers in sequence"
PY_ONE = "docker-py create/start/wait/remove, 1 container"
PY_TEN = "docker-py create/start/wait/remove, 10 containers in sequence"
CLI_PER_CONTAINER = "docker run --rm, per container ((10 - 1) / 9)"
PY_PER_CONTAINER = "docker-py, per container ((10 - 1) / 9)"


def plan(stack: ExitStack) -> Plan:
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise BenchmarkError("the docker CLI is not on PATH; install Docker's client")
    api = docker_api()
    stack.callback(api.close)
    cli_argv = [docker_cli, "run", "--rm", IMAGE, "true"]

    def cli_containers(count: int) -> float:
        return time_call(lambda: [run_checked(cli_argv) for _ in range(count)])

    def py_containers(count: int) -> float:
        def run_all() -> None:
            for _ in range(count):
                code = run_container(api, ["true"])
                if code != 0:
                    raise BenchmarkError(f"`true` in {IMAGE} exited with code {code}")
        return time_call(run_all)

    return Plan(
        NAME, TITLE,
        cases=[
            lambda: {CLI_ONE: cli_containers(1)},
            lambda: {CLI_TEN: cli_containers(10)},
            lambda: {PY_ONE: py_containers(1)},
            lambda: {PY_TEN: py_containers(10)},
        ],
        differences=[
            Difference(CLI_PER_CONTAINER, CLI_TEN, CLI_ONE, 9),
            Difference(PY_PER_CONTAINER, PY_TEN, PY_ONE, 9),
        ],
        notes=[(f"`docker run` is the Docker CLI at {docker_cli}; docker-py runs in the "
                "benchmark process, so its times exclude interpreter start-up.")],
    )
