"""The wrapper of the C core: the only module that imports the compiled ``lib``.

It validates inputs (through :mod:`cicd.scheduling.core.tables`), packs each column
into a C array with one ``ffi.new`` call, runs ``sched_place`` once for the whole
batch, and turns its return codes into exceptions. Importing this module raises
ImportError when the extension is not built.
"""

from __future__ import annotations

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

# What each input error code names, for the exception message.
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


class _Arrays:
    """A C struct and the arrays its pointers refer to, which must stay alive with it."""

    __slots__ = ("struct", "keep")

    def __init__(self, struct_type: str) -> None:
        self.struct: Any = ffi.new(struct_type)
        self.keep: list[Any] = []

    def set(self, field: str, c_type: str, values: list[int]) -> None:
        array = ffi.new(c_type, values)
        self.keep.append(array)
        setattr(self.struct, field, array)


def _node_arrays(nodes: NodeTable) -> _Arrays:
    """Return the C form of a node table, built once and kept in the table's cache."""
    cached = nodes.caches.get("native")
    if isinstance(cached, _Arrays):
        return cached
    arrays = _Arrays("struct sched_nodes *")
    arrays.struct.count = nodes.count
    arrays.struct.label_count = len(nodes.label_ids)
    arrays.set("cpu_capacity", "int64_t[]", nodes.cpu_capacity)
    arrays.set("memory_capacity", "int64_t[]", nodes.memory_capacity)
    arrays.set("cpu_reserved", "int64_t[]", nodes.cpu_reserved)
    arrays.set("memory_reserved", "int64_t[]", nodes.memory_reserved)
    arrays.set("cpu_allocated", "int64_t[]", nodes.cpu_allocated)
    arrays.set("memory_allocated", "int64_t[]", nodes.memory_allocated)
    arrays.set("flags", "uint8_t[]", nodes.flags)
    arrays.set("label_offsets", "int32_t[]", nodes.label_offsets)
    arrays.set("label_ids", "int32_t[]", nodes.node_label_ids)
    nodes.caches["native"] = arrays
    return arrays


def _job_arrays(jobs: JobTable) -> tuple[_Arrays, _Arrays, _Arrays]:
    classes = _Arrays("struct sched_label_classes *")
    classes.struct.count = len(jobs.class_offsets) - 1
    classes.set("offsets", "int32_t[]", jobs.class_offsets)
    classes.set("label_ids", "int32_t[]", jobs.class_label_ids)

    tenants = _Arrays("struct sched_tenants *")
    tenants.struct.count = len(jobs.tenant_names)
    tenants.set("running_jobs", "int64_t[]", jobs.tenant_running)
    tenants.set("cpu_allocated", "int64_t[]", jobs.tenant_cpu)
    tenants.set("memory_allocated", "int64_t[]", jobs.tenant_memory)
    tenants.set("running_limit", "int64_t[]", jobs.tenant_limit)

    job_arrays = _Arrays("struct sched_jobs *")
    job_arrays.struct.count = jobs.count
    job_arrays.set("cpu", "int64_t[]", jobs.cpu)
    job_arrays.set("memory", "int64_t[]", jobs.memory)
    job_arrays.set("priority", "int64_t[]", jobs.priority)
    job_arrays.set("runnable_at_ms", "int64_t[]", jobs.runnable_at_ms)
    job_arrays.set("tenant", "int32_t[]", jobs.tenant)
    job_arrays.set("label_class", "int32_t[]", jobs.label_class)
    return classes, tenants, job_arrays


def _raise_for(code: int, index: int, nodes: NodeTable, jobs: JobTable) -> None:
    if code == lib.SCHED_ERR_NO_MEMORY:
        raise MemoryError(f"the C scheduling core could not allocate its working memory "
                          f"for {nodes.count} nodes and {jobs.count} jobs")
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
    node_arrays = _node_arrays(nodes)
    classes, tenants, job_arrays = _job_arrays(jobs)
    c_options = ffi.new("struct sched_options *", {
        "policy": options.policy,
        "backfill": int(options.backfill),
        "now_ms": options.now_ms,
        "aging_interval_ms": options.aging_interval_ms,
    })

    count = jobs.count
    node_out = ffi.new("int32_t[]", count)
    outcome_out = ffi.new("uint8_t[]", count)
    reason_out = ffi.new("uint8_t[]", count)
    position_out = ffi.new("int32_t[]", count)
    latency_out = ffi.new("int64_t[]", count) if latencies else ffi.NULL
    result = ffi.new("struct sched_result *", {
        "node": node_out, "outcome": outcome_out, "reason": reason_out,
        "position": position_out, "latency_ns": latency_out,
    })

    code = lib.sched_place(node_arrays.struct, classes.struct, tenants.struct,
                           job_arrays.struct, c_options, result)
    if code != lib.SCHED_OK:
        _raise_for(code, result.error_index, nodes, jobs)

    return Placement(
        node=ffi.unpack(node_out, count),
        outcome=ffi.unpack(outcome_out, count),
        reason=ffi.unpack(reason_out, count),
        position=ffi.unpack(position_out, count),
        latency_ns=ffi.unpack(latency_out, count) if latencies else None,
    )
