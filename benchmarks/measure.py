"""Timing, statistics and Docker helpers that the benchmark modules share."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = "busybox:latest"

# Every case returns {series label: seconds} for one repetition.
Case = Callable[[], dict[str, float]]


class BenchmarkError(Exception):
    """Error raised when a benchmark cannot run or gets a wrong result; the message explains it."""


@dataclass
class Series:
    """The timed samples of one measured quantity, in seconds."""

    label: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        """Return the 90th percentile, interpolated between samples."""
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=10, method="inclusive")[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "median_s": self.median,
            "p90_s": self.p90,
            "min_s": min(self.samples),
            "max_s": max(self.samples),
            "samples_s": self.samples,
        }


@dataclass
class Observation:
    """The result of one behaviour check, which times nothing."""

    case: str
    observed: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Difference:
    """A derived series: ``(minuend - subtrahend) / divisor``, computed per repetition."""

    label: str
    minuend: str
    subtrahend: str
    divisor: int = 1


@dataclass
class BenchmarkResult:
    """Everything one benchmark measured or observed, in the order it reports it."""

    name: str
    title: str
    series: list[Series] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, label: str) -> Series:
        for series in self.series:
            if series.label == label:
                return series
        raise KeyError(f"benchmark {self.name} has no series {label!r}")

    def add_difference(self, difference: Difference) -> None:
        minuend = self.get(difference.minuend).samples
        subtrahend = self.get(difference.subtrahend).samples
        values = [(a - b) / difference.divisor for a, b in zip(minuend, subtrahend, strict=True)]
        self.series.append(Series(difference.label, values))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "series": [series.to_json() for series in self.series],
            "observations": [vars(observation) for observation in self.observations],
            "notes": self.notes,
        }


@dataclass
class Plan:
    """The cases of one timed benchmark, set up and ready to run.

    Each case runs one variant once and returns {series label: seconds}.
    """

    name: str
    title: str
    cases: list[Case]
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Errors that end one benchmark but not the others.
RECOVERABLE_ERRORS = (BenchmarkError, docker.errors.DockerException, OSError)


def run_plans(plans: Sequence[Plan], repetitions: int,
              progress: Callable[[str], None]) -> tuple[list[BenchmarkResult], dict[str, str]]:
    """Run one warm-up round, then ``repetitions`` rounds of every case of every plan.

    A round runs each case once, so all cases share any drift of the machine (other
    containers, CPU frequency) instead of one benchmark taking all of it. A plan
    whose case fails is dropped from later rounds and reported in the errors.
    """
    samples: dict[str, dict[str, list[float]]] = {plan.name: {} for plan in plans}
    errors: dict[str, str] = {}
    for round_number in range(repetitions + 1):
        progress("warm-up round" if round_number == 0 else
                 f"round {round_number} of {repetitions}")
        for plan in plans:
            if plan.name in errors:
                continue
            try:
                for case in plan.cases:
                    for label, seconds in case().items():
                        if round_number > 0:
                            samples[plan.name].setdefault(label, []).append(seconds)
            except RECOVERABLE_ERRORS as exc:
                errors[plan.name] = f"{type(exc).__name__}: {exc}"
                progress(f"{plan.name} failed: {exc}")

    results = []
    for plan in plans:
        if plan.name in errors:
            continue
        series = [Series(label, values) for label, values in samples[plan.name].items()]
        result = BenchmarkResult(plan.name, plan.title, series, notes=list(plan.notes))
        for difference in plan.differences:
            result.add_difference(difference)
        results.append(result)
    return results, errors


def time_call(fn: Callable[[], object]) -> float:
    """Return the wall time of ``fn()`` in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_checked(argv: Sequence[str], *, cwd: str | Path | None = None,
                env: dict[str, str] | None = None, timeout: float = 300) -> float:
    """Run ``argv`` to completion, raise BenchmarkError unless it exits 0, return wall seconds."""
    return run_output(argv, cwd=cwd, env=env, timeout=timeout)[0]


def run_output(argv: Sequence[str], *, cwd: str | Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 300) -> tuple[float, str]:
    """Run ``argv`` like run_checked; return wall seconds and stdout plus stderr."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise BenchmarkError(f"{argv[0]} is not installed or not on PATH: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"{' '.join(argv)} timed out after {timeout:g} s") from exc
    elapsed = time.perf_counter() - start
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)} exited with code {proc.returncode}:\n{output.strip()[-2000:]}")
    return elapsed, output


def docker_base_url() -> str:
    """Return the engine address that cicd itself would use."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_api() -> docker.APIClient:
    """Connect to the engine and check that it has the benchmark image (nothing is pulled)."""
    api = docker.APIClient(base_url=docker_base_url(), timeout=120)
    try:
        api.inspect_image(IMAGE)
    except docker.errors.ImageNotFound as exc:
        raise BenchmarkError(
            f"image {IMAGE} is not on the Docker engine at {docker_base_url()}; "
            "`bash .ci/docker-setup` builds it without a registry") from exc
    except docker.errors.DockerException as exc:
        raise BenchmarkError(f"the Docker engine at {docker_base_url()} failed: {exc}") from exc
    return api


def run_container(api: docker.APIClient, command: Sequence[str], **host_options: Any) -> int:
    """Create, start, wait for and remove one container; return its exit code."""
    host_config = api.create_host_config(**host_options) if host_options else None
    container = api.create_container(IMAGE, list(command), host_config=host_config)["Id"]
    try:
        api.start(container)
        return int(api.wait(container)["StatusCode"])
    finally:
        api.remove_container(container, force=True)


def wait_for_exec(api: docker.APIClient, exec_id: str, timeout: float = 10) -> int | None:
    """Return the exit code of an exec, polling while exec_inspect reports it running."""
    deadline = time.monotonic() + timeout
    while True:
        info = api.exec_inspect(exec_id)
        if not info["Running"] or time.monotonic() > deadline:
            code = info["ExitCode"]
            return None if code is None else int(code)
        time.sleep(0.001)


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"
