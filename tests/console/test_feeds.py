"""The frames a log feed shares between its clients: cut at the ends of its ticks, and
encoded once however late a client reads them."""

from __future__ import annotations

import pytest

from cicd.console import feeds
from cicd.console.feeds import LogFeed
from cicd.console.protocol import MAX_FRAME_BYTES, decode_log_frame
from cicd.console.ring import Behind


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record (offset, length) of every frame the feeds module encodes."""
    calls: list[tuple[int, int]] = []
    encode = feeds.encode_log_frame

    def record(sub: str, offset: int, size: int, data: bytes, **options: object) -> bytes:
        calls.append((offset, len(data)))
        return encode(sub, offset, size, data, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(feeds, "encode_log_frame", record)
    return calls


def grow(feed: LogFeed, data: bytes) -> None:
    """Append ``data`` to the feed's tail as one read of the store would."""
    feed._append([(feed.ring.end + 1, feed.ring.end, data)])


def tick(feed: LogFeed) -> None:
    feed.tick_end = feed.ring.end
    feed.ticks += 1


def test_frame_stops_at_tick_end(encodes: list[tuple[int, int]]) -> None:
    feed = LogFeed(("run", "job", 1), 0, 0)
    grow(feed, b"a" * 100)

    assert feed.frame("s", 0, MAX_FRAME_BYTES) == (0, 0, b"")
    tick(feed)
    grow(feed, b"b" * 50)
    start, length, encoded = feed.frame("s", 0, MAX_FRAME_BYTES)
    header, data = decode_log_frame(encoded)

    assert (start, length) == (0, 100)
    assert data == b"a" * 100
    assert header.size == 150  # the tail's end when the frame was encoded
    assert feed.frame("s", 100, MAX_FRAME_BYTES) == (100, 0, b"")


def test_late_reader_gets_frames_of_past_ticks(encodes: list[tuple[int, int]]) -> None:
    feed = LogFeed(("run", "job", 1), 0, 0)
    grow(feed, b"a" * 100)
    tick(feed)
    first = feed.frame("s", 0, MAX_FRAME_BYTES)
    grow(feed, b"b" * 100)
    tick(feed)
    second = feed.frame("s", 100, MAX_FRAME_BYTES)

    # A client one tick behind sends the first tick's frame again, then the second.
    assert feed.frame("s", 0, MAX_FRAME_BYTES) is first
    assert feed.frame("s", 100, MAX_FRAME_BYTES) is second
    assert encodes == [(0, 100), (100, 100)]


def test_frames_differ_per_sub_and_window(encodes: list[tuple[int, int]]) -> None:
    feed = LogFeed(("run", "job", 1), 0, 0)
    grow(feed, b"a" * 100)
    tick(feed)
    feed.frame("s", 0, MAX_FRAME_BYTES)
    feed.frame("t", 0, MAX_FRAME_BYTES)
    feed.frame("s", 0, MAX_FRAME_BYTES, websocket=True)
    feed.frame("s", 0, MAX_FRAME_BYTES, websocket=True, deflate_bits=15)
    feed.frame("s", 0, MAX_FRAME_BYTES, websocket=True, deflate_bits=15)

    assert len(encodes) == 4


def test_shared_frames_are_bounded(encodes: list[tuple[int, int]]) -> None:
    feed = LogFeed(("run", "job", 1), 0, 0)
    for _ in range(feeds.MAX_SHARED_FRAMES + 4):
        start = feed.ring.end
        grow(feed, b"x" * 10)
        tick(feed)
        feed.frame("s", start, MAX_FRAME_BYTES)

    assert len(feed._frames) == feeds.MAX_SHARED_FRAMES
    # The oldest frames went first: reading from offset 0 encodes again.
    feed.frame("s", 0, MAX_FRAME_BYTES)
    assert encodes[-1] == (0, 10 * (feeds.MAX_SHARED_FRAMES + 4))


def test_frame_behind_tail_raises_though_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "RING_BYTES", 100)
    feed = LogFeed(("run", "job", 1), 0, 0)
    grow(feed, b"a" * 100)
    tick(feed)
    kept = feed.frame("s", 0, MAX_FRAME_BYTES)
    grow(feed, b"b" * 100)

    assert feed.ring.start == 100
    # A live client this far behind reads the store (and gets a resync) ...
    with pytest.raises(Behind):
        feed.frame("s", 0, MAX_FRAME_BYTES)
    # ... while a client that starts from offset 0 may send the kept frame.
    assert feed.shared_frame("s", 0, MAX_FRAME_BYTES) is kept


def test_shared_stored_frame_is_kept_per_window() -> None:
    feed = LogFeed(("run", "job", 1), 0, 1000)
    stored = (0, 3, b"abc")
    feed.share_frame("s", 0, MAX_FRAME_BYTES, stored, websocket=True, deflate_bits=15)

    assert feed.shared_frame("s", 0, MAX_FRAME_BYTES, websocket=True,
                             deflate_bits=15) is stored
    assert feed.shared_frame("s", 0, MAX_FRAME_BYTES, websocket=True) is None
    assert feed.shared_frame("s", 0, MAX_FRAME_BYTES, websocket=True,
                             deflate_bits=12) is None
