"""Node choice per policy, strict order, backfill, and allocation within a batch."""

from __future__ import annotations

import pytest

from cicd.scheduling.core import Outcome, Reason, pack_nodes
from tests.scheduling.conftest import GiB, Place, job, node, nodes_of


def test_fifo_takes_lowest_index_that_fits(place: Place) -> None:
    cluster = [node("small", cpu=1000), node("big", cpu=8000), node("big2", cpu=8000)]
    decisions = place(cluster, [job("a", cpu=2000), job("b", cpu=500)], "fifo")
    assert nodes_of(decisions) == [1, 0]


def test_binpack_takes_most_allocated_node(place: Place) -> None:
    cluster = [
        node("half", cpu=4000, allocated_cpu_millis=2000),
        node("light", cpu=4000, allocated_cpu_millis=400),
        node("full", cpu=4000, allocated_cpu_millis=3900),
    ]
    assert nodes_of(place(cluster, [job(cpu=1000, memory=0)], "binpack")) == [0]


def test_spread_takes_least_allocated_node(place: Place) -> None:
    cluster = [
        node("half", cpu=4000, allocated_cpu_millis=2000),
        node("light", cpu=4000, allocated_cpu_millis=400),
        node("full", cpu=4000, allocated_cpu_millis=3900),
    ]
    assert nodes_of(place(cluster, [job(cpu=1000, memory=0)], "spread")) == [1]


def test_share_counts_cpu_and_memory(place: Place) -> None:
    # CPU 25% + memory 75% beats CPU 50% + memory 25%.
    cluster = [
        node("cpu-heavy", cpu=4000, memory=8 * GiB, allocated_cpu_millis=2000,
             allocated_memory_bytes=2 * GiB),
        node("memory-heavy", cpu=4000, memory=8 * GiB, allocated_cpu_millis=1000,
             allocated_memory_bytes=6 * GiB),
    ]
    assert nodes_of(place(cluster, [job(cpu=100, memory=GiB // 2)], "binpack")) == [1]
    assert nodes_of(place(cluster, [job(cpu=100, memory=GiB // 2)], "spread")) == [0]


@pytest.mark.parametrize("policy", ["fifo", "binpack", "spread"])
def test_ties_go_to_lowest_node_index(place: Place, policy: str) -> None:
    cluster = [node("full", cpu=1000, allocated_cpu_millis=1000)] + [
        node(f"same-{i}") for i in range(3)]
    assert nodes_of(place(cluster, [job()], policy)) == [1]


def test_allocation_grows_within_batch(place: Place) -> None:
    cluster = [node("a", cpu=4000), node("b", cpu=4000)]
    jobs = [job(f"j{i}", cpu=1000, memory=0) for i in range(4)]
    assert nodes_of(place(cluster, jobs, "spread")) == [0, 1, 0, 1]
    assert nodes_of(place(cluster, jobs, "binpack")) == [0, 0, 0, 0]
    jobs = [job(f"j{i}", cpu=3000, memory=0) for i in range(3)]
    decisions = place(cluster, jobs, "fifo")
    assert nodes_of(decisions) == [0, 1, None]
    assert decisions[2].reason is Reason.CAPACITY


def test_reserve_is_never_allocated(place: Place) -> None:
    cluster = [node(cpu=4000, reserved_cpu_millis=1000, memory=8 * GiB,
                    reserved_memory_bytes=GiB)]
    decisions = place(cluster, [job("fits", cpu=3000, memory=7 * GiB),
                                job("over", cpu=3001, memory=0)], "fifo")
    assert nodes_of(decisions) == [0, None]
    assert decisions[1].outcome is Outcome.NEVER_FITS
    assert decisions[1].reason is Reason.CPU


def test_over_allocated_node_counts_as_full(place: Place) -> None:
    # The reserve grew after the allocation: only jobs that request nothing fit.
    cluster = [node(cpu=4000, reserved_cpu_millis=2000, allocated_cpu_millis=3000)]
    decisions = place(cluster, [job("empty", cpu=0, memory=0), job("one", cpu=1, memory=0)],
                      "fifo")
    assert nodes_of(decisions) == [0, None]
    assert decisions[1].reason is Reason.CAPACITY


# ---- strict order ---------------------------------------------------------------


@pytest.mark.parametrize("policy", ["fifo", "binpack", "spread"])
def test_strict_order_stops_at_waiting_head(place: Place, policy: str) -> None:
    cluster = [node(cpu=4000, allocated_cpu_millis=2000)]
    decisions = place(cluster, [job("head", cpu=3000), job("small", cpu=500)], policy)
    assert [d.outcome for d in decisions] == [Outcome.WAITS, Outcome.WAITS]
    assert [d.reason for d in decisions] == [Reason.CAPACITY, Reason.QUEUE_BLOCKED]


def test_fifo_places_everything_ahead_of_head(place: Place) -> None:
    cluster = [node(cpu=4000)]
    jobs = [job("a", cpu=2000), job("b", cpu=1000), job("head", cpu=2000), job("c", cpu=1000)]
    decisions = place(cluster, jobs, "fifo")
    assert nodes_of(decisions) == [0, 0, None, None]
    assert [d.reason for d in decisions] == [None, None, Reason.CAPACITY, Reason.QUEUE_BLOCKED]


def test_never_fitting_job_does_not_block(place: Place) -> None:
    cluster = [node(cpu=4000)]
    decisions = place(cluster, [job("huge", cpu=64000), job("small", cpu=500)], "fifo")
    assert decisions[0].outcome is Outcome.NEVER_FITS
    assert nodes_of(decisions) == [None, 0]


def test_tenant_limited_job_does_not_block(place: Place) -> None:
    cluster = [node(cpu=4000)]
    jobs = [job("limited", tenant="busy"), job("other", tenant="idle")]
    decisions = place(cluster, jobs, "fifo", tenant_limits={"busy": 0})
    assert decisions[0].reason is Reason.TENANT_LIMIT
    assert nodes_of(decisions) == [None, 0]


def test_job_for_unavailable_nodes_does_not_block(place: Place) -> None:
    cluster = [node("gpu", labels={"gpu": "yes"}, cordoned=True), node("plain")]
    jobs = [job("gpu-job", required_labels={"gpu": "yes"}), job("plain-job")]
    decisions = place(cluster, jobs, "fifo")
    assert decisions[0].reason is Reason.NODE_UNAVAILABLE
    assert nodes_of(decisions) == [None, 1]


def test_labels_head_blocks_strict_order(place: Place) -> None:
    # The only zone=b node is busy while zone=a has room: the head waits for labels.
    cluster = [node("a", labels={"zone": "a"}),
               node("b", labels={"zone": "b"}, allocated_cpu_millis=4000)]
    jobs = [job("head", required_labels={"zone": "b"}), job("next")]
    decisions = place(cluster, jobs, "binpack")
    assert [d.reason for d in decisions] == [Reason.LABELS, Reason.QUEUE_BLOCKED]


# ---- backfill -------------------------------------------------------------------


def backfill_cluster() -> list:  # type: ignore[type-arg]
    # The head needs 3000: "half" misses 1000 (250000 ppm), "busy" misses 2000.
    return [node("half", cpu=4000, allocated_cpu_millis=2000, memory=8 * GiB),
            node("busy", cpu=4000, allocated_cpu_millis=3000, memory=8 * GiB)]


@pytest.mark.parametrize("policy", ["binpack", "spread"])
def test_backfill_places_jobs_behind_head(place: Place, policy: str) -> None:
    jobs = [job("head", cpu=3000, memory=0), job("fits-busy", cpu=1000, memory=0)]
    decisions = place(backfill_cluster(), jobs, policy, backfill=True)
    assert decisions[0].reason is Reason.CAPACITY
    assert nodes_of(decisions) == [None, 1]


@pytest.mark.parametrize("policy", ["binpack", "spread"])
def test_backfill_keeps_reserved_node_for_head(place: Place, policy: str) -> None:
    # "needs-half" fits only on "half", which is held for the head.
    jobs = [job("head", cpu=3000, memory=0), job("needs-half", cpu=2000, memory=0),
            job("fits-busy", cpu=1000, memory=0)]
    decisions = place(backfill_cluster(), jobs, policy, backfill=True)
    assert [d.reason for d in decisions] == [Reason.CAPACITY, Reason.RESERVED, None]
    assert nodes_of(decisions) == [None, None, 1]


def test_backfill_reserves_node_missing_least(place: Place) -> None:
    # Misses, as a share of usable capacity: node 0 75%, node 1 25%, node 2 25%.
    cluster = [node("a", cpu=4000, allocated_cpu_millis=3000),
               node("b", cpu=8000, allocated_cpu_millis=6000),
               node("c", cpu=8000, allocated_cpu_millis=6000)]
    jobs = [job("head", cpu=4000, memory=0), job("two", cpu=2000, memory=0),
            job("two-more", cpu=2000, memory=0)]
    decisions = place(cluster, jobs, "spread", backfill=True)
    # Node 1 is held (lowest index of the tie); "two" goes to node 2, then nothing is left.
    assert nodes_of(decisions) == [None, 2, None]
    assert decisions[2].reason is Reason.RESERVED


def test_backfill_reserves_only_for_first_head(place: Place) -> None:
    cluster = [node("a", cpu=4000, allocated_cpu_millis=3000),
               node("b", cpu=4000, allocated_cpu_millis=2000)]
    jobs = [job("head", cpu=3000, memory=0), job("second-head", cpu=4000, memory=0),
            job("small", cpu=1000, memory=0)]
    decisions = place(cluster, jobs, "binpack", backfill=True)
    # Node b is reserved for the head; the second waiting job reserves nothing.
    assert [d.reason for d in decisions] == [Reason.CAPACITY, Reason.CAPACITY, None]
    assert nodes_of(decisions) == [None, None, 0]


def test_without_backfill_binpack_is_strict(place: Place) -> None:
    jobs = [job("head", cpu=3000, memory=0), job("fits-busy", cpu=1000, memory=0)]
    decisions = place(backfill_cluster(), jobs, "binpack")
    assert [d.reason for d in decisions] == [Reason.CAPACITY, Reason.QUEUE_BLOCKED]


def test_packed_nodes_give_same_decisions(place: Place) -> None:
    cluster = backfill_cluster()
    table = pack_nodes(cluster)
    jobs = [job("head", cpu=3000, memory=0), job("a", cpu=1000, memory=0),
            job("b", cpu=500, memory=0)]
    expected = place(cluster, jobs, "binpack", backfill=True)
    # The same table twice: a call leaves no trace of its placements behind.
    assert place(table, jobs, "binpack", backfill=True) == expected
    assert place(table, jobs, "binpack", backfill=True) == expected
    assert place(table, jobs[1:], "spread") == place(cluster, jobs[1:], "spread")


def test_empty_batch(place: Place) -> None:
    assert place([node()], [], "binpack") == []
    assert place([], [], "fifo") == []
