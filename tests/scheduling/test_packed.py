"""The packed interface (pack_queue, place_tables, assigned_decisions) and the C core's shortcuts.

The C core stops scanning once no node has room for the smallest request of a call
("frozen"), reuses its working arrays between calls, and scans with AVX2 where the
CPU has it. These tests make each of those paths decide as the reference does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from array import array
from typing import Any

import pytest

from cicd.scheduling.core import Outcome, pack_nodes, reference
from cicd.scheduling.core.tables import (
    INT32,
    INT64,
    Options,
    assigned_decisions,
    make_options,
    pack_jobs,
    pack_queue,
    to_decisions,
)
from tests.scheduling.conftest import GiB, job, native_module, node
from tests.scheduling.test_equivalence import random_case, reference_exhaustive


def _options(case: Any) -> Options:
    """Return the validated per-call settings of a random case."""
    return make_options(case.options["policy"], case.options["backfill"],
                        case.options["now_ms"], case.options["aging_interval_ms"])


def test_pack_queue_packs_one_buffer() -> None:
    table = pack_nodes([node("a", labels={"zone": "a"})])
    queue = pack_queue([job("x", cpu=1500), job("y", tenant="u", required_labels={"zone": "a"})], table,
                       tenant_limits={"u": 3})
    assert isinstance(queue.packed, bytes)
    header = array(INT64, queue.packed[:32])
    assert list(header) == [2, 2, 2, 1]  # jobs, tenants, label classes, label ids in classes
    assert len(queue.packed) % 8 == 0
    assert queue.cpu.format == INT64
    assert queue.tenant.format == INT32
    assert list(queue.cpu) == [1500, 1000]
    assert list(queue.tenant) == [0, 1]
    assert list(queue.label_class) == [0, 1]
    with pytest.raises(TypeError):
        queue.cpu[0] = 1  # read-only: the columns and the buffer cannot disagree
    lists = pack_jobs([job("x", cpu=1500), job("y", tenant="u", required_labels={"zone": "a"})], table,
                      None, {"u": 3})
    assert lists.packed is None
    assert queue.tenant_limit == lists.tenant_limit == [-1, 3]


def test_packed_and_column_paths_agree_for_every_size() -> None:
    # Up to 32 jobs the wrapper reads results as lists, above it as arrays.
    native = native_module()
    case = random_case(5, node_count=90, job_count=200)
    table = pack_nodes(case.nodes)
    options = _options(case)
    for size in (0, 1, 2, 31, 32, 33, 200, 1):
        jobs = case.jobs[:size]
        packed = pack_queue(jobs, table, case.options["tenants"], case.options["tenant_limits"])
        lists = pack_jobs(jobs, table, case.options["tenants"], case.options["tenant_limits"])
        expected = reference.place(case.nodes, jobs, **case.options)
        for implementation in (native, reference):
            for queue in (packed, lists):
                placement = implementation.place_tables(table, queue, options, latencies=True)
                assert to_decisions(placement) == expected, (implementation.__name__, size)
                assert placement.latency_ns is not None
                assert len(placement.latency_ns) == size


def test_damaged_packed_buffer_falls_back_to_the_columns() -> None:
    # The core rejects a buffer that no longer matches its header. The wrapper
    # then decides from the columns, which name a bad job if there is one.
    native = native_module()
    table = pack_nodes([node("a", cpu=4000)])
    options = make_options("binpack", False, None, 0)
    queue = pack_queue([job("x", cpu=1000), job("y", cpu=8000)], table)
    expected = to_decisions(native.place_tables(table, queue, options))
    queue.packed = queue.packed[:-8]
    assert to_decisions(native.place_tables(table, queue, options)) == expected

    bad = pack_jobs([job("x", cpu=1000)], table, None, None)
    bad.cpu = [-5]
    bad.packed = b"\0" * 8
    with pytest.raises(ValueError, match=r"rejected jobs\[0\]"):
        native.place_tables(table, bad, options)


def test_core_refuses_malformed_packed_buffers() -> None:
    native_module()
    from cicd.scheduling.core._native import ffi, lib
    from cicd.scheduling.core.native import _cluster

    table = pack_nodes([node("a")])
    handle = _cluster(table).handle
    options = ffi.new("struct sched_options *", {"policy": 0, "now_ms": -1})
    result = ffi.new("struct sched_result *")
    outputs = ffi.new("int32_t[]", 8), ffi.new("uint8_t[]", 8)
    result.node, result.position, result.assigned = outputs[0], outputs[0] + 2, outputs[0] + 4
    result.outcome, result.reason = outputs[1], outputs[1] + 2
    good = pack_queue([job("x")], table).packed
    assert good is not None
    assert lib.sched_place_packed(handle, good, len(good), options, result) == lib.SCHED_OK
    assert result.node[0] == 0

    def rejected(data: bytes, size: int | None = None, offset: int = 0) -> bool:
        storage = ffi.new("char[]", len(data) + 16)
        start = storage + (-int(ffi.cast("uintptr_t", storage)) % 8) + offset
        ffi.memmove(start, data, len(data))
        code = lib.sched_place_packed(handle, start, len(data) if size is None else size,
                                      options, result)
        return bool(code == lib.SCHED_ERR_JOB and result.error_index == -1)

    assert not rejected(good)
    assert rejected(good, offset=4)                 # misaligned
    assert rejected(good, size=len(good) - 8)        # shorter than the header says
    assert rejected(good, size=len(good) + 8)
    assert rejected(good[:24], size=24)             # no whole header
    for field, value in ((0, -1), (1, -1), (2, -1), (3, -1), (0, 1 << 31), (2, (1 << 31) - 1),
                         (3, 1 << 62)):
        header = array(INT64, good[:32])
        header[field] = value
        assert rejected(header.tobytes() + good[32:]), (field, value)
    assert lib.sched_place_packed(handle, ffi.NULL, 0, options, result) == lib.SCHED_ERR_JOB


@pytest.mark.parametrize("seed", range(4))
def test_packed_queue_decides_as_place(seed: int) -> None:
    native = native_module()
    case = random_case(seed, node_count=60, job_count=2000)
    table = pack_nodes(case.nodes)
    queue = pack_queue(case.jobs, table, case.options["tenants"], case.options["tenant_limits"])
    options = _options(case)
    expected = reference.place(case.nodes, case.jobs, **case.options)

    for implementation in (native, reference):
        placement = implementation.place_tables(table, queue, options)
        assert to_decisions(placement) == expected, implementation.__name__
        placed = sorted((d for d in expected if d.outcome is Outcome.ASSIGNED),
                        key=lambda d: d.position)
        assert assigned_decisions(placement) == placed, implementation.__name__


def test_assigned_decisions_empty_when_nothing_fits() -> None:
    native = native_module()
    table = pack_nodes([node("a", cpu=1000)])
    queue = pack_queue([job("x", cpu=2000)], table)
    placement = native.place_tables(table, queue, make_options("fifo", False, None, 0))
    assert assigned_decisions(placement) == []
    assert list(placement.node) == [-1]


def test_frozen_call_orders_tenants_by_runnable_time() -> None:
    # The only node has an open breaker, so no job can be placed from the start.
    # Tenants with equal usage then tie, and runnable time decides between them.
    native = native_module()
    nodes = [node("a", cpu=2000, memory=16 * GiB, breaker_open=True)]
    jobs = [job("late", tenant="alpha", cpu=500, priority=2, runnable_at_ms=39),
            job("early", tenant="beta", cpu=500, priority=2, runnable_at_ms=31),
            job("low", tenant="gamma", cpu=500, priority=0, runnable_at_ms=1)]
    decisions = native.place(nodes, jobs, "binpack")
    assert decisions == reference.place(nodes, jobs, "binpack")
    assert [d.position for d in decisions] == [1, 0, 2]


@pytest.mark.parametrize(("policy", "backfill"), [("fifo", False), ("binpack", False),
                                                  ("binpack", True), ("spread", True)])
def test_full_cluster_decides_as_reference(policy: str, backfill: bool) -> None:
    # Few nodes and a long queue: the cluster fills early and the C core decides the
    # rest of the queue without scanning. The placements before that make the
    # tenants' shares differ, so their ranks do too.
    native = native_module()
    case = random_case(7, node_count=12, job_count=3000)
    case.options.update(policy=policy, backfill=backfill)
    case.options["tenants"] = {}
    expected = reference.place(case.nodes, case.jobs, **case.options)
    assert native.place(case.nodes, case.jobs, **case.options) == expected
    assert reference_exhaustive(case) == expected


def test_buffers_reused_across_batch_sizes() -> None:
    native = native_module()
    case = random_case(9, node_count=150, job_count=3000)
    table = pack_nodes(case.nodes)
    for size in (3000, 1, 0, 200, 3000, 17):
        jobs = case.jobs[:size]
        assert (native.place(table, jobs, **case.options)
                == reference.place(case.nodes, jobs, **case.options)), f"{size} jobs"


def test_scalar_scan_decides_as_reference() -> None:
    # CICD_SCHEDULER_SCALAR=1 turns off the AVX2 scan, so both scans are checked on
    # machines that have AVX2.
    native_module()
    code = (
        "from cicd.scheduling.core import native, reference\n"
        "from cicd.scheduling.core.tables import make_options, pack_job, pack_nodes\n"
        "from tests.scheduling.test_equivalence import random_case\n"
        "for seed in range(6):\n"
        "    case = random_case(seed, node_count=300, job_count=1500)\n"
        "    assert native.place(case.nodes, case.jobs, **case.options) == "
        "reference.place(case.nodes, case.jobs, **case.options), seed\n"
        "    table = pack_nodes(case.nodes)\n"
        "    for policy in ('binpack', 'spread'):\n"
        "        options = make_options(policy, False, None, 0)\n"
        "        for job in case.jobs[:300]:\n"
        "            packed = pack_job(job, table)\n"
        "            assert native.place_one(table, packed, options) == "
        "reference.place_one(table, packed, options), (seed, policy)\n"
        "print('ok')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        check=False, env={**os.environ, "CICD_SCHEDULER_SCALAR": "1"})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_list_and_packed_tables_decide_alike() -> None:
    native = native_module()
    case = random_case(2, node_count=80, job_count=500)
    table = pack_nodes(case.nodes)
    options = _options(case)
    lists = pack_jobs(case.jobs, table, None, case.options["tenant_limits"])
    packed = pack_queue(case.jobs, table, None, case.options["tenant_limits"])
    assert (to_decisions(native.place_tables(table, lists, options))
            == to_decisions(native.place_tables(table, packed, options)))
