"""A real cicd server for tests: in-process on 127.0.0.1, or as a separate process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from cicd.config import load_settings
from cicd.server.process import Server
from tests.conftest import ROOT


@pytest.fixture
async def server(tmp_path: Path, docker_engine: object) -> AsyncIterator[Server]:
    """An in-process server on a free port, with its own database."""
    settings = load_settings(environ={}, overrides={
        "server.port": 0, "storage.db": str(tmp_path / "server.db"),
        "runs.grace": "2s", "runs.shutdown_grace": "2s",
    })
    instance = Server(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: instance.run(install_signal_handlers=False,
                                                             task_status=task_status))
        yield instance
        instance.request_stop()
        instance.request_stop()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                                 timeout=30) as client:
        yield client


async def wait_for_state(api: httpx.AsyncClient, run_id: str, states: set[str],
                         timeout: float = 60) -> dict[str, object]:
    with trio.fail_after(timeout):
        while True:
            document = (await api.get(f"/runs/{run_id}")).json()
            if document["state"] in states:
                return document
            await trio.sleep(0.1)


class ServerProcess:
    """``cicd serve`` as a child process, for signal and crash tests."""

    def __init__(self, db: Path, log: Path, *extra: str) -> None:
        self.db = db
        self.log_path = log
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self, timeout: float = 30) -> None:
        self.starts += 1
        env = dict(os.environ, PYTHONPATH=str(ROOT), CICD_RUNS_GRACE="2s",
                   CICD_RUNS_SHUTDOWN_GRACE="3s")
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cicd", "-v", "serve", "--port", "0", "--db", str(self.db),
             *self.extra], env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"cicd serving on http://127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            matches = pattern.findall(self.log_path.read_bytes())
            if len(matches) >= self.starts:
                self.port = int(matches[-1])
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"server did not start; log:\n{self.log_path.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self.log.close()
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def server_process(tmp_path: Path, docker_engine: object) -> Iterator[ServerProcess]:
    instance = ServerProcess(tmp_path / "server.db", tmp_path / "server.log")
    yield instance
    instance.kill()
