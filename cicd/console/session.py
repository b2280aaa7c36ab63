"""One console WebSocket: the client's subscriptions, each a task, and what they send.

A session sends :class:`~cicd.console.protocol.Hello` first, then a ping every
``PING_INTERVAL_SECONDS``. Each subscription runs in its own cancel scope, so an
unsubscribe, a failure or a resync ends only that subscription.

Resource handling: at most ``MAX_SUBSCRIPTIONS`` per session. A log subscription keeps
at most one frame (``MAX_FRAME_BYTES``) while it waits for the client to read it, and
runs subscriptions keep a bounded set of changed run ids. So a slow client costs a
fixed amount of memory. It falls behind instead, and gets a ``resync`` message once
the shared tail no longer contains its offset.

Error handling: a ``CicdError`` or SQLite error ends its subscription with an
``error`` message carrying the error's code. Any other error is logged with the
request id and reported as ``INTERNAL``.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable

import msgspec
import trio

from cicd.api.contract import RunServiceProtocol
from cicd.api.responses import ApiError
from cicd.console import reads
from cicd.console.feeds import EventListener, Feeds, LogFeed, Readers
from cicd.console.protocol import (
    FRAME_INTERVAL_SECONDS,
    MAX_FRAME_BYTES,
    MAX_SUBSCRIPTIONS,
    PING_INTERVAL_SECONDS,
    STATE_INTERVAL_SECONDS,
    ErrorMessage,
    Hello,
    LogEnd,
    Nodes,
    Ping,
    ProtocolError,
    Resync,
    RunChanged,
    RunsChanged,
    RunsSnapshot,
    ServerMessage,
    Subscribe,
    Unsubscribe,
    decode_client_message,
    encode_log_frame,
    encode_message,
    run_matches,
    websocket_frame,
)
from cicd.console.ring import Behind, ChangedRuns
from cicd.errors import CicdError
from cicd.orchestration.states import State

RUN_STATES = tuple(state.value for state in State)
logger = logging.getLogger("cicd.console")

# A runs subscription that falls this many changed runs behind gets a new snapshot.
MAX_CHANGED_RUNS = 1000
# A resumed runs subscription gets the changes since its event id when at most this
# many events happened since; otherwise a new snapshot.
MAX_RESUME_EVENTS = 5000
NODES_INTERVAL_SECONDS = 2.0
# How often a followed run that is active is read again, for its steps' output sizes.
RUN_REFRESH_SECONDS = 2.0

_ENCODER = msgspec.json.Encoder()

Send = Callable[[str | bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[str | bytes]]


class _Wake:
    """A flag a synchronous callback sets and one task waits for."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class ConsoleSession:
    def __init__(self, *, service: RunServiceProtocol, readers: Readers, feeds: Feeds,
                 refs: reads.RefIndex, send: Send, receive: Receive, request_id: str,
                 send_frame: Callable[[bytes], Awaitable[None]] | None = None,
                 send_frame_nowait: Callable[[bytes], bool] | None = None,
                 deflate_bits: int | None = None) -> None:
        """``send_frame``, when given, writes one whole WebSocket frame to the client. Log
        output then goes out as frames encoded once for all the clients of a step.

        ``deflate_bits`` is the ``server_max_window_bits`` of the permessage-deflate
        extension the connection negotiated, or None without it. With it and
        ``send_frame``, every message goes out through ``send_frame``, compressed on its
        own (see ``websocket_frame``). No message then goes through the server's own
        compressor, whose window would not contain the messages compressed here, so
        its back-references would not match the client's window.

        ``send_frame_nowait``, when given with ``send_frame``, writes one whole frame
        without waiting and returns True, or returns False having written nothing. A
        log feed calls it through :meth:`send_log_nowait` to send a frame to every
        client that follows the tail, with no task switch per client.
        """
        self.service = service
        self.readers = readers
        self.feeds = feeds
        self.refs = refs
        self._send = send
        self._send_frame = send_frame
        self._send_frame_nowait = send_frame_nowait if send_frame is not None else None
        self.sends_frames = send_frame is not None
        self.deflate_bits = deflate_bits if send_frame is not None else None
        self._receive = receive
        self.request_id = request_id
        self._lock = trio.Lock()
        self._subscriptions: dict[str, trio.CancelScope] = {}

    async def send(self, message: ServerMessage | bytes) -> None:
        binary = isinstance(message, bytes)
        data = message if isinstance(message, bytes) else encode_message(message)
        async with self._lock:
            if self._send_frame is not None and self.deflate_bits is not None:
                payload = data if isinstance(data, bytes) else data.encode()
                await self._send_frame(websocket_frame((payload,), binary=binary,
                                                       deflate_bits=self.deflate_bits))
            else:
                await self._send(data)

    async def send_log(self, encoded: bytes) -> None:
        """Send a log message from ``encode_log_frame``, made with ``websocket`` set to
        :attr:`sends_frames` and ``deflate_bits`` to :attr:`deflate_bits`."""
        async with self._lock:
            if self._send_frame is not None:
                await self._send_frame(encoded)
            else:
                await self._send(encoded)

    def send_log_nowait(self, encoded: bytes) -> bool:
        """Send a log message as :meth:`send_log` does, without waiting; return True when
        it was sent.

        Sends nothing while another message of this session is being sent, or when the
        connection cannot take the message at once.
        """
        if self._send_frame_nowait is None or self._lock.locked():
            return False
        return self._send_frame_nowait(encoded)

    async def run(self) -> None:
        """Serve the client until it disconnects (which cancels the caller) or this is cancelled."""
        await self.send(Hello())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping)
            while True:
                raw = await self._receive()
                try:
                    message = decode_client_message(raw)
                except ProtocolError as exc:
                    await self.send(ErrorMessage(code="REQUEST-INVALID", message=str(exc)))
                    continue
                if isinstance(message, Subscribe):
                    await self._subscribe(nursery, message)
                elif isinstance(message, Unsubscribe):
                    scope = self._subscriptions.pop(message.sub, None)
                    if scope is not None:
                        scope.cancel()

    async def _ping(self) -> None:
        while True:
            await trio.sleep(PING_INTERVAL_SECONDS)
            await self.send(Ping(ts=int(time.time() * 1000)))

    async def _subscribe(self, nursery: trio.Nursery, message: Subscribe) -> None:
        """Start ``message``'s subscription in ``nursery``, or send why it cannot start."""
        previous = self._subscriptions.pop(message.sub, None)
        if previous is not None:
            previous.cancel()
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            await self.send(ErrorMessage(
                sub=message.sub, code="REQUEST-INVALID",
                message=f"this connection has {MAX_SUBSCRIPTIONS} subscriptions, the maximum; "
                        "unsubscribe from one first"))
            return
        state = message.filter.state
        if state and state not in RUN_STATES:
            # The same check as the state query parameter of the runs routes.
            await self.send(ErrorMessage(
                sub=message.sub, code="REQUEST-INVALID",
                message=f"filter.state {state!r} is not one of: {', '.join(RUN_STATES)}"))
            return
        scope = trio.CancelScope()
        self._subscriptions[message.sub] = scope
        nursery.start_soon(self._run_subscription, message, scope)

    async def _run_subscription(self, message: Subscribe, scope: trio.CancelScope) -> None:
        handlers: dict[str, Callable[[Subscribe], Awaitable[None]]] = {
            "runs": self._follow_runs, "run": self._follow_run,
            "log": functools.partial(self._follow_log, scope=scope),
            "nodes": self._follow_nodes}
        error: ErrorMessage | None = None
        with scope:
            try:
                await handlers[message.topic](message)
            except CicdError as exc:
                error = ErrorMessage(sub=message.sub, code=exc.code, message=str(exc))
            except sqlite3.Error as exc:
                logger.error("request %s: console subscription %s failed: %s",
                             self.request_id, message.sub, exc)
                error = ErrorMessage(sub=message.sub, code="ORC-INFRA",
                                     message="the run store failed; the server log has the cause "
                                             f"under request id {self.request_id}")
            except Exception:
                logger.exception("request %s: console subscription %s (%s) failed",
                                 self.request_id, message.sub, message.topic)
                error = ErrorMessage(sub=message.sub, code="INTERNAL",
                                     message="the server failed; the server log has the cause "
                                             f"under request id {self.request_id}")
            if error is not None:
                await self.send(error)
        if self._subscriptions.get(message.sub) is scope:
            del self._subscriptions[message.sub]

    # --- runs and a run ------------------------------------------------------------

    async def _follow_runs(self, message: Subscribe) -> None:
        changes = ChangedRuns(MAX_CHANGED_RUNS)
        wake = _Wake()

        def notify(event_id: int, run_ids: list[str]) -> None:
            changes.add(event_id, run_ids)
            wake.set()

        listener = EventListener(notify)
        await self.feeds.listen(listener)
        try:
            await self._start_runs(message)
            while True:
                await wake.wait()
                sent_at = trio.current_time()
                run_ids, event_id, overflowed = changes.take()
                if overflowed:
                    await self._send_runs_snapshot(message)
                elif run_ids:
                    await self._send_runs_changed(message, run_ids, event_id)
                await trio.sleep_until(sent_at + STATE_INTERVAL_SECONDS)
        finally:
            self.feeds.unlisten(listener)

    async def _start_runs(self, message: Subscribe) -> None:
        after = message.after
        if after is not None:
            last = await self.readers.run(reads.last_event_id)
            if after <= last and last - after <= MAX_RESUME_EVENTS:
                run_ids, upto = await self.readers.run(
                    lambda conn: reads.changed_runs(conn, after, MAX_RESUME_EVENTS))
                await self._send_runs_changed(message, run_ids, max(after, upto))
                return
        await self._send_runs_snapshot(message)

    async def _send_runs_snapshot(self, message: Subscribe) -> None:
        def read(conn: sqlite3.Connection) -> RunsSnapshot:
            event_id = reads.last_event_id(conn)
            runs, _ = reads.run_summaries(conn, message.filter, self.refs, limit=message.limit)
            return RunsSnapshot(sub=message.sub, event_id=event_id, runs=runs,
                                counts=reads.state_counts(conn, message.filter, self.refs))

        await self.send(await self.readers.run(read))

    async def _send_runs_changed(self, message: Subscribe, run_ids: list[str],
                                 event_id: int) -> None:
        def read(conn: sqlite3.Connection) -> RunsChanged:
            found = reads.summaries_by_id(conn, run_ids)
            matching = [run for run in found if run_matches(run, message.filter)]
            kept = {run.id for run in matching}
            return RunsChanged(sub=message.sub, event_id=event_id, runs=matching,
                               removed=[run_id for run_id in run_ids if run_id not in kept],
                               counts=reads.state_counts(conn, message.filter, self.refs))

        await self.send(await self.readers.run(read))

    async def _follow_run(self, message: Subscribe) -> None:
        changes = ChangedRuns(MAX_CHANGED_RUNS)
        wake = _Wake()

        def notify(event_id: int, run_ids: list[str]) -> None:
            changes.add(event_id, [run_id for run_id in run_ids if run_id == message.run_id])
            if changes:
                wake.set()

        listener = EventListener(notify)
        await self.feeds.listen(listener)
        try:
            event_id = await self.readers.run(reads.last_event_id)
            previous = b""
            while True:
                document = await self.service.get_run(message.run_id)
                encoded = _ENCODER.encode(document)
                if encoded != previous:
                    sent_at = trio.current_time()
                    await self.send(RunChanged(sub=message.sub, event_id=event_id,
                                               run=msgspec.Raw(encoded)))
                    previous = encoded
                    await trio.sleep_until(sent_at + STATE_INTERVAL_SECONDS)
                # A running step's output size grows without an event: read it again now
                # and then while the run is active.
                active = document.state in ("pending", "running")
                with trio.move_on_after(RUN_REFRESH_SECONDS if active else math.inf):
                    await wake.wait()
                _, event_id, _ = changes.take()
        finally:
            self.feeds.unlisten(listener)

    async def _follow_nodes(self, message: Subscribe) -> None:
        previous = b""
        while True:
            encoded = _ENCODER.encode(self.service.nodes())
            if encoded != previous:
                await self.send(Nodes(sub=message.sub, nodes=msgspec.Raw(encoded)))
                previous = encoded
            await trio.sleep(NODES_INTERVAL_SECONDS)

    # --- a step's output -----------------------------------------------------------

    async def _follow_log(self, message: Subscribe, scope: trio.CancelScope) -> None:
        run_id, job_id = message.run_id, message.job_id
        step = await self.readers.run(
            lambda conn: reads.step_log(conn, run_id, job_id, message.step))
        if message.offset > step.size:
            raise ApiError(f"the requested output starts at byte {message.offset}, but the "
                           f"step has written {step.size} bytes so far", status=416,
                           code="RANGE-NOT-SATISFIABLE")
        feed = None if step.complete else await self.feeds.follow_log(run_id, job_id, step.index)
        try:
            await _LogStream(self, message, step, feed, scope).run()
        finally:
            if feed is not None:
                feed.release()


class _LogStream:
    """Sends one step's output from an offset: from the store until it reaches the shared
    tail, then from the tail up to the end of the feed's last tick, at most every
    ``FRAME_INTERVAL_SECONDS``. Output before that end that the client has not received
    yet is a backlog and goes out without waiting.

    While it waits for a tick, the feed's task may send the tick's frame for it
    (:meth:`_send_on_tick`) and leave it waiting. Only a stream whose frame cannot go
    out at once wakes up and sends it itself, from :attr:`position`.
    """

    def __init__(self, session: ConsoleSession, message: Subscribe, step: reads.StepLog,
                 feed: LogFeed | None, scope: trio.CancelScope) -> None:
        self.session = session
        self.scope = scope  # the subscription's: once cancelled, nothing more is sent
        self.sub = message.sub
        self.run_id, self.job_id = message.run_id, message.job_id
        self.step = step
        self.feed = feed
        self.position = message.offset
        self.live = False  # has read from the shared tail at least once
        self.last_frame = -math.inf  # when the last frame was read, on Trio's clock

    async def run(self) -> None:
        while True:
            feed = self.feed
            if feed is None or self.position < feed.ring.start:
                if not await self._send_stored(feed):
                    return
                continue
            if feed.error is not None:
                raise feed.error
            if self.position >= feed.tick_end:
                # A stopped feed's tick_end is the tail's end: the client has it all.
                if feed.stopped and feed.ring.complete:
                    await self.session.send(LogEnd(sub=self.sub, size=feed.ring.end))
                    return
                if feed.stopped:
                    return
                await self._wait_for_tick(feed)
                continue
            try:
                start, length, frame = feed.frame(self.sub, self.position, MAX_FRAME_BYTES,
                                                  websocket=self.session.sends_frames,
                                                  deflate_bits=self.session.deflate_bits)
            except Behind:
                continue
            self.live = True
            await self._send_encoded(start, length, frame)

    async def _wait_for_tick(self, feed: LogFeed) -> None:
        """Wait for the feed's next tick (or until it stops), and until
        ``FRAME_INTERVAL_SECONDS`` after the last frame."""
        tick = feed.ticks
        while feed.ticks == tick and not feed.stopped:
            await feed.wait_for_tick(self._send_on_tick)
        # Ticks are a little more than the interval apart, so this waits only for a
        # frame read late in its tick, or for the last frames after the feed stopped.
        if trio.current_time() < self.last_frame + FRAME_INTERVAL_SECONDS:
            await trio.sleep_until(self.last_frame + FRAME_INTERVAL_SECONDS)

    def _send_on_tick(self) -> bool:
        """Send this tick's frame from the feed's task when the client is due one, the
        frame reaches the tick's end, and the connection takes it without waiting.

        Returns True, having sent nothing, when the client already has every byte up to
        the tick's end. Returns False, having sent nothing, in every other case, and
        the task then wakes to send the frame itself.
        """
        feed = self.feed
        if (feed is None or feed.error is not None or self.scope.cancel_called
                or not self.session.sends_frames):
            return False
        if self.position >= feed.tick_end:
            return True
        now = trio.current_time()
        if now < self.last_frame + FRAME_INTERVAL_SECONDS:
            return False
        try:
            start, length, frame = feed.frame(self.sub, self.position, MAX_FRAME_BYTES,
                                              websocket=True,
                                              deflate_bits=self.session.deflate_bits)
        except Behind:
            return False
        # A frame that stops short of the tick's end is part of a backlog, which the task
        # sends frame after frame without waiting for ticks.
        if not length or start + length != feed.tick_end:
            return False
        if not self.session.send_log_nowait(frame):
            return False
        self.last_frame = now
        self.position = start + length
        return True

    async def _send_stored(self, feed: LogFeed | None) -> bool:
        """Send the next frame from the store; return False when the subscription ended."""
        position, step = self.position, self.step
        session = self.session
        if feed is not None and not self.live:
            # Clients that subscribe at the same moment read the same stored frames.
            shared = feed.shared_frame(self.sub, position, MAX_FRAME_BYTES,
                                       websocket=session.sends_frames,
                                       deflate_bits=session.deflate_bits)
            if shared is not None:
                await self._send_encoded(*shared)
                return True
        start, data = await session.readers.run(lambda conn: reads.read_range(
            conn, self.run_id, self.job_id, step, position, MAX_FRAME_BYTES))
        if feed is not None and self.live and data and start < feed.ring.start:
            # The client read the live tail once and then fell behind what it holds.
            await self.session.send(Resync(
                sub=self.sub, offset=self.position,
                reason=f"the client fell more than {feed.ring.capacity} bytes behind the "
                       "live output; subscribe again from offset"))
            return False
        if data:
            size = max(step.size, start + len(data), feed.ring.end if feed else 0)
            # NOTE: a stored frame that no other client shares is encoded for this client
            # alone, so with permessage-deflate it is compressed on the Trio thread (about 2
            # ms per 256 KiB frame at DEFLATE_LEVEL 1, an estimate from 80-byte lines).
            frame = encode_log_frame(self.sub, start, size, data,
                                     websocket=session.sends_frames,
                                     deflate_bits=session.deflate_bits)
            if feed is not None:
                feed.share_frame(self.sub, position, MAX_FRAME_BYTES, (start, len(data), frame),
                                 websocket=session.sends_frames,
                                 deflate_bits=session.deflate_bits)
            await self._send_encoded(start, len(data), frame)
            return True
        if feed is None:
            await self.session.send(LogEnd(sub=self.sub, size=max(step.size, self.position)))
            return False
        # The store has nothing more at this offset. When the tail starts later, the rest
        # before it was dropped from the middle of a long output.
        self.position = max(self.position, feed.ring.start)
        return True

    async def _send_encoded(self, start: int, length: int, frame: bytes) -> None:
        self.last_frame = trio.current_time()
        # A write without waiting costs less than one through the server's stream.
        if not self.session.send_log_nowait(frame):
            await self.session.send_log(frame)
        self.position = start + length
