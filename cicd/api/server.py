"""Serving the API with hypercorn inside the current Trio run."""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.protocol.events import Data
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart_trio import QuartTrio
from wsproto.extensions import PerMessageDeflate

from cicd.api.state import EXTENSION, ApiState
from cicd.concurrency import single_error

logger = logging.getLogger("cicd.api")

# Idle WebSockets (an event stream with no new events) get a ping this often, so proxies
# keep them open and a vanished client is noticed when the ping cannot be sent.
# NOTE: hypercorn 0.18's ping task sleeps a whole interval before it checks whether
# its WebSocket closed, so a shutdown soon after a WebSocket closed waits up to the
# graceful timeout.
WEBSOCKET_PING_SECONDS = 20.0

# How long open requests and WebSockets may take to finish after shutdown begins.
GRACEFUL_TIMEOUT_SECONDS = 5.0

# The ASGI scope extension (``scope["extensions"][SEND_FRAME_EXTENSION]``) that
# :func:`offer_frame_send` adds to WebSocket scopes: an async function that writes one
# complete, already framed server-to-client WebSocket frame (RFC 6455 section 5.2).
SEND_FRAME_EXTENSION = "cicd.websocket.send_frame"
# The ASGI scope extension that :func:`offer_frame_send` adds next to it: a function that
# returns, once the WebSocket was accepted, the ``server_max_window_bits`` (9 to 15) of
# the permessage-deflate extension (RFC 7692) the connection negotiated, or None.
DEFLATE_EXTENSION = "cicd.websocket.deflate_window_bits"
# The ASGI scope extension that :func:`offer_frame_send` adds next to them: a function
# that writes one complete frame, as ``send_frame`` does, but only when it can without
# waiting (see :meth:`FrameWriter.send_nowait`). It returns True when it took the frame.
SEND_FRAME_NOWAIT_EXTENSION = "cicd.websocket.send_frame_nowait"
# The unsent bytes a connection's socket takes before a write stops short, once
# FrameWriter.send_nowait wrote to it (TCP_NOTSENT_LOWAT, Linux and macOS). Trio sets 16
# KiB, so once a client's receive window was full, every 100 KB frame of a busy log
# stopped short and cost a task that waits for the socket. The kernel's send buffer
# (tcp_wmem, at most 4 MiB by default) still bounds the memory per connection.
NOTSENT_LOWAT_BYTES = 1024 * 1024


async def serve(
    app: QuartTrio,
    *,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    websocket_ping_interval: float | None = WEBSOCKET_PING_SECONDS,
    graceful_timeout: float = GRACEFUL_TIMEOUT_SECONDS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns.

    Calls ``task_status.started(port)`` with the bound port once the socket listens,
    so ``port=0`` picks a free one. WebSockets get a ping every
    ``websocket_ping_interval`` seconds (None: no pings). When ``shutdown_trigger``
    returns, WebSocket streams close with code 1001 at once; other requests get
    ``graceful_timeout`` seconds to finish before they are cancelled.

    Raises ``OSError`` when the address cannot be bound.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_ping_interval = websocket_ping_interval
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    # One request log line comes from cicd.api; hypercorn's own errors go to a named
    # logger so that only the composition root configures handlers.
    config.accesslog = None
    config.errorlog = logging.getLogger("cicd.api.server")

    state = app.extensions.get(EXTENSION)

    async def trigger() -> None:
        await shutdown_trigger()
        logger.info("API server on port %d is shutting down", bound_port)
        if isinstance(state, ApiState):
            state.drain.start()

    bound_port = port
    # hypercorn nests its errors in exception groups; callers want the OSError of a
    # failed bind itself.
    with single_error():
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(functools.partial(
                hypercorn_serve, shield_response_end(offer_frame_send(app)), config,
                shutdown_trigger=trigger
            ))
            bound_port = int(binds[0].rsplit(":", 1)[1])
            logger.info("API server listening on %s", ", ".join(binds))
            task_status.started(bound_port)
    logger.info("API server on port %d stopped", bound_port)


def shield_response_end(app: ASGIFramework) -> ASGIFramework:
    """Wrap ``app`` so that no cancellation interrupts the last send of an HTTP response.

    In that send (``http.response.body`` without ``more_body``), hypercorn 0.18 sends
    ``http.disconnect`` to the application. Then it readies the connection for the next
    request and restarts its keep-alive timer, or it closes the connection when the
    request body has not fully arrived. quart-trio 0.12 cancels the request's tasks on
    ``http.disconnect``, and that cancelled the rest of hypercorn's work. A response
    sent before the body arrived then left the connection open but unread, so the next
    request on it got no response, and idle connections never timed out. The socket
    writes are the only steps there that wait on the client, and hypercorn shields
    them already.
    """

    async def shielded_app(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_shielded_end(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await app(scope, receive, send_with_shielded_end)

    return shielded_app


def offer_frame_send(app: ASGIFramework) -> ASGIFramework:
    """Wrap ``app`` so that WebSocket scopes offer :data:`SEND_FRAME_EXTENSION`.

    A message sent through ASGI goes through wsproto, which copies the payload four
    times and builds the frame header in Python, for each client. A server that sends
    the same message to many clients can frame it once and pass the same bytes to each
    client's ``send_frame``. The bytes go to hypercorn's stream as its own WebSocket
    data does, under the connection's send lock, so they never interleave with
    hypercorn's pings or close frames. An unmasked frame with RSV1 clear is valid
    whether or not permessage-deflate was negotiated (RFC 7692 section 6: such a
    message is not compressed). A frame with RSV1 set is valid only when
    :data:`DEFLATE_EXTENSION` returns a window size, and then only when the caller
    sends no message through ASGI's send, which wsproto compresses with a window that
    does not contain the caller's messages. After the WebSocket closed, ``send_frame``
    does nothing, as ASGI's send does. :data:`SEND_FRAME_NOWAIT_EXTENSION` offers the
    same write without waiting (:meth:`FrameWriter.send_nowait`), so one task can write
    a frame to many clients.

    NOTE: this reads hypercorn 0.18's ``WSStream`` (the object behind its ASGI send
    callable). With another server or version the extension is simply absent, and
    callers fall back to ASGI's send.
    """

    async def app_with_frame_send(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        stream = getattr(send, "__self__", None)
        if scope["type"] == "websocket" and isinstance(stream, WSStream):
            writer = FrameWriter(stream)

            def deflate_window_bits() -> int | None:
                # NOTE: wsproto 1.3 keeps the negotiated extensions only in the private
                # ``_proto.extensions``. Without it, callers send uncompressed frames.
                connection = getattr(stream, "connection", None)
                negotiated = getattr(getattr(connection, "_proto", None), "extensions", ())
                for extension in negotiated:
                    if isinstance(extension, PerMessageDeflate) and extension.enabled():
                        return extension.server_max_window_bits
                return None

            extensions: dict[str, Any] = dict(scope.get("extensions") or {})
            extensions[SEND_FRAME_EXTENSION] = writer.send
            extensions[SEND_FRAME_NOWAIT_EXTENSION] = writer.send_nowait
            extensions[DEFLATE_EXTENSION] = deflate_window_bits
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return app_with_frame_send


class FrameWriter:
    """Writes complete WebSocket frames to one WebSocket of hypercorn 0.18.

    :meth:`send` passes the frame to hypercorn's stream, which writes it under the
    connection's send lock. :meth:`send_nowait` writes it to the socket in the calling
    task, without a task switch. It needs the connection's TCP socket without TLS, and
    swaps the connection's ``send_lock`` (a ``trio.Lock``, which only the task that
    acquired it may release) for a ``trio.Semaphore(1)``. Both allow one writer at a
    time and queue the others in order, but a semaphore acquired by this call can be
    released by the task that writes the rest of a partly written frame.
    """

    def __init__(self, stream: WSStream) -> None:
        self._stream = stream
        self._server: TCPServer | None = None
        self._send_lock: trio.Semaphore | None = None
        self._lowat_raised = False
        # NOTE: this reads hypercorn 0.18's objects: WSStream.send is
        # H11Protocol.stream_send, whose send is TCPServer.protocol_send. With another
        # protocol (HTTP/2), TLS or version, only ``send`` is available.
        protocol = getattr(stream.send, "__self__", None)
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        if (isinstance(protocol, H11Protocol) and isinstance(server, TCPServer)
                and isinstance(server.stream, trio.SocketStream)):
            lock = server.send_lock
            if isinstance(lock, trio.Semaphore):
                self._send_lock = lock
            elif isinstance(lock, trio.Lock) and not lock.locked():
                self._send_lock = server.send_lock = trio.Semaphore(1, max_value=1)
            self._server = server

    def _open(self) -> bool:
        return not self._stream.closed and self._stream.state == ASGIWebsocketState.CONNECTED

    async def send(self, frame: bytes) -> None:
        """Write one whole, already framed server-to-client WebSocket frame; do nothing
        once the WebSocket closed."""
        if self._open():
            await self._stream.send(Data(stream_id=self._stream.stream_id, data=frame))

    def send_nowait(self, frame: bytes) -> bool:
        """Write ``frame`` now if no other write to the connection is in progress or
        queued; return True when the socket took at least part of it.

        When the socket took only part of the frame, a system task writes the rest
        before the send lock lets any other frame through. Returns False, having
        written nothing, when the socket is full, the WebSocket closed or the write
        failed. The caller then sends the frame with :meth:`send`, which waits its turn.
        The first call raises the socket's TCP_NOTSENT_LOWAT to
        :data:`NOTSENT_LOWAT_BYTES`.
        """
        lock, server = self._send_lock, self._server
        if lock is None or server is None or lock.value == 0 or not self._open():
            return False
        if not self._lowat_raised:
            self._lowat_raised = True
            option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
            if option is not None:
                try:
                    server.stream.setsockopt(socket.IPPROTO_TCP, option, NOTSENT_LOWAT_BYTES)
                except OSError as exc:
                    logger.debug("raising TCP_NOTSENT_LOWAT failed: %r", exc)
        # No other task runs until this returns, so a whole write needs no lock.
        try:
            written = os.write(server.stream.socket.fileno(), frame)
        except OSError:  # BlockingIOError (a full socket), or a broken connection
            return False
        if written < len(frame):
            lock.acquire_nowait()  # free, as checked above: the rest goes before others
            trio.lowlevel.spawn_system_task(self._send_rest, server, lock,
                                            memoryview(frame)[written:])
        return True

    @staticmethod
    async def _send_rest(server: TCPServer, lock: trio.Semaphore, rest: memoryview) -> None:
        try:
            await server.stream.send_all(rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError,
                trio.BusyResourceError) as exc:
            # The connection broke, or is closing while hypercorn's send_eof uses the
            # stream. hypercorn's read loop and its next write see that and close the
            # WebSocket. An error raised out of a system task would stop the server.
            logger.debug("writing the rest of a WebSocket frame failed: %r", exc)
        finally:
            lock.release()
