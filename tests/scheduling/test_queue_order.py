"""Queue order: priority, fair share between tenants, aging, runnable time, index."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cicd.scheduling.core import Reason, TenantUsage, reference
from cicd.scheduling.core.model import MAX_PRIORITY, MAX_TIME_MS, MIN_PRIORITY
from tests.scheduling.conftest import GiB, Place, job, native_module, node, nodes_of


def positions(decisions: list) -> list[int]:  # type: ignore[type-arg]
    return [decision.position for decision in decisions]


def test_higher_priority_goes_first(place: Place) -> None:
    cluster = [node(cpu=1000)]
    jobs = [job("low", priority=0), job("high", priority=5), job("middle", priority=2)]
    decisions = place(cluster, jobs, "fifo")
    assert positions(decisions) == [2, 0, 1]
    assert nodes_of(decisions) == [None, 0, None]


def test_negative_priority_goes_last(place: Place) -> None:
    decisions = place([node()], [job("a", priority=-3), job("b")], "fifo")
    assert positions(decisions) == [1, 0]


def test_earlier_runnable_time_goes_first(place: Place) -> None:
    jobs = [job("late", runnable_at_ms=500), job("early", runnable_at_ms=100),
            job("same-as-early", runnable_at_ms=100)]
    assert positions(place([node()], jobs, "fifo")) == [2, 0, 1]


def test_tenant_with_smaller_share_goes_first(place: Place) -> None:
    # Cluster: 8000 millicores usable. "heavy" runs 4000 (500000 ppm), "light" 1000.
    cluster = [node("a", cpu=4000), node("b", cpu=4000)]
    tenants = {"heavy": TenantUsage(running_jobs=1, cpu_millis=4000),
               "light": TenantUsage(running_jobs=1, cpu_millis=1000)}
    jobs = [job("heavy-job", tenant="heavy", cpu=500, memory=0),
            job("light-job", tenant="light", cpu=500, memory=0)]
    assert positions(place(cluster, jobs, "fifo", tenants=tenants)) == [1, 0]


def test_share_is_dominant_resource(place: Place) -> None:
    # "cpu" uses 10% of the CPU; "memory" uses 50% of the memory: "cpu" is smaller.
    cluster = [node(cpu=10000, memory=10_000)]
    tenants = {"cpu": TenantUsage(cpu_millis=1000), "memory": TenantUsage(memory_bytes=5000)}
    jobs = [job("m", tenant="memory", cpu=0, memory=0), job("c", tenant="cpu", cpu=0, memory=0)]
    assert positions(place(cluster, jobs, "fifo", tenants=tenants)) == [1, 0]


def test_fewer_running_jobs_break_share_tie(place: Place) -> None:
    tenants = {"many": TenantUsage(running_jobs=5), "few": TenantUsage(running_jobs=1)}
    jobs = [job("m", tenant="many"), job("f", tenant="few")]
    assert positions(place([node()], jobs, "fifo", tenants=tenants)) == [1, 0]


def test_fair_share_alternates_within_batch(place: Place) -> None:
    cluster = [node(cpu=16000, memory=0)]
    jobs = [job(f"a{i}", tenant="a", cpu=1000, memory=0) for i in range(3)]
    jobs += [job(f"b{i}", tenant="b", cpu=1000, memory=0) for i in range(3)]
    decisions = place(cluster, jobs, "fifo")
    # Each placement raises its tenant's share, so the other tenant comes next.
    assert positions(decisions) == [0, 2, 4, 1, 3, 5]


def test_priority_beats_fair_share(place: Place) -> None:
    tenants = {"heavy": TenantUsage(cpu_millis=4000)}
    jobs = [job("light", tenant="light"), job("heavy", tenant="heavy", priority=1)]
    assert positions(place([node()], jobs, "fifo", tenants=tenants)) == [1, 0]


def test_aging_lets_old_job_overtake(place: Place) -> None:
    # After three intervals the old job has effective priority 0 + 3 > 2.
    jobs = [job("new-important", priority=2, runnable_at_ms=9_000),
            job("old", priority=0, runnable_at_ms=0)]
    decisions = place([node(cpu=1000)], jobs, "fifo", now_ms=9_000, aging_interval_ms=3_000)
    assert positions(decisions) == [1, 0]
    assert nodes_of(decisions) == [None, 0]


def test_aging_counts_whole_intervals(place: Place) -> None:
    # 5999 ms is one whole interval: 0 + 1 < 2, so priority still wins.
    jobs = [job("important", priority=2, runnable_at_ms=5_999),
            job("old", priority=0, runnable_at_ms=0)]
    decisions = place([node()], jobs, "fifo", now_ms=5_999, aging_interval_ms=3_000)
    assert positions(decisions) == [0, 1]


def test_aging_off_without_now(place: Place) -> None:
    jobs = [job("important", priority=1, runnable_at_ms=1_000_000), job("old", runnable_at_ms=0)]
    assert positions(place([node()], jobs, "fifo")) == [0, 1]
    assert positions(place([node()], jobs, "fifo", now_ms=1_000_000,
                           aging_interval_ms=0)) == [0, 1]


def test_future_runnable_time_gets_no_boost(place: Place) -> None:
    jobs = [job("future", priority=1, runnable_at_ms=50_000), job("now", priority=1,
                                                                  runnable_at_ms=1_000)]
    decisions = place([node()], jobs, "fifo", now_ms=1_000, aging_interval_ms=1)
    assert positions(decisions) == [1, 0]


def test_tenant_limit_counts_running_and_placed(place: Place) -> None:
    cluster = [node(cpu=16000)]
    jobs = [job(f"j{i}", tenant="t") for i in range(4)] + [job("free", tenant="unlimited")]
    decisions = place(cluster, jobs, "fifo", tenants={"t": TenantUsage(running_jobs=1)},
                      tenant_limits={"t": 3})
    assert [d.reason for d in decisions] == [None, None, Reason.TENANT_LIMIT,
                                             Reason.TENANT_LIMIT, None]


def test_tenant_limit_zero_holds_every_job(place: Place) -> None:
    decisions = place([node()], [job("a"), job("b")], "spread", tenant_limits={"t": 0})
    assert [d.reason for d in decisions] == [Reason.TENANT_LIMIT, Reason.TENANT_LIMIT]


def test_positions_cover_the_batch(place: Place) -> None:
    jobs = [job(f"j{i}", tenant=f"t{i % 3}", priority=i % 2, runnable_at_ms=i) for i in range(9)]
    assert sorted(positions(place([node()], jobs, "binpack"))) == list(range(9))


# The C core sorts the queue by one 64-bit key when tenant, priority, runnable time
# and index fit in it together, and merge sorts it otherwise. These queues take
# each way, and both must give the reference's positions.
WIDE_RUNNABLE_TIMES = [0, 1, 2**40, 2**61, MAX_TIME_MS - 1, MAX_TIME_MS]
WIDE_PRIORITIES = [MIN_PRIORITY, -1, 0, 1, MAX_PRIORITY]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(WIDE_PRIORITIES),
                       st.one_of(st.integers(0, 50), st.sampled_from(WIDE_RUNNABLE_TIMES))),
             max_size=60),
    st.one_of(st.none(), st.just(30), st.just(MAX_TIME_MS)),
)
def test_native_order_matches_reference(fields: list[tuple[str, int, int]],
                                        now_ms: int | None) -> None:
    native = native_module()
    jobs = [job(f"j{i}", tenant=tenant, priority=priority, runnable_at_ms=runnable)
            for i, (tenant, priority, runnable) in enumerate(fields)]
    cluster = [node(cpu=2000)]
    options = {"now_ms": now_ms, "aging_interval_ms": 7}
    expected = positions(reference.place(cluster, jobs, "binpack", **options))
    assert positions(native.place(cluster, jobs, "binpack", **options)) == expected


def test_large_batch_order_matches_reference() -> None:
    native = native_module()
    jobs = [job(f"j{i}", tenant=f"t{i % 7}", priority=i % 5 - 2, runnable_at_ms=(i * 7919) % 1000)
            for i in range(5000)]
    cluster = [node(cpu=64000, memory=256 * GiB)]
    expected = reference.place(cluster, jobs, "binpack", now_ms=1000, aging_interval_ms=100)
    assert native.place(cluster, jobs, "binpack", now_ms=1000,
                        aging_interval_ms=100) == expected
