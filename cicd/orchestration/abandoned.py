"""Ending the runs of `cicd run` processes that died without recording an end.

A `cicd run` killed with SIGKILL leaves its run ``running`` in the database. The
next `cicd run` on the same host with the same database ends such runs: their
unfinished steps and jobs fail with reason ``abandoned``, and the run fails.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from cicd.events import model as ev
from cicd.storage.store import EventStore
from cicd.workers.labels import owner_is_dead

logger = logging.getLogger("cicd.orchestration")


def _thd_abandoned(conn: sqlite3.Connection) -> list[tuple[str, str, list[tuple[str, int, str]],
                                                          list[str]]]:
    """Return (run, tenant, unfinished steps, unfinished jobs) of runs whose process died."""
    found = []
    for run_id, tenant, owner in conn.execute(
            "SELECT r.id, r.tenant_id, json_extract(e.body, '$.owner') FROM runs r"
            " JOIN events e ON e.run_id = r.id AND e.name = 'RunRequested'"
            " WHERE r.state IN ('pending', 'running')"):
        if not owner or not owner_is_dead(str(owner)):
            continue
        steps = [(str(job), int(step), str(state)) for job, step, state in conn.execute(
            "SELECT job_id, step, state FROM steps WHERE run_id = ? AND state IN"
            " ('pending', 'running') ORDER BY job_id, step", (run_id,))]
        jobs = [str(row[0]) for row in conn.execute(
            "SELECT job_id FROM jobs WHERE run_id = ? AND state IN ('pending', 'scheduled',"
            " 'running')", (run_id,))]
        found.append((str(run_id), str(tenant), steps, jobs))
    return found


async def end_abandoned_runs(store: EventStore, conn: sqlite3.Connection) -> int:
    """Record the end of every run whose `cicd run` process died; return how many."""
    abandoned = _thd_abandoned(conn)
    message = "the cicd run process that ran it was killed"
    for run_id, tenant, steps, jobs in abandoned:
        base: dict[str, Any] = {"run_id": run_id, "tenant_id": tenant}
        for job, step, state in steps:
            if state == "running":
                await store.append(ev.StepFailed(**base, job=job, step=step,
                                                 reason="abandoned", message=message))
            else:
                await store.append(ev.StepSkipped(**base, job=job, step=step, reason="abandoned"))
        for job in jobs:
            await store.append(ev.JobFailed(**base, job=job, reason="abandoned", message=message))
        await store.append(ev.RunFailed(**base, reason=f"abandoned: {message}"), wait=True)
        logger.info("run %s ended: %s", run_id, message)
    return len(abandoned)
