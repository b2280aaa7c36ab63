"""The cluster: the nodes jobs run on, what each holds, and the queue of jobs waiting for one.

Every change that can let a waiting job start runs one scheduling pass: a job
queued or released, or a change to a node's capacity, breaker or cordon. In a pass
the waiting jobs and a snapshot of the nodes go to the placement core in one call
per policy, and each assigned job is woken with its node. The pass is synchronous
and takes microseconds per job, so it runs in the caller's task and no thread is used.

The input the core gets for a node: its capacity minus its reserve, and what the jobs
placed there requested. A node also has a job count limit (``max_jobs``); a node
that reached it is shown to the core as fully allocated. Each job requests at
least 1 millicore, so a full node holds no more jobs, whatever they request. A
node that reaches its limit within a call ends that call's round; the jobs after
it go to another round (see ``Cluster._place_group``).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import trio

from cicd.errors import CicdError
from cicd.events import model as ev
from cicd.scheduling.core import (
    JobRequest,
    NodeState,
    Outcome,
    Policy,
    Reason,
    TenantUsage,
    place,
)
from cicd.workers.base import Provider

logger = logging.getLogger("cicd.scheduling")

MIN_CPU_REQUEST = 1  # millicore
# Capacity given to the core for a node whose engine has not responded yet. It is
# large, so no job is judged too big for it, and the node is marked unavailable.
UNKNOWN_CAPACITY = 1 << 50

# Text for each wait reason, for people; the API and `cicd show` give the code too.
WAIT_TEXT = {
    Reason.CAPACITY: "waiting for capacity: no node with its labels has enough free CPU or memory",
    Reason.LABELS: "waiting: the nodes with its labels are full (nodes without them have room)",
    Reason.TENANT_LIMIT: "waiting: its tenant runs as many jobs as its limit allows",
    Reason.NODE_UNAVAILABLE: "waiting: the nodes that could run it are cordoned or unavailable",
    Reason.QUEUE_BLOCKED: "waiting behind an earlier job (strict order)",
    Reason.RESERVED: "waiting: the only node it fits is held for a larger job ahead of it",
}


class NeverFits(CicdError):
    """Error for a job no node could ever run: its labels or its request exist on no node."""

    code = "SCH-NEVER-FITS"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Breaker:
    """A node's circuit breaker: closed, open after too many failed calls, half-open probe.

    ``record(ok)`` counts a call to the node's engine. While closed, the last
    ``window`` calls are kept; when at least ``min_calls`` of them are known and the
    failed share reaches ``error_rate``, the breaker opens. After ``open_for``
    seconds it is half-open: the next probe decides, closing it or opening it again.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, *, error_rate: float = 0.5, window: int = 10, min_calls: int = 3,
                 open_for: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.error_rate = error_rate
        self.min_calls = min_calls
        self.open_for = open_for
        self.clock = clock
        self._calls: collections.deque[bool] = collections.deque(maxlen=window)
        self._opened_at: float | None = None
        self._state = self.CLOSED

    @property
    def state(self) -> str:
        if self._state == self.OPEN and self._opened_at is not None \
                and self.clock() - self._opened_at >= self.open_for:
            self._state = self.HALF_OPEN
        return self._state

    def record(self, ok: bool) -> str:
        """Count one call; return the state after it."""
        state = self.state
        if state == self.HALF_OPEN:
            self._close() if ok else self.trip()
        elif state == self.CLOSED:
            self._calls.append(ok)
            failures = self._calls.count(False)
            if len(self._calls) >= self.min_calls and failures >= self.error_rate * len(self._calls):
                self.trip()
        return self.state

    def trip(self) -> None:
        """Open now (a node known to be lost)."""
        self._state = self.OPEN
        self._opened_at = self.clock()
        self._calls.clear()

    def reset(self) -> None:
        """Close now (a node that responded to a probe and was fenced)."""
        self._close()

    def _close(self) -> None:
        self._state = self.CLOSED
        self._opened_at = None
        self._calls.clear()


class ClusterNode:
    """One node: its provider, labels, capacity, reserve, allocation and health."""

    def __init__(self, name: str, provider: Provider, *, labels: Mapping[str, str] | None = None,
                 cpu_millis: int = 0, memory_bytes: int = 0,
                 reserved_cpu_millis: int = 0, reserved_memory_bytes: int = 0,
                 max_jobs: int = 0, breaker: Breaker | None = None,
                 cpu_override: bool = False, memory_override: bool = False,
                 responded: bool = True) -> None:
        self.name = name
        self.provider = provider
        self.labels = dict(labels or {})
        self.cpu_millis = cpu_millis
        self.memory_bytes = memory_bytes
        self.cpu_override = cpu_override  # set in configuration: the engine's figure is ignored
        self.memory_override = memory_override
        self.reserved_cpu_millis = reserved_cpu_millis
        self.reserved_memory_bytes = reserved_memory_bytes
        self.max_jobs_setting = max_jobs
        self.breaker = breaker or Breaker()
        self.allocations: dict[str, tuple[int, int]] = {}  # "run/job" -> (cpu, memory)
        self.cordoned = False
        self.draining = False
        self.fencing = False  # back after a loss: stale containers are being removed
        self.lost_since: float | None = None  # monotonic time it stopped responding
        # False until the node's engine first responds to a probe; until then it takes no work.
        self.responded = responded
        self.message = ""
        self.returned = trio.Event()  # set each time it takes work again after a loss
        self.lost = trio.Event()  # set when it is marked lost; a new one once it is back

    @property
    def max_jobs(self) -> int:
        if self.max_jobs_setting:
            return self.max_jobs_setting
        return max(1, self.cpu_millis // 1000)

    @property
    def takes_work(self) -> bool:
        return not self.cordoned and not self.draining and not self.fencing \
            and self.lost_since is None and self.breaker.state == Breaker.CLOSED \
            and self.capacity_known and self.responded

    @property
    def state(self) -> str:
        if self.fencing:
            return "fencing"
        if self.breaker.state != Breaker.CLOSED or not self.capacity_known \
                or not self.responded or self.lost_since is not None:
            return "unavailable"
        if self.draining:
            return "draining" if self.allocations else "drained"
        if self.cordoned:
            return "cordoned"
        return "ready"

    @property
    def allocated(self) -> tuple[int, int]:
        cpu = sum(cpu for cpu, _ in self.allocations.values())
        memory = sum(memory for _, memory in self.allocations.values())
        return cpu, memory

    @property
    def capacity_known(self) -> bool:
        return self.cpu_millis > 0 and self.memory_bytes > 0

    def snapshot(self) -> NodeState:
        """Return the node's state in the placement core's input form."""
        if not self.capacity_known:
            return NodeState(name=self.name, cpu_millis=UNKNOWN_CAPACITY,
                             memory_bytes=UNKNOWN_CAPACITY, labels=self.labels,
                             cordoned=self.cordoned, breaker_open=True)
        cpu, memory = self.allocated
        usable_cpu = max(0, self.cpu_millis - self.reserved_cpu_millis)
        if len(self.allocations) >= self.max_jobs:
            cpu = max(cpu, usable_cpu)
        return NodeState(
            name=self.name, cpu_millis=self.cpu_millis, memory_bytes=self.memory_bytes,
            reserved_cpu_millis=min(self.reserved_cpu_millis, self.cpu_millis),
            reserved_memory_bytes=min(self.reserved_memory_bytes, self.memory_bytes),
            allocated_cpu_millis=cpu, allocated_memory_bytes=memory, labels=self.labels,
            cordoned=self.cordoned or self.draining or self.fencing,
            breaker_open=self.breaker.state != Breaker.CLOSED or not self.responded
            or self.lost_since is not None,
        )


class _Waiting:
    __slots__ = ("done", "key", "never", "node", "on_wait", "pool", "reason", "request")

    def __init__(self, key: str, request: JobRequest, pool: str,
                 on_wait: Callable[[str, str], None] | None) -> None:
        self.key = key
        self.request = request
        self.pool = pool
        self.on_wait = on_wait
        self.done = trio.Event()
        self.node: str | None = None
        self.never: tuple[str, str] | None = None  # (reason, message)
        self.reason = ""


class Cluster:
    """The nodes and the queue of jobs waiting for one; see the module's docstring."""

    def __init__(self, nodes: Iterable[ClusterNode], *, policy: Policy | str = Policy.FIFO,
                 backfill: bool = False, pools: Mapping[str, tuple[str, bool]] | None = None,
                 aging_interval_ms: int = 60_000,
                 tenant_limits: Mapping[str, int] | None = None,
                 per_tenant_jobs: int = 0) -> None:
        self.nodes: dict[str, ClusterNode] = {node.name: node for node in nodes}
        self.policy = Policy(policy)
        self.backfill = backfill
        # pool name -> (policy, backfill), for jobs with runs_on {pool: name}
        self.pools = {name: (Policy(p), b) for name, (p, b) in (pools or {}).items()}
        self.aging_interval_ms = aging_interval_ms
        self.tenant_limits = dict(tenant_limits or {})  # per tenant, over per_tenant_jobs
        self.per_tenant_jobs = per_tenant_jobs  # every other tenant's limit; 0: none
        self.waiting: dict[str, _Waiting] = {}
        self.placed: dict[str, str] = {}  # "run/job" -> node
        self._tenants: dict[str, str] = {}  # "run/job" -> tenant of placed jobs
        self.events: list[ev.Event] = []  # to append to the log; see flush_events
        self.events_ready = trio.Event()
        self._flushing = trio.Lock()
        self.passes = 0

    # --- jobs -------------------------------------------------------------------------

    async def acquire(self, request: JobRequest, *, run_id: str, pool: str = "",
                      on_wait: Callable[[str, str], None] | None = None) -> str:
        """Wait until ``request`` is placed; return the node's name.

        ``request.job_id`` is the key "run/job". ``on_wait(reason, text)`` is
        called each time the reason the job waits changes. Raises NeverFits when
        no node could ever run the job. Cancelling the caller takes the job out of
        the queue, or releases its node if it was placed in the meantime.
        """
        key = request.job_id
        if key in self.waiting or key in self.placed:
            raise ValueError(f"job {key} is already queued or placed")
        waiting = _Waiting(key, request, pool, on_wait)
        self.waiting[key] = waiting
        self._record(ev.OfferCreated(
            run_id=run_id, tenant_id=request.tenant, job=key.partition("/")[2],
            cpu_millis=request.cpu_millis, memory_bytes=request.memory_bytes,
            labels=dict(request.required_labels), priority=request.priority))
        try:
            self.schedule()
            await waiting.done.wait()
        except BaseException:
            self.waiting.pop(key, None)
            if waiting.node is not None:
                self.release(key)
            raise
        if waiting.never is not None:
            reason, message = waiting.never
            raise NeverFits(message, reason)
        assert waiting.node is not None
        return waiting.node

    def adopt(self, request: JobRequest, node_name: str) -> None:
        """Record a job already running on ``node_name`` (taken over after a restart)."""
        key = request.job_id
        node = self.nodes.get(node_name)
        if node is None:
            logger.warning("job %s ran on node %s, which is no longer configured", key, node_name)
            return
        node.allocations[key] = (request.cpu_millis, request.memory_bytes)
        self.placed[key] = node_name
        self._tenants[key] = request.tenant

    def release(self, key: str) -> None:
        """Free what job ``key`` held on its node, and let waiting jobs use it."""
        node_name = self.placed.pop(key, None)
        self._tenants.pop(key, None)
        if node_name is None:
            return
        node = self.nodes.get(node_name)
        if node is not None:
            node.allocations.pop(key, None)
            if node.draining and not node.allocations:
                logger.info("node %s is drained: no job runs there", node_name)
                self.node_changed(node_name)
        self.schedule()

    def running_on(self, node_name: str) -> list[str]:
        return sorted(key for key, name in self.placed.items() if name == node_name)

    # --- nodes ------------------------------------------------------------------------

    def provider(self, node_name: str) -> Provider:
        return self.nodes[node_name].provider

    def node(self, name: str) -> ClusterNode:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise LookupError(f"no node named {name!r}; the nodes are {known}") from None

    def set_capacity(self, name: str, cpu_millis: int, memory_bytes: int) -> None:
        """Record the capacity an engine reported, which also shows that it responds."""
        node = self.nodes[name]
        first_answer = not node.responded
        node.responded = True
        cpu = node.cpu_millis if node.cpu_override else cpu_millis
        memory = node.memory_bytes if node.memory_override else memory_bytes
        if (cpu, memory) == (node.cpu_millis, node.memory_bytes):
            if first_answer:
                self.node_changed(name)
            return
        node.cpu_millis, node.memory_bytes = cpu, memory
        if node.reserved_cpu_millis >= cpu or node.reserved_memory_bytes >= memory:
            node.message = (f"its reserve ({format_cpu(node.reserved_cpu_millis)} CPU, "
                            f"{format_bytes(node.reserved_memory_bytes)}) is not below its "
                            f"capacity ({format_cpu(cpu)} CPU, {format_bytes(memory)}), so it "
                            "takes no job; lower reserve_cpu or reserve_memory")
            logger.warning("node %s: %s", name, node.message)
        self.node_changed(name)

    def node_changed(self, name: str) -> None:
        """Record a node's new state (breaker, cordon, fencing) and schedule again."""
        node = self.nodes[name]
        cpu, memory = node.allocated
        self._record(ev.CapacityUpdated(run_id="", node=name, cpu_millis=node.cpu_millis,
                                        memory_bytes=node.memory_bytes, state=node.state,
                                        allocated_cpu_millis=cpu,
                                        allocated_memory_bytes=memory,
                                        cordoned=node.cordoned, draining=node.draining))
        self.schedule()

    def cordon(self, name: str, *, cordoned: bool, drain: bool = False) -> bool:
        """Cordon (or uncordon) a node; ``drain`` also marks it draining until its jobs end.

        Returns False when the node was in that state already.
        """
        node = self.node(name)
        draining = drain and cordoned
        if (node.cordoned, node.draining) == (cordoned, draining):
            return False
        node.cordoned, node.draining = cordoned, draining
        self.node_changed(name)
        return True

    async def confirm_lost(self, name: str, *, timeout: float = 5.0) -> bool:
        """After an engine error on node ``name``, probe it; True when it does not respond.

        A node that does not respond has its breaker opened at once and counts as
        lost from now: its jobs end ``node_lost``.
        """
        node = self.nodes.get(name)
        if node is None:
            return False
        if node.lost_since is not None:
            return True
        ok = False
        with trio.move_on_after(timeout):
            try:
                await node.provider.check()
                ok = True
            except CicdError as exc:
                node.message = str(exc)
        if ok:
            node.breaker.record(True)
            return False
        self.mark_lost(node)
        return True

    def mark_lost(self, node: ClusterNode) -> None:
        """Mark the node lost: it takes no work until it is back and fenced."""
        if node.lost_since is None:
            node.lost_since = trio.current_time()
            node.returned = trio.Event()
            logger.error("node %s is lost: %s", node.name, node.message or "it does not respond")
        node.lost.set()  # the steps running there end now: see lost_signal
        node.provider.abandon_calls()
        if node.breaker.state == Breaker.CLOSED:
            node.breaker.trip()
        self.node_changed(node.name)

    def mark_unfenced(self, name: str) -> None:
        """Mark node ``name`` as needing fencing before it takes work, after a restart.

        A job of the previous server process may still run there (its node did not
        respond at the restart, or a retry waited for the node's fencing). The node
        counts as lost: its next successful probe fences it. Unlike
        :meth:`mark_lost` this does not trip the breaker, so a node that responds is
        fenced at its next probe, and jobs taken over there go on.
        """
        node = self.nodes.get(name)
        if node is None or node.lost_since is not None:
            return
        node.lost_since = trio.current_time()
        node.returned = trio.Event()
        node.message = "a job of the previous server process may still run here"
        logger.warning("node %s: fencing it before it takes work, because %s", name,
                       node.message)
        self.node_changed(name)

    def mark_returned(self, node: ClusterNode) -> None:
        """Mark the node back: it responds again, its stale objects are gone, it takes work."""
        node.lost_since = None
        node.fencing = False
        node.message = ""
        node.breaker.reset()
        node.lost = trio.Event()
        node.returned.set()
        logger.info("node %s is back and takes work again", node.name)
        self.node_changed(node.name)

    def lost_signal(self, name: str) -> trio.Event | None:
        """Return the event set when node ``name`` is marked lost (None: no such node).

        A step that runs there waits on it, so it ends when the node stops responding,
        even while the engine accepts connections and never responds.
        """
        node = self.nodes.get(name)
        return None if node is None else node.lost

    async def wait_lost_or_fenced(self, name: str, limit: float,
                                  stopped: Callable[[], bool] = lambda: False) -> bool:
        """Wait until node ``name`` is back and fenced; return False after ``limit`` seconds.

        Fenced means the node responded again and its stale containers were removed,
        so a job lost there can no longer be running. Returns early (False) when
        ``stopped()`` turns true.
        """
        node = self.nodes.get(name)
        if node is None or node.lost_since is None:
            return True
        deadline = trio.current_time() + limit
        returned = node.returned
        while not returned.is_set() and not stopped() and trio.current_time() < deadline:
            with trio.move_on_at(min(deadline, trio.current_time() + 0.25)):
                await returned.wait()
        return returned.is_set()

    # --- the scheduling pass ------------------------------------------------------------

    def schedule(self) -> None:
        """Place what can be placed now; tell the others why they wait or never fit."""
        if not self.waiting:
            return
        self.passes += 1
        nodes = list(self.nodes.values())
        groups: dict[tuple[Policy, bool], list[_Waiting]] = {}
        for waiting in self.waiting.values():
            policy, backfill = self.pools.get(waiting.pool, (self.policy, self.backfill))
            groups.setdefault((policy, backfill), []).append(waiting)
        now_ms = int(trio.current_time() * 1000) if self.aging_interval_ms else None
        for (policy, backfill), group in groups.items():
            # A round that stopped at a node's job limit leaves jobs that may fit
            # elsewhere. In each further round one more node is full, so at most one
            # round per node follows; the bound only guards against a mistake.
            for _ in range(len(nodes) + 1):
                group = self._place_group(nodes, group, policy, backfill, now_ms)
                if not group:
                    break

    def _place_group(self, nodes: list[ClusterNode], group: list[_Waiting], policy: Policy,
                     backfill: bool, now_ms: int | None) -> list[_Waiting]:
        """Decide ``group`` in one call of the core; return the jobs to decide again.

        The core counts CPU and memory, not jobs, so within one call it can place
        more jobs on a node than its job limit (``max_jobs``) allows. Decisions are
        taken in the core's order (``position``) up to the first assignment to a node
        with no free job slot. That job and all after it are returned for another
        round, in which the node shows as full.
        """
        snapshot = [node.snapshot() for node in nodes]
        tenants: dict[str, list[int]] = {}
        for key, tenant in self._tenants.items():
            usage = tenants.setdefault(tenant, [0, 0, 0])
            cpu, memory = self.nodes[self.placed[key]].allocations.get(key, (0, 0))
            usage[0] += 1
            usage[1] += cpu
            usage[2] += memory
        decisions = place(
            snapshot, [w.request for w in group], policy,
            backfill=backfill and policy is not Policy.FIFO,
            tenants={t: TenantUsage(running_jobs=u[0], cpu_millis=u[1], memory_bytes=u[2])
                     for t, u in tenants.items()},
            tenant_limits=self._limits(group), now_ms=now_ms,
            aging_interval_ms=self.aging_interval_ms)
        again: list[_Waiting] = []
        for decision in sorted(decisions, key=lambda d: d.position):
            waiting = group[decision.job]
            if again:
                # Decided while the held-back job counted as placed: decide it again.
                again.append(waiting)
            elif decision.outcome is Outcome.ASSIGNED:
                assert decision.node is not None
                node = nodes[decision.node]
                if len(node.allocations) >= node.max_jobs:
                    again.append(waiting)
                else:
                    self._assign(waiting, node)
            elif decision.outcome is Outcome.NEVER_FITS:
                assert decision.reason is not None
                self._never(waiting, decision.reason, snapshot)
            else:
                assert decision.reason is not None
                self._wait(waiting, decision.reason)
        return again

    def _limits(self, group: list[_Waiting]) -> dict[str, int] | None:
        if not self.per_tenant_jobs:
            return self.tenant_limits or None
        limits = {w.request.tenant: self.per_tenant_jobs for w in group}
        limits.update(self.tenant_limits)
        return limits

    def _assign(self, waiting: _Waiting, node: ClusterNode) -> None:
        request = waiting.request
        del self.waiting[waiting.key]
        node.allocations[waiting.key] = (request.cpu_millis, request.memory_bytes)
        self.placed[waiting.key] = node.name
        self._tenants[waiting.key] = request.tenant
        waiting.node = node.name
        waiting.done.set()

    def _never(self, waiting: _Waiting, reason: Reason, nodes: list[NodeState]) -> None:
        del self.waiting[waiting.key]
        request = waiting.request
        message = never_fits_message(request, reason, nodes)
        run_id, _, job = waiting.key.partition("/")
        self._record(ev.AssignmentRejected(run_id=run_id, tenant_id=request.tenant, job=job,
                                           reason=reason.value, message=message, final=True))
        waiting.never = (reason.value, message)
        waiting.done.set()

    def _wait(self, waiting: _Waiting, reason: Reason) -> None:
        if waiting.reason == reason.value:
            return
        waiting.reason = reason.value
        text = WAIT_TEXT.get(reason, f"waiting ({reason.value})")
        run_id, _, job = waiting.key.partition("/")
        self._record(ev.AssignmentRejected(run_id=run_id, tenant_id=waiting.request.tenant,
                                           job=job, reason=reason.value, message=text))
        if waiting.on_wait is not None:
            waiting.on_wait(reason.value, text)

    # --- events -----------------------------------------------------------------------

    def _record(self, event: ev.Event) -> None:
        self.events.append(event)
        self.events_ready.set()

    def take_events(self) -> list[ev.Event]:
        events, self.events = self.events, []
        return events

    async def flush_events(self, append: Callable[[ev.Event], Awaitable[object]]) -> None:
        """Append the events recorded so far, after those another flush has taken."""
        # The lock keeps the order: a caller that flushes before its own events (a job
        # that never fits, before its JobFailed) waits for a flush under way elsewhere.
        async with self._flushing:
            for event in self.take_events():
                await append(event)

    async def record_events(self, append: Callable[[ev.Event], Awaitable[object]]) -> None:
        """Append what the cluster records (offers, rejections, capacity) as it happens."""
        while True:
            await self.events_ready.wait()
            self.events_ready = trio.Event()  # before the flush: later events set the new one
            await self.flush_events(append)


def host_capacity() -> tuple[int, int]:
    """Return this host's (millicores, memory bytes)."""
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return cpus * 1000, int(memory)


def single_node_cluster(provider: Provider, *, max_jobs: int) -> Cluster:
    """Return a cluster of one node, ``provider``, with this host's capacity and ``max_jobs``.

    ``cicd run`` uses it: its engine is on this host, so the capacity is known without
    a call to the engine.
    """
    cpu, memory = host_capacity()
    return Cluster([ClusterNode(provider.name, provider, cpu_millis=cpu, memory_bytes=memory,
                                max_jobs=max_jobs)])


def never_fits_message(request: JobRequest, reason: Reason, nodes: list[NodeState]) -> str:
    """Say what no node has, naming the request and the largest node that comes closest."""
    wanted = ", ".join(f"{k}={v}" for k, v in sorted(request.required_labels.items()))
    if reason is Reason.NO_NODES:
        return "no node is configured; add a [[nodes]] entry or start the Docker engine"
    if reason is Reason.LABELS:
        have = sorted({f"{k}={v}" for node in nodes for k, v in node.labels.items()})
        return (f"no node has the labels {wanted} (runs_on); the nodes have "
                f"{', '.join(have) or 'no labels'}")
    matching = [n for n in nodes if all(n.labels.get(k) == v
                                        for k, v in request.required_labels.items())]
    cpu = max((n.cpu_millis - n.reserved_cpu_millis for n in matching), default=0)
    memory = max((n.memory_bytes - n.reserved_memory_bytes for n in matching), default=0)
    where = f"nodes with {wanted}" if wanted else "nodes"
    # Only what falls short: a job that requests memory alone still has an internal
    # CPU minimum, which would confuse the reader.
    requested, offered = [], []
    if reason is not Reason.MEMORY:
        requested.append(f"{format_cpu(request.cpu_millis)} CPU")
        offered.append(f"{format_cpu(cpu)} CPU")
    if reason is not Reason.CPU:
        requested.append(f"{format_bytes(request.memory_bytes)} memory")
        offered.append(f"{format_bytes(memory)} memory")
    return (f"the job requests {' and '.join(requested)}, but the largest {where} offer "
            f"{' and '.join(offered)} after their reserve; lower the job's resources or "
            "add a node")


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_bytes(size: int) -> str:
    for unit, scale in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{unit}" if value == math.floor(value) else f"{value:.1f}{unit}"
    return f"{size}B"
