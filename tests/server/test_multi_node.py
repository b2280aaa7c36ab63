"""Three real Docker engines as the server's nodes: policies, labels, a lost node.

Each engine is a separate dockerd on this machine (tests/engines.py), configured as
a ``[[nodes]]`` entry with its own labels and a CPU capacity set in the
configuration, so the placements do not depend on this machine's CPU count.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from cicd.config import load_settings
from cicd.server.process import Server
from tests.conftest import BUSYBOX
from tests.engines import Engine
from tests.server.conftest import ServerProcess, wait_for_state

pytest_plugins = ["tests.engines_plugin"]

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LABELS = [{"pool": "a", "zone": "x"}, {"pool": "a", "zone": "y"}, {"pool": "b", "zone": "x"}]


def _settings(tmp_path: Path, engines: list[Engine], policy: str, *,
              node_lost_after: str = "") -> Any:
    nodes = [{"name": engine.name, "host": engine.base_url, "labels": LABELS[i], "cpu": "2",
              "memory": "4G", "reserve_cpu": "250m", "max_jobs": 4}
             for i, engine in enumerate(engines)]
    overrides = {
        "server.port": 0, "storage.db": str(tmp_path / "server.db"), "runs.grace": "1s",
        "runs.shutdown_grace": "1s", "scheduling.policy": policy,
        "scheduling.probe_interval": "200ms", "scheduling.breaker_min_calls": 1,
        "scheduling.breaker_open_for": "1s", "scheduling.node_lost_after": node_lost_after,
        "nodes": nodes,
    }
    return load_settings(environ={}, overrides=overrides)


class Cluster:
    def __init__(self, server: Server, api: httpx.AsyncClient) -> None:
        self.server = server
        self.api = api

    async def submit(self, yaml_text: str, source: Path) -> str:
        response = await self.api.post("/runs", json={"source": {"dir": str(source)},
                                                       "pipeline_yaml": yaml_text})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def nodes(self) -> dict[str, dict[str, Any]]:
        return {node["name"]: node for node in (await self.api.get("/nodes")).json()}


@asynccontextmanager
async def _serve(settings: Any) -> AsyncIterator[Cluster]:
    instance = Server(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: instance.run(install_signal_handlers=False,
                                                             task_status=task_status))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{instance.port}/api/v1",
                                     timeout=30) as api:
            yield Cluster(instance, api)
        instance.request_stop()
        instance.request_stop()


def _jobs(count: int, run: str, *, cpu: str = "1", extra: str = "") -> str:
    lines = ["jobs:"]
    for index in range(count):
        lines += [f"  j{index}:", f"    image: {BUSYBOX}", f"    resources: {{cpu: '{cpu}'}}",
                  *([f"    {extra}"] if extra else []), "    steps:", f"      - run: {run}"]
    return "\n".join(lines) + "\n"


def _placements(document: dict[str, Any]) -> dict[str, str]:
    return {job["id"]: job["node"] for job in document["jobs"]}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "source"
    directory.mkdir()
    (directory / "README").write_text("multi-node test\n")
    return directory


async def test_spread_and_binpack_placements(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    names = [engine.name for engine in fresh_engines]
    # Each node has 1.75 CPUs after its reserve: one job of 1 CPU fits per node.
    async with _serve(_settings(tmp_path / "spread", fresh_engines, "spread")) as cluster:
        run_id = await cluster.submit(_jobs(3, "sleep 1", cpu="750m"), source)
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 90)
        assert document["state"] == "succeeded", document
        assert sorted(_placements(document).values()) == sorted(names)
    async with _serve(_settings(tmp_path / "binpack", fresh_engines, "binpack")) as cluster:
        run_id = await cluster.submit(_jobs(3, "sleep 1", cpu="750m"), source)
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 90)
        assert document["state"] == "succeeded", document
        placed = sorted(_placements(document).values())
        # Two jobs of 750m fill a node's 1750m; the third goes to the next node.
        assert placed == [names[0], names[0], names[1]], placed


async def test_labels_route_and_unschedulable_fail(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    yaml_text = (f"jobs:\n"
                 f"  on-b:\n    image: {BUSYBOX}\n    runs_on: {{pool: b}}\n"
                 f"    steps: [{{run: echo b}}]\n"
                 f"  on-a-y:\n    image: {BUSYBOX}\n    runs_on: {{pool: a, zone: y}}\n"
                 f"    steps: [{{run: echo ay}}]\n"
                 f"  huge:\n    image: {BUSYBOX}\n    resources: {{cpu: '8'}}\n"
                 f"    allow_failure: true\n    steps: [{{run: echo never}}]\n"
                 f"  gpu:\n    image: {BUSYBOX}\n    runs_on: {{pool: gpu}}\n"
                 f"    allow_failure: true\n    steps: [{{run: echo never}}]\n")
    async with _serve(_settings(tmp_path, fresh_engines, "fifo")) as cluster:
        run_id = await cluster.submit(yaml_text, source)
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 60)
        jobs = {job["id"]: job for job in document["jobs"]}
        assert jobs["on-b"]["node"] == fresh_engines[2].name
        assert jobs["on-a-y"]["node"] == fresh_engines[1].name
        assert jobs["huge"]["state"] == "failed"
        assert jobs["huge"]["reason"] == "unschedulable"
        assert "requests 8 CPU" in jobs["huge"]["message"]
        assert "offer 1750m CPU" in jobs["huge"]["message"]
        assert jobs["gpu"]["reason"] == "unschedulable"
        assert "no node has the labels pool=gpu" in jobs["gpu"]["message"]
        # Both unschedulable jobs allow failure.
        assert document["state"] == "succeeded", {
            j["id"]: (j["state"], j.get("reason"), j.get("message")) for j in document["jobs"]}


LOST_NODE_PIPELINE = (f"jobs:\n"
                      f"  moves:\n    image: {BUSYBOX}\n    runs_on: {{pool: a}}\n"
                      f"    retry: {{max: 1, when: [node_lost]}}\n"
                      f"    steps:\n      - run: echo attempt on $HOSTNAME; sleep 4\n"
                      f"  stays:\n    image: {BUSYBOX}\n    runs_on: {{pool: a, zone: x}}\n"
                      f"    allow_failure: true\n    steps: [{{run: sleep 60}}]\n"
                      f"  elsewhere:\n    image: {BUSYBOX}\n    runs_on: {{pool: b}}\n"
                      f"    steps: [{{run: sleep 3; echo done}}]\n")


async def _start_and_lose_first(cluster: Cluster, engines: list[Engine],
                                source: Path) -> str:
    """Submit LOST_NODE_PIPELINE, wait until its jobs run, then kill the first engine."""
    first, _second, third = engines
    run_id = await cluster.submit(LOST_NODE_PIPELINE, source)
    with trio.fail_after(60):
        while True:
            document = (await cluster.api.get(f"/runs/{run_id}")).json()
            jobs = {job["id"]: job for job in document["jobs"]}
            if all(jobs.get(j, {}).get("state") == "running"
                   for j in ("moves", "stays", "elsewhere")):
                break
            await trio.sleep(0.1)
    # fifo: pool a jobs go to the first node while it is healthy.
    assert jobs["moves"]["node"] == first.name
    assert jobs["stays"]["node"] == first.name
    assert jobs["elsewhere"]["node"] == third.name
    first.stop()  # SIGKILL of dockerd: the node stops responding
    with trio.fail_after(30):
        while (await cluster.nodes())[first.name]["state"] != "unavailable":
            await trio.sleep(0.1)
    assert (await cluster.nodes())[first.name]["breaker"] in ("open", "half_open")
    return run_id


async def _retried_once_from(cluster: Cluster, node: str) -> None:
    events = (await cluster.api.get("/events", params={"limit": 1000})).json()["items"]
    retried = [e for e in events if e["name"] == "JobRetried"]
    assert [(e["data"]["attempt"], e["data"]["previous_node"]) for e in retried] == [(2, node)]


async def test_lost_node_retry_waits_for_fencing(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    first, _second, _third = fresh_engines
    async with _serve(_settings(tmp_path, fresh_engines, "fifo")) as cluster:
        run_id = await _start_and_lose_first(cluster, fresh_engines, source)
        # The lost attempt may still run in its orphaned container, so the retry waits.
        with trio.fail_after(30):
            while True:
                jobs = {job["id"]: job for job in
                        (await cluster.api.get(f"/runs/{run_id}")).json()["jobs"]}
                if jobs["moves"]["wait_reason"] == "node_lost":
                    break
                await trio.sleep(0.1)
        assert jobs["moves"]["state"] == "pending"
        assert jobs["moves"]["attempt"] == 2
        assert f"node {first.name} to come back" in jobs["moves"]["wait_message"]
        await trio.sleep(2)
        jobs = {job["id"]: job for job in
                (await cluster.api.get(f"/runs/{run_id}")).json()["jobs"]}
        assert jobs["moves"]["state"] == "pending"
        assert jobs["stays"]["state"] == "failed"
        assert jobs["stays"]["reason"] == "node_lost"

        first.start()  # the new dockerd stops the orphaned containers
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 90)
        jobs = {job["id"]: job for job in document["jobs"]}
        assert jobs["moves"]["state"] == "succeeded", jobs["moves"]
        assert jobs["moves"]["attempt"] == 2
        assert jobs["elsewhere"]["state"] == "succeeded"
        await _retried_once_from(cluster, first.name)
        names = [c.name for c in first.client().containers.list(all=True)]
        assert not [name for name in names if name.endswith(("-moves-1", "-stays-1"))], names
        assert (await cluster.nodes())[first.name]["state"] == "ready"


async def test_lost_node_retry_after_window(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    first, second, _third = fresh_engines
    settings = _settings(tmp_path, fresh_engines, "fifo", node_lost_after="3s")
    async with _serve(settings) as cluster:
        run_id = await _start_and_lose_first(cluster, fresh_engines, source)
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 90)
        jobs = {job["id"]: job for job in document["jobs"]}
        assert jobs["stays"]["state"] == "failed"
        assert jobs["stays"]["reason"] == "node_lost"
        assert jobs["moves"]["state"] == "succeeded", jobs["moves"]
        assert jobs["moves"]["attempt"] == 2
        assert jobs["moves"]["node"] == second.name
        assert jobs["elsewhere"]["state"] == "succeeded"
        log = (await cluster.api.get(f"/runs/{run_id}/jobs/moves/steps/1/log")).content
        assert log.count(b"attempt on") == 1  # the first attempt's output was dropped
        await _retried_once_from(cluster, first.name)

        first.start()
        with trio.fail_after(60):
            while (await cluster.nodes())[first.name]["state"] != "ready":
                await trio.sleep(0.2)
        leftovers = first.client().containers.list(all=True, filters={"label": "io.cicd.run"})
        assert leftovers == [], "fencing removes the lost jobs' containers"
        # Back in service: fifo places pool a work on the first node again.
        run_id = await cluster.submit(
            f"jobs:\n  again:\n    image: {BUSYBOX}\n    runs_on: {{pool: a}}\n"
            f"    steps: [{{run: echo back}}]\n", source)
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 60)
        assert document["state"] == "succeeded"
        assert document["jobs"][0]["node"] == first.name


async def _jobs_of(cluster: Cluster, run_id: str) -> dict[str, dict[str, Any]]:
    return {job["id"]: job for job in (await cluster.api.get(f"/runs/{run_id}")).json()["jobs"]}


def _leftovers(engine: Engine) -> list[str]:
    client = engine.client()
    try:
        names = [c.name for c in client.containers.list(all=True)]
    finally:
        client.close()
    return [name for name in names if name.endswith(("-moves-1", "-stays-1"))]


async def test_frozen_node_ends_its_jobs(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    """An engine that accepts connections and never responds (SIGSTOP): its jobs end
    node_lost once the probes give up on it, without waiting for the engine."""
    first, _second, _third = fresh_engines
    async with _serve(_settings(tmp_path, fresh_engines, "fifo")) as cluster:
        run_id = await cluster.submit(LOST_NODE_PIPELINE, source)
        with trio.fail_after(60):
            while not all(job["steps"][0]["state"] == "running"
                          for job in (await _jobs_of(cluster, run_id)).values()):
                await trio.sleep(0.1)
        first.freeze()
        try:
            # A probe gives up after 10 s; the steps there end at once after that.
            with trio.fail_after(40):
                while (jobs := await _jobs_of(cluster, run_id))["stays"]["state"] != "failed":
                    await trio.sleep(0.2)
            assert jobs["stays"]["reason"] == "node_lost"
            assert (await cluster.nodes())[first.name]["state"] == "unavailable"
            # The retry is recorded at once: removing the lost attempt's objects from
            # the frozen engine is left to fencing, not waited for.
            with trio.fail_after(10):
                while (await _jobs_of(cluster, run_id))["moves"]["wait_reason"] != "node_lost":
                    await trio.sleep(0.2)
        finally:
            first.thaw()
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 90)
        jobs = {job["id"]: job for job in document["jobs"]}
        assert jobs["moves"]["state"] == "succeeded", jobs["moves"]
        assert jobs["moves"]["attempt"] == 2
        await _retried_once_from(cluster, first.name)
        assert _leftovers(first) == []


def _config_file(tmp_path: Path, engines: list[Engine]) -> Path:
    """The configuration of _settings, as a file for ``cicd serve --config``."""
    lines = ['[scheduling]', 'policy = "fifo"', 'probe_interval = "200ms"',
             'breaker_min_calls = 1', 'breaker_open_for = "1s"', '']
    for i, engine in enumerate(engines):
        labels = ", ".join(f'{key} = "{value}"' for key, value in LABELS[i].items())
        lines += ['[[nodes]]', f'name = "{engine.name}"', f'host = "{engine.base_url}"',
                  f'labels = {{ {labels} }}', 'cpu = "2"', 'memory = "4G"',
                  'reserve_cpu = "250m"', 'max_jobs = 4', '']
    path = tmp_path / "cicd.toml"
    path.write_text("\n".join(lines))
    return path


def _get(url: str, path: str, **params: Any) -> Any:
    return httpx.get(f"{url}/api/v1{path}", params=params, timeout=30).json()


def _until(url: str, run_id: str, done: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = _get(url, f"/runs/{run_id}")
        if done(document):
            return dict(document)
        assert time.monotonic() < deadline, document
        time.sleep(0.2)


def _states(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {job["id"]: (job["state"], job.get("wait_reason") or job.get("reason") or "")
            for job in document["jobs"]}


def _assignments(url: str, job: str) -> list[str]:
    events = _get(url, "/events", limit=1000)["items"]
    return [e["data"]["node"] for e in events
            if e["name"] == "AssignmentCreated" and e["data"]["job"] == job]


def _step_containers(engines: list[Engine], run_id: str) -> int:
    count = 0
    for engine in engines:
        client = engine.client()
        try:
            count += len(client.containers.list(filters={"label": [
                f"io.cicd.run={run_id}", "io.cicd.step=1"], "status": "running"}))
        finally:
            client.close()
    return count


def _submit_and_run(url: str, source: Path, engines: list[Engine]) -> str:
    response = httpx.post(f"{url}/api/v1/runs", timeout=30, json={
        "source": {"dir": str(source)}, "pipeline_yaml": LOST_NODE_PIPELINE})
    assert response.status_code == 201, response.text
    run_id = str(response.json()["id"])
    _until(url, run_id, lambda d: len(d["jobs"]) == 3
           and all(job["steps"][0]["state"] == "running" for job in d["jobs"]))
    # StepStarted is recorded before the step's container starts. A crash in between
    # leaves no container to take over, and the job ends server_restarted.
    deadline = time.monotonic() + 30
    while _step_containers(engines, run_id) < 3:
        assert time.monotonic() < deadline, "the step containers did not start"
        time.sleep(0.1)
    return run_id


def _server_process(tmp_path: Path, engines: list[Engine]) -> ServerProcess:
    return ServerProcess(tmp_path / "server.db", tmp_path / "server.log",
                         "--config", str(_config_file(tmp_path, engines)))


def _back_and_retried(server: ServerProcess, run_id: str, lost: Engine) -> dict[str, Any]:
    """Start the lost engine again and return the run's jobs once the run ended.

    Checks on the way that the retried job ran its second attempt and that fencing left
    nothing of the first on the engine.
    """
    lost.start()
    document = _until(server.url, run_id, lambda d: d["state"] in ("succeeded", "failed"),
                      timeout=90)
    jobs = {job["id"]: job for job in document["jobs"]}
    assert jobs["moves"]["state"] == "succeeded", jobs["moves"]
    assert jobs["moves"]["attempt"] == 2
    assert _leftovers(lost) == []
    return jobs


def test_restart_keeps_retry_waiting(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    """A crash while a retry waits for its lost node: the restarted server waits too."""
    first, _second, _third = fresh_engines
    server = _server_process(tmp_path, fresh_engines)
    try:
        server.start()
        run_id = _submit_and_run(server.url, source, fresh_engines)
        first.stop()
        _until(server.url, run_id, lambda d: _states(d)["moves"] == ("pending", "node_lost"))
        server.kill()
        server.start()
        time.sleep(3)  # fifteen probe intervals: time enough to place the job by mistake
        document = _get(server.url, f"/runs/{run_id}")
        assert _states(document)["moves"] == ("pending", "node_lost"), document
        assert _assignments(server.url, "moves") == [first.name]
        _back_and_retried(server, run_id, first)
    finally:
        server.kill()


def test_restart_with_node_down(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    """The server and a node go down together: the jobs there may still run, so they
    end node_lost (not server_restarted) and retry once the node is fenced."""
    first, _second, _third = fresh_engines
    server = _server_process(tmp_path, fresh_engines)
    try:
        server.start()
        run_id = _submit_and_run(server.url, source, fresh_engines)
        server.kill()
        first.stop()
        server.start()
        document = _until(server.url, run_id, lambda d: _states(d)["stays"][0] == "failed")
        stays = {job["id"]: job for job in document["jobs"]}["stays"]
        assert stays["reason"] == "node_lost"
        assert f"node {first.name} did not respond" in stays["message"]
        _until(server.url, run_id, lambda d: _states(d)["moves"] == ("pending", "node_lost"))
        jobs = _back_and_retried(server, run_id, first)
        assert jobs["elsewhere"]["state"] == "succeeded", jobs["elsewhere"]
    finally:
        server.kill()


async def test_cordon_drain_uncordon_api(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    first, second, _third = fresh_engines
    async with _serve(_settings(tmp_path, fresh_engines, "fifo")) as cluster:
        response = await cluster.api.post(f"/nodes/{first.name}/cordon")
        assert response.status_code == 200
        assert response.json()["state"] == "cordoned"
        run_id = await cluster.submit(_jobs(1, "echo hi", extra="runs_on: {pool: a}"), source)
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 60)
        assert document["jobs"][0]["node"] == second.name
        await cluster.api.post(f"/nodes/{second.name}/drain")
        run_id = await cluster.submit(_jobs(1, "echo hi", extra="runs_on: {pool: a}"), source)
        with trio.fail_after(30):
            while True:
                jobs = (await cluster.api.get(f"/runs/{run_id}")).json()["jobs"]
                if jobs and jobs[0]["wait_reason"]:
                    job = jobs[0]
                    break
                await trio.sleep(0.1)
        assert job["state"] == "pending"
        assert job["wait_reason"] == "node_unavailable"
        nodes = await cluster.nodes()
        assert nodes[second.name]["state"] == "drained"
        url = f"http://127.0.0.1:{cluster.server.port}"
        listing = await trio.run_process([sys.executable, "-m", "cicd", "nodes", "--server", url],
                                         capture_stdout=True)
        lines = listing.stdout.decode().splitlines()
        assert lines[0].split()[:3] == ["NODE", "STATE", "BREAKER"]
        assert any(line.split()[:3] == [second.name, "drained", "closed"] for line in lines)
        uncordon = await trio.run_process(
            [sys.executable, "-m", "cicd", "uncordon", first.name, "--server", url],
            capture_stdout=True)
        assert uncordon.stdout.decode().startswith(f"node {first.name}: ready")
        document = await wait_for_state(cluster.api, run_id, {"succeeded", "failed"}, 60)
        assert document["jobs"][0]["node"] == first.name
        assert document["jobs"][0]["wait_reason"] == ""


async def test_cicd_run_uses_configured_nodes(
        tmp_path: Path, fresh_engines: list[Engine], source: Path) -> None:
    config = tmp_path / "cicd.toml"
    nodes = "".join(f'[[nodes]]\nname = "{engine.name}"\nhost = "{engine.base_url}"\n'
                    f'labels = {{ pool = "{"b" if index == 2 else "a"}" }}\n'
                    for index, engine in enumerate(fresh_engines))
    config.write_text('[scheduling]\npolicy = "spread"\n' + nodes)
    (source / ".cicd.yml").write_text(
        f"jobs:\n  one: {{image: {BUSYBOX}, steps: [{{run: echo one}}]}}\n"
        f"  two: {{image: {BUSYBOX}, steps: [{{run: echo two}}]}}\n"
        f"  on-b: {{image: {BUSYBOX}, runs_on: {{pool: b}}, steps: [{{run: echo b}}]}}\n")
    report = tmp_path / "report.json"
    completed = await trio.run_process(
        [sys.executable, "-m", "cicd", "run", "--config", str(config), "--db",
         str(tmp_path / "run.db"), "--report", str(report), "-q", str(source)],
        capture_stdout=True, capture_stderr=True, check=False)
    assert completed.returncode == 0, completed.stderr.decode()
    document = json.loads(report.read_text())
    placed = {job["id"]: job["node"] for job in document["jobs"]}
    assert placed["on-b"] == fresh_engines[2].name
    assert {placed["one"], placed["two"]} == {fresh_engines[0].name, fresh_engines[1].name}
    rejected = await trio.run_process(
        [sys.executable, "-m", "cicd", "run", "--config", str(config), "--parallel", "2",
         "--db", str(tmp_path / "run.db"), str(source)],
        capture_stdout=True, capture_stderr=True, check=False)
    assert rejected.returncode == 2
    assert b"--parallel does not apply" in rejected.stderr
