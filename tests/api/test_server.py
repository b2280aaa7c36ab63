"""serve(): port 0, shutdown, WebSocket pings, bind errors."""

from __future__ import annotations

import functools
import socket

import httpx
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request

from cicd.api import create_app, serve
from tests.api.conftest import HOST
from tests.api.fake_service import FakeRunService

pytestmark = pytest.mark.timeout(30)


async def test_serve_reports_bound_port_and_stops() -> None:
    stop = trio.Event()
    app = create_app(FakeRunService())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(
                serve, app, host=HOST, port=0, shutdown_trigger=stop.wait))
            assert port > 0
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://{HOST}:{port}/healthz")
            assert response.status_code == 200
            stop.set()
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, port)


async def test_serve_two_servers_get_different_ports() -> None:
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ports = [
                await nursery.start(functools.partial(
                    serve, create_app(FakeRunService()), host=HOST, port=0,
                    shutdown_trigger=stop.wait))
                for _ in range(2)
            ]
            stop.set()
    assert ports[0] != ports[1]


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback on this machine")
async def test_serve_ipv6_loopback() -> None:
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(
                serve, create_app(FakeRunService()), host="::1", port=0,
                shutdown_trigger=stop.wait))
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://[::1]:{port}/healthz")
            assert response.status_code == 200
            stop.set()


async def test_serve_port_in_use_raises() -> None:
    listener = trio.socket.socket()
    with listener:
        await listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                with pytest.raises(OSError, match="in use"):
                    await nursery.start(functools.partial(
                        serve, create_app(FakeRunService()), host=HOST, port=port,
                        shutdown_trigger=trio.sleep_forever))


async def test_serve_pings_idle_websocket() -> None:
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(
                serve, create_app(FakeRunService()), host=HOST, port=0,
                shutdown_trigger=stop.wait, websocket_ping_interval=0.1, graceful_timeout=0.5))
            connection = WSConnection(ConnectionType.CLIENT)
            stream = await trio.open_tcp_stream(HOST, port)
            async with stream:
                await stream.send_all(connection.send(
                    Request(host=f"{HOST}:{port}", target="/api/v1/events/stream")))
                accepted, pings = False, 0
                while pings < 2:
                    connection.receive_data(await stream.receive_some())
                    for event in connection.events():
                        accepted = accepted or isinstance(event, AcceptConnection)
                        pings += isinstance(event, Ping)
            assert accepted
            stop.set()
