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
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    baselines,
    cicd_run,
    console,
    dispatch,
    gitlab_ci_local,
    report,
    scheduler,
    server_api,
    step_checks,
    steps,
)
from benchmarks.measure import (
    RECOVERABLE_ERRORS,
    REPO_ROOT,
    BenchmarkResult,
    Plan,
    run_plans,
)

# Timed benchmarks, in the order each round runs them.
TIMED: dict[str, Callable[[ExitStack], Plan]] = {
    baselines.NAME: baselines.plan,
    cicd_run.NAME: cicd_run.plan,
    gitlab_ci_local.NAME: gitlab_ci_local.plan,
    steps.NAME: steps.plan,
}
# Benchmarks that observe behaviour once and time nothing.
CHECKS: dict[str, Callable[[], BenchmarkResult]] = {
    step_checks.NAME: step_checks.run,
    server_api.NAME: server_api.run,
    dispatch.NAME: dispatch.run,
    scheduler.NAME: scheduler.run_benchmark,
    console.NAME: console.run,
}
ALL = [*TIMED, *CHECKS]
# Benchmarks whose ratios need the baselines measured in the same invocation.
NEEDS_BASELINES = {cicd_run.NAME, gitlab_ci_local.NAME}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks",
        description="Benchmark cicd against raw Docker, docker-py and gitlab-ci-local. "
                    "Selecting cicd or gitlab-ci-local also runs the baselines.")
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"benchmarks to run (default: all): {', '.join(ALL)}")
    parser.add_argument("-n", "--repetitions", type=int, default=10,
                        help="timed rounds after one warm-up round (default: 10)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="directory for the JSON and markdown reports "
                             "(default: benchmarks/results)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in ALL]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(ALL)}")
    if args.repetitions < 1:
        parser.error(f"--repetitions must be at least 1, not {args.repetitions}")
    return args


def selected_benchmarks(requested: list[str]) -> list[str]:
    chosen = set(requested or ALL)
    if chosen & NEEDS_BASELINES:
        chosen.add(baselines.NAME)
    return [name for name in ALL if name in chosen]


def progress(message: str) -> None:
    print(f"benchmarks: {message}", file=sys.stderr, flush=True)


def run_selected(names: list[str], repetitions: int
                 ) -> tuple[dict[str, BenchmarkResult], dict[str, str]]:
    """Set up and run the timed benchmarks together, then the checks."""
    results: dict[str, BenchmarkResult] = {}
    errors: dict[str, str] = {}
    with ExitStack() as stack:
        plans = []
        for name in (name for name in names if name in TIMED):
            progress(f"setting up {name}")
            try:
                plans.append(TIMED[name](stack))
            except RECOVERABLE_ERRORS as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                progress(f"{name} failed: {exc}")
        timed_results, timed_errors = run_plans(plans, repetitions, progress)
    results.update((result.name, result) for result in timed_results)
    errors.update(timed_errors)

    for name in (name for name in names if name in CHECKS):
        progress(f"running the checks of {name}")
        try:
            results[name] = CHECKS[name]()
        except RECOVERABLE_ERRORS as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            progress(f"{name} failed: {exc}")
    # Report in the order of ALL, whichever order they finished in.
    ordered = {name: results[name] for name in ALL if name in results}
    return ordered, errors


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["python3", "-m", "benchmarks", *argv])
    started = datetime.now(UTC)
    start = time.perf_counter()
    results, errors = run_selected(selected_benchmarks(args.benchmarks), args.repetitions)
    elapsed = time.perf_counter() - start

    ratios = [ratio for comparison in report.COMPARISONS
              if (ratio := comparison.evaluate(results)) is not None]
    machine = report.machine_description()
    markdown = report.format_markdown(results, errors, ratios, machine, command, args.repetitions)
    print(markdown)

    document = {
        "command": command,
        "started": started.isoformat(),
        "duration_s": elapsed,
        "repetitions": args.repetitions,
        "machine": machine,
        "benchmarks": {name: result.to_json() for name, result in results.items()},
        "errors": errors,
        "ratios": ratios,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    progress(f"took {elapsed:.0f} s; wrote {stem}.json and {stem}.md")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
