"""Shared readers of the store for every console client: one per followed step, one for events.

Resource handling: a feed runs as a task in the nursery given to :class:`Feeds` and
stops when its last user leaves. Readers run on the store's reader pool, so a feed
never blocks the Trio thread and never writes: a slow or absent console client
cannot slow a build.

Error handling: a feed stores the ``CicdError`` that stopped it in ``error`` and wakes
its users, which report it to their client. Other errors propagate.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from cicd.console import reads
from cicd.console.protocol import FRAME_INTERVAL_SECONDS, encode_log_frame
from cicd.console.ring import Behind, LogRing
from cicd.errors import CicdError

logger = logging.getLogger("cicd.console")

T = TypeVar("T")

# A followed step's tail kept in memory for all its clients. At 1 MB/s of output, a
# client may lag about this many seconds' worth before it has to resync.
RING_BYTES = 4 * 1024 * 1024
# A feed reads the store at most this often; each read takes everything committed since.
READ_INTERVAL_SECONDS = 0.05
TAIL_READ_BYTES = 1024 * 1024
EVENT_BATCH = 2000
# Encoded frames a feed keeps for the clients that read the same range of the output,
# at most MAX_FRAME_BYTES each. Live clients send the same frame at each tick, a client
# a few ticks behind sends the frames of those ticks again, and clients that start
# together read the same stored frames, so the last few frames cover nearly all.
MAX_SHARED_FRAMES = 16
# Ticks are this much more than the frame interval apart, so a client that read its
# last frame a few milliseconds into the previous tick need not wait again.
TICK_MARGIN_SECONDS = 0.005


class Readers(Protocol):
    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class _Signal:
    """A wake-up delivered to every waiter: :meth:`fire` sets the current event, then renews it."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def fire(self) -> None:
        self.event.set()
        self.event = trio.Event()


class LogFeed:
    """The live tail of one step in a :class:`LogRing`, read once for all its clients.

    Clients that follow the tail send a frame per tick: the feed counts a tick
    (:attr:`ticks`) when the tail has grown, at most every ``FRAME_INTERVAL_SECONDS``.
    Clients read the tail only up to its end at the last tick (:attr:`tick_end`), so
    every frame ends at a tick's end, and clients that send at other moments or lag
    a few ticks read the same ranges as the others. The feed encodes each range once
    (:meth:`frame`), and one timer serves all clients. At each tick the feed's task
    first calls the ``send`` function of each client waiting in :meth:`wait_for_tick`,
    which sends the frame when it can without waiting. It wakes only the clients whose
    ``send`` returned False.
    """

    def __init__(self, key: tuple[str, str, int], seq: int, offset: int) -> None:
        self.key = key
        self.ring = LogRing(offset, RING_BYTES)
        self.grew = _Signal()
        self.ticks = 0
        # The tail's end at the last tick, or its end once the feed stopped.
        self.tick_end = offset
        self.error: CicdError | sqlite3.Error | None = None
        self.stopped = False
        self.users = 0
        self._seq = seq
        self._scope = trio.CancelScope()
        # The events of the clients waiting for a tick, with their ``send`` functions.
        self._waiting: dict[trio.Event, Callable[[], bool]] = {}
        # (sub, offset, limit, websocket, deflate_bits) -> (offset, data length, encoded
        # frame), oldest first. A frame's bytes never change, and its header's ``size``
        # is the tail's end when it was encoded, which the protocol allows.
        self._frames: dict[tuple[str, int, int, bool, int | None], tuple[int, int, bytes]] = {}

    def frame(self, sub: str, offset: int, limit: int, *, websocket: bool = False,
              deflate_bits: int | None = None) -> tuple[int, int, bytes]:
        """Return the frame of up to ``limit`` bytes of the tail from ``offset`` to at most
        :attr:`tick_end` for ``sub``, as (first byte's offset, data length, encoded
        message). A frame encoded earlier from ``offset`` is returned as it is, even when
        it ends before :attr:`tick_end`.

        With ``websocket`` the message comes as a whole WebSocket frame, compressed
        with a ``deflate_bits`` window when given (see ``encode_log_frame``), so the
        tail's bytes are compressed once for all the clients with that window. The
        length is 0 (and the message empty) when the tail has nothing from ``offset``
        before :attr:`tick_end`. Raises :class:`~cicd.console.ring.Behind` like
        ``LogRing.read``.
        """
        if offset < self.ring.start:
            raise Behind(offset)
        key = (sub, offset, limit, websocket, deflate_bits)
        cached = self._frames.get(key)
        if cached is not None:
            return cached
        start, data = self.ring.read(offset, max(0, min(limit, self.tick_end - offset)))
        if not data:
            return start, 0, b""
        found = (start, len(data),
                 encode_log_frame(sub, start, self.ring.end, data, websocket=websocket,
                                  deflate_bits=deflate_bits))
        self.share_frame(sub, offset, limit, found, websocket=websocket,
                         deflate_bits=deflate_bits)
        return found

    def shared_frame(self, sub: str, offset: int, limit: int, *, websocket: bool = False,
                     deflate_bits: int | None = None) -> tuple[int, int, bytes] | None:
        """Return the frame from ``offset`` that :meth:`frame` or :meth:`share_frame` kept
        for these arguments, or None."""
        return self._frames.get((sub, offset, limit, websocket, deflate_bits))

    def share_frame(self, sub: str, offset: int, limit: int, found: tuple[int, int, bytes], *,
                    websocket: bool = False, deflate_bits: int | None = None) -> None:
        """Keep ``found`` (as :meth:`frame` returns it) for the next client that reads from
        ``offset`` with these arguments, dropping the oldest frame beyond
        ``MAX_SHARED_FRAMES``."""
        if len(self._frames) >= MAX_SHARED_FRAMES:
            del self._frames[next(iter(self._frames))]
        self._frames[(sub, offset, limit, websocket, deflate_bits)] = found

    async def wait_for_tick(self, send: Callable[[], bool]) -> None:
        """Wait until a tick at which ``send`` returns False, or until the feed stops.

        The feed's task calls ``send()`` at each tick while the caller waits. It returns
        True when it sent the tick's frame for the caller, which then keeps waiting.
        When it raises, the error is logged and the caller wakes.
        """
        if self.stopped:
            return
        woken = trio.Event()
        self._waiting[woken] = send
        try:
            await woken.wait()
        finally:
            self._waiting.pop(woken, None)

    def _send_tick(self) -> None:
        for woken, send in list(self._waiting.items()):
            try:
                sent = send()
            except Exception:
                logger.exception("sending a frame of %s/%s step %d at a tick failed",
                                 *self.key)
                sent = False
            if not sent:
                del self._waiting[woken]
                woken.set()

    def _wake_all(self) -> None:
        for woken in self._waiting:
            woken.set()
        self._waiting.clear()

    def _append(self, chunks: list[tuple[int, int, bytes]]) -> None:
        """Add chunks read from the store, joining contiguous ones into one piece.

        One piece per read lets a client that follows the tail send it without a copy.
        """
        pieces: list[bytes] = []
        piece_offset = piece_end = 0
        for _seq, offset, data in chunks:
            if pieces and offset != piece_end:  # a truncation gap
                self.ring.append(piece_offset, b"".join(pieces))
                pieces = []
            if not pieces:
                piece_offset = offset
            pieces.append(data)
            piece_end = offset + len(data)
        if pieces:
            self.ring.append(piece_offset, b"".join(pieces))

    async def run(self, feeds: Feeds) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._tick)
                    await self._follow(feeds)
                    nursery.cancel_scope.cancel()
        finally:
            self.stopped = True
            self.tick_end = self.ring.end  # clients send the rest without a tick
            feeds.logs.pop(self.key, None)
            self.grew.fire()
            self._wake_all()

    async def _tick(self) -> None:
        ticked_at = self.ring.end
        while True:
            while self.ring.end == ticked_at:
                await self.grew.event.wait()
            ticked_at = self.tick_end = self.ring.end
            self.ticks += 1
            self._send_tick()
            await trio.sleep(FRAME_INTERVAL_SECONDS + TICK_MARGIN_SECONDS)

    async def _follow(self, feeds: Feeds) -> None:
        run_id, job_id, index = self.key
        try:
            while True:
                changed = feeds.changed()
                read_at = trio.current_time()
                chunks, size, complete = await feeds.readers.run(
                    lambda conn: reads.tail(conn, run_id, job_id, index, self._seq,
                                            TAIL_READ_BYTES))
                if chunks:
                    self._append(chunks)
                    self._seq = chunks[-1][0]
                if complete and self.ring.end >= size:
                    self.ring.complete = True
                    return
                if chunks:
                    self.grew.fire()
                if sum(len(chunk[2]) for chunk in chunks) < TAIL_READ_BYTES:
                    await changed.wait()
                    await trio.sleep_until(read_at + READ_INTERVAL_SECONDS)
        except (CicdError, sqlite3.Error) as exc:
            logger.warning("following the output of %s/%s step %d failed: %s",
                           run_id, job_id, index, exc)
            self.error = exc

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._scope.cancel()


class EventListener:
    """Receives (last event id, run ids) of each batch of new events."""

    def __init__(self, notify: Callable[[int, list[str]], None]) -> None:
        self.notify = notify


class Feeds:
    """The console's shared feeds, started on demand in ``nursery``."""

    def __init__(self, readers: Readers, changed: Callable[[], trio.Event],
                 nursery: trio.Nursery) -> None:
        self.readers = readers
        self.changed = changed
        self.nursery = nursery
        self.logs: dict[tuple[str, str, int], LogFeed] = {}
        self.listeners: set[EventListener] = set()
        self._events_scope: trio.CancelScope | None = None
        self._events_ready = trio.Event()
        self.event_error: CicdError | sqlite3.Error | None = None

    async def follow_log(self, run_id: str, job_id: str, index: int) -> LogFeed:
        """Return the feed of a step, started at the output's current end if it is new.

        The caller must call :meth:`LogFeed.release` when done with it.
        """
        key = (run_id, job_id, index)
        feed = self.logs.get(key)
        if feed is None:
            seq, end = await self.readers.run(
                lambda conn: reads.last_seq(conn, run_id, job_id, index))
            feed = self.logs.get(key)  # another client may have started it meanwhile
            if feed is None:
                feed = self.logs[key] = LogFeed(key, seq, end)
                self.nursery.start_soon(feed.run, self)
        feed.users += 1
        return feed

    async def listen(self, listener: EventListener) -> None:
        """Deliver every event stored from now on to ``listener`` until :meth:`unlisten`."""
        self.listeners.add(listener)
        if self._events_scope is None:
            scope = self._events_scope = trio.CancelScope()
            ready = self._events_ready = trio.Event()
            try:
                after = await self.readers.run(reads.last_event_id)
            finally:
                ready.set()
            self.nursery.start_soon(self._follow_events, after, scope)
        # The task that started the feed has read its first position when this returns, so
        # the caller's own reads from now on cover every event the feed will not deliver.
        await self._events_ready.wait()

    def unlisten(self, listener: EventListener) -> None:
        self.listeners.discard(listener)
        if not self.listeners and self._events_scope is not None:
            self._events_scope.cancel()
            self._events_scope = None

    async def _follow_events(self, after: int, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                changed = self.changed()
                read_at = trio.current_time()
                try:
                    run_ids, last = await self.readers.run(
                        functools.partial(reads.changed_runs, after=after, limit=EVENT_BATCH))
                except (CicdError, sqlite3.Error) as exc:
                    logger.warning("the console's event feed failed: %s", exc)
                    self.event_error = exc
                    for listener in list(self.listeners):
                        listener.notify(after, [])
                    return
                if last > after:
                    after = last
                    if run_ids:
                        for listener in list(self.listeners):
                            listener.notify(last, run_ids)
                    continue
                await changed.wait()
                await trio.sleep_until(read_at + READ_INTERVAL_SECONDS)
