"""An in-memory run service with the contract of RunService, for testing the API alone.

Tests drive it directly: ``add_run`` and ``write_log`` put data in, ``end_step`` ends
a step's output, ``add_event`` appends an event, ``add_dead_letter`` stores a dead
letter, and ``failures[method]`` makes the next call of that method raise the given
error. ``latencies`` stores each ``record_request_latency`` call.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import trio

from cicd.errors import CicdError, IllegalTransition, NotFoundError, ShuttingDown, UsageError
from cicd.orchestration.documents import (
    ActionResult,
    DeadLetter,
    EventPage,
    EventRecord,
    JobDocument,
    LogSlice,
    NodeInfo,
    RunDocument,
    RunPage,
    StepDocument,
    SubmitRequest,
)
from cicd.telemetry.traces import TracesData, run_spans, traces_document

TERMINAL = {"succeeded", "failed", "cancelled"}


class StepLog:
    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = False
        self.changed = trio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class FakeRunService:
    def __init__(self) -> None:
        self.accepting = True
        self.cordoned = False
        self.components = {"store": "ok", "docker": "ok"}
        self.runs: dict[str, RunDocument] = {}
        self.keys: dict[str, str] = {}
        self.logs: dict[tuple[str, str, str], StepLog] = {}
        self.events: list[EventRecord] = []
        self.events_changed = trio.Event()
        self.failures: dict[str, CicdError | Exception] = {}
        self.submitted: list[tuple[SubmitRequest, str | None]] = []
        self.followers = 0
        self.dead_letters: dict[int, DeadLetter] = {}
        self.trace_events: dict[str, list[tuple[str, int, str]]] = {}  # run -> (name, ts, body)
        self.trace_limits: list[int] = []
        # Dead letters whose replay fails again, as when the subscriber still fails.
        self.failing_replays: set[int] = set()
        self.latencies: list[tuple[str, str, float]] = []
        self._numbers = itertools.count(1)

    # --- test controls ---------------------------------------------------------

    def add_run(self, run_id: str, *, state: str = "running", pipeline: str = "build",
                tenant: str = "default", created_ms: int = 1_700_000_000_000) -> RunDocument:
        number = next(self._numbers)
        step = StepDocument(index=1, name="compile", state=state)
        job = JobDocument(id="unit", state=state, image="busybox", steps=[step])
        document = RunDocument(
            id=run_id, number=number, pipeline=pipeline, tenant_id=tenant, state=state,
            created_at=str(created_ms), jobs=[job],
        )
        self.runs[run_id] = document
        self.logs.setdefault((run_id, "unit", "1"), StepLog())
        return document

    def write_log(self, run_id: str, job_id: str, step: str, data: bytes) -> None:
        log = self._log(run_id, job_id, step)
        log.data += data
        log.notify()

    def end_step(self, run_id: str, job_id: str, step: str) -> None:
        log = self._log(run_id, job_id, step)
        log.complete = True
        log.notify()

    def add_event(self, run_id: str, name: str = "RunStarted") -> EventRecord:
        record = EventRecord(
            id=len(self.events) + 1, name=name, version=1, run_id=run_id,
            correlation_id=run_id, tenant_id="default", ts=1_700_000_000_000, data={"n": 1},
        )
        self.events.append(record)
        self.events_changed.set()
        self.events_changed = trio.Event()
        return record

    def add_dead_letter(self, event_id: int, *, subscription: str = "telemetry.metrics",
                        event_name: str = "RunStarted") -> DeadLetter:
        letter = DeadLetter(
            id=len(self.dead_letters) + 1, subscription=subscription, event_id=event_id,
            event_name=event_name, attempts=5, error="RuntimeError: exporter is down",
            failed_at="2023-11-14T22:13:20.000+00:00",
        )
        self.dead_letters[letter.id] = letter
        return letter

    def _fail(self, method: str) -> None:
        error = self.failures.pop(method, None)
        if error is not None:
            raise error

    def _log(self, run_id: str, job_id: str, step: str) -> StepLog:
        run = self._run(run_id)
        if step == "compile":
            step = "1"
        key = (run_id, job_id, step)
        if key not in self.logs or job_id not in {job.id for job in run.jobs}:
            raise NotFoundError(f"step {job_id}/{step} of run {run_id} not found")
        return self.logs[key]

    def _run(self, run_id: str) -> RunDocument:
        try:
            return self.runs[run_id]
        except KeyError:
            raise NotFoundError(f"run {run_id!r} not found") from None

    # --- the contract ----------------------------------------------------------

    def readiness(self) -> dict[str, str]:
        return dict(self.components)

    async def submit(
        self, request: SubmitRequest, *, idempotency_key: str | None
    ) -> tuple[RunDocument, bool]:
        await trio.lowlevel.checkpoint()
        self._fail("submit")
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new runs")
        if request.source.dir is None and request.source.git is None:
            raise UsageError("the source needs dir or git")
        existing = self.keys.get(idempotency_key or "") or request.run_id
        if existing is not None and existing in self.runs:
            return self.runs[existing], False
        self.submitted.append((request, idempotency_key))
        run_id = request.run_id or f"run-{len(self.runs) + 1}"
        document = self.add_run(run_id, state="pending", tenant=request.tenant)
        if idempotency_key is not None:
            self.keys[idempotency_key] = run_id
        return document, True

    async def get_run(self, run_id: str) -> RunDocument:
        await trio.lowlevel.checkpoint()
        self._fail("get_run")
        return self._run(run_id)

    async def list_runs(self, *, state: str | None, tenant: str | None, pipeline: str | None,
                        since_ms: int | None, cursor: str | None, limit: int) -> RunPage:
        await trio.lowlevel.checkpoint()
        self._fail("list_runs")
        self.last_list = {"state": state, "tenant": tenant, "pipeline": pipeline,
                          "since_ms": since_ms, "cursor": cursor, "limit": limit}
        items = [
            run for run in reversed(self.runs.values())
            if (state is None or run.state == state)
            and (tenant is None or run.tenant_id == tenant)
            and (pipeline is None or run.pipeline == pipeline)
            and (since_ms is None or int(run.created_at or 0) >= since_ms)
        ]
        start = 0
        if cursor is not None:
            if not cursor.isdigit():
                raise UsageError(f"invalid cursor {cursor!r}; pass next_cursor unchanged")
            start = int(cursor)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return RunPage(items=page, next_cursor=str(start + limit) if more else None)

    async def cancel_run(self, run_id: str) -> ActionResult:
        await trio.lowlevel.checkpoint()
        self._fail("cancel_run")
        run = self._run(run_id)
        if run.state in TERMINAL:
            return ActionResult(run=run, changed=False, message=f"run already {run.state}")
        run.state = "cancelled"
        return ActionResult(run=run, changed=True)

    async def cancel_job(self, run_id: str, job_id: str) -> ActionResult:
        await trio.lowlevel.checkpoint()
        self._fail("cancel_job")
        run = self._run(run_id)
        for job in run.jobs:
            if job.id == job_id:
                changed = job.state not in TERMINAL
                job.state = "cancelled"
                return ActionResult(run=run, changed=changed)
        raise NotFoundError(f"job {job_id!r} not found in run {run_id!r}")

    async def retry_run(self, run_id: str) -> ActionResult:
        await trio.lowlevel.checkpoint()
        self._fail("retry_run")
        run = self._run(run_id)
        if run.state not in TERMINAL:
            raise IllegalTransition(
                f"run {run_id} is {run.state}; only an ended run can be retried"
            )
        new = self.add_run(f"{run_id}-retry", state="pending", pipeline=run.pipeline)
        return ActionResult(run=new, changed=True)

    async def read_log(self, run_id: str, job_id: str, step: str, *, offset: int,
                       limit: int | None) -> LogSlice:
        await trio.lowlevel.checkpoint()
        self._fail("read_log")
        log = self._log(run_id, job_id, step)
        end = len(log.data) if limit is None else offset + limit
        return LogSlice(data=bytes(log.data[offset:end]), offset=offset, size=len(log.data),
                        complete=log.complete)

    async def follow_log(self, run_id: str, job_id: str, step: str, *,
                         offset: int) -> AsyncIterator[bytes]:
        log = self._log(run_id, job_id, step)
        self.followers += 1
        try:
            position = offset
            while True:
                self._fail("follow_log")
                if position < len(log.data):
                    chunk = bytes(log.data[position:])
                    position += len(chunk)
                    yield chunk
                elif log.complete:
                    return
                else:
                    await log.changed.wait()
        finally:
            self.followers -= 1

    async def events_after(self, after: int, limit: int) -> EventPage:
        await trio.lowlevel.checkpoint()
        self._fail("events_after")
        items = [record for record in self.events if record.id > after][:limit]
        return EventPage(items=items, next_after=items[-1].id if items else after)

    async def follow_events(self, after: int) -> AsyncIterator[EventRecord]:
        self.followers += 1
        try:
            position = after
            while True:
                self._fail("follow_events")
                pending = [record for record in self.events if record.id > position]
                if not pending:
                    await self.events_changed.wait()
                for record in pending:
                    position = record.id
                    yield record
        finally:
            self.followers -= 1

    def nodes(self) -> list[NodeInfo]:
        return [self.node_info("local")]

    def node_info(self, name: str) -> NodeInfo:
        if name != "local":
            raise NotFoundError(f"no node named {name!r}; the nodes are local")
        return NodeInfo(name="local", kind="docker", address="unix:///var/run/docker.sock",
                        state="cordoned" if self.cordoned else "ready", max_jobs=4,
                        running_jobs=1, cordoned=self.cordoned)

    async def cordon_node(self, name: str, *, cordoned: bool, drain: bool = False) -> NodeInfo:
        self.node_info(name)
        self.cordoned = cordoned
        return self.node_info(name)

    def metrics_text(self) -> str:
        return "# TYPE cicd_runs_total counter\ncicd_runs_total 3\n"

    def record_request_latency(self, endpoint: str, tenant: str, milliseconds: float) -> None:
        self._fail("record_request_latency")
        self.latencies.append((endpoint, tenant, milliseconds))

    async def list_dead_letters(self) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        self._fail("list_dead_letters")
        return [self.dead_letters[key] for key in sorted(self.dead_letters)]

    async def run_trace(self, run_id: str) -> TracesData:
        await trio.lowlevel.checkpoint()
        if run_id not in self.trace_events:
            raise NotFoundError(f"run {run_id!r} not found")
        return traces_document([run_spans(run_id, self.trace_events[run_id], 2_000)])

    async def recent_traces(self, limit: int) -> TracesData:
        await trio.lowlevel.checkpoint()
        self.trace_limits.append(limit)
        newest = sorted(self.trace_events, reverse=True)[:limit]
        return traces_document([run_spans(run_id, self.trace_events[run_id], 2_000)
                                for run_id in newest])

    async def replay_dead_letter(self, dead_letter_id: int) -> tuple[bool, str]:
        await trio.lowlevel.checkpoint()
        self._fail("replay_dead_letter")
        letter = self.dead_letters.get(dead_letter_id)
        if letter is None:
            raise NotFoundError(f"dead letter {dead_letter_id} not found")
        if letter.replayed_at is not None:
            return False, f"dead letter {dead_letter_id} was replayed already"
        if dead_letter_id in self.failing_replays:
            return False, f"dead letter {dead_letter_id} failed again"
        letter.replayed_at = "2023-11-14T22:20:00.000+00:00"
        return True, f"dead letter {dead_letter_id} replayed"
