"""serve(): port 0, shutdown, WebSocket pings, bind errors, keep-alive connections."""

from __future__ import annotations

import functools
import socket

import httpx
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request

from cicd.api import create_app, serve
from cicd.api.responses import MAX_BODY_BYTES
from tests.api.conftest import HOST, RunningApi
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


NEXT_REQUEST = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


async def _receive_response(stream: trio.SocketStream, received: bytearray) -> bytes | None:
    """Read one response from ``stream`` and return its head, or None at end of stream.

    ``received`` buffers the bytes read past one response. A reset ends the stream too.
    """
    try:
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some()
            if not chunk:
                return None
            received += chunk
        head, _, _ = bytes(received).partition(b"\r\n\r\n")
        lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        end = len(head) + 4 + int(lengths[0])
        while len(received) < end:
            chunk = await stream.receive_some()
            if not chunk:
                return None
            received += chunk
    except trio.BrokenResourceError:
        return None
    del received[:end]
    return head


@pytest.mark.parametrize(("headers", "status"), [
    pytest.param(b"Content-Type: application/json\r\nIdempotency-Key: not visible\r\n",
                 b" 400 ", id="invalid-idempotency-key"),
    pytest.param(b"Content-Type: text/plain\r\n", b" 415 ", id="not-json"),
    pytest.param(b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                 % (MAX_BODY_BYTES + 1), b" 413 ", id="body-too-large"),
])
async def test_serve_early_response_does_not_stall(
    api: RunningApi, headers: bytes, status: bytes
) -> None:
    # The server rejects these requests from their headers alone. The client sends the
    # body only after the response and then a second request on the same connection, as
    # a keep-alive client whose body was delayed does. The server must respond to the
    # second request or close the connection. Before the fix it did neither.
    body = b'{"source": {}}'
    if b"Content-Length" not in headers:
        headers += b"Content-Length: %d\r\n" % len(body)
    stream = await trio.open_tcp_stream(HOST, api.port)
    received = bytearray()
    async with stream:
        await stream.send_all(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (HOST.encode(), headers))
        with trio.fail_after(5):
            first = await _receive_response(stream, received)
        assert first is not None
        assert status in first.split(b"\r\n", 1)[0]

        # Client and server share this Trio run. Waiting until every task is blocked lets
        # the server finish the first request before the body arrives, as a remote client
        # that sends its body late does.
        await trio.testing.wait_all_tasks_blocked()
        try:
            await stream.send_all(body + NEXT_REQUEST)
        except trio.BrokenResourceError:
            pass  # the server already closed the connection, which is a valid outcome
        with trio.move_on_after(5) as waiting:
            second = await _receive_response(stream, received)
        assert not waiting.cancelled_caught, (
            "the server neither responded to the next request on the connection nor closed it")
        if second is not None:
            assert b" 200 " in second.split(b"\r\n", 1)[0]


async def test_serve_closes_idle_keep_alive_connection(api: RunningApi) -> None:
    # serve() leaves hypercorn's keep_alive_timeout at its default, 5 s in hypercorn 0.18.
    stream = await trio.open_tcp_stream(HOST, api.port)
    received = bytearray()
    async with stream:
        await stream.send_all(NEXT_REQUEST)
        with trio.fail_after(5):
            head = await _receive_response(stream, received)
        assert head is not None
        assert b" 200 " in head.split(b"\r\n", 1)[0]

        with trio.move_on_after(10) as waiting:
            after_idle = await _receive_response(stream, received)
        assert not waiting.cancelled_caught, "the server kept an idle connection open for 10 s"
        assert after_idle is None
