"""The dispatcher: takes a run's runnable jobs to the cluster and starts each where it is placed.

It reads job ids from a bounded channel in the order they became runnable, queues
each in the :class:`~cicd.scheduling.cluster.Cluster` with its request, and when
the cluster places it, records the assignment and starts the job on that node. A
job that never fits ends at once with the reason. A job whose node was lost is
placed again for its next attempt when its pipeline's ``retry`` allows it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from cicd.events import model as ev
from cicd.execution.control import StopRequest
from cicd.scheduling.cluster import Cluster, NeverFits
from cicd.scheduling.core import JobRequest

logger = logging.getLogger("cicd.scheduling")

# start_job(job, node, attempt) -> result. A result with ``retry`` true requests another attempt.
StartJob = Callable[[str, str, int], Awaitable[object]]
Emit = Callable[[ev.Event], Awaitable[object]]


class Dispatcher:
    def __init__(self, cluster: Cluster, *, run_id: str, tenant_id: str, emit: Emit,
                 start_job: StartJob,
                 request_for: Callable[[str], tuple[JobRequest, str]],
                 never_fits: Callable[[str, NeverFits], Awaitable[object]],
                 before_retry: Callable[[str, str, int, bool], Awaitable[object | None]],
                 on_assigned: Callable[[float, str], None] | None = None,
                 assigned_before: dict[str, str] | None = None,
                 lost_before: dict[str, tuple[str, int, bool]] | None = None,
                 stop_for: Callable[[str], StopRequest] | None = None,
                 withdrawn: Callable[[str, str], Awaitable[object]] | None = None) -> None:
        self.cluster = cluster
        self.run_id = run_id
        self.tenant_id = tenant_id
        self.emit = emit
        self.start_job = start_job
        self.request_for = request_for  # job -> (its request, its pool)
        self.never_fits = never_fits  # ends a job that fits no node; returns its result
        # before_retry(job, lost node, next attempt, recorded) records the retry (unless
        # ``recorded``: a previous server process did) and waits until the lost attempt
        # can no longer run. It returns the job's result when the job ends instead.
        self.before_retry = before_retry
        self.on_assigned = on_assigned  # (milliseconds from runnable to assigned, node)
        # Jobs a previous server process assigned, taken over after a restart, with their
        # node: they hold their place there again, without a second AssignmentCreated.
        self.assigned_before = assigned_before or {}
        # Jobs taken over after a restart whose last attempt was lost with its node:
        # job -> (node, next attempt, whether the retry is recorded). They wait for the
        # node's fencing before they are placed.
        self.lost_before = lost_before or {}
        self.runnable_at: dict[str, float] = {}  # trio clock time each job was received
        # A job stopped while it waits for a node leaves the queue at once:
        # withdrawn(job, reason) records its end and returns its result.
        self.stop_for = stop_for
        self.withdrawn = withdrawn
        self.waiting: set[str] = set()  # jobs queued in the cluster, not yet placed
        self.closed: str | None = None  # once set, the reason no job is placed any more

    async def serve(self, runnable: trio.MemoryReceiveChannel[str],
                    finished: trio.MemorySendChannel[object]) -> None:
        """Dispatch until ``runnable`` closes and every started job has reported."""
        async with finished, trio.open_nursery() as nursery:
            async for job_id in runnable:
                self.runnable_at[job_id] = trio.current_time()
                nursery.start_soon(self._dispatch, job_id, finished.clone())

    async def _dispatch(self, job_id: str, finished: trio.MemorySendChannel[object]) -> None:
        async with finished:
            key = f"{self.run_id}/{job_id}"
            attempt = 1
            lost = self.lost_before.pop(job_id, None)
            if job_id in self.assigned_before:
                request, _pool = self.request_for(job_id)
                node = self.assigned_before[job_id]
                self.cluster.adopt(request, node)
            else:
                placed: str | object = None
                if lost is not None:
                    lost_node, attempt, recorded = lost
                    placed = await self.before_retry(job_id, lost_node, attempt, recorded)
                if placed is None:
                    placed = await self._place(job_id)
                if not isinstance(placed, str):
                    await finished.send(placed)
                    return
                node = placed
            while True:
                try:
                    result = await self.start_job(job_id, node, attempt)
                finally:
                    self.cluster.release(key)
                if not getattr(result, "retry", False):
                    break
                attempt += 1
                ended = await self.before_retry(job_id, node, attempt, False)
                if ended is not None:
                    result = ended
                    break
                placed = await self._place(job_id)
                if not isinstance(placed, str):
                    result = placed
                    break
                node = placed
            await finished.send(result)

    async def _place(self, job_id: str) -> str | object:
        """Return the node the job was placed on, or the result of a job that never fits."""
        request, pool = self.request_for(job_id)
        runnable_at = trio.current_time()
        stop = self.stop_for(job_id) if self.stop_for is not None else None
        if self.withdrawn is not None:
            if self.closed is not None:
                return await self.withdrawn(job_id, self.closed)
            if stop is not None and stop.requested:
                return await self.withdrawn(job_id, stop.reason)
        with trio.CancelScope() as waiting:
            unlisten = stop.listen(waiting.cancel) if stop is not None else None
            self.waiting.add(job_id)
            try:
                node = await self.cluster.acquire(request, run_id=self.run_id, pool=pool)
            except NeverFits as exc:
                logger.info("job %s of run %s fits no node: %s", job_id, self.run_id, exc)
                await self.cluster.flush_events(self.emit)
                return await self.never_fits(job_id, exc)
            finally:
                self.waiting.discard(job_id)
                if unlisten is not None:
                    unlisten()
        if waiting.cancelled_caught:
            assert stop is not None and self.withdrawn is not None
            logger.info("job %s of run %s left the queue: %s", job_id, self.run_id, stop.reason)
            await self.cluster.flush_events(self.emit)
            return await self.withdrawn(job_id, stop.reason)
        if self.on_assigned is not None:
            self.on_assigned((trio.current_time() - runnable_at) * 1000, node)
        try:
            await self.cluster.flush_events(self.emit)  # the offer goes before the assignment
            await self.emit(ev.AssignmentCreated(
                run_id=self.run_id, tenant_id=self.tenant_id, job=job_id, node=node,
                assignment_id=f"{self.run_id}/{job_id}",
            ))
        except BaseException:
            self.cluster.release(request.job_id)
            raise
        return node
