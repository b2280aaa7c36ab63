"""`cicd run` of a one-step and a ten-step pipeline on busybox.

For each pipeline the benchmark records:

- the wall time of the whole ``python3 -m cicd run`` process;
- the engine time, from the run's RunStarted event to its RunCompleted event in the
  SQLite event log (the events carry millisecond timestamps);
- the time outside the engine time: from starting the process to RunStarted, and
  from RunCompleted to the process's exit (wall-clock times, so to a millisecond or so);
- the per-step overhead, ``(ten-step - one-step) / 9``, for the wall and engine times.

It also times interpreter start-up, ``python3 -c pass`` and ``python3 -c "import
cicd.cli.run_command"``, which the process wall time includes and the engine time does
not. The interpreter is the one running the benchmarks (``sys.executable``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.measure import (
    IMAGE,
    REPO_ROOT,
    BenchmarkError,
    Case,
    Difference,
    Plan,
    docker_api,
    run_checked,
)

NAME = "cicd"
TITLE = "cicd run: one-step and ten-step jobs"

PYTHON_PASS = "python3 -c pass"
PYTHON_IMPORT = 'python3 -c "import cicd.cli.run_command"'
PYTHON_PASS_PATH = "python3 -c pass, python3 found on PATH"


def wall_label(steps: int) -> str:
    return f"cicd run, {steps_text(steps)}: process wall time"


def engine_label(steps: int) -> str:
    return f"cicd run, {steps_text(steps)}: engine time (RunStarted to RunCompleted)"


def before_label(steps: int) -> str:
    return f"cicd run, {steps_text(steps)}: process start to RunStarted"


def after_label(steps: int) -> str:
    return f"cicd run, {steps_text(steps)}: RunCompleted to process exit"


def steps_text(steps: int) -> str:
    return "1 step" if steps == 1 else f"{steps} steps"


def pipeline_yaml(steps: int) -> str:
    """Return a pipeline of one job that runs ``true`` ``steps`` times on busybox."""
    lines = ["version: 1", f"name: bench-{steps}", "jobs:", "  bench:", f"    image: {IMAGE}",
             "    steps:"]
    lines += ['      - run: "true"'] * steps
    return "\n".join(lines) + "\n"


def run_event_times(db_path: Path) -> tuple[float, float]:
    """Return the RunStarted and RunCompleted times of the newest run in ``db_path``.

    The times are seconds since the Unix epoch, from the events' millisecond timestamps.
    """
    conn = sqlite3.connect(db_path)
    try:
        row = conn.execute(
            "SELECT run_id FROM events WHERE name = 'RunStarted' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise BenchmarkError(f"{db_path} has no RunStarted event")
        times = dict(conn.execute(
            "SELECT name, ts FROM events WHERE run_id = ? AND name IN ('RunStarted', 'RunCompleted')",
            (row[0],),
        ).fetchall())
    finally:
        conn.close()
    if "RunCompleted" not in times:
        raise BenchmarkError(f"run {row[0]} in {db_path} has no RunCompleted event")
    return times["RunStarted"] / 1000, times["RunCompleted"] / 1000


def cicd_environment(pycache: Path) -> dict[str, str]:
    """Return this environment with the work tree first on PYTHONPATH and bytecode cached.

    The benchmark measures the cicd of this work tree even where the package is not
    installed, or is installed from another checkout. Bytecode goes to ``pycache``,
    outside the work tree, even where PYTHONDONTWRITEBYTECODE is set, so that start-up
    is that of an installed package, which has its bytecode compiled.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def plan(stack: ExitStack) -> Plan:
    docker_api().close()  # fails early when the engine or the image is missing
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cicd-bench-")))
    env = cicd_environment(tmp / "pycache")
    python = sys.executable

    cases: list[Case] = []
    for steps in (1, 10):
        source = tmp / f"source-{steps}"
        source.mkdir()
        (source / ".cicd.yml").write_text(pipeline_yaml(steps), encoding="utf-8")
        # One database per pipeline, created by the warm-up run, as on a machine that
        # has run cicd before.
        db_path = tmp / f"events-{steps}.db"
        argv = [python, "-m", "cicd", "run", str(source), "--db", str(db_path),
                "--executor", "docker", "-q"]
        cases.append(_cicd_case(argv, db_path, steps, env, tmp))

    def startup() -> dict[str, float]:
        return {
            PYTHON_PASS: run_checked([python, "-c", "pass"], cwd=tmp, env=env),
            PYTHON_IMPORT: run_checked([python, "-c", "import cicd.cli.run_command"],
                                       cwd=tmp, env=env),
        }

    cases.append(startup)
    notes = [
        (f"Interpreter: {python} (Python {sys.version.split()[0]}), with bytecode cached "
         "outside the work tree after the warm-up round."),
        "Engine times come from millisecond event timestamps.",
    ]
    path_python = shutil.which("python3")
    if path_python and Path(path_python).resolve() != Path(python).resolve():
        # A version manager's shim (pyenv here) adds its own start-up to `python3 ...`.
        shim = path_python
        cases.append(lambda: {PYTHON_PASS_PATH: run_checked([shim, "-c", "pass"],
                                                             cwd=tmp, env=env)})
        notes.append(f"`python3` on PATH is {path_python}, which is not the interpreter "
                     "itself; its row shows what that indirection adds to start-up.")

    return Plan(
        NAME, TITLE, cases,
        differences=[
            Difference("cicd run, per step ((10 - 1) / 9): process wall time",
                       wall_label(10), wall_label(1), 9),
            Difference("cicd run, per step ((10 - 1) / 9): engine time",
                       engine_label(10), engine_label(1), 9),
            Difference("start-up: import cicd.cli.run_command minus python3 -c pass",
                       PYTHON_IMPORT, PYTHON_PASS),
        ],
        notes=notes,
    )


def _cicd_case(argv: list[str], db_path: Path, steps: int, env: dict[str, str],
               cwd: Path) -> Case:
    def case() -> dict[str, float]:
        # Wall-clock times, to compare with the events' timestamps; the process's own
        # duration comes from run_checked's monotonic clock.
        spawned = time.time()
        wall = run_checked(argv, cwd=cwd, env=env)
        exited = time.time()
        started, completed = run_event_times(db_path)
        return {
            wall_label(steps): wall,
            engine_label(steps): completed - started,
            before_label(steps): started - spawned,
            after_label(steps): exited - completed,
        }
    return case
