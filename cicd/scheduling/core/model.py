"""Inputs and outputs of the placement core: nodes, job requests, decisions, reasons.

Quantities are integers: CPU in millicores, memory in bytes, times in milliseconds
on one clock chosen by the caller (``runnable_at_ms`` and ``now_ms`` must share it).
The limits below match the ``SCHED_*`` constants of ``scheduler.h``; a test checks
that they agree.
"""

from __future__ import annotations

import enum

import msgspec

# The largest CPU, memory or job count accepted: 2**62 leaves room to add two
# quantities in a signed 64-bit integer.
MAX_QUANTITY = 2**62
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
MAX_TIME_MS = 2**62
# Indices are 32-bit in the C core.
MAX_NODES = 2**31 - 2
MAX_JOBS = 2**31 - 2

# Waiting this long raises a job's effective priority by one, unless the caller
# passes another interval.
DEFAULT_AGING_INTERVAL_MS = 60_000


class Policy(enum.StrEnum):
    """Rule that picks a job's node among the nodes that can take it now."""

    FIFO = "fifo"        # lowest node index; the queue stops at the first job that waits
    BINPACK = "binpack"  # the most allocated node, so fewer nodes are busy
    SPREAD = "spread"    # the least allocated node


class Outcome(enum.StrEnum):
    ASSIGNED = "assigned"
    WAITS = "waits"
    NEVER_FITS = "never_fits"


class Reason(enum.StrEnum):
    """Cause of a job not being assigned. ``LABELS`` appears with both outcomes."""

    # Reasons to wait.
    CAPACITY = "capacity"                  # no available node with the labels has the free capacity
    LABELS = "labels"                      # free capacity exists only on nodes without the labels
    TENANT_LIMIT = "tenant_limit"          # the tenant runs as many jobs as its limit allows
    NODE_UNAVAILABLE = "node_unavailable"  # every node that could hold it is cordoned or broken
    QUEUE_BLOCKED = "queue_blocked"        # strict order: an earlier job waits for capacity
    RESERVED = "reserved"                  # backfill: it fits only on the node held for the head
    # Reasons a job never fits, not even on an empty and healthy node.
    NO_NODES = "no_nodes"                  # the cluster has no nodes
    CPU = "cpu"                            # nodes with the labels all have too little CPU
    MEMORY = "memory"                      # nodes with the labels all have too little memory
    CPU_AND_MEMORY = "cpu_and_memory"      # no node with the labels has enough of both


# The codes of scheduler.h, in order: OUTCOMES[code] and REASONS[code].
OUTCOMES: tuple[Outcome, ...] = (Outcome.ASSIGNED, Outcome.WAITS, Outcome.NEVER_FITS)
REASONS: tuple[Reason | None, ...] = (
    None,
    Reason.CAPACITY,
    Reason.LABELS,
    Reason.TENANT_LIMIT,
    Reason.NODE_UNAVAILABLE,
    Reason.QUEUE_BLOCKED,
    Reason.RESERVED,
    Reason.NO_NODES,
    Reason.CPU,
    Reason.MEMORY,
    Reason.CPU_AND_MEMORY,
)
POLICIES: tuple[Policy, ...] = (Policy.FIFO, Policy.BINPACK, Policy.SPREAD)


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    """Snapshot of one Docker engine: capacity, reserve, allocation, labels and flags.

    Only ``cpu_millis - reserved_cpu_millis`` (and the same for memory) is ever
    allocated. ``allocated_*`` may exceed that usable part, for example after the
    reserve grew; the node then counts as full.
    """

    name: str
    cpu_millis: int
    memory_bytes: int
    reserved_cpu_millis: int = 0
    reserved_memory_bytes: int = 0
    allocated_cpu_millis: int = 0
    allocated_memory_bytes: int = 0
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    cordoned: bool = False
    breaker_open: bool = False


class JobRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A pending job: its resource request, required labels and queue attributes."""

    job_id: str
    tenant: str
    cpu_millis: int
    memory_bytes: int
    required_labels: dict[str, str] = msgspec.field(default_factory=dict)
    priority: int = 0  # higher runs first
    runnable_at_ms: int = 0


class TenantUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Current usage of a tenant, for fair share and running-job limits."""

    running_jobs: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The decision for one job of a batch.

    ``node`` is an index into the nodes passed in, set only when ``outcome`` is
    ``ASSIGNED``; ``reason`` is set for the other outcomes. ``position`` is the
    job's 0-based place in queue order within the batch. Fields are positional
    because a batch builds one Decision per job.
    """

    job: int
    outcome: Outcome
    node: int | None = None
    reason: Reason | None = None
    position: int = 0
