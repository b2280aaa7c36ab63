"""The reader of a step's Docker attach stream (``DockerStepProcess._thd_pump_attach``),
fed through a socket pair with frames as dockerd writes them: how often it reads, how
late it passes output on, and that it passes every byte in order."""

from __future__ import annotations

import socket
import struct
import threading
import time

import trio

from cicd.workers.docker import DockerStepProcess

LINGER_SECONDS = 0.11  # the pump's batch delay after a batch's first byte


class CountingSocket:
    """The reading end of a socket pair that counts ``recv`` calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        self.reads += 1
        return self.sock.recv(size)


def frame(payload: bytes, stream: int = 1) -> bytes:
    """Frame ``payload`` as the attach stream does without a TTY."""
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def write_frames(sock: socket.socket, payloads: list[bytes], interval: float,
                 sent_at: list[float]) -> None:
    for payload in payloads:
        sent_at.append(time.monotonic())
        sock.sendall(frame(payload))
        if interval:
            time.sleep(interval)
    sock.close()


async def pump(payloads: list[bytes], interval: float
               ) -> tuple[list[tuple[float, bytes]], list[float], int]:
    """Run the pump on frames of ``payloads`` written ``interval`` seconds apart; return
    the sink's calls as (time, bytes), the frames' write times and the reads."""
    reader, writer = socket.socketpair()
    counting = CountingSocket(reader)
    process = DockerStepProcess(None, "c0ffee", counting,  # type: ignore[arg-type]
                                on_release=lambda _: None)
    calls: list[tuple[float, bytes]] = []

    async def sink(data: bytes) -> None:
        calls.append((time.monotonic(), data))

    sent_at: list[float] = []
    thread = threading.Thread(target=write_frames, args=(writer, payloads, interval, sent_at))
    thread.start()
    try:
        await trio.to_thread.run_sync(process._thd_pump_attach, sink)
    finally:
        thread.join()
        reader.close()
    return calls, sent_at, counting.reads


async def test_pump_reads_slow_output_per_batch() -> None:
    # 1 MB/s as 100 frames of 10 KB a second, for 1 s.
    payloads = [bytes([65 + index % 26]) * 10_000 for index in range(100)]
    calls, sent_at, reads = await pump(payloads, 0.01)

    assert b"".join(data for _, data in calls) == b"".join(payloads)
    # One read per frame would be 100 reads; sleeping until each batch is due, the
    # pump makes about two per batch.
    assert reads <= 40, f"{reads} reads for 100 frames"
    # Each frame reaches the sink within the batch delay (plus scheduling slack).
    passed: list[tuple[float, int]] = []  # (time, bytes passed so far) per sink call
    for at, data in calls:
        passed.append((at, (passed[-1][1] if passed else 0) + len(data)))
    end = 0
    delays = []
    for payload, written_at in zip(payloads, sent_at, strict=True):
        end += len(payload)
        passed_at = next(at for at, total in passed if total >= end)
        delays.append(passed_at - written_at)
    assert max(delays) < LINGER_SECONDS + 0.1, max(delays)


async def test_pump_keeps_up_with_fast_output() -> None:
    # 32 MB at once, in frames that do not line up with the pump's 64 KiB reads.
    payloads = [bytes([48 + index % 10]) * 100_003 for index in range(320)]
    started = time.monotonic()
    calls, _, _ = await pump(payloads, 0)
    elapsed = time.monotonic() - started

    assert b"".join(data for _, data in calls) == b"".join(payloads)
    # Sleeping for each batch with the socket full would cap this at a few MB/s.
    assert elapsed < 4, f"32 MB took {elapsed:.1f} s"
    assert max(len(data) for _, data in calls) <= 256 * 1024 + 64 * 1024


async def test_pump_passes_stderr_frames_and_split_headers() -> None:
    # Frames of both streams, written a byte at a time so headers arrive split.
    payloads = [b"out line\n", b"", b"err line\n" * 3, b"x" * 70_000]
    reader, writer = socket.socketpair()
    process = DockerStepProcess(None, "c0ffee", reader,  # type: ignore[arg-type]
                                on_release=lambda _: None)
    received: list[bytes] = []

    async def sink(data: bytes) -> None:
        received.append(data)

    def write_bytewise() -> None:
        raw = b"".join(frame(payload, stream=1 + index % 2)
                       for index, payload in enumerate(payloads))
        for index in range(200):
            writer.sendall(raw[index : index + 1])
        writer.sendall(raw[200:])
        writer.close()

    thread = threading.Thread(target=write_bytewise)
    thread.start()
    try:
        await trio.to_thread.run_sync(process._thd_pump_attach, sink)
    finally:
        thread.join()
        reader.close()
    assert b"".join(received) == b"".join(payloads)
