"""The run document: one shape for a run, its jobs and steps, wherever it is shown.

``cicd run --report`` writes it and ``cicd show --json`` prints it; the server's
API returns the same structs.
"""

from __future__ import annotations

import msgspec


class StepDocument(msgspec.Struct, kw_only=True):
    index: int
    name: str
    state: str
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    allowed_failure: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    log_size: int = 0


class JobDocument(msgspec.Struct, kw_only=True):
    id: str
    state: str
    image: str
    needs: list[str] = []
    allow_failure: bool = False
    reason: str = ""
    message: str = ""
    node: str = ""
    worker: str = ""
    # Why a pending job has not started: capacity, labels, tenant_limit,
    # node_unavailable (cordoned or broken nodes), queue_blocked or reserved.
    wait_reason: str = ""
    wait_message: str = ""
    attempt: int = 1  # 2 and up after a retry
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    steps: list[StepDocument] = []


class RunDocument(msgspec.Struct, kw_only=True):
    id: str
    number: int
    pipeline: str
    tenant_id: str
    state: str
    reason: str = ""
    source: str = ""
    # For a git source: the ref asked for ("" for the default branch) and the commit
    # it resolved to once the run cloned it ("" before).
    source_ref: str = ""
    source_commit: str = ""
    executor: str = ""
    trigger: str = ""
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    # Retention removed the run's step output: its log routes return no bytes.
    logs_pruned: bool = False
    jobs: list[JobDocument] = []


def encode_document(document: RunDocument) -> bytes:
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


# --- the server's API types (requests and responses around the run document) -----


class SourceSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The origin of a run's files: a directory on the server, or a git repository."""

    dir: str | None = None
    git: str | None = None
    ref: str | None = None  # branch, tag or commit; default: the remote's HEAD


class SubmitRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Start a run: the pipeline as YAML text or as a path inside the source."""

    source: SourceSpec
    pipeline_yaml: str | None = None
    pipeline_path: str | None = None  # default .cicd.yml when pipeline_yaml is absent
    run_id: str | None = None  # client-chosen id: submitting it again returns the same run
    tenant: str = "default"
    priority: int | None = None  # -1000 to 1000; default: the pipeline's priority
    trigger: str = "api"


class RunPage(msgspec.Struct, kw_only=True):
    items: list[RunDocument]
    next_cursor: str | None = None


class ActionResult(msgspec.Struct, kw_only=True):
    """The response to cancel and retry: the run after the action, and whether it changed."""

    run: RunDocument
    changed: bool
    message: str = ""


class EventRecord(msgspec.Struct, kw_only=True):
    id: int
    name: str
    version: int
    run_id: str
    job_id: str | None = None
    step_id: str | None = None
    worker_id: str | None = None
    correlation_id: str
    tenant_id: str
    ts: int
    data: dict[str, object]


class EventPage(msgspec.Struct, kw_only=True):
    items: list[EventRecord]
    next_after: int


class NodeInfo(msgspec.Struct, kw_only=True):
    """A node (a Docker engine, or the local host) with the scheduler's view of it."""

    name: str
    kind: str  # docker or local
    address: str
    state: str  # ready, unavailable, fencing, cordoned, draining, drained
    labels: dict[str, str] = {}
    cpu_millis: int = 0  # capacity used for placement
    memory_bytes: int = 0
    reserved_cpu_millis: int = 0  # kept free
    reserved_memory_bytes: int = 0
    allocated_cpu_millis: int = 0  # requests of the jobs placed there
    allocated_memory_bytes: int = 0
    running_jobs: int = 0
    max_jobs: int = 0  # jobs it runs at once
    jobs: list[str] = []  # "run_id/job_id" of each job placed there
    breaker: str = "closed"  # closed, open, half_open
    cordoned: bool = False
    draining: bool = False
    message: str = ""


class LogSlice(msgspec.Struct, kw_only=True):
    """Part of a step's stored output, ``data`` starting at byte ``offset``."""

    data: bytes
    offset: int
    size: int  # bytes the step has written so far (truncated bytes included)
    complete: bool  # the step has ended: ``size`` is final
    truncated: bool = False  # the middle of the output was dropped to keep the step's limit
    pruned: bool = False  # retention removed the stored output: no byte is left


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    request_id: str
    details: dict[str, object] | None = None


class DeadLetter(msgspec.Struct, kw_only=True):
    """An event a subscriber still failed to handle after its retries."""

    id: int
    subscription: str
    event_id: int
    event_name: str
    attempts: int
    error: str
    failed_at: str | None = None
    replayed_at: str | None = None


def gap_marker(dropped: int) -> bytes:
    """Return the line that stands for ``dropped`` bytes cut from the middle of a log."""
    return (f"\n[cicd: {dropped} bytes of output dropped here; a step's stored log keeps "
            "its first and last parts (storage.log_limit)]\n").encode()
