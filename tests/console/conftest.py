"""Real servers for the console tests: in-process (local executor) and ``cicd serve``
subprocesses, a headless Chromium, and a folder of screenshots the run keeps."""

from __future__ import annotations

import functools
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import cicd.api.server
from cicd.config import load_settings
from cicd.server.process import Server
from tests.conftest import ROOT
from tests.server.conftest import ServerProcess

CHROMIUM = os.environ.get("CICD_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "console-screenshots"


def _missing(message: str) -> None:
    """Fail under CI=true (the browser tests are part of CI), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
async def local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    """An in-process server on a free port whose steps run as host processes."""
    # No WebSocket pings from hypercorn: its ping task sleeps a full interval after its
    # WebSocket closed, which delays every shutdown by the graceful timeout (5 s). The
    # console sends its own ping messages, which these tests skip over.
    monkeypatch.setattr(cicd.api.server, "serve",
                        functools.partial(cicd.api.server.serve, websocket_ping_interval=None))
    settings = load_settings(environ={}, overrides={
        "server.port": 0, "storage.db": str(tmp_path / "server.db"), "runs.executor": "local",
        "runs.grace": "2s", "runs.shutdown_grace": "1s",
    })
    instance = Server(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: instance.run(install_signal_handlers=False,
                                                             task_status=task_status))
        yield instance
        instance.request_stop()
        instance.request_stop()


def free_port() -> int:
    """Return a port that was free a moment ago, for a server that must restart on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def console_server(tmp_path: Path, docker_engine: object) -> Iterator[ServerProcess]:
    """``cicd serve`` with the Docker executor, on a port chosen once so it can restart."""
    instance = ServerProcess(tmp_path / "server.db", tmp_path / "server.log")
    port = free_port()
    instance.extra = ("--port", str(port))
    yield instance
    instance.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the browser tests need Playwright: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        _missing(f"the browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-background-networking"])
        yield instance
        instance.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Any:
    """Save a screenshot of a page as test-artifacts/console-screenshots/TEST-NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
