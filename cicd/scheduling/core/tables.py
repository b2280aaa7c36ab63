"""Validation of placement inputs, and their packing into columns of integers.

Both implementations (``native`` and ``reference``) decide from the same tables,
so they reject the same inputs with the same messages. A table contains one list per
field, which the C wrapper copies into a C array in one step.
Labels and tenants become small integer ids:

- every distinct ``key=value`` pair of the nodes gets a label id, and each node a
  strictly ascending list of ids;
- every distinct set of required labels gets a label class; class 0 is the empty
  set, and a required label that no node has becomes the id ``label_count``;
- tenants are numbered in the order they first appear in the jobs.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final, Protocol

import msgspec

from cicd.scheduling.core.model import (
    DEFAULT_AGING_INTERVAL_MS,
    MAX_JOBS,
    MAX_NODES,
    MAX_PRIORITY,
    MAX_QUANTITY,
    MAX_TIME_MS,
    MIN_PRIORITY,
    OUTCOMES,
    POLICIES,
    REASONS,
    Decision,
    JobRequest,
    NodeState,
    Policy,
    TenantUsage,
)

# Typecodes of the arrays that pack_queue() builds: int64_t and int32_t columns.
INT64: Final = "q"
INT32: Final = "i" if array("i").itemsize == 4 else "l"

NO_AGING = -1  # Options.now_ms when aging is off
NO_LIMIT = -1  # JobTable.tenant_limit for a tenant without a limit
FLAG_CORDONED = 1
FLAG_BREAKER_OPEN = 2

_OUTCOME_LIST = list(OUTCOMES)
_REASON_LIST = list(REASONS)
_POLICY_BY_NAME: dict[str, Policy] = {policy.value: policy for policy in POLICIES}
_POLICY_CODES: dict[Policy, int] = {policy: code for code, policy in enumerate(POLICIES)}
_NODE_FIELDS = [attrgetter(name) for name in (
    "name", "cpu_millis", "memory_bytes", "reserved_cpu_millis", "reserved_memory_bytes",
    "allocated_cpu_millis", "allocated_memory_bytes", "labels", "cordoned", "breaker_open",
)]
_JOB_FIELDS = [attrgetter(name) for name in (
    "job_id", "tenant", "cpu_millis", "memory_bytes", "priority", "runnable_at_ms",
    "required_labels",
)]


class NodeTable:
    """Validated nodes in columns. Build it with :func:`pack_nodes`; treat it as read-only.

    A table can be passed to ``place`` many times, which saves validating and
    packing the nodes on every call. ``caches`` lets each implementation keep its
    own form of the table (C arrays, label sets) next to it.
    """

    __slots__ = (
        "caches",
        "count",
        "cpu_allocated",
        "cpu_capacity",
        "cpu_reserved",
        "flags",
        "label_ids",
        "label_offsets",
        "memory_allocated",
        "memory_capacity",
        "memory_reserved",
        "names",
        "node_label_ids",
    )

    def __init__(self, *, names: list[str], cpu_capacity: list[int], memory_capacity: list[int],
                 cpu_reserved: list[int], memory_reserved: list[int], cpu_allocated: list[int],
                 memory_allocated: list[int], flags: list[int],
                 label_ids: dict[tuple[str, str], int], label_offsets: list[int],
                 node_label_ids: list[int]) -> None:
        self.count = len(names)
        self.names = names
        self.cpu_capacity = cpu_capacity
        self.memory_capacity = memory_capacity
        self.cpu_reserved = cpu_reserved
        self.memory_reserved = memory_reserved
        self.cpu_allocated = cpu_allocated
        self.memory_allocated = memory_allocated
        self.flags = flags
        self.label_ids = label_ids            # (key, value) -> label id
        self.label_offsets = label_offsets    # count + 1 entries
        self.node_label_ids = node_label_ids  # ascending within each node
        self.caches: dict[str, object] = {}


class JobTable:
    """Validated jobs in columns, with their label classes and tenants.

    The per-job columns are lists from :func:`pack_jobs`. A table from
    :func:`pack_queue` also has ``packed``, every column the C core reads in one
    read-only buffer (the layout of ``sched_place_packed`` in scheduler.h), and its
    per-job columns are read-only views of that buffer, so the two cannot disagree.
    """

    __slots__ = (
        "class_label_ids",
        "class_offsets",
        "count",
        "cpu",
        "label_class",
        "memory",
        "packed",
        "priority",
        "runnable_at_ms",
        "tenant",
        "tenant_cpu",
        "tenant_limit",
        "tenant_memory",
        "tenant_names",
        "tenant_running",
    )

    def __init__(self, *, cpu: Sequence[int], memory: Sequence[int], priority: Sequence[int],
                 runnable_at_ms: Sequence[int], tenant: Sequence[int], label_class: Sequence[int],
                 class_offsets: list[int], class_label_ids: list[int], tenant_names: list[str],
                 tenant_running: list[int], tenant_cpu: list[int], tenant_memory: list[int],
                 tenant_limit: list[int]) -> None:
        self.count = len(cpu)
        self.cpu = cpu
        self.memory = memory
        self.priority = priority
        self.runnable_at_ms = runnable_at_ms
        self.tenant = tenant
        self.label_class = label_class
        self.class_offsets = class_offsets
        self.class_label_ids = class_label_ids
        self.tenant_names = tenant_names
        self.tenant_running = tenant_running
        self.tenant_cpu = tenant_cpu
        self.tenant_memory = tenant_memory
        self.tenant_limit = tenant_limit
        self.packed: bytes | None = None


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """The per-call settings, validated: ``policy`` is an index into ``POLICIES``."""

    policy: int
    backfill: bool
    now_ms: int                # NO_AGING when aging is off
    aging_interval_ms: int


class Placement(msgspec.Struct, kw_only=True):
    """Raw per-job results of one call, as codes (see ``OUTCOMES`` and ``REASONS``).

    The C core returns arrays and bytes, the reference lists. ``assigned`` contains
    the indices of the assigned jobs in queue order, so a caller can build objects
    for those jobs only (see :func:`assigned_decisions`).
    """

    node: Sequence[int]        # -1 when not assigned
    outcome: Sequence[int]
    reason: Sequence[int]
    position: Sequence[int]
    assigned: Sequence[int] = ()
    latency_ns: list[int] | None = None


class PlaceTables(Protocol):
    def __call__(self, nodes: NodeTable, jobs: JobTable, options: Options, *,
                 latencies: bool = False) -> Placement: ...


# ---- checks ----------------------------------------------------------------------


def _first(values: Iterable[object], bad: Callable[[object], bool]) -> int:
    return next(i for i, value in enumerate(values) if bad(value))


# Below this length a plain loop checks a column faster than set(), min() and max().
_SHORT = 8


def _check_ints(values: list[int], low: int, high: int, where: str, field: str) -> None:
    """Raise TypeError or ValueError naming the first value that is no int in [low, high]."""
    if len(values) <= _SHORT:
        for value in values:
            if type(value) is not int or not low <= value <= high:
                break
        else:
            return
    elif set(map(type, values)) <= {int} and min(values) >= low and max(values) <= high:
        return
    for i, value in enumerate(values):
        if type(value) is not int:
            raise TypeError(f"{where}[{i}].{field} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{where}[{i}].{field} must be from {low} to {high}, got {value}")


def _types_are(values: list[Any], expected: type) -> bool:
    """Return whether every value's type is exactly ``expected`` (subclasses fail)."""
    if len(values) <= _SHORT:
        for value in values:
            if type(value) is not expected:
                return False
        return True
    return set(map(type, values)) <= {expected}


def _check_types(values: list[object], expected: type, where: str, field: str) -> None:
    if not _types_are(values, expected):
        i = _first(values, lambda value: type(value) is not expected)
        raise TypeError(f"{where}[{i}].{field} must be a {expected.__name__}, "
                        f"got {type(values[i]).__name__}")


def _check_items(items: Sequence[object], expected: type, where: str) -> None:
    kinds = set(map(type, items))
    if kinds <= {expected} or all(issubclass(kind, expected) for kind in kinds):
        return
    i = _first(items, lambda item: not isinstance(item, expected))
    raise TypeError(f"{where}[{i}] must be a {expected.__name__}, got {type(items[i]).__name__}")


def _check_labels(labels: object, where: str) -> None:
    if type(labels) is not dict:
        raise TypeError(f"{where} must be a dict of strings, got {type(labels).__name__}")
    for key, value in labels.items():
        if type(key) is not str or type(value) is not str or not key:
            raise TypeError(f"{where} must map non-empty string keys to strings, "
                            f"got {key!r}: {value!r}")


class _InvalidLabels(Exception):
    """Signal that a dict of required labels is invalid; the caller finds the job and raises."""


# ---- nodes -----------------------------------------------------------------------


def pack_nodes(nodes: Sequence[NodeState]) -> NodeTable:
    """Validate ``nodes`` and pack them into a :class:`NodeTable`.

    Raises TypeError for a value of the wrong type and ValueError for a value out of
    range, naming the node and field.
    """
    if len(nodes) > MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} nodes fit in one call, got {len(nodes)}")
    _check_items(nodes, NodeState, "nodes")
    # One pass per field: faster than building a tuple per node and transposing.
    columns: list[list[Any]] = [list(map(field, nodes)) for field in _NODE_FIELDS]
    (names, cpu, memory, cpu_reserved, memory_reserved, cpu_allocated, memory_allocated,
     labels, cordoned, breaker_open) = columns

    _check_types(names, str, "nodes", "name")
    for field, values in (
        ("cpu_millis", cpu), ("memory_bytes", memory),
        ("reserved_cpu_millis", cpu_reserved), ("reserved_memory_bytes", memory_reserved),
        ("allocated_cpu_millis", cpu_allocated), ("allocated_memory_bytes", memory_allocated),
    ):
        _check_ints(values, 0, MAX_QUANTITY, "nodes", field)
    for reserved, capacity, reserved_field, capacity_field in (
        (cpu_reserved, cpu, "reserved_cpu_millis", "cpu_millis"),
        (memory_reserved, memory, "reserved_memory_bytes", "memory_bytes"),
    ):
        if any(map(int.__gt__, reserved, capacity)):
            i = next(i for i, (r, c) in enumerate(zip(reserved, capacity)) if r > c)
            raise ValueError(
                f"nodes[{i}].{reserved_field} is {reserved[i]}, more than its {capacity_field} "
                f"{capacity[i]}; lower the reserve or raise the capacity")
    _check_types(cordoned, bool, "nodes", "cordoned")
    _check_types(breaker_open, bool, "nodes", "breaker_open")
    flags = [FLAG_CORDONED * c + FLAG_BREAKER_OPEN * b
             for c, b in zip(cordoned, breaker_open)]

    label_ids: dict[tuple[str, str], int] = {}
    offsets = [0]
    ids: list[int] = []
    for i, node_labels in enumerate(labels):
        if node_labels:
            _check_labels(node_labels, f"nodes[{i}].labels")
            ids.extend(sorted(label_ids.setdefault(item, len(label_ids))
                              for item in node_labels.items()))
        elif type(node_labels) is not dict:
            _check_labels(node_labels, f"nodes[{i}].labels")
        offsets.append(len(ids))
    if len(ids) > MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} node labels fit in one call, got {len(ids)}")

    return NodeTable(
        names=names,
        cpu_capacity=cpu, memory_capacity=memory,
        cpu_reserved=cpu_reserved, memory_reserved=memory_reserved,
        cpu_allocated=cpu_allocated, memory_allocated=memory_allocated,
        flags=flags, label_ids=label_ids, label_offsets=offsets, node_label_ids=ids,
    )


# ---- jobs ------------------------------------------------------------------------


def _pack_tenants(
    names: list[str], tenants: Mapping[str, TenantUsage], tenant_limits: Mapping[str, int],
) -> tuple[list[int], list[int], list[int], list[int]]:
    for name, usage in tenants.items():
        if not isinstance(usage, TenantUsage):
            raise TypeError(f"tenants[{name!r}] must be a TenantUsage, got {type(usage).__name__}")
        for field in ("running_jobs", "cpu_millis", "memory_bytes"):
            _check_ints([getattr(usage, field)], 0, MAX_QUANTITY, f"tenants[{name!r}]", field)
    for name, limit in tenant_limits.items():
        if type(limit) is not int:
            raise TypeError(f"tenant_limits[{name!r}] must be an integer, got {limit!r}")
        if not 0 <= limit <= MAX_QUANTITY:
            raise ValueError(f"tenant_limits[{name!r}] must be from 0 to {MAX_QUANTITY}, "
                             f"got {limit}")

    count = len(names)
    if tenants:
        idle = TenantUsage()
        usages = [tenants.get(name, idle) for name in names]
        running = [u.running_jobs for u in usages]
        cpu = [u.cpu_millis for u in usages]
        memory = [u.memory_bytes for u in usages]
    else:
        running, cpu, memory = [0] * count, [0] * count, [0] * count
    if tenant_limits:
        limits = [tenant_limits.get(name, NO_LIMIT) for name in names]
    else:
        limits = [NO_LIMIT] * count
    return running, cpu, memory, limits


class _LabelClasses:
    """Numbers the distinct sets of required labels of one batch; class 0 is the empty set."""

    def __init__(self, nodes: NodeTable) -> None:
        self.label_ids = nodes.label_ids
        self.unknown = len(nodes.label_ids)  # the id of a label no node has
        self.offsets = [0, 0]
        self.ids: list[int] = []
        self._by_ids: dict[tuple[int, ...], int] = {(): 0}
        # Equal dicts usually come in the same order, so their items find the class.
        self._by_items: dict[tuple[tuple[str, str], ...], int] = {}

    def of(self, required: dict[str, str]) -> int:
        """Return the class of ``required``; raise _InvalidLabels if a key or value is invalid."""
        items = tuple(required.items())
        found = self._by_items.get(items)
        if found is None:
            if not all(type(key) is str and key and type(value) is str for key, value in items):
                raise _InvalidLabels
            key = tuple(sorted({self.label_ids.get(item, self.unknown) for item in items}))
            found = self._by_ids.get(key)
            if found is None:
                found = self._by_ids[key] = len(self.offsets) - 1
                self.ids.extend(key)
                self.offsets.append(len(self.ids))
            self._by_items[items] = found
        return found


class _TenantIndex(dict[str, int]):
    """Index of each tenant name, numbered in the order of first lookup."""

    def __missing__(self, name: str) -> int:
        index = self[name] = len(self)
        return index


def pack_jobs(
    jobs: Sequence[JobRequest],
    nodes: NodeTable,
    tenants: Mapping[str, TenantUsage] | None = None,
    tenant_limits: Mapping[str, int] | None = None,
    *,
    check_ranges: bool = True,
) -> JobTable:
    """Validate ``jobs`` and the tenant maps, and pack them into a :class:`JobTable`.

    ``nodes`` supplies the label ids. Raises TypeError or ValueError naming the job
    (or tenant) and field. With ``check_ranges=False`` the integer fields of the
    jobs are checked for their type only, and the caller must check their ranges
    (the C core does). When any check fails in that mode, every check runs again in
    the normal order, so the error names the same first invalid value as with
    ``check_ranges=True``.
    """
    if len(jobs) > MAX_JOBS:
        raise ValueError(f"at most {MAX_JOBS} jobs fit in one call, got {len(jobs)}")
    _check_items(jobs, JobRequest, "jobs")
    columns: list[list[Any]] = [list(map(field, jobs)) for field in _JOB_FIELDS]
    if not check_ranges:
        try:
            return _pack_job_columns(columns, nodes, tenants, tenant_limits, check_ranges=False)
        except (TypeError, ValueError):
            pass  # the call below raises the first error in the normal order
    return _pack_job_columns(columns, nodes, tenants, tenant_limits, check_ranges=True)


def _pack_job_columns(
    columns: list[list[Any]],
    nodes: NodeTable,
    tenants: Mapping[str, TenantUsage] | None,
    tenant_limits: Mapping[str, int] | None,
    *,
    check_ranges: bool,
) -> JobTable:
    job_ids, tenant_names, cpu, memory, priority, runnable, labels = columns
    _check_types(job_ids, str, "jobs", "job_id")
    _check_types(tenant_names, str, "jobs", "tenant")
    integers = ((cpu, 0, MAX_QUANTITY, "cpu_millis"),
                (memory, 0, MAX_QUANTITY, "memory_bytes"),
                (priority, MIN_PRIORITY, MAX_PRIORITY, "priority"),
                (runnable, 0, MAX_TIME_MS, "runnable_at_ms"))
    for values, low, high, field in integers:
        if check_ranges or not _types_are(values, int):
            _check_ints(values, low, high, "jobs", field)

    tenant_index = _TenantIndex()
    tenant = list(map(tenant_index.__getitem__, tenant_names))
    if "" in tenant_index:
        raise ValueError(f"jobs[{tenant_names.index('')}].tenant must not be empty")
    names = list(tenant_index)

    _check_types(labels, dict, "jobs", "required_labels")
    classes = _LabelClasses(nodes)
    if any(labels):
        label_class_of = classes.of
        try:
            label_class = [label_class_of(required) if required else 0 for required in labels]
        except _InvalidLabels:
            for i, required in enumerate(labels):
                _check_labels(required, f"jobs[{i}].required_labels")
            raise AssertionError("_LabelClasses.of rejected labels that _check_labels accepts")
    else:
        label_class = [0] * len(labels)

    running, tenant_cpu, tenant_memory, limits = _pack_tenants(
        names, tenants or {}, tenant_limits or {})
    return JobTable(
        cpu=cpu, memory=memory, priority=priority, runnable_at_ms=runnable,
        tenant=tenant, label_class=label_class, class_offsets=classes.offsets,
        class_label_ids=classes.ids, tenant_names=names, tenant_running=running,
        tenant_cpu=tenant_cpu, tenant_memory=tenant_memory, tenant_limit=limits,
    )


def pack_queue(
    jobs: Sequence[JobRequest],
    nodes: NodeTable,
    tenants: Mapping[str, TenantUsage] | None = None,
    tenant_limits: Mapping[str, int] | None = None,
) -> JobTable:
    """Validate and pack ``jobs`` as :func:`pack_jobs` does, into one buffer (``packed``).

    A caller that keeps its queue packed between scheduling passes pays for reading
    and checking each JobRequest once, and ``place_tables`` of either implementation
    then does no per-job Python work on the input: the C wrapper hands the buffer to
    the core as it is. The per-job columns become read-only views of the buffer. The
    table refers to the label ids of ``nodes``, so it is valid only with tables of
    the same nodes.
    """
    table = pack_jobs(jobs, nodes, tenants, tenant_limits)
    n, t = table.count, len(table.tenant_names)
    wide = array(INT64, (n, t, len(table.class_offsets) - 1, len(table.class_label_ids)))
    for column in (table.cpu, table.memory, table.priority, table.runnable_at_ms,
                   table.tenant_running, table.tenant_cpu, table.tenant_memory,
                   table.tenant_limit):
        wide.extend(column)
    narrow = array(INT32, table.tenant)
    for column in (table.label_class, table.class_offsets, table.class_label_ids):
        narrow.extend(column)
    if len(narrow) % 2:
        narrow.append(0)
    packed = table.packed = wide.tobytes() + narrow.tobytes()
    view = memoryview(packed)
    words = view.cast(INT64)
    table.cpu, table.memory = words[4:4 + n], words[4 + n:4 + 2 * n]
    table.priority, table.runnable_at_ms = words[4 + 2 * n:4 + 3 * n], words[4 + 3 * n:4 + 4 * n]
    halves = view[8 * len(wide):].cast(INT32)
    table.tenant, table.label_class = halves[:n], halves[n:2 * n]
    return table


class PackedJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job from :func:`pack_job`, for ``place_one`` on the node table it was packed for.

    ``packed`` holds the request and the ids of the required labels in the layout
    of ``sched_place_one`` (scheduler.h), for the C core, and ``need`` the same ids
    as a set, for the reference. ``table`` is the node table whose label ids these
    are (see :func:`check_packed_for`).
    """

    cpu: int
    memory: int
    need: frozenset[int]
    packed: bytes
    size: int
    table: NodeTable


def pack_job(job: JobRequest, nodes: NodeTable) -> PackedJob:
    """Validate one job as :func:`pack_jobs` does, and pack it for ``place_one``.

    Like a table from :func:`pack_queue`, the result refers to the label ids of
    ``nodes``, so it is valid only with tables of the same nodes.
    """
    table = pack_jobs([job], nodes)
    label_class = table.label_class[0]
    ids = table.class_label_ids[table.class_offsets[label_class]:
                                table.class_offsets[label_class + 1]]
    packed = array(INT64, (table.cpu[0], table.memory[0])).tobytes() + array(INT32, ids).tobytes()
    return PackedJob(cpu=table.cpu[0], memory=table.memory[0], need=frozenset(ids),
                     packed=packed, size=len(packed), table=nodes)


def check_packed_for(job: PackedJob, nodes: NodeTable) -> None:
    """Raise ValueError unless ``job`` was packed for ``nodes`` or a table with the same labels.

    A label id means a label only within its table: id 0 of another table is another
    label, so a job packed elsewhere could land on a node without its labels.
    """
    if job.table is not nodes and job.table.label_ids != nodes.label_ids:
        raise ValueError("the job was packed for another node table, whose label ids "
                         "differ from this one's; pack it again with pack_job(job, nodes)")


# ---- options and results -----------------------------------------------------------


def make_options(policy: Policy | str, backfill: bool, now_ms: int | None,
                 aging_interval_ms: int) -> Options:
    """Validate the per-call settings; raise ValueError or TypeError naming the setting."""
    chosen = _POLICY_BY_NAME.get(policy) if isinstance(policy, str) else None
    if chosen is None:
        choices = ", ".join(p.value for p in POLICIES)
        raise ValueError(f"unknown policy {policy!r}; choose one of {choices}")
    if type(backfill) is not bool:
        raise TypeError(f"backfill must be a bool, got {backfill!r}")
    if backfill and chosen is Policy.FIFO:
        raise ValueError("backfill needs the binpack or spread policy; fifo keeps strict order")
    if now_ms is not None:
        _check_ints([now_ms], 0, MAX_TIME_MS, "options", "now_ms")
    _check_ints([aging_interval_ms], 0, MAX_TIME_MS, "options", "aging_interval_ms")
    return Options(
        policy=_POLICY_CODES[chosen],
        backfill=backfill,
        now_ms=NO_AGING if now_ms is None else now_ms,
        aging_interval_ms=aging_interval_ms,
    )


def to_decisions(placement: Placement) -> list[Decision]:
    """Turn raw result codes into one :class:`Decision` per job, in input order."""
    # map() calls Decision with positional arguments without a Python-level loop.
    # A list's __getitem__ is a method that map() calls faster than a tuple's.
    return list(map(
        Decision,
        range(len(placement.node)),
        map(_OUTCOME_LIST.__getitem__, placement.outcome),
        [None if node < 0 else node for node in placement.node],
        map(_REASON_LIST.__getitem__, placement.reason),
        placement.position,
    ))


def assigned_decisions(placement: Placement) -> list[Decision]:
    """Build a :class:`Decision` for each assigned job only, in queue order.

    A pass over a long queue usually places few of its jobs, so this costs far less
    than :func:`to_decisions`. The codes of the other jobs stay in ``placement``.
    """
    node, position = placement.node, placement.position
    assigned = _OUTCOME_LIST[0]
    return [Decision(j, assigned, node[j], None, position[j]) for j in placement.assigned]


def place_with(
    place_tables: PlaceTables,
    nodes: Sequence[NodeState] | NodeTable,
    jobs: Sequence[JobRequest],
    policy: Policy | str,
    *,
    backfill: bool,
    tenants: Mapping[str, TenantUsage] | None,
    tenant_limits: Mapping[str, int] | None,
    now_ms: int | None,
    aging_interval_ms: int = DEFAULT_AGING_INTERVAL_MS,
) -> list[Decision]:
    """Validate and pack the inputs, decide with ``place_tables``, and build the decisions."""
    options = make_options(policy, backfill, now_ms, aging_interval_ms)
    node_table = nodes if isinstance(nodes, NodeTable) else pack_nodes(nodes)
    job_table = pack_jobs(jobs, node_table, tenants, tenant_limits)
    return to_decisions(place_tables(node_table, job_table, options))
