"""The command-line client against a real `cicd serve` process: run references, pending
runs, error messages and log headers.

One server (local executor, SQLite file) serves the whole module. It starts at most one
run per tenant at once, so a second run of a tenant stays pending while the first runs.
Each test uses its own tenants and pipeline names, because run numbers count per tenant
and pipeline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, run_cli
from tests.server.conftest import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("refs-server")
    config = directory / "server.toml"
    config.write_text("[runs]\nper_tenant_runs = 1\n")
    instance = ServerProcess(directory / "server.db", directory / "server.log",
                             "--executor", "local", "--config", str(config))
    instance.start()
    yield instance
    instance.kill()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        yield client


def _pipeline(name: str, *steps: str, job: str = "a") -> str:
    lines = [f"name: {name}", "jobs:", f"  {job}:", "    image: busybox:latest", "    steps:"]
    lines += [f"      - run: {step!r}" for step in steps]
    return "\n".join(lines) + "\n"


def _submit(api: httpx.Client, tmp_path: Path, yaml: str, tenant: str, **extra: str) -> str:
    body = {"source": {"dir": str(tmp_path)}, "pipeline_yaml": yaml, "tenant": tenant, **extra}
    response = api.post("/runs", json=body)
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


def _wait_state(api: httpx.Client, run_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = api.get(f"/runs/{run_id}").json()
        if document["state"] in states:
            return document
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach {states}; last document: {document}")


def _cli(server: ServerProcess, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_cli(*args, "--server", server.url, cwd=cwd, timeout=120)


def test_show_pipeline_number(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    run_id = _submit(api, tmp_path, _pipeline("hello", "echo hi"), "refs-number")
    _wait_state(api, run_id, {"succeeded"})
    result = _cli(server, "show", "hello#1")
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} (hello#1): succeeded".encode() in result.stdout


def test_show_id_prefix(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    run_id = _submit(api, tmp_path, _pipeline("prefixed", "echo hi"), "refs-prefix")
    _wait_state(api, run_id, {"succeeded"})
    # Lower case too: the --db path matches a prefix without regard to case.
    result = _cli(server, "show", run_id[:-3].lower())
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} (prefixed#1)".encode() in result.stdout


def test_show_ambiguous_prefix_lists_runs(server: ServerProcess, api: httpx.Client,
                                          tmp_path: Path) -> None:
    first = _submit(api, tmp_path, _pipeline("twins", "true"), "refs-twins")
    second = _submit(api, tmp_path, _pipeline("twins", "true"), "refs-twins-2")
    # The first four characters of a ULID are the top 20 bits of its 48-bit millisecond
    # time, so they change once every 2**28 ms (about three days).
    assert first[:4] == second[:4]
    result = _cli(server, "show", first[:4])
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert first in stderr
    assert second in stderr
    assert "give the run id" in stderr


def test_show_last(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    run_id = _submit(api, tmp_path, _pipeline("newest", "true"), "refs-last")
    _wait_state(api, run_id, {"succeeded"})
    result = _cli(server, "show", "last")
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} (newest#1)".encode() in result.stdout


def test_show_reference_is_url_encoded(server: ServerProcess) -> None:
    # Sent unencoded, "?state=failed" would become a query string, which GET
    # /runs/{run_id} rejects with 400.
    result = _cli(server, "show", "nosuch?state=failed")
    assert result.returncode == 2
    assert b"no run on the server at" in result.stderr
    assert b"matches 'nosuch?state=failed'" in result.stderr


def test_cancel_and_retry_last(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    run_id = _submit(api, tmp_path, _pipeline("sleepy", "sleep 60"), "refs-cancel")
    _wait_state(api, run_id, {"running"})
    result = _cli(server, "cancel", "last")
    assert result.returncode == 0, result.stderr
    _wait_state(api, run_id, {"cancelled"})
    result = _cli(server, "retry", "sleepy#1")
    assert result.returncode == 0, result.stderr
    new_id = result.stdout.decode().strip()  # the id alone, as submit prints it
    assert new_id != run_id
    assert f"run {new_id} (sleepy#2)".encode() in result.stderr
    assert api.get(f"/runs/{new_id}").json()["pipeline"] == "sleepy"
    result = _cli(server, "cancel", new_id[:-2])
    assert result.returncode == 0, result.stderr
    _wait_state(api, new_id, {"cancelled"})
    result = _cli(server, "retry", new_id, "--json")
    assert result.returncode == 0, result.stderr
    third = json.loads(result.stdout)
    assert third["id"] != new_id
    assert third["pipeline"] == "sleepy"
    assert _cli(server, "cancel", third["id"]).returncode == 0
    _wait_state(api, third["id"], {"cancelled"})
    listed = _cli(server, "runs").stdout.decode().splitlines()
    assert listed[0].split() == ["RUN", "PIPELINE", "STATE", "STARTED", "DURATION"]
    # STARTED is the start time (the first run was seen running): the listing and the
    # run document agree.
    row = next(line for line in listed if line.startswith(run_id))
    document = api.get(f"/runs/{run_id}").json()
    started = dt.datetime.fromisoformat(document["started_at"]).astimezone()
    assert f"{started:%Y-%m-%d %H:%M:%S}" in row
    local = run_cli("runs", "--db", str(server.db)).stdout.decode().splitlines()
    assert f"{started:%Y-%m-%d %H:%M:%S}" in next(line for line in local
                                                 if line.startswith(run_id))


def test_number_of_several_tenants(server: ServerProcess, api: httpx.Client,
                                   tmp_path: Path) -> None:
    yaml = _pipeline("sleeper", "true")
    ids = [_submit(api, tmp_path, yaml, tenant) for tenant in ("refs-acme", "refs-zeta")]
    for run_id in ids:
        _wait_state(api, run_id, {"succeeded"})
    remote = _cli(server, "show", "sleeper#1")
    local = run_cli("show", "sleeper#1", "--db", str(server.db))
    for result in (remote, local):
        assert result.returncode == 2
        stderr = result.stderr.decode()
        assert "give the run id" in stderr
        assert "more of the id" not in stderr
        for run_id, tenant in zip(ids, ("refs-acme", "refs-zeta")):
            assert run_id in stderr
            assert f"tenant {tenant}" in stderr


def _pending_run(api: httpx.Client, tmp_path: Path, tenant: str) -> tuple[str, str]:
    """Start a long run of ``tenant``, then submit one that waits for it; return both ids."""
    blocker = _submit(api, tmp_path, _pipeline("blocker", "sleep 60"), tenant)
    _wait_state(api, blocker, {"running"})
    waiting = _submit(api, tmp_path, _pipeline("crash", "echo from-long", job="long"), tenant)
    assert api.get(f"/runs/{waiting}").json()["state"] == "pending"
    return blocker, waiting


def test_show_pending_run_reason(server: ServerProcess, api: httpx.Client,
                                 tmp_path: Path) -> None:
    tenant = "refs-show-pending"
    blocker, waiting = _pending_run(api, tmp_path, tenant)
    remote = _cli(server, "show", waiting)
    local = run_cli("show", waiting, "--db", str(server.db))
    _cli(server, "cancel", blocker)
    for result in (remote, local):
        assert result.returncode == 0, result.stderr
        assert f"run {waiting} (crash#1): pending".encode() in result.stdout
        assert b"waiting to start: accepted" in result.stdout
        assert f"for tenant {tenant}".encode() in result.stdout


def test_logs_of_pending_run(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    blocker, waiting = _pending_run(api, tmp_path, "refs-logs-pending")
    logs = _cli(server, "logs", waiting, "long/1")
    _cli(server, "cancel", blocker)
    assert logs.returncode == 2
    assert b"is pending" in logs.stderr
    assert b"no logs yet" in logs.stderr


def test_follow_waits_for_pending_run(server: ServerProcess, api: httpx.Client,
                                      tmp_path: Path) -> None:
    blocker, waiting = _pending_run(api, tmp_path, "refs-follow-pending")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    follower = subprocess.Popen(
        [sys.executable, "-m", "cicd", "logs", "-f", waiting, "long/1", "--server", server.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)
        still_waiting = follower.poll() is None
        assert _cli(server, "cancel", blocker).returncode == 0
        stdout, stderr = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert still_waiting, stderr
    assert follower.returncode == 0, stderr
    assert stdout == b"from-long\n"
    assert stderr.count(b"waiting for it to start") == 1


def test_follow_pending_run_without_job(server: ServerProcess, api: httpx.Client,
                                        tmp_path: Path) -> None:
    blocker, waiting = _pending_run(api, tmp_path, "refs-nojob")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    follower = subprocess.Popen(
        [sys.executable, "-m", "cicd", "logs", "-f", waiting, "nosuch", "--server", server.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert _cli(server, "cancel", blocker).returncode == 0
        _, stderr = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 2
    assert b"waiting for it to start" in stderr
    assert f"run {waiting}".encode() in stderr
    assert b"has no job 'nosuch'; its jobs are: long" in stderr


def test_logs_header_on_new_line(server: ServerProcess, api: httpx.Client,
                                 tmp_path: Path) -> None:
    run_id = _submit(api, tmp_path, _pipeline("partial", "printf abc", "printf def"),
                     "refs-headers")
    _wait_state(api, run_id, {"succeeded"})
    result = _cli(server, "logs", run_id, "a")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (b"==> a/printf abc <==\nabc\n"
                             b"==> a/printf def <==\ndef")
    one_step = _cli(server, "logs", run_id, "a/1")
    assert one_step.stdout == b"abc"


def test_submit_error_names_file(server: ServerProcess, tmp_path: Path) -> None:
    pipeline = "jobs:\n  a:\n    image: busybox:latest\n    needs: [nosuch]\n    steps: [{run: 'true'}]\n"
    (tmp_path / "b.yml").write_text(pipeline)
    result = _cli(server, "submit", "b.yml", "--source", ".", cwd=tmp_path)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "pipeline_yaml" not in stderr
    assert "b.yml:4:" in stderr
    assert "unknown job 'nosuch'" in stderr


@pytest.mark.parametrize("command", ["submit", "cancel", "retry"])
def test_server_help_without_db(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert b"--db" not in result.stdout


@pytest.mark.parametrize("command", ["cancel", "retry"])
def test_help_lists_run_references(command: str) -> None:
    result = run_cli(command, "--help")
    assert b"PIPELINE#NUMBER" in result.stdout
