"""Shared fixtures: a Docker engine that must respond in CI, temp databases, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import docker.errors
import pytest
import requests.exceptions

ROOT = Path(__file__).resolve().parents[1]
BUSYBOX = os.environ.get("CICD_TEST_BUSYBOX", "busybox:latest")
PYTHON_IMAGE = os.environ.get("CICD_TEST_PYTHON_IMAGE", "cicd-python:bookworm")

_engine_error: str | None = None
_engine_checked = False


def _engine_problem() -> str | None:
    global _engine_checked, _engine_error
    if not _engine_checked:
        _engine_checked = True
        try:
            client = docker.from_env(timeout=10)
            client.ping()
            client.close()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            _engine_error = f"no Docker engine responds: {exc}"
    return _engine_error


def require_docker() -> None:
    """Fail under CI=true, skip elsewhere, when no Docker engine responds."""
    problem = _engine_problem()
    if problem is None:
        return
    message = f"{problem}; run `bash .ci/docker-setup` first"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_image(image: str) -> None:
    require_docker()
    client = docker.from_env(timeout=10)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        message = f"image {image} is missing; `bash .ci/docker-setup` builds it"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    finally:
        client.close()


@pytest.fixture
def docker_engine() -> docker.DockerClient:
    require_image(BUSYBOX)
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cicd.db"


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m cicd ARGS`` as a real process and capture its output."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "cicd", *args], cwd=cwd, env=full_env,
                          capture_output=True, timeout=timeout, check=False)


def labelled_objects(client: docker.DockerClient, run_id: str | None = None) -> list[str]:
    """Return names of containers, volumes and networks cicd labelled (for one run)."""
    label = f"io.cicd.run={run_id}" if run_id else "io.cicd.managed"
    names = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    names += [v.name for v in client.volumes.list(filters={"label": label})]
    names += [n.name for n in client.networks.list(filters={"label": label})]
    return names
