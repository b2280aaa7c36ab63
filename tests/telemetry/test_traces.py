"""Runs as OpenTelemetry traces: built from a real run's event log, and from events
that a run could produce but a quick local run does not (a retry, a failure)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import msgspec

from cicd.telemetry.traces import Span, run_spans, trace_id_of, traces_document
from tests.conftest import ROOT, run_cli


def _attributes(span: Span) -> dict[str, object]:
    return {kv.key: kv.value.string_value or kv.value.int_value or kv.value.bool_value
            for kv in span.attributes}


def test_trace_of_a_real_run(tmp_path: Path) -> None:
    db = tmp_path / "cicd.db"
    result = run_cli("run", "--executor", "local", "--db", str(db), "-q",
                     str(ROOT / "examples" / "hello"))
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(db)
    (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
    events = conn.execute("SELECT name, ts, body FROM events WHERE run_id = ? ORDER BY id",
                          (run_id,)).fetchall()
    spans = run_spans(run_id, events, now_ms=0)

    by_name = {span.name: span for span in spans}
    root = by_name["run hello"]
    assert root.parent_span_id == ""
    assert root.status.code == 1
    assert {span.trace_id for span in spans} == {trace_id_of(run_id)}
    jobs = {name: span for name, span in by_name.items() if name.startswith("job ")}
    assert sorted(jobs) == ["job build", "job report", "job test"]
    assert all(span.parent_span_id == root.span_id for span in jobs.values())
    steps = [span for span in spans if span.name.startswith("step ")]
    # A step without a name shows its script's first line, as in the run document.
    assert sorted(span.name for span in steps) == [
        "step build/greet", "step build/list the workspace",
        'step report/echo "all done for run $CICD_RUN_ID"', 'step test/echo "checking arithmetic"']
    for step in steps:
        job = jobs[f"job {step.name.split()[1].split('/')[0]}"]
        assert step.parent_span_id == job.span_id
        assert int(job.start_time_unix_nano) <= int(step.start_time_unix_nano)
        assert int(step.end_time_unix_nano) <= int(job.end_time_unix_nano)
        assert _attributes(step)["cicd.exit_code"] == "0"
    # report needs build and test, so its span starts after both ended.
    assert int(jobs["job report"].start_time_unix_nano) >= max(
        int(jobs["job build"].end_time_unix_nano), int(jobs["job test"].end_time_unix_nano))
    assert len({span.span_id for span in spans}) == len(spans)
    document = json.loads(msgspec.json.encode(traces_document([spans])))
    scope = document["resourceSpans"][0]["scopeSpans"][0]
    assert scope["scope"]["name"] == "cicd"
    assert {"traceId", "spanId", "name", "startTimeUnixNano", "endTimeUnixNano"} <= set(
        scope["spans"][0])


def _event(name: str, ts: int, **body: object) -> tuple[str, int, str]:
    return name, ts, json.dumps({"run_id": "R", **body})


def test_retry_failure_and_open_spans() -> None:
    events = [
        _event("RunRequested", 0, pipeline="p", tenant_id="t", executor="docker"),
        _event("OfferCreated", 10, job="a"),
        _event("AssignmentCreated", 30, job="a", node="n1"),
        _event("JobStarted", 40, job="a", node="n1"),
        _event("StepStarted", 50, job="a", step=1, step_name="s"),
        _event("StepFailed", 90, job="a", step=1, reason="engine_unavailable",
               message="node n1 stopped responding"),
        _event("JobFailed", 95, job="a", reason="node_lost", message="lost"),
        _event("JobRetried", 96, job="a", attempt=2, reason="node_lost"),
        # The second attempt, on another node, still runs.
        _event("OfferCreated", 97, job="a"),
        _event("AssignmentCreated", 120, job="a", node="n2"),
        _event("JobStarted", 130, job="a", node="n2"),
        _event("StepStarted", 140, job="a", step=1, step_name="s"),
    ]
    spans = run_spans("R", events, now_ms=500)

    names = [(span.name, _attributes(span).get("cicd.attempt")) for span in spans]
    assert names == [("run p", None), ("schedule a", "1"), ("job a", "1"), ("step a/s", "1"),
                     ("schedule a", "2"), ("job a", "2"), ("step a/s", "2")]
    assert {span.kind for span in spans} == {1}
    # The second attempt waited for a node from JobRetried, not from its offer.
    second_wait = [span for span in spans if span.name == "schedule a"][1]
    assert second_wait.start_time_unix_nano == str(96 * 1_000_000)

    first_job, second_job = (span for span in spans if span.name == "job a")
    assert (first_job.status.code, first_job.status.message) == (2, "lost")
    assert first_job.span_id != second_job.span_id
    assert _attributes(second_job)["cicd.node"] == "n2"

    # Still running: the second attempt, its step and the run end at the request's time.
    open_spans = [span for span in spans if _attributes(span).get("cicd.open")]
    assert sorted(span.name for span in open_spans) == ["job a", "run p", "step a/s"]
    assert {span.end_time_unix_nano for span in open_spans} == {str(500 * 1_000_000)}


def test_trace_id_from_ulid_or_hash() -> None:
    assert trace_id_of("00000000000000000000000001") == "0" * 31 + "1"
    assert trace_id_of("7ZZZZZZZZZZZZZZZZZZZZZZZZZ") == "f" * 32
    assert len(trace_id_of("my-run")) == 32
    assert trace_id_of("my-run") == trace_id_of("my-run")


def test_waits_that_never_end_in_an_assignment() -> None:
    events = [
        _event("RunRequested", 0, pipeline="p"),
        _event("OfferCreated", 10, job="huge"),
        _event("JobFailed", 12, job="huge", reason="unschedulable",
               message="the job requests 64 CPU"),
        _event("OfferCreated", 20, job="queued"),
        _event("OfferCreated", 30, job="gone"),
        _event("JobCancelled", 40, job="gone", reason="cancelled"),
    ]
    spans = {span.name: span for span in run_spans("R", events, now_ms=100)}
    huge = spans["schedule huge"]
    assert (huge.status.code, huge.status.message) == (2, "the job requests 64 CPU")
    assert _attributes(huge)["cicd.reason"] == "unschedulable"
    cancelled = spans["schedule gone"]
    assert (cancelled.status.code, _attributes(cancelled)["cicd.state"]) == (0, "cancelled")
    queued = spans["schedule queued"]
    assert _attributes(queued)["cicd.open"] is True
    assert queued.end_time_unix_nano == str(100 * 1_000_000)


def test_cancelled_and_allowed_steps_are_no_errors() -> None:
    events = [
        _event("RunRequested", 0, pipeline="p"),
        _event("JobStarted", 1, job="a", node="n"),
        _event("StepStarted", 2, job="a", step=1, step_name="soft"),
        _event("StepFailed", 3, job="a", step=1, exit_code=3, reason="exit_code",
               message="the script exited with code 3", allowed=True),
        _event("StepStarted", 4, job="a", step=2, step_name="long"),
        _event("StepFailed", 5, job="a", step=2, state="cancelled", reason="cancelled"),
        _event("JobCancelled", 6, job="a", reason="cancelled"),
        _event("RunCancelled", 7, reason="cancelled"),
    ]
    spans = {span.name: span for span in run_spans("R", events, now_ms=100)}
    assert {name: span.status.code for name, span in spans.items()} == {
        "run p": 0, "job a": 0, "step a/soft": 0, "step a/long": 0}
    assert _attributes(spans["step a/soft"])["cicd.state"] == "failed"
    assert _attributes(spans["step a/long"])["cicd.state"] == "cancelled"
