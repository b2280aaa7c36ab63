"""The placement rules in pure Python: the reference the C core is checked against.

It follows the same algorithm as ``scheduler.c`` step by step (docs/scheduling.md
states the rules), so the tests can require identical decisions, positions and
reasons from both. It is also the fallback when the C extension is not built.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence

from cicd.scheduling.core.model import (
    DEFAULT_AGING_INTERVAL_MS,
    Decision,
    JobRequest,
    NodeState,
    Policy,
    TenantUsage,
)
from cicd.scheduling.core.tables import (
    NO_AGING,
    NO_LIMIT,
    JobTable,
    NodeTable,
    Options,
    Placement,
    place_with,
)

PPM = 1_000_000

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

    __slots__ = ("neg_cpu", "memory")

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


def _node_label_sets(nodes: NodeTable) -> list[frozenset[int]]:
    cached = nodes.caches.get("reference")
    if cached is None:
        ids, offsets = nodes.node_label_ids, nodes.label_offsets
        cached = [frozenset(ids[offsets[i]:offsets[i + 1]]) for i in range(nodes.count)]
        nodes.caches["reference"] = cached
    return cached  # type: ignore[return-value]


class _Cluster:
    """Per-call state: the nodes that take new work, and the fronts per label class."""

    def __init__(self, nodes: NodeTable, jobs: JobTable) -> None:
        self.nodes = nodes
        self.usable_cpu = [c - r for c, r in zip(nodes.cpu_capacity, nodes.cpu_reserved)]
        self.usable_memory = [c - r for c, r in zip(nodes.memory_capacity, nodes.memory_reserved)]
        self.total_cpu = sum(self.usable_cpu)
        self.total_memory = sum(self.usable_memory)
        node_labels = _node_label_sets(nodes)
        offsets, ids = jobs.class_offsets, jobs.class_label_ids
        self.class_labels = [frozenset(ids[offsets[k]:offsets[k + 1]])
                             for k in range(len(offsets) - 1)]

        # The pool: nodes without flags, in ascending node index ("slots").
        self.node = [i for i, flag in enumerate(nodes.flags) if not flag]
        self.labels = [node_labels[i] for i in self.node]
        self.allocated_cpu = [nodes.cpu_allocated[i] for i in self.node]
        self.allocated_memory = [nodes.memory_allocated[i] for i in self.node]
        self.slot_cpu = [self.usable_cpu[i] for i in self.node]
        self.slot_memory = [self.usable_memory[i] for i in self.node]
        self.free_cpu = [max(u - a, 0) for u, a in zip(self.slot_cpu, self.allocated_cpu)]
        self.free_memory = [max(u - a, 0) for u, a in zip(self.slot_memory, self.allocated_memory)]
        self.score = [_share_ppm(a, u) + _share_ppm(b, v) for a, u, b, v in zip(
            self.allocated_cpu, self.slot_cpu, self.allocated_memory, self.slot_memory)]

        self._by_size: list[int] | None = None
        self._fronts: dict[int, tuple[_Frontier, _Frontier]] = {}
        self._node_labels = node_labels

    def fronts(self, label_class: int) -> tuple[_Frontier, _Frontier]:
        """Return the fronts of every node, and of the pool, with the class's labels."""
        found = self._fronts.get(label_class)
        if found is not None:
            return found
        if self._by_size is None:
            self._by_size = sorted(range(self.nodes.count), key=lambda i: (
                -self.usable_cpu[i], -self.usable_memory[i], i))
        need = self.class_labels[label_class]
        every, available = _Frontier(), _Frontier()
        flags = self.nodes.flags
        for i in self._by_size:
            if need and not need <= self._node_labels[i]:
                continue
            every.add_if_larger(self.usable_cpu[i], self.usable_memory[i])
            if not flags[i]:
                available.add_if_larger(self.usable_cpu[i], self.usable_memory[i])
        found = self._fronts[label_class] = (every, available)
        return found

    def never_fits_reason(self, every: _Frontier, cpu: int, memory: int) -> int:
        if not self.nodes.count:
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

    def assign(self, slot: int, cpu: int, memory: int) -> None:
        self.allocated_cpu[slot] += cpu
        self.allocated_memory[slot] += memory
        self.free_cpu[slot] -= cpu
        self.free_memory[slot] -= memory
        self.score[slot] = (_share_ppm(self.allocated_cpu[slot], self.slot_cpu[slot])
                            + _share_ppm(self.allocated_memory[slot], self.slot_memory[slot]))

    def choose_reservation(self, cpu: int, memory: int, need: frozenset[int]) -> int:
        """Return the pool slot held for the head: the candidate missing the least."""
        best, best_shortfall = -1, 0
        for slot, labels in enumerate(self.labels):
            usable_cpu, usable_memory = self.slot_cpu[slot], self.slot_memory[slot]
            if usable_cpu < cpu or usable_memory < memory or not need <= labels:
                continue
            shortfall = (_shortfall_ppm(cpu, self.free_cpu[slot], usable_cpu)
                         + _shortfall_ppm(memory, self.free_memory[slot], usable_memory))
            if best < 0 or shortfall < best_shortfall:
                best, best_shortfall = slot, shortfall
        return best


def _queue(jobs: JobTable, options: Options) -> list[tuple[int, int, int, int]]:
    """Sort the jobs by tenant, then effective priority (highest first), runnable time, index."""
    now, interval = options.now_ms, options.aging_interval_ms
    if now != NO_AGING and interval > 0:
        neg_priority = [-(p + max(now - r, 0) // interval)
                        for p, r in zip(jobs.priority, jobs.runnable_at_ms)]
    else:
        neg_priority = [-p for p in jobs.priority]
    return sorted(zip(jobs.tenant, neg_priority, jobs.runnable_at_ms, range(jobs.count)))


def place_tables(nodes: NodeTable, jobs: JobTable, options: Options, *,
                 latencies: bool = False, failure_memo: bool = True) -> Placement:
    """Decide every job of the tables. ``failure_memo=False`` rescans for every job
    (the tests use it to check that remembering failed shapes changes no decision)."""
    cluster = _Cluster(nodes, jobs)
    count = jobs.count
    result = Placement(node=[-1] * count, outcome=[WAITS] * count, reason=[NONE] * count,
                       position=[0] * count, latency_ns=[0] * count if latencies else None)
    node_out, outcome_out, reason_out = result.node, result.outcome, result.reason

    # Tenants: usage, share of the cluster, limits, and their ranges of the sorted queue.
    total_cpu, total_memory = cluster.total_cpu, cluster.total_memory
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
    free_cpu, free_memory, score, labels = (
        cluster.free_cpu, cluster.free_memory, cluster.score, cluster.labels)
    slots = range(len(cluster.node))
    failed: set[tuple[int, int, int]] = set()
    head_seen = queue_blocked = False
    reserved = -1
    timer = time.perf_counter_ns

    for position in range(count):
        started = timer() if latencies else 0
        _, _, _, _, j, t = heapq.heappop(heap)
        next_of[t] += 1
        result.position[j] = position
        cpu, memory, label_class = jobs.cpu[j], jobs.memory[j], jobs.label_class[j]
        need = cluster.class_labels[label_class]
        every, available = cluster.fronts(label_class)

        if not every.holds(cpu, memory):
            outcome_out[j] = NEVER_FITS
            reason_out[j] = cluster.never_fits_reason(every, cpu, memory)
        elif limit[t] != NO_LIMIT and running[t] >= limit[t]:
            reason_out[j] = TENANT_LIMIT
        elif queue_blocked:
            reason_out[j] = QUEUE_BLOCKED
        elif not available.holds(cpu, memory):
            reason_out[j] = NODE_UNAVAILABLE
        else:
            # Scan the pool, unless this shape already fit nowhere in this call.
            best = -1
            if not (failure_memo and (cpu, memory, label_class) in failed):
                fits = [s for s, x, y in zip(slots, free_cpu, free_memory)
                        if x >= cpu and y >= memory]
                fits_reserved = False
                if reserved >= 0:
                    k = bisect_left(fits, reserved)  # fits ascends
                    if k < len(fits) and fits[k] == reserved:
                        del fits[k]
                        fits_reserved = need <= labels[reserved]
                matching = [s for s in fits if need <= labels[s]] if need else fits
                capacity_elsewhere = len(matching) < len(fits)
                if matching:
                    if policy == FIFO:
                        best = matching[0]
                    elif policy == BINPACK:
                        best = max(matching, key=score.__getitem__)  # first max: lowest index
                    else:
                        best = min(matching, key=score.__getitem__)
                else:
                    failed.add((cpu, memory, label_class))
                    if not capacity_elsewhere:
                        failed.add((cpu, memory, 0))
            else:
                fits_reserved = (reserved >= 0 and free_cpu[reserved] >= cpu
                                 and free_memory[reserved] >= memory and need <= labels[reserved])
                capacity_elsewhere = False
                if need and (cpu, memory, 0) not in failed:
                    capacity_elsewhere = any(
                        x >= cpu and y >= memory and s != reserved
                        for s, x, y in zip(slots, free_cpu, free_memory))
                    if not capacity_elsewhere:
                        failed.add((cpu, memory, 0))

            if best >= 0:
                cluster.assign(best, cpu, memory)
                tenant_cpu[t] += cpu
                tenant_memory[t] += memory
                running[t] += 1
                shares[t] = share(t)
                node_out[j] = cluster.node[best]
                outcome_out[j] = ASSIGNED
            elif fits_reserved:
                reason_out[j] = RESERVED
            else:
                reason_out[j] = LABELS if capacity_elsewhere else CAPACITY
                if not head_seen:
                    # The first job that waits for capacity is the head.
                    head_seen = True
                    if backfill:
                        reserved = cluster.choose_reservation(cpu, memory, need)
                    else:
                        queue_blocked = True

        p = next_of[t]
        if p < end_of[t]:
            entry = order[p]
            heapq.heappush(heap, (entry[1], shares[t], running[t], entry[2], entry[3], t))
        if latencies:
            result.latency_ns[j] = timer() - started  # type: ignore[index]
    return result
