"""The placement rules in pure Python: the reference the C core is checked against.

It applies the rules of docs/scheduling.md with some of the shortcuts of
``scheduler.c``: block summaries of 64 nodes, failed shapes remembered within a
call, and matching nodes and fronts cached per label set. The C core has more (see
docs/scheduling.md), which change no decision either; the tests require identical
decisions, positions and reasons from both. ``place_tables(..., exhaustive=True)``
drops the shortcuts (one block spanning every node and no remembered shapes),
which leaves the rules alone. ``place_tables`` takes the job tables of
``pack_jobs`` (lists) and of ``pack_queue`` (read-only views) alike.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence

from cicd.scheduling.core.model import (
    DEFAULT_AGING_INTERVAL_MS,
    REASONS,
    Decision,
    JobRequest,
    NodeState,
    Outcome,
    Policy,
    TenantUsage,
)
from cicd.scheduling.core.tables import (
    NO_AGING,
    NO_LIMIT,
    JobTable,
    NodeTable,
    Options,
    PackedJob,
    Placement,
    check_packed_for,
    place_with,
)

PPM = 1_000_000
BLOCK = 64
LABEL_SETS_MAX = 1024

ASSIGNED, WAITS, NEVER_FITS = 0, 1, 2
(NONE, CAPACITY, LABELS, TENANT_LIMIT, NODE_UNAVAILABLE, QUEUE_BLOCKED, RESERVED,
 NO_NODES, CPU, MEMORY, CPU_AND_MEMORY) = range(11)
FIFO, BINPACK, SPREAD = 0, 1, 2


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
    """Decide a batch with the Python implementation; see ``cicd.scheduling.core.place``."""
    return place_with(place_tables, nodes, jobs, policy, backfill=backfill, tenants=tenants,
                      tenant_limits=tenant_limits, now_ms=now_ms,
                      aging_interval_ms=aging_interval_ms)


def _share_ppm(allocated: int, usable: int) -> int:
    return PPM if allocated >= usable else allocated * PPM // usable


def _shortfall_ppm(request: int, free: int, usable: int) -> int:
    return 0 if request <= free else (request - free) * PPM // usable


class _Frontier:
    """The Pareto front of (usable CPU, usable memory) over a set of nodes."""

    __slots__ = ("memory", "neg_cpu")

    def __init__(self) -> None:
        self.neg_cpu: list[int] = []  # ascending, so bisect works
        self.memory: list[int] = []   # ascending

    def add_if_larger(self, cpu: int, memory: int) -> None:
        # Points arrive largest CPU first: keep one only when it has more memory.
        if not self.memory or memory > self.memory[-1]:
            self.neg_cpu.append(-cpu)
            self.memory.append(memory)

    def holds(self, cpu: int, memory: int) -> bool:
        count = bisect_right(self.neg_cpu, -cpu)  # points with at least `cpu`
        return count > 0 and self.memory[count - 1] >= memory


class _LabelSet:
    """Results for one set of required labels, built on first use."""

    __slots__ = ("fronts", "slot_matches")

    def __init__(self) -> None:
        self.fronts: tuple[_Frontier, _Frontier] | None = None  # every node, the pool
        self.slot_matches: list[bool] | None = None


class _Prepared:
    """Derived state of a node table, built once: per-node constants, the pool (nodes without
    flags, in ascending node index, numbered by "slot") and results per label set."""

    def __init__(self, nodes: NodeTable) -> None:
        self.count = nodes.count
        self.flags = nodes.flags
        self.usable_cpu = [c - r for c, r in zip(nodes.cpu_capacity, nodes.cpu_reserved)]
        self.usable_memory = [c - r for c, r in zip(nodes.memory_capacity, nodes.memory_reserved)]
        self.total_cpu = sum(self.usable_cpu)
        self.total_memory = sum(self.usable_memory)
        ids, offsets = nodes.node_label_ids, nodes.label_offsets
        self.labels = [frozenset(ids[offsets[i]:offsets[i + 1]]) for i in range(nodes.count)]
        self.by_size = sorted(range(nodes.count), key=lambda i: (
            -self.usable_cpu[i], -self.usable_memory[i], i))
        self.label_sets: dict[frozenset[int], _LabelSet] = {}

        self.slot_node = [i for i, flag in enumerate(nodes.flags) if not flag]
        self.slot_labels = [self.labels[i] for i in self.slot_node]
        self.slot_cpu = [self.usable_cpu[i] for i in self.slot_node]
        self.slot_memory = [self.usable_memory[i] for i in self.slot_node]
        self.allocated_cpu = [nodes.cpu_allocated[i] for i in self.slot_node]
        self.allocated_memory = [nodes.memory_allocated[i] for i in self.slot_node]
        self.free_cpu = [max(u - a, 0) for u, a in zip(self.slot_cpu, self.allocated_cpu)]
        self.free_memory = [max(u - a, 0) for u, a in zip(self.slot_memory, self.allocated_memory)]
        self.score = [_share_ppm(a, u) + _share_ppm(b, v) for a, u, b, v in zip(
            self.allocated_cpu, self.slot_cpu, self.allocated_memory, self.slot_memory)]
        self.blocks = _Blocks(self.free_cpu, self.free_memory, self.score, BLOCK)
        self._shared_pool: _Pool | None = None

    def shared_pool(self) -> _Pool:
        """Return a pool over this state itself, not a copy, for calls that only read it."""
        if self._shared_pool is None:
            self._shared_pool = _Pool(self, exhaustive=False, copy=False)
        return self._shared_pool

    def label_set(self, need: frozenset[int]) -> _LabelSet:
        found = self.label_sets.get(need)
        if found is None:
            found = _LabelSet()
            if len(self.label_sets) < LABEL_SETS_MAX:
                self.label_sets[need] = found
        return found

    def fronts_of(self, need: frozenset[int], label_set: _LabelSet) -> tuple[_Frontier, _Frontier]:
        """Return the fronts of every node, and of the pool, with the labels ``need``."""
        if label_set.fronts is not None:
            return label_set.fronts
        every, available = _Frontier(), _Frontier()
        labels, flags = self.labels, self.flags
        for i in self.by_size:
            if need and not need <= labels[i]:
                continue
            every.add_if_larger(self.usable_cpu[i], self.usable_memory[i])
            if not flags[i]:
                available.add_if_larger(self.usable_cpu[i], self.usable_memory[i])
        label_set.fronts = (every, available)
        return label_set.fronts

    def slot_matches(self, need: frozenset[int], label_set: _LabelSet) -> list[bool]:
        """Return, per slot, whether the node has the labels ``need``."""
        if label_set.slot_matches is None:
            label_set.slot_matches = [need <= labels for labels in self.slot_labels]
        return label_set.slot_matches

    def never_fits_reason(self, every: _Frontier, cpu: int, memory: int) -> int:
        if not self.count:
            return NO_NODES
        if not every.memory:
            return LABELS
        cpu_ok = -every.neg_cpu[0] >= cpu
        memory_ok = every.memory[-1] >= memory
        if not cpu_ok and memory_ok:
            return CPU
        if cpu_ok and not memory_ok:
            return MEMORY
        return CPU_AND_MEMORY


class _Blocks:
    """Per block of ``size`` slots: the most free CPU and memory of one slot, and the
    highest and lowest score. A scan skips blocks that cannot hold or win a job."""

    __slots__ = ("free_cpu", "free_memory", "max_score", "min_score", "size")

    def __init__(self, free_cpu: list[int], free_memory: list[int], score: list[int],
                 size: int) -> None:
        self.size = size
        starts = range(0, len(score), size)
        self.free_cpu = [max(free_cpu[s:s + size]) for s in starts]
        self.free_memory = [max(free_memory[s:s + size]) for s in starts]
        self.max_score = [max(score[s:s + size]) for s in starts]
        self.min_score = [min(score[s:s + size]) for s in starts]

    def copy(self) -> _Blocks:
        blocks = _Blocks.__new__(_Blocks)
        blocks.size = self.size
        blocks.free_cpu = self.free_cpu.copy()
        blocks.free_memory = self.free_memory.copy()
        blocks.max_score = self.max_score.copy()
        blocks.min_score = self.min_score.copy()
        return blocks

    def refresh(self, b: int, free_cpu: list[int], free_memory: list[int],
                score: list[int]) -> None:
        low, high = b * self.size, (b + 1) * self.size
        self.free_cpu[b] = max(free_cpu[low:high])
        self.free_memory[b] = max(free_memory[low:high])
        self.max_score[b] = max(score[low:high])
        self.min_score[b] = min(score[low:high])


def _prepared(nodes: NodeTable) -> _Prepared:
    cached = nodes.caches.get("reference")
    if not isinstance(cached, _Prepared):
        cached = nodes.caches["reference"] = _Prepared(nodes)
    return cached


class _Pool:
    """The slots' state during one call, copied from the prepared table, or with
    ``copy=False`` the prepared lists themselves, which the caller must not assign to."""

    def __init__(self, prepared: _Prepared, exhaustive: bool, *, copy: bool = True) -> None:
        self.node = prepared.slot_node
        self.labels = prepared.slot_labels
        self.usable_cpu = prepared.slot_cpu
        self.usable_memory = prepared.slot_memory
        self.allocated_cpu = prepared.allocated_cpu
        self.allocated_memory = prepared.allocated_memory
        self.free_cpu = prepared.free_cpu
        self.free_memory = prepared.free_memory
        self.score = prepared.score
        self.blocks = prepared.blocks
        if not copy:
            return
        self.allocated_cpu = self.allocated_cpu.copy()
        self.allocated_memory = self.allocated_memory.copy()
        self.free_cpu = self.free_cpu.copy()
        self.free_memory = self.free_memory.copy()
        self.score = self.score.copy()
        if exhaustive:
            self.blocks = _Blocks(self.free_cpu, self.free_memory, self.score,
                                  max(len(self.score), 1))
        else:
            self.blocks = prepared.blocks.copy()

    def scan(self, cpu: int, memory: int, matches: list[bool] | None, reserved: int,
             policy: int) -> tuple[int, bool, bool]:
        """Find the slot for a job by policy, ties going to the lowest slot.

        Returns the slot (or -1), whether a slot other than the reserved one has the
        free capacity but not the labels, and whether the reserved slot would take the
        job. ``matches`` tells which slots have the job's labels (None: it needs none).
        """
        free_cpu, free_memory, score = self.free_cpu, self.free_memory, self.score
        blocks = self.blocks
        size, count = blocks.size, len(score)
        best, best_score = -1, 0
        capacity_elsewhere = fits_reserved = False
        candidates = [b for b, (x, y) in enumerate(zip(blocks.free_cpu, blocks.free_memory))
                      if x >= cpu and y >= memory]
        for b in candidates:
            if best >= 0 and (blocks.max_score[b] <= best_score if policy == BINPACK
                              else blocks.min_score[b] >= best_score):
                continue
            fits = [a for a in range(b * size, min((b + 1) * size, count))
                    if free_cpu[a] >= cpu and free_memory[a] >= memory]
            if reserved >= 0:
                k = bisect_left(fits, reserved)  # fits ascends
                if k < len(fits) and fits[k] == reserved:
                    del fits[k]
                    fits_reserved = matches is None or matches[reserved]
            matching = fits if matches is None else [a for a in fits if matches[a]]
            if len(matching) < len(fits):
                capacity_elsewhere = True
            if not matching:
                continue
            if policy == FIFO:
                return matching[0], False, False
            if policy == BINPACK:
                slot = max(matching, key=score.__getitem__)  # the first of equal maxima
                if best < 0 or score[slot] > best_score:
                    best, best_score = slot, score[slot]
            else:
                slot = min(matching, key=score.__getitem__)
                if best < 0 or score[slot] < best_score:
                    best, best_score = slot, score[slot]
        return best, capacity_elsewhere, fits_reserved

    def capacity_anywhere(self, cpu: int, memory: int, reserved: int) -> bool:
        """Return whether a slot other than the reserved one has the free capacity, labels aside."""
        return any(x >= cpu and y >= memory and a != reserved
                   for a, (x, y) in enumerate(zip(self.free_cpu, self.free_memory)))

    def assign(self, slot: int, cpu: int, memory: int) -> None:
        self.allocated_cpu[slot] += cpu
        self.allocated_memory[slot] += memory
        self.free_cpu[slot] -= cpu
        self.free_memory[slot] -= memory
        self.score[slot] = (_share_ppm(self.allocated_cpu[slot], self.usable_cpu[slot])
                            + _share_ppm(self.allocated_memory[slot], self.usable_memory[slot]))
        self.blocks.refresh(slot // self.blocks.size, self.free_cpu, self.free_memory, self.score)

    def choose_reservation(self, cpu: int, memory: int, need: frozenset[int]) -> int:
        """Return the slot held for the head: among slots with its labels whose usable
        capacity fits it, the one missing the least (CPU ppm + memory ppm)."""
        best, best_shortfall = -1, 0
        for slot, labels in enumerate(self.labels):
            usable_cpu, usable_memory = self.usable_cpu[slot], self.usable_memory[slot]
            if usable_cpu < cpu or usable_memory < memory or not need <= labels:
                continue
            shortfall = (_shortfall_ppm(cpu, self.free_cpu[slot], usable_cpu)
                         + _shortfall_ppm(memory, self.free_memory[slot], usable_memory))
            if best < 0 or shortfall < best_shortfall:
                best, best_shortfall = slot, shortfall
        return best


def _as_list(column: Sequence[int]) -> list[int]:
    """Return a column as a list: reading a list's items is faster than a view's."""
    return column if type(column) is list else column.tolist()  # type: ignore[attr-defined]


def _queue(jobs: JobTable, options: Options) -> list[tuple[int, int, int, int]]:
    """Sort the jobs by tenant, then effective priority (highest first), runnable time, index."""
    now, interval = options.now_ms, options.aging_interval_ms
    priority, runnable_at_ms = _as_list(jobs.priority), _as_list(jobs.runnable_at_ms)
    if now != NO_AGING and interval > 0:
        neg_priority = [-(p + max(now - r, 0) // interval)
                        for p, r in zip(priority, runnable_at_ms)]
    else:
        neg_priority = [-p for p in priority]
    return sorted(zip(_as_list(jobs.tenant), neg_priority, runnable_at_ms, range(jobs.count)))


def place_tables(nodes: NodeTable, jobs: JobTable, options: Options, *,
                 latencies: bool = False, exhaustive: bool = False) -> Placement:
    """Decide every job of the tables.

    With ``latencies``, the result carries the time spent on each job in nanoseconds.
    ``exhaustive`` turns the shortcuts off (see the module docstring); the tests use
    it to check that they change no decision.
    """
    prepared = _prepared(nodes)
    pool = _Pool(prepared, exhaustive)
    count = jobs.count
    node_out, outcome_out, reason_out, position_out = (
        [-1] * count, [WAITS] * count, [NONE] * count, [0] * count)
    assigned: list[int] = []
    result = Placement(node=node_out, outcome=outcome_out, reason=reason_out,
                       position=position_out, assigned=assigned,
                       latency_ns=[0] * count if latencies else None)
    class_needs = [frozenset(jobs.class_label_ids[jobs.class_offsets[k]:jobs.class_offsets[k + 1]])
                   for k in range(len(jobs.class_offsets) - 1)]

    # Tenants: usage, dominant share of the cluster, limits, and their ranges of the queue.
    total_cpu, total_memory = prepared.total_cpu, prepared.total_memory
    tenant_cpu = list(jobs.tenant_cpu)
    tenant_memory = list(jobs.tenant_memory)
    running = list(jobs.tenant_running)
    limit = jobs.tenant_limit

    def share(t: int) -> int:
        return max(tenant_cpu[t] * PPM // total_cpu if total_cpu else 0,
                   tenant_memory[t] * PPM // total_memory if total_memory else 0)

    shares = [share(t) for t in range(len(jobs.tenant_names))]
    order = _queue(jobs, options)
    next_of: dict[int, int] = {}
    end_of: dict[int, int] = {}
    for position, entry in enumerate(order):
        next_of.setdefault(entry[0], position)
        end_of[entry[0]] = position + 1
    heap = [(order[p][1], shares[t], running[t], order[p][2], order[p][3], t)
            for t, p in next_of.items()]
    heapq.heapify(heap)

    policy, backfill = options.policy, options.backfill
    failed: set[tuple[int, int, int]] = set()
    head_seen = queue_blocked = False
    reserved = -1
    timer = time.perf_counter_ns
    latency_out = result.latency_ns or []

    job_cpu, job_memory = _as_list(jobs.cpu), _as_list(jobs.memory)
    job_label_class = _as_list(jobs.label_class)
    for position in range(count):
        started = timer() if latencies else 0
        _, _, _, _, j, t = heapq.heappop(heap)
        next_of[t] += 1
        position_out[j] = position
        cpu, memory, label_class = job_cpu[j], job_memory[j], job_label_class[j]
        need = class_needs[label_class]
        label_set = prepared.label_set(need)
        every, available = prepared.fronts_of(need, label_set)

        if not every.holds(cpu, memory):
            outcome_out[j] = NEVER_FITS
            reason_out[j] = prepared.never_fits_reason(every, cpu, memory)
        elif limit[t] != NO_LIMIT and running[t] >= limit[t]:
            reason_out[j] = TENANT_LIMIT
        elif queue_blocked:
            reason_out[j] = QUEUE_BLOCKED
        elif not available.holds(cpu, memory):
            reason_out[j] = NODE_UNAVAILABLE
        else:
            # Scan the pool, unless this shape already fit nowhere in this call.
            best = -1
            if exhaustive or (cpu, memory, label_class) not in failed:
                matches = prepared.slot_matches(need, label_set) if need else None
                best, capacity_elsewhere, fits_reserved = pool.scan(
                    cpu, memory, matches, reserved, policy)
                if best < 0:
                    failed.add((cpu, memory, label_class))
                    if not capacity_elsewhere:
                        failed.add((cpu, memory, 0))
            else:
                fits_reserved = (reserved >= 0 and pool.free_cpu[reserved] >= cpu
                                 and pool.free_memory[reserved] >= memory
                                 and need <= pool.labels[reserved])
                capacity_elsewhere = False
                if need and (cpu, memory, 0) not in failed:
                    capacity_elsewhere = pool.capacity_anywhere(cpu, memory, reserved)
                    if not capacity_elsewhere:
                        failed.add((cpu, memory, 0))

            if best >= 0:
                pool.assign(best, cpu, memory)
                tenant_cpu[t] += cpu
                tenant_memory[t] += memory
                running[t] += 1
                shares[t] = share(t)
                node_out[j] = pool.node[best]
                assigned.append(j)
                outcome_out[j] = ASSIGNED
            elif fits_reserved:
                reason_out[j] = RESERVED
            else:
                reason_out[j] = LABELS if capacity_elsewhere else CAPACITY
                if not head_seen:
                    # The first job that waits for capacity is the head: strict order
                    # stops here, backfill reserves one node for it.
                    head_seen = True
                    if backfill:
                        reserved = pool.choose_reservation(cpu, memory, need)
                    else:
                        queue_blocked = True

        p = next_of[t]
        if p < end_of[t]:
            entry = order[p]
            heapq.heappush(heap, (entry[1], shares[t], running[t], entry[2], entry[3], t))
        if latencies:
            latency_out[j] = timer() - started
    return result


def place_one(nodes: NodeTable, job: PackedJob, options: Options, *,
              tenant_at_limit: bool = False) -> Decision:
    """Decide one job alone; see ``cicd.scheduling.core.place_one``.

    The checks of ``place_tables`` for a job with no job before it in the queue: no
    queue is blocked and no node is reserved. A lone job changes no state, so the
    pool is read in place instead of copied.
    """
    if job.table is not nodes:
        check_packed_for(job, nodes)
    prepared = _prepared(nodes)
    cpu, memory, need = job.cpu, job.memory, job.need
    label_set = prepared.label_set(need)
    every, available = prepared.fronts_of(need, label_set)
    if not every.holds(cpu, memory):
        return Decision(0, Outcome.NEVER_FITS, None,
                        REASONS[prepared.never_fits_reason(every, cpu, memory)])
    if tenant_at_limit:
        return Decision(0, Outcome.WAITS, None, REASONS[TENANT_LIMIT])
    if not available.holds(cpu, memory):
        return Decision(0, Outcome.WAITS, None, REASONS[NODE_UNAVAILABLE])
    matches = prepared.slot_matches(need, label_set) if need else None
    pool = prepared.shared_pool()
    best, capacity_elsewhere, _ = pool.scan(cpu, memory, matches, -1, options.policy)
    if best >= 0:
        return Decision(0, Outcome.ASSIGNED, pool.node[best])
    return Decision(0, Outcome.WAITS, None, REASONS[LABELS if capacity_elsewhere else CAPACITY])
