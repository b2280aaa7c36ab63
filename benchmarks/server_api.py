"""The server: run creation latency at rising request rates, and event-log append speed.

Run creation: ``cicd serve`` (local executor, its own database) takes POST
/api/v1/runs from a separate process at 25, 50, 100 and 200 requests per second:
``hey`` (Debian's package) where installed, else ``benchmarks.load_generator``. The
baseline, measured at the same rates in the same run, is GET /healthz on the same
server: the HTTP stack's own latency. The server executes the runs it accepts, 2 at a
time, in two workloads, each on a fresh server: runs whose step lasts 1 s, as a short
CI step does (the target's case), and runs whose step ends at once, so that the server
executes runs as fast as it accepts them (a stress case).

Event log: :class:`cicd.storage.EventStore` appends events with group commit and
``synchronous=FULL``; the baseline is one ``executemany`` of the same rows into the
same table in one transaction with plain sqlite3, the most SQLite can do.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from benchmarks import load_generator
from benchmarks.measure import REPO_ROOT, BenchmarkResult, Observation, Series

NAME = "server"
TITLE = "Server: run creation latency under load, event-log append throughput"

RATES = tuple(int(r) for r in os.environ.get("CICD_BENCH_RATES", "25,50,100,200").split(","))
# (label suffix, the step each accepted run executes)
WORKLOADS = (("", load_generator.DEFAULT_STEP), (", runs ending at once", "true"))
SECONDS_PER_RATE = 5
EVENTS = 50_000


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _start_server(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), CICD_RUNS_INTAKE_SIZE="100000",
               CICD_RUNS_PER_TENANT_RUNS="2", CICD_RETENTION_INTERVAL="1h")
    process = subprocess.Popen(
        [sys.executable, "-m", "cicd", "-v", "serve", "--port", "0", "--db", str(db),
         "--executor", "local"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(rb"cicd serving on (http://[\d.]+:\d+)", log.read_bytes())
        if match:
            return process, match.group(1).decode()
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start; see {log}")


def _load(url: str, rate: int, path: str, source: str, step: str) -> dict[str, object]:
    if shutil.which("hey"):
        return _load_with_hey(url, rate, path, source, step)
    count = rate * SECONDS_PER_RATE
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_generator", url, "--rate", str(rate),
         "--count", str(count), "--source", source, "--path", path, "--step", step],
        cwd=REPO_ROOT, capture_output=True, check=True, timeout=300)
    return json.loads(output.stdout)  # type: ignore[no-any-return]


# hey's workers tick in step, so N workers send bursts of N requests: few workers keep
# the load close to an even rate. Each worker waits for an answer before its next
# request, so a slow server gets less than the rate asked for: the achieved rate is
# reported.
HEY_WORKERS = 2


def _load_with_hey(url: str, rate: int, path: str, source: str, step: str) -> dict[str, object]:
    """Drive the server with hey (Debian package ``hey``) at ``rate`` requests per second."""
    count = rate * SECONDS_PER_RATE
    command = ["hey", "-n", str(count), "-c", str(HEY_WORKERS), "-q", str(rate / HEY_WORKERS),
               "-o", "csv"]
    if path == "/api/v1/runs":
        body = json.dumps(load_generator.run_request(source, step))
        command += ["-m", "POST", "-T", "application/json", "-d", body]
    started = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run([*command, url + path], capture_output=True, text=True, check=True,
                            timeout=300)
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    last_offset = 0.0
    for line in output.stdout.splitlines()[1:]:
        fields = line.split(",")
        if len(fields) < 8:
            continue
        latencies.append(float(fields[0]))
        statuses[fields[6]] = statuses.get(fields[6], 0) + 1
        last_offset = max(last_offset, float(fields[7]) + float(fields[0]))
    cpu = (finished.ru_utime + finished.ru_stime) - (started.ru_utime + started.ru_stime)
    achieved = len(latencies) / last_offset if last_offset else 0.0
    return {"latencies_s": latencies, "statuses": statuses, "cpu_s": cpu, "tool": "hey",
            "achieved_rate": achieved}


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def measure_creation(result: BenchmarkResult) -> None:
    for workload, step in WORKLOADS:
        with tempfile.TemporaryDirectory(prefix="cicd-bench-") as tmp:
            source = Path(tmp) / "src"
            source.mkdir()
            process, url = _start_server(Path(tmp) / "db", Path(tmp) / "server.log")
            try:
                for rate in RATES:
                    for path, label in (("/healthz", "healthz"), ("/api/v1/runs", "create run")):
                        _measure_rate(result, process.pid, url, rate, path, f"{label}{workload}",
                                      str(source), step)
            finally:
                process.terminate()
                process.wait(timeout=120)


def _measure_rate(result: BenchmarkResult, pid: int, url: str, rate: int, path: str, label: str,
                  source: str, step: str) -> None:
    cpu_before = _process_cpu(pid)
    answer = _load(url, rate, path, source, step)
    server_cpu = _process_cpu(pid) - cpu_before
    latencies = answer["latencies_s"]
    assert isinstance(latencies, list)
    result.series.append(Series(f"{label} at {rate}/s", latencies))
    ok = answer["statuses"]
    result.observations.append(Observation(
        f"{label} at {rate} requests/s ({len(latencies)} requests)",
        f"p50 {_percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p95 {_percentile(latencies, 0.95) * 1000:.1f} ms, "
        f"p99 {_percentile(latencies, 0.99) * 1000:.1f} ms; statuses {ok}; "
        f"achieved {answer.get('achieved_rate', rate):.0f} requests/s; "
        f"server CPU {server_cpu / SECONDS_PER_RATE * 100:.0f}% of a core, "
        f"load generator ({answer.get('tool', 'python')}) CPU "
        f"{answer['cpu_s']:.1f} s",
        {"rate": rate, "path": path, "statuses": ok, "step": step},
    ))


async def _append_events(db: Path, count: int) -> float:
    from cicd.events import model as ev
    from cicd.storage import EventStore

    store = EventStore(db)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append(ev.RunRequested(run_id="bench", pipeline="p", pipeline_yaml="",
                                           source="/", jobs=[], executor="local"), wait=True)
        started = time.perf_counter()
        for index in range(count):
            await store.append(ev.WorkerTerminated(run_id="bench", job="j", worker=f"w{index}"))
        await store.flush()
        elapsed = time.perf_counter() - started
        await store.close()
    return elapsed


def _raw_sqlite(db: Path, count: int) -> float:
    from cicd.events import model as ev
    from cicd.storage import open_database

    conn = open_database(db)
    rows = []
    for index in range(count):
        event = ev.WorkerTerminated(run_id="bench", job="j", worker=f"w{index}")
        rows.append((event.name, 1, "bench", "j", None, event.worker, "bench", "default",
                     event.ts, ev.encode_event(event).decode()))
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (name, version, run_id, job_id, step_id, worker_id,"
                     " correlation_id, tenant_id, ts, body) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def measure_appends(result: BenchmarkResult, repetitions: int) -> None:
    store_rates, raw_rates = [], []
    for _ in range(max(1, min(repetitions, 5))):
        with tempfile.TemporaryDirectory(prefix="cicd-bench-") as tmp:
            store_s = trio.run(_append_events, Path(tmp) / "store.db", EVENTS)
            raw_s = _raw_sqlite(Path(tmp) / "raw.db", EVENTS)
        store_rates.append(EVENTS / store_s)
        raw_rates.append(EVENTS / raw_s)
    store_rate = statistics.median(store_rates)
    raw_rate = statistics.median(raw_rates)
    result.observations.append(Observation(
        f"event-log append, {EVENTS} events (median of {len(store_rates)})",
        f"EventStore {store_rate:,.0f} events/s; raw sqlite3 executemany {raw_rate:,.0f} "
        f"events/s; ratio {store_rate / raw_rate:.2f}",
        {"store_events_per_s": store_rates, "raw_events_per_s": raw_rates},
    ))


def run(repetitions: int = 10) -> BenchmarkResult:
    result = BenchmarkResult(NAME, TITLE)
    measure_appends(result, repetitions)
    measure_creation(result)
    return result


if __name__ == "__main__":
    outcome = run()
    for observation in outcome.observations:
        print(f"{observation.case}: {observation.observed}")
