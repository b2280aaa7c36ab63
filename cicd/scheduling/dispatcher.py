"""The dispatcher: places runnable jobs on a node as its slots free up.

It reads job ids from a bounded channel in the order they became runnable
(FIFO), waits for a free slot on the node (a full node is backpressure on the
run driver, never a growing queue), records the assignment, and starts the job.
Capacity-aware placement across several nodes replaces the single node later;
the channel contract stays the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from cicd.events import model as ev

logger = logging.getLogger("cicd.scheduling")

StartJob = Callable[[str, str], Awaitable[object]]
Emit = Callable[[ev.Event], Awaitable[object]]


class Node:
    """One place where jobs run (a Docker engine, or the local host) with a slot count."""

    def __init__(self, name: str, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a node needs at least one slot, got {slots}")
        self.name = name
        self.slots = trio.CapacityLimiter(slots)


class Dispatcher:
    def __init__(self, node: Node, *, run_id: str, tenant_id: str, emit: Emit,
                 start_job: StartJob,
                 on_assigned: Callable[[float, str], None] | None = None,
                 assigned_before: set[str] | None = None) -> None:
        self.on_assigned = on_assigned  # (milliseconds from runnable to assigned, node)
        # Jobs a previous server process assigned, taken over after a restart: they get
        # a slot again but no second AssignmentCreated.
        self.assigned_before = assigned_before or set()
        self.node = node
        self.run_id = run_id
        self.tenant_id = tenant_id
        self.emit = emit
        self.start_job = start_job

    async def serve(self, runnable: trio.MemoryReceiveChannel[str],
                    finished: trio.MemorySendChannel[object]) -> None:
        """Dispatch until ``runnable`` closes and every started job has reported."""
        async with finished, trio.open_nursery() as nursery:
            async for job_id in runnable:
                token = object()
                runnable_at = trio.current_time()
                await self.node.slots.acquire_on_behalf_of(token)
                if job_id in self.assigned_before:
                    nursery.start_soon(self._run, job_id, token, finished.clone())
                    continue
                if self.on_assigned is not None:
                    self.on_assigned((trio.current_time() - runnable_at) * 1000, self.node.name)
                await self.emit(ev.AssignmentCreated(
                    run_id=self.run_id, tenant_id=self.tenant_id, job=job_id,
                    node=self.node.name, assignment_id=f"{self.run_id}/{job_id}",
                ))
                nursery.start_soon(self._run, job_id, token, finished.clone())

    async def _run(self, job_id: str, token: object,
                   finished: trio.MemorySendChannel[object]) -> None:
        async with finished:
            try:
                result = await self.start_job(job_id, self.node.name)
            finally:
                self.node.slots.release_on_behalf_of(token)
            await finished.send(result)
