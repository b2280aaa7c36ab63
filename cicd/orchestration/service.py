"""The server's orchestration context: accepting runs, running them, and reporting on them.

:class:`RunService` is what the HTTP API calls. Submitted runs are written to the
event log first (the API returns only once the RunRequested event is durable),
then queued on the bounded intake channel; the intake task starts each run when
its tenant has a free slot. Runs execute with :class:`RunEngine` on a node shared
by every run of the server. See ``cicd.orchestration.recovery`` for what happens
at start-up to runs a previous process left unfinished.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import trio

from cicd.config import Settings
from cicd.errors import (
    CapacityError,
    CicdError,
    IdempotencyMismatch,
    NotFoundError,
    ShuttingDown,
    UsageError,
)
from cicd.events import model as ev
from cicd.execution.control import StopRequest
from cicd.orchestration import sources
from cicd.orchestration.documents import (
    ActionResult,
    DeadLetter,
    EventPage,
    EventRecord,
    LogSlice,
    NodeInfo,
    RunDocument,
    RunPage,
    SubmitRequest,
)
from cicd.orchestration.engine import RunEngine, RunRequest, RunResume, new_run_id
from cicd.pipeline import Pipeline, parse_pipeline
from cicd.scheduling.cluster import Cluster
from cicd.storage import queries
from cicd.storage.outbox import Subscriber
from cicd.storage.readers import ReaderPool
from cicd.storage.store import EventStore
from cicd.telemetry.metrics import Metrics
from cicd.telemetry.traces import Span, TracesData, run_spans, traces_document
from cicd.workers.base import Provider
from cicd.workers.docker import DockerProvider

logger = logging.getLogger("cicd.orchestration")

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ACTIVE = ("pending", "running")


class RunService:
    def __init__(self, settings: Settings, store: EventStore, readers: ReaderPool,
                 cluster: Cluster, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.readers = readers
        self.cluster = cluster
        # The first node's provider: its kind is the runs' executor.
        self.provider: Provider = next(iter(cluster.nodes.values())).provider
        self.metrics = metrics
        scheduling = settings.scheduling
        self.default_request = (settings.cpu_millis(scheduling.default_cpu),
                                settings.memory_bytes(scheduling.default_memory))
        self.node_lost_after = settings.optional_seconds(scheduling.node_lost_after)
        self.grace = settings.seconds(settings.runs.grace)
        self.log_limit = settings.log_limit_bytes
        data_dir = settings.storage.data_dir or str(Path(store.path).parent / "workspaces")
        self.workspaces = Path(data_dir)
        self.accepting = False
        self.stopping = False  # set by shutdown: queued runs stay pending for the next start
        self.engines: dict[str, RunEngine] = {}
        self.components: dict[str, str] = {"orchestration": "starting"}
        capacity = settings.runs.intake_size
        self._intake_send, self._intake_receive = trio.open_memory_channel[str](capacity)
        self._reserved = 0  # intake slots promised to submits whose event is being written
        self._resume: dict[str, RunResume] = {}
        # The RunRequested events of runs this process accepted and has not started:
        # starting one then needs no read of the log. At most the intake's size.
        self._accepted: dict[str, ev.RunRequested] = {}
        self._cancelling: set[str] = set()  # pending runs whose RunCancelled is being stored
        self._tenant_slots: dict[str, trio.CapacityLimiter] = {}
        self._runs_nursery: trio.Nursery | None = None
        self.subscribers: dict[str, Subscriber] = {}
        metrics.watch_queue("intake", self.intake_depth)

    # --- the service's own tasks ------------------------------------------------------

    def intake_depth(self) -> int:
        return self._intake_send.statistics().current_buffer_used

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take over unfinished runs, then start accepted runs until cancelled."""
        from cicd.orchestration.recovery import recover

        async with trio.open_nursery() as runs:
            self._runs_nursery = runs
            pending = await recover(self)
            self.accepting = True
            self.components["orchestration"] = "ok"
            task_status.started()
            for run_id in pending:
                runs.start_soon(self._run, run_id)
            async for run_id in self._intake_receive:
                runs.start_soon(self._run, run_id)

    async def shutdown(self, grace: float, *, second_signal: trio.Event) -> None:
        """Stop intake, let running steps finish for ``grace`` seconds, then stop them.

        No further job starts: jobs waiting for a node or for their needs end
        cancelled with reason ``server_shutdown`` at once. Runs accepted but not
        started stay pending in the log and start after the next start-up. A second
        signal skips what is left of the grace period.
        """
        self.accepting = False
        self.stopping = True
        self.components["orchestration"] = "shutting down"
        logger.info("shutting down: %d runs active, waiting up to %gs", len(self.engines), grace)
        for engine in list(self.engines.values()):
            engine.start_no_new_jobs("server_shutdown")
        with trio.move_on_after(grace):
            while self.engines and not second_signal.is_set():
                await trio.sleep(0.1)
        for engine in list(self.engines.values()):
            engine.stop.request("server_shutdown")
        while self.engines:
            if second_signal.is_set():
                for engine in list(self.engines.values()):
                    engine.stop.immediate.set()
                    for job_stop in engine.job_stops.values():
                        job_stop.immediate.set()
            await trio.sleep(0.05)

    async def _run(self, run_id: str) -> None:
        event = self._accepted.get(run_id) or await self._requested_event(run_id)
        limiter = self._tenant_slots.setdefault(
            event.tenant_id, trio.CapacityLimiter(self.settings.runs.per_tenant_runs))
        async with limiter:
            if self.stopping:
                return  # still pending in the log: the next start-up runs it
            if run_id not in self._resume:
                self._reserved = max(0, self._reserved - 1)
            if self._accepted.pop(run_id, None) is not None and run_id not in self._resume:
                # Still in _accepted, so not cancelled, because a cancel takes it out.
                # The run is pending, known without a read of the database.
                state: tuple[str] | None = ("pending",)
            else:
                state = await self.readers.run(lambda conn: conn.execute(
                    "SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone())
            resume = self._resume.pop(run_id, None)
            if state is None or (state[0] not in _ACTIVE) or (resume is None and state[0] != "pending"):
                self._release_slots(run_id)
                return  # cancelled while it waited, or already ended
            engine = RunEngine(self.store, self.provider, cluster=self.cluster,
                               log_limit=self.log_limit, stop=StopRequest(),
                               on_assigned=self._record_assignment,
                               default_request=self.default_request,
                               node_lost_after=self.node_lost_after)
            self.engines[run_id] = engine
            try:
                await self._execute(engine, event, resume)
            except CicdError as exc:
                logger.error("run %s failed before its jobs: %s", run_id, exc)
                await self._end_unfinished(run_id, event.tenant_id, str(exc))
                await self.store.append(ev.RunFailed(run_id=run_id, tenant_id=event.tenant_id,
                                                     reason=str(exc)), wait=True)
            except Exception as exc:  # one run's defect must not stop the server
                logger.exception("run %s failed with an internal error", run_id)
                cause = _innermost(exc)
                reason = f"internal error: {type(cause).__name__}: {cause}; see the server log"
                await self._end_unfinished(run_id, event.tenant_id, reason)
                await self.store.append(ev.RunFailed(
                    run_id=run_id, tenant_id=event.tenant_id, reason=reason), wait=True)
            finally:
                del self.engines[run_id]
                self._release_slots(run_id)
                with trio.CancelScope(shield=True):
                    await self._remove_run_objects(run_id)

    async def _end_unfinished(self, run_id: str, tenant_id: str, message: str) -> None:
        """End the jobs and steps a failed run left unfinished, so none stays running.

        A running step fails and a pending one is skipped. Each job that had not
        ended fails. All of them get reason ``run_failed`` and ``message``.
        """
        def read(conn: sqlite3.Connection) -> tuple[list[tuple[str, str]],
                                                    list[tuple[str, int, str, str]]]:
            jobs = conn.execute("SELECT job_id, state FROM jobs WHERE run_id = ? AND state IN"
                                " ('pending', 'scheduled', 'running') ORDER BY position",
                                (run_id,)).fetchall()
            steps = conn.execute("SELECT job_id, step, name, state FROM steps WHERE run_id = ?"
                                 " AND state IN ('pending', 'running') ORDER BY job_id, step",
                                 (run_id,)).fetchall()
            return jobs, steps

        jobs, steps = await self.readers.run(read)
        unfinished = {job_id for job_id, _state in jobs}
        for job_id, step, name, state in steps:
            if job_id not in unfinished:
                continue
            if state == "running":
                await self.store.append(ev.StepFailed(
                    run_id=run_id, tenant_id=tenant_id, job=job_id, step=step, step_name=name,
                    reason="run_failed", message=message))
            else:
                await self.store.append(ev.StepSkipped(
                    run_id=run_id, tenant_id=tenant_id, job=job_id, step=step, step_name=name,
                    reason="run_failed"))
        for job_id, _state in jobs:
            await self.store.append(ev.JobFailed(run_id=run_id, tenant_id=tenant_id, job=job_id,
                                                 reason="run_failed", message=message))

    def _release_slots(self, run_id: str) -> None:
        """Free the node slots the run still holds: jobs recovery adopted that never ran."""
        prefix = f"{run_id}/"
        for key in [key for key in self.cluster.placed if key.startswith(prefix)]:
            self.cluster.release(key)

    async def _execute(self, engine: RunEngine, event: ev.RunRequested,
                       resume: RunResume | None) -> None:
        run_id = event.run_id
        if event.source_kind == "git":
            workspace = self.workspaces / run_id / "source"
            if resume is None or not workspace.is_dir():
                await trio.to_thread.run_sync(_thd_fresh_parent, workspace)
                commit = await sources.clone_at(event.source, event.source_ref or None, str(workspace))
                await self.store.append(ev.SourceResolved(run_id=run_id, tenant_id=event.tenant_id,
                                                          commit=commit, workspace=str(workspace)))
            source_dir = str(workspace)
        else:
            source_dir = event.source
        pipeline = await self._pipeline_for(event, source_dir)
        request = RunRequest(pipeline=pipeline, pipeline_yaml=event.pipeline_yaml,
                             source_dir=source_dir, run_id=run_id, pipeline_name=event.pipeline,
                             tenant_id=event.tenant_id, trigger=event.trigger, grace=self.grace,
                             only_jobs=event.only_jobs, priority=event.priority,
                             requested=True)
        await engine.execute(request, resume)

    async def _pipeline_for(self, event: ev.RunRequested, source_dir: str) -> Pipeline:
        text = event.pipeline_yaml
        file = "<pipeline_yaml>"
        if not text:
            file = event.pipeline_path or ".cicd.yml"
            text = await trio.to_thread.run_sync(sources.read_pipeline_file, source_dir, file)
        return await _parse(text, file)

    async def _requested_event(self, run_id: str) -> ev.RunRequested:
        row = await self.readers.run(lambda conn: conn.execute(
            "SELECT body FROM events WHERE run_id = ? AND name = 'RunRequested'",
            (run_id,)).fetchone())
        if row is None:
            raise NotFoundError(f"run {run_id} has no RunRequested event")
        event = ev.decode_event(row[0])
        assert isinstance(event, ev.RunRequested)
        return event

    async def _remove_run_objects(self, run_id: str) -> None:
        from cicd.workers.cleanup import remove_run_objects

        for node in self.cluster.nodes.values():
            provider = node.provider
            if not isinstance(provider, DockerProvider) or node.lost_since is not None:
                continue  # a lost node is fenced when it comes back
            with trio.move_on_after(120):
                try:
                    await remove_run_objects(provider, run_id)
                except CicdError as exc:
                    logger.warning("removing the objects of run %s on node %s failed: %s; the "
                                   "reaper retries", run_id, node.name, exc)
                except Exception:
                    # A cleanup must not end the server: the reaper removes what is left.
                    logger.exception("removing the objects of run %s on node %s failed; the "
                                     "reaper retries", run_id, node.name)

    def _record_assignment(self, milliseconds: float, node: str) -> None:
        pool = self.cluster.nodes[node].labels.get("pool", node) if node in self.cluster.nodes \
            else node
        self.metrics.assignment.record(milliseconds, {"policy": self.cluster.policy.value,
                                                      "pool": pool})

    # --- the API's calls --------------------------------------------------------------

    def readiness(self) -> dict[str, str]:
        """Each component's state; ready when at least one node takes work."""
        states = dict(self.components)
        nodes = list(self.cluster.nodes.values())
        usable = [node for node in nodes if node.takes_work or node.state == "cordoned"]
        name = "docker" if self.provider.kind == "docker" else "executor"
        if usable:
            states[name] = "ok"
        else:
            states[name] = "; ".join(f"{node.name}: {node.message or node.state}"
                                     for node in nodes) or "no nodes"
        return states

    async def submit(self, request: SubmitRequest, *,
                     idempotency_key: str | None) -> tuple[RunDocument, bool]:
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new runs; retry "
                               "against the restarted server")
        source = request.source
        if (source.dir is None) == (source.git is None):
            raise UsageError("source needs exactly one of 'dir' (a directory on the server) "
                             "or 'git' (a repository URL)")
        if source.dir is not None:
            sources.check_directory(source.dir)
        else:
            assert source.git is not None
            sources.check_git_url(source.git)
            if source.ref:
                sources.check_git_ref(source.ref)
        if request.run_id is not None and not _RUN_ID.match(request.run_id):
            raise UsageError(f"run_id {request.run_id!r} must be 1 to 64 ASCII letters, digits, "
                             "'-' or '_'")
        if not _TENANT.match(request.tenant):
            raise UsageError(f"tenant {request.tenant!r} must be 1 to 64 ASCII letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit")
        if request.priority is not None and not -1000 <= request.priority <= 1000:
            raise UsageError(f"priority {request.priority} must be from -1000 to 1000")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
            raise UsageError("the Idempotency-Key header must be 1 to 255 characters")
        pipeline_yaml, pipeline_path, name = await self._check_pipeline(request)
        if self._reserved + self.intake_depth() >= self.settings.runs.intake_size:
            raise CapacityError(
                f"the intake queue is full ({self.settings.runs.intake_size} runs waiting); "
                "retry later", retry_after=2.0)
        self._reserved += 1
        created = False
        try:
            run_id = request.run_id or new_run_id()
            event = ev.RunRequested(
                run_id=run_id, tenant_id=request.tenant, correlation_id=run_id, pipeline=name,
                pipeline_yaml=pipeline_yaml, source=source.dir or source.git or "",
                jobs=[], executor=self.provider.kind, trigger=request.trigger,
                idempotency_key=idempotency_key, source_kind="dir" if source.dir else "git",
                source_ref=source.ref or "", pipeline_path=pipeline_path,
                priority=request.priority,
            )
            run_id, created, number = await self.store.submit_run(event)
            if created:
                self._accepted[run_id] = msgspec.structs.replace(event, number=number)
                self._intake_send.send_nowait(run_id)
        finally:
            if not created:
                self._reserved -= 1
        if not created and idempotency_key is not None:
            await self._check_same_request(run_id, event, f"Idempotency-Key {idempotency_key!r}",
                                           "key")
        elif not created:
            # The run_id named an existing run: return it only for the same request, so
            # that a chosen id cannot read another tenant's run or hide a changed request.
            await self._check_same_request(run_id, event, f"run_id {run_id!r}", "run_id")
        if created:
            # The projection contains exactly this, so building it here saves a read.
            return RunDocument(
                id=run_id, number=number, pipeline=event.pipeline, tenant_id=event.tenant_id,
                state="pending", source=event.source, source_ref=event.source_ref,
                executor=event.executor,
                trigger=event.trigger, created_at=queries.iso_time(event.ts)), True
        return await self.get_run(run_id), False

    async def _check_same_request(self, run_id: str, event: ev.RunRequested, used: str,
                                  noun: str) -> None:
        """Raise IdempotencyMismatch unless ``event`` requests what run ``run_id`` was made
        from. ``used`` names what led to the run (the key or the run_id), ``noun`` what to
        send anew."""
        first = await self._requested_event(run_id)
        fields = ("pipeline_yaml", "pipeline_path", "source", "source_ref", "source_kind",
                  "tenant_id", "priority", "trigger")
        differing = [name for name in fields if getattr(first, name) != getattr(event, name)]
        if differing:
            raise IdempotencyMismatch(
                f"{used} was first used for run {run_id}, whose request had another "
                f"{', '.join(differing)}; send a new {noun} for a new request, or the first "
                "request unchanged to get that run")

    async def _check_pipeline(self, request: SubmitRequest) -> tuple[str, str, str]:
        """Validate the pipeline where it can be read now; return (yaml, path, run name)."""
        source = request.source
        name = ""
        if request.pipeline_yaml is not None:
            pipeline = await _parse(request.pipeline_yaml, "pipeline_yaml")
            name = pipeline.name or ""
            yaml_text, path = request.pipeline_yaml, ""
        else:
            if request.pipeline_path == "":
                raise UsageError("pipeline_path is empty; leave it out for .cicd.yml, or name "
                                 "the file")
            path = request.pipeline_path or ".cicd.yml"
            if path.startswith("/") or ".." in Path(path).parts:
                raise UsageError(f"pipeline_path {path!r} must be a relative path inside the "
                                 "source, without '..'")
            yaml_text = ""
            if source.dir is not None:
                text = await trio.to_thread.run_sync(sources.read_pipeline_file, source.dir, path)
                pipeline = await _parse(text, path)
                name, yaml_text, path = pipeline.name or "", text, ""
        if not name:
            # NOTE: a git source's pipeline file is read only after the clone, so its run
            # is named after the repository even when the file sets `name:`.
            origin = (source.dir or source.git or "pipeline").rstrip("/")
            name = os.path.basename(origin).removesuffix(".git") or "pipeline"
        return yaml_text, path, name

    async def get_run(self, run_id: str) -> RunDocument:
        def read(conn: sqlite3.Connection) -> RunDocument | None:
            try:
                return queries.run_document(conn, run_id)
            except queries.RunNotFound:
                return None

        document = await self.readers.run(read)
        if document is None:
            raise NotFoundError(f"run {run_id!r} not found")
        return document

    async def list_runs(self, *, state: str | None, tenant: str | None, pipeline: str | None,
                        since_ms: int | None, cursor: str | None, limit: int) -> RunPage:
        def read(conn: sqlite3.Connection) -> tuple[list[RunDocument], str | None] | None:
            try:
                return queries.list_run_documents(
                    conn, state=state, tenant=tenant, pipeline=pipeline, since_ms=since_ms,
                    cursor=cursor, limit=limit)
            except queries.RunNotFound:  # the cursor names no run
                return None

        page = await self.readers.run(read)
        if page is None:
            raise UsageError(f"cursor {cursor!r} is not a run of this server; pass the "
                             "next_cursor of the previous page")
        return RunPage(items=page[0], next_cursor=page[1])

    async def cancel_run(self, run_id: str) -> ActionResult:
        document = await self.get_run(run_id)
        if document.state not in _ACTIVE:
            return ActionResult(run=document, changed=False,
                                message=f"run {run_id} already ended {document.state}; "
                                        "nothing to cancel")
        engine = self.engines.get(run_id)
        if engine is not None:
            already = engine.stop.requested
            if not already:
                engine.stop.request("cancelled")
            return ActionResult(run=await self.get_run(run_id), changed=not already,
                                message="cancelling: running steps get SIGTERM, then SIGKILL "
                                        f"after {self.grace:g}s")
        if document.state != "pending" or run_id in self._cancelling:
            # A run that was running when read but has no engine now has just ended. A
            # second cancel of a pending run finds the first cancel storing its event.
            document = await self.get_run(run_id)
            ended = document.state not in _ACTIVE
            return ActionResult(run=document, changed=False, message=(
                f"run {run_id} already ended {document.state}; nothing to cancel" if ended
                else f"run {run_id} is already being cancelled"))
        self._cancelling.add(run_id)
        try:
            self._accepted.pop(run_id, None)  # _run reads the state from the log instead
            await self.store.append(ev.RunCancelled(run_id=run_id, tenant_id=document.tenant_id,
                                                    reason="cancelled before it started"),
                                    wait=True)
        finally:
            self._cancelling.discard(run_id)
        return ActionResult(run=await self.get_run(run_id), changed=True,
                            message="cancelled before it started")

    async def cancel_job(self, run_id: str, job_id: str) -> ActionResult:
        document = await self.get_run(run_id)
        job = next((j for j in document.jobs if j.id == job_id), None)
        engine = self.engines.get(run_id)
        if job is None and (engine is None or engine.has_job(job_id) is False):
            raise NotFoundError(f"run {run_id} has no job {job_id!r}")
        if job is not None and job.state not in ("pending", "scheduled", "running"):
            return ActionResult(run=document, changed=False,
                                message=f"job {job_id} already ended {job.state}; nothing to cancel")
        if engine is None:
            return ActionResult(run=document, changed=False,
                                message=f"run {run_id} has not started; cancel the run instead")
        changed = await engine.cancel_job(job_id)
        return ActionResult(run=await self.get_run(run_id), changed=changed,
                            message=f"cancelling job {job_id}" if changed else
                            f"job {job_id} already ended; nothing to cancel")

    async def retry_run(self, run_id: str) -> ActionResult:
        from cicd.orchestration.retry import retry_event

        document = await self.get_run(run_id)
        original = await self._requested_event(run_id)
        commit = await self.readers.run(lambda conn: conn.execute(
            "SELECT source_commit FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
        event = retry_event(document, original, commit, new_run_id())
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new runs")
        if self._reserved + self.intake_depth() >= self.settings.runs.intake_size:
            raise CapacityError("the intake queue is full; retry later", retry_after=2.0)
        self._reserved += 1
        new_id, created, _number = await self.store.submit_run(event)
        self._intake_send.send_nowait(new_id)
        return ActionResult(run=await self.get_run(new_id), changed=created,
                            message=f"retrying jobs {', '.join(event.only_jobs or [])} of run "
                                    f"{run_id}")

    async def _step_index(self, run_id: str, job_id: str, step: str) -> int:
        def find(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = conn.execute("SELECT step, name FROM steps WHERE run_id = ? AND job_id = ?"
                                " ORDER BY step", (run_id, job_id)).fetchall()
            return [(int(index), str(name)) for index, name in rows]

        steps = await self.readers.run(find)
        if not steps:
            await self.get_run(run_id)  # NotFoundError for an unknown run
            raise NotFoundError(f"run {run_id} has no job {job_id!r}")
        # A number is an index first, as in `cicd logs --db`: a step named "1" in a
        # pipeline written before such names were rejected cannot hide step 1.
        if step.isdigit() and 1 <= int(step) <= len(steps):
            return int(step)
        for index, name in steps:
            if name == step:
                return index
        listing = ", ".join(f"{index} ({name})" for index, name in steps)
        raise NotFoundError(f"job {job_id} of run {run_id} has no step {step!r}; steps: {listing}")

    async def read_log(self, run_id: str, job_id: str, step: str, *, offset: int,
                       limit: int | None) -> LogSlice:
        index = await self._step_index(run_id, job_id, step)

        def read(conn):  # type: ignore[no-untyped-def]
            size, complete, truncated, _state, pruned = queries.step_log_state(
                conn, run_id, job_id, index)
            data, start = queries.read_step_log(conn, run_id, job_id, index, offset, limit)
            return LogSlice(data=data, offset=start, size=size, complete=complete,
                            truncated=truncated > 0, pruned=pruned)

        return await self.readers.run(read)

    async def follow_log(self, run_id: str, job_id: str, step: str, *,
                         offset: int) -> AsyncIterator[bytes]:
        """Yield the step's output from ``offset`` as it is stored, until the step ended."""
        index = await self._step_index(run_id, job_id, step)
        while True:
            changed = self.store.changed()
            part = await self.read_log(run_id, job_id, str(index), offset=offset, limit=1 << 20)
            if part.data:
                offset = part.offset + len(part.data)
                yield part.data
                continue
            if part.complete and offset >= part.size:
                return
            await changed.wait()

    async def events_after(self, after: int, limit: int) -> EventPage:
        rows = await self.readers.run(lambda conn: queries.events_after(conn, after, limit))
        items = [_record(row) for row in rows]
        return EventPage(items=items, next_after=items[-1].id if items else after)

    async def follow_events(self, after: int) -> AsyncIterator[EventRecord]:
        while True:
            changed = self.store.changed()
            page = await self.events_after(after, 500)
            for record in page.items:
                yield record
            after = page.next_after
            if not page.items:
                await changed.wait()

    def nodes(self) -> list[NodeInfo]:
        return [self.node_info(name) for name in self.cluster.nodes]

    def node_info(self, name: str) -> NodeInfo:
        try:
            node = self.cluster.node(name)
        except LookupError as exc:
            raise NotFoundError(str(exc)) from None
        cpu, memory = node.allocated
        return NodeInfo(
            name=node.name, kind=node.provider.kind,
            address=getattr(node.provider, "base_url", "local processes"), state=node.state,
            labels=dict(node.labels), cpu_millis=node.cpu_millis, memory_bytes=node.memory_bytes,
            reserved_cpu_millis=node.reserved_cpu_millis,
            reserved_memory_bytes=node.reserved_memory_bytes, allocated_cpu_millis=cpu,
            allocated_memory_bytes=memory, running_jobs=len(node.allocations),
            jobs=sorted(node.allocations), max_jobs=node.max_jobs, breaker=node.breaker.state,
            cordoned=node.cordoned, draining=node.draining, message=node.message)

    async def cordon_node(self, name: str, *, cordoned: bool, drain: bool = False) -> NodeInfo:
        """Cordon, drain or uncordon a node; the change is recorded in the event log."""
        try:
            changed = self.cluster.cordon(name, cordoned=cordoned, drain=drain)
        except LookupError as exc:
            raise NotFoundError(str(exc)) from None
        if changed:
            action = "uncordoned"
            if drain:
                action = "drained"
            elif cordoned:
                action = "cordoned"
            logger.info("node %s: %s by an operator", name, action)
        return self.node_info(name)

    def metrics_text(self) -> str:
        return self.metrics.prometheus_text()

    async def run_trace(self, run_id: str) -> TracesData:
        now = ev.now_ms()
        spans = await self.readers.run(lambda conn: _thd_run_spans(conn, run_id, now))
        if not spans:
            raise NotFoundError(f"run {run_id!r} not found")
        return traces_document([spans])

    async def recent_traces(self, limit: int) -> TracesData:
        def read(conn: sqlite3.Connection) -> list[list[Span]]:
            ids = [str(row[0]) for row in conn.execute(
                "SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))]
            return [_thd_run_spans(conn, run_id, now) for run_id in ids]

        now = ev.now_ms()
        return traces_document(await self.readers.run(read))

    async def list_dead_letters(self) -> list[DeadLetter]:
        rows = await self.readers.run(lambda conn: conn.execute(
            "SELECT d.id, d.subscription, d.event_id, e.name, d.attempts, d.error, d.failed_at,"
            " d.replayed_at FROM dead_letters d JOIN events e ON e.id = d.event_id"
            " ORDER BY d.id").fetchall())
        return [DeadLetter(id=int(r[0]), subscription=str(r[1]), event_id=int(r[2]),
                           event_name=str(r[3]), attempts=int(r[4]), error=str(r[5]),
                           failed_at=queries.iso_time(r[6]), replayed_at=queries.iso_time(r[7]))
                for r in rows]

    def record_request_latency(self, endpoint: str, tenant: str, milliseconds: float) -> None:
        """Record one API request's latency in ``ui_latency_ms``."""
        self.metrics.ui_latency.record(milliseconds, {"endpoint": endpoint, "tenant": tenant})

    async def replay_dead_letter(self, dead_letter_id: int) -> tuple[bool, str]:
        """Deliver a dead letter's event to its subscriber again; return (done, message)."""
        row = await self.readers.run(lambda conn: conn.execute(
            "SELECT subscription, replayed_at FROM dead_letters WHERE id = ?",
            (dead_letter_id,)).fetchone())
        if row is None:
            raise NotFoundError(f"dead letter {dead_letter_id} not found; `cicd dead-letters` "
                                "lists them")
        if row[1] is not None:
            return False, f"dead letter {dead_letter_id} was replayed already"
        subscriber = self.subscribers.get(str(row[0]))
        if subscriber is None:
            raise NotFoundError(f"subscriber {row[0]!r} of dead letter {dead_letter_id} does not "
                                "run in this server")
        if await subscriber.replay(self.store, self.readers, dead_letter_id):
            return True, f"dead letter {dead_letter_id} replayed"
        return False, f"dead letter {dead_letter_id} failed again; a new dead letter records it"


def _thd_run_spans(conn: sqlite3.Connection, run_id: str, now_ms: int) -> list[Span]:
    """Return the spans of one run (none for an unknown run), built on the reader's
    thread: decoding every event of a long run would hold up the event loop."""
    events = [(str(r[0]), int(r[1]), str(r[2])) for r in conn.execute(
        "SELECT name, ts, body FROM events WHERE run_id = ? ORDER BY id", (run_id,))]
    return run_spans(run_id, events, now_ms)


def _innermost(exc: BaseException) -> BaseException:
    """Return the one exception inside nested groups of one exception each, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _thd_fresh_parent(workspace: Path) -> None:
    """Remove ``workspace`` (left by an earlier attempt) and create its parent."""
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)


_PARSED: dict[tuple[str, str], Pipeline] = {}
_PARSED_MAX = 256


def _thd_parse(text: str, file: str) -> Pipeline:
    pipeline = parse_pipeline(text, file=file)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.pop(next(iter(_PARSED)))  # the oldest entry
    _PARSED[(text, file)] = pipeline
    return pipeline


async def _parse(text: str, file: str) -> Pipeline:
    """Parse ``text``, in a worker thread unless it was parsed before.

    The same text is parsed once: at submit and at start, and for every run of an
    unchanged pipeline. Errors are not kept: they raise again.
    """
    cached = _PARSED.get((text, file))
    if cached is not None:
        return cached
    return await trio.to_thread.run_sync(_thd_parse, text, file)


# Fields of every event, which an EventRecord gives beside ``data``, not in it.
_ENVELOPE = ("name", "version", "run_id", "correlation_id", "tenant_id", "ts")


def _record(row: queries.EventRow) -> EventRecord:
    data = msgspec.json.decode(row[10])
    for key in _ENVELOPE:
        data.pop(key, None)
    return EventRecord(id=int(row[0]), name=str(row[1]), version=int(row[2]),
                       run_id=str(row[3]), job_id=row[4], step_id=row[5],
                       worker_id=row[6], correlation_id=str(row[7]),
                       tenant_id=str(row[8]), ts=int(row[9]), data=data)
