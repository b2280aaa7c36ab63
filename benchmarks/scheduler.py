"""Benchmark of the scheduling core, C against the Python reference: ``python3 -m benchmarks.scheduler``.

For 100, 1,000 and 10,000 nodes and queues of 10,000 and 100,000 jobs it measures
scheduling passes on the packed interface, which both implementations share: the
queue is packed once with ``pack_queue`` (as a caller that keeps its queue packed
does when jobs are queued), and a pass is ``place_tables(nodes, queue, options)``
followed by ``assigned_decisions``, which builds a Decision for the placed jobs only.

- a batch: the whole queue in one pass. Throughput is decisions per CPU second of
  the pass. Latency is the time spent on each job inside the core (``latency_ns``
  of ``place_tables``), given as p50 and p99. The packing cost per job is given
  apart, and so is the C core's throughput through ``place`` (JobRequests in,
  a Decision per job out), which includes packing;
- one job per call: ``place_one(nodes, job, options)`` of each implementation,
  with the job packed beforehand by ``pack_job`` and the nodes packed once, against
  the same cluster state every time. Decisions per second come from a loop of
  calls timed as a whole. p50 and p99 come from timing each call apart, which adds
  the cost of reading the clock to each. The same calls on a job that never fits give
  the fixed cost of a call ("floor");
- one-job passes: ``place_tables`` over a one-job queue packed beforehand, as a
  caller of the batch interface does with one job; and, for the C core,
  ``place(table, [job])``, which packs the job too.

Both implementations run in the same invocation on the same jobs. Where the
reference would take too long, it runs on the first jobs of the queue only (the
"reference jobs" column), and the C core runs on that same prefix for the ratio.
Prints a markdown report; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd.scheduling.core import JobRequest, NodeState, pack_nodes, reference
from cicd.scheduling.core.model import MAX_QUANTITY
from cicd.scheduling.core.tables import (
    JobTable,
    NodeTable,
    PackedJob,
    assigned_decisions,
    make_options,
    pack_job,
    pack_queue,
)

if TYPE_CHECKING:
    from benchmarks.measure import BenchmarkResult

NAME = "scheduler"
GiB = 1 << 30
NOW_MS = 3_600_000          # the queue's jobs became runnable during the last hour
AGING_INTERVAL_MS = 600_000
NODE_COUNTS = (100, 1_000, 10_000)
QUEUE_LENGTHS = (10_000, 100_000)
# The reference's batch runs on at most this many jobs per node count, and its
# one-job calls are this many, so the whole run stays within about five minutes.
REFERENCE_BATCH_JOBS = {100: 100_000, 1_000: 100_000, 10_000: 10_000}
REFERENCE_CALLS = {100: 5_000, 1_000: 2_000, 10_000: 1_000}
NATIVE_CALLS = 20_000
BATCH_REPETITIONS = 5
TARGET_RATIO = 50.0
TARGET_P99_US = 50.0


def make_cluster(count: int, rng: random.Random) -> list[NodeState]:
    """Nodes of mixed sizes, 0-60% allocated, three zones, a few ARM and GPU nodes,
    and 1% each cordoned and with an open breaker."""
    nodes = []
    for i in range(count):
        cpu = rng.choice([4_000, 8_000, 16_000, 32_000])
        memory = rng.choice([8, 16, 32, 64]) * GiB
        labels = {"zone": rng.choice("abc"), "arch": "arm64" if rng.random() < 0.1 else "amd64"}
        if rng.random() < 0.02:
            labels["pool"] = "gpu"
        nodes.append(NodeState(
            name=f"node-{i}", cpu_millis=cpu, memory_bytes=memory,
            reserved_cpu_millis=cpu // 20, reserved_memory_bytes=memory // 20,
            allocated_cpu_millis=rng.randrange(0, cpu * 6 // 10 + 1, 250),
            allocated_memory_bytes=rng.randrange(0, memory * 6 // 10 + 1, GiB // 4),
            labels=labels, cordoned=rng.random() < 0.01, breaker_open=rng.random() < 0.01,
        ))
    return nodes


def make_queue(count: int, rng: random.Random) -> list[JobRequest]:
    """CI-like jobs: mostly small, 20% with labels, 50 tenants, four priorities."""
    jobs = []
    for i in range(count):
        labels: dict[str, str] = {}
        draw = rng.random()
        if draw < 0.15:
            labels["zone"] = rng.choice("abc")
        elif draw < 0.19:
            labels["arch"] = "arm64"
        elif draw < 0.20:
            labels["pool"] = "gpu"
        jobs.append(JobRequest(
            job_id=f"job-{i}", tenant=f"tenant-{rng.randrange(50)}",
            cpu_millis=rng.choice([250, 500, 1_000, 1_000, 2_000, 4_000, 16_000]),
            memory_bytes=rng.choice([1, 2, 2, 4, 8, 16]) * GiB // 2,
            required_labels=labels, priority=rng.randrange(4),
            runnable_at_ms=rng.randrange(NOW_MS),
        ))
    return jobs


@dataclass
class BatchRow:
    nodes: int
    jobs: int
    pack_us_per_job: float       # pack_queue, once per job when it is queued
    native_place_decisions_per_s: float  # the C core through place(), packing included
    native_decisions_per_s: float
    native_p50_us: float
    native_p99_us: float
    reference_jobs: int
    reference_decisions_per_s: float
    reference_p50_us: float
    reference_p99_us: float
    ratio: float          # reference time / C time for the whole pass, same jobs
    core_ratio: float     # the same for place_tables alone (no Decisions)


@dataclass
class CallRow:
    nodes: int
    native_calls: int
    native_decisions_per_s: float
    native_p50_us: float
    native_p99_us: float
    native_core_p50_us: float  # inside the core only, as in the batch rows
    native_core_p99_us: float
    empty_pass_p50_us: float   # a C pass over an empty queue: the wrapper's fixed cost
    native_place_p50_us: float  # place(table, [job]), which also packs the job
    native_place_p99_us: float
    reference_calls: int
    reference_decisions_per_s: float
    reference_p50_us: float
    reference_p99_us: float
    reference_core_p50_us: float  # inside the reference's decision loop
    ratio: float          # mean reference call / mean C call
    core_ratio: float     # mean reference time in its loop / mean C time in the core
    ratio_bound: float    # mean reference call / median empty C pass: no one-job pass
                          # through the wrapper can reach a higher ratio


@dataclass
class OneRow:
    nodes: int
    native_calls: int
    native_decisions_per_s: float  # from loops of calls timed as a whole
    native_p50_us: float           # each call timed apart
    native_p99_us: float
    native_floor_us: float         # mean call on a job that never fits: the fixed cost
    reference_calls: int
    reference_decisions_per_s: float
    reference_p50_us: float
    reference_p99_us: float
    ratio: float          # mean reference call / mean C call, on the same jobs
    ratio_bound: float    # mean reference call / C floor: no C core can reach a higher ratio
                          # through this interface


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


TENANT_LIMITS = {"tenant-0": 20, "tenant-1": 200}
PLACE_OPTIONS: dict[str, Any] = {
    "policy": "binpack", "backfill": True, "now_ms": NOW_MS,
    "aging_interval_ms": AGING_INTERVAL_MS, "tenant_limits": TENANT_LIMITS,
}
OPTIONS = make_options("binpack", True, NOW_MS, AGING_INTERVAL_MS)


# Batches are timed in CPU seconds of this process, not wall-clock seconds, so that
# other processes competing for the CPUs of a shared machine inflate neither side of
# a ratio. One-job calls are timed on the wall clock, as a caller waits for them.
cpu_clock = time.process_time


def time_pass(place_tables: Callable[..., Any], table: NodeTable, queue: JobTable,
              repetitions: int) -> float:
    """Return the median CPU seconds of a pass: ``place_tables`` and the placed jobs' Decisions."""
    durations = []
    for _ in range(repetitions):
        started = cpu_clock()
        assigned_decisions(place_tables(table, queue, OPTIONS))
        durations.append(cpu_clock() - started)
    return statistics.median(durations)


def time_place(place: Callable[..., Any], table: NodeTable, jobs: list[JobRequest]) -> float:
    """Return the CPU seconds of one ``place`` call on JobRequests, packing included."""
    started = cpu_clock()
    place(table, jobs, **PLACE_OPTIONS)
    return cpu_clock() - started


def time_core(place_tables: Callable[..., Any], table: NodeTable, queue: JobTable) -> float:
    """Return the CPU seconds of ``place_tables`` alone.

    Without ``latencies``: reading the clock twice per job costs the C core about
    as much as deciding a job on a small cluster, so a ratio timed with it would
    mostly measure the clock.
    """
    started = cpu_clock()
    place_tables(table, queue, OPTIONS)
    return cpu_clock() - started


def core_latencies(place_tables: Callable[..., Any], table: NodeTable,
                   queue: JobTable) -> list[int]:
    """Return the time ``place_tables`` spent on each job inside the core, in nanoseconds."""
    latencies: list[int] = place_tables(table, queue, OPTIONS, latencies=True).latency_ns
    return latencies


def time_pack(table: NodeTable, jobs: list[JobRequest]) -> tuple[JobTable, float]:
    """Pack the queue; return it and the CPU seconds that took."""
    started = cpu_clock()
    queue = pack_queue(jobs, table, None, TENANT_LIMITS)
    return queue, cpu_clock() - started


def time_calls(place_tables: Callable[..., Any], table: NodeTable,
               queues: list[JobTable]) -> list[float]:
    """Return the seconds of each one-job pass."""
    durations = []
    clock = time.perf_counter_ns
    for queue in queues:
        started = clock()
        assigned_decisions(place_tables(table, queue, OPTIONS))
        durations.append((clock() - started) / 1e9)
    return durations


def time_place_calls(place: Callable[..., Any], table: NodeTable,
                     jobs: list[JobRequest]) -> list[float]:
    """Return the seconds of each ``place(table, [job])`` call."""
    durations = []
    clock = time.perf_counter_ns
    for job in jobs:
        started = clock()
        place(table, [job], **PLACE_OPTIONS)
        durations.append((clock() - started) / 1e9)
    return durations


def core_latencies_per_call(place_tables: Callable[..., Any], table: NodeTable,
                            queues: list[JobTable]) -> list[int]:
    """Return the time each one-job pass spent inside the core, in nanoseconds."""
    return [place_tables(table, queue, OPTIONS, latencies=True).latency_ns[0]
            for queue in queues]


def time_one_loop(place_one: Callable[..., Any], table: NodeTable, jobs: list[PackedJob],
                  repetitions: int) -> float:
    """Return the mean seconds per call of ``place_one`` over ``jobs``: the median of
    ``repetitions`` loops, each timed as a whole on the wall clock."""
    means = []
    clock = time.perf_counter
    for _ in range(repetitions):
        started = clock()
        for job in jobs:
            place_one(table, job, OPTIONS)
        means.append((clock() - started) / len(jobs))
    return statistics.median(means)


def time_one_calls(place_one: Callable[..., Any], table: NodeTable,
                   jobs: list[PackedJob]) -> list[float]:
    """Return the seconds of each ``place_one`` call, timed apart."""
    durations = []
    clock = time.perf_counter_ns
    for job in jobs:
        started = clock()
        place_one(table, job, OPTIONS)
        durations.append((clock() - started) / 1e9)
    return durations


def one_job_row(native: Any, node_count: int, table: NodeTable,
                queue: list[JobRequest]) -> OneRow:
    """Measure ``place_one`` of both implementations on the first jobs of ``queue``."""
    native_jobs = [pack_job(job, table) for job in queue[:NATIVE_CALLS]]
    reference_jobs = native_jobs[:REFERENCE_CALLS.get(node_count, 100)]
    # The C loop over the reference's jobs repeats until it is as long as the C loop
    # over all of its jobs, so both C figures rest on as many calls.
    rounds = max(1, len(native_jobs) // len(reference_jobs))
    native_mean = time_one_loop(native.place_one, table, native_jobs, BATCH_REPETITIONS)
    native_same = time_one_loop(native.place_one, table, reference_jobs * rounds,
                                BATCH_REPETITIONS)
    reference_mean = time_one_loop(reference.place_one, table, reference_jobs, 1)
    never = pack_job(JobRequest(job_id="never", tenant="t", cpu_millis=MAX_QUANTITY,
                                memory_bytes=0), table)
    floor = time_one_loop(native.place_one, table, [never] * len(native_jobs),
                          BATCH_REPETITIONS)
    native_calls = time_one_calls(native.place_one, table, native_jobs)
    reference_calls = time_one_calls(reference.place_one, table, reference_jobs)
    return OneRow(
        nodes=node_count, native_calls=len(native_jobs),
        native_decisions_per_s=1 / native_mean,
        native_p50_us=percentile(native_calls, 0.5) * 1e6,
        native_p99_us=percentile(native_calls, 0.99) * 1e6,
        native_floor_us=floor * 1e6,
        reference_calls=len(reference_jobs),
        reference_decisions_per_s=1 / reference_mean,
        reference_p50_us=percentile(reference_calls, 0.5) * 1e6,
        reference_p99_us=percentile(reference_calls, 0.99) * 1e6,
        ratio=reference_mean / native_same,
        ratio_bound=reference_mean / floor,
    )


def progress(message: str) -> None:
    print(f"benchmarks.scheduler: {message}", file=sys.stderr, flush=True)


def run(node_counts: Sequence[int], queue_lengths: Sequence[int], seed: int
        ) -> tuple[list[BatchRow], list[OneRow], list[CallRow]]:
    from cicd.scheduling.core import native  # ImportError when the extension is not built

    batch_rows, one_rows, call_rows = [], [], []
    for node_count in node_counts:
        rng = random.Random(seed + node_count)
        cluster = make_cluster(node_count, rng)
        queue = make_queue(max(queue_lengths), rng)
        table = pack_nodes(cluster)
        # Build each implementation's form of the table outside the timings.
        warm_up = pack_queue(queue[:1], table, None, TENANT_LIMITS)
        native.place_tables(table, warm_up, OPTIONS)
        reference.place_tables(table, warm_up, OPTIONS)

        for length in queue_lengths:
            jobs = queue[:length]
            sample = jobs[:REFERENCE_BATCH_JOBS.get(node_count, length)]
            progress(f"batch: {node_count} nodes, {length} jobs "
                     f"(reference on {len(sample)})")
            packed, pack_s = time_pack(table, jobs)
            packed_sample = packed if len(sample) == length else pack_queue(
                sample, table, None, TENANT_LIMITS)
            native_place_s = time_place(native.place, table, jobs)
            native_s = time_pass(native.place_tables, table, packed, BATCH_REPETITIONS)
            native_latency = core_latencies(native.place_tables, table, packed)
            native_sample_s = (native_s if len(sample) == length else
                               time_pass(native.place_tables, table, packed_sample,
                                         BATCH_REPETITIONS))
            native_core_s = statistics.median(
                time_core(native.place_tables, table, packed_sample)
                for _ in range(BATCH_REPETITIONS))
            reference_s = time_pass(reference.place_tables, table, packed_sample, 1)
            reference_core_s = time_core(reference.place_tables, table, packed_sample)
            reference_latency = core_latencies(reference.place_tables, table, packed_sample)
            batch_rows.append(BatchRow(
                nodes=node_count, jobs=length,
                pack_us_per_job=pack_s / length * 1e6,
                native_place_decisions_per_s=length / native_place_s,
                native_decisions_per_s=length / native_s,
                native_p50_us=percentile(native_latency, 0.5) / 1e3,
                native_p99_us=percentile(native_latency, 0.99) / 1e3,
                reference_jobs=len(sample),
                reference_decisions_per_s=len(sample) / reference_s,
                reference_p50_us=percentile(reference_latency, 0.5) / 1e3,
                reference_p99_us=percentile(reference_latency, 0.99) / 1e3,
                ratio=reference_s / native_sample_s,
                core_ratio=reference_core_s / native_core_s,
            ))

        progress(f"one job per call: {node_count} nodes")
        one_rows.append(one_job_row(native, node_count, table, queue))

        progress(f"one-job passes: {node_count} nodes")
        native_jobs = queue[:NATIVE_CALLS]
        reference_jobs = queue[:REFERENCE_CALLS.get(node_count, 100)]
        native_queues = [pack_queue([job], table, None, TENANT_LIMITS) for job in native_jobs]
        native_durations = time_calls(native.place_tables, table, native_queues)
        reference_durations = time_calls(reference.place_tables, table,
                                         native_queues[:len(reference_jobs)])
        native_core = core_latencies_per_call(native.place_tables, table, native_queues)
        reference_core = core_latencies_per_call(reference.place_tables, table,
                                                 native_queues[:len(reference_jobs)])
        empty = pack_queue([], table, None, TENANT_LIMITS)
        empty_durations = time_calls(native.place_tables, table, [empty] * len(native_jobs))
        native_place = time_place_calls(native.place, table, native_jobs)
        native_mean = statistics.fmean(native_durations)
        reference_mean = statistics.fmean(reference_durations)
        call_rows.append(CallRow(
            nodes=node_count, native_calls=len(native_durations),
            native_decisions_per_s=1 / native_mean,
            native_p50_us=percentile(native_durations, 0.5) * 1e6,
            native_p99_us=percentile(native_durations, 0.99) * 1e6,
            native_core_p50_us=percentile(native_core, 0.5) / 1e3,
            native_core_p99_us=percentile(native_core, 0.99) / 1e3,
            empty_pass_p50_us=percentile(empty_durations, 0.5) * 1e6,
            native_place_p50_us=percentile(native_place, 0.5) * 1e6,
            native_place_p99_us=percentile(native_place, 0.99) * 1e6,
            reference_calls=len(reference_durations),
            reference_decisions_per_s=1 / reference_mean,
            reference_p50_us=percentile(reference_durations, 0.5) * 1e6,
            reference_p99_us=percentile(reference_durations, 0.99) * 1e6,
            reference_core_p50_us=percentile(reference_core, 0.5) / 1e3,
            ratio=reference_mean / native_mean,
            core_ratio=statistics.fmean(reference_core) / statistics.fmean(native_core),
            ratio_bound=reference_mean / percentile(empty_durations, 0.5),
        ))
    return batch_rows, one_rows, call_rows


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def format_report(batch_rows: list[BatchRow], one_rows: list[OneRow],
                  call_rows: list[CallRow], seconds: float, load_before: str) -> str:
    lines = [
        "# Scheduling core: C against the Python reference",
        "",
        (f"Machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}, Python "
        f"{platform.python_version()}. Load average before the run: {load_before}; "
        f"after: {load_average()}. The run took {seconds:.0f} s."),
        "Policy binpack with backfill, aging on, two tenants limited.",
        "",
        "## One batch per queue",
        "",
        ("Decisions per CPU second of this process over a pass on the packed queue "
        "(`place_tables` and `assigned_decisions`); p50 and p99 of the time spent on "
        "each job inside the core. The ratio divides the reference's CPU time by the C "
        "core's on the same jobs, for the whole pass and for `place_tables` alone. "
        "Packing is paid once per queued job, by both sides alike; \"C via place\" is "
        "the C core through `place` (JobRequests in, a Decision per job out)."),
        "",
        ("| nodes | jobs | packing µs/job | C via place decisions/s | C decisions/s | "
        "C p50 µs | C p99 µs | reference jobs | reference decisions/s | reference p50 µs | "
        "reference p99 µs | ratio | core ratio |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in batch_rows:
        lines.append(
            f"| {r.nodes:,} | {r.jobs:,} | {r.pack_us_per_job:.2f} | "
            f"{r.native_place_decisions_per_s:,.0f} | {r.native_decisions_per_s:,.0f} | "
            f"{r.native_p50_us:.2f} | {r.native_p99_us:.2f} | {r.reference_jobs:,} | "
            f"{r.reference_decisions_per_s:,.0f} | {r.reference_p50_us:.1f} | "
            f"{r.reference_p99_us:.1f} | {r.ratio:.1f} | {r.core_ratio:.1f} |")
    lines += [
        "",
        "## One job per call",
        "",
        ("`place_one(nodes, job, options)` with the job packed beforehand (`pack_job`) "
        "and the nodes packed once, on the wall clock. Decisions per second come from "
        "loops of calls timed as a whole; p50 and p99 from timing each call apart, "
        "which adds reading the clock to each call. The ratio divides the reference's "
        "mean call by the C core's on the same jobs. \"Floor\" is the C core's mean "
        "call on a job that never fits, which returns after one check: the cost of the "
        "call itself. The reference's mean call divided by it (\"bound\") is the "
        "highest ratio that any C code could reach through this interface."),
        "",
        ("| nodes | C calls | C decisions/s | C p50 µs | C p99 µs | C floor µs | "
        "reference calls | reference decisions/s | reference p50 µs | reference p99 µs | "
        "ratio | bound |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in one_rows:
        lines.append(
            f"| {o.nodes:,} | {o.native_calls:,} | {o.native_decisions_per_s:,.0f} | "
            f"{o.native_p50_us:.2f} | {o.native_p99_us:.2f} | {o.native_floor_us:.2f} | "
            f"{o.reference_calls:,} | {o.reference_decisions_per_s:,.0f} | "
            f"{o.reference_p50_us:.1f} | {o.reference_p99_us:.1f} | {o.ratio:.1f} | "
            f"{o.ratio_bound:.1f} |")
    lines += [
        "",
        "## One-job passes",
        "",
        ("A pass of the batch interface over a one-job queue packed beforehand, with "
        "the nodes packed once, timed around the call on the wall clock. \"Core\" is "
        "the time inside the C core, or inside the reference's decision loop, from "
        "separate calls on the same jobs; \"C via place\" times `place(table, [job])`, "
        "which also packs the job and builds its Decision. \"Empty pass\" is a C pass "
        "over an empty queue: the lock, the call and the results, with no job to "
        "decide; the reference's mean pass divided by it is the \"bound\" of this "
        "interface."),
        "",
        ("| nodes | C calls | C decisions/s | C p50 µs | C p99 µs | C core p50 µs | "
        "C core p99 µs | C empty pass p50 µs | C via place p50 µs | C via place p99 µs | "
        "reference calls | reference decisions/s | reference p50 µs | reference p99 µs | "
        "reference core p50 µs | ratio | core ratio | bound |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in call_rows:
        lines.append(
            f"| {c.nodes:,} | {c.native_calls:,} | {c.native_decisions_per_s:,.0f} | "
            f"{c.native_p50_us:.1f} | {c.native_p99_us:.1f} | {c.native_core_p50_us:.2f} | "
            f"{c.native_core_p99_us:.2f} | {c.empty_pass_p50_us:.2f} | "
            f"{c.native_place_p50_us:.1f} | {c.native_place_p99_us:.1f} | "
            f"{c.reference_calls:,} | "
            f"{c.reference_decisions_per_s:,.0f} | {c.reference_p50_us:.1f} | "
            f"{c.reference_p99_us:.1f} | {c.reference_core_p50_us:.1f} | {c.ratio:.1f} | "
            f"{c.core_ratio:.1f} | {c.ratio_bound:.1f} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
    lines += target_lines(batch_rows, one_rows, call_rows)
    return "\n".join(lines) + "\n"


def target_lines(batch_rows: list[BatchRow], one_rows: list[OneRow],
                 call_rows: list[CallRow]) -> list[str]:
    def ratio_line(case: str, ratios: list[float]) -> str:
        lowest = min(ratios, default=0)
        return (f"| C at least {TARGET_RATIO:g}x the reference (lowest ratio, {case}) | "
                f"{lowest:.1f}x | {yes_no(lowest >= TARGET_RATIO)} |")

    def p99_line(case: str, values: list[float]) -> str:
        return (f"| p99 per decision under {TARGET_P99_US:g} µs at {largest:,} nodes, {case} | "
                f"{max(values):.1f} µs | {yes_no(max(values) < TARGET_P99_US)} |")

    lines = [ratio_line("batches, whole pass", [r.ratio for r in batch_rows]),
             ratio_line("batches, core alone", [r.core_ratio for r in batch_rows])]
    for o in one_rows:
        lines.append(f"| C at least {TARGET_RATIO:g}x the reference, one job per call, "
                     f"{o.nodes:,} nodes (bound {o.ratio_bound:.1f}x: "
                     f"{'within reach' if o.ratio_bound >= TARGET_RATIO else 'out of reach'}) "
                     f"| {o.ratio:.1f}x | {yes_no(o.ratio >= TARGET_RATIO)} |")
    lines.append(ratio_line("one-job passes, core alone", [c.core_ratio for c in call_rows]))
    largest = max((r.nodes for r in batch_rows), default=0)
    p99_batch = [r.native_p99_us for r in batch_rows if r.nodes == largest]
    p99_one = [o.native_p99_us for o in one_rows if o.nodes == largest]
    p99_core = [c.native_core_p99_us for c in call_rows if c.nodes == largest]
    p99_place = [c.native_place_p99_us for c in call_rows if c.nodes == largest]
    if p99_batch:
        lines.append(p99_line("in a batch", p99_batch))
    if p99_one:
        lines.append(p99_line("one job per call, whole call", p99_one))
    if p99_core:
        lines.append(p99_line("one-job pass, core alone", p99_core))
        lines.append(p99_line("one job per `place` call", p99_place))
    return lines


def yes_no(met: bool) -> str:
    return "yes" if met else "**no**"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.scheduler",
        description="Measure the C scheduling core against the Python reference.")
    parser.add_argument("--nodes", type=int, nargs="+", default=list(NODE_COUNTS),
                        help="node counts (default: 100 1000 10000)")
    parser.add_argument("--jobs", type=int, nargs="+", default=list(QUEUE_LENGTHS),
                        help="queue lengths (default: 10000 100000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the workload (default: 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.nodes) < 1 or min(args.jobs) < 1:
        parser.error("node counts and queue lengths must be at least 1")
    return args


NAME = "scheduler"
TITLE = "Scheduling core: C against the Python reference"


def run_benchmark() -> BenchmarkResult:
    """Run the default sizes for ``python3 -m benchmarks``: one observation per row."""
    from benchmarks.measure import BenchmarkResult, Observation

    args = parse_args([])
    batch_rows, one_rows, call_rows = run(args.nodes, args.jobs, args.seed)
    result = BenchmarkResult(NAME, TITLE)
    for row in batch_rows:
        result.observations.append(Observation(
            f"batch, {row.nodes:,} nodes, {row.jobs:,} jobs",
            f"C {row.native_decisions_per_s:,.0f} decisions/s (p99 {row.native_p99_us:.1f} µs), "
            f"reference {row.reference_decisions_per_s:,.0f}/s; ratio {row.ratio:.1f}x whole "
            f"pass, {row.core_ratio:.1f}x core alone", asdict(row)))
    for one_row in one_rows:
        result.observations.append(Observation(
            f"one job per call, {one_row.nodes:,} nodes",
            f"C {one_row.native_decisions_per_s:,.0f} decisions/s "
            f"(p99 {one_row.native_p99_us:.1f} µs), reference "
            f"{one_row.reference_decisions_per_s:,.0f}/s; ratio {one_row.ratio:.1f}x, "
            f"bound {one_row.ratio_bound:.1f}x", asdict(one_row)))
    for call in call_rows:
        result.observations.append(Observation(
            f"one-job pass, {call.nodes:,} nodes",
            f"C p50 {call.native_p50_us:.1f} µs, p99 {call.native_p99_us:.1f} µs "
            f"(core p99 {call.native_core_p99_us:.1f} µs); ratio {call.ratio:.1f}x whole call, "
            f"{call.core_ratio:.1f}x core alone, bound {call.ratio_bound:.1f}x",
            asdict(call)))
    result.notes.append("Targets: at least 50x the reference; p99 per decision under 50 µs at "
                        "10,000 nodes. docs/scheduling.md explains the workload.")
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    load_before = load_average()
    started = time.perf_counter()
    try:
        batch_rows, one_rows, call_rows = run(args.nodes, args.jobs, args.seed)
    except ImportError as exc:
        print(f"benchmarks.scheduler: the C core is not built ({exc}); run "
              f"`python3 -m pip install -e .` first", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(format_report(batch_rows, one_rows, call_rows, seconds, load_before))
    if args.json:
        args.json.write_text(json.dumps({
            "batch": [asdict(r) for r in batch_rows], "one_job": [asdict(o) for o in one_rows],
            "passes": [asdict(c) for c in call_rows],
            "seconds": seconds, "nproc": os.cpu_count(), "cpu_model": cpu_model(),
        }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
