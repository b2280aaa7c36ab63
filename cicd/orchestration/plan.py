"""Progress of one run through its job graph (a pure core).

:class:`RunPlan` returns which jobs can start now and, when a job ends, which
jobs can never run because of it. It does no I/O: the run driver feeds it the
outcomes and acts on what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable

from cicd.orchestration.states import State, is_success
from cicd.pipeline import Pipeline


class RunPlan:
    def __init__(self, pipeline: Pipeline, *, only: Iterable[str] | None = None) -> None:
        self.pipeline = pipeline
        self.order = pipeline.topological_order()
        self.states: dict[str, State] = {job_id: State.PENDING for job_id in self.order}
        self._released: set[str] = set()
        # Jobs left out of a partial rerun count as passed for their dependents.
        if only is not None:
            keep = set(only)
            for job_id in self.order:
                if job_id not in keep:
                    self.states[job_id] = State.SUCCEEDED
                    self._released.add(job_id)

    def _passed(self, job_id: str) -> bool:
        job = self.pipeline.jobs[job_id]
        return is_success(self.states[job_id], allow_failure=job.allow_failure)

    def take_ready(self) -> list[str]:
        """Return jobs whose needs all passed and that were not returned before."""
        ready = []
        for job_id in self.order:
            if job_id in self._released or self.states[job_id] is not State.PENDING:
                continue
            if all(self._passed(need) for need in self.pipeline.jobs[job_id].needs):
                self._released.add(job_id)
                ready.append(job_id)
        return ready

    def finish(self, job_id: str, state: State) -> list[str]:
        """Record the end of ``job_id``; return the pending jobs that must be skipped now."""
        self.states[job_id] = state
        if self._passed(job_id):
            return []
        skipped = []
        # A pending job is skipped when any of its needs ended without passing.
        changed = True
        while changed:
            changed = False
            for other in self.order:
                if self.states[other] is not State.PENDING or other in self._released:
                    continue
                needs = self.pipeline.jobs[other].needs
                if any(self.states[n].terminal and not self._passed(n) for n in needs):
                    self.states[other] = State.SKIPPED
                    skipped.append(other)
                    changed = True
        return skipped

    def mark_released(self, job_id: str) -> None:
        """Record that ``job_id`` was handed out (or ended) outside :meth:`take_ready`."""
        self._released.add(job_id)

    def take_released(self, job_ids: list[str]) -> list[str]:
        """Hand out ``job_ids`` now, whatever their needs (jobs already running)."""
        for job_id in job_ids:
            self._released.add(job_id)
            self.states[job_id] = State.RUNNING
        return list(job_ids)

    def cancel_one(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it was never handed out; return whether it was."""
        if job_id in self._released or self.states[job_id] is not State.PENDING:
            return False
        self._released.add(job_id)
        self.states[job_id] = State.CANCELLED
        return True

    def cancel_pending(self) -> list[str]:
        """Mark every job that has not been released as cancelled and return them."""
        cancelled = []
        for job_id in self.order:
            if self.states[job_id] is State.PENDING and job_id not in self._released:
                self.states[job_id] = State.CANCELLED
                cancelled.append(job_id)
        return cancelled

    @property
    def done(self) -> bool:
        return all(state.terminal for state in self.states.values())

    def run_state(self, *, cancelled: bool, halted: bool = False) -> State:
        """Return the run's outcome: ``cancelled`` when the run was stopped as a whole.

        ``halted`` means that no new jobs started (a server shutting down): the run
        succeeds if every job passed all the same, and is cancelled otherwise.
        Otherwise a failed job (not allowed to fail) fails the run, and a run with jobs
        cancelled one by one and none failed ends cancelled.
        """
        if cancelled:
            return State.CANCELLED
        if all(self._passed(job_id) for job_id in self.order):
            return State.SUCCEEDED
        if halted:
            return State.CANCELLED
        if self.failed_jobs():
            return State.FAILED
        if self.cancelled_jobs():
            return State.CANCELLED
        return State.FAILED

    def failed_jobs(self) -> list[str]:
        """Return the jobs that failed or timed out and were not allowed to."""
        return [job_id for job_id in self.order
                if self.states[job_id] in (State.FAILED, State.TIMED_OUT)
                and not self._passed(job_id)]

    def cancelled_jobs(self) -> list[str]:
        return [job_id for job_id in self.order if self.states[job_id] is State.CANCELLED]
