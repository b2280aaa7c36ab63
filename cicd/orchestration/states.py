"""State machines of runs, jobs and steps (a pure core).

A job moves ``pending -> scheduled -> running`` and ends in one of the terminal
states; a job that never ran can also end from ``pending`` or ``scheduled``
(skipped because a job it needs failed, or cancelled). Steps have the same
terminal states without ``scheduled``. :func:`check_transition` raises
:class:`~cicd.errors.IllegalTransition` for anything else, so a caller can record
the rejected move as an error instead of crashing.
"""

from __future__ import annotations

import enum

from cicd.errors import IllegalTransition


class State(str, enum.Enum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset(
    {State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.SKIPPED}
)

_ENDINGS = frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED})

JOB_TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SCHEDULED, State.SKIPPED, State.CANCELLED, State.FAILED}),
    State.SCHEDULED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED, State.SKIPPED}),
    State.RUNNING: _ENDINGS,
}

STEP_TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.RUNNING, State.SKIPPED, State.CANCELLED}),
    State.RUNNING: _ENDINGS,
}

RUN_TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED}),
}


def check_transition(
    table: dict[State, frozenset[State]], current: State, target: State, *, what: str
) -> State:
    """Return ``target`` when ``table`` allows ``current -> target``, else raise."""
    if target in table.get(current, frozenset()):
        return target
    allowed = ", ".join(sorted(s.value for s in table.get(current, frozenset()))) or "none"
    raise IllegalTransition(
        f"{what}: illegal transition {current.value} -> {target.value} "
        f"(allowed from {current.value}: {allowed})"
    )


def is_success(state: State, *, allow_failure: bool) -> bool:
    """Tell whether a job in ``state`` counts as passed for its run and dependents."""
    if state is State.SUCCEEDED:
        return True
    return allow_failure and state in (State.FAILED, State.TIMED_OUT)
