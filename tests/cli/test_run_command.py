"""`cicd run` and the commands that read its database, as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import BUSYBOX, ROOT, labelled_objects, require_image, run_cli


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_reports_error_with_position(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yml", "jobs:\n  a:\n    image: busybox\n    stepz: []\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert f"{bad}:4:5: jobs.a: unknown key 'stepz'" in stderr
    assert "did you mean 'steps'?" in stderr


def test_validate_accepts_examples() -> None:
    result = run_cli("validate", str(ROOT / "examples/hello/.cicd.yml"))
    assert result.returncode == 0, result.stderr
    # build and test may run together; report needs both.
    assert result.stdout.endswith(b"valid, 3 jobs, 4 steps (build, test -> report)\n")


def test_validate_lists_stages_not_a_chain(tmp_path: Path) -> None:
    pipeline = _write(tmp_path / "p.yml", (
        "jobs:\n"
        "  deploy: {image: x, needs: [lint, package], steps: [{run: x}]}\n"
        "  package: {image: x, needs: [compile], steps: [{run: x}]}\n"
        "  lint: {image: x, steps: [{run: x}]}\n"
        "  compile: {image: x, steps: [{run: x}]}\n"
        "  docs: {image: x, steps: [{run: x}]}\n"))
    result = run_cli("validate", str(pipeline))
    assert result.returncode == 0, result.stderr
    assert b"(lint, compile, docs -> package -> deploy)" in result.stdout


def test_validate_counts_singular(tmp_path: Path) -> None:
    single_job = _write(tmp_path / "one.yml",
                        "jobs:\n  a:\n    image: busybox\n    steps: [{run: x}]\n")
    result = run_cli("validate", str(single_job))
    assert result.returncode == 0, result.stderr
    assert b"valid, 1 job, 1 step (" in result.stdout


def test_db_flag_wins_over_server_variable(tmp_path: Path) -> None:
    _write(tmp_path / ".cicd.yml", "jobs:\n  a:\n    image: x\n    steps: [{run: echo hi}]\n")
    db = str(tmp_path / "db")
    assert run_cli("run", str(tmp_path), "--executor", "local", "--db", db, "-q").returncode == 0
    # Port 9 of the loopback address: nothing listens, so a request would fail.
    env = {"CICD_SERVER": "http://127.0.0.1:9"}
    listing = run_cli("runs", "--db", db, env=env)
    assert listing.returncode == 0, listing.stderr
    assert b"succeeded" in listing.stdout
    logs = run_cli("logs", "--db", db, "last", "a/1", env=env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == b"hi\n"
    without_db = run_cli("runs", env=env)
    assert without_db.returncode != 0
    assert b"127.0.0.1:9" in without_db.stderr


def test_run_invalid_pipeline_exit_2(tmp_path: Path) -> None:
    _write(tmp_path / ".cicd.yml", "jobs:\n  a:\n    needs: [a]\n    image: x\n    steps: [{run: x}]\n")
    result = run_cli("run", str(tmp_path), "--executor", "local", "--db", str(tmp_path / "db"))
    assert result.returncode == 2
    assert b"cycle a -> a" in result.stderr


def test_run_missing_directory_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", str(tmp_path / "nope"), "--db", str(tmp_path / "db"))
    assert result.returncode == 2
    assert b"is not a directory" in result.stderr


def test_run_without_engine_explains(tmp_path: Path) -> None:
    _write(tmp_path / ".cicd.yml", "jobs:\n  a:\n    image: busybox\n    steps: [{run: 'true'}]\n")
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    result = run_cli("run", str(tmp_path), "--db", str(tmp_path / "db"), env=env)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "no-engine.sock" in stderr
    assert "--executor local" in stderr


def test_run_auto_falls_back_to_local(tmp_path: Path) -> None:
    _write(tmp_path / ".cicd.yml", "jobs:\n  a:\n    image: busybox\n    steps: [{run: echo hi}]\n")
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    result = run_cli("run", str(tmp_path), "--executor", "auto", "--db", str(tmp_path / "db"),
                     env=env)
    assert result.returncode == 0, result.stderr
    assert b"running steps as local processes" in result.stderr
    assert b"[a/echo hi] hi\n" in result.stdout


def test_run_report_logs_and_runs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _write(src / ".cicd.yml", """
name: reported
jobs:
  build:
    image: busybox
    steps:
      - name: say
        run: printf 'exact\\377bytes'
      - run: exit 4
""")
    db = str(tmp_path / "db")
    report = tmp_path / "report.json"
    result = run_cli("run", str(src), "--executor", "local", "--db", db, "--report", str(report))
    assert result.returncode == 1
    document = json.loads(report.read_text())
    assert document["pipeline"] == "reported"
    assert document["number"] == 1
    assert document["state"] == "failed"
    steps = document["jobs"][0]["steps"]
    assert [s["state"] for s in steps] == ["succeeded", "failed"]
    assert steps[0]["log_size"] == 11
    assert steps[1]["exit_code"] == 4

    logs = run_cli("logs", "last", "build/say", "--db", db)
    assert logs.returncode == 0
    assert logs.stdout == b"exact\xffbytes"
    by_index = run_cli("logs", document["id"][:20], "build/1", "--db", db)
    assert by_index.stdout == b"exact\xffbytes"

    runs = run_cli("runs", "--db", db, "--json")
    assert json.loads(runs.stdout)[0]["id"] == document["id"]
    show = run_cli("show", "reported#1", "--db", db, "--json")
    assert json.loads(show.stdout) == document

    second = run_cli("run", str(src), "--executor", "local", "--db", db, "--report", str(report))
    assert second.returncode == 1
    assert json.loads(report.read_text())["number"] == 2


def test_logs_unknown_job_lists_jobs(tmp_path: Path) -> None:
    _write(tmp_path / ".cicd.yml", "jobs:\n  a:\n    image: x\n    steps: [{run: 'true'}]\n")
    db = str(tmp_path / "db")
    assert run_cli("run", str(tmp_path), "--executor", "local", "--db", db).returncode == 0
    result = run_cli("logs", "last", "zzz", "--db", db)
    assert result.returncode == 2
    assert b"has no job 'zzz'; its jobs are: a" in result.stderr


def _start_cli(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "cicd", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_output(process: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    while needle not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"{needle!r} not printed; output so far: {seen!r}")
        chunk = process.stdout.read(65536)
        if chunk:
            seen += chunk
        else:
            time.sleep(0.05)
    return seen


@pytest.mark.docker
def test_run_docker_removes_objects_before_exit(tmp_path: Path) -> None:
    require_image(BUSYBOX)
    _write(tmp_path / ".cicd.yml", f"""
jobs:
  first:
    image: {BUSYBOX}
    steps:
      - run: echo one > made.txt
      - run: cat made.txt
  second:
    image: {BUSYBOX}
    needs: [first]
    steps:
      - run: "true"
""")
    db = str(tmp_path / "db")
    result = run_cli("run", str(tmp_path), "--db", db, "--report", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr
    assert b"[first/cat made.txt] one\n" in result.stdout
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["state"] == "succeeded"
    # The workers remove their containers and volumes after the run's end is
    # recorded; the process exits only once they are gone.
    assert labelled_objects(docker.from_env(), document["id"]) == []


@pytest.mark.docker
def test_interrupt_cleans_up_and_exits_130(tmp_path: Path) -> None:
    require_image(BUSYBOX)
    _write(tmp_path / ".cicd.yml", f"""
jobs:
  slow:
    image: {BUSYBOX}
    steps:
      - run: |
          trap 'echo TERM received; exit 143' TERM
          echo ready
          while true; do sleep 0.1; done
""")
    process = _start_cli("run", str(tmp_path), "--db", str(tmp_path / "db"), "--grace", "5")
    try:
        _wait_for_output(process, b"ready", timeout=60)
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert b"TERM received" in rest
    assert b"stopping running steps" in stderr
    document = json.loads(run_cli("show", "last", "--db", str(tmp_path / "db"), "--json").stdout)
    assert document["state"] == "cancelled"
    assert document["jobs"][0]["steps"][0]["state"] == "cancelled"
    assert labelled_objects(docker.from_env(), document["id"]) == []


@pytest.mark.docker
def test_second_interrupt_skips_grace(tmp_path: Path) -> None:
    require_image(BUSYBOX)
    _write(tmp_path / ".cicd.yml", f"""
jobs:
  stubborn:
    image: {BUSYBOX}
    steps:
      - run: |
          trap '' TERM
          echo ready
          while true; do sleep 0.1; done
""")
    process = _start_cli("run", str(tmp_path), "--db", str(tmp_path / "db"), "--grace", "600")
    try:
        _wait_for_output(process, b"ready", timeout=60)
        process.send_signal(signal.SIGINT)
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)  # far below the 600 s grace
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert b"killing running steps now" in stderr
    report = run_cli("show", "last", "--db", str(tmp_path / "db"), "--json")
    document = json.loads(report.stdout)
    assert document["state"] == "cancelled"
    assert document["jobs"][0]["steps"][0]["exit_code"] == 137
    assert labelled_objects(docker.from_env(), document["id"]) == []


@pytest.mark.docker
def test_killed_run_objects_removed_by_next_run(tmp_path: Path) -> None:
    require_image(BUSYBOX)
    _write(tmp_path / ".cicd.yml", f"""
jobs:
  stays:
    image: {BUSYBOX}
    steps:
      - run: echo ready; sleep 600
""")
    db = str(tmp_path / "db")
    process = _start_cli("run", str(tmp_path), "--db", db)
    try:
        _wait_for_output(process, b"ready", timeout=60)
    finally:
        process.kill()  # SIGKILL: cicd gets no chance to clean up
        process.wait(timeout=30)
    run_id = json.loads(run_cli("show", "last", "--db", db, "--json").stdout)["id"]
    client = docker.from_env()
    assert labelled_objects(client, run_id) != []

    other = tmp_path / "other"
    other.mkdir()
    _write(other / ".cicd.yml", f"jobs:\n  a:\n    image: {BUSYBOX}\n    steps: [{{run: 'true'}}]\n")
    assert run_cli("run", str(other), "--db", db).returncode == 0
    assert labelled_objects(client, run_id) == []
    abandoned = json.loads(run_cli("show", run_id, "--db", db, "--json").stdout)
    assert abandoned["state"] == "failed"
    assert abandoned["jobs"][0]["reason"] == "abandoned"
    assert abandoned["jobs"][0]["steps"][0]["state"] == "failed"
