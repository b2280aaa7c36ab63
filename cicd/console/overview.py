"""Pure statistics of the overview screen: p95 duration and success rate per time bucket."""

from __future__ import annotations

import math

import msgspec

# Windows the overview offers: name -> (length, bucket), in milliseconds.
HOUR_MS = 3_600_000
WINDOWS: dict[str, tuple[int, int]] = {
    "24h": (24 * HOUR_MS, HOUR_MS),
    "7d": (7 * 24 * HOUR_MS, 6 * HOUR_MS),
    "30d": (30 * 24 * HOUR_MS, 24 * HOUR_MS),
}
DEFAULT_WINDOW = "24h"

# Ended states that count in the success rate. Cancelled and skipped runs show nothing
# about whether the pipeline works, so they are left out.
JUDGED_STATES = frozenset({"succeeded", "failed", "timed_out"})


class Bucket(msgspec.Struct, kw_only=True):
    """Runs created in ``[start, start + bucket_ms)``; times in ms since the Unix epoch."""

    start: int
    runs: int = 0
    succeeded: int = 0
    failed: int = 0  # failed and timed out
    p95_duration_ms: int | None = None
    success_rate: float | None = None  # succeeded / (succeeded + failed); None without both


class Overview(msgspec.Struct, kw_only=True):
    window: str
    bucket_ms: int
    now: int
    queued_runs: int  # runs accepted and not started
    queued_jobs: int  # jobs the scheduler could not place yet, in runs that started
    counts: dict[str, int]  # runs created within the window, per state
    buckets: list[Bucket]


def percentile(values: list[int], fraction: float) -> int | None:
    """Return the nearest-rank percentile (``fraction`` 0.95 for p95), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def bucket_runs(rows: list[tuple[int, str, int | None, int | None]], *, now: int,
                window_ms: int, bucket_ms: int) -> list[Bucket]:
    """Group ``(created_at, state, started_at, finished_at)`` rows into time buckets.

    The last bucket ends at ``now``. Durations count from start to finish, and only for
    runs that have both.
    """
    count = window_ms // bucket_ms
    first = now - count * bucket_ms
    buckets = [Bucket(start=first + index * bucket_ms) for index in range(count)]
    durations: list[list[int]] = [[] for _ in range(count)]
    for created_at, state, started_at, finished_at in rows:
        index = (created_at - first) // bucket_ms
        if not 0 <= index < count:
            continue
        bucket = buckets[index]
        bucket.runs += 1
        if state == "succeeded":
            bucket.succeeded += 1
        elif state in JUDGED_STATES:
            bucket.failed += 1
        if started_at is not None and finished_at is not None:
            durations[index].append(finished_at - started_at)
    for bucket, values in zip(buckets, durations, strict=True):
        bucket.p95_duration_ms = percentile(values, 0.95)
        judged = bucket.succeeded + bucket.failed
        bucket.success_rate = bucket.succeeded / judged if judged else None
    return buckets
