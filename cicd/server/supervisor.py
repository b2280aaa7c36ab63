"""Supervision of long-lived tasks: restart on failure with backoff, escalate when it persists.

A supervised task that raises an unexpected error is logged and restarted after
an exponential, jittered delay. When it failed more than ``max_restarts`` times in
``window`` seconds, its component in the health map turns from "ok" to the
error, which makes ``/readyz`` report the process not ready, and it goes on being
retried at the longest delay; a success after that turns it back to "ok".
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from cicd.concurrency import single_error

logger = logging.getLogger("cicd.server")

Startable = Callable[..., Awaitable[None]]


async def supervise(
    name: str,
    start: Startable,
    health: dict[str, str],
    *,
    max_restarts: int = 5,
    window: float = 60.0,
    first_delay: float = 0.1,
    max_delay: float = 30.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``start(task_status=...)`` and restart it whenever it fails."""
    failures: deque[float] = deque()
    delay = first_delay
    reported = False
    health.setdefault(name, "starting")
    while True:
        try:
            with single_error():
                async with trio.open_nursery() as nursery:
                    await nursery.start(start)
                    health[name] = "ok"
                    if not reported:
                        reported = True
                        task_status.started()
            return  # the task ended by itself
        except Exception as exc:
            now = trio.current_time()
            failures.append(now)
            while failures and failures[0] < now - window:
                failures.popleft()
            if len(failures) > max_restarts:
                health[name] = f"failing: {exc}"
                logger.error("%s failed %d times in %gs, reporting not ready: %s", name,
                             len(failures), window, exc, exc_info=exc)
                delay = max_delay
            else:
                logger.error("%s failed, restarting in %.1fs: %s", name, delay, exc, exc_info=exc)
            await trio.sleep(random.uniform(delay / 2, delay))
            delay = min(max_delay, delay * 2)


def periodic(interval: float, work: Callable[[], Awaitable[None]]) -> Startable:
    """Return a startable task that runs ``work`` every ``interval`` seconds."""

    async def loop(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await work()
            await trio.sleep(interval)

    return loop
