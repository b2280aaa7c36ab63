"""Live log frames that the feed's task writes to many clients at a tick, against a
real server on 127.0.0.1, with one client too slow for them."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.extensions import PerMessageDeflate

from cicd.api import server as api_server
from cicd.console import feeds
from cicd.console.protocol import decode_log_frame, websocket_frame
from cicd.server.process import Server
from tests.console.test_compression import Client, collect, connect, receive
from tests.console.test_socket import full_log, submit, wait_state

pytestmark = pytest.mark.timeout(90)

# About 4 MB of numbered 80-byte lines over about 2.5 s, after half a second.
STREAM_PIPELINE = """
version: 1
jobs:
  talk:
    image: none
    steps:
      - run: |
          sleep 0.5
          python3 -c "
          import sys, time
          for chunk in range(50):
              for line in range(1000):
                  sys.stdout.write(f'{chunk * 1000 + line:07d} '.ljust(79, 'x') + '\\\\n')
              sys.stdout.flush()
              time.sleep(0.05)
          "
"""
FAST_CLIENTS = 8
DEFLATE_CLIENTS = 4


async def connect_slow(port: int) -> Client:
    """Connect with a 16 KiB receive buffer, so the server's writes soon find the
    socket full while the client reads nothing."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    await sock.connect(("127.0.0.1", port))
    client = Client(trio.SocketStream(sock), WSConnection(ConnectionType.CLIENT))
    await client.stream.send_all(client.connection.send(Request(
        host=f"127.0.0.1:{port}", target="/api/v1/console")))
    hello = await receive(client)
    assert hello["type"] == "hello"
    return client


async def follow_slowly(client: Client, run_id: str, results: dict[str, Any]) -> None:
    """Read at full speed until a frame reaches the output's end, then nothing for 1 s,
    then a message every 0.2 s. After each resync, subscribe again from its offset."""
    data = b""
    resyncs = 0
    caught_up = False
    while True:
        await client.send(type="subscribe", sub="slow", topic="log", run_id=run_id,
                          job_id="talk", step="1", offset=len(data))
        while True:
            raw = await client.message()
            if isinstance(raw, str):
                message = json.loads(raw)
                if message["type"] == "ping":
                    continue
                break
            header, chunk = decode_log_frame(raw)
            assert header.sub == "slow", header
            assert header.offset == len(data), "a gap or an overlap between frames"
            data += chunk
            if not caught_up and header.offset + len(chunk) == header.size:
                # The subscription now waits for the feed's next tick, so the feed's
                # task writes the next frames and finds the socket full.
                caught_up = True
                await trio.sleep(1.0)
            elif caught_up:
                await trio.sleep(0.2)
        assert message.get("sub") == "slow", message
        if message["type"] == "log_end":
            assert message["size"] == len(data)
            break
        assert message["type"] == "resync", message
        assert message["offset"] == len(data)
        resyncs += 1
    results["slow"] = data
    results["resyncs"] = resyncs


async def follow(client: Client, run_id: str, name: str, results: dict[str, Any]) -> None:
    await client.send(type="subscribe", sub="log", topic="log", run_id=run_id,
                      job_id="talk", step="1", offset=0)
    data, _, _ = await collect(client, "log", 0)
    results[name] = data


async def test_tick_frames_reach_every_client(local_server: Server, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A small shared tail, so the slow client falls out of it.
    monkeypatch.setattr(feeds, "RING_BYTES", 256 * 1024)
    writers: list[api_server.FrameWriter] = []
    init = api_server.FrameWriter.__init__

    def capture_writer(self: api_server.FrameWriter, stream: Any) -> None:
        init(self, stream)
        writers.append(self)

    monkeypatch.setattr(api_server.FrameWriter, "__init__", capture_writer)
    outcomes: list[bool] = []
    send_nowait = api_server.FrameWriter.send_nowait

    def record_send_nowait(self: api_server.FrameWriter, frame: bytes) -> bool:
        sent = send_nowait(self, frame)
        outcomes.append(sent)
        return sent

    monkeypatch.setattr(api_server.FrameWriter, "send_nowait", record_send_nowait)
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, STREAM_PIPELINE)
    await wait_state(port, run_id, {"running"})
    results: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        for index in range(FAST_CLIENTS + DEFLATE_CLIENTS):
            extensions = [PerMessageDeflate()] if index >= FAST_CLIENTS else []
            client = await connect(port, extensions)
            nursery.start_soon(follow, client, run_id, f"client{index}", results)
        slow = await connect_slow(port)
        # A fixed send buffer on the server's side as well: Linux would grow it to
        # hold the frames of the whole pause.
        server_socket = writers[-1]._server.stream.socket  # type: ignore[union-attr]
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        nursery.start_soon(follow_slowly, slow, run_id, results)
    await wait_state(port, run_id, {"succeeded"})

    whole = await full_log(port, run_id)
    assert len(whole) == 50 * 1000 * 80
    for index in range(FAST_CLIENTS + DEFLATE_CLIENTS):
        assert results[f"client{index}"] == whole, f"client{index} got other bytes"
    assert results["slow"] == whole
    # The feed's task wrote frames. The slow client fell out of the shared tail during
    # its pause, whichever task was writing to it then, and resumed without a gap.
    assert outcomes.count(True) > 0
    assert results["resyncs"] >= 1


async def test_partly_written_frame_goes_first(local_server: Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[api_server.FrameWriter] = []
    init = api_server.FrameWriter.__init__

    def capture_writer(self: api_server.FrameWriter, stream: Any) -> None:
        init(self, stream)
        writers.append(self)

    monkeypatch.setattr(api_server.FrameWriter, "__init__", capture_writer)
    partial_writes: list[int] = []
    send_rest = api_server.FrameWriter._send_rest

    async def record_send_rest(server: Any, lock: trio.Semaphore, rest: memoryview) -> None:
        partial_writes.append(len(rest))
        await send_rest(server, lock, rest)

    monkeypatch.setattr(api_server.FrameWriter, "_send_rest", staticmethod(record_send_rest))
    port = local_server.port
    assert port is not None
    client = await connect_slow(port)
    writer = writers[-1]
    # The client may read the hello before the server's task releases the send lock.
    await trio.testing.wait_all_tasks_blocked()
    # More than the largest send buffer of tcp_wmem (4 MiB by default), so the socket
    # takes only part of it while the client reads nothing.
    payload = os.urandom(8 * 1024 * 1024)
    big = websocket_frame((payload,), binary=True)
    assert writer.send_nowait(big)
    assert not writer.send_nowait(websocket_frame((b"early",), binary=True))
    messages: list[str | bytes] = []

    async def read_two() -> None:
        for _ in range(2):
            messages.append(await client.message())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_two)
        with trio.fail_after(30):
            await writer.send(websocket_frame((b'{"type": "ping", "ts": 1}',), binary=False))
    assert len(partial_writes) == 1
    assert messages[0] == payload
    assert messages[1] == '{"type": "ping", "ts": 1}'
    assert writer.send_nowait(websocket_frame((b"later",), binary=True))


@pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="no TCP_NOTSENT_LOWAT")
async def test_send_nowait_raises_notsent_lowat(local_server: Server,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[api_server.FrameWriter] = []
    init = api_server.FrameWriter.__init__

    def capture_writer(self: api_server.FrameWriter, stream: Any) -> None:
        init(self, stream)
        writers.append(self)

    monkeypatch.setattr(api_server.FrameWriter, "__init__", capture_writer)
    port = local_server.port
    assert port is not None
    client = await connect_slow(port)
    writer = writers[-1]
    await trio.testing.wait_all_tasks_blocked()
    server_socket = writer._server.stream.socket  # type: ignore[union-attr]

    def lowat() -> int:
        return int(server_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))

    assert lowat() == 16 * 1024  # trio's default for its socket streams
    assert writer.send_nowait(websocket_frame((b"first",), binary=True))
    assert lowat() == api_server.NOTSENT_LOWAT_BYTES
    assert await client.message() == b"first"
