"""Command line: ``python3 -m benchmarks [-n REPETITIONS] [BENCHMARK ...]``.

Prints a markdown report and writes it, with every sample, as JSON and markdown to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import docker.errors

from benchmarks import baselines, cicd_run, gitlab_ci_local, report, step_checks, steps
from benchmarks.measure import REPO_ROOT, BenchmarkError, BenchmarkResult

# In the order they run.
BENCHMARKS: dict[str, Callable[[int], BenchmarkResult]] = {
    baselines.NAME: baselines.run,
    cicd_run.NAME: cicd_run.run,
    gitlab_ci_local.NAME: gitlab_ci_local.run,
    steps.NAME: steps.run,
    step_checks.NAME: step_checks.run,
}
# Benchmarks whose ratios need the baselines measured in the same invocation.
NEEDS_BASELINES = {cicd_run.NAME, gitlab_ci_local.NAME}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks",
        description="Benchmark cicd against raw Docker, docker-py and gitlab-ci-local. "
                    "The cicd and gitlab-ci-local benchmarks also run the baselines.")
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("-n", "--repetitions", type=int, default=10,
                        help="timed repetitions of each case, after one warm-up (default: 10)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="directory for the JSON and markdown reports "
                             "(default: benchmarks/results)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.repetitions < 1:
        parser.error(f"--repetitions must be at least 1, not {args.repetitions}")
    return args


def selected_benchmarks(requested: list[str]) -> list[str]:
    chosen = set(requested or BENCHMARKS)
    if chosen & NEEDS_BASELINES:
        chosen.add(baselines.NAME)
    return [name for name in BENCHMARKS if name in chosen]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["python3", "-m", "benchmarks", *argv])
    started = datetime.now(UTC)
    results: dict[str, BenchmarkResult] = {}
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}

    for name in selected_benchmarks(args.benchmarks):
        print(f"benchmarks: running {name} ({args.repetitions} repetitions after one warm-up)",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            results[name] = BENCHMARKS[name](args.repetitions)
        except (BenchmarkError, docker.errors.DockerException, OSError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"benchmarks: {name} failed: {exc}", file=sys.stderr, flush=True)
        durations[name] = time.perf_counter() - start
        print(f"benchmarks: {name} took {durations[name]:.0f} s", file=sys.stderr, flush=True)

    ratios = [ratio for comparison in report.COMPARISONS
              if (ratio := comparison.evaluate(results)) is not None]
    machine = report.machine_description()
    markdown = report.format_markdown(results, errors, ratios, machine, command, args.repetitions)
    print(markdown)

    document = {
        "command": command,
        "started": started.isoformat(),
        "repetitions": args.repetitions,
        "machine": machine,
        "durations_s": durations,
        "benchmarks": {name: result.to_json() for name, result in results.items()},
        "errors": errors,
        "ratios": ratios,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(f"benchmarks: wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
