"""The browser console: API query latency, a 100 MB log in Chromium, live latency, CPU.

Four measurements, each against a ``cicd serve`` process of its own:

- queries: a database with 10,000 finished runs (written through the real event store:
  requested, started, ended, spread over 30 days), served with the local executor;
  200 sequential requests per console route from one keep-alive client.
- first screen of a 100 MB log: a real Docker step (``cicd-python:bookworm``) writes
  1,000,000 lines of 100 bytes; headless Chromium opens the log's page. Reported: the
  page's own clock (navigation start to the first lines drawn), and until every byte
  was read and indexed.
- latency: a Docker step prints its clock (``time.time_ns()``) every 20 ms; a WebSocket
  opened inside Chromium records when each line arrives (same host clock).
- CPU: a Docker step writes 1 MB/s of 80-byte lines for 25 s; a load generator process
  (``python3 -m benchmarks.console --load``) follows it with 100 WebSocket clients,
  once with trio-websocket clients that offer no extension and once with wsproto
  clients that offer permessage-deflate as browsers do (``--deflate``). The server's
  CPU time (from /proc) over 10 s of steady output is compared with the same step
  followed by no client. The generator reports its own CPU.

Run it with ``python3 -m benchmarks console``. It needs Docker with the test images
(``bash .ci/docker-setup``), Chromium at /usr/bin/chromium and Playwright.
``python3 -m benchmarks.console --cpu`` runs only the CPU measurement and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks.measure import REPO_ROOT, BenchmarkError, BenchmarkResult, Observation, Series

NAME = "console"
TITLE = "Browser console: queries over 10,000 runs, a 100 MB log, live latency, CPU"

PYTHON_IMAGE = os.environ.get("CICD_TEST_PYTHON_IMAGE", "cicd-python:bookworm")
CHROMIUM = os.environ.get("CICD_TEST_CHROMIUM", "/usr/bin/chromium")
RUNS = 10_000
QUERY_REQUESTS = 200
CLIENTS = 100
CPU_WINDOW_SECONDS = 10.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _start_server(db: Path, log: Path, executor: str) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), CICD_STORAGE_LOG_LIMIT="200M",
               CICD_RETENTION_INTERVAL="1h")
    process = subprocess.Popen(
        [sys.executable, "-m", "cicd", "serve", "--port", "0", "--db", str(db),
         "--executor", executor], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(rb"cicd serving on (http://[\d.]+:\d+)", log.read_bytes())
        if match:
            return process, match.group(1).decode()
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise BenchmarkError(f"the server did not start; see {log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- queries over 10,000 runs ------------------------------------------------------


async def _write_history(db: Path) -> None:
    from cicd.events import model as ev
    from cicd.storage import EventStore

    store = EventStore(db)
    now = int(time.time() * 1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for index in range(RUNS):
            created = now - (RUNS - index) * 259_000  # 10,000 runs over 30 days
            run_id = f"bench{index:06d}"
            common = {"run_id": run_id, "tenant_id": f"team{index % 3}"}
            await store.append(ev.RunRequested(
                **common, pipeline=f"app{index % 5}", pipeline_yaml="", source="/src",
                jobs=[], executor="local", source_kind="git",
                source_ref="main" if index % 4 else "release", ts=created))
            await store.append(ev.RunStarted(**common, ts=created + 1000))
            ended = created + 1000 + 20_000 + (index * 7919) % 300_000
            if index % 10 == 0:
                await store.append(ev.RunFailed(**common, reason="exit 1", ts=ended))
            else:
                await store.append(ev.RunCompleted(**common, ts=ended))
        await store.flush()
        await store.close()


def measure_queries(result: BenchmarkResult, tmp: Path) -> None:
    db = tmp / "history.db"
    trio.run(_write_history, db)
    process, url = _start_server(db, tmp / "queries.log", "local")
    routes = {
        "runs, newest 100": "/api/v1/console/runs",
        "runs, state=failed": "/api/v1/console/runs?state=failed",
        "runs, pipeline and tenant": "/api/v1/console/runs?pipeline=app3&tenant=team1",
        "runs, ref=release": "/api/v1/console/runs?ref=release",
        "overview, 30 days": "/api/v1/console/overview?window=30d",
        "run list of the API (50 documents)": "/api/v1/runs",
    }
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for label, path in routes.items():
                client.get(path).raise_for_status()  # warm-up
                samples = []
                for _ in range(QUERY_REQUESTS):
                    started = time.perf_counter()
                    client.get(path).raise_for_status()
                    samples.append(time.perf_counter() - started)
                result.series.append(Series(f"query: {label}", samples))
                result.observations.append(Observation(
                    f"GET {path} with {RUNS} runs ({QUERY_REQUESTS} requests)",
                    f"p50 {_percentile(samples, 0.5) * 1000:.1f} ms, "
                    f"p95 {_percentile(samples, 0.95) * 1000:.1f} ms (target p95 < 50 ms)",
                    {"path": path}))
    finally:
        _stop(process)


# --- Docker runs and the browser ---------------------------------------------------


def _python_step(code: str) -> str:
    indented = "".join(f"          {line}\n" for line in code.strip().splitlines())
    return (f"version: 1\nname: console-bench\njobs:\n  main:\n    image: {PYTHON_IMAGE}\n"
            f"    steps:\n      - run: |\n          python3 - <<'EOF'\n{indented}          EOF\n")


def _submit(url: str, source: Path, code: str) -> str:
    response = httpx.post(f"{url}/api/v1/runs", timeout=30, json={
        "source": {"dir": str(source)}, "pipeline_yaml": _python_step(code)})
    if response.status_code != 201:
        raise BenchmarkError(f"submitting a run failed: {response.text}")
    return str(response.json()["id"])


def _wait_state(url: str, run_id: str, states: set[str], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/api/v1/runs/{run_id}", timeout=30).json()["state"]
        if state in states:
            return str(state)
        time.sleep(0.1)
    raise BenchmarkError(f"run {run_id} did not reach {states} in {timeout:g} s")


BIG_LOG = """
import sys
out = sys.stdout.buffer
for block in range(1000):
    lines = []
    for i in range(block * 1000, block * 1000 + 1000):
        if i % 10 == 0:
            lines.append(b"\\x1b[32m%08d ok\\x1b[0m " % i + b"y" * 83 + b"\\n")
        else:
            lines.append(b"%08d " % i + b"x" * 90 + b"\\n")
    out.write(b"".join(lines))
out.flush()
"""

CLOCK = """
import sys, time
for _ in range(750):
    sys.stdout.write("%d\\n" % time.time_ns()); sys.stdout.flush(); time.sleep(0.02)
"""

# 80-byte lines like a build's: a line number, a level, words, a path and 16 random hex
# digits. zlib level 1 compresses them about 2.7 times (a line of one repeated letter
# would compress hundreds of times and flatter permessage-deflate).
STREAM = """
import random, sys, time
rng = random.Random(7)
words = ["compiling", "linking", "warning:", "ok", "PASSED", "FAILED", "downloading",
         "cache", "hit", "miss", "step", "build", "test", "module", "target", "done"]
levels = ["INFO", "DEBUG", "WARN"]
lines = []
for index in range(20000):
    text = (f"{index:08d} [{rng.choice(levels)}] src/{rng.choice(words)}/{index % 97}.py "
            f"{rng.getrandbits(64):016x} " + " ".join(rng.choice(words) for _ in range(6)))
    lines.append((text[:79].ljust(79) + "\\n").encode())
start = time.monotonic()
for tick in range(2500):
    first = tick * 125 % len(lines)
    sys.stdout.buffer.write(b"".join(lines[first:first + 125])); sys.stdout.flush()
    time.sleep(max(0.0, start + (tick + 1) * 0.01 - time.monotonic()))
"""

# Runs in the page: subscribe to a step's log and record when each line arrives.
LATENCY_SCRIPT = """
([runId, seconds]) => new Promise((resolve) => {
  const socket = new WebSocket(`ws://${location.host}/api/v1/console`);
  socket.binaryType = "arraybuffer";
  const decoder = new TextDecoder();
  const latencies = [];
  let partial = "";
  const started = Date.now();
  socket.onmessage = (event) => {
    const now = Date.now();
    if (typeof event.data === "string") {
      if (JSON.parse(event.data).type === "hello") {
        socket.send(JSON.stringify({type: "subscribe", sub: "l", topic: "log", run_id: runId,
                                    job_id: "main", step: "1", offset: 0}));
      }
      return;
    }
    const bytes = new Uint8Array(event.data);
    const text = partial + decoder.decode(bytes.subarray(bytes.indexOf(10) + 1));
    const lines = text.split("\\n");
    partial = lines.pop();
    for (const line of lines) {
      const written = Number(line) / 1e6;
      if (written > started + 500) latencies.push(now - written);
    }
  };
  setTimeout(() => { socket.close(); resolve(latencies); }, seconds * 1000);
})
"""


def measure_browser(result: BenchmarkResult, url: str, source: Path) -> None:
    from playwright.sync_api import sync_playwright

    big = _submit(url, source, BIG_LOG)
    _wait_state(url, big, {"succeeded"})
    size = int(httpx.get(f"{url}/api/v1/console/runs/{big}/jobs/main/steps/1/log",
                         params={"limit": 0}).headers["X-Log-Size"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-background-networking"])
        first_screens, loads, jumps = [], [], []
        for _ in range(5):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/#/runs/{big}/jobs/main/steps/1")
            page.wait_for_selector("#log-viewport[data-first-screen]", timeout=60_000)
            first_screens.append(float(page.get_attribute("#log-viewport", "data-first-screen")
                                       or 0) / 1000)
            page.wait_for_selector("#log-viewport[data-loaded]", timeout=120_000)
            loads.append(page.evaluate("performance.now()") / 1000)
            started = time.perf_counter()
            page.evaluate(f"location.hash = '#/runs/{big}/jobs/main/steps/1/L500000'")
            page.wait_for_selector("#L500000", timeout=30_000)
            jumps.append(time.perf_counter() - started)
            page.close()
        result.series.append(Series("100 MB log: first screen", first_screens))
        result.series.append(Series("100 MB log: all lines indexed", loads))
        result.series.append(Series("100 MB log: jump to line 500,000", jumps))
        result.observations.append(Observation(
            f"a log of {size:,} bytes and 1,000,000 lines opened 5 times in Chromium",
            f"first screen median {sorted(first_screens)[2] * 1000:.0f} ms, max "
            f"{max(first_screens) * 1000:.0f} ms (target < 1 s); every line read and indexed "
            f"after median {sorted(loads)[2]:.1f} s; jump to line 500,000 median "
            f"{sorted(jumps)[2] * 1000:.0f} ms", {"size": size}))

        clock = _submit(url, source, CLOCK)
        _wait_state(url, clock, {"running"})
        page = browser.new_page()
        page.goto(url + "/")
        latencies = page.evaluate(LATENCY_SCRIPT, [clock, 12])
        measure_log_scroll(result, browser, url, big)
        browser.close()
    _wait_state(url, clock, {"succeeded"})
    if not latencies:
        raise BenchmarkError("the browser received no timed lines")
    result.series.append(Series("container line to browser", [value / 1000 for value in latencies]))
    result.observations.append(Observation(
        f"container writes a line every 20 ms, browser receives it ({len(latencies)} lines)",
        f"p50 {_percentile(latencies, 0.5):.0f} ms, p95 {_percentile(latencies, 0.95):.0f} ms, "
        f"max {max(latencies):.0f} ms (target p95 < 250 ms)", {}))


def measure_log_scroll(result: BenchmarkResult, browser: Any, url: str, run_id: str) -> None:
    """Time scrolling in the log view of a finished step (BIG_LOG's 1,000,000 lines).

    Each sample runs in the page: from setting the view's ``scrollTop`` until the line at
    that position is in the page and one more frame was drawn. Measured: jumps to 10%,
    50% and 90% of the log, then 20 scrolls of 100 px from the middle. ``browser`` is a
    Playwright Chromium browser.
    """
    scroll = """
    async (fraction) => {
      const viewport = document.getElementById("log-viewport");
      const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
      const top = fraction === null ? viewport.scrollTop + 100
        : Math.floor((viewport.scrollHeight - viewport.clientHeight) * fraction);
      const line = Math.floor(top / 18) + 1;
      const started = performance.now();
      viewport.scrollTop = top;
      while (!document.getElementById(`L${line}`)) await frame();
      await frame();
      return performance.now() - started;
    }
    """
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector("#log-viewport[data-loaded]", timeout=120_000)
    jumps = [page.evaluate(scroll, fraction) / 1000 for fraction in (0.1, 0.5, 0.9)]
    page.evaluate(scroll, 0.5)
    steps = [page.evaluate(scroll, None) / 1000 for _ in range(20)]
    lines = page.text_content("#log-status")
    page.close()
    result.series.append(Series("100 MB log: scroll 100 px", steps))
    result.observations.append(Observation(
        f"scrolling a finished log in Chromium ({lines})",
        f"jumps to 10%, 50% and 90%: {', '.join(f'{value * 1000:.0f}' for value in jumps)} ms; "
        f"100 px scrolls from the middle: median {_percentile(steps, 0.5) * 1000:.0f} ms, "
        f"max {max(steps) * 1000:.0f} ms", {}))


def measure_cpu(result: BenchmarkResult, url: str, server_pid: int, source: Path) -> None:
    """Measure the server's CPU with no client, with clients that negotiate no
    extension, and with clients that negotiate permessage-deflate as browsers do."""
    figures = {}
    for case, clients in (("none", 0), ("plain", CLIENTS), ("deflate", CLIENTS)):
        run_id = _submit(url, source, STREAM)
        _wait_state(url, run_id, {"running"})
        load = None
        if clients:
            load = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.console", "--load", url, run_id,
                 "--clients", str(clients), "--seconds", "22",
                 *(["--deflate"] if case == "deflate" else [])],
                cwd=REPO_ROOT, stdout=subprocess.PIPE)
        time.sleep(5)
        before = _process_cpu(server_pid)
        time.sleep(CPU_WINDOW_SECONDS)
        share = (_process_cpu(server_pid) - before) / CPU_WINDOW_SECONDS
        report: dict[str, Any] = {}
        if load is not None:
            output, _ = load.communicate(timeout=120)
            report = json.loads(output)
        _wait_state(url, run_id, {"succeeded"})
        figures[case] = (share, report)
    idle_share = figures["none"][0]
    for case, label in (("plain", "without permessage-deflate"),
                        ("deflate", "with permessage-deflate")):
        share, report = figures[case]
        result.observations.append(Observation(
            f"a step writes 1 MB/s of 80-byte lines; {CLIENTS} WebSocket clients {label} "
            "follow it",
            f"server CPU {share * 100:.1f}% of a core with the clients, "
            f"{idle_share * 100:.1f}% with none, so the clients cost "
            f"{(share - idle_share) * 100:.1f}% (target: under 10% with the clients); "
            f"load generator CPU "
            f"{report.get('cpu_s', 0) / report.get('seconds', 1) * 100:.0f}% of a core; "
            f"each client received {report.get('min_bytes', 0):,} to "
            f"{report.get('max_bytes', 0):,} bytes of messages, "
            f"{report.get('wire_bytes', 0) / CLIENTS:,.0f} bytes from its socket on average; "
            f"{report.get('resyncs', 0)} resyncs",
            {"server_share": share, "idle_share": idle_share, "load": report}))


def run_cpu() -> BenchmarkResult:
    """Run only the CPU measurement, against a server of its own."""
    result = BenchmarkResult(NAME, TITLE)
    with tempfile.TemporaryDirectory(prefix="cicd-bench-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        process, url = _start_server(Path(tmp) / "db", Path(tmp) / "server.log", "docker")
        try:
            measure_cpu(result, url, process.pid, source)
        finally:
            _stop(process)
    return result


def run(repetitions: int = 10) -> BenchmarkResult:
    del repetitions  # each measurement sets its own count
    result = BenchmarkResult(NAME, TITLE)
    with tempfile.TemporaryDirectory(prefix="cicd-bench-") as tmp:
        measure_queries(result, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="cicd-bench-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        process, url = _start_server(Path(tmp) / "db", Path(tmp) / "server.log", "docker")
        try:
            measure_browser(result, url, source)
            measure_cpu(result, url, process.pid, source)
        finally:
            _stop(process)
    return result


# --- the load generator ------------------------------------------------------------


async def _client(url: str, run_id: str, totals: dict[str, int], index: int) -> None:
    from trio_websocket import open_websocket_url

    ws_url = url.replace("http://", "ws://") + "/api/v1/console"
    async with open_websocket_url(ws_url, max_message_size=1 << 21) as socket:
        await socket.get_message()
        await socket.send_message(json.dumps({
            "type": "subscribe", "sub": "l", "topic": "log", "run_id": run_id,
            "job_id": "main", "step": "1", "offset": 0}))
        while True:
            message = await socket.get_message()
            if isinstance(message, bytes):
                totals[f"bytes{index}"] = totals.get(f"bytes{index}", 0) + len(message)
            elif '"resync"' in message:
                totals["resyncs"] = totals.get("resyncs", 0) + 1
            elif '"log_end"' in message:
                return


async def _deflate_client(url: str, run_id: str, totals: dict[str, int], index: int) -> None:
    """Follow the log as a browser does: offer permessage-deflate and decompress what
    the server compressed. wsproto's default offer ends with 15-bit windows both ways,
    as Chromium's does."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Ping,
        Request,
        TextMessage,
    )
    from wsproto.extensions import PerMessageDeflate

    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    connection = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(connection.send(Request(
        host=f"{host}:{port}", target="/api/v1/console", extensions=[PerMessageDeflate()])))
    text = ""
    while True:
        data = await stream.receive_some(1 << 18)
        if not data:
            raise BenchmarkError(f"client {index}: the server closed the connection")
        totals["wire_bytes"] = totals.get("wire_bytes", 0) + len(data)
        connection.receive_data(data)
        for event in connection.events():
            if isinstance(event, AcceptConnection):
                if not event.extensions:
                    raise BenchmarkError("the server did not accept permessage-deflate")
                await stream.send_all(connection.send(TextMessage(data=json.dumps({
                    "type": "subscribe", "sub": "l", "topic": "log", "run_id": run_id,
                    "job_id": "main", "step": "1", "offset": 0}))))
            elif isinstance(event, BytesMessage):
                totals[f"bytes{index}"] = totals.get(f"bytes{index}", 0) + len(event.data)
            elif isinstance(event, TextMessage):
                text += event.data
                if not event.message_finished:
                    continue
                if '"resync"' in text:
                    totals["resyncs"] = totals.get("resyncs", 0) + 1
                elif '"log_end"' in text:
                    return
                text = ""
            elif isinstance(event, Ping):
                await stream.send_all(connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise BenchmarkError(f"client {index}: the server closed the WebSocket "
                                     f"with {event.code} {event.reason}")


async def _load(url: str, run_id: str, clients: int, seconds: float,
                deflate: bool) -> dict[str, Any]:
    totals: dict[str, int] = {}
    started = time.process_time()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(_deflate_client if deflate else _client, url, run_id,
                                   totals, index)
    received = [totals.get(f"bytes{index}", 0) for index in range(clients)]
    return {"cpu_s": time.process_time() - started, "seconds": seconds,
            "min_bytes": min(received), "max_bytes": max(received),
            # trio-websocket does not expose its socket, so plain clients count messages.
            "wire_bytes": totals.get("wire_bytes", sum(received)),
            "resyncs": totals.get("resyncs", 0)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.console")
    parser.add_argument("--load", nargs=2, metavar=("URL", "RUN_ID"),
                        help="be the load generator: follow RUN_ID's log on URL")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--deflate", action="store_true",
                        help="load generator: offer permessage-deflate as browsers do "
                             "(wsproto clients) instead of no extension (trio-websocket)")
    parser.add_argument("--cpu", action="store_true",
                        help="run only the server CPU measurement (no client, then --clients)")
    args = parser.parse_args(argv)
    if args.load:
        url, run_id = args.load
        print(json.dumps(trio.run(_load, url, run_id, args.clients, args.seconds,
                                  args.deflate)))
        return 0
    outcome = run_cpu() if args.cpu else run()
    for observation in outcome.observations:
        print(f"{observation.case}: {observation.observed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
