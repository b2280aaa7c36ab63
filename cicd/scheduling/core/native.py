"""The wrapper of the C core: the only module that imports the compiled ``lib``.

It validates inputs (through :mod:`cicd.scheduling.core.tables`), hands the columns
to the C core (without a copy when they are arrays from ``pack_queue``, copied into
C arrays that it reuses between calls otherwise), runs ``sched_place`` once for the
whole batch, and turns its return codes into exceptions. ``place_one`` decides a
single job with ``sched_place_one``, in one call with five arguments. Importing
this module raises ImportError when the extension is not built.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from cicd.scheduling.core._native import ffi, lib
from cicd.scheduling.core.model import (
    DEFAULT_AGING_INTERVAL_MS,
    OUTCOMES,
    REASONS,
    Decision,
    JobRequest,
    NodeState,
    Outcome,
    Policy,
    TenantUsage,
)
from cicd.scheduling.core.tables import (
    INT32,
    INT64,
    JobTable,
    NodeTable,
    Options,
    PackedJob,
    Placement,
    check_packed_for,
    make_options,
    pack_jobs,
    pack_nodes,
    to_decisions,
)

# Columns up to this length are copied by cffi directly: below it, building an
# array() first costs more than it saves.
_SHORT_COLUMN = 32

# The input that each error code names, for the exception message.
_REJECTED = {
    lib.SCHED_ERR_OPTIONS: "the options",
    lib.SCHED_ERR_NODE: "nodes",
    lib.SCHED_ERR_LABEL_CLASS: "label classes",
    lib.SCHED_ERR_TENANT: "tenants",
    lib.SCHED_ERR_JOB: "jobs",
    lib.SCHED_ERR_RESULT: "the result arrays",
}


# sched_place_one() returns NOT_ASSIGNED - (outcome << 8 | reason) for a job it does
# not assign. Decisions are immutable, so every such call returns one built here.
_NOT_ASSIGNED = lib.SCHED_ONE_NOT_ASSIGNED
_UNASSIGNED: dict[int, Decision] = {
    _NOT_ASSIGNED - (outcome << 8 | reason): Decision(0, OUTCOMES[outcome], None, REASONS[reason])
    for outcome in (lib.SCHED_OUTCOME_WAITS, lib.SCHED_OUTCOME_NEVER_FITS)
    for reason in range(1, len(REASONS))
}
_ASSIGNED = Outcome.ASSIGNED
_BUSY = lib.SCHED_ERR_BUSY
_place_one = lib.sched_place_one


class NativeCoreError(RuntimeError):
    """The C core returned a code this wrapper does not know (a build mismatch)."""


def place(
    nodes: Sequence[NodeState] | NodeTable,
    jobs: Sequence[JobRequest],
    policy: Policy | str = Policy.FIFO,
    *,
    backfill: bool = False,
    tenants: Mapping[str, TenantUsage] | None = None,
    tenant_limits: Mapping[str, int] | None = None,
    now_ms: int | None = None,
    aging_interval_ms: int = DEFAULT_AGING_INTERVAL_MS,
) -> list[Decision]:
    """Decide a batch with the C core; see ``cicd.scheduling.core.place``.

    The ranges of the jobs' integer fields are checked by the C core instead of in
    Python. When it rejects a job, or a value does not fit in 64 bits, the jobs are
    validated again in Python, which raises the same error as the reference would.
    """
    options = make_options(policy, backfill, now_ms, aging_interval_ms)
    node_table = nodes if isinstance(nodes, NodeTable) else pack_nodes(nodes)
    job_table = pack_jobs(jobs, node_table, tenants, tenant_limits, check_ranges=False)
    try:
        placement = place_tables(node_table, job_table, options)
    except (OverflowError, ValueError):
        pack_jobs(jobs, node_table, tenants, tenant_limits)  # raises the error of the first job
        raise
    return to_decisions(placement)


class _Buffers:
    """The structs and arrays of one call, kept with a cluster and reused by the next
    call (under the cluster's lock), so a call copies into C memory instead of
    allocating it. Arrays grow to the largest call seen, and the pointers into them
    are computed when they grow, not on every call."""

    def __init__(self) -> None:
        self.classes: Any = ffi.new("struct sched_label_classes *")
        self.tenants: Any = ffi.new("struct sched_tenants *")
        self.jobs: Any = ffi.new("struct sched_jobs *")
        self.options: Any = ffi.new("struct sched_options *")
        self.result: Any = ffi.new("struct sched_result *")
        self.result.latency_ns = ffi.NULL
        self.options_set: Options | None = None  # the options copied into self.options
        self.job_capacity = self.tenant_capacity = self.class_capacity = -1
        self.job_int64: Any = None   # cpu, memory, priority, runnable_at_ms
        self.job_int32: Any = None   # tenant, label_class; then the result's node, position
        self.job_bytes: Any = None   # the result's outcome, reason
        self.tenant_int64: Any = None
        self.class_int32: Any = None
        # Pointers to the start of each column, in the order of the struct fields.
        self.job_int64_columns: list[Any] = []
        self.job_int32_columns: list[Any] = []
        self.tenant_columns: list[Any] = []
        self.node_out: Any = None
        self.position_out: Any = None
        self.reason_out: Any = None
        self.assigned_out: Any = None
        self.borrowed: list[Any] = []  # the arrays of a packed table, during a call

    def fill(self, jobs: JobTable, options: Options) -> None:
        """Point the structs at the columns of ``jobs``; the caller holds the lock."""
        count, tenants = jobs.count, len(jobs.tenant_names)
        classes = len(jobs.class_offsets) + len(jobs.class_label_ids)
        if count > self.job_capacity:
            self._grow_jobs(max(count, 2 * self.job_capacity, 16))
        if tenants > self.tenant_capacity:
            self._grow_tenants(max(tenants, 2 * self.tenant_capacity, 16))
        if classes > self.class_capacity:
            self.class_capacity = max(classes, 2 * self.class_capacity, 16)
            self.class_int32 = self.classes.offsets = ffi.new("int32_t[]", self.class_capacity)

        # Arrays from pack_queue() are passed as they are: the C core reads them during
        # the call only, and self.borrowed keeps them alive until the next call.
        if _is_packed(jobs):
            from_buffer = ffi.from_buffer
            self.borrowed = [from_buffer("int64_t[]", jobs.cpu),
                             from_buffer("int64_t[]", jobs.memory),
                             from_buffer("int64_t[]", jobs.priority),
                             from_buffer("int64_t[]", jobs.runnable_at_ms),
                             from_buffer("int32_t[]", jobs.tenant),
                             from_buffer("int32_t[]", jobs.label_class)]
            (self.jobs.cpu, self.jobs.memory, self.jobs.priority, self.jobs.runnable_at_ms,
             self.jobs.tenant, self.jobs.label_class) = self.borrowed
        else:
            self._copy_job_columns(jobs, count)
        self.jobs.count = count
        self._fill_tenants_and_classes(jobs, tenants, classes)

        if options != self.options_set:
            self._set_options(options)

    def fill_packed(self, count: int, options: Options) -> None:
        """Make room for the results of ``count`` jobs and set the options; the caller
        holds the lock. The jobs themselves go to the core in one buffer."""
        if count > self.job_capacity:
            self._grow_jobs(max(count, 2 * self.job_capacity, 16))
        if options != self.options_set:
            self._set_options(options)

    def _set_options(self, options: Options) -> None:
        self.options.policy = options.policy
        self.options.backfill = options.backfill
        self.options.now_ms = options.now_ms
        self.options.aging_interval_ms = options.aging_interval_ms
        self.options_set = options

    def _copy_job_columns(self, jobs: JobTable, count: int) -> None:
        # For long columns, array() converts a list at C speed, faster than cffi's
        # slice assignment; both raise OverflowError for a value outside the C type.
        cpu, memory, priority, runnable = self.job_int64_columns
        tenant, label_class = self.job_int32_columns
        (self.jobs.cpu, self.jobs.memory, self.jobs.priority, self.jobs.runnable_at_ms) = (
            self.job_int64_columns)
        self.jobs.tenant, self.jobs.label_class = self.job_int32_columns
        self.borrowed = []
        if count > _SHORT_COLUMN:
            memmove = ffi.memmove
            memmove(cpu, array("q", jobs.cpu), 8 * count)
            memmove(memory, array("q", jobs.memory), 8 * count)
            memmove(priority, array("q", jobs.priority), 8 * count)
            memmove(runnable, array("q", jobs.runnable_at_ms), 8 * count)
            memmove(tenant, array(INT32, jobs.tenant), 4 * count)
            memmove(label_class, array(INT32, jobs.label_class), 4 * count)
        else:
            cpu[0:count] = jobs.cpu
            memory[0:count] = jobs.memory
            priority[0:count] = jobs.priority
            runnable[0:count] = jobs.runnable_at_ms
            tenant[0:count] = jobs.tenant
            label_class[0:count] = jobs.label_class

    def _fill_tenants_and_classes(self, jobs: JobTable, tenants: int, classes: int) -> None:
        running, cpu_allocated, memory_allocated, running_limit = self.tenant_columns
        running[0:tenants] = jobs.tenant_running
        cpu_allocated[0:tenants] = jobs.tenant_cpu
        memory_allocated[0:tenants] = jobs.tenant_memory
        running_limit[0:tenants] = jobs.tenant_limit
        self.tenants.count = tenants

        offsets = len(jobs.class_offsets)
        self.class_int32[0:offsets] = jobs.class_offsets
        self.class_int32[offsets:classes] = jobs.class_label_ids
        self.classes.count = offsets - 1
        self.classes.label_ids = self.class_int32 + offsets

    def _grow_jobs(self, size: int) -> None:
        self.job_capacity = size
        self.job_int64 = ffi.new("int64_t[]", 4 * size)
        self.job_int32 = ffi.new("int32_t[]", 5 * size)
        self.job_bytes = ffi.new("uint8_t[]", 2 * size)
        self.job_int64_columns = [self.job_int64 + i * size for i in range(4)]
        self.job_int32_columns = [self.job_int32, self.job_int32 + size]
        self.jobs.cpu, self.jobs.memory, self.jobs.priority, self.jobs.runnable_at_ms = (
            self.job_int64_columns)
        self.jobs.tenant, self.jobs.label_class = self.job_int32_columns
        self.node_out = self.result.node = self.job_int32 + 2 * size
        self.position_out = self.result.position = self.job_int32 + 3 * size
        self.assigned_out = self.result.assigned = self.job_int32 + 4 * size
        self.result.outcome = self.job_bytes
        self.reason_out = self.result.reason = self.job_bytes + size

    def _grow_tenants(self, size: int) -> None:
        self.tenant_capacity = size
        self.tenant_int64 = ffi.new("int64_t[]", 4 * size)
        self.tenant_columns = [self.tenant_int64 + i * size for i in range(4)]
        (self.tenants.running_jobs, self.tenants.cpu_allocated, self.tenants.memory_allocated,
         self.tenants.running_limit) = self.tenant_columns

    def read(self, count: int, latency: Any) -> Placement:
        """Copy the results out of the reused buffers: lists for a few jobs, otherwise
        arrays and bytes (one copy each)."""
        if count <= _SHORT_COLUMN:
            unpack = ffi.unpack
            self.borrowed = []
            return Placement(
                node=unpack(self.node_out, count),
                outcome=unpack(self.job_bytes, count),
                reason=unpack(self.reason_out, count),
                position=unpack(self.position_out, count),
                assigned=unpack(self.assigned_out, self.result.assigned_count),
                latency_ns=None if latency is None else unpack(latency, count),
            )
        buffer = ffi.buffer
        node, position, assigned = array(INT32), array(INT32), array(INT32)
        node.frombytes(buffer(self.node_out, 4 * count))
        position.frombytes(buffer(self.position_out, 4 * count))
        assigned.frombytes(buffer(self.assigned_out, 4 * self.result.assigned_count))
        self.borrowed = []
        return Placement(
            node=node,
            outcome=buffer(self.job_bytes, count)[:],
            reason=buffer(self.reason_out, count)[:],
            position=position,
            assigned=assigned,
            latency_ns=None if latency is None else ffi.unpack(latency, count),
        )


def _is_packed(jobs: JobTable) -> bool:
    """Return whether every per-job column is an array of the C core's integer type."""
    # One expression, not a loop: a one-job call spends most of its time in this wrapper.
    cpu, memory, priority, runnable = jobs.cpu, jobs.memory, jobs.priority, jobs.runnable_at_ms
    tenant, label_class = jobs.tenant, jobs.label_class
    return (type(cpu) is array and type(memory) is array and type(priority) is array
            and type(runnable) is array and type(tenant) is array and type(label_class) is array
            and cpu.typecode == memory.typecode == priority.typecode == runnable.typecode == INT64
            and tenant.typecode == label_class.typecode == INT32)


class _Cluster:
    """A prepared C cluster, its reusable buffers, and the lock that keeps batches on
    it from overlapping: cffi releases the GIL during ``sched_place``, which
    modifies the cluster while it runs and restores it before returning, and the
    buffers belong to one call at a time. The core also refuses overlapping calls
    itself (``SCHED_ERR_BUSY``), which ``place_one`` relies on instead of the lock."""

    __slots__ = ("buffers", "handle", "lock")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.lock = threading.Lock()
        self.buffers = _Buffers()


def _cluster(nodes: NodeTable) -> _Cluster:
    """Return the C cluster of a node table, built once and kept in the table's cache."""
    cached = nodes.caches.get("native")
    if isinstance(cached, _Cluster):
        return cached
    struct: Any = ffi.new("struct sched_nodes *")
    int64 = ffi.new("int64_t[]", nodes.cpu_capacity + nodes.memory_capacity
                    + nodes.cpu_reserved + nodes.memory_reserved
                    + nodes.cpu_allocated + nodes.memory_allocated)
    n = nodes.count
    struct.cpu_capacity, struct.memory_capacity = int64, int64 + n
    struct.cpu_reserved, struct.memory_reserved = int64 + 2 * n, int64 + 3 * n
    struct.cpu_allocated, struct.memory_allocated = int64 + 4 * n, int64 + 5 * n
    flags = ffi.new("uint8_t[]", nodes.flags)
    labels = ffi.new("int32_t[]", nodes.label_offsets + nodes.node_label_ids)
    struct.flags = flags
    struct.label_offsets, struct.label_ids = labels, labels + len(nodes.label_offsets)
    struct.count = n
    struct.label_count = len(nodes.label_ids)

    out = ffi.new("struct sched_cluster **")
    error_index = ffi.new("int32_t *")
    code = lib.sched_cluster_new(struct, out, error_index)
    if code != lib.SCHED_OK:
        _raise_for(code, error_index[0], n, 0)
    # The cluster keeps its own copies, so these arrays may be freed; ffi.gc frees
    # the cluster together with the table.
    cluster = _Cluster(ffi.gc(out[0], lib.sched_cluster_free))
    nodes.caches["native"] = cluster
    return cluster


def _raise_for(code: int, index: int, node_count: int, job_count: int) -> None:
    if code == lib.SCHED_ERR_NO_MEMORY:
        raise MemoryError(f"the C scheduling core could not allocate its working memory "
                          f"for {node_count} nodes and {job_count} jobs")
    what = _REJECTED.get(code)
    if what is None:
        raise NativeCoreError(f"sched_place returned the unknown code {code}; rebuild the "
                              f"extension so that it matches this wrapper")
    where = f"{what}[{index}]" if index >= 0 else what
    raise ValueError(f"the C scheduling core rejected {where}: a value is out of range or "
                     f"inconsistent; build tables with pack_nodes and pack_jobs, which "
                     f"validate every field")


def place_tables(nodes: NodeTable, jobs: JobTable, options: Options, *,
                 latencies: bool = False) -> Placement:
    """Decide every job of the tables in one C call.

    With ``latencies``, the result also carries the time spent on each job in
    nanoseconds (CLOCK_MONOTONIC), measured inside the C loop.
    """
    cluster = _cluster(nodes)
    latency = ffi.new("int64_t[]", jobs.count) if latencies else None
    packed = jobs.packed
    with cluster.lock:
        buffers = cluster.buffers
        if packed is None:
            buffers.fill(jobs, options)
        else:
            buffers.fill_packed(jobs.count, options)
        result = buffers.result
        if latency is not None:
            result.latency_ns = latency
        while True:
            if packed is None:
                code = lib.sched_place(cluster.handle, buffers.classes, buffers.tenants,
                                       buffers.jobs, buffers.options, result)
            else:
                code = lib.sched_place_packed(cluster.handle, packed, len(packed),
                                              buffers.options, result)
            if code != _BUSY:
                break
            time.sleep(0)  # a place_one call, which takes no lock, holds the core briefly
        if latency is not None:
            result.latency_ns = ffi.NULL
        if code == lib.SCHED_OK:
            return buffers.read(jobs.count, latency)
        if packed is not None and code != lib.SCHED_ERR_NO_MEMORY:
            # A buffer that was changed or misaligned: the columns name the bad job, if any.
            buffers.fill(jobs, options)
            code = lib.sched_place(cluster.handle, buffers.classes, buffers.tenants,
                                   buffers.jobs, buffers.options, result)
            while code == _BUSY:
                time.sleep(0)
                code = lib.sched_place(cluster.handle, buffers.classes, buffers.tenants,
                                       buffers.jobs, buffers.options, result)
            if code == lib.SCHED_OK:
                return buffers.read(jobs.count, None)
        _raise_for(code, result.error_index, nodes.count, jobs.count)
        raise AssertionError("_raise_for returned")


def place_one(nodes: NodeTable, job: PackedJob, options: Options, *,
              tenant_at_limit: bool = False) -> Decision:
    """Decide one job alone, in one C call; see ``cicd.scheduling.core.place_one``.

    The core itself refuses to run two calls on one cluster at once, so this call
    takes no lock unless the core reports another call running (``SCHED_ERR_BUSY``).
    """
    if job.table is not nodes:
        check_packed_for(job, nodes)
    cluster: Any = nodes.caches.get("native")
    if cluster is None:
        cluster = _cluster(nodes)
    code = _place_one(cluster.handle, job.packed, job.size, options.policy, tenant_at_limit)
    # _decision_for(code), written out: a function call would add a tenth to the call.
    if code >= 0:
        return Decision(0, _ASSIGNED, code)
    decision = _UNASSIGNED.get(code)
    if decision is not None:
        return decision
    return _place_one_again(code, nodes, cluster, job, options, tenant_at_limit)


def _decision_for(code: int) -> Decision | None:
    """Return the Decision of a ``sched_place_one`` result, or None for an error code."""
    if code >= 0:
        return Decision(0, _ASSIGNED, code)
    return _UNASSIGNED.get(code)


def _place_one_again(code: int, nodes: NodeTable, cluster: _Cluster, job: PackedJob,
                     options: Options, tenant_at_limit: bool) -> Decision:
    """Handle a code other than a decision: wait while the core is busy, then decide or raise.

    A batch holds the cluster's lock while the core runs it, so waiting for the
    lock waits for the batch. Another ``place_one`` takes no lock but holds the
    core for microseconds only.
    """
    while code == _BUSY:
        time.sleep(0)
        with cluster.lock:
            code = _place_one(cluster.handle, job.packed, job.size, options.policy,
                              tenant_at_limit)
    decision = _decision_for(code)
    if decision is not None:
        return decision
    if code == lib.SCHED_ERR_JOB:
        raise ValueError(f"the C scheduling core rejected the job {job!r}: a value is out of "
                         f"range, or its labels are not ids of this node table; build it "
                         f"with pack_job on the same table")
    _raise_for(code, -1, nodes.count, 1)
    raise AssertionError("_raise_for returned")
