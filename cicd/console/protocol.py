"""The console's WebSocket protocol, version 1: message types and their encoding.

Pure: no I/O. The client sends JSON text messages (:data:`ClientMessage`). The server
sends JSON text messages for state and control, and binary messages for step output.
A binary message is a JSON header (:class:`LogFrame`), one newline byte, then the raw
output bytes. JSON encoding never produces a raw newline, so the first newline ends
the header.
"""

from __future__ import annotations

import re
import zlib
from typing import Literal

import msgspec

PROTOCOL_VERSION = 1

# The server sends a ping message this often, so the browser can tell a dead
# connection (no message for three intervals) from a quiet one.
PING_INTERVAL_SECONDS = 15.0
# Live output of one subscription is sent at most this often; a backlog goes out in
# frames of up to MAX_FRAME_BYTES as fast as the client reads them.
FRAME_INTERVAL_SECONDS = 0.1
MAX_FRAME_BYTES = 256 * 1024
# Runs (and a run) changed by new events are re-read and sent at most this often.
STATE_INTERVAL_SECONDS = 0.1
MAX_SUBSCRIPTIONS = 16
MAX_RUNS_LIMIT = 500
DEFAULT_RUNS_LIMIT = 100
MAX_CLIENT_MESSAGE_BYTES = 4096
# The zlib level of messages sent compressed (permessage-deflate, RFC 7692). On
# 100 KB of 80-byte lines with 16 random hex digits each, level 1 compressed about 2.7
# to 2.9 times at about 120 MB/s, and level 6 about 3.6 times at about 30 MB/s (one
# core of the machine in docs/benchmarks.md). A log frame is compressed once for all
# its clients.
DEFLATE_LEVEL = 1

_SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,32}")

Topic = Literal["runs", "run", "log", "nodes"]


class RunFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Which runs a runs subscription lists; an empty field matches every run."""

    state: str = ""
    pipeline: str = ""
    ref: str = ""
    tenant: str = ""


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", kw_only=True,
                forbid_unknown_fields=True, frozen=True):
    """Start a subscription named ``sub`` (chosen by the client, unique per connection)."""

    sub: str
    topic: Topic
    filter: RunFilter = msgspec.field(default_factory=RunFilter)
    limit: int = DEFAULT_RUNS_LIMIT  # runs: how many of the newest matching runs
    after: int | None = None  # runs, run: the last event id the client has seen
    run_id: str = ""  # run, log
    job_id: str = ""  # log
    step: str = ""  # log: 1-based index or step name
    offset: int = 0  # log: the first byte the client wants


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", kw_only=True,
                  forbid_unknown_fields=True, frozen=True):
    sub: str


class Pong(msgspec.Struct, tag="pong", tag_field="type", kw_only=True, frozen=True):
    """The client's optional reply to a ping, which the server ignores."""

    ts: int = 0


ClientMessage = Subscribe | Unsubscribe | Pong

_CLIENT_DECODER = msgspec.json.Decoder(ClientMessage)


class ProtocolError(ValueError):
    """A client message that is not valid JSON, not a known type, or has invalid fields."""


def decode_client_message(text: str | bytes) -> ClientMessage:
    """Decode and validate one client message; raise :class:`ProtocolError` when invalid."""
    if len(text) > MAX_CLIENT_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(text)} bytes is over the limit of "
                            f"{MAX_CLIENT_MESSAGE_BYTES}")
    try:
        message = _CLIENT_DECODER.decode(text)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"message is not JSON: {exc}") from None
    if isinstance(message, (Subscribe, Unsubscribe)) and not _SUBSCRIPTION_ID.fullmatch(
            message.sub):
        raise ProtocolError(f"invalid sub {message.sub!r}: use 1 to 32 letters, digits or "
                            "'_', '.', ':', '-'")
    if isinstance(message, Subscribe):
        _check_subscribe(message)
    return message


def _check_subscribe(message: Subscribe) -> None:
    if message.topic in ("run", "log") and not message.run_id:
        raise ProtocolError(f"subscription {message.sub}: topic {message.topic} needs run_id")
    if message.topic == "log" and (not message.job_id or not message.step):
        raise ProtocolError(f"subscription {message.sub}: topic log needs job_id and step")
    if message.offset < 0:
        raise ProtocolError(f"subscription {message.sub}: offset {message.offset} is negative")
    if message.after is not None and message.after < 0:
        raise ProtocolError(f"subscription {message.sub}: after {message.after} is negative")
    if not 1 <= message.limit <= MAX_RUNS_LIMIT:
        raise ProtocolError(f"subscription {message.sub}: limit {message.limit} must be 1 to "
                            f"{MAX_RUNS_LIMIT}")


# --- server messages --------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", tag_field="type", kw_only=True):
    protocol: int = PROTOCOL_VERSION
    ping_interval_ms: int = int(PING_INTERVAL_SECONDS * 1000)
    frame_interval_ms: int = int(FRAME_INTERVAL_SECONDS * 1000)


class RunSummary(msgspec.Struct, kw_only=True):
    """One line of the runs list. Times are milliseconds since the Unix epoch.

    ``seq`` orders runs as the server accepted them (higher is newer); ids chosen by
    clients do not sort by time.
    """

    id: str
    seq: int
    number: int
    pipeline: str
    tenant_id: str
    state: str
    reason: str = ""
    source: str = ""
    ref: str = ""
    commit: str = ""
    trigger: str = ""
    created_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    duration_ms: int | None = None


class RunsSnapshot(msgspec.Struct, tag="runs_snapshot", tag_field="type", kw_only=True):
    """The whole list: the newest matching runs and the counts per state."""

    sub: str
    event_id: int
    runs: list[RunSummary]
    counts: dict[str, int]


class RunsChanged(msgspec.Struct, tag="runs_changed", tag_field="type", kw_only=True):
    """Runs changed up to ``event_id``: ``runs`` match the filter, ``removed`` no longer do."""

    sub: str
    event_id: int
    runs: list[RunSummary]
    removed: list[str]
    counts: dict[str, int]


class RunChanged(msgspec.Struct, tag="run", tag_field="type", kw_only=True):
    """The run document (``cicd.orchestration.documents.RunDocument``) as of ``event_id``."""

    sub: str
    event_id: int
    run: msgspec.Raw


class LogFrame(msgspec.Struct, tag="log", tag_field="type", kw_only=True):
    """The header of a binary message: the bytes after it start at ``offset``."""

    sub: str
    offset: int
    size: int  # bytes the step has written so far, as stored when the frame was built


class LogEnd(msgspec.Struct, tag="log_end", tag_field="type", kw_only=True):
    """The step has ended and every byte up to ``size`` was sent."""

    sub: str
    size: int


class Resync(msgspec.Struct, tag="resync", tag_field="type", kw_only=True):
    """The subscription ended because the client fell behind; subscribe again from here.

    For a log, ``offset`` is the first byte not sent. For runs, ``event_id`` is the
    last event applied; a new subscription sends a fresh snapshot.
    """

    sub: str
    offset: int | None = None
    event_id: int | None = None
    reason: str = ""


class Nodes(msgspec.Struct, tag="nodes", tag_field="type", kw_only=True):
    sub: str
    nodes: msgspec.Raw


class ErrorMessage(msgspec.Struct, tag="error", tag_field="type", kw_only=True):
    """A subscription failed (or, without ``sub``, a message was invalid)."""

    code: str
    message: str
    sub: str | None = None


class Ping(msgspec.Struct, tag="ping", tag_field="type", kw_only=True):
    ts: int


ServerMessage = (Hello | RunsSnapshot | RunsChanged | RunChanged | LogEnd | Resync | Nodes
                 | ErrorMessage | Ping)

_ENCODER = msgspec.json.Encoder()


def encode_message(message: ServerMessage) -> str:
    return _ENCODER.encode(message).decode()


def encode_log_frame(sub: str, offset: int, size: int, data: bytes, *,
                     websocket: bool = False, deflate_bits: int | None = None) -> bytes:
    """Return one binary message: the JSON header, a newline, then ``data`` unchanged.

    With ``websocket``, return it as a whole server-to-client WebSocket frame (see
    :func:`websocket_frame`), built with a single copy of ``data``. With
    ``deflate_bits`` as well, the frame's payload is instead the message compressed on
    its own with that window size.
    """
    header = _ENCODER.encode(LogFrame(sub=sub, offset=offset, size=size))
    if not websocket:
        return b"".join((header, b"\n", data))
    return websocket_frame((header, b"\n", data), binary=True, deflate_bits=deflate_bits)


def websocket_frame(parts: tuple[bytes, ...], *, binary: bool,
                    deflate_bits: int | None = None) -> bytes:
    """Return one unmasked, final WebSocket frame whose message is ``parts`` joined.

    RFC 6455 section 5.2: FIN, the opcode (1 text, 2 binary), then the length in 7
    bits, or 126 and 16 bits, or 127 and 64 bits (network byte order). With
    ``deflate_bits`` (9 to 15), the payload is the message compressed as RFC 7692
    section 7.2.1 specifies, with RSV1 set. The compressor is new for each message, so the
    payload refers to no earlier message and is valid on every connection that
    negotiated permessage-deflate with a ``server_max_window_bits`` of at least
    ``deflate_bits``, with or without context takeover.
    """
    first = 0x82 if binary else 0x81
    if deflate_bits is not None:
        parts = (deflate_message(parts, deflate_bits),)
        first |= 0x40  # RSV1: the message is compressed
    length = sum(len(part) for part in parts)
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = bytes((first, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + length.to_bytes(8, "big")
    return b"".join((header, *parts))


def deflate_message(parts: tuple[bytes, ...], window_bits: int) -> bytes:
    """Compress one message as raw DEFLATE with a ``window_bits`` window, ending with
    a sync flush whose final ``00 00 ff ff`` is removed (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -window_bits)
    pieces = [compressor.compress(part) for part in parts]
    pieces.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    compressed = b"".join(pieces)
    if not compressed.endswith(b"\x00\x00\xff\xff"):
        raise AssertionError("a zlib sync flush did not end with 00 00 ff ff")
    return compressed[:-4]


def decode_log_frame(message: bytes) -> tuple[LogFrame, bytes]:
    """Split a binary message into its header and data (the inverse of encode_log_frame)."""
    newline = message.index(b"\n")
    return msgspec.json.decode(message[:newline], type=LogFrame), message[newline + 1 :]


def run_matches(run: RunSummary, wanted: RunFilter) -> bool:
    """Return True when ``run`` passes every non-empty field of ``wanted``."""
    return ((not wanted.state or run.state == wanted.state)
            and (not wanted.pipeline or run.pipeline == wanted.pipeline)
            and (not wanted.ref or run.ref == wanted.ref)
            and (not wanted.tenant or run.tenant_id == wanted.tenant))
