"""The cluster: queueing jobs, placing them by policy, wait reasons, cordons and breakers.

The providers here are the local executor's: the cluster only reads their name and,
in ``confirm_lost``, calls their health check. Docker engines as nodes are
tested in tests/server/test_multi_node.py.
"""

from __future__ import annotations

import functools

import pytest
import trio

from cicd.errors import EngineUnavailable
from cicd.events import model as ev
from cicd.scheduling.cluster import Breaker, Cluster, ClusterNode, NeverFits
from cicd.scheduling.core import JobRequest
from cicd.workers.local import LocalProvider

GIB = 1 << 30


class Unreachable(LocalProvider):
    """A provider whose engine does not respond, as a lost node's."""

    async def check(self) -> None:
        raise EngineUnavailable("the Docker engine at tcp://node:2376 does not respond")


def node(name: str, cpu: int = 4000, memory: int = 8 * GIB, **kwargs: object) -> ClusterNode:
    return ClusterNode(name, LocalProvider(), cpu_millis=cpu, memory_bytes=memory,
                       **kwargs)  # type: ignore[arg-type]


def job(key: str, cpu: int = 1000, memory: int = GIB, **kwargs: object) -> JobRequest:
    return JobRequest(job_id=key, tenant="default", cpu_millis=cpu, memory_bytes=memory,
                      **kwargs)  # type: ignore[arg-type]


async def place_all(cluster: Cluster, requests: list[JobRequest]) -> list[str]:
    placed: list[str] = []
    for request in requests:
        placed.append(await cluster.acquire(request, run_id=request.job_id.split("/")[0]))
    return placed


async def test_spread_least_allocated_node() -> None:
    cluster = Cluster([node("a"), node("b"), node("c")], policy="spread")
    placed = await place_all(cluster, [job(f"r/{i}") for i in range(6)])
    assert placed == ["a", "b", "c", "a", "b", "c"]
    assert [len(n.allocations) for n in cluster.nodes.values()] == [2, 2, 2]


async def test_binpack_fills_first_node() -> None:
    cluster = Cluster([node("a"), node("b"), node("c")], policy="binpack")
    placed = await place_all(cluster, [job(f"r/{i}") for i in range(5)])
    assert placed == ["a", "a", "a", "a", "b"]


async def test_labels_route_or_never_fit() -> None:
    cluster = Cluster([node("a", labels={"pool": "slow"}), node("b", labels={"pool": "fast"})])
    assert await cluster.acquire(job("r/x", required_labels={"pool": "fast"}), run_id="r") == "b"
    with pytest.raises(NeverFits) as caught:
        await cluster.acquire(job("r/y", required_labels={"pool": "gpu"}), run_id="r")
    assert caught.value.reason == "labels"
    assert "no node has the labels pool=gpu" in str(caught.value)
    assert "pool=fast, pool=slow" in str(caught.value)
    assert "r/y" not in cluster.waiting


async def test_never_fits_names_only_what_falls_short() -> None:
    cluster = Cluster([node("a", cpu=4000, memory=8 * GIB)])
    with pytest.raises(NeverFits) as caught:
        await cluster.acquire(job("r/mem", cpu=0, memory=64 * GIB), run_id="r")
    assert caught.value.reason == "memory"
    assert str(caught.value) == ("the job requests 64Gi memory, but the largest nodes offer "
                                 "8Gi memory after their reserve; lower the job's resources "
                                 "or add a node")
    with pytest.raises(NeverFits) as caught:
        await cluster.acquire(job("r/both", cpu=8000, memory=64 * GIB), run_id="r")
    assert "requests 8 CPU and 64Gi memory" in str(caught.value)
    assert "offer 4 CPU and 8Gi memory" in str(caught.value)


async def test_oversized_job_never_fits() -> None:
    cluster = Cluster([node("a", cpu=2000, reserved_cpu_millis=500), node("b", cpu=4000)])
    with pytest.raises(NeverFits) as caught:
        await cluster.acquire(job("r/big", cpu=6000), run_id="r")
    assert caught.value.reason == "cpu"
    assert str(caught.value) == ("the job requests 6 CPU, but the largest nodes offer 4 CPU "
                                 "after their reserve; lower the job's resources or add a node")
    rejected = [e for e in cluster.take_events() if isinstance(e, ev.AssignmentRejected)]
    assert rejected[-1].final
    assert rejected[-1].reason == "cpu"


async def test_full_node_waits_for_capacity() -> None:
    cluster = Cluster([node("a", cpu=2000)])
    reasons: list[str] = []
    assert await cluster.acquire(job("r/1", cpu=2000), run_id="r") == "a"
    async with trio.open_nursery() as nursery:
        got: list[str] = []

        async def second() -> None:
            got.append(await cluster.acquire(job("r/2", cpu=1000), run_id="r",
                                             on_wait=lambda reason, text: reasons.append(reason)))

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert reasons == ["capacity"]
        assert cluster.waiting["r/2"].reason == "capacity"
        cluster.release("r/1")
    assert got == ["a"]


async def test_max_jobs_bounds_small_jobs() -> None:
    cluster = Cluster([node("a", max_jobs=2)])
    await place_all(cluster, [job("r/1", cpu=1, memory=0), job("r/2", cpu=1, memory=0)])
    with trio.move_on_after(0.2) as scope:
        await cluster.acquire(job("r/3", cpu=1, memory=0), run_id="r")
    assert scope.cancelled_caught
    assert "r/3" not in cluster.waiting  # a cancelled wait leaves the queue


async def test_max_jobs_holds_within_one_pass() -> None:
    """Jobs woken by one release are placed up to the node's job limit, not its CPU."""
    cluster = Cluster([node("a", max_jobs=2)])
    await place_all(cluster, [job("r/1", cpu=1, memory=0), job("r/2", cpu=1, memory=0)])
    placed: list[str] = []
    async with trio.open_nursery() as nursery:
        async def waiter(key: str) -> None:
            await cluster.acquire(job(key, cpu=1, memory=0), run_id="r")
            placed.append(key)

        for index in range(3, 7):
            nursery.start_soon(waiter, f"r/{index}")
        await trio.testing.wait_all_tasks_blocked()
        assert len(cluster.waiting) == 4
        cluster.release("r/1")
        cluster.release("r/2")
        await trio.testing.wait_all_tasks_blocked()
        assert len(placed) == 2
        assert len(cluster.nodes["a"].allocations) == 2
        assert len(cluster.waiting) == 2
        for key in placed:  # waiters append only after this loop, when they run
            cluster.release(key)
    assert len(placed) == 4


async def test_max_jobs_full_node_sends_rest_elsewhere() -> None:
    """A node that reaches its job limit in a pass leaves the other jobs to other nodes."""
    cluster = Cluster([node("a", max_jobs=1), node("b", max_jobs=4)], policy="spread")
    placed: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        async def waiter(key: str) -> None:
            placed[key] = await cluster.acquire(job(key, cpu=500, memory=0), run_id="r")

        for name in ("a", "b"):
            cluster.nodes[name].cordoned = True
        for index in range(3):
            nursery.start_soon(waiter, f"r/{index}")
        await trio.testing.wait_all_tasks_blocked()
        assert len(cluster.waiting) == 3
        for name in ("a", "b"):
            cluster.nodes[name].cordoned = False
        cluster.schedule()  # one pass for all three jobs
        await trio.testing.wait_all_tasks_blocked()
        assert len(placed) == 3
    assert len(cluster.nodes["a"].allocations) == 1
    assert len(cluster.nodes["b"].allocations) == 2


async def test_cordon_then_uncordon_places() -> None:
    cluster = Cluster([node("a")])
    cluster.cordon("a", cordoned=True)
    assert cluster.nodes["a"].state == "cordoned"
    async with trio.open_nursery() as nursery:
        got: list[str] = []

        async def waiter() -> None:
            got.append(await cluster.acquire(job("r/1"), run_id="r"))

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.waiting["r/1"].reason == "node_unavailable"
        cluster.cordon("a", cordoned=False)
    assert got == ["a"]


async def test_drain_reports_drained() -> None:
    cluster = Cluster([node("a"), node("b")])
    assert await cluster.acquire(job("r/1"), run_id="r") == "a"
    cluster.cordon("a", cordoned=True, drain=True)
    assert cluster.nodes["a"].state == "draining"
    assert await cluster.acquire(job("r/2"), run_id="r") == "b"
    cluster.release("r/1")
    assert cluster.nodes["a"].state == "drained"
    states = [e.state for e in cluster.take_events() if isinstance(e, ev.CapacityUpdated)]
    assert states[-1] == "drained"


async def test_higher_priority_goes_first() -> None:
    cluster = Cluster([node("a", cpu=1000)])
    await cluster.acquire(job("r/0"), run_id="r")
    order: list[str] = []
    async with trio.open_nursery() as nursery:
        async def waiter(key: str, priority: int) -> None:
            await cluster.acquire(job(key, priority=priority), run_id="r")
            order.append(key)
            cluster.release(key)

        nursery.start_soon(waiter, "r/low", 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "r/high", 5)
        await trio.testing.wait_all_tasks_blocked()
        cluster.release("r/0")
    assert order == ["r/high", "r/low"]


async def test_pool_policy_overrides_default() -> None:
    nodes = [node("a", labels={"pool": "fast"}), node("b", labels={"pool": "fast"}),
             node("c", labels={"pool": "big"}), node("d", labels={"pool": "big"})]
    cluster = Cluster(nodes, policy="binpack", pools={"fast": ("spread", False)})
    fast = [await cluster.acquire(job(f"r/f{i}", required_labels={"pool": "fast"}), run_id="r",
                                  pool="fast") for i in range(2)]
    big = [await cluster.acquire(job(f"r/b{i}", required_labels={"pool": "big"}), run_id="r",
                                 pool="big") for i in range(2)]
    assert fast == ["a", "b"]
    assert big == ["c", "c"]


def test_breaker_open_half_open_closed() -> None:
    now = [0.0]
    breaker = Breaker(error_rate=0.5, window=4, min_calls=3, open_for=10.0, clock=lambda: now[0])
    assert breaker.record(True) == "closed"
    assert breaker.record(False) == "closed"  # 1 of 2: below min_calls
    assert breaker.record(False) == "open"  # 2 of 3 failed
    now[0] = 9.9
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.record(False) == "open"  # the probe failed: open again
    now[0] = 20.0
    assert breaker.record(True) == "closed"
    assert breaker.record(False) == "closed"  # the window starts empty again


async def test_confirm_lost_opens_breaker() -> None:
    lost = ClusterNode("far", Unreachable(), cpu_millis=4000, memory_bytes=8 * GIB)
    cluster = Cluster([lost, node("near")], policy="fifo")
    assert await cluster.acquire(job("r/1"), run_id="r") == "far"
    assert await cluster.confirm_lost("far") is True
    assert lost.state == "unavailable"
    assert lost.breaker.state == "open"
    assert await cluster.acquire(job("r/2"), run_id="r") == "near"
    assert await cluster.confirm_lost("near") is False


async def test_wait_lost_or_fenced_returns() -> None:
    lost = ClusterNode("far", Unreachable(), cpu_millis=4000, memory_bytes=8 * GIB)
    cluster = Cluster([lost])
    await cluster.confirm_lost("far")
    start = trio.current_time()
    await cluster.wait_lost_or_fenced("far", 0.3)
    assert trio.current_time() - start >= 0.29
    await cluster.confirm_lost("far")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster.wait_lost_or_fenced, "far", 60.0)
        await trio.sleep(0.05)
        cluster.mark_returned(lost)
    assert lost.state == "ready"


async def test_per_tenant_jobs_limit_waits() -> None:
    cluster = Cluster([node("a", cpu=8000)], per_tenant_jobs=1)
    first = JobRequest(job_id="r/1", tenant="team-a", cpu_millis=1000, memory_bytes=0)
    assert await cluster.acquire(first, run_id="r") == "a"
    other = JobRequest(job_id="s/1", tenant="team-b", cpu_millis=1000, memory_bytes=0)
    assert await cluster.acquire(other, run_id="s") == "a"
    second = JobRequest(job_id="r/2", tenant="team-a", cpu_millis=1000, memory_bytes=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(cluster.acquire, second, run_id="r"))
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.waiting["r/2"].reason == "tenant_limit"
        cluster.release("r/1")
    assert cluster.placed["r/2"] == "a"


async def test_flush_waits_for_a_flush_under_way() -> None:
    """A job that never fits flushes the cluster's events before its JobFailed. If the
    background recorder took them first, the flush waits until they are appended, so
    the log keeps OfferCreated and AssignmentRejected before the failure."""
    cluster = Cluster([node("a", cpu=1000)])
    log: list[str] = []

    async def slow_append(event: ev.Event) -> None:
        await trio.sleep(0.05)
        log.append(event.name)

    async def quick_append(event: ev.Event) -> None:
        log.append(event.name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster.record_events, slow_append)
        with pytest.raises(NeverFits):
            await cluster.acquire(job("r/big", cpu=8000), run_id="r")
        await trio.sleep(0.01)  # the recorder takes the events and starts appending
        await cluster.flush_events(quick_append)
        log.append("JobFailed")
        nursery.cancel_scope.cancel()
    assert log == ["OfferCreated", "AssignmentRejected", "JobFailed"]
