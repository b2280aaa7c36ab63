"""Routes of the browser console: its page and static files, its JSON reads, its WebSocket.

The page and the files of ``web/`` (shipped in the package as ``cicd.web``) are served
at ``/`` and ``/static/...``. Every response of this blueprint carries a
Content-Security-Policy that allows scripts, styles and connections only from this
server, so neither inline script nor markup injected into the page can run.
``docs/console.md`` describes the WebSocket protocol.
"""

from __future__ import annotations

import importlib.resources
import logging
import time
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, current_app, request, websocket

from cicd.api.guard import REQUEST_ID_HEADER
from cicd.api.params import RUN_STATES, Query
from cicd.api.responses import ApiError, json_response
from cicd.api.server import (
    DEFLATE_EXTENSION,
    SEND_FRAME_EXTENSION,
    SEND_FRAME_NOWAIT_EXTENSION,
)
from cicd.api.state import current_request_id, current_service, current_state
from cicd.console import reads
from cicd.console.feeds import Feeds, Readers
from cicd.console.overview import DEFAULT_WINDOW, WINDOWS, Overview
from cicd.console.protocol import DEFAULT_RUNS_LIMIT, MAX_RUNS_LIMIT, RunFilter, RunSummary
from cicd.console.session import ConsoleSession

logger = logging.getLogger("cicd.console")

console = Blueprint("console", __name__)

EXTENSION = "cicd.console"
CONSOLE_PREFIX = "/api/v1/console"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
MAX_LOG_READ = 4 * 1024 * 1024


class RunList(msgspec.Struct, kw_only=True):
    """A page of run summaries, the counts per state, and the event id they are as of."""

    items: list[RunSummary]
    next_cursor: str | None
    counts: dict[str, int]
    event_id: int


def web_root() -> Traversable:
    """Return the console's files: the installed ``cicd.web`` package, else ``web/`` beside
    ``cicd/`` when running from a source tree."""
    try:
        return importlib.resources.files("cicd.web")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "web"


class ConsoleState:
    """The state the console's routes share: the store's readers and the feeds (started lazily)."""

    def __init__(self, readers: Readers, store: Any) -> None:
        self.readers = readers
        self.store = store
        self.root = web_root()
        self.refs = reads.RefIndex()
        self._feeds: Feeds | None = None

    def feeds(self) -> Feeds:
        if self._feeds is None:
            # The application's own nursery outlives every WebSocket, so a feed shared by
            # several clients keeps running when the client that started it leaves.
            nursery: trio.Nursery = current_app.nursery  # type: ignore[attr-defined]
            self._feeds = Feeds(self.readers, self.store.changed, nursery)
        return self._feeds


def console_state() -> ConsoleState:
    state = current_app.extensions.get(EXTENSION)
    if state is None:
        service = current_service()
        readers, store = getattr(service, "readers", None), getattr(service, "store", None)
        if readers is None or store is None:
            raise ApiError("the console needs the server's run store, and this service has "
                           "none", status=503, code="SRV-STOPPING")
        state = current_app.extensions[EXTENSION] = ConsoleState(readers, store)
    assert isinstance(state, ConsoleState)
    return state


@console.after_request
async def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _static_response(name: str) -> Response:
    parts = name.split("/")
    suffix = Path(name).suffix
    if (suffix not in CONTENT_TYPES or any(part in ("", ".", "..") or part.startswith(".")
                                          for part in parts)):
        raise ApiError(f"no console file {name!r}", status=404, code="NOT-FOUND")
    node: Traversable = web_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        raise ApiError(f"no console file {name!r}", status=404, code="NOT-FOUND")
    response = Response(node.read_bytes(), status=200, content_type=CONTENT_TYPES[suffix])
    response.headers["Cache-Control"] = "no-cache"
    return response


@console.get("/")
async def index() -> Response:
    Query(request.args, ())
    return _static_response("index.html")


@console.get("/static/<path:name>")
async def static_file(name: str) -> Response:
    return _static_response(name)


@console.get(f"{CONSOLE_PREFIX}/runs")
async def run_list() -> Response:
    query = Query(request.args, ("state", "pipeline", "ref", "tenant", "cursor", "limit"))
    wanted = RunFilter(state=query.choice("state", RUN_STATES) or "",
                       pipeline=query.text("pipeline") or "", ref=query.text("ref") or "",
                       tenant=query.text("tenant") or "")
    cursor = query.text("cursor")
    limit = query.integer("limit", default=DEFAULT_RUNS_LIMIT, minimum=1, maximum=MAX_RUNS_LIMIT)

    refs = console_state().refs

    def read(conn):  # type: ignore[no-untyped-def]
        event_id = reads.last_event_id(conn)
        try:
            items, next_cursor = reads.run_summaries(conn, wanted, refs, limit=limit,
                                                     cursor=cursor)
        except LookupError:
            return None
        return RunList(items=items, next_cursor=next_cursor,
                       counts=reads.state_counts(conn, wanted, refs), event_id=event_id)

    page = await console_state().readers.run(read)
    if page is None:
        raise ApiError(f"cursor {cursor!r} is not a run of this server; pass the next_cursor "
                       "of the previous page", status=400, code="USAGE")
    return json_response(page)


@console.get(f"{CONSOLE_PREFIX}/overview")
async def overview() -> Response:
    query = Query(request.args, ("window",))
    window = query.choice("window", tuple(WINDOWS)) or DEFAULT_WINDOW
    now = int(time.time() * 1000)
    result = await console_state().readers.run(
        lambda conn: reads.overview(conn, window=window, now=now))
    return json_response(result)


@console.get(f"{CONSOLE_PREFIX}/runs/<run_id>/jobs/<job_id>/steps/<step>/log")
async def read_log(run_id: str, job_id: str, step: str) -> Response:
    """Return stored output from ``offset``, at most ``limit`` bytes (default and maximum
    4 MiB), with the X-Log-* headers of the log API. Unlike that API it finds the offset
    by chunk number, so a read deep into a long log costs the same as one at its start."""
    query = Query(request.args, ("offset", "limit"))
    offset = query.integer("offset", default=0, minimum=0)
    limit = query.integer("limit", default=MAX_LOG_READ, minimum=0, maximum=MAX_LOG_READ)

    def read(conn):  # type: ignore[no-untyped-def]
        found = reads.step_log(conn, run_id, job_id, step)
        start, data = reads.read_range(conn, run_id, job_id, found, offset, limit)
        return found, start, data

    found, start, data = await console_state().readers.run(read)
    if offset > found.size:
        raise ApiError(f"the requested output starts at byte {offset}, but the step has "
                       f"written {found.size} bytes so far", status=416,
                       code="RANGE-NOT-SATISFIABLE",
                       details={"size": found.size, "complete": found.complete})
    headers = {
        "X-Log-Offset": str(start),
        "X-Log-Size": str(max(found.size, start + len(data))),
        "X-Log-Complete": "true" if found.complete else "false",
        "X-Log-Truncated": "true" if found.truncated_bytes else "false",
        "Cache-Control": "no-store",
    }
    return Response(data, status=200, headers=headers, content_type="application/octet-stream")


@console.websocket(CONSOLE_PREFIX)
async def console_socket() -> None:
    """Run one console session; close with 1001 when the server shuts down."""
    Query(websocket.args, ())
    state = console_state()
    request_id = current_request_id()
    await websocket.accept(headers={REQUEST_ID_HEADER: request_id})
    extensions: dict[str, Any] = websocket.scope.get("extensions") or {}
    deflate_window_bits = extensions.get(DEFLATE_EXTENSION)
    session = ConsoleSession(service=current_service(), readers=state.readers,
                             feeds=state.feeds(), refs=state.refs, send=websocket.send,
                             receive=websocket.receive, request_id=request_id,
                             send_frame=extensions.get(SEND_FRAME_EXTENSION),
                             send_frame_nowait=extensions.get(SEND_FRAME_NOWAIT_EXTENSION),
                             deflate_bits=deflate_window_bits() if deflate_window_bits else None)
    close_code, reason = 1000, ""
    try:
        with current_state().drain.cancel_scope() as scope:
            await session.run()
        if scope.cancelled_caught:
            close_code, reason = 1001, "server is shutting down; reconnect and resume"
    except Exception:
        logger.exception("request %s: console session failed", request_id)
        close_code, reason = 1011, f"INTERNAL: see the server log, request id {request_id}"
    await websocket.close(close_code, reason)


def add_console_routes(document: dict[str, Any]) -> dict[str, Any]:
    """Add the console's routes and their schemas to the API's OpenAPI document; return it."""
    from cicd.api import openapi as spec  # imported here: that module imports this one

    _, schemas = msgspec.json.schema_components([RunList, Overview], ref_template=spec.REF)
    document["components"]["schemas"].update(schemas)
    string = {"schema": {"type": "string"}}
    page = {"description": "The page.", "content": {"text/html": string}}
    file = {"description": "The file.", "content": {
        kind.partition(";")[0]: string for kind in CONTENT_TYPES.values()}}
    log_headers = {name: {"description": f"As {name} of the log API.",
                          "schema": {"type": "string"}}
                   for name in ("X-Log-Offset", "X-Log-Size", "X-Log-Complete",
                                "X-Log-Truncated")}
    document["paths"].update({
        "/": {"get": spec._operation(
            "getConsole", "The browser console's page (HTML)", "console", {"200": page},
            errors=(404,))},
        "/static/{name}": {"get": spec._operation(
            "getConsoleFile", "A file of the browser console (JavaScript, CSS, SVG)", "console",
            {"200": file}, errors=(404,),
            parameters=[spec._path("name", "The file's path under web/.")])},
        f"{CONSOLE_PREFIX}/runs": {"get": spec._operation(
            "listConsoleRuns", "Run summaries with counts per state, filtered by ref too",
            "console", {"200": spec._json("A page of runs.", spec._ref("RunList"))},
            parameters=[
                spec._query("state", "Only runs in this state.",
                            {"type": "string", "enum": list(RUN_STATES)}),
                spec._query("pipeline", "Only runs of this pipeline.", {"type": "string"}),
                spec._query("ref", "Only runs of this git ref.", {"type": "string"}),
                spec._query("tenant", "Only runs of this tenant.", {"type": "string"}),
                spec._query("cursor", "The next_cursor of the previous page.",
                            {"type": "string"}),
                spec._query("limit", "Runs per page.",
                            spec._integer(1, MAX_RUNS_LIMIT, DEFAULT_RUNS_LIMIT)),
            ])},
        f"{CONSOLE_PREFIX}/overview": {"get": spec._operation(
            "getConsoleOverview", "Queue depth, runs per state, p95 duration and success rate",
            "console", {"200": spec._json("The overview.", spec._ref("Overview"))},
            parameters=[spec._query("window", "The time window.",
                                    {"type": "string", "enum": list(WINDOWS)})])},
        f"{CONSOLE_PREFIX}/runs/{{run_id}}/jobs/{{job_id}}/steps/{{step}}/log": {
            "get": spec._operation(
                "readConsoleLog", "Stored output from an offset, found by chunk number",
                "console",
                {"200": {"description": "The bytes from X-Log-Offset.", "headers": log_headers,
                         "content": {"application/octet-stream": {"schema": {
                             "type": "string", "format": "binary"}}}}},
                errors=(404, 416),
                parameters=[spec._param("RunId"), spec._param("JobId"), spec._param("Step"),
                            spec._query("offset", "The first byte.", spec._integer(0)),
                            spec._query("limit", "At most this many bytes.",
                                        spec._integer(0, MAX_LOG_READ, MAX_LOG_READ))])},
        CONSOLE_PREFIX: {"get": spec._operation(
            "consoleSocket", "WebSocket: the console protocol (docs/console.md)", "console",
            {"101": {"description": "The WebSocket is open."}}, extra={"x-websocket": True})},
    })
    return document
