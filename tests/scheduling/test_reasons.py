"""Why a job waits, and why it never fits."""

from __future__ import annotations

from cicd.scheduling.core import Outcome, Reason
from tests.scheduling.conftest import GiB, Place, job, node


def only(place: Place, cluster: list, request: object, policy: str = "fifo"):  # type: ignore[no-untyped-def,type-arg]
    [decision] = place(cluster, [request], policy)
    return decision


def test_assigned_has_no_reason(place: Place) -> None:
    decision = only(place, [node()], job())
    assert decision.outcome is Outcome.ASSIGNED
    assert decision.reason is None
    assert decision.node == 0


def test_waits_for_capacity(place: Place) -> None:
    decision = only(place, [node(cpu=4000, allocated_cpu_millis=3500)], job(cpu=1000))
    assert decision.outcome is Outcome.WAITS
    assert decision.reason is Reason.CAPACITY
    assert decision.node is None


def test_waits_for_memory_capacity(place: Place) -> None:
    decision = only(place, [node(memory=8 * GiB, allocated_memory_bytes=7 * GiB)],
                    job(memory=2 * GiB))
    assert decision.reason is Reason.CAPACITY


def test_waits_for_labels_when_capacity_is_elsewhere(place: Place) -> None:
    cluster = [node("fast", labels={"disk": "ssd"}, allocated_cpu_millis=4000),
               node("slow", labels={"disk": "hdd"})]
    decision = only(place, cluster, job(required_labels={"disk": "ssd"}), "spread")
    assert decision.outcome is Outcome.WAITS
    assert decision.reason is Reason.LABELS


def test_cordoned_node_makes_job_wait(place: Place) -> None:
    decision = only(place, [node(cordoned=True)], job())
    assert decision.outcome is Outcome.WAITS
    assert decision.reason is Reason.NODE_UNAVAILABLE


def test_breaker_open_node_makes_job_wait(place: Place) -> None:
    decision = only(place, [node(breaker_open=True)], job(), "binpack")
    assert decision.reason is Reason.NODE_UNAVAILABLE


def test_unavailable_only_when_no_healthy_node_could_hold(place: Place) -> None:
    # The big node is cordoned; the healthy small one could never hold the job.
    cluster = [node("big", cpu=8000, cordoned=True), node("small", cpu=1000)]
    assert only(place, cluster, job(cpu=4000)).reason is Reason.NODE_UNAVAILABLE
    # A healthy node that could hold the job when empty means waiting for capacity.
    cluster = [node("big", cpu=8000, cordoned=True),
               node("busy", cpu=8000, allocated_cpu_millis=8000)]
    assert only(place, cluster, job(cpu=4000)).reason is Reason.CAPACITY


def test_unavailable_nodes_take_no_work(place: Place) -> None:
    cluster = [node("cordoned", cordoned=True), node("broken", breaker_open=True), node("ok")]
    decisions = place(cluster, [job("a"), job("b")], "spread")
    assert [d.node for d in decisions] == [2, 2]


def test_never_fits_without_nodes(place: Place) -> None:
    decision = only(place, [], job())
    assert decision.outcome is Outcome.NEVER_FITS
    assert decision.reason is Reason.NO_NODES


def test_never_fits_missing_label(place: Place) -> None:
    decision = only(place, [node(labels={"zone": "a"})], job(required_labels={"zone": "b"}))
    assert decision.outcome is Outcome.NEVER_FITS
    assert decision.reason is Reason.LABELS


def test_never_fits_labels_on_different_nodes(place: Place) -> None:
    cluster = [node("x", labels={"zone": "a"}), node("y", labels={"gpu": "yes"})]
    decision = only(place, cluster, job(required_labels={"zone": "a", "gpu": "yes"}))
    assert decision.reason is Reason.LABELS


def test_never_fits_cpu(place: Place) -> None:
    decision = only(place, [node(cpu=4000), node(cpu=8000)], job(cpu=8001))
    assert decision.outcome is Outcome.NEVER_FITS
    assert decision.reason is Reason.CPU


def test_never_fits_memory(place: Place) -> None:
    decision = only(place, [node(memory=8 * GiB)], job(memory=9 * GiB))
    assert decision.reason is Reason.MEMORY


def test_never_fits_cpu_and_memory(place: Place) -> None:
    cluster = [node("cpu", cpu=16000, memory=2 * GiB), node("memory", cpu=1000, memory=64 * GiB)]
    decision = only(place, cluster, job(cpu=8000, memory=32 * GiB))
    assert decision.outcome is Outcome.NEVER_FITS
    assert decision.reason is Reason.CPU_AND_MEMORY


def test_never_fits_counts_only_nodes_with_labels(place: Place) -> None:
    cluster = [node("big", cpu=32000), node("labelled", cpu=2000, labels={"arch": "arm64"})]
    decision = only(place, cluster, job(cpu=4000, required_labels={"arch": "arm64"}))
    assert decision.reason is Reason.CPU


def test_never_fits_ignores_flags_and_allocation(place: Place) -> None:
    cluster = [node(cpu=8000, allocated_cpu_millis=8000, cordoned=True)]
    decision = only(place, cluster, job(cpu=8000))
    assert decision.outcome is Outcome.WAITS


def test_never_fits_beats_tenant_limit(place: Place) -> None:
    [decision] = place([node(cpu=1000)], [job(cpu=2000)], "fifo", tenant_limits={"t": 0})
    assert decision.reason is Reason.CPU


def test_tenant_limit_beats_capacity(place: Place) -> None:
    cluster = [node(cpu=1000, allocated_cpu_millis=1000)]
    [decision] = place(cluster, [job(cpu=500)], "fifo", tenant_limits={"t": 0})
    assert decision.reason is Reason.TENANT_LIMIT


def test_zero_request_fits_full_node(place: Place) -> None:
    cluster = [node(cpu=1000, memory=GiB, allocated_cpu_millis=1000, allocated_memory_bytes=GiB)]
    assert only(place, cluster, job(cpu=0, memory=0)).node == 0
