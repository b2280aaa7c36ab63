"""``cicd runs``, ``cicd show`` and ``cicd logs``: read the local database."""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
from pathlib import Path

import msgspec

from cicd.errors import UsageError
from cicd.orchestration.documents import RunDocument, encode_document
from cicd.storage import default_db_path, open_database
from cicd.storage.queries import RunNotFound, iter_step_log, list_runs, run_document

# Runs listed in the error for a reference that matches several runs; the rest are counted.
MAX_LISTED_MATCHES = 10


def format_duration_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _open(args: argparse.Namespace) -> sqlite3.Connection:
    path = Path(args.db) if args.db else default_db_path()
    return open_database(path, readonly=True)


def runs_command(args: argparse.Namespace) -> int:
    conn = _open(args)
    rows = list_runs(conn, limit=args.limit)
    if args.json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return 0
    print(f"{'RUN':<26}  {'PIPELINE':<24} {'STATE':<10} {'STARTED':<19} DURATION")
    for row in rows:
        started = "-"  # a pending run has not started
        if row["started_at"] is not None:
            started = f"{dt.datetime.fromtimestamp(row['started_at'] / 1000):%Y-%m-%d %H:%M:%S}"
        duration = None
        if row["started_at"] is not None and row["finished_at"] is not None:
            duration = row["finished_at"] - row["started_at"]
        name = f"{row['pipeline']}#{row['number']}"
        print(f"{row['id']!s:<26}  {name:<24} {row['state']!s:<10} "
              f"{started:<19} {format_duration_ms(duration)}")
    return 0


def split_run_number(ref: str) -> tuple[str, int]:
    """Split ``PIPELINE#NUMBER`` into the pipeline (may be empty) and the run number."""
    pipeline, _, number = ref.rpartition("#")
    if not number.isdigit():
        raise UsageError(f"run {ref!r}: the part after '#' must be a run number, like build#3")
    return pipeline, int(number)


def several_runs_message(ref: str, matches: list[RunDocument]) -> str:
    """Build the error for a reference that matches several runs, listing them.

    Run numbers count per tenant and pipeline, so ``PIPELINE#NUMBER`` can match one run
    of each tenant, and only the run id identifies one of them.
    """
    lines = [f"{ref!r} matches {len(matches)} runs; give the run id of one of them:"]
    for run in matches[:MAX_LISTED_MATCHES]:
        name = f"{run.pipeline}#{run.number}"
        lines.append(f"  {run.id:<26}  {name:<24} tenant {run.tenant_id:<16} {run.state}")
    if len(matches) > MAX_LISTED_MATCHES:
        lines.append(f"  and {len(matches) - MAX_LISTED_MATCHES} more")
    return "\n".join(lines)


def resolve_local_run(conn: sqlite3.Connection, ref: str) -> str:
    """Return the id of the run ``ref`` names: a run id, a unique id prefix,
    ``PIPELINE#NUMBER`` (``#NUMBER``: any pipeline) or ``last``.

    Raises UsageError when no run or several runs match.
    """
    if ref == "last":
        matches = _matching_runs(conn, "ORDER BY seq DESC LIMIT 1", ())
    elif "#" in ref:
        pipeline, number = split_run_number(ref)
        if pipeline:
            matches = _matching_runs(conn, "WHERE pipeline = ? AND number = ? ORDER BY seq DESC",
                                     (pipeline, number))
        else:
            matches = _matching_runs(conn, "WHERE number = ? ORDER BY seq DESC", (number,))
    else:
        matches = _matching_runs(conn, "WHERE id = ?", (ref,)) or _matching_runs(
            conn, "WHERE upper(substr(id, 1, ?)) = ? ORDER BY seq DESC", (len(ref), ref.upper()))
    if not matches:
        raise UsageError(f"no run matches {ref!r}; `cicd runs` lists the runs")
    if len(matches) > 1:
        raise UsageError(several_runs_message(ref, matches))
    return matches[0].id


def _matching_runs(conn: sqlite3.Connection, where: str,
                   params: tuple[object, ...]) -> list[RunDocument]:
    rows = conn.execute(f"SELECT id, number, pipeline, tenant_id, state FROM runs {where}",
                        params).fetchall()
    return [RunDocument(id=str(run_id), number=int(number), pipeline=str(pipeline),
                        tenant_id=str(tenant), state=str(state))
            for run_id, number, pipeline, tenant, state in rows]


def show_command(args: argparse.Namespace) -> int:
    conn = _open(args)
    try:
        document = run_document(conn, resolve_local_run(conn, args.run))
    except RunNotFound as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        sys.stdout.buffer.write(encode_document(document))
        return 0
    print_document(document)
    return 0


def print_document(document: RunDocument) -> None:
    took = f" in {format_duration_ms(document.duration_ms)}" if document.duration_ms is not None else ""
    print(f"run {document.id} ({document.pipeline}#{document.number}): {document.state}{took}"
          + (f" ({document.reason})" if document.reason else ""))
    if document.source_ref or document.source_commit:
        ref = f" at {document.source_ref}" if document.source_ref else ""
        commit = f", commit {document.source_commit}" if document.source_commit else ""
        print(f"  source: {document.source}{ref}{commit}")
    if document.state == "pending" and not document.jobs:
        # Accepted but not started: the server records the jobs when it starts the run,
        # and starts at most runs.per_tenant_runs runs of one tenant at once.
        print(f"  waiting to start: accepted {document.created_at or '-'} for tenant "
              f"{document.tenant_id}; its jobs appear when the server starts it")
    for job in document.jobs:
        reason = f"  {job.reason}" if job.reason else ""
        if job.message:
            reason += f": {job.message}"
        if job.state == "pending" and job.wait_reason:
            reason = f"  waits ({job.wait_reason}): {job.wait_message.removeprefix('waiting: ')}"
        where = f"  on {job.node}" if job.node else ""
        if job.attempt > 1:
            where += f", attempt {job.attempt}"
        print(f"  {job.id:<20} {job.state:<10} {format_duration_ms(job.duration_ms):>8}"
              f"{where}{reason}")
        for step in job.steps:
            code = "" if step.exit_code is None else f"exit {step.exit_code}"
            print(f"    {step.index:>2}. {step.name[:40]:<40} {step.state:<10} {code:<8}"
                  f" {format_duration_ms(step.duration_ms):>8}"
                  + (f"  {step.reason}" if step.reason else ""))


def note_pruned(document: RunDocument) -> None:
    """Print to stderr that retention removed the run's output, which explains an empty log."""
    if document.logs_pruned:
        print(f"cicd: retention removed the output of run {document.id} (LogsPruned in its "
              "events); only the run's record is left", file=sys.stderr)


def logs_command(args: argparse.Namespace) -> int:
    conn = _open(args)
    try:
        run_id = resolve_local_run(conn, args.run)
        document = run_document(conn, run_id)
    except RunNotFound as exc:
        raise UsageError(str(exc)) from None
    out = sys.stdout.buffer
    note_pruned(document)
    job_ref, _, step_ref = (args.target or "").partition("/")
    if document.state == "pending" and not document.jobs:
        raise UsageError(f"run {run_id} is pending: it has not started, so it has no logs yet")
    jobs = [job for job in document.jobs if not job_ref or job.id == job_ref]
    if not jobs:
        names = ", ".join(job.id for job in document.jobs)
        raise UsageError(f"run {run_id} has no job {job_ref!r}; its jobs are: {names}")
    if step_ref:
        job = jobs[0]
        matches = [s for s in job.steps if s.name == step_ref or str(s.index) == step_ref]
        if not matches:
            names = ", ".join(f"{s.index} ({s.name})" for s in job.steps)
            raise UsageError(f"job {job.id} has no step {step_ref!r}; its steps are: {names}")
        # One step: exactly the bytes it wrote, and a marker line where the log limit
        # dropped some, as the server's log API gives them.
        for chunk in iter_step_log(conn, run_id, job.id, matches[0].index, gaps=True):
            out.write(chunk)
        out.flush()
        return 0
    for job in jobs:
        for step in job.steps:
            out.write(f"==> {job.id}/{step.name} ({step.state}) <==\n".encode())
            last = b"\n"
            for chunk in iter_step_log(conn, run_id, job.id, step.index, gaps=True):
                out.write(chunk)
                last = chunk[-1:]
            if last != b"\n":
                out.write(b"\n")
    out.flush()
    return 0
