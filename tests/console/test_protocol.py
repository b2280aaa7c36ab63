"""The console's pure parts: messages, frames, the shared log tail, changed runs, statistics."""

from __future__ import annotations

import pytest

from cicd.console.overview import bucket_runs, percentile
from cicd.console.protocol import (
    LogEnd,
    ProtocolError,
    Resync,
    RunFilter,
    RunSummary,
    Subscribe,
    Unsubscribe,
    decode_client_message,
    decode_log_frame,
    encode_log_frame,
    encode_message,
    run_matches,
)
from cicd.console.ring import Behind, ChangedRuns, LogRing


def test_decode_subscribe_log() -> None:
    message = decode_client_message(
        '{"type":"subscribe","sub":"s1","topic":"log","run_id":"r","job_id":"j","step":"2",'
        '"offset":10}')
    assert isinstance(message, Subscribe)
    assert (message.topic, message.run_id, message.job_id, message.step, message.offset) == (
        "log", "r", "j", "2", 10)


def test_decode_subscribe_runs_filter() -> None:
    message = decode_client_message(
        '{"type":"subscribe","sub":"a","topic":"runs","filter":{"state":"failed","ref":"main"},'
        '"after":7,"limit":20}')
    assert isinstance(message, Subscribe)
    assert message.filter == RunFilter(state="failed", ref="main")
    assert message.after == 7
    assert message.limit == 20


def test_decode_unsubscribe() -> None:
    assert decode_client_message('{"type":"unsubscribe","sub":"a"}') == Unsubscribe(sub="a")


@pytest.mark.parametrize("text, fragment", [
    ("not json", "not JSON"),
    ('{"type":"shout"}', "invalid message"),
    ('{"type":"subscribe","sub":"a","topic":"logs"}', "invalid message"),
    ('{"type":"subscribe","sub":"a","topic":"runs","extra":1}', "invalid message"),
    ('{"type":"subscribe","sub":"a b","topic":"runs"}', "invalid sub"),
    ('{"type":"subscribe","sub":"a","topic":"run"}', "needs run_id"),
    ('{"type":"subscribe","sub":"a","topic":"log","run_id":"r"}', "needs job_id and step"),
    (('{"type":"subscribe","sub":"a","topic":"log","run_id":"r","job_id":"j","step":"1",'
      '"offset":-1}'), "negative"),
    ('{"type":"subscribe","sub":"a","topic":"runs","limit":0}', "limit 0"),
    ('{"type":"subscribe","sub":"a","topic":"runs","after":-5}', "negative"),
    ("x" * 5000, "over the limit"),
])
def test_decode_rejects_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(text)
    assert fragment in str(caught.value)


def test_log_frame_round_trip_keeps_bytes() -> None:
    data = b"\x1b[31mred\r\n\xff\xfe partial \xe2\x82"
    frame = encode_log_frame("s1", 4096, 9000, data)
    header, body = decode_log_frame(frame)
    assert (header.sub, header.offset, header.size) == ("s1", 4096, 9000)
    assert body == data


def test_log_frame_header_has_no_newline() -> None:
    frame = encode_log_frame('s"\n', 0, 0, b"\n\n")
    assert frame.index(b"\n") == len(frame) - 3


def test_server_messages_are_tagged() -> None:
    assert encode_message(LogEnd(sub="s", size=5)) == '{"type":"log_end","sub":"s","size":5}'
    assert '"type":"resync"' in encode_message(Resync(sub="s", offset=3))


def test_run_matches_every_field() -> None:
    run = RunSummary(id="r", seq=1, number=1, pipeline="app", tenant_id="t1", state="failed", ref="main")
    assert run_matches(run, RunFilter())
    assert run_matches(run, RunFilter(state="failed", pipeline="app", ref="main", tenant="t1"))
    assert not run_matches(run, RunFilter(state="running"))
    assert not run_matches(run, RunFilter(pipeline="other"))
    assert not run_matches(run, RunFilter(ref="dev"))
    assert not run_matches(run, RunFilter(tenant="t2"))


def test_ring_reads_what_was_appended() -> None:
    ring = LogRing(100, capacity=1000)
    ring.append(100, b"hello ")
    ring.append(106, b"world")
    assert ring.read(100, 1000) == (100, b"hello world")
    assert ring.read(103, 4) == (103, b"lo w")
    assert ring.read(111, 10) == (111, b"")


def test_ring_skips_overlap() -> None:
    ring = LogRing(0, capacity=1000)
    ring.append(0, b"abcdef")
    ring.append(3, b"defgh")
    assert ring.read(0, 100) == (0, b"abcdefgh")


def test_ring_drops_oldest_past_capacity() -> None:
    ring = LogRing(0, capacity=10)
    for index in range(10):
        ring.append(index * 4, b"%04d" % index)
    assert ring.end == 40
    assert ring.end - ring.start <= 10 + 4
    written = b"".join(b"%04d" % index for index in range(10))
    assert ring.read(ring.start, 100) == (ring.start, written[ring.start :])
    with pytest.raises(Behind):
        ring.read(0, 10)


def test_ring_restarts_after_gap() -> None:
    ring = LogRing(0, capacity=100)
    ring.append(0, b"head")
    ring.append(50, b"tail")
    assert (ring.start, ring.end) == (50, 54)
    assert ring.read(50, 10) == (50, b"tail")
    with pytest.raises(Behind):
        ring.read(2, 10)


def test_changed_runs_collects_and_resets() -> None:
    changes = ChangedRuns(limit=3)
    assert not changes
    changes.add(5, ["a", "b"])
    changes.add(7, ["a"])
    assert changes
    assert changes.take() == (["a", "b"], 7, False)
    assert not changes


def test_changed_runs_overflow_asks_for_snapshot() -> None:
    changes = ChangedRuns(limit=2)
    changes.add(1, ["a", "b", "c"])
    changes.add(2, ["d"])
    assert changes.take() == ([], 2, True)
    assert changes.take() == ([], 2, False)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([5], 0.95) == 5
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert percentile(list(range(1, 21)), 0.95) == 19


def test_bucket_runs_rates_and_durations() -> None:
    hour = 3_600_000
    now = 10 * hour
    rows = [
        (now - hour + 1, "succeeded", now - hour + 10, now - hour + 1010),
        (now - hour + 2, "failed", now - hour + 10, now - hour + 3010),
        (now - hour + 3, "cancelled", None, None),
        (now - 3 * hour, "succeeded", now - 3 * hour, now - 3 * hour + 500),
        (now - 30 * hour, "succeeded", 0, 1),  # before the window
    ]
    buckets = bucket_runs(rows, now=now, window_ms=4 * hour, bucket_ms=hour)
    assert [bucket.start for bucket in buckets] == [6 * hour, 7 * hour, 8 * hour, 9 * hour]
    last = buckets[-1]
    assert (last.runs, last.succeeded, last.failed) == (3, 1, 1)
    assert last.success_rate == 0.5
    assert last.p95_duration_ms == 3000
    assert buckets[1].p95_duration_ms == 500
    assert buckets[0].success_rate is None
    assert buckets[0].runs == 0
