"""In-process subscribers fed from the event log (the outbox).

Each subscriber has a cursor in the ``subscriptions`` table: the id of the last
event it handled. Its task reads the events after the cursor, in order, and calls
the handler; the cursor moves on after each batch, so after a crash a handler may
see an event again (at least once) and must be idempotent. An event whose handler
still fails after its retries goes to ``dead_letters``, from where an operator can
replay it; the cursor moves on so that one bad event does not stop the rest.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable

import trio

from cicd.events import model as ev
from cicd.storage.readers import ReaderPool
from cicd.storage.store import EventStore, Write

logger = logging.getLogger("cicd.storage")

Handler = Callable[[int, ev.Event], Awaitable[None]]

BATCH = 500
# Subscribers read the log at most this often (seconds), so one read covers many
# commits on a busy server. Handlers therefore run up to that much later.
POLL_INTERVAL = 0.25
# Events delivered between two checkpoints. A batch of 500 took 5 to 8 ms as one step
# of the event loop on the benchmark machine, while the server took 200 runs/s.
YIELD_EVERY = 32


def _thd_read_batch(conn: sqlite3.Connection, after: int) -> list[tuple[int, str]]:
    return conn.execute("SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?",
                        (after, BATCH)).fetchall()


class Subscriber:
    def __init__(self, name: str, handler: Handler, *, tries: int = 5,
                 base_delay: float = 0.05, max_delay: float = 2.0) -> None:
        self.name = name
        self.handler = handler
        self.tries = tries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.position = 0

    async def run(self, store: EventStore, readers: ReaderPool, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver events to the handler until cancelled."""
        row = await readers.run(lambda conn: conn.execute(
            "SELECT last_event_id FROM subscriptions WHERE name = ?", (self.name,)).fetchone())
        if row is None:
            # A new subscriber starts at the end of the log: it is for what happens next.
            last = await readers.run(lambda conn: conn.execute(
                "SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
            await store.write(Write("INSERT OR IGNORE INTO subscriptions VALUES (?, ?)",
                                    (self.name, int(last))))
            self.position = int(last)
        else:
            self.position = int(row[0])
        task_status.started()
        while True:
            changed = store.changed()
            rows = await readers.run(functools.partial(_thd_read_batch, after=self.position))
            if not rows:
                await changed.wait()
                await trio.sleep(POLL_INTERVAL)
                continue
            for index, (event_id, body) in enumerate(rows, 1):
                await self.deliver(store, int(event_id), ev.decode_event(body))
                self.position = int(event_id)
                if index % YIELD_EVERY == 0:
                    # Handlers need not await anything, so a batch could otherwise run
                    # as one step of the event loop and hold up every other task.
                    await trio.lowlevel.checkpoint()
            await store.write(Write("UPDATE subscriptions SET last_event_id = ? WHERE name = ?",
                                    (self.position, self.name)), wait=False)

    async def deliver(self, store: EventStore, event_id: int, event: ev.Event) -> bool:
        """Call the handler with retries; return False when the event went to dead letters."""
        delay = self.base_delay
        for attempt in range(1, self.tries + 1):
            try:
                await self.handler(event_id, event)
                return True
            except trio.Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - any handler error is retried, then kept
                if attempt == self.tries:
                    logger.error("subscriber %s failed on event %d (%s) %d times: %s; moved to "
                                 "dead letters", self.name, event_id, event.name, attempt, exc)
                    await store.write(Write(
                        "INSERT INTO dead_letters (subscription, event_id, error, attempts,"
                        " failed_at) VALUES (?, ?, ?, ?, ?)",
                        (self.name, event_id, f"{type(exc).__name__}: {exc}", attempt,
                         ev.now_ms())))
                    return False
                logger.warning("subscriber %s: event %d failed (try %d of %d): %s",
                               self.name, event_id, attempt, self.tries, exc)
                # Exponential backoff with full jitter.
                await trio.sleep(random.uniform(0, min(self.max_delay, delay)))
                delay *= 2
        return False

    async def replay(self, store: EventStore, readers: ReaderPool, dead_letter_id: int) -> bool:
        """Deliver one dead letter's event again; mark it replayed when that worked."""
        row = await readers.run(lambda conn: conn.execute(
            "SELECT d.event_id, e.body FROM dead_letters d JOIN events e ON e.id = d.event_id"
            " WHERE d.id = ? AND d.subscription = ?", (dead_letter_id, self.name)).fetchone())
        if row is None:
            return False
        ok = await self.deliver(store, int(row[0]), ev.decode_event(row[1]))
        if ok:
            await store.write(Write("UPDATE dead_letters SET replayed_at = ? WHERE id = ?",
                                    (ev.now_ms(), dead_letter_id)))
        return ok
