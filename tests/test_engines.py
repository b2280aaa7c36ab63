"""Tests of the extra-engine harness (tests/engines.py) against real dockerd processes."""

from __future__ import annotations

import subprocess
import time
import uuid

import docker
import docker.errors
import pytest
import requests.exceptions

from tests.engines import SCRIPT, Engine, _process_alive, start_engines

pytest_plugins = ["tests.engines_plugin"]
pytestmark = pytest.mark.docker

BUSYBOX = "busybox:latest"


def _state(client: docker.DockerClient, name: str) -> dict[str, object]:
    container = client.containers.get(name)
    state: dict[str, object] = container.attrs["State"]
    return state


def test_engines_run_echo(fresh_engines: list[Engine]) -> None:
    assert len(fresh_engines) == 3
    for engine in fresh_engines:
        client = engine.client()
        try:
            output = client.containers.run(BUSYBOX, ["echo", f"hello from {engine.name}"],
                                           remove=True)
        finally:
            client.close()
        assert output == f"hello from {engine.name}\n".encode()


def test_engines_have_separate_state(fresh_engines: list[Engine]) -> None:
    infos = []
    for engine in fresh_engines:
        client = engine.client()
        try:
            infos.append(client.info())
        finally:
            client.close()

    root_dirs = [info["DockerRootDir"] for info in infos]
    engine_ids = [info["ID"] for info in infos]
    assert root_dirs == [str(engine.home / "data") for engine in fresh_engines]
    assert "/var/lib/docker" not in root_dirs
    assert len(set(engine_ids)) == len(fresh_engines)
    for engine in fresh_engines:
        assert str(engine.socket_path) != "/var/run/docker.sock"


def test_containers_isolated_per_engine(fresh_engines: list[Engine]) -> None:
    node1, node2, node3 = fresh_engines
    token = uuid.uuid4().hex
    label = f"io.cicd.test.engines={token}"
    client1, client2, client3 = node1.client(), node2.client(), node3.client()
    try:
        container = client1.containers.run(BUSYBOX, ["sleep", "300"], detach=True, init=True,
                                           labels={"io.cicd.test.engines": token})
        assert [c.id for c in client1.containers.list(all=True, filters={"label": label})] == [
            container.id]
        assert client2.containers.list(all=True, filters={"label": label}) == []
        assert client3.containers.list(all=True, filters={"label": label}) == []
        with pytest.raises(docker.errors.NotFound):
            client2.containers.get(container.id)
    finally:
        client1.close()
        client2.close()
        client3.close()


def test_stop_rejects_connections(fresh_engines: list[Engine]) -> None:
    engine = fresh_engines[0]
    client = engine.client(timeout=5)
    try:
        assert client.ping()
        started = time.monotonic()
        engine.stop()
        elapsed = time.monotonic() - started

        assert elapsed < 3, f"stop() took {elapsed:.1f}s"
        assert engine.pid() is None
        assert not engine.accepts_connections()
        with pytest.raises((docker.errors.DockerException, requests.exceptions.ConnectionError)):
            client.ping()
    finally:
        client.close()


def test_start_after_stop_runs_containers(fresh_engines: list[Engine]) -> None:
    engine = fresh_engines[1]
    engine.stop()
    assert not engine.responds()

    started = time.monotonic()
    engine.start()
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"start() took {elapsed:.1f}s"
    assert engine.responds()
    client = engine.client()
    try:
        assert client.containers.run(BUSYBOX, ["echo", "back"], remove=True) == b"back\n"
    finally:
        client.close()


def test_restart_shows_leftover_containers(fresh_engines: list[Engine]) -> None:
    """After SIGKILL of dockerd and a restart, running containers are found and stopped."""
    engine = fresh_engines[2]
    client = engine.client()
    try:
        # docker-init as PID 1 passes SIGTERM on to sleep, which then exits with 143.
        client.containers.run(BUSYBOX, ["sleep", "300"], name="with-init", detach=True,
                              init=True)
        # sleep as PID 1 ignores SIGTERM, so dockerd sends SIGKILL after the stop timeout.
        # containers.run() has no stop_timeout argument, so this one uses the low-level API.
        client.api.create_container(BUSYBOX, ["sleep", "300"], name="ignores-term",
                                    stop_timeout=1)
        client.api.start("ignores-term")
        client.containers.run(BUSYBOX, ["true"], name="exited-before")
        client.containers.run(BUSYBOX, ["sleep", "300"], name="restart-always", detach=True,
                              init=True, restart_policy={"Name": "always"})
        pids = {name: _state(client, name)["Pid"]
                for name in ("with-init", "ignores-term", "restart-always")}
    finally:
        client.close()

    engine.stop()
    # Only dockerd (and its containerd) died: the container processes are still running.
    for name, pid in pids.items():
        assert isinstance(pid, int)
        assert _process_alive(pid), f"{name} (pid {pid}) died with dockerd"

    started = time.monotonic()
    engine.start()
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"start() took {elapsed:.1f}s"

    client = engine.client()
    try:
        with_init = _state(client, "with-init")
        ignores_term = _state(client, "ignores-term")
        exited_before = _state(client, "exited-before")
        restart_always = _state(client, "restart-always")
        names = {c.name for c in client.containers.list(all=True)}
    finally:
        client.close()

    assert names == {"with-init", "ignores-term", "exited-before", "restart-always"}
    assert (with_init["Status"], with_init["ExitCode"]) == ("exited", 143)
    assert (ignores_term["Status"], ignores_term["ExitCode"]) == ("exited", 137)
    assert (exited_before["Status"], exited_before["ExitCode"]) == ("exited", 0)
    assert restart_always["Status"] == "running"
    assert restart_always["Pid"] != pids["restart-always"]
    for name, pid in pids.items():
        assert isinstance(pid, int)
        assert not _process_alive(pid), f"{name} (pid {pid}) still runs after the restart"


def test_stop_kill_containers_leaves_exit_255(fresh_engines: list[Engine]) -> None:
    engine = fresh_engines[0]
    client = engine.client()
    try:
        client.containers.run(BUSYBOX, ["sleep", "300"], name="lost", detach=True, init=True)
        pid = _state(client, "lost")["Pid"]
    finally:
        client.close()
    assert isinstance(pid, int)

    engine.stop(kill_containers=True)
    assert not _process_alive(pid)

    started = time.monotonic()
    engine.start()
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"start() took {elapsed:.1f}s"

    client = engine.client()
    try:
        lost = _state(client, "lost")
    finally:
        client.close()
    assert lost["Status"] == "exited"
    assert lost["ExitCode"] == 255
    assert lost["Running"] is False


def test_start_engines_twice_reuses_engines(fresh_engines: list[Engine]) -> None:
    pids_before = [engine.pid() for engine in fresh_engines]
    base_dir = fresh_engines[0].base_dir

    started = time.monotonic()
    again = start_engines(len(fresh_engines), base_dir)
    elapsed = time.monotonic() - started

    assert [engine.pid() for engine in again] == pids_before
    assert elapsed < 5, f"start_engines() on running engines took {elapsed:.1f}s"


@pytest.mark.parametrize("arguments", [
    ["start", "1", "/var/lib/docker"],
    ["start", "1", "/var/lib/docker/engines"],
    ["start", "1", "/run/containerd"],
    ["start-one", "docker", "/var/lib"],
    ["start-one", "node-1", "/var/lib/docker/../docker"],
])
def test_script_rejects_main_engine_dirs(arguments: list[str]) -> None:
    result = subprocess.run(["bash", str(SCRIPT), *arguments],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "which the main engine uses" in result.stderr
