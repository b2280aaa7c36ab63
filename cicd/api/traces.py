"""Routes for traces: runs as OpenTelemetry traces (OTLP/JSON), built from the event log."""

from __future__ import annotations

from quart import Blueprint, Response, request

from cicd.api.params import Query
from cicd.api.responses import json_response
from cicd.api.state import current_service

traces = Blueprint("traces", __name__)

DEFAULT_TRACES = 10
MAX_TRACES = 100


@traces.get("/traces")
async def list_traces() -> Response:
    query = Query(request.args, ("limit",))
    limit = query.integer("limit", default=DEFAULT_TRACES, minimum=1, maximum=MAX_TRACES)
    return json_response(await current_service().recent_traces(limit))


@traces.get("/runs/<run_id>/trace")
async def run_trace(run_id: str) -> Response:
    Query(request.args, ())
    return json_response(await current_service().run_trace(run_id))
