"""Pure buffers of the console: the shared tail of a step's output, and changed run ids.

:class:`LogRing` contains the last bytes one followed step wrote, so many clients read the
live tail from memory and the server reads the store once per step, not once per
client. :class:`ChangedRuns` collects the run ids new events touched until a
subscription sends them, with a bound.
"""

from __future__ import annotations

import collections


class Behind(Exception):
    """The requested offset is older than the ring holds: read it from the store."""


class LogRing:
    """The latest ``capacity`` bytes (or a little more) of one step's output.

    Offsets count bytes from the start of the step's output, as the log API does. A
    chunk that starts past :attr:`end` follows a truncation gap: the ring drops what it
    held and starts again at the chunk. Memory stays under ``capacity`` plus one chunk.
    """

    def __init__(self, start: int, capacity: int) -> None:
        self.capacity = capacity
        self.start = start  # offset of the first byte held
        self.end = start  # offset after the last byte held
        self.complete = False  # the step ended and every byte up to ``end`` is held
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self._held = 0

    def append(self, offset: int, data: bytes) -> None:
        """Add output that starts at ``offset``; bytes before :attr:`end` are skipped."""
        if offset > self.end:
            self._chunks.clear()
            self._held = 0
            self.start = self.end = offset
        if offset < self.end:
            data = data[self.end - offset :]
        if not data:
            return
        self._chunks.append((self.end, data))
        self._held += len(data)
        self.end += len(data)
        while self._held - len(self._chunks[0][1]) >= self.capacity:
            _, dropped = self._chunks.popleft()
            self._held -= len(dropped)
            self.start += len(dropped)

    def read(self, offset: int, limit: int) -> tuple[int, bytes]:
        """Return up to ``limit`` bytes from ``offset`` and the offset they start at.

        An offset at or past :attr:`end` gets no bytes. Raises :class:`Behind` when
        ``offset`` is before :attr:`start`.
        """
        if offset < self.start:
            raise Behind(offset)
        if offset >= self.end:
            return offset, b""
        # Readers are usually near the end, so the search starts from the newest chunk.
        index = len(self._chunks) - 1
        while self._chunks[index][0] > offset:
            index -= 1
        end = min(self.end, offset + limit)
        parts: list[bytes] = []
        while index < len(self._chunks):
            chunk_offset, data = self._chunks[index]
            if chunk_offset >= end:
                break
            # A slice of a whole bytes object is that object itself, so a read that
            # covers exactly one chunk copies nothing.
            parts.append(data[max(0, offset - chunk_offset) : end - chunk_offset])
            index += 1
        return offset, parts[0] if len(parts) == 1 else b"".join(parts)


class ChangedRuns:
    """Run ids touched by events since the last :meth:`take`, and the last event id seen.

    More than ``limit`` distinct ids sets :attr:`overflowed`: the subscription then
    sends a fresh snapshot in place of a long list of changes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.event_id = 0
        self.overflowed = False
        self._ids: dict[str, None] = {}

    def add(self, event_id: int, run_ids: list[str]) -> None:
        self.event_id = max(self.event_id, event_id)
        if self.overflowed:
            return
        for run_id in run_ids:
            self._ids[run_id] = None
        if len(self._ids) > self.limit:
            self.overflowed = True
            self._ids.clear()

    def __bool__(self) -> bool:
        return bool(self._ids) or self.overflowed

    def take(self) -> tuple[list[str], int, bool]:
        """Return (run ids, last event id, overflowed) and start a new collection."""
        ids, overflowed = list(self._ids), self.overflowed
        self._ids = {}
        self.overflowed = False
        return ids, self.event_id, overflowed
