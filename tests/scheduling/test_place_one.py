"""``place_one``: one job decided alone, as ``place`` decides a batch of just that job."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings

from cicd.scheduling import core
from cicd.scheduling.core import Outcome, Reason, reference
from cicd.scheduling.core.tables import INT32, INT64, make_options, pack_job, pack_nodes
from tests.scheduling.conftest import GiB, job, native_module, node
from tests.scheduling.test_equivalence import Case, cases, random_case


def expected_and_limited(case: Case, index: int) -> tuple[core.Decision, bool]:
    """Return what ``place`` decides for job ``index`` alone, and whether its tenant is at its limit."""
    request = case.jobs[index]
    tenants, limits = case.options["tenants"], case.options["tenant_limits"]
    usage = tenants.get(request.tenant)
    running = usage.running_jobs if usage is not None else 0
    limited = request.tenant in limits and running >= limits[request.tenant]
    return reference.place(case.nodes, [request], **case.options)[0], limited


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_place_one_decides_as_a_one_job_batch(case: Case) -> None:
    native = native_module()
    table = pack_nodes(case.nodes)
    options = make_options(case.options["policy"], case.options["backfill"],
                           case.options["now_ms"], case.options["aging_interval_ms"])
    for index, request in enumerate(case.jobs):
        expected, limited = expected_and_limited(case, index)
        packed = pack_job(request, table)
        assert reference.place_one(table, packed, options, tenant_at_limit=limited) == expected
        assert native.place_one(table, packed, options, tenant_at_limit=limited) == expected


def test_place_one_matches_on_a_large_cluster() -> None:
    """Hundreds of nodes: scans that span several blocks of 64 nodes."""
    native = native_module()
    for seed in range(3):
        case = random_case(seed, node_count=300, job_count=400)
        table = pack_nodes(case.nodes)
        for policy in ("fifo", "binpack", "spread"):
            options = make_options(policy, False, None, 0)
            for request in case.jobs:
                expected = reference.place(table, [request], policy)[0]
                packed = pack_job(request, table)
                assert native.place_one(table, packed, options) == expected, (seed, policy)
                assert reference.place_one(table, packed, options) == expected, (seed, policy)


def test_place_one_leaves_the_table_as_it_was() -> None:
    native = native_module()
    table = pack_nodes([node("a", cpu=2000), node("b", cpu=2000)])
    options = make_options("fifo", False, None, 0)
    packed = pack_job(job(cpu=2000), table)
    for place_one in (native.place_one, reference.place_one):
        assert [place_one(table, packed, options).node for _ in range(3)] == [0, 0, 0]
    assert native.place(table, [job("x", cpu=2000), job("y", cpu=2000)], "fifo")[1].node == 1


def test_place_one_reports_each_reason() -> None:
    native = native_module()
    table = pack_nodes([node("a", cpu=4000, allocated_cpu_millis=3000, labels={"zone": "a"}),
                        node("b", cpu=8000, cordoned=True),
                        node("c", cpu=4000, allocated_cpu_millis=4000, labels={"zone": "b"})])
    options = make_options("binpack", False, None, 0)
    cases = [
        (job(cpu=1000), False, Outcome.ASSIGNED, None),
        (job(cpu=2000), False, Outcome.WAITS, Reason.CAPACITY),
        (job(cpu=6000), False, Outcome.WAITS, Reason.NODE_UNAVAILABLE),
        (job(cpu=1000), True, Outcome.WAITS, Reason.TENANT_LIMIT),
        (job(cpu=16000), True, Outcome.NEVER_FITS, Reason.CPU),
        (job(cpu=1000, required_labels={"zone": "b"}), False, Outcome.WAITS, Reason.LABELS),
        (job(cpu=1000, required_labels={"zone": "c"}), False, Outcome.NEVER_FITS, Reason.LABELS),
        (job(cpu=1000, memory=64 * GiB), False, Outcome.NEVER_FITS, Reason.MEMORY),
    ]
    for request, limited, outcome, reason in cases:
        packed = pack_job(request, table)
        for place_one in (native.place_one, reference.place_one):
            decision = place_one(table, packed, options, tenant_at_limit=limited)
            assert (decision.outcome, decision.reason) == (outcome, reason), request


def test_place_one_on_a_table_without_nodes() -> None:
    native = native_module()
    table = pack_nodes([])
    packed = pack_job(job(), table)
    options = make_options("spread", False, None, 0)
    for place_one in (native.place_one, reference.place_one):
        assert place_one(table, packed, options).reason is Reason.NO_NODES


def test_pack_job_validates_as_pack_jobs() -> None:
    table = pack_nodes([node("a")])
    with pytest.raises(ValueError, match=r"jobs\[0\]\.cpu_millis"):
        pack_job(job(cpu=-1), table)
    with pytest.raises(TypeError, match=r"jobs\[0\]\.required_labels"):
        pack_job(job(required_labels={"": "x"}), table)


def test_core_refuses_malformed_one_job_bytes() -> None:
    native = native_module()
    from cicd.scheduling.core._native import lib

    table = pack_nodes([node("a", labels={"zone": "a", "arch": "arm64"})])
    handle = native._cluster(table).handle

    def place(cpu: int, memory: int, ids: list[int], policy: int = 0, cut: int = 0) -> int:
        data = array(INT64, (cpu, memory)).tobytes() + array(INT32, ids).tobytes()
        return int(lib.sched_place_one(handle, data, len(data) - cut, policy, 0))

    assert place(1000, GiB, [0, 1]) == 0
    assert place(1000, GiB, [2]) < lib.SCHED_ONE_NOT_ASSIGNED  # 2 is no node's label
    for bad in ([1, 0], [0, 0], [-1], [3], [0, 1, 2, 2]):
        assert place(1000, GiB, bad) == lib.SCHED_ERR_JOB, bad
    assert place(-1, GiB, []) == lib.SCHED_ERR_JOB
    assert place(1000, (1 << 62) + 1, []) == lib.SCHED_ERR_JOB
    assert place(1000, GiB, [0], cut=1) == lib.SCHED_ERR_JOB
    assert place(1000, GiB, [], cut=16) == lib.SCHED_ERR_JOB
    assert place(1000, GiB, [], policy=3) == lib.SCHED_ERR_OPTIONS
    assert lib.sched_place_one(handle, b"", 0, 0, 0) == lib.SCHED_ERR_JOB


def test_place_one_rejects_foreign_job() -> None:
    """Label id 0 of one table is another label in the next: zone=a here, x=y there."""
    native = native_module()
    packed_for = pack_nodes([node("a", labels={"zone": "a"})])
    other = pack_nodes([node("b1", labels={"x": "y"}), node("b2", labels={"gpu": "1"})])
    packed = pack_job(job(required_labels={"zone": "a"}), packed_for)
    options = make_options("binpack", False, None, 0)
    for place_one in (native.place_one, reference.place_one):
        with pytest.raises(ValueError, match="packed for another node table"):
            place_one(other, packed, options)
    # A table packed again from the same nodes has the same label ids: that is fine.
    again = pack_nodes([node("a", labels={"zone": "a"})])
    assert native.place_one(again, packed, options).node == 0
    assert reference.place_one(again, packed, options).node == 0


def test_place_one_with_many_labels() -> None:
    """More required labels than the core copies to its stack."""
    native = native_module()
    labels = {f"key{i}": "v" for i in range(40)}
    table = pack_nodes([node("a", labels=labels), node("b", labels={"key0": "v"})])
    options = make_options("spread", False, None, 0)
    packed = pack_job(job(required_labels=labels), table)
    assert native.place_one(table, packed, options).node == 0
    assert reference.place_one(table, packed, options).node == 0


def test_place_one_threads_share_cluster() -> None:
    """The core refuses overlapping calls (SCHED_ERR_BUSY); both wrappers wait and retry."""
    native = native_module()
    case = random_case(7, node_count=500, job_count=3000)
    table = pack_nodes(case.nodes)
    options = make_options("binpack", False, None, 0)
    requests = case.jobs[:200]
    expected = [reference.place(table, [request], "binpack")[0] for request in requests]
    batch_expected = native.place(table, case.jobs, **case.options)
    packed = [pack_job(request, table) for request in requests]
    failures: list[str] = []

    def single() -> None:
        for _ in range(60):
            got = [native.place_one(table, p, options) for p in packed]
            if got != expected:
                failures.append("place_one decided otherwise")

    def batches() -> None:
        for _ in range(15):
            if native.place(table, case.jobs, **case.options) != batch_expected:
                failures.append("place decided otherwise")

    def recording(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except (ValueError, MemoryError, RuntimeError) as exc:  # the wrapper's errors
                failures.append(repr(exc))
        return run

    threads = [threading.Thread(target=recording(work)) for work in (single, single, batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_package_place_one_uses_the_active_backend() -> None:
    table = pack_nodes([node("a"), node("b", allocated_cpu_millis=1000)])
    decision = core.place_one(table, core.pack_job(job(), table),
                              core.make_options("binpack", False, None, 0))
    assert decision == core.Decision(0, Outcome.ASSIGNED, 1)


def test_place_one_retries_while_the_core_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The threads above hit SCHED_ERR_BUSY only by chance. Here a stand-in for the
    core reports busy twice before the real call."""
    native = native_module()
    table = pack_nodes([node("a"), node("b", allocated_cpu_millis=1000)])
    packed = pack_job(job(), table)
    real = native._place_one
    answers = iter([native._BUSY, native._BUSY])
    monkeypatch.setattr(native, "_place_one", lambda *args: next(answers, None) or real(*args))
    decision = native.place_one(table, packed, make_options("binpack", False, None, 0))
    assert decision == core.Decision(0, Outcome.ASSIGNED, 1)
    assert next(answers, "used") == "used"


@pytest.mark.parametrize("policy", ["binpack", "spread"])
def test_place_one_tie_across_blocks(policy: str) -> None:
    """The C core visits blocks of 64 nodes best first. The block of nodes 64 to 127
    comes first here, because of a node that cannot take the job. Its best node that
    can ties with node 0, so node 0 must win."""
    native = native_module()
    even = {"allocated_cpu_millis": 2000, "allocated_memory_bytes": 4 * GiB}
    nodes = [node(f"n{i}", **even) for i in range(128)]
    if policy == "binpack":
        nodes[64] = node("n64", allocated_cpu_millis=3900, allocated_memory_bytes=8 * GiB - 1)
    else:
        nodes[64] = node("n64", cpu=500)  # empty, so the least allocated, but too small
    table = pack_nodes(nodes)
    packed = pack_job(job(cpu=1000), table)
    options = make_options(policy, False, None, 0)
    assert reference.place_one(table, packed, options).node == 0
    assert native.place_one(table, packed, options).node == 0
