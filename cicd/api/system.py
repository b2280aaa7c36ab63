"""Routes about the server itself: liveness, readiness, metrics, nodes, the OpenAPI document."""

from __future__ import annotations

import msgspec
from quart import Blueprint, Response, request

from cicd.api.params import Query
from cicd.api.responses import JSON, json_response
from cicd.api.state import current_service, current_state

system = Blueprint("system", __name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

# The readiness component the API adds while the service rejects new runs.
INTAKE = "intake"


class Liveness(msgspec.Struct, kw_only=True):
    status: str


class Readiness(msgspec.Struct, kw_only=True):
    """The readiness of the server: ``ready`` only when every component is ``ok``."""

    status: str  # ready, not_ready
    components: dict[str, str]


@system.get("/healthz")
async def healthz() -> Response:
    return json_response(Liveness(status="alive"))


@system.get("/readyz")
async def readyz() -> Response:
    service = current_service()
    components = dict(service.readiness())
    if not service.accepting:
        components[INTAKE] = "the server is shutting down and accepts no new runs"
    ready = all(value == "ok" for value in components.values())
    body = Readiness(status="ready" if ready else "not_ready", components=components)
    return json_response(body, status=200 if ready else 503)


@system.get("/metrics")
async def metrics() -> Response:
    Query(request.args, ())
    return Response(current_service().metrics_text(), status=200, content_type=PROMETHEUS_TEXT)


@system.get("/api/v1/nodes")
async def nodes() -> Response:
    Query(request.args, ())
    return json_response(current_service().nodes())


@system.get("/api/v1/nodes/<name>")
async def node(name: str) -> Response:
    Query(request.args, ())
    return json_response(current_service().node_info(name))


@system.post("/api/v1/nodes/<name>/cordon")
async def cordon(name: str) -> Response:
    """Take no new jobs on the node; running jobs go on."""
    Query(request.args, ())
    return json_response(await current_service().cordon_node(name, cordoned=True))


@system.post("/api/v1/nodes/<name>/drain")
async def drain(name: str) -> Response:
    """Cordon the node and report it drained once its running jobs ended."""
    Query(request.args, ())
    return json_response(await current_service().cordon_node(name, cordoned=True, drain=True))


@system.post("/api/v1/nodes/<name>/uncordon")
async def uncordon(name: str) -> Response:
    """Let the node take jobs again."""
    Query(request.args, ())
    return json_response(await current_service().cordon_node(name, cordoned=False))


@system.get("/api/v1/openapi.json")
async def openapi() -> Response:
    return Response(current_state().openapi, status=200, content_type=JSON)
