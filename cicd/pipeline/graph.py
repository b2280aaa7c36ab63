"""The ``needs`` graph of a pipeline: cycle checks, execution order and dependents.

Every function takes ``needs``, a mapping from each job id to the ids of the jobs it
needs, in file order. The mapping's order decides ties, so the results are stable.
An edge ``a -> b`` means that job ``a`` needs job ``b``, so ``b`` runs first.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

_ON_PATH = 1
_DONE = 2


def find_unknown_needs(needs: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """Return each ``(job, needed)`` pair whose needed job is not in ``needs``, in file order."""
    return [
        (job, needed) for job, targets in needs.items() for needed in targets if needed not in needs
    ]


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as ``[a, b, c, a]``, or None when the graph is a DAG.

    The search follows jobs and their needs in file order. The cycle it returns starts
    at its member that comes first in the file, so ``a`` needing itself gives ``[a, a]``.
    Needed ids that are not keys of ``needs`` are ignored.
    """
    state: dict[str, int] = {}
    for root in needs:
        if root in state:
            continue
        # An explicit stack instead of recursion, because a chain of thousands of jobs
        # would exceed Python's recursion limit.
        path = [root]
        pending = [iter(needs[root])]
        state[root] = _ON_PATH
        while pending:
            needed = next(pending[-1], None)
            if needed is None:
                state[path.pop()] = _DONE
                pending.pop()
                continue
            if needed not in needs:
                continue
            if state.get(needed) == _ON_PATH:
                return _rotate_to_first(path[path.index(needed) :], needs)
            if needed not in state:
                state[needed] = _ON_PATH
                path.append(needed)
                pending.append(iter(needs[needed]))
    return None


def _rotate_to_first(members: list[str], needs: Mapping[str, Sequence[str]]) -> list[str]:
    file_position = {job: position for position, job in enumerate(needs)}
    start = min(range(len(members)), key=lambda index: file_position[members[index]])
    rotated = members[start:] + members[:start]
    return [*rotated, rotated[0]]


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Return the job ids so that every job comes after the jobs it needs.

    Among the jobs whose needs are all placed, the one that comes first in the file goes
    next. A file that already lists jobs after their needs keeps its order. Raises
    ValueError for a cycle or for a needed id that is not a key of ``needs``.
    """
    unknown = find_unknown_needs(needs)
    if unknown:
        job, needed = unknown[0]
        raise ValueError(f"job {job!r} needs {needed!r}, which is not a job")

    file_position = {job: position for position, job in enumerate(needs)}
    jobs = list(needs)
    waiting_on = {job: len(set(targets)) for job, targets in needs.items()}
    needed_by: dict[str, list[str]] = {job: [] for job in needs}
    for job, targets in needs.items():
        for needed in set(targets):
            needed_by[needed].append(job)

    ready = [file_position[job] for job in jobs if waiting_on[job] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        job = jobs[heapq.heappop(ready)]
        order.append(job)
        for user in needed_by[job]:
            waiting_on[user] -= 1
            if waiting_on[user] == 0:
                heapq.heappush(ready, file_position[user])

    if len(order) != len(jobs):
        cycle = find_cycle(needs)
        raise ValueError(f"the needs form a cycle: {' -> '.join(cycle or [])}")
    return order


def dependents(needs: Mapping[str, Sequence[str]], job_id: str) -> set[str]:
    """Return the jobs that need ``job_id`` directly or through other jobs.

    Raises LookupError when ``job_id`` is not a key of ``needs``.
    """
    if job_id not in needs:
        raise LookupError(f"no job {job_id!r}; jobs: {', '.join(needs) or '(none)'}")
    needed_by: dict[str, list[str]] = {job: [] for job in needs}
    for job, targets in needs.items():
        for needed in targets:
            if needed in needed_by:
                needed_by[needed].append(job)

    found: set[str] = set()
    frontier = [job_id]
    while frontier:
        for user in needed_by[frontier.pop()]:
            if user not in found:
                found.add(user)
                frontier.append(user)
    found.discard(job_id)
    return found
