"""pytest plugin with fixtures for extra Docker engines ("nodes") on this machine.

Load it once for the whole session, with this line in tests/conftest.py or in a test
module::

    pytest_plugins = ["tests.engines_plugin"]

``engines`` starts CICD_TEST_ENGINE_COUNT engines (default 3) on first use and stops
them at the end of the session. ``fresh_engines`` gives a test those engines running
and without containers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker.errors
import pytest

from tests.engines import DEFAULT_BASE_DIR, Engine, EngineError, start_engines, stop_engines

ENGINE_COUNT = int(os.environ.get("CICD_TEST_ENGINE_COUNT", "3"))


def require_engine_host() -> None:
    """Fail under CI=true, skip elsewhere, when this machine cannot run extra engines."""
    problem = None
    if shutil.which("dockerd") is None:
        problem = "dockerd is not installed; `bash .ci/docker-setup` installs it"
    elif shutil.which("docker") is None:
        problem = "the docker CLI is not installed; `bash .ci/docker-setup` installs it"
    elif os.geteuid() != 0:
        problem = "extra Docker engines need root, because dockerd runs as root"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


@contextmanager
def _exclusive_base_dir(base_dir: Path) -> Iterator[tuple[Path, bool]]:
    """Lock BASE_DIR for this session, or fall back to a private directory.

    Yields the directory to use and whether it is private. A second pytest session on
    the same machine gets the private directory, so it never stops or cleans the
    engines of the first one.
    """
    base_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(base_dir.parent / f"{base_dir.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield base_dir.with_name(f"{base_dir.name}-{os.getpid()}"), True
        else:
            yield base_dir, False


def _remove_private_dir(base_dir: Path) -> None:
    # A data root that is still mounted would make rmtree delete through the mount.
    if any(os.path.ismount(home / "data") for home in base_dir.iterdir() if home.is_dir()):
        return
    shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def engines() -> Iterator[list[Engine]]:
    """Running extra engines node-1..node-N with busybox:latest and no containers."""
    require_engine_host()
    with _exclusive_base_dir(DEFAULT_BASE_DIR) as (base_dir, private):
        try:
            started = start_engines(ENGINE_COUNT, base_dir)
            # Containers can be left over from a session that was killed.
            for engine in started:
                engine.remove_all_containers()
        except (EngineError, docker.errors.DockerException) as exc:
            message = str(exc)
            try:
                stop_engines(base_dir)
            except EngineError as stop_exc:
                message += f"\nstopping the engines afterwards failed too: {stop_exc}"
            pytest.fail(message, pytrace=False)

        try:
            yield started
        finally:
            try:
                for engine in started:
                    # A test may leave an engine killed with containers still running under
                    # their shims. Only a running dockerd can stop and remove them.
                    if not engine.responds():
                        engine.start()
                    # Without containers to stop, each dockerd exits within about a second.
                    engine.remove_all_containers()
            finally:
                stop_engines(base_dir)
                if private:
                    _remove_private_dir(base_dir)


@pytest.fixture
def fresh_engines(engines: list[Engine]) -> list[Engine]:
    """The session's engines, each started again if a test stopped it, with no containers."""
    for engine in engines:
        engine.thaw()  # a test that froze it may have failed before it thawed it
        if not engine.responds():
            engine.start()
        engine.remove_all_containers()
    return engines
