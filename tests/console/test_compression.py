"""The console WebSocket with and without permessage-deflate (RFC 7692), through a
wsproto client that negotiates it as browsers do, against a real server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from cicd.console.protocol import decode_log_frame
from cicd.server.process import Server
from tests.console.test_socket import full_log, submit, wait_state

pytestmark = pytest.mark.timeout(60)

# 3,000 lines of 80 bytes, then a 4,000-byte random block twice: the second copy is
# more than a 1 KiB window (server_max_window_bits=10) after the first.
COMPRESSIBLE_PIPELINE = """
version: 1
name: compressible
jobs:
  talk:
    image: none
    steps:
      - name: count
        run: |
          python3 -c '
          import os, sys, time
          for index in range(3000):
              sys.stdout.write(f"{index:08d} compiling module {index % 17} of the build [ok]".ljust(79) + "\\n")
              if index % 300 == 0:
                  sys.stdout.flush()
                  time.sleep(0.05)
          block = os.urandom(2000).hex() + "\\n"
          sys.stdout.write(block + block)
          '
"""


class Client:
    """A WebSocket client on wsproto that counts the bytes it reads from the socket."""

    def __init__(self, stream: trio.SocketStream, connection: WSConnection) -> None:
        self.stream = stream
        self.connection = connection
        self.wire_bytes = 0
        self.accepted: AcceptConnection | None = None
        self._text = ""
        self._bytes = b""
        self._messages: list[str | bytes] = []

    async def _read(self) -> None:
        data = await self.stream.receive_some(1 << 16)
        assert data, "the server closed the connection"
        self.wire_bytes += len(data)
        self.connection.receive_data(data)
        for event in self.connection.events():
            if isinstance(event, AcceptConnection):
                self.accepted = event
            elif isinstance(event, TextMessage):
                self._text += event.data
                if event.message_finished:
                    self._messages.append(self._text)
                    self._text = ""
            elif isinstance(event, BytesMessage):
                self._bytes += event.data
                if event.message_finished:
                    self._messages.append(self._bytes)
                    self._bytes = b""
            elif isinstance(event, Ping):
                await self.stream.send_all(self.connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                pytest.fail(f"the server closed the WebSocket: {event.code} {event.reason}")
            else:
                pytest.fail(f"unexpected WebSocket event {event!r}")

    async def message(self) -> str | bytes:
        with trio.fail_after(30):
            while not self._messages:
                await self._read()
        return self._messages.pop(0)

    async def send(self, **message: Any) -> None:
        await self.stream.send_all(self.connection.send(TextMessage(data=json.dumps(message))))


async def connect(port: int, extensions: list[PerMessageDeflate]) -> Client:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = Client(stream, WSConnection(ConnectionType.CLIENT))
    await stream.send_all(client.connection.send(Request(
        host=f"127.0.0.1:{port}", target="/api/v1/console", extensions=extensions)))
    hello = json.loads(await client.message())
    assert client.accepted is not None
    assert hello["type"] == "hello"
    return client


async def receive(client: Client) -> dict[str, Any]:
    """Return the next message other than a ping; a log frame becomes a dict."""
    while True:
        raw = await client.message()
        if isinstance(raw, bytes):
            header, data = decode_log_frame(raw)
            return {"type": "log", "sub": header.sub, "offset": header.offset, "data": data}
        message = json.loads(raw)
        if message["type"] != "ping":
            return dict(message)


async def collect(client: Client, sub: str, offset: int) -> tuple[bytes, int, list[str]]:
    """Receive ``sub``'s log frames until its log_end, checking that they join up from
    ``offset``; return the bytes, the message bytes, and the other messages' types."""
    data = b""
    message_bytes = 0
    others = []
    while True:
        message = await receive(client)
        if message.get("sub") != sub:
            others.append(message["type"])
            continue
        if message["type"] == "log_end":
            assert message["size"] == offset + len(data)
            return data, message_bytes, others
        assert message["type"] == "log", message
        assert message["offset"] == offset + len(data), "a gap or an overlap between frames"
        data += message["data"]
        message_bytes += len(message["data"])


def negotiated(client: Client) -> list[str]:
    assert client.accepted is not None
    return [extension.name for extension in client.accepted.extensions]


async def test_deflate_client_gets_whole_live_log(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, COMPRESSIBLE_PIPELINE)
    client = await connect(port, [PerMessageDeflate()])
    await wait_state(port, run_id, {"running"})
    # A run subscription on the same connection interleaves compressed JSON messages
    # with the log frames.
    await client.send(type="subscribe", sub="run", topic="run", run_id=run_id)
    await client.send(type="subscribe", sub="log", topic="log", run_id=run_id,
                      job_id="talk", step="count", offset=0)
    data, message_bytes, others = await collect(client, "log", 0)
    whole = await full_log(port, run_id)
    assert negotiated(client) == ["permessage-deflate"]
    assert len(data) == 3000 * 80 + 2 * 4001
    assert data == whole
    assert "run" in others
    # 80-byte lines numbered in sequence compress several times.
    assert client.wire_bytes < message_bytes / 2


async def test_deflate_client_resumes_from_offset(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, COMPRESSIBLE_PIPELINE)
    await wait_state(port, run_id, {"succeeded"})
    whole = await full_log(port, run_id)
    client = await connect(port, [PerMessageDeflate()])
    await client.send(type="subscribe", sub="tail", topic="log", run_id=run_id,
                      job_id="talk", step="1", offset=100_001)
    data, _, _ = await collect(client, "tail", 100_001)
    await client.send(type="subscribe", sub="end", topic="log", run_id=run_id,
                      job_id="talk", step="1", offset=len(whole))
    at_end = await receive(client)
    assert data == whole[100_001:]
    assert at_end == {"type": "log_end", "sub": "end", "size": len(whole)}


async def test_small_window_client_gets_whole_log(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, COMPRESSIBLE_PIPELINE)
    # The client's decompressor has a 1 KiB window, so a frame compressed with a larger
    # one fails to decompress at the repeated random block.
    client = await connect(port, [PerMessageDeflate(server_max_window_bits=10)])
    await wait_state(port, run_id, {"running"})
    await client.send(type="subscribe", sub="log", topic="log", run_id=run_id,
                      job_id="talk", step="count", offset=0)
    data, message_bytes, _ = await collect(client, "log", 0)
    assert client.accepted is not None
    assert "server_max_window_bits=10" in str(client.accepted.extensions[0].offer())
    assert data == await full_log(port, run_id)
    assert client.wire_bytes < message_bytes / 2


async def test_plain_client_gets_uncompressed_frames(local_server: Server,
                                                     tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, COMPRESSIBLE_PIPELINE)
    client = await connect(port, [])
    await wait_state(port, run_id, {"running"})
    await client.send(type="subscribe", sub="log", topic="log", run_id=run_id,
                      job_id="talk", step="count", offset=0)
    data, message_bytes, _ = await collect(client, "log", 0)
    assert negotiated(client) == []
    assert data == await full_log(port, run_id)
    assert client.wire_bytes > message_bytes
