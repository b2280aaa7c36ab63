"""The events of a run, as msgspec structs in one tagged union.

Names and versions follow the design's event catalogue so that a message bus can
carry them later unchanged. Each event carries the ids that make handling it
idempotent (``run_id``, ``job_id``, ``step_id``, ``worker_id``), a
``correlation_id`` (the run's id unless a caller supplies one), a ``tenant_id``
and a timestamp in milliseconds since the Unix epoch.

Schema evolution: a new field always has a default, and a field's type never
changes; a change that cannot follow these rules is a new ``version``.
"""

from __future__ import annotations

import time

import msgspec


def now_ms() -> int:
    """Return the current wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="name"):
    """Fields shared by every event."""

    version: int = 1
    run_id: str
    correlation_id: str = ""
    tenant_id: str = "default"
    ts: int = msgspec.field(default_factory=now_ms)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def job_id(self) -> str | None:
        return None

    @property
    def step_id(self) -> str | None:
        return None

    @property
    def worker_id(self) -> str | None:
        return None


# --- run level -------------------------------------------------------------------


class RunRequested(Event, frozen=True, kw_only=True, tag="RunRequested"):
    """A run was accepted: the pipeline, its source and the jobs it will run."""

    pipeline: str
    pipeline_yaml: str
    source: str
    jobs: list[str]
    executor: str
    trigger: str = "cli"
    # Absent means "next number for this pipeline", assigned when the event is stored.
    number: int | None = None
    idempotency_key: str | None = None
    retry_of: str | None = None
    # Jobs to run; None runs all. A retry reruns the jobs that did not succeed.
    only_jobs: list[str] | None = None
    source_kind: str = "dir"  # dir or git
    source_ref: str = ""  # the git ref asked for
    # A pipeline file inside a git source, read once the source is cloned
    # (``pipeline_yaml`` is empty then).
    pipeline_path: str = ""
    # host:pid of the `cicd run` process that runs it ("" for a server's runs).
    owner: str = ""
    # The run's priority when waiting for nodes; None: the pipeline's ``priority``.
    priority: int | None = None


class SourceResolved(Event, frozen=True, kw_only=True, tag="SourceResolved"):
    """The run's source is in its workspace: for git, cloned at ``commit``."""

    commit: str = ""
    workspace: str = ""


class LogsPruned(Event, frozen=True, kw_only=True, tag="LogsPruned"):
    """Retention removed a finished run's step logs and workspace; the run record stays."""

    bytes_removed: int = 0
    policy: str = ""


class TransitionRejected(Event, frozen=True, kw_only=True, tag="TransitionRejected"):
    """An event asked for a state change the state machine forbids; nothing changed."""

    rejected_event: str
    current: str
    requested: str
    job: str = ""
    step: int = 0


class RunStarted(Event, frozen=True, kw_only=True, tag="RunStarted"):
    pass


class RunCompleted(Event, frozen=True, kw_only=True, tag="RunCompleted"):
    """Every job ended, and none failed unless it was allowed to."""


class RunFailed(Event, frozen=True, kw_only=True, tag="RunFailed"):
    reason: str = ""


class RunCancelled(Event, frozen=True, kw_only=True, tag="RunCancelled"):
    reason: str = "cancelled"


# --- job level (orchestration and scheduling) ------------------------------------


class _JobEvent(Event, frozen=True, kw_only=True):
    job: str

    @property
    def job_id(self) -> str | None:
        return self.job


class JobRequested(_JobEvent, frozen=True, kw_only=True, tag="JobRequested"):
    image: str
    needs: list[str] = []
    allow_failure: bool = False
    steps: list[str] = []


class AssignmentCreated(_JobEvent, frozen=True, kw_only=True, tag="AssignmentCreated"):
    """The scheduler placed a runnable job on a node."""

    node: str
    assignment_id: str = ""


class OfferCreated(_JobEvent, frozen=True, kw_only=True, tag="OfferCreated"):
    """A runnable job entered the scheduler's queue with its request."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    labels: dict[str, str] = {}
    priority: int = 0


class AssignmentRejected(_JobEvent, frozen=True, kw_only=True, tag="AssignmentRejected"):
    """The scheduler could not place a job: it waits (``final`` false) or never fits."""

    reason: str  # capacity, labels, tenant_limit, node_unavailable, queue_blocked, ...
    message: str = ""
    final: bool = False


class JobRetried(_JobEvent, frozen=True, kw_only=True, tag="JobRetried"):
    """A failed job starts again, as the pipeline's ``retry`` allows, from its first step."""

    attempt: int  # 2 for the first retry
    reason: str  # the cause of the failure retried, such as node_lost
    previous_node: str = ""


class CapacityUpdated(Event, frozen=True, kw_only=True, tag="CapacityUpdated"):
    """A node's capacity or state changed. ``run_id`` is empty: it concerns no run."""

    node: str
    cpu_millis: int
    memory_bytes: int
    state: str = "ready"
    allocated_cpu_millis: int = 0
    allocated_memory_bytes: int = 0
    cordoned: bool = False  # set by an operator; kept across restarts
    draining: bool = False


class JobStarted(_JobEvent, frozen=True, kw_only=True, tag="JobStarted"):
    node: str = ""


class JobCompleted(_JobEvent, frozen=True, kw_only=True, tag="JobCompleted"):
    pass


class JobFailed(_JobEvent, frozen=True, kw_only=True, tag="JobFailed"):
    """The job ended without success: ``state`` is ``failed`` or ``timed_out``."""

    state: str = "failed"
    reason: str = ""
    message: str = ""
    allowed: bool = False


class JobCancelled(_JobEvent, frozen=True, kw_only=True, tag="JobCancelled"):
    reason: str = "cancelled"


class JobSkipped(_JobEvent, frozen=True, kw_only=True, tag="JobSkipped"):
    """The job never ran because a job it needs did not succeed."""

    reason: str = ""


# --- worker management -----------------------------------------------------------


class _WorkerEvent(_JobEvent, frozen=True, kw_only=True):
    worker: str

    @property
    def worker_id(self) -> str | None:
        return self.worker


class WorkerCreated(_WorkerEvent, frozen=True, kw_only=True, tag="WorkerCreated"):
    provider: str
    node: str = ""
    image: str = ""


class WorkerTerminated(_WorkerEvent, frozen=True, kw_only=True, tag="WorkerTerminated"):
    pass


class WorkerFailed(_WorkerEvent, frozen=True, kw_only=True, tag="WorkerFailed"):
    message: str = ""


# --- execution -------------------------------------------------------------------


class _StepEvent(_JobEvent, frozen=True, kw_only=True):
    step: int  # 1-based index within the job
    step_name: str = ""

    @property
    def step_id(self) -> str | None:
        return f"{self.job}/{self.step}"


class StepStarted(_StepEvent, frozen=True, kw_only=True, tag="StepStarted"):
    worker: str = ""


class StepCompleted(_StepEvent, frozen=True, kw_only=True, tag="StepCompleted"):
    exit_code: int = 0
    log_size: int = 0
    truncated_bytes: int = 0


class StepFailed(_StepEvent, frozen=True, kw_only=True, tag="StepFailed"):
    """The step ended without success: ``state`` is failed, timed_out or cancelled."""

    state: str = "failed"
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    allowed: bool = False
    log_size: int = 0
    truncated_bytes: int = 0


class StepSkipped(_StepEvent, frozen=True, kw_only=True, tag="StepSkipped"):
    reason: str = ""


AnyEvent = (
    RunRequested
    | SourceResolved
    | LogsPruned
    | TransitionRejected
    | RunStarted
    | RunCompleted
    | RunFailed
    | RunCancelled
    | JobRequested
    | OfferCreated
    | AssignmentCreated
    | AssignmentRejected
    | JobRetried
    | CapacityUpdated
    | JobStarted
    | JobCompleted
    | JobFailed
    | JobCancelled
    | JobSkipped
    | WorkerCreated
    | WorkerTerminated
    | WorkerFailed
    | StepStarted
    | StepCompleted
    | StepFailed
    | StepSkipped
)
ANY_EVENT = AnyEvent

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    return _decoder.decode(data)


__all__ = [
    "AnyEvent",
    "AssignmentCreated",
    "AssignmentRejected",
    "CapacityUpdated",
    "JobCancelled",
    "JobCompleted",
    "JobFailed",
    "JobRequested",
    "JobRetried",
    "JobSkipped",
    "JobStarted",
    "LogsPruned",
    "OfferCreated",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunRequested",
    "RunStarted",
    "SourceResolved",
    "StepCompleted",
    "StepFailed",
    "StepSkipped",
    "StepStarted",
    "TransitionRejected",
    "WorkerCreated",
    "WorkerFailed",
    "WorkerTerminated",
]
