"""A real hypercorn server on 127.0.0.1, port 0, serving the API over the fake service."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

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
        # No pings here: hypercorn's ping task sleeps a full interval after its WebSocket
        # closed, which would hold every shutdown for the graceful timeout.
        port = await nursery.start(functools.partial(
            serve, app, host=HOST, port=0, shutdown_trigger=stop.wait, graceful_timeout=2.0,
            websocket_ping_interval=None,
        ))
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            yield RunningApi(service=service, port=port, client=client, stop=stop)
        stop.set()


async def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send raw request bytes to the server and return the response head and body.

    For requests httpx cannot send: no Host header, or a WebSocket handshake whose Host
    differs from the address connected to. Reads until Content-Length bytes of body.
    """
    stream = await trio.open_tcp_stream(HOST, port)
    received = b""
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(5):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some()
            head, _, body = received.partition(b"\r\n\r\n")
            lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")]
            while len(body) < int(lengths[0]):
                body += await stream.receive_some()
    return head, body


def close_of(error: ConnectionClosed) -> tuple[int, str]:
    """Return the close code and reason the server sent."""
    assert error.reason is not None
    return error.reason.code, error.reason.reason or ""
