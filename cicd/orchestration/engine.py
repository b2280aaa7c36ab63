"""The run driver: takes one pipeline run from request to its final event.

Three contexts cooperate as tasks of one nursery, linked by bounded channels:

- orchestration (this module) releases jobs whose needs have passed into the
  ``runnable`` channel, and reads job results from the ``finished`` channel;
- scheduling (:class:`~cicd.scheduling.dispatcher.Dispatcher`) queues each
  runnable job in the cluster and starts it on the node it is placed on;
- execution (:func:`~cicd.execution.job.run_job`) runs the job's steps on a
  worker from the node's provider.

``runnable`` holds at most one entry per job, and ``finished`` at most one result
and one wake-up per job, so neither side can block the other into a deadlock and
neither grows past the pipeline's size.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from cicd.errors import CicdError
from cicd.events import model as ev
from cicd.execution.control import StopRequest
from cicd.execution.job import JobContext, JobResult, ResumePoint, run_job
from cicd.execution.output import LivePrinter
from cicd.orchestration.plan import RunPlan
from cicd.orchestration.states import State
from cicd.pipeline import Job, Pipeline
from cicd.scheduling.cluster import MIN_CPU_REQUEST, Cluster, NeverFits, single_node_cluster
from cicd.scheduling.core import JobRequest
from cicd.scheduling.dispatcher import Dispatcher
from cicd.storage.store import DropLogChunks, EventStore
from cicd.workers.base import Provider, SourceArchive

logger = logging.getLogger("cicd.orchestration")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id() -> str:
    """Return a new run id: a ULID (48-bit millisecond time, 80 random bits, in
    Crockford base32), unique and sortable by creation time.

    Written here rather than imported: the ``ulid`` package's import costs 10 ms of
    the start-up of every ``cicd run``.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class RunRequest(msgspec.Struct, kw_only=True):
    pipeline: Pipeline
    pipeline_yaml: str
    source_dir: str
    run_id: str = msgspec.field(default_factory=new_run_id)
    pipeline_name: str = ""
    tenant_id: str = "default"
    trigger: str = "cli"
    parallel: int = msgspec.field(default_factory=lambda: os.cpu_count() or 1)
    grace: float = 10.0
    only_jobs: list[str] | None = None
    priority: int | None = None  # the run's; None: the pipeline's ``priority``
    owner: str = ""  # host:pid of a `cicd run` process
    # The server writes RunRequested when it accepts the run; `cicd run` lets
    # execute() write it.
    requested: bool = False


class RunResume(msgspec.Struct, kw_only=True):
    """The state of a run that a restarted server takes over."""

    ended: dict[str, State]  # jobs that had ended, with their end state
    reattach: dict[str, ResumePoint]  # running jobs whose step container lives
    nodes: dict[str, str] = {}  # reattached job -> the node it runs on
    attempts: dict[str, int] = {}  # reattached job -> its attempt number, when above 1
    lost: dict[str, int]  # running jobs without a live container: job -> running step (0: none)
    # Running jobs on a node that did not respond at the restart: job -> (node, running
    # step, attempt). Their containers may still run there, so they end node_lost.
    node_lost: dict[str, tuple[str, int, int]] = {}
    # Jobs whose next attempt waits until a lost node is fenced: job -> (node, attempt,
    # whether JobRetried is in the log already).
    lost_retries: dict[str, tuple[str, int, bool]] = {}


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    state: State
    jobs: dict[str, State]


class RunEngine:
    def __init__(self, store: EventStore, provider: Provider, *,
                 printer: LivePrinter | None = None, stop: StopRequest | None = None,
                 cluster: Cluster | None = None, log_limit: int | None = None,
                 on_assigned: Callable[[float, str], None] | None = None,
                 default_request: tuple[int, int] = (0, 0),
                 node_lost_after: float | None = None) -> None:
        self.on_assigned = on_assigned
        self.store = store
        self.provider = provider  # the provider of a single-node cluster built per run
        self.printer = printer
        self.stop = stop or StopRequest()
        self.cluster = cluster
        self.default_request = default_request  # (millicores, bytes) of a job without resources
        # None: a lost attempt is retried only once its node is back and fenced.
        self.node_lost_after = node_lost_after
        self.log_limit = log_limit
        self.job_stops: dict[str, StopRequest] = {}
        self._plan: RunPlan | None = None
        self._base: dict[str, Any] = {}
        self._wake: trio.MemorySendChannel[object] | None = None
        self.dispatcher: Dispatcher | None = None  # of the run being executed
        self.no_new_jobs: str | None = None  # the reason, once no further job may start

    def pipeline_name(self, request: RunRequest) -> str:
        if request.pipeline_name:
            return request.pipeline_name
        if request.pipeline.name:
            return request.pipeline.name
        return os.path.basename(os.path.abspath(request.source_dir)) or "pipeline"

    def requested_event(self, request: RunRequest, *, executor: str) -> ev.RunRequested:
        return ev.RunRequested(
            run_id=request.run_id, tenant_id=request.tenant_id, correlation_id=request.run_id,
            pipeline=self.pipeline_name(request), pipeline_yaml=request.pipeline_yaml,
            source=os.path.abspath(request.source_dir), jobs=list(request.pipeline.jobs),
            executor=executor, trigger=request.trigger, only_jobs=request.only_jobs,
            owner=request.owner,
        )

    async def execute(self, request: RunRequest, resume: RunResume | None = None) -> RunSummary:
        """Run every job of ``request`` as its needs allow and return the outcome."""
        pipeline = request.pipeline
        run_id = request.run_id
        name = self.pipeline_name(request)
        base: dict[str, Any] = {"run_id": run_id, "tenant_id": request.tenant_id,
                                "correlation_id": run_id}
        self._base = base

        if resume is None:
            if not request.requested:
                await self.store.append(self.requested_event(request, executor=self.provider.kind),
                                        wait=True)
            for job in pipeline.jobs.values():
                await self.store.append(ev.JobRequested(
                    **base, job=job.id, image=job.image, needs=list(job.needs),
                    allow_failure=job.allow_failure, steps=[s.display_name for s in job.steps],
                ))
            await self.store.append(ev.RunStarted(**base))
        logger.info("run %s of pipeline %s %s with %d jobs", run_id, name,
                    "resumed" if resume else "started", len(pipeline.jobs))

        cluster = self.cluster or single_node_cluster(self.provider, max_jobs=request.parallel)
        ctx = JobContext(run_id=run_id, pipeline=pipeline, pipeline_name=name,
                         tenant_id=request.tenant_id, grace=request.grace,
                         log_limit=self.log_limit, node_lost=cluster.confirm_lost,
                         lost_signal=cluster.lost_signal)
        source = SourceArchive(request.source_dir)
        plan = RunPlan(pipeline, only=request.only_jobs)
        self._plan = plan
        priority = pipeline.priority if request.priority is None else request.priority
        for job_id in pipeline.jobs:
            self.job_stops[job_id] = self.stop.child()
        if request.only_jobs is not None and resume is None:
            for job_id in pipeline.jobs:
                if job_id not in request.only_jobs:
                    await self._end_unstarted(pipeline.jobs[job_id], ev.JobSkipped(
                        **base, job=job_id, reason="succeeded in the run this one retries"))
        if resume is not None:
            await self._apply_resume(plan, resume, request.only_jobs)

        def request_for(job_id: str) -> tuple[JobRequest, str]:
            job = pipeline.jobs[job_id]
            cpu = job.resources.cpu_millis or self.default_request[0]
            memory = job.resources.memory_bytes or self.default_request[1]
            return JobRequest(
                job_id=f"{run_id}/{job_id}", tenant=request.tenant_id,
                cpu_millis=max(MIN_CPU_REQUEST, cpu), memory_bytes=memory,
                required_labels=job.runs_on,
                priority=priority, runnable_at_ms=int(trio.current_time() * 1000),
            ), job.runs_on.get("pool", "")

        async def start_job(job_id: str, node_name: str, attempt: int) -> JobResult:
            job = pipeline.jobs[job_id]
            if resume is not None and job_id in resume.attempts:
                attempt = resume.attempts.pop(job_id)
            worker = cluster.provider(node_name).job_worker(
                run_id=run_id, job_id=job_id, image=job.image,
                cpu_millis=job.resources.cpu_millis, memory_bytes=job.resources.memory_bytes,
                source=source, on_progress=self._progress, attempt=attempt,
            )
            point = resume.reattach.get(job_id) if resume is not None else None
            try:
                result = await run_job(ctx, job, worker, emit=self._emit, store=self.store,
                                       printer=self.printer, stop=self.job_stops[job_id],
                                       node=node_name, resume=point)
            except CicdError as exc:
                logger.error("job %s of run %s failed: %s", job_id, run_id, exc)
                await self._emit(ev.JobFailed(**base, job=job_id, reason=exc.code,
                                              message=str(exc)))
                return JobResult(job_id=job_id, state=State.FAILED, reason=exc.code)
            finally:
                if resume is not None:
                    resume.reattach.pop(job_id, None)
            retry = job.retry
            if result.reason == "node_lost" and result.reason in retry.when \
                    and attempt <= retry.max and not self.job_stops[job_id].requested:
                logger.warning("job %s of run %s lost its node %s; attempt %d of %d follows",
                               job_id, run_id, node_name, attempt + 1, retry.max + 1)
                return JobResult(job_id=job_id, state=result.state, reason=result.reason,
                                 retry=True)
            return result

        async def never_fits(job_id: str, exc: NeverFits) -> JobResult:
            await self._end_unstarted(pipeline.jobs[job_id], ev.JobFailed(
                **base, job=job_id, reason="unschedulable", message=f"{exc} [{exc.reason}]",
                allowed=pipeline.jobs[job_id].allow_failure))
            return JobResult(job_id=job_id, state=State.FAILED, reason="unschedulable")

        async def before_retry(job_id: str, node_name: str, attempt: int,
                               recorded: bool = False) -> JobResult | None:
            # The new attempt is recorded now (the job is pending again), but it is placed
            # only once the lost one cannot be running: see Cluster.wait_lost_or_fenced.
            # ``recorded``: a previous server process recorded it and waited already.
            # NOTE: that wait is not carried over, so after a restart the limit
            # (node_lost_after, or the job's timeout) counts again from the restart.
            job = pipeline.jobs[job_id]
            stop = self.job_stops[job_id]
            limit = self.node_lost_after if self.node_lost_after is not None else job.timeout
            if not recorded:
                for step in job.steps:
                    await self.store.append_log(
                        DropLogChunks(run_id, job_id, step.index, 0, 2**62))
                await self._emit(ev.JobRetried(**base, job=job_id, attempt=attempt,
                                               reason="node_lost", previous_node=node_name))
                await self._emit(ev.AssignmentRejected(
                    **base, job=job_id, reason="node_lost",
                    message=f"waiting for node {node_name} to come back and remove the lost "
                            f"attempt's containers (at most {limit:g}s)"))
            fenced = await cluster.wait_lost_or_fenced(node_name, limit,
                                                       stopped=lambda: stop.requested)
            if stop.requested:
                await self._end_unstarted(job, ev.JobCancelled(**base, job=job_id,
                                                               reason=stop.reason))
                return JobResult(job_id=job_id, state=State.CANCELLED, reason=stop.reason)
            if not fenced and self.node_lost_after is None:
                message = (f"node {node_name} did not come back within the job's timeout "
                           f"({limit:g}s), so attempt {attempt - 1} may still run there; set "
                           "scheduling.node_lost_after to start it again anyway")
                await self._end_unstarted(job, ev.JobFailed(
                    **base, job=job_id, reason="node_lost", message=message,
                    allowed=job.allow_failure))
                return JobResult(job_id=job_id, state=State.FAILED, reason="node_lost")
            return None

        async def withdrawn(job_id: str, reason: str) -> JobResult:
            await self._end_unstarted(pipeline.jobs[job_id], ev.JobCancelled(
                **base, job=job_id, reason=reason))
            return JobResult(job_id=job_id, state=State.CANCELLED, reason=reason)

        dispatcher = Dispatcher(cluster, run_id=run_id, tenant_id=request.tenant_id,
                                emit=self._emit, start_job=start_job, request_for=request_for,
                                never_fits=never_fits, before_retry=before_retry,
                                on_assigned=self.on_assigned,
                                assigned_before=dict(resume.nodes) if resume else {},
                                lost_before=dict(resume.lost_retries) if resume else {},
                                stop_for=self.job_stops.__getitem__, withdrawn=withdrawn)
        dispatcher.closed = self.no_new_jobs
        self.dispatcher = dispatcher
        size = max(1, len(pipeline.jobs))
        runnable_send, runnable_receive = trio.open_memory_channel[str](size)
        finished_send, finished_receive = trio.open_memory_channel[object](2 * size + 1)
        self._wake = finished_send.clone()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.serve, runnable_receive, finished_send)
            async with runnable_send, finished_receive:
                for job_id in self._first_jobs(plan, resume):
                    await runnable_send.send(job_id)
                while not plan.done:
                    result = await finished_receive.receive()
                    if self.stop.requested or self.no_new_jobs is not None:
                        reason = self.no_new_jobs or self.stop.reason
                        for cancelled in plan.cancel_pending():
                            await self._end_unstarted(pipeline.jobs[cancelled], ev.JobCancelled(
                                **base, job=cancelled, reason=reason))
                    if isinstance(result, JobResult):
                        await self._finish(plan, result.job_id, result.state)
                    for job_id in plan.take_ready():
                        await runnable_send.send(job_id)
            await self._wake.aclose()
        await cluster.flush_events(self._emit)

        state = plan.run_state(cancelled=self.stop.requested,
                               halted=self.no_new_jobs is not None)
        if state is State.SUCCEEDED:
            await self.store.append(ev.RunCompleted(**base), wait=True)
        elif state is State.CANCELLED:
            if self.stop.requested:
                reason = self.stop.reason
            elif self.no_new_jobs is not None:
                reason = self.no_new_jobs
            else:
                reason = "jobs cancelled: " + ", ".join(plan.cancelled_jobs())
            await self.store.append(ev.RunCancelled(**base, reason=reason), wait=True)
        else:
            failed = [j for j, s in plan.states.items() if s is not State.SUCCEEDED
                      and not (pipeline.jobs[j].allow_failure and s in (State.FAILED, State.TIMED_OUT))]
            await self.store.append(ev.RunFailed(**base, reason="jobs did not succeed: "
                                                 + ", ".join(failed)), wait=True)
        logger.info("run %s ended %s", run_id, state.value)
        return RunSummary(run_id=run_id, state=state, jobs=dict(plan.states))

    def _first_jobs(self, plan: RunPlan, resume: RunResume | None) -> list[str]:
        # Jobs to take over go first, so they hold their nodes before new jobs queue.
        first = [] if resume is None else plan.take_released(
            [*resume.reattach, *resume.lost_retries])
        return first + plan.take_ready()

    async def _apply_resume(self, plan: RunPlan, resume: RunResume,
                            only_jobs: list[str] | None) -> None:
        for job_id, state in resume.ended.items():
            if only_jobs is not None and job_id not in only_jobs:
                continue  # a retry's job that passed in the original run: RunPlan counts it so
            plan.states[job_id] = state
            plan.mark_released(job_id)
        pipeline = plan.pipeline
        for job_id, running_step in resume.lost.items():
            job = pipeline.jobs[job_id]
            message = "the server restarted and the job's container was gone"
            await self._fail_steps(job_id, running_step, "server_restarted", message)
            await self._emit(ev.JobFailed(**self._base, job=job_id, reason="server_restarted",
                                          message=message, allowed=job.allow_failure))
            plan.mark_released(job_id)
            await self._finish(plan, job_id, State.FAILED)
        for job_id, (node_name, running_step, attempt) in resume.node_lost.items():
            job = pipeline.jobs[job_id]
            message = (f"node {node_name} did not respond when the server restarted, so the "
                       f"job's container may still run there")
            await self._fail_steps(job_id, running_step, "node_lost", message)
            await self._emit(ev.JobFailed(**self._base, job=job_id, reason="node_lost",
                                          message=message, allowed=job.allow_failure))
            if "node_lost" in job.retry.when and attempt <= job.retry.max:
                logger.warning("job %s of run %s lost its node %s in the restart; attempt %d "
                               "of %d follows", job_id, self._base["run_id"], node_name,
                               attempt + 1, job.retry.max + 1)
                resume.lost_retries[job_id] = (node_name, attempt + 1, False)
                continue
            plan.mark_released(job_id)
            await self._finish(plan, job_id, State.FAILED)

    async def _fail_steps(self, job_id: str, running_step: int, reason: str,
                          message: str) -> None:
        """Fail the step that ran at the restart and skip the ones after it."""
        assert self._plan is not None
        for step in self._plan.pipeline.jobs[job_id].steps:
            if step.index == running_step:
                await self._emit(ev.StepFailed(**self._base, job=job_id, step=step.index,
                                               step_name=step.display_name, reason=reason,
                                               message=message))
            elif step.index > running_step:
                await self._emit(ev.StepSkipped(**self._base, job=job_id, step=step.index,
                                                step_name=step.display_name, reason=reason))

    async def _finish(self, plan: RunPlan, job_id: str, state: State) -> None:
        for skipped in plan.finish(job_id, state):
            await self._end_unstarted(plan.pipeline.jobs[skipped], ev.JobSkipped(
                **self._base, job=skipped, reason=f"needs {job_id}, which {state.value}"))

    def start_no_new_jobs(self, reason: str) -> None:
        """Start no further job of this run and let the running ones go on, for a shutdown.

        Jobs waiting for a node and jobs not yet runnable end cancelled with ``reason``.
        The run ends cancelled once its running jobs end.
        """
        if self.no_new_jobs is not None:
            return
        self.no_new_jobs = reason
        if self.dispatcher is not None:
            self.dispatcher.closed = reason
            for job_id in list(self.dispatcher.waiting):
                self.job_stops[job_id].request(reason)
        if self._wake is not None:
            try:
                self._wake.send_nowait(None)  # the driver cancels the jobs not yet runnable
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    def has_job(self, job_id: str) -> bool | None:
        """Tell whether the run's pipeline has the job, or None before it is read."""
        plan = self._plan
        return None if plan is None else job_id in plan.states

    async def cancel_job(self, job_id: str, reason: str = "cancelled") -> bool:
        """Stop one job: a running one gets the stop sequence, a waiting one ends now.

        Returns False when the job had already ended (nothing to do).
        """
        plan = self._plan
        if plan is None or job_id not in plan.states or plan.states[job_id].terminal:
            return False
        if plan.cancel_one(job_id):
            await self._end_unstarted(plan.pipeline.jobs[job_id], ev.JobCancelled(
                **self._base, job=job_id, reason=reason))
            await self._finish(plan, job_id, State.CANCELLED)
            if self._wake is not None:
                try:
                    self._wake.send_nowait(None)  # let the driver see that the plan changed
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
            return True
        self.job_stops[job_id].request(reason)
        return True

    async def _end_unstarted(self, job: Job, event: ev.Event) -> None:
        """Record the end of a job that never started: its steps first, then the job."""
        what = {"JobFailed": "the job failed before it started"}.get(
            type(event).__name__, f"the job was {type(event).__name__[3:].lower()}")
        for step in job.steps:
            await self._emit(ev.StepSkipped(**self._base, job=job.id, step=step.index,
                                            step_name=step.display_name, reason=what))
        await self._emit(event)

    async def _emit(self, event: ev.Event, *, durable: bool = False) -> None:
        await self.store.append(event, wait=durable)

    def _progress(self, line: str) -> None:
        if self.printer is not None:
            self.printer.note(line)
