"""The wrapper of the C core: the only module that imports the compiled ``lib``.

It validates inputs (through :mod:`cicd.scheduling.core.tables`), copies each column
into C arrays that it reuses between calls, runs ``sched_place`` once for the whole
batch, and turns its return codes into exceptions. Importing this module raises
ImportError when the extension is not built.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from cicd.scheduling.core._native import ffi, lib
from cicd.scheduling.core.model import (
    DEFAULT_AGING_INTERVAL_MS,
    Decision,
    JobRequest,
    NodeState,
    Policy,
    TenantUsage,
)
from cicd.scheduling.core.tables import JobTable, NodeTable, Options, Placement, place_with

# The input that each error code names, for the exception message.
_REJECTED = {
    lib.SCHED_ERR_OPTIONS: "the options",
    lib.SCHED_ERR_NODE: "nodes",
    lib.SCHED_ERR_LABEL_CLASS: "label classes",
    lib.SCHED_ERR_TENANT: "tenants",
    lib.SCHED_ERR_JOB: "jobs",
    lib.SCHED_ERR_RESULT: "the result arrays",
}


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
    """Decide a batch with the C core; see ``cicd.scheduling.core.place``."""
    return place_with(place_tables, nodes, jobs, policy, backfill=backfill, tenants=tenants,
                      tenant_limits=tenant_limits, now_ms=now_ms,
                      aging_interval_ms=aging_interval_ms)


class _Buffers:
    """The structs and arrays of one call, kept with a cluster and reused by the next
    call (under the cluster's lock), so a call copies into C memory instead of
    allocating it. Arrays grow to the largest call seen."""

    def __init__(self) -> None:
        self.classes: Any = ffi.new("struct sched_label_classes *")
        self.tenants: Any = ffi.new("struct sched_tenants *")
        self.jobs: Any = ffi.new("struct sched_jobs *")
        self.options: Any = ffi.new("struct sched_options *")
        self.result: Any = ffi.new("struct sched_result *")
        self.job_capacity = self.tenant_capacity = self.class_capacity = -1
        self.job_int64: Any = None   # cpu, memory, priority, runnable_at_ms
        self.job_int32: Any = None   # tenant, label_class; then the result's node, position
        self.job_bytes: Any = None   # the result's outcome, reason
        self.tenant_int64: Any = None
        self.class_int32: Any = None

    def fill(self, jobs: JobTable, options: Options) -> None:
        count, tenants = jobs.count, len(jobs.tenant_names)
        classes = len(jobs.class_offsets) + len(jobs.class_label_ids)
        if count > self.job_capacity:
            self._grow_jobs(max(count, 2 * self.job_capacity, 16))
        if tenants > self.tenant_capacity:
            self._grow_tenants(max(tenants, 2 * self.tenant_capacity, 16))
        if classes > self.class_capacity:
            self.class_capacity = max(classes, 2 * self.class_capacity, 16)
            self.class_int32 = ffi.new("int32_t[]", self.class_capacity)

        size = self.job_capacity
        columns = (jobs.cpu, jobs.memory, jobs.priority, jobs.runnable_at_ms)
        for i, column in enumerate(columns):
            self.job_int64[i * size:i * size + count] = column
        self.job_int32[0:count] = jobs.tenant
        self.job_int32[size:size + count] = jobs.label_class
        self.jobs.count = count

        size = self.tenant_capacity
        columns = (jobs.tenant_running, jobs.tenant_cpu, jobs.tenant_memory, jobs.tenant_limit)
        for i, column in enumerate(columns):
            self.tenant_int64[i * size:i * size + tenants] = column
        self.tenants.count = tenants

        offsets = len(jobs.class_offsets)
        self.class_int32[0:offsets] = jobs.class_offsets
        self.class_int32[offsets:classes] = jobs.class_label_ids
        self.classes.count = offsets - 1
        self.classes.offsets = self.class_int32
        self.classes.label_ids = self.class_int32 + offsets

        self.options.policy = options.policy
        self.options.backfill = options.backfill
        self.options.now_ms = options.now_ms
        self.options.aging_interval_ms = options.aging_interval_ms
        self.result.latency_ns = ffi.NULL

    def _grow_jobs(self, size: int) -> None:
        self.job_capacity = size
        self.job_int64 = ffi.new("int64_t[]", 4 * size)
        self.job_int32 = ffi.new("int32_t[]", 4 * size)
        self.job_bytes = ffi.new("uint8_t[]", 2 * size)
        self.jobs.cpu, self.jobs.memory = self.job_int64, self.job_int64 + size
        self.jobs.priority, self.jobs.runnable_at_ms = (self.job_int64 + 2 * size,
                                                        self.job_int64 + 3 * size)
        self.jobs.tenant, self.jobs.label_class = self.job_int32, self.job_int32 + size
        self.result.node, self.result.position = (self.job_int32 + 2 * size,
                                                  self.job_int32 + 3 * size)
        self.result.outcome, self.result.reason = self.job_bytes, self.job_bytes + size

    def _grow_tenants(self, size: int) -> None:
        self.tenant_capacity = size
        self.tenant_int64 = array = ffi.new("int64_t[]", 4 * size)
        self.tenants.running_jobs, self.tenants.cpu_allocated = array, array + size
        self.tenants.memory_allocated, self.tenants.running_limit = (array + 2 * size,
                                                                     array + 3 * size)

    def read(self, count: int, latency: Any) -> Placement:
        size = self.job_capacity
        outcomes = ffi.buffer(self.job_bytes, count)[:]
        reasons = ffi.buffer(self.job_bytes + size, count)[:]
        return Placement(
            node=ffi.unpack(self.job_int32 + 2 * size, count),
            outcome=list(outcomes),
            reason=list(reasons),
            position=ffi.unpack(self.job_int32 + 3 * size, count),
            latency_ns=None if latency is None else ffi.unpack(latency, count),
        )


class _Cluster:
    """A prepared C cluster, its reusable buffers, and the lock that keeps calls on
    it from overlapping: cffi releases the GIL during ``sched_place``, which
    modifies the cluster while it runs and restores it before returning."""

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
    with cluster.lock:
        buffers = cluster.buffers
        buffers.fill(jobs, options)
        if latency is not None:
            buffers.result.latency_ns = latency
        code = lib.sched_place(cluster.handle, buffers.classes, buffers.tenants, buffers.jobs,
                               buffers.options, buffers.result)
        if code != lib.SCHED_OK:
            _raise_for(code, buffers.result.error_index, nodes.count, jobs.count)
        return buffers.read(jobs.count, latency)
