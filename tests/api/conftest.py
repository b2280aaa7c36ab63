"""A real hypercorn server on 127.0.0.1, port 0, serving the API over the fake service."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import trio

from cicd.api import create_app, serve
from tests.api.fake_service import FakeRunService

HOST = "127.0.0.1"


@dataclass
class RunningApi:
    service: FakeRunService
    port: int
    client: httpx.AsyncClient
    stop: trio.Event

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"


@pytest.fixture
async def api() -> AsyncIterator[RunningApi]:
    service = FakeRunService()
    app = create_app(service, server_names=["127.0.0.1", "localhost", "::1", "ci.example.test"])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(
            serve, app, host=HOST, port=0, shutdown_trigger=stop.wait, graceful_timeout=2.0,
        ))
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            yield RunningApi(service=service, port=port, client=client, stop=stop)
        stop.set()
