"""Routes for a step's output: a byte slice or range, a followed stream, and a WebSocket.

Offsets count bytes of the step's output from its start, dropped bytes included, so an
offset stays valid while the step writes and after the middle of a long output was
truncated. A client resumes by asking again from the last offset it has.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from quart import Blueprint, Response, request, websocket

from cicd.api.contract import RunServiceProtocol
from cicd.api.guard import REQUEST_ID_HEADER
from cicd.api.params import ByteRange, Query, parse_range
from cicd.api.responses import ENCODER, ApiError
from cicd.api.state import current_request_id, current_service
from cicd.api.streaming import aclose_iterator, stream_to_websocket
from cicd.errors import CicdError
from cicd.orchestration.documents import LogSlice, gap_marker

logger = logging.getLogger("cicd.api")

logs = Blueprint("logs", __name__)

LOG_PATH = "/runs/<run_id>/jobs/<job_id>/steps/<step>/log"
OCTETS = "application/octet-stream"

# trio-websocket clients reject messages over 1 MiB unless they raise max_message_size.
# Smaller messages also let a slow client apply backpressure sooner.
MAX_MESSAGE_BYTES = 64 * 1024


async def _read_whole(service: RunServiceProtocol, run_id: str, job_id: str,
                      step: str) -> Response:
    """Return a plain GET's response: every stored byte, a marker line at each gap.

    Reads with an offset, a limit or a range return the stored bytes alone and stop at
    a gap, so offsets keep counting the step's output.
    """
    log = await service.read_log(run_id, job_id, step, offset=0, limit=None)
    parts: list[bytes] = []
    position = 0
    while True:
        if log.offset > position:
            parts.append(gap_marker(log.offset - position))
        parts.append(log.data)
        position = log.offset + len(log.data)
        if position >= log.size or not log.data:
            break
        log = await service.read_log(run_id, job_id, step, offset=position, limit=None)
    headers = _log_headers(log)
    headers["X-Log-Offset"] = "0"
    return Response(b"".join(parts), status=200, headers=headers, content_type=OCTETS)


def _log_headers(log: LogSlice) -> dict[str, str]:
    return {
        "X-Log-Offset": str(log.offset),
        "X-Log-Size": str(log.size),
        "X-Log-Complete": "true" if log.complete else "false",
        "X-Log-Truncated": "true" if log.truncated else "false",
        "X-Log-Pruned": "true" if log.pruned else "false",
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
    }


def _not_satisfiable(first: int, log: LogSlice) -> ApiError:
    headers = _log_headers(log)
    headers["Content-Range"] = f"bytes */{log.size}"
    return ApiError(
        f"the requested output starts at byte {first}, but the step has written "
        f"{log.size} bytes so far",
        status=416,
        code="RANGE-NOT-SATISFIABLE",
        headers=headers,
        details={"size": log.size, "complete": log.complete},
    )


@logs.get(LOG_PATH)
async def read_log(run_id: str, job_id: str, step: str) -> Response:
    query = Query(request.args, ("offset", "limit", "follow"))
    offset = query.optional_integer("offset", minimum=0)
    limit = query.optional_integer("limit", minimum=0)
    follow = query.flag("follow")
    range_header = request.headers.get("Range")
    byte_range = parse_range(range_header) if range_header else None
    if byte_range is not None and (offset is not None or limit is not None or follow):
        raise ApiError("give either a Range header or the offset, limit and follow parameters")

    service = current_service()
    if follow:
        return await _follow(service, run_id, job_id, step, offset or 0, limit)
    if byte_range is not None:
        return await _read_range(service, run_id, job_id, step, byte_range)
    if offset is None and limit is None:
        return await _read_whole(service, run_id, job_id, step)
    first = offset or 0
    log = await service.read_log(run_id, job_id, step, offset=first, limit=limit)
    if first > log.size:
        raise _not_satisfiable(first, log)
    return Response(log.data, status=200, headers=_log_headers(log), content_type=OCTETS)


async def _read_range(
    service: RunServiceProtocol, run_id: str, job_id: str, step: str, byte_range: ByteRange
) -> Response:
    if byte_range.suffix is not None:
        probe = await service.read_log(run_id, job_id, step, offset=0, limit=0)
        if byte_range.suffix == 0 or probe.size == 0:
            raise _not_satisfiable(probe.size, probe)
        first, limit = max(0, probe.size - byte_range.suffix), None
    else:
        assert byte_range.first is not None
        first = byte_range.first
        limit = None if byte_range.last is None else byte_range.last - first + 1
    log = await service.read_log(run_id, job_id, step, offset=first, limit=limit)
    if first >= log.size or not log.data:
        raise _not_satisfiable(first, log)
    last = log.offset + len(log.data) - 1
    total = str(log.size) if log.complete else "*"
    headers = _log_headers(log)
    headers["Content-Range"] = f"bytes {log.offset}-{last}/{total}"
    return Response(log.data, status=206, headers=headers, content_type=OCTETS)


async def _follow(
    service: RunServiceProtocol, run_id: str, job_id: str, step: str, offset: int,
    limit: int | None,
) -> Response:
    # Read nothing first: a missing run, job or step, or an offset past the end, must
    # become an error status before the streamed response has started.
    probe = await service.read_log(run_id, job_id, step, offset=offset, limit=0)
    if offset > probe.size:
        raise _not_satisfiable(offset, probe)
    chunks = service.follow_log(run_id, job_id, step, offset=offset)
    headers = _log_headers(probe)
    headers["X-Log-Offset"] = str(offset)
    response = Response(
        _forward(chunks, limit, current_request_id()), status=200, headers=headers,
        content_type=OCTETS,
    )
    # NOTE: a followed log has no drain signal. At shutdown it runs until the step ends or
    # the server's graceful timeout cuts the connection, which the client sees as an
    # incomplete chunked response.
    response.timeout = None
    return response


async def _forward(
    chunks: AsyncIterator[bytes], limit: int | None, request_id: str
) -> AsyncIterator[bytes]:
    """Pass on the followed output, ending after ``limit`` bytes when a limit is given."""
    remaining = limit
    try:
        async for chunk in chunks:
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            if chunk:
                yield chunk
            if remaining == 0:
                return
    except CicdError as exc:
        # Raising aborts the response, so the client can tell a failure from the end.
        logger.warning(
            "request %s: following the log failed with %s: %s", request_id, exc.code, exc
        )
        raise
    finally:
        await aclose_iterator(chunks)


@logs.websocket(LOG_PATH + "/stream")
async def stream_log(run_id: str, job_id: str, step: str) -> None:
    """Send output from ``offset`` as binary messages, then ``{"type":"end","size":N}``."""
    offset = Query(websocket.args, ("offset",)).integer("offset", default=0, minimum=0)
    service = current_service()
    probe = await service.read_log(run_id, job_id, step, offset=offset, limit=0)
    if offset > probe.size:
        raise _not_satisfiable(offset, probe)
    await websocket.accept(headers={REQUEST_ID_HEADER: current_request_id()})
    position = offset

    async def send_output() -> None:
        nonlocal position
        chunks = service.follow_log(run_id, job_id, step, offset=offset)
        try:
            async for chunk in chunks:
                for start in range(0, len(chunk), MAX_MESSAGE_BYTES):
                    part = chunk[start : start + MAX_MESSAGE_BYTES]
                    await websocket.send(part)
                    position += len(part)
        finally:
            await aclose_iterator(chunks)
        final = await service.read_log(run_id, job_id, step, offset=0, limit=0)
        await websocket.send(ENCODER.encode({"type": "end", "size": final.size}).decode())

    def resume_hint() -> str:
        return f"server is shutting down; reconnect with offset={position}"

    if await stream_to_websocket(send_output, resume_hint=resume_hint):
        await websocket.close(1000)
