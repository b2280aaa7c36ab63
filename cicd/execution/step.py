"""Running one step: its output, its deadline, and the TERM-then-KILL sequence."""

from __future__ import annotations

import logging
import math
import signal

import msgspec
import trio

from cicd.concurrency import single_error
from cicd.execution.control import StopRequest
from cicd.orchestration.states import State
from cicd.workers.base import JobWorker, OutputSink, StepSpec

logger = logging.getLogger("cicd.execution")

OOM_EXIT_CODE = 137


class StepOutcome(msgspec.Struct, frozen=True, kw_only=True):
    state: State
    exit_code: int | None
    reason: str = ""
    message: str = ""
    # True when the job's deadline, not the step's own, ended the step.
    job_deadline_hit: bool = False
    ended_at_ms: int | None = None  # see ExitStatus.ended_at_ms


async def run_step(
    worker: JobWorker,
    spec: StepSpec,
    *,
    sink: OutputSink,
    step_deadline: float,
    job_deadline: float,
    grace: float,
    stop: StopRequest,
    attach_to: tuple[str, int] | None = None,
) -> StepOutcome:
    """Run ``spec`` on ``worker`` and return how it ended.

    Past the earlier of the two deadlines, or on a graceful stop request, the step
    gets SIGTERM, then SIGKILL after ``grace`` seconds (or at once on an immediate
    stop request). The output is read to its end before this returns.

    ``attach_to`` (container id, bytes already stored) takes over a step that a
    previous server process started, instead of starting one.
    """
    if attach_to is None:
        process = await worker.start_step(spec)
    else:
        process = await worker.reattach_step(spec, attach_to[0], skip_bytes=attach_to[1])
    why_stopped: list[str] = []
    try:
        with single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(process.pump_output, sink)
                watchdog = trio.CancelScope()

                async def enforce_deadline() -> None:
                    with watchdog:
                        deadline = min(step_deadline, job_deadline)
                        with trio.move_on_at(deadline):
                            await stop.graceful.wait()
                        if stop.requested:
                            why_stopped.append("cancelled")
                        elif job_deadline <= step_deadline:
                            why_stopped.append("job_timeout")
                        else:
                            why_stopped.append("timeout")
                        if not stop.immediate.is_set():
                            await process.send_signal(signal.SIGTERM)
                            with trio.move_on_after(grace):
                                await stop.immediate.wait()
                        await process.send_signal(signal.SIGKILL)

                nursery.start_soon(enforce_deadline)
                status = await process.wait()
                watchdog.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await process.release()

    if status.oom_killed:
        return StepOutcome(
            state=State.FAILED, exit_code=status.exit_code or OOM_EXIT_CODE, reason="OOMKilled",
            message="the kernel killed the step for exceeding its memory limit",
            ended_at_ms=status.ended_at_ms,
        )
    if why_stopped:
        if why_stopped[0] == "cancelled":
            return StepOutcome(state=State.CANCELLED, exit_code=status.exit_code,
                               reason=stop.reason, ended_at_ms=status.ended_at_ms)
        return StepOutcome(
            state=State.TIMED_OUT, exit_code=status.exit_code, reason="timeout",
            job_deadline_hit=why_stopped[0] == "job_timeout",
            message="the job's timeout expired" if why_stopped[0] == "job_timeout"
            else "the step's timeout expired", ended_at_ms=status.ended_at_ms,
        )
    if status.exit_code == 0:
        return StepOutcome(state=State.SUCCEEDED, exit_code=0, ended_at_ms=status.ended_at_ms)
    return StepOutcome(state=State.FAILED, exit_code=status.exit_code, reason="exit_code",
                       message=f"the script exited with code {status.exit_code}",
                       ended_at_ms=status.ended_at_ms)


def deadline_after(seconds: float | None) -> float:
    """Return the trio clock time ``seconds`` from now, or infinity for None."""
    if seconds is None:
        return math.inf
    return trio.current_time() + seconds
