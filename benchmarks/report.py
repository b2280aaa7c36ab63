"""The markdown report, the ratios and targets, and the description of the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks import baselines, cicd_run, gitlab_ci_local, steps
from benchmarks.measure import REPO_ROOT, BenchmarkResult, milliseconds


@dataclass(frozen=True)
class Comparison:
    """A ratio of two medians, optionally with a target the ratio must meet."""

    text: str
    numerator: tuple[str, str]  # (benchmark name, series label)
    denominator: tuple[str, str]
    # The target is met when the ratio is at most `limit`, or below it when `strict`.
    limit: float | None = None
    strict: bool = False

    def target_text(self) -> str:
        if self.limit is None:
            return ""
        return f"{'<' if self.strict else '≤'} {self.limit:g}"

    def evaluate(self, results: dict[str, BenchmarkResult]) -> dict[str, Any] | None:
        """Return the ratio and whether it meets the target, or None without both series."""
        try:
            numerator = results[self.numerator[0]].get(self.numerator[1]).median
            denominator = results[self.denominator[0]].get(self.denominator[1]).median
        except KeyError:
            return None
        ratio = numerator / denominator
        met = None
        if self.limit is not None:
            met = ratio < self.limit if self.strict else ratio <= self.limit
        return {"comparison": self.text, "numerator_s": numerator,
                "denominator_s": denominator, "ratio": ratio,
                "target": self.target_text() or None, "met": met}


COMPARISONS = [
    Comparison("cicd one-step job, engine time / one `docker run`",
               (cicd_run.NAME, cicd_run.engine_label(1)), (baselines.NAME, baselines.CLI_ONE),
               limit=1.2),
    Comparison("cicd ten-step job, whole `cicd run` process / ten `docker run`s",
               (cicd_run.NAME, cicd_run.wall_label(10)), (baselines.NAME, baselines.CLI_TEN),
               limit=1.0, strict=True),
    Comparison("cicd one-step job, whole `cicd run` process / one `docker run`",
               (cicd_run.NAME, cicd_run.wall_label(1)), (baselines.NAME, baselines.CLI_ONE)),
    Comparison("cicd ten-step job, engine time / ten docker-py containers",
               (cicd_run.NAME, cicd_run.engine_label(10)), (baselines.NAME, baselines.PY_TEN)),
    Comparison("cicd engine time per step / docker-py per container",
               (cicd_run.NAME, "cicd run, per step ((10 - 1) / 9): engine time"),
               (baselines.NAME, baselines.PY_PER_CONTAINER)),
    Comparison("gitlab-ci-local one-step job / whole `cicd run` process, one step",
               (gitlab_ci_local.NAME, gitlab_ci_local.wall_label(1)),
               (cicd_run.NAME, cicd_run.wall_label(1))),
    Comparison("gitlab-ci-local ten-step job / whole `cicd run` process, ten steps",
               (gitlab_ci_local.NAME, gitlab_ci_local.wall_label(10)),
               (cicd_run.NAME, cicd_run.wall_label(10))),
    Comparison("gitlab-ci-local one-step job / one `docker run`",
               (gitlab_ci_local.NAME, gitlab_ci_local.wall_label(1)),
               (baselines.NAME, baselines.CLI_ONE)),
    Comparison("exec in one job container / container per step, ten steps",
               (steps.NAME, steps.exec_label(10)), (steps.NAME, steps.containers_label(10))),
]


DOCKER_VERSION_FORMAT = (
    "client {{.Client.Version}}, engine {{.Server.Version}} (API {{.Server.APIVersion}})")


def machine_description() -> dict[str, Any]:
    """Describe this machine: CPUs, memory, CPU model, kernel, Docker and Python versions."""
    return {
        "nproc": os.cpu_count(),
        "memory": _command_output(["free", "-h"]),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "docker": _command_output(["docker", "version", "--format", DOCKER_VERSION_FORMAT]),
        "python": sys.version.split()[0],
        "commit": _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return proc.stdout.strip() or f"unknown ({proc.stderr.strip()})"


def format_markdown(results: dict[str, BenchmarkResult], errors: dict[str, str],
                    ratios: list[dict[str, Any]], machine: dict[str, Any], command: str,
                    repetitions: int) -> str:
    """Return the report: machine, one section per benchmark, then the ratios."""
    memory_total = next((line.split()[1] for line in machine["memory"].splitlines()
                         if line.startswith("Mem:")), machine["memory"])
    out = [
        "# Benchmark results", "",
        f"`{command}`: {repetitions} repetitions after one warm-up; times in milliseconds.",
        "",
        (f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {memory_total} memory, "
         f"Linux {machine['kernel']}, Docker {machine['docker']}, Python {machine['python']}, "
         f"commit {machine['commit']}."),
    ]
    for result in results.values():
        out += ["", f"## {result.title}", ""]
        if result.series:
            out += ["| case | median | p90 | min | max |", "|---|---:|---:|---:|---:|"]
            for series in result.series:
                out.append(f"| {series.label} | {milliseconds(series.median)} | "
                           f"{milliseconds(series.p90)} | {milliseconds(min(series.samples))} | "
                           f"{milliseconds(max(series.samples))} |")
        if result.observations:
            out += ["| check | observed |", "|---|---|"]
            for observation in result.observations:
                out.append(f"| {observation.case} | {observation.observed} |")
        if result.notes:
            out += [""] + [f"- {note}" for note in result.notes]
    for name, message in errors.items():
        out += ["", f"## {name}: failed", "", "```", message, "```"]
    if ratios:
        out += ["", "## Ratios of medians", "", "| comparison | ratio | target | met |",
                "|---|---:|---|---|"]
        for ratio in ratios:
            met = ""
            if ratio["met"] is not None:
                met = "yes" if ratio["met"] else "**no**"
            out.append(f"| {ratio['comparison']} | {ratio['ratio']:.2f} | "
                       f"{ratio['target'] or ''} | {met} |")
    return "\n".join(out) + "\n"
