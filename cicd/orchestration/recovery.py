"""Start-up recovery: what happens to runs a previous server process left unfinished.

- A run accepted but not started (``pending``) is queued again; it has no
  containers yet, so it cannot run twice.
- A running run is taken over. Each of its running jobs whose current step's
  container still exists (running, or exited while no server watched) is
  reattached: the step's output continues from the stored offset and the job goes
  on with its next steps. A running job without such a container ends ``failed``
  with reason ``server_restarted``, and the jobs that need it are skipped.
- A running job on a node that does not respond ends ``failed`` with reason
  ``node_lost``, as if the node had been lost while the server ran: its container
  may still run there. A job waiting, before the restart, for a lost node's fencing
  before its next attempt waits again. Both nodes are fenced before they take
  work, and the next attempts (per the job's ``retry``) start only then.
- Labelled Docker objects of runs that are not active are left to the reaper.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from typing import TYPE_CHECKING

from cicd.errors import CicdError
from cicd.execution.job import ResumePoint
from cicd.orchestration.engine import RunResume
from cicd.orchestration.states import State
from cicd.scheduling.cluster import MIN_CPU_REQUEST
from cicd.scheduling.core import JobRequest
from cicd.workers.docker import DockerProvider
from cicd.workers.labels import JOB, OWNER, RUN, STEP

if TYPE_CHECKING:
    from cicd.orchestration.service import RunService

logger = logging.getLogger("cicd.orchestration")


def _thd_unfinished(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """Return (run, state, tenant) of the runs to take over."""
    # Runs of `cicd run` processes (with an owner) sharing the database are not the server's.
    return [(str(r[0]), str(r[1]), str(r[2])) for r in conn.execute(
        "SELECT r.id, r.state, r.tenant_id FROM runs r JOIN events e ON e.run_id = r.id"
        " AND e.name = 'RunRequested' WHERE r.state IN ('pending', 'running')"
        " AND COALESCE(json_extract(e.body, '$.owner'), '') = '' ORDER BY r.seq")]


def _thd_jobs(conn: sqlite3.Connection,
              run_id: str) -> list[tuple[str, str, int, int, int, str, int]]:
    """Return (job, state, running step, stored log bytes of it, its last chunk seq, node,
    attempt)."""
    jobs = []
    for job_id, state, node, attempt in conn.execute(
            "SELECT job_id, state, node, attempt FROM jobs WHERE run_id = ? ORDER BY position",
            (run_id,)):
        row = conn.execute(
            "SELECT step FROM steps WHERE run_id = ? AND job_id = ? AND state = 'running'",
            (run_id, job_id)).fetchone()
        step = int(row[0]) if row else 0
        size = seq = 0
        if step:
            size, seq = conn.execute(
                "SELECT COALESCE(MAX(byte_offset + length(data)), 0), COALESCE(MAX(seq), 0)"
                " FROM step_logs WHERE run_id = ? AND job_id = ? AND step = ?",
                (run_id, job_id, step)).fetchone()
        jobs.append((str(job_id), str(state), step, int(size), int(seq), str(node),
                     int(attempt)))
    return jobs


def _thd_lost_retries(conn: sqlite3.Connection, run_id: str) -> dict[str, tuple[str, int]]:
    """Return the jobs whose next attempt waited for a lost node: job -> (node, attempt)."""
    waiting: dict[str, tuple[str, int]] = {}
    for job_id, name, node, reason, attempt in conn.execute(
            "SELECT job_id, name, json_extract(body, '$.previous_node'),"
            " json_extract(body, '$.reason'), json_extract(body, '$.attempt') FROM events"
            " WHERE run_id = ? AND name IN ('JobRetried', 'AssignmentCreated',"
            " 'AssignmentRejected') ORDER BY id", (run_id,)):
        if name == "JobRetried" and reason == "node_lost":
            waiting[str(job_id)] = (str(node), int(attempt))
        elif name == "AssignmentCreated" or reason != "node_lost":
            # Placed, or waiting for capacity: the node was fenced by then.
            waiting.pop(str(job_id), None)
    return waiting


async def _step_containers(provider: object, run_id: str) -> dict[tuple[str, int], str]:
    if not isinstance(provider, DockerProvider):
        return {}
    # Only this server's: a copy of its database elsewhere (a restored backup) is another
    # server, whose owner differs, and must not take over the original's containers.
    containers = await provider.call(provider.client.api.containers, all=True, filters={
        "label": [f"{RUN}={run_id}", f"{OWNER}={provider.owner}"]})
    found = {}
    for info in containers:
        labels = info.get("Labels") or {}
        if STEP in labels and JOB in labels:
            found[(labels[JOB], int(labels[STEP]))] = str(info["Id"])
    return found


async def recover(service: RunService) -> list[str]:
    """Prepare the takeover of unfinished runs; return the run ids to start, in order."""
    unfinished = await service.readers.run(_thd_unfinished)
    to_start = []
    unfenced: set[str] = set()
    for run_id, state, tenant in unfinished:
        to_start.append(run_id)
        if state == "pending":
            logger.info("run %s was accepted before the restart; starting it", run_id)
            continue
        jobs = await service.readers.run(functools.partial(_thd_jobs, run_id=run_id))
        containers: dict[str, dict[tuple[str, int], str]] = {}
        silent: set[str] = set()
        for node_name in {job[5] for job in jobs if job[1] == "running"}:
            node = service.cluster.nodes.get(node_name)
            if node is None:
                continue
            try:
                containers[node_name] = await _step_containers(node.provider, run_id)
            except CicdError as exc:
                silent.add(node_name)
                logger.warning("cannot list the containers of run %s on node %s (%s); its "
                               "running jobs there end node_lost", run_id, node_name, exc)
        retries = await service.readers.run(functools.partial(_thd_lost_retries, run_id=run_id))
        resume = RunResume(ended={}, reattach={}, lost={})
        for job_id, job_state, step, size, seq, node_name, attempt in jobs:
            if State(job_state).terminal:
                resume.ended[job_id] = State(job_state)
            elif job_state == "pending" and job_id in retries:
                lost_node, next_attempt = retries[job_id]
                resume.lost_retries[job_id] = (lost_node, next_attempt, True)
                unfenced.add(lost_node)
            elif job_state == "running" and node_name in silent:
                resume.node_lost[job_id] = (node_name, step, attempt)
                unfenced.add(node_name)
            elif job_state == "running":
                found = containers.get(node_name, {})
                container = found.get((job_id, step)) if step else None
                if container is not None:
                    resume.reattach[job_id] = ResumePoint(step=step, container_id=container,
                                                          log_size=size, last_seq=seq)
                    resume.nodes[job_id] = node_name
                    # Hold the job's slot on its node from now on, because other runs can
                    # place jobs before this run's dispatcher adopts the job with its request.
                    service.cluster.adopt(JobRequest(
                        job_id=f"{run_id}/{job_id}", tenant=tenant, cpu_millis=MIN_CPU_REQUEST,
                        memory_bytes=0), node_name)
                    if attempt > 1:
                        resume.attempts[job_id] = attempt
                else:
                    resume.lost[job_id] = step
        logger.info("run %s was running before the restart: %d jobs reattached, %d lost, "
                    "%d on nodes that did not respond, %d waiting for a lost node", run_id,
                    len(resume.reattach), len(resume.lost), len(resume.node_lost),
                    len(resume.lost_retries))
        service._resume[run_id] = resume
    # Only now, with every job taken over adopted on its node: fencing keeps those.
    for node_name in sorted(unfenced):
        service.cluster.mark_unfenced(node_name)
    return to_start
