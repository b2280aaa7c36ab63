"""Routes for the event log: a page of events, and a WebSocket that follows new events."""

from __future__ import annotations

from quart import Blueprint, Response, request, websocket

from cicd.api.guard import REQUEST_ID_HEADER
from cicd.api.params import Query
from cicd.api.responses import ENCODER, json_response
from cicd.api.state import current_request_id, current_service
from cicd.api.streaming import aclose_iterator, stream_to_websocket

events = Blueprint("events", __name__)

DEFAULT_EVENTS_PAGE = 100
MAX_EVENTS_PAGE = 1000


@events.get("/events")
async def list_events() -> Response:
    query = Query(request.args, ("after", "limit"))
    after = query.integer("after", default=0, minimum=0)
    limit = query.integer("limit", default=DEFAULT_EVENTS_PAGE, minimum=1, maximum=MAX_EVENTS_PAGE)
    return json_response(await current_service().events_after(after, limit))


@events.websocket("/events/stream")
async def stream_events() -> None:
    """Send each event with an id above ``after`` as a JSON text message, without end."""
    after = Query(websocket.args, ("after",)).integer("after", default=0, minimum=0)
    service = current_service()
    await websocket.accept(headers={REQUEST_ID_HEADER: current_request_id()})
    last_sent = after

    async def send_events() -> None:
        nonlocal last_sent
        records = service.follow_events(after)
        try:
            async for record in records:
                await websocket.send(ENCODER.encode(record).decode())
                last_sent = record.id
        finally:
            await aclose_iterator(records)

    def resume_hint() -> str:
        return f"server is shutting down; reconnect with after={last_sent}"

    # follow_events never ends, so this returns only after the WebSocket was closed.
    await stream_to_websocket(send_events, resume_hint=resume_hint)
