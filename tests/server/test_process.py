"""The server as a process: signals, crashes and restarts, the command-line client."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import BUSYBOX, ROOT, labelled_objects, run_cli
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.docker

SLOW = f"""
name: slow
jobs:
  count:
    image: {BUSYBOX}
    steps:
      - name: counting
        run: for i in 1 2 3 4 5 6 7 8; do echo "tick $i"; sleep 0.5; done
      - run: echo after counting
  after:
    needs: [count]
    image: {BUSYBOX}
    steps: [{{run: echo after}}]
"""

HELLO = str(ROOT / "examples" / "hello")


def _submit(url: str, pipeline: str = SLOW) -> str:
    response = httpx.post(f"{url}/api/v1/runs", json={"source": {"dir": HELLO},
                                                      "pipeline_yaml": pipeline}, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _run(url: str, run_id: str) -> dict[str, object]:
    return httpx.get(f"{url}/api/v1/runs/{run_id}", timeout=30).json()  # type: ignore[no-any-return]


def _wait(url: str, run_id: str, predicate, timeout: float = 60) -> dict[str, object]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = _run(url, run_id)
        if predicate(document):
            return document
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached the state asked for: {document}")


def _objects_left(client: docker.DockerClient, run_id: str, timeout: float = 30) -> list[str]:
    """Return the run's labelled objects once none are left, or when ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while (left := labelled_objects(client, run_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _step_running(document: dict[str, object]) -> bool:
    jobs = document["jobs"]
    return bool(jobs) and jobs[0]["steps"][0]["state"] == "running"  # type: ignore[index]


def _ended(document: dict[str, object]) -> bool:
    return document["state"] in ("succeeded", "failed", "cancelled")


@contextmanager
def _tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (a small or read-only disk), then unmount it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_sigkill_then_restart_reattaches(server_process: ServerProcess) -> None:
    server_process.start()
    run_id = _submit(server_process.url)
    _wait(server_process.url, run_id, _step_running)
    time.sleep(1.2)
    server_process.kill()  # SIGKILL: no cleanup at all
    time.sleep(1.0)  # the step keeps writing while no server watches
    server_process.start()
    document = _wait(server_process.url, run_id, _ended)
    assert document["state"] == "succeeded", document
    log = httpx.get(f"{server_process.url}/api/v1/runs/{run_id}/jobs/count/steps/1/log").content
    assert log == b"".join(f"tick {i}\n".encode() for i in range(1, 9))
    conn = sqlite3.connect(server_process.db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    starts = conn.execute("SELECT COUNT(*) FROM events WHERE run_id = ? AND name = 'StepStarted'"
                          " AND step_id = 'count/1'", (run_id,)).fetchone()[0]
    assert starts == 1  # the step ran once, never twice
    assert _objects_left(docker.from_env(), run_id) == []


PAIR = f"""
name: pair
jobs:
  left:
    image: {BUSYBOX}
    steps: [{{run: 'echo start; sleep 4; echo end'}}]
  right:
    image: {BUSYBOX}
    steps: [{{run: 'echo start; sleep 4; echo end'}}]
"""


def test_restart_reattached_jobs_hold_slots(server_process: ServerProcess,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart, reattached jobs hold their node's job slots before any run starts."""
    monkeypatch.setenv("CICD_RUNS_MAX_PARALLEL_JOBS", "2")
    server_process.start()
    pair = _submit(server_process.url, PAIR)
    _wait(server_process.url, pair, lambda d: all(
        job["steps"][0]["state"] == "running" for job in d["jobs"]) and len(d["jobs"]) == 2)
    waiting = _submit(server_process.url, PAIR.replace("name: pair", "name: waiting"))
    _wait(server_process.url, waiting, lambda d: len(d["jobs"]) == 2)
    server_process.kill()
    server_process.start()
    for run_id in (pair, waiting):
        assert _wait(server_process.url, run_id, _ended, timeout=90)["state"] == "succeeded"
    conn = sqlite3.connect(server_process.db)
    ends = [ts for (ts,) in conn.execute(
        "SELECT ts FROM events WHERE run_id = ? AND name = 'JobCompleted'", (pair,))]
    starts = [ts for (ts,) in conn.execute(
        "SELECT ts FROM events WHERE run_id = ? AND name = 'JobStarted'", (waiting,))]
    assert len(ends) == 2
    assert len(starts) == 2
    assert min(starts) >= min(ends)  # no third job ran beside the two reattached ones


def test_step_ended_while_down_end_time(server_process: ServerProcess) -> None:
    """A step that ended while no server ran gets the engine's end time, not the restart's."""
    server_process.start()
    run_id = _submit(server_process.url, f"jobs:\n  short:\n    image: {BUSYBOX}\n"
                                         "    steps: [{run: 'echo a; sleep 1.5; echo b'}]\n")
    log_url = f"{server_process.url}/api/v1/runs/{run_id}/jobs/short/steps/1/log"
    deadline = time.monotonic() + 30
    while httpx.get(log_url, timeout=30).content != b"a\n":  # the script began
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server_process.kill()
    time.sleep(3.5)  # the step ends about 1.5 s after it began
    restarted_ms = time.time() * 1000
    server_process.start()
    assert _wait(server_process.url, run_id, _ended)["state"] == "succeeded"
    conn = sqlite3.connect(server_process.db)
    started, ended = (conn.execute(
        "SELECT ts FROM events WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()[0]
        for name in ("StepStarted", "StepCompleted"))
    assert ended < restarted_ms - 1000
    assert 1200 <= ended - started <= 3000


def test_sigkill_with_lost_container_fails_run(server_process: ServerProcess) -> None:
    server_process.start()
    run_id = _submit(server_process.url)
    _wait(server_process.url, run_id, _step_running)
    server_process.kill()
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"io.cicd.run={run_id}"}):
        container.remove(force=True)
    server_process.start()
    document = _wait(server_process.url, run_id, _ended)
    assert document["state"] == "failed"
    count, after = document["jobs"]  # type: ignore[misc]
    assert count["state"] == "failed"
    assert count["reason"] == "server_restarted"
    assert count["steps"][0]["reason"] == "server_restarted"
    assert after["state"] == "skipped"
    # The volume of the lost job goes with the run's final sweep, just after RunFailed.
    assert _objects_left(client, run_id) == []


def test_retry_run_survives_restart(server_process: ServerProcess) -> None:
    server_process.start()
    url = server_process.url
    pipeline = f"""
jobs:
  quick:
    image: {BUSYBOX}
    steps: [{{run: "true"}}]
  slow:
    image: {BUSYBOX}
    steps: [{{run: "sleep 3"}}, {{run: "exit 0"}}]
"""
    first = _submit(url, pipeline)
    _wait(url, first, lambda d: len(d["jobs"]) == 2 and d["jobs"][1]["steps"][0]["state"] == "running")
    httpx.post(f"{url}/api/v1/runs/{first}/jobs/slow/cancel", timeout=30)
    assert _wait(url, first, _ended)["state"] == "cancelled"
    retry = httpx.post(f"{url}/api/v1/runs/{first}/retry", timeout=30).json()["run"]["id"]
    _wait(url, retry, lambda d: any(s["state"] == "running" for j in d["jobs"]
                                   for s in j["steps"]))
    server_process.kill()
    server_process.start()
    document = _wait(server_process.url, retry, _ended)
    assert document["state"] == "succeeded", document
    states = {job["id"]: job["state"] for job in document["jobs"]}
    assert states == {"quick": "skipped", "slow": "succeeded"}
    conn = sqlite3.connect(server_process.db)
    rejected = conn.execute("SELECT COUNT(*) FROM events WHERE name = 'TransitionRejected'"
                            " AND run_id = ?", (retry,)).fetchone()[0]
    assert rejected == 0


def test_pending_runs_start_after_restart(tmp_path: Path, docker_engine: object) -> None:
    server = ServerProcess(tmp_path / "db", tmp_path / "log", "--config",
                           str(_config(tmp_path, "[runs]\nper_tenant_runs = 1\n")))
    try:
        server.start()
        first = _submit(server.url)
        second = _submit(server.url, f"jobs:\n  q:\n    image: {BUSYBOX}\n    steps: [{{run: echo queued}}]\n")
        assert _run(server.url, second)["state"] == "pending"
        server.kill()
        server.start()
        assert _wait(server.url, second, _ended)["state"] == "succeeded"
        assert _wait(server.url, first, _ended)["state"] == "succeeded"
    finally:
        server.kill()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cicd.toml"
    path.write_text(text)
    return path


def test_intake_full_answers_429(tmp_path: Path, docker_engine: object) -> None:
    config = _config(tmp_path, "[runs]\nintake_size = 1\nper_tenant_runs = 1\n")
    server = ServerProcess(tmp_path / "db", tmp_path / "log", "--config", str(config))
    try:
        server.start()
        running = _submit(server.url)
        _wait(server.url, running, lambda d: d["state"] == "running")
        waiting = _submit(server.url)
        rejected = httpx.post(f"{server.url}/api/v1/runs", timeout=30,
                              json={"source": {"dir": HELLO}, "pipeline_yaml": SLOW})
        assert rejected.status_code == 429
        assert int(rejected.headers["retry-after"]) >= 1
        assert rejected.json()["code"] == "SCH-CAP"
        httpx.post(f"{server.url}/api/v1/runs/{running}/cancel", timeout=30)
        assert _wait(server.url, waiting, lambda d: d["state"] == "running")
        server.signal(signal.SIGTERM)  # cancels the waiting run and removes its objects
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()


def test_sigterm_drains_and_exits_zero(server_process: ServerProcess) -> None:
    server_process.start()
    run_id = _submit(server_process.url, f"jobs:\n  forever:\n    image: {BUSYBOX}\n"
                                         "    steps: [{run: 'echo up; sleep 600'}]\n")
    _wait(server_process.url, run_id, _step_running)
    server_process.signal(signal.SIGTERM)
    time.sleep(0.3)
    during = httpx.post(f"{server_process.url}/api/v1/runs", timeout=30,
                        json={"source": {"dir": HELLO}, "pipeline_yaml": SLOW})
    assert during.status_code == 503
    assert during.json()["code"] == "SRV-STOPPING"
    assert server_process.wait(timeout=60) == 0
    conn = sqlite3.connect(server_process.db)
    state, reason = conn.execute("SELECT state, reason FROM runs WHERE id = ?",
                                 (run_id,)).fetchone()
    assert (state, reason) == ("cancelled", "server_shutdown")
    assert labelled_objects(docker.from_env(), run_id) == []


def test_sigterm_lets_last_job_succeed(server_process: ServerProcess) -> None:
    # Every job of the run finishes within the grace period: the run succeeds.
    server_process.start()
    run_id = _submit(server_process.url, f"jobs:\n  short:\n    image: {BUSYBOX}\n"
                                         "    steps: [{run: 'echo up; sleep 2'}]\n")
    _wait(server_process.url, run_id, _step_running)
    server_process.signal(signal.SIGTERM)
    assert server_process.wait(timeout=60) == 0
    conn = sqlite3.connect(server_process.db)
    state, reason = conn.execute("SELECT state, reason FROM runs WHERE id = ?",
                                 (run_id,)).fetchone()
    assert state == "succeeded"
    assert reason in (None, "")
    assert labelled_objects(docker.from_env(), run_id) == []


def _cordon_only_node(url: str) -> str:
    nodes = httpx.get(f"{url}/api/v1/nodes", timeout=30).json()
    assert len(nodes) == 1
    name = nodes[0]["name"]
    assert httpx.post(f"{url}/api/v1/nodes/{name}/cordon", timeout=30).status_code == 200
    return str(name)


def _waits_for_a_node(document: dict[str, object]) -> bool:
    jobs = document["jobs"]
    assert isinstance(jobs, list)
    return bool(jobs) and jobs[0]["wait_reason"] == "node_unavailable"


def test_cancel_ends_job_waiting_for_node(server_process: ServerProcess) -> None:
    server_process.start()
    _cordon_only_node(server_process.url)
    run_id = _submit(server_process.url)
    _wait(server_process.url, run_id, _waits_for_a_node)
    httpx.post(f"{server_process.url}/api/v1/runs/{run_id}/cancel", timeout=30)
    document = _wait(server_process.url, run_id, _ended, timeout=10)
    assert document["state"] == "cancelled"
    states = {job["id"]: job["state"] for job in document["jobs"]}  # type: ignore[attr-defined]
    assert states == {"count": "cancelled", "after": "cancelled"}


def test_sigterm_skips_grace_for_queued_jobs(tmp_path: Path, docker_engine: object) -> None:
    # The grace period is for running steps: a job still waiting for a node ends at
    # once, so the server exits well before the 600 s grace set here.
    config = _config(tmp_path, "[runs]\nshutdown_grace = \"600s\"\n")
    server = ServerProcess(tmp_path / "db", tmp_path / "log", "--config", str(config))
    try:
        server.start()
        _cordon_only_node(server.url)
        run_id = _submit(server.url)
        _wait(server.url, run_id, _waits_for_a_node)
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        conn = sqlite3.connect(server.db)
        state, reason = conn.execute("SELECT state, reason FROM runs WHERE id = ?",
                                     (run_id,)).fetchone()
        assert (state, reason) == ("cancelled", "server_shutdown")
        jobs = dict(conn.execute("SELECT job_id, state FROM jobs WHERE run_id = ?", (run_id,)))
        assert jobs == {"count": "cancelled", "after": "cancelled"}
    finally:
        server.kill()


def test_sigterm_leaves_queued_runs_pending(tmp_path: Path, docker_engine: object) -> None:
    config = _config(tmp_path, "[runs]\nper_tenant_runs = 1\n")
    server = ServerProcess(tmp_path / "db", tmp_path / "log", "--config", str(config))
    try:
        server.start()
        running = _submit(server.url, f"jobs:\n  forever:\n    image: {BUSYBOX}\n"
                                      "    steps: [{run: 'echo up; sleep 600'}]\n")
        _wait(server.url, running, _step_running)
        queued = [_submit(server.url) for _ in range(3)]
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
    conn = sqlite3.connect(tmp_path / "db")
    states = dict(conn.execute("SELECT id, state FROM runs"))
    assert states[running] == "cancelled"
    assert [states[run_id] for run_id in queued] == ["pending"] * 3


def test_cli_client_submit_logs_cancel_retry(server_process: ServerProcess, tmp_path: Path) -> None:
    server_process.start()
    env = {"CICD_SERVER": server_process.url}
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(SLOW)
    submitted = run_cli("submit", str(pipeline), "--source", HELLO, "--wait", "--json", env=env)
    assert submitted.returncode == 0, submitted.stderr
    run_id = json.loads(submitted.stdout)["id"]
    logs = run_cli("logs", run_id, "count/counting", "-f", env=env)
    assert logs.stdout == b"".join(f"tick {i}\n".encode() for i in range(1, 9))
    shown = run_cli("show", run_id, "--json", env=env)
    assert json.loads(shown.stdout)["state"] == "succeeded"
    listed = run_cli("runs", "--json", env=env)
    assert json.loads(listed.stdout)[0]["id"] == run_id
    cancel = run_cli("cancel", run_id, env=env)
    assert b"already ended" in cancel.stdout
    retry = run_cli("retry", run_id, env=env)
    assert retry.returncode == 2
    assert b"nothing to retry" in retry.stderr


def test_second_server_on_same_database_rejected(server_process: ServerProcess) -> None:
    server_process.start()
    second = run_cli("serve", "--port", "0", "--db", str(server_process.db), timeout=60)
    assert second.returncode == 2
    assert b"another cicd server uses the database" in second.stderr
    rebuild = run_cli("rebuild-projections", "--db", str(server_process.db), timeout=60)
    assert rebuild.returncode == 2
    assert b"a cicd server uses the database" in rebuild.stderr
    assert b"Traceback" not in rebuild.stderr
    server_process.kill()
    rebuild = run_cli("rebuild-projections", "--db", str(server_process.db), timeout=60)
    assert rebuild.returncode == 0, rebuild.stderr
    assert b"replayed" in rebuild.stdout


def test_newer_database_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    for args in (("run", "-q", "--executor", "local", "--db", str(db), HELLO),
                 ("serve", "--port", "0", "--db", str(db))):
        result = run_cli(*args, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert b"Traceback" not in result.stderr
        assert b"has schema version 99, newer than the" in result.stderr


def test_engine_never_answering_takes_no_work(tmp_path: Path) -> None:
    # The engine's socket does not exist. From the start the node is unavailable and the
    # server not ready; a run submitted then waits for a node, and the server lives on.
    absent = tmp_path / "absent.sock"
    config = _config(tmp_path, f'[docker]\nhost = "unix://{absent}"\n')
    server = ServerProcess(tmp_path / "db", tmp_path / "log", "--config", str(config))
    try:
        server.start()
        nodes = httpx.get(f"{server.url}/api/v1/nodes", timeout=30).json()
        assert [(n["state"], n["breaker"]) for n in nodes] == [("unavailable", "closed")]
        assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 503
        run_id = _submit(server.url, f"jobs:\n  a:\n    image: {BUSYBOX}\n"
                                     "    steps: [{run: echo never}]\n")
        document = _wait(server.url, run_id, _waits_for_a_node)
        assert document["state"] == "running"
        time.sleep(1)
        assert server.process is not None and server.process.poll() is None
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        httpx.post(f"{server.url}/api/v1/runs/{run_id}/cancel", timeout=30)
        assert _wait(server.url, run_id, _ended)["state"] == "cancelled"
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()


def test_full_disk_stops_with_status_1(tmp_path: Path) -> None:
    # The database is on a 1 MiB tmpfs, and one step's output fills it. The server must
    # stop with exit status 1 and a one-line error, not hang or report a usage error.
    with _tmpfs(tmp_path / "small") as small:
        server = ServerProcess(small / "db", tmp_path / "log", "--executor", "local")
        try:
            server.start()
            run_id = _submit(server.url, "jobs:\n  a:\n    image: none\n    steps:\n"
                                         "      - run: head -c 3000000 /dev/zero\n")
            assert server.wait(timeout=60) == 1
            log = server.log_path.read_text()
            assert "database or disk is full" in log
            assert "Traceback" not in log
            assert run_id
        finally:
            server.kill()


def test_full_disk_leaves_running_containers(tmp_path: Path) -> None:
    # A failed write ends the server like a crash: the step container of the job that
    # writes nothing goes on running, and a start with space again takes it over.
    client = docker.from_env()
    run_id = ""
    with _tmpfs(tmp_path / "small") as small:
        server = ServerProcess(small / "db", tmp_path / "log")
        try:
            server.start()
            run_id = _submit(server.url, f"jobs:\n"
                                         f"  quiet:\n    image: {BUSYBOX}\n"
                                         f"    steps: [{{run: sleep 20}}]\n"
                                         f"  fill:\n    image: {BUSYBOX}\n"
                                         f"    steps: [{{run: sleep 2; head -c 3000000 /dev/zero}}]\n")
            assert server.wait(timeout=60) == 1
            assert "database or disk is full" in server.log_path.read_text()
            quiet = client.containers.list(filters={"label": [f"io.cicd.run={run_id}",
                                                              "io.cicd.job=quiet"]})
            assert [container.status for container in quiet] == ["running"]

            subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
            server.start()
            document = _wait(server.url, run_id, _ended)
            jobs = {job["id"]: job for job in document["jobs"]}  # type: ignore[attr-defined]
            assert jobs["quiet"]["state"] == "succeeded", jobs["quiet"]
        finally:
            server.kill()
            if run_id:
                for container in client.containers.list(
                        all=True, filters={"label": f"io.cicd.run={run_id}"}):
                    container.remove(force=True)


def test_restored_copy_leaves_the_original_containers(tmp_path: Path) -> None:
    # A copy of a running server's database, started as a second server on the same
    # engine, is another owner: it must not take over the first server's containers.
    original = ServerProcess(tmp_path / "a.db", tmp_path / "a.log")
    copy = ServerProcess(tmp_path / "b.db", tmp_path / "b.log")
    try:
        original.start()
        run_id = _submit(original.url)
        _wait(original.url, run_id, _step_running)
        with sqlite3.connect(original.db) as source, sqlite3.connect(copy.db) as target:
            source.backup(target)
        copy.start()
        document = _wait(copy.url, run_id, _ended)
        count = document["jobs"][0]  # type: ignore[index]
        assert (count["state"], count["reason"]) == ("failed", "server_restarted"), count
        assert _wait(original.url, run_id, _ended)["state"] == "succeeded"
    finally:
        copy.kill()
        original.kill()


def test_read_only_database_directory_is_reported(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro") as place:
        subprocess.run(["mount", "-o", "remount,ro", str(place)], check=True)
        for args in (("serve", "--port", "0", "--db", str(place / "cicd.db")),
                     ("rebuild-projections", "--db", str(place / "cicd.db"))):
            result = run_cli(*args, timeout=60)
            assert result.returncode == 2, (args, result.stderr)
            assert b"Traceback" not in result.stderr
            assert b"cannot create the lock file" in result.stderr
            assert b"Read-only file system" in result.stderr
