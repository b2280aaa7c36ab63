"""The C core and the Python reference decide alike on random clusters and queues."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cicd.scheduling.core import JobRequest, NodeState, TenantUsage, reference
from cicd.scheduling.core.model import MAX_QUANTITY, MAX_TIME_MS
from cicd.scheduling.core.tables import make_options, pack_jobs, pack_nodes, to_decisions
from tests.scheduling.conftest import GiB, native_module

LABELS = {"zone": ["a", "b"], "arch": ["amd64", "arm64"], "gpu": ["true"]}
TENANTS = ["alpha", "beta", "gamma"]
# Few distinct sizes, so ties between nodes and repeated job shapes are common.
CPU_SIZES = [0, 250, 500, 1000, 2000, 4000, 8000]
MEMORY_SIZES = [0, GiB // 2, GiB, 2 * GiB, 4 * GiB, 8 * GiB, 16 * GiB]
# Sizes near the limits exercise the 128-bit share arithmetic.
HUGE = [MAX_QUANTITY // 3, MAX_QUANTITY // 2, MAX_QUANTITY - 1, MAX_QUANTITY]


@dataclass
class Case:
    nodes: list[NodeState]
    jobs: list[JobRequest]
    options: dict[str, Any]


def quantity(sizes: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(sizes), st.integers(0, max(sizes)), st.sampled_from(HUGE))


def label_maps() -> st.SearchStrategy[dict[str, str]]:
    values = sorted({value for choices in LABELS.values() for value in choices})
    return st.dictionaries(st.sampled_from(sorted(LABELS)), st.sampled_from(values), max_size=3)


@st.composite
def nodes(draw: st.DrawFn) -> NodeState:
    huge = draw(st.integers(0, 9)) == 0
    cpu = draw(quantity(CPU_SIZES) if huge else st.sampled_from(CPU_SIZES))
    memory = draw(quantity(MEMORY_SIZES) if huge else st.sampled_from(MEMORY_SIZES))
    return NodeState(
        name=f"node-{draw(st.integers(0, 999))}",
        cpu_millis=cpu,
        memory_bytes=memory,
        reserved_cpu_millis=draw(st.sampled_from([0, cpu // 10, cpu // 2, cpu])),
        reserved_memory_bytes=draw(st.sampled_from([0, memory // 10, memory // 2, memory])),
        allocated_cpu_millis=draw(st.sampled_from([0, cpu // 4, cpu // 2, cpu, min(cpu + 1000, MAX_QUANTITY)])),
        allocated_memory_bytes=draw(st.sampled_from([0, memory // 4, memory // 2, memory])),
        labels=draw(label_maps()),
        cordoned=draw(st.integers(0, 7)) == 0,
        breaker_open=draw(st.integers(0, 7)) == 0,
    )


@st.composite
def jobs(draw: st.DrawFn) -> JobRequest:
    huge = draw(st.integers(0, 19)) == 0
    return JobRequest(
        job_id=f"job-{draw(st.integers(0, 999))}",
        tenant=draw(st.sampled_from(TENANTS)),
        cpu_millis=draw(quantity(CPU_SIZES) if huge else st.sampled_from(CPU_SIZES)),
        memory_bytes=draw(quantity(MEMORY_SIZES) if huge else st.sampled_from(MEMORY_SIZES)),
        required_labels=draw(st.one_of(st.just({}), label_maps())),
        priority=draw(st.integers(-2, 2)),
        runnable_at_ms=draw(st.integers(0, 40)),
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    policy = draw(st.sampled_from(["fifo", "binpack", "spread"]))
    tenants = draw(st.dictionaries(st.sampled_from(TENANTS), st.builds(
        TenantUsage,
        running_jobs=st.integers(0, 4),
        cpu_millis=st.sampled_from([0, 1000, 8000, MAX_QUANTITY]),
        memory_bytes=st.sampled_from([0, GiB, 16 * GiB]),
    )))
    options = {
        "policy": policy,
        "backfill": policy != "fifo" and draw(st.booleans()),
        "tenants": tenants,
        "tenant_limits": draw(st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 5))),
        "now_ms": draw(st.one_of(st.none(), st.integers(0, 60), st.just(MAX_TIME_MS))),
        "aging_interval_ms": draw(st.sampled_from([0, 1, 7, 60_000])),
    }
    return Case(draw(st.lists(nodes(), max_size=10)), draw(st.lists(jobs(), max_size=30)),
                options)


def reference_exhaustive(case: Case) -> list[Any]:
    node_table = pack_nodes(case.nodes)
    job_table = pack_jobs(case.jobs, node_table, case.options["tenants"],
                          case.options["tenant_limits"])
    options = make_options(case.options["policy"], case.options["backfill"],
                           case.options["now_ms"], case.options["aging_interval_ms"])
    return to_decisions(reference.place_tables(node_table, job_table, options,
                                               exhaustive=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_native_matches_reference(case: Case) -> None:
    native = native_module()
    expected = reference.place(case.nodes, case.jobs, **case.options)
    assert native.place(case.nodes, case.jobs, **case.options) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_shortcuts_change_nothing(case: Case) -> None:
    assert reference_exhaustive(case) == reference.place(case.nodes, case.jobs, **case.options)


def random_case(seed: int, node_count: int, job_count: int) -> Case:
    """A larger cluster than hypothesis builds: a crowded queue on a few hundred nodes."""
    rng = random.Random(seed)
    cluster = []
    for i in range(node_count):
        cpu = rng.choice([2000, 4000, 8000, 16000])
        memory = rng.choice([4, 8, 16, 32]) * GiB
        cluster.append(NodeState(
            name=f"node-{i}", cpu_millis=cpu, memory_bytes=memory,
            reserved_cpu_millis=cpu // 20, reserved_memory_bytes=memory // 20,
            allocated_cpu_millis=rng.randrange(0, cpu, 250),
            allocated_memory_bytes=rng.randrange(0, memory, GiB // 4),
            labels={"zone": rng.choice("abc"), "arch": rng.choice(["amd64"] * 9 + ["arm64"]),
                    **({"pool": "gpu"} if i % 50 == 7 else {})},
            cordoned=rng.random() < (0.5 if i % 50 == 7 else 0.02),
            breaker_open=rng.random() < 0.02,
        ))
    queue = []
    for i in range(job_count):
        required = {}
        if rng.random() < 0.2:
            required["zone"] = rng.choice("abcd")
        if rng.random() < 0.05:
            required["arch"] = "arm64"
        if rng.random() < 0.03:
            required["pool"] = "gpu"
        queue.append(JobRequest(
            job_id=f"job-{i}", tenant=f"tenant-{rng.randrange(8)}",
            cpu_millis=rng.choice([250, 500, 1000, 2000, 4000] * 9 + [20000]),
            memory_bytes=rng.choice([1, 2, 4, 8, 16] * 9 + [64]) * GiB // 2,
            required_labels=required, priority=rng.randrange(3),
            runnable_at_ms=rng.randrange(0, 3_600_000),
        ))
    policy = rng.choice(["fifo", "binpack", "spread"])
    options = {
        "policy": policy, "backfill": policy != "fifo" and rng.random() < 0.7,
        "tenants": {}, "tenant_limits": {"tenant-0": 5, "tenant-1": 50},
        "now_ms": 3_600_000, "aging_interval_ms": 600_000,
    }
    return Case(cluster, queue, options)


def test_native_matches_reference_on_large_random_queues() -> None:
    native = native_module()
    for seed in range(12):
        case = random_case(seed, node_count=200, job_count=3000)
        expected = reference.place(case.nodes, case.jobs, **case.options)
        assert native.place(case.nodes, case.jobs, **case.options) == expected, f"seed {seed}"
        assert reference_exhaustive(case) == expected, f"seed {seed}"
