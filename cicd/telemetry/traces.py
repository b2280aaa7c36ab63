"""Traces of runs, built from the event log, in the OTLP/JSON format of OpenTelemetry.

A run is one trace: a root span for the run, a span per job attempt under it, a span
for each step under its job, and a ``schedule`` span for each wait for a node (from
OfferCreated to AssignmentCreated). The times are the events' own, so the trace of a
run is the same before and after a server restart, and for runs of ``cicd run`` too.
A span still open (a job that runs) ends at the time of the request and carries the
attribute ``cicd.open``.

The trace id is the run's ULID as 32 hex digits (a run id that is not a ULID is
hashed), and span ids are hashes of what a span stands for, so they are stable. The
result is an OTLP ``TracesData`` document, which OpenTelemetry collectors accept
(``POST /v1/traces`` with ``Content-Type: application/json``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import msgspec

from cicd import __version__

# OTLP's Span.SpanKind and Status.StatusCode.
_UNSPECIFIED, _INTERNAL = 0, 1
_UNSET, _OK, _ERROR = 0, 1, 2

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class AnyValue(msgspec.Struct, rename="camel", omit_defaults=True):
    string_value: str | None = None
    int_value: str | None = None  # OTLP/JSON writes 64-bit integers as strings
    bool_value: bool | None = None


class KeyValue(msgspec.Struct):
    key: str
    value: AnyValue


class Status(msgspec.Struct, omit_defaults=True):
    code: int = _UNSET
    message: str = ""


class Span(msgspec.Struct, rename="camel", omit_defaults=True):
    trace_id: str
    span_id: str
    name: str
    start_time_unix_nano: str
    end_time_unix_nano: str
    parent_span_id: str = ""
    kind: int = _UNSPECIFIED
    attributes: list[KeyValue] = []
    status: Status = msgspec.field(default_factory=Status)


class Scope(msgspec.Struct):
    name: str
    version: str


class ScopeSpans(msgspec.Struct, rename="camel"):
    scope: Scope
    spans: list[Span]


class Resource(msgspec.Struct):
    attributes: list[KeyValue]


class ResourceSpans(msgspec.Struct, rename="camel"):
    resource: Resource
    scope_spans: list[ScopeSpans]


class TracesData(msgspec.Struct, rename="camel"):
    """An OTLP/JSON document: the traces of one or more runs."""

    resource_spans: list[ResourceSpans]


def trace_id_of(run_id: str) -> str:
    """Return the 32 hex digits of the run's trace: its ULID's 128 bits, or a hash."""
    if len(run_id) == 26 and all(c in _CROCKFORD for c in run_id.upper()):
        value = 0
        for char in run_id.upper():
            value = value * 32 + _CROCKFORD.index(char)
        if value < 1 << 128:
            return f"{value:032x}"
    return hashlib.sha256(run_id.encode()).hexdigest()[:32]


def _span_id(*parts: object) -> str:
    # A span id must not be all zeros. A hash has a tiny chance of that: take 1 then.
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]
    return digest if digest != "0" * 16 else "0" * 15 + "1"


def _attribute(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key, AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key, AnyValue(int_value=str(value)))
    return KeyValue(key, AnyValue(string_value=value))


def _status(error: str, ok: bool) -> Status:
    if error:
        return Status(_ERROR, error)
    if ok:
        return Status(_OK)
    return Status()


class _Open(msgspec.Struct):
    """A span whose end event has not come yet."""

    name: str
    span_id: str
    parent: str
    start_ms: int
    attributes: dict[str, str | int | bool]


class _Builder:
    def __init__(self, run_id: str, now_ms: int) -> None:
        self.run_id = run_id
        self.trace_id = trace_id_of(run_id)
        self.now_ms = now_ms
        self.root = _span_id(run_id, "run")
        self.spans: list[Span] = []
        self.run: _Open | None = None
        self.attempts: dict[str, int] = {}
        self.offers: dict[str, int] = {}  # job -> ts its wait for a node began, while it waits
        self.jobs: dict[str, _Open] = {}
        self.steps: dict[tuple[str, int], _Open] = {}

    def close(self, span: _Open, end_ms: int, *, error: str = "", ok: bool = False,
              **attributes: str | int | bool) -> None:
        merged = {**span.attributes, **{k.replace("_", ".", 1): v for k, v in attributes.items()}}
        self.spans.append(Span(
            trace_id=self.trace_id, span_id=span.span_id, parent_span_id=span.parent,
            name=span.name, kind=_INTERNAL, start_time_unix_nano=str(span.start_ms * 1_000_000),
            end_time_unix_nano=str(max(end_ms, span.start_ms) * 1_000_000),
            attributes=[_attribute(key, value) for key, value in merged.items()],
            status=_status(error, ok),
        ))

    def event(self, name: str, ts: int, body: dict[str, object]) -> None:
        job = str(body.get("job") or "")
        step = int(body.get("step") or 0)  # type: ignore[call-overload]
        attempt = self.attempts.get(job, 1)
        reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
        if name == "RunRequested":
            self.run = _Open(f"run {body.get('pipeline', '')}", self.root, "", ts, {
                "cicd.run_id": self.run_id, "cicd.pipeline": str(body.get("pipeline", "")),
                "cicd.tenant_id": str(body.get("tenant_id", "")),
                "cicd.executor": str(body.get("executor", ""))})
        elif name in ("RunCompleted", "RunFailed", "RunCancelled") and self.run is not None:
            state = {"RunCompleted": "succeeded", "RunFailed": "failed"}.get(name, "cancelled")
            self.close(self.run, ts, ok=name == "RunCompleted",
                       error=reason or state if name == "RunFailed" else "", cicd_state=state)
            self.run = None
        elif name == "OfferCreated":
            self.offers.setdefault(job, ts)  # a retry's wait began at JobRetried
        elif name == "AssignmentCreated" and job in self.offers:
            self.close(self._wait(job, attempt), ts, cicd_node=str(body.get("node", "")))
        elif name in ("JobFailed", "JobCancelled") and job in self.offers:
            # Ended while it waited for a node: it never fit, or it was cancelled.
            ended: dict[str, str | int | bool] = {"cicd_reason": reason} if reason else {}
            ended["cicd_state"] = "failed" if name == "JobFailed" else "cancelled"
            self.close(self._wait(job, attempt), ts, ok=False,
                       error=message or reason if name == "JobFailed" else "", **ended)
        elif name == "JobStarted":
            self.jobs[job] = _Open(f"job {job}", _span_id(self.run_id, "job", job, attempt),
                                   self.root, ts, {"cicd.job": job, "cicd.attempt": attempt,
                                                   "cicd.node": str(body.get("node", ""))})
        elif name in ("JobCompleted", "JobFailed", "JobCancelled") and job in self.jobs:
            state = {"JobCompleted": "succeeded", "JobCancelled": "cancelled"}.get(
                name, str(body.get("state") or "failed"))
            reasons: dict[str, str | int | bool] = {"cicd_reason": reason} if reason else {}
            self.close(self.jobs.pop(job), ts, ok=name == "JobCompleted",
                       error=message or reason or state if name == "JobFailed" else "",
                       cicd_state=state, **reasons)
        elif name == "JobRetried":
            self.attempts[job] = int(body.get("attempt") or attempt + 1)  # type: ignore[call-overload]
            self.offers[job] = ts  # the next attempt waits for a node from now
        elif name == "StepStarted":
            parent = self.jobs[job].span_id if job in self.jobs else self.root
            self.steps[(job, step)] = _Open(
                f"step {job}/{body.get('step_name') or step}",
                _span_id(self.run_id, "step", job, attempt, step), parent, ts,
                {"cicd.job": job, "cicd.step": step, "cicd.attempt": attempt})
        elif name in ("StepCompleted", "StepFailed") and (job, step) in self.steps:
            extra: dict[str, str | int | bool] = {}
            if body.get("exit_code") is not None:
                extra["cicd_exit_code"] = int(body["exit_code"])  # type: ignore[call-overload]
            if reason:
                extra["cicd_reason"] = reason
            failed = (name == "StepFailed" and not body.get("allowed")
                      and body.get("state") != "cancelled")
            self.close(self.steps.pop((job, step)), ts, ok=name == "StepCompleted",
                       error=message or reason if failed else "",
                       cicd_state=str(body.get("state") or "") or (
                           "succeeded" if name == "StepCompleted" else "failed"),
                       cicd_log_size=int(body.get("log_size") or 0),  # type: ignore[call-overload]
                       **extra)

    def _wait(self, job: str, attempt: int) -> _Open:
        """Return the span of the job's wait for a node, which began at its offer."""
        return _Open(f"schedule {job}", _span_id(self.run_id, "schedule", job, attempt),
                     self.root, self.offers.pop(job), {"cicd.job": job, "cicd.attempt": attempt})

    def finish(self) -> list[Span]:
        # Steps, jobs and waits still open end now, then the run.
        waits = [self._wait(job, self.attempts.get(job, 1)) for job in list(self.offers)]
        for open_span in [*self.steps.values(), *self.jobs.values(), *waits,
                          *([self.run] if self.run else [])]:
            self.close(open_span, self.now_ms, cicd_open=True)
        return sorted(self.spans, key=lambda span: (int(span.start_time_unix_nano),
                                                    span.span_id))


def run_spans(run_id: str, events: Iterable[tuple[str, int, str]], now_ms: int) -> list[Span]:
    """Return the spans of one run from its events: (name, ts in ms, JSON body), in order."""
    builder = _Builder(run_id, now_ms)
    for name, ts, body in events:
        builder.event(name, ts, json.loads(body))
    return builder.finish()


def traces_document(spans_by_run: list[list[Span]]) -> TracesData:
    """Wrap the spans of each run in an OTLP/JSON document with cicd as the resource."""
    resource = Resource([_attribute("service.name", "cicd"),
                         _attribute("service.version", __version__)])
    scope = Scope("cicd", __version__)
    return TracesData([ResourceSpans(resource, [ScopeSpans(scope, spans)])
                       for spans in spans_by_run if spans])
