"""Running a stream (log output, events) over an accepted WebSocket until it ends or stops.

WebSocket close codes the streams use (from the IANA WebSocket close code registry)::

    1000  the stream ended (the step ended and all its output was sent)
    1001  the server is shutting down; the reason gives the offset or id to resume from
    1011  the service failed; the reason carries the error code or the request id
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import trio
from quart import websocket

from cicd.api.state import current_request_id, current_state
from cicd.errors import CicdError

logger = logging.getLogger("cicd.api")

# A close frame carries at most 125 bytes: the 2-byte code and up to 123 bytes of reason.
_MAX_CLOSE_REASON = 123


async def aclose_iterator(iterator: AsyncIterator[object]) -> None:
    """Close an async iterator that has ``aclose`` (async generators do), so it runs its cleanup."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _close_reason(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= _MAX_CLOSE_REASON:
        return text
    return encoded[: _MAX_CLOSE_REASON - 3].decode(errors="ignore") + "..."


async def _discard_incoming() -> None:
    # The streams take no messages from the client. Reading them anyway keeps Quart's
    # small receive queue from filling, which would stall the disconnect notice behind it.
    while True:
        await websocket.receive()


async def stream_to_websocket(
    produce: Callable[[], Awaitable[None]], *, resume_hint: Callable[[], str]
) -> bool:
    """Run ``produce`` (which sends messages) on an accepted WebSocket.

    Returns True when ``produce`` returned. Otherwise closes the WebSocket and returns
    False: with 1001 and ``resume_hint()`` as reason when the server drains, with 1011
    when ``produce`` raised. A client that disconnects cancels the whole handler.
    """
    request_id = current_request_id()
    close_code, close_reason = 1000, ""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_discard_incoming)
        try:
            with current_state().drain.cancel_scope() as scope:
                await produce()
            if scope.cancelled_caught:
                close_code, close_reason = 1001, resume_hint()
        except CicdError as exc:
            logger.warning("request %s: stream failed with %s: %s", request_id, exc.code, exc)
            close_code, close_reason = 1011, f"{exc.code}: {exc}"
        except Exception as exc:
            logger.error("request %s: stream failed", request_id, exc_info=exc)
            close_code = 1011
            close_reason = f"INTERNAL: see the server log, request id {request_id}"
        nursery.cancel_scope.cancel()
    if close_code == 1000:
        return True
    await websocket.close(close_code, _close_reason(close_reason))
    return False
