"""Step output: stored byte-exact as numbered chunks, and shown live line by line."""

from __future__ import annotations

import collections
import sys
from typing import BinaryIO, Protocol

from cicd.storage.store import DropLogChunks, LogChunk
from cicd.terminal import printable

# A partial line longer than this is shown before its newline arrives, so one
# huge line neither stalls the live view nor grows memory without bound.
MAX_PENDING_LINE = 64 * 1024

_COLOURS = [b"\x1b[36m", b"\x1b[35m", b"\x1b[33m", b"\x1b[32m", b"\x1b[34m", b"\x1b[91m"]
_RESET = b"\x1b[0m"


class ChunkWriter(Protocol):
    async def append_log(self, chunk: LogChunk | DropLogChunks) -> None: ...


class LivePrinter:
    """Prints each complete line of every step, prefixed with ``[job/step]``.

    Bytes are written unchanged (colour codes, carriage returns, invalid UTF-8),
    so a terminal shows what the step wrote. The prefix is coloured only when the
    output is a terminal.
    """

    def __init__(self, out: BinaryIO | None = None, *, colour: bool | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        if colour is None:
            colour = hasattr(self.out, "isatty") and self.out.isatty()
        self.colour = colour
        self._pending: dict[tuple[str, int], bytearray] = {}
        self._colour_of: dict[str, bytes] = {}

    def _prefix(self, job: str, step_name: str) -> bytes:
        label = f"[{printable(job)}/{printable(step_name)}] ".encode()
        if not self.colour:
            return label
        colour = self._colour_of.setdefault(job, _COLOURS[len(self._colour_of) % len(_COLOURS)])
        return colour + label + _RESET

    def feed(self, job: str, step: int, step_name: str, data: bytes) -> None:
        key = (job, step)
        pending = self._pending.setdefault(key, bytearray())
        pending += data
        lines = []
        while True:
            newline = pending.find(b"\n")
            if newline < 0:
                break
            lines.append(bytes(pending[: newline + 1]))
            del pending[: newline + 1]
        if len(pending) > MAX_PENDING_LINE:
            lines.append(bytes(pending))
            pending.clear()
        if not lines:
            return
        prefix = self._prefix(job, step_name)
        # A fragment cut from an over-long line gets a newline on screen only.
        self.out.write(b"".join(
            prefix + line if line.endswith(b"\n") else prefix + line + b"\n" for line in lines
        ))
        self.out.flush()

    def end_step(self, job: str, step: int, step_name: str) -> None:
        """Show what is left of the step's last line (adding a newline on screen only)."""
        key = (job, step)
        pending = self._pending.pop(key, bytearray())
        if pending:
            self.out.write(self._prefix(job, step_name) + bytes(pending) + b"\n")
            self.out.flush()

    def note(self, text: str) -> None:
        """Print one status line of cicd's own (not step output)."""
        self.out.write(printable(text).encode() + b"\n")
        self.out.flush()


class StepOutput:
    """The sink of one step: numbers chunks, stores them and feeds the live printer.

    With a ``limit`` (bytes), the stored output keeps its first ``limit / 2`` bytes
    and its last ``limit / 2`` bytes or a little more: earlier chunks of the tail are
    dropped whole, and a chunk longer than the tail keeps only its end.
    ``truncated_bytes`` counts what was dropped. Every chunk keeps its true byte
    offset, so readers see where the gap is.
    """

    def __init__(self, store: ChunkWriter, printer: LivePrinter | None, *, run_id: str,
                 job: str, step: int, step_name: str, limit: int | None = None) -> None:
        self.store = store
        self.printer = printer
        self.run_id = run_id
        self.job = job
        self.step = step
        self.step_name = step_name
        self.seq = 0
        self.size = 0
        self.truncated_bytes = 0
        self._head_limit = None if limit is None else limit - limit // 2
        self._tail_limit = 0 if limit is None else limit // 2
        self._tail: collections.deque[tuple[int, int]] = collections.deque()  # (seq, length)
        self._tail_size = 0

    async def __call__(self, data: bytes) -> None:
        if self.printer is not None:
            self.printer.feed(self.job, self.step, self.step_name, data)
        head_limit = self._head_limit
        if head_limit is not None and self.size < head_limit < self.size + len(data):
            cut = head_limit - self.size
            await self._store(data[:cut], tail=False)
            data = data[cut:]
        tail = head_limit is not None and self.size >= head_limit
        if tail and len(data) > self._tail_limit:
            skipped = len(data) - self._tail_limit  # never stored: count it as dropped
            self.size += skipped
            self.truncated_bytes += skipped
            data = data[skipped:]
        await self._store(data, tail=tail)

    async def _store(self, data: bytes, *, tail: bool) -> None:
        self.seq += 1
        await self.store.append_log(
            LogChunk(self.run_id, self.job, self.step, self.seq, data, self.size))
        self.size += len(data)
        if not tail:
            return
        self._tail.append((self.seq, len(data)))
        self._tail_size += len(data)
        first_dropped = last_dropped = 0
        while self._tail and self._tail_size - self._tail[0][1] >= self._tail_limit:
            seq, length = self._tail.popleft()
            self._tail_size -= length
            self.truncated_bytes += length
            first_dropped = first_dropped or seq
            last_dropped = seq
        if last_dropped:
            await self.store.append_log(
                DropLogChunks(self.run_id, self.job, self.step, first_dropped, last_dropped))

    def close(self) -> None:
        if self.printer is not None:
            self.printer.end_step(self.job, self.step, self.step_name)
