"""Running one job on a worker: its steps in order, and the events that record it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec
import trio

from cicd.concurrency import single_error
from cicd.errors import CicdError, ProviderError
from cicd.events import model as ev
from cicd.execution.control import StopRequest
from cicd.execution.output import LivePrinter, StepOutput
from cicd.execution.step import StepOutcome, deadline_after, run_step
from cicd.orchestration.states import State
from cicd.pipeline import Job, Pipeline
from cicd.workers.base import JobWorker, StepSpec

T = TypeVar("T")

logger = logging.getLogger("cicd.execution")

class Emit(Protocol):
    """Appends an event to the run's log; with ``durable``, returns once it is committed."""

    def __call__(self, event: ev.Event, *, durable: bool = False) -> Awaitable[object]: ...


class JobContext(msgspec.Struct, kw_only=True):
    """Settings shared by every job of one run."""

    run_id: str
    pipeline: Pipeline
    pipeline_name: str
    tenant_id: str = "default"
    grace: float = 10.0
    log_limit: int | None = None  # bytes kept per step; None keeps everything
    # node_lost(node) tells, after an engine error, whether the node stopped responding.
    # The job then ends failed with reason node_lost.
    node_lost: Callable[[str], Awaitable[bool]] | None = None
    # lost_signal(node) returns an event set once the node is marked lost: a step
    # running there ends at once, failed, instead of waiting for an engine that is stuck.
    lost_signal: Callable[[str], trio.Event | None] | None = None


class ResumePoint(msgspec.Struct, frozen=True, kw_only=True):
    """The point where a job interrupted by a server restart resumes: a step whose container
    still exists."""

    step: int
    container_id: str
    log_size: int
    last_seq: int


class JobResult(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    state: State
    reason: str = ""
    retry: bool = False  # the job ended failed and starts again (a new attempt)


def step_environment(ctx: JobContext, job: Job, step_index: int, workspace: str) -> dict[str, str]:
    """Return the step's variables: built-ins < pipeline < job < step."""
    step = job.steps[step_index - 1]
    env = {
        "CI": "true",
        "CICD": "true",
        "CICD_PIPELINE": ctx.pipeline_name,
        "CICD_RUN_ID": ctx.run_id,
        "CICD_JOB": job.id,
        "CICD_STEP": step.display_name,
        "CICD_WORKSPACE": workspace,
    }
    env.update(ctx.pipeline.env)
    env.update(job.env)
    env.update(step.env)
    return env


async def run_job(
    ctx: JobContext,
    job: Job,
    worker: JobWorker,
    *,
    emit: Emit,
    store: object,
    printer: LivePrinter | None,
    stop: StopRequest,
    node: str,
    resume: ResumePoint | None = None,
) -> JobResult:
    """Prepare ``worker``, run ``job``'s steps on it, remove it, and return the job's end state.

    With ``resume``, the worker and the steps before ``resume.step`` exist already
    (a server restarted while the job ran): the job goes on from that step's
    container. NOTE: the job's timeout then counts again from the restart.
    """
    base: dict[str, Any] = {"run_id": ctx.run_id, "tenant_id": ctx.tenant_id, "job": job.id}
    job_deadline = deadline_after(job.timeout)
    try:
        if resume is not None:
            await worker.adopt()
            return await _run_steps(ctx, job, worker, emit=emit, store=store, printer=printer,
                                    stop=stop, job_deadline=job_deadline, base=base, resume=resume,
                                    node=node)
        if stop.requested:
            await emit(ev.JobCancelled(**base, reason=stop.reason))
            return JobResult(job_id=job.id, state=State.CANCELLED, reason=stop.reason)
        await emit(ev.JobStarted(**base, node=node))
        try:
            with trio.move_on_at(job_deadline) as prepare_scope:
                prepared, _ = await _unless_lost(ctx, node, worker.prepare)
        except ProviderError as exc:
            reason = await _lost_or(ctx, node, _reason_of(exc))
            return await _fail_before_steps(ctx, job, emit, base, State.FAILED,
                                            reason, str(exc), printer)
        if not prepare_scope.cancelled_caught and not prepared:
            reason = await _lost_or(ctx, node, "engine_unavailable")
            return await _fail_before_steps(ctx, job, emit, base, State.FAILED, reason,
                                            _lost_message(node, "the job was prepared"),
                                            printer)
        if prepare_scope.cancelled_caught:
            return await _fail_before_steps(ctx, job, emit, base, State.TIMED_OUT, "timeout",
                                            "the job's timeout expired while preparing it", printer)
        await emit(ev.WorkerCreated(**base, worker=worker.id, provider=worker.kind or node,
                                    node=node, image=job.image))
        return await _run_steps(ctx, job, worker, emit=emit, store=store, printer=printer,
                                stop=stop, job_deadline=job_deadline, base=base, node=node)
    finally:
        with trio.CancelScope(shield=True):
            await worker.close()
            await emit(ev.WorkerTerminated(**base, worker=worker.id))


async def _run_steps(ctx: JobContext, job: Job, worker: JobWorker, **kwargs: Any) -> JobResult:
    # The worker gets later steps ready in this nursery while a step runs (work_ahead);
    # start_step waits for a step whose preparation is under way.
    with single_error():
        async with trio.open_nursery() as ahead:
            result = await _step_loop(ctx, job, worker, ahead=ahead, **kwargs)
            ahead.cancel_scope.cancel()  # no more steps: stop getting any ready
    return result


async def _step_loop(ctx: JobContext, job: Job, worker: JobWorker, *, ahead: trio.Nursery,
                     emit: Emit, store: object, printer: LivePrinter | None, stop: StopRequest,
                     job_deadline: float, base: dict[str, Any],
                     resume: ResumePoint | None = None, node: str = "") -> JobResult:
    job_state = State.SUCCEEDED
    job_reason = ""
    job_message = ""
    specs = [
        StepSpec(run_id=ctx.run_id, job_id=job.id, index=step.index, name=step.display_name,
                 script=step.run, env=step_environment(ctx, job, step.index, worker.workspace))
        for step in job.steps
    ]
    for step in job.steps:
        if resume is not None and step.index < resume.step:
            continue  # ended before the restart
        if job_state is not State.SUCCEEDED or stop.requested:
            reason = "cancelled" if stop.requested and job_state is State.SUCCEEDED else (
                f"an earlier step {job_state.value}")
            await emit(ev.StepSkipped(**base, step=step.index, step_name=step.display_name,
                                      reason=reason))
            if stop.requested and job_state is State.SUCCEEDED:
                job_state, job_reason = State.CANCELLED, stop.reason
            continue
        spec = specs[step.index - 1]
        sink = StepOutput(store, printer, run_id=ctx.run_id, job=job.id, step=step.index,  # type: ignore[arg-type]
                          step_name=step.display_name, limit=ctx.log_limit)
        attach_to = None
        if resume is not None and step.index == resume.step:
            attach_to = resume
            sink.seq, sink.size = resume.last_seq, resume.log_size
        else:
            # Durable before the step begins: a server restarted after the step began
            # must find this record, or it would run the step a second time.
            await emit(ev.StepStarted(**base, step=step.index, step_name=step.display_name,
                                      worker=worker.id), durable=True)
        ahead.start_soon(_work_ahead_quietly, worker, specs[step.index:])
        try:
            finished, outcome = await _unless_lost(ctx, node, functools.partial(
                run_step, worker, spec, sink=sink, step_deadline=deadline_after(step.timeout),
                job_deadline=job_deadline, grace=ctx.grace, stop=stop,
                attach_to=None if attach_to is None else (
                    attach_to.container_id, attach_to.log_size)))
            if not finished or outcome is None:
                # An engine reason, so _lost_or turns the job's reason into node_lost.
                outcome = StepOutcome(state=State.FAILED, exit_code=None,
                                      reason="engine_unavailable",
                                      message=_lost_message(node, "the step ran"))
        except CicdError as exc:
            outcome = StepOutcome(state=State.FAILED, exit_code=None, reason=_reason_of(exc),
                                  message=str(exc))
        finally:
            sink.close()
        # A step that ended while no server watched it keeps the engine's end time.
        ended = outcome.ended_at_ms if outcome.ended_at_ms is not None else ev.now_ms()
        if outcome.state is State.SUCCEEDED:
            await emit(ev.StepCompleted(**base, step=step.index, step_name=step.display_name,
                                        exit_code=0, log_size=sink.size,
                                        truncated_bytes=sink.truncated_bytes, ts=ended))
            continue
        allowed = step.allow_failure and outcome.state in (State.FAILED, State.TIMED_OUT) \
            and not outcome.job_deadline_hit
        await emit(ev.StepFailed(**base, step=step.index, step_name=step.display_name,
                                 state=outcome.state.value, exit_code=outcome.exit_code,
                                 reason=outcome.reason, message=outcome.message,
                                 allowed=allowed, log_size=sink.size,
                                 truncated_bytes=sink.truncated_bytes, ts=ended))
        if allowed:
            continue
        job_state = outcome.state
        job_reason = outcome.reason if outcome.state is not State.CANCELLED else stop.reason
        if job_state is State.FAILED:
            job_reason = await _lost_or(ctx, node, job_reason)
        job_message = f"step {step.display_name!r}: {outcome.message}" if outcome.message else ""

    if job_state is State.SUCCEEDED:
        await emit(ev.JobCompleted(**base))
    elif job_state is State.CANCELLED:
        await emit(ev.JobCancelled(**base, reason=job_reason))
    else:
        await emit(ev.JobFailed(**base, state=job_state.value, reason=job_reason,
                                message=job_message, allowed=job.allow_failure))
    return JobResult(job_id=job.id, state=job_state, reason=job_reason)


async def _fail_before_steps(ctx: JobContext, job: Job, emit: Emit, base: dict[str, Any],
                             state: State, reason: str, message: str,
                             printer: LivePrinter | None) -> JobResult:
    if printer is not None:
        printer.note(f"[{job.id}] {message}")
    logger.info("job %s of run %s %s before its steps: %s", job.id, ctx.run_id, state.value, message)
    for step in job.steps:
        await emit(ev.StepSkipped(**base, step=step.index, step_name=step.display_name,
                                  reason="the job failed before its steps ran"))
    await emit(ev.JobFailed(**base, state=state.value, reason=reason, message=message,
                            allowed=job.allow_failure))
    return JobResult(job_id=job.id, state=state, reason=reason)


async def _unless_lost(ctx: JobContext, node: str,
                       run: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
    """Return (True, ``run()``'s result), or (False, None) after cancelling ``run()``
    once the node is marked lost."""
    lost = ctx.lost_signal(node) if ctx.lost_signal is not None else None
    if lost is None:
        return True, await run()
    if lost.is_set():
        return False, None
    result: tuple[bool, T | None] = (False, None)
    with single_error():
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                await lost.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            result = (True, await run())
            nursery.cancel_scope.cancel()
    return result


def _lost_message(node: str, activity: str) -> str:
    return f"node {node} stopped responding while {activity}"


async def _work_ahead_quietly(worker: JobWorker, upcoming: list[StepSpec]) -> None:
    # Only a speed-up: when it fails, start_step and close do the same work and report.
    try:
        await worker.work_ahead(upcoming)
    except CicdError as exc:
        logger.debug("work ahead of worker %s failed: %s", worker.id, exc)


_ENGINE_REASONS = frozenset({"engine_unavailable", ProviderError.code})


async def _lost_or(ctx: JobContext, node: str, reason: str) -> str:
    """Return ``node_lost`` when an engine error came from a node that stopped responding."""
    if reason in _ENGINE_REASONS and ctx.node_lost is not None and await ctx.node_lost(node):
        return "node_lost"
    return reason


def _reason_of(exc: CicdError) -> str:
    name = type(exc).__name__
    return {"ImagePullError": "image_pull_failed", "EngineUnavailable": "engine_unavailable"}.get(
        name, exc.code
    )
