"""Retention: removing the logs and workspaces of old runs; the run records stay.

A finished run loses its step logs (and its git workspace) when it ended more than
``max_age`` ago, when it is not among the ``max_runs_per_pipeline`` newest runs of
its pipeline and tenant, or, oldest first, while all stored logs exceed
``max_total_log_size``.
Each removal is recorded as a LogsPruned event naming the policy.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sqlite3
from pathlib import Path

import trio

from cicd.events import model as ev
from cicd.storage.readers import ReaderPool
from cicd.storage.store import EventStore, Write

logger = logging.getLogger("cicd.artifacts")

_FINISHED = "state IN ('succeeded', 'failed', 'cancelled') AND logs_pruned = 0"


def _thd_candidates(conn: sqlite3.Connection, *, now_ms: int, max_age_ms: int, max_runs: int,
                    max_total_bytes: int) -> list[tuple[str, str, str]]:
    """Return (run id, tenant, policy) of runs whose logs go, oldest first."""
    chosen: dict[str, tuple[str, str]] = {}
    for run_id, tenant in conn.execute(
            f"SELECT id, tenant_id FROM runs WHERE {_FINISHED}"
            f" AND COALESCE(finished_at, created_at) < ? ORDER BY id",
            (now_ms - max_age_ms,)):
        chosen[run_id] = (tenant, "max_age")
    for run_id, tenant in conn.execute(
            f"SELECT id, tenant_id FROM (SELECT id, tenant_id, state, logs_pruned, ROW_NUMBER()"
            f" OVER (PARTITION BY tenant_id, pipeline ORDER BY seq DESC) AS newer FROM runs)"
            f" WHERE newer > ? AND {_FINISHED}", (max_runs,)):
        chosen.setdefault(run_id, (tenant, "max_runs_per_pipeline"))
    sizes = conn.execute(
        "SELECT r.id, r.tenant_id, COALESCE(SUM(s.log_size), 0) FROM runs r"
        " LEFT JOIN steps s ON s.run_id = r.id"
        " WHERE r.state IN ('succeeded', 'failed', 'cancelled') AND r.logs_pruned = 0"
        " GROUP BY r.id ORDER BY r.id").fetchall()
    total = sum(int(size) for _, _, size in sizes)
    for run_id, tenant, size in sizes:
        if total <= max_total_bytes:
            break
        chosen.setdefault(run_id, (tenant, "max_total_log_size"))
        total -= int(size)
    return [(run_id, tenant, policy) for run_id, (tenant, policy) in sorted(chosen.items())]


def _thd_log_bytes(conn: sqlite3.Connection, run_id: str) -> int:
    return int(conn.execute(
        "SELECT COALESCE(SUM(length(data)), 0) FROM step_logs WHERE run_id = ?",
        (run_id,)).fetchone()[0])


async def apply_retention(store: EventStore, readers: ReaderPool, workspaces: Path, *,
                          max_age: float, max_runs: int, max_total_bytes: int) -> int:
    """Remove what the policy selects now; return the number of runs pruned."""
    candidates = await readers.run(lambda conn: _thd_candidates(
        conn, now_ms=ev.now_ms(), max_age_ms=int(max_age * 1000), max_runs=max_runs,
        max_total_bytes=max_total_bytes))
    for run_id, tenant, policy in candidates:
        size = await readers.run(functools.partial(_thd_log_bytes, run_id=run_id))
        await store.write(Write("DELETE FROM step_logs WHERE run_id = ?", (run_id,)), wait=False)
        workspace = workspaces / run_id
        await trio.to_thread.run_sync(
            functools.partial(shutil.rmtree, workspace, ignore_errors=True))
        await store.append(ev.LogsPruned(run_id=run_id, tenant_id=tenant, bytes_removed=size,
                                         policy=policy), wait=True)
        logger.info("retention: removed %d log bytes of run %s (%s)", size, run_id, policy)
    return len(candidates)
