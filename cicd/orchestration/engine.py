"""The run driver: takes one pipeline run from request to its final event.

Three contexts cooperate as tasks of one nursery, linked by bounded channels:

- orchestration (this module) releases jobs whose needs have passed into the
  ``runnable`` channel, and reads job results from the ``finished`` channel;
- scheduling (:class:`~cicd.scheduling.dispatcher.Dispatcher`) places each
  runnable job on a node when a slot is free;
- execution (:func:`~cicd.execution.job.run_job`) runs the job's steps on a
  worker from the node's provider.

Both channels hold at most one entry per job of the run, so neither side can
block the other into a deadlock, and neither grows past the pipeline's size.
"""

from __future__ import annotations

import logging
import os
import time

import msgspec
import trio

from cicd.errors import CicdError
from cicd.events import model as ev
from cicd.execution.control import StopRequest
from cicd.execution.job import JobContext, JobResult, run_job
from cicd.execution.output import LivePrinter
from cicd.orchestration.plan import RunPlan
from cicd.orchestration.states import State
from cicd.pipeline import Job, Pipeline
from cicd.scheduling.dispatcher import Dispatcher, Node
from cicd.storage.store import EventStore
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
    tenant_id: str = "default"
    trigger: str = "cli"
    parallel: int = msgspec.field(default_factory=lambda: os.cpu_count() or 1)
    grace: float = 10.0


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    state: State
    jobs: dict[str, State]


class RunEngine:
    def __init__(self, store: EventStore, provider: Provider, *,
                 printer: LivePrinter | None = None, stop: StopRequest | None = None) -> None:
        self.store = store
        self.provider = provider
        self.printer = printer
        self.stop = stop or StopRequest()

    def pipeline_name(self, request: RunRequest) -> str:
        if request.pipeline.name:
            return request.pipeline.name
        return os.path.basename(os.path.abspath(request.source_dir)) or "pipeline"

    async def execute(self, request: RunRequest) -> RunSummary:
        """Run every job of ``request`` as its needs allow and return the outcome."""
        pipeline = request.pipeline
        run_id = request.run_id
        name = self.pipeline_name(request)
        base = {"run_id": run_id, "tenant_id": request.tenant_id, "correlation_id": run_id}

        await self.store.append(ev.RunRequested(
            **base, pipeline=name, pipeline_yaml=request.pipeline_yaml,
            source=os.path.abspath(request.source_dir), jobs=list(pipeline.jobs),
            executor=self.provider.kind, trigger=request.trigger,
        ), wait=True)
        for job in pipeline.jobs.values():
            await self.store.append(ev.JobRequested(
                **base, job=job.id, image=job.image, needs=list(job.needs),
                allow_failure=job.allow_failure, steps=[s.display_name for s in job.steps],
            ))
        await self.store.append(ev.RunStarted(**base))
        logger.info("run %s of pipeline %s started with %d jobs", run_id, name, len(pipeline.jobs))

        ctx = JobContext(run_id=run_id, pipeline=pipeline, pipeline_name=name,
                         tenant_id=request.tenant_id, grace=request.grace)
        source = SourceArchive(request.source_dir)
        plan = RunPlan(pipeline)
        node = Node(self.provider.name, request.parallel)

        async def start_job(job_id: str, node_name: str) -> JobResult:
            job = pipeline.jobs[job_id]
            worker = self.provider.job_worker(
                run_id=run_id, job_id=job_id, image=job.image,
                cpu_millis=job.resources.cpu_millis, memory_bytes=job.resources.memory_bytes,
                source=source, on_progress=self._progress,
            )
            try:
                return await run_job(ctx, job, worker, emit=self._emit, store=self.store,
                                     printer=self.printer, stop=self.stop, node=node_name)
            except CicdError as exc:
                logger.error("job %s of run %s failed: %s", job_id, run_id, exc)
                await self._emit(ev.JobFailed(**base, job=job_id, reason=exc.code,
                                              message=str(exc)))
                return JobResult(job_id=job_id, state=State.FAILED, reason=exc.code)

        dispatcher = Dispatcher(node, run_id=run_id, tenant_id=request.tenant_id,
                                emit=self._emit, start_job=start_job)
        size = max(1, len(pipeline.jobs))
        runnable_send, runnable_receive = trio.open_memory_channel[str](size)
        finished_send, finished_receive = trio.open_memory_channel[object](size)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.serve, runnable_receive, finished_send)
            async with runnable_send, finished_receive:
                for job_id in plan.take_ready():
                    await runnable_send.send(job_id)
                while not plan.done:
                    result = await finished_receive.receive()
                    assert isinstance(result, JobResult)
                    if self.stop.requested:
                        for cancelled in plan.cancel_pending():
                            await self._end_unstarted(base, pipeline.jobs[cancelled], ev.JobCancelled(
                                **base, job=cancelled, reason=self.stop.reason))
                    for skipped in plan.finish(result.job_id, result.state):
                        await self._end_unstarted(base, pipeline.jobs[skipped], ev.JobSkipped(
                            **base, job=skipped,
                            reason=f"needs {result.job_id}, which {result.state.value}"))
                    for job_id in plan.take_ready():
                        await runnable_send.send(job_id)

        state = plan.run_state(cancelled=self.stop.requested)
        if state is State.SUCCEEDED:
            await self.store.append(ev.RunCompleted(**base), wait=True)
        elif state is State.CANCELLED:
            await self.store.append(ev.RunCancelled(**base, reason=self.stop.reason), wait=True)
        else:
            failed = [j for j, s in plan.states.items() if s is not State.SUCCEEDED
                      and not (pipeline.jobs[j].allow_failure and s in (State.FAILED, State.TIMED_OUT))]
            await self.store.append(ev.RunFailed(**base, reason="jobs did not succeed: "
                                                 + ", ".join(failed)), wait=True)
        logger.info("run %s ended %s", run_id, state.value)
        return RunSummary(run_id=run_id, state=state, jobs=dict(plan.states))

    async def _end_unstarted(self, base: dict[str, str], job: Job, event: ev.Event) -> None:
        """Record the end of a job that never started: its steps first, then the job."""
        for step in job.steps:
            await self._emit(ev.StepSkipped(**base, job=job.id, step=step.index,
                                            step_name=step.display_name,
                                            reason=f"the job was {type(event).__name__[3:].lower()}"))
        await self._emit(event)

    async def _emit(self, event: ev.Event) -> None:
        await self.store.append(event)

    def _progress(self, line: str) -> None:
        if self.printer is not None:
            self.printer.note(line)
