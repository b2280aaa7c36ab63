"""Open-loop HTTP load from a separate process: ``python3 -m benchmarks.load_generator``.

Sends requests at a fixed rate whatever the answers' speed (each request is due at
``start + i / rate``), and measures each latency from the moment it was due, so a
slow server cannot hide its queueing by slowing the sender. Prints JSON:
``{"latencies_s": [...], "statuses": {...}, "cpu_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

import httpx
import trio

# The step each run executes, by default as long as a short step of a CI job.
DEFAULT_STEP = "sleep 1"


def run_request(source: str, step: str = DEFAULT_STEP) -> dict[str, object]:
    """Return the body of POST /api/v1/runs: one job of one step, ``step``, on ``source``."""
    pipeline = f"jobs:\n  j:\n    image: busybox\n    steps: [{{run: '{step}'}}]\n"
    return {"pipeline_yaml": pipeline, "source": {"dir": source}}


async def generate(url: str, rate: float, count: int, source: str, path: str,
                   step: str = DEFAULT_STEP) -> dict[str, object]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        start = trio.current_time() + 0.2

        async def one(index: int) -> None:
            due = start + index / rate
            await trio.sleep_until(due)
            if path == "/api/v1/runs":
                response = await client.post(path, json=run_request(source, step))
            else:
                response = await client.get(path)
            latencies.append(trio.current_time() - due)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"latencies_s": latencies, "statuses": statuses,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--count", type=int, required=True, help="requests to send")
    parser.add_argument("--source", required=True, help="source directory for the runs")
    parser.add_argument("--path", default="/api/v1/runs", help="POST /api/v1/runs or a GET path")
    parser.add_argument("--step", default=DEFAULT_STEP, help="the command each run executes")
    args = parser.parse_args()
    result = trio.run(generate, args.url, args.rate, args.count, args.source, args.path,
                      args.step)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
