"""The HTTP and WebSocket API of the cicd server, as a Quart-Trio application.

:func:`create_app` wires the routes (see :mod:`cicd.api.openapi` for the list) to a
run service. Before routing, every request and WebSocket handshake gets a request id
and passes the Host and Origin checks of :mod:`cicd.api.guard`. Every error becomes
an ``ErrorBody`` (see :mod:`cicd.api.responses`). After each HTTP request the
service records its latency. The API exposes runs, logs, events, dead letters and
nodes, never operations on single workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from urllib.parse import quote

from quart import Response, g, request, websocket
from quart.typing import ResponseTypes
from quart_trio import QuartTrio

from cicd.api.console import console
from cicd.api.contract import RunServiceProtocol
from cicd.api.dead_letters import dead_letters
from cicd.api.events import events
from cicd.api.guard import DEFAULT_SERVER_NAMES, REQUEST_ID_HEADER, HostGuard, request_id_from
from cicd.api.logs import logs
from cicd.api.openapi import openapi_json
from cicd.api.responses import MAX_BODY_BYTES, response_for_error
from cicd.api.runs import runs
from cicd.api.state import EXTENSION, ApiState, current_request_id, current_state
from cicd.api.system import system
from cicd.api.traces import traces

logger = logging.getLogger("cicd.api")

API_PREFIX = "/api/v1"

# The latency metric's tenant label when the request has no tenant query parameter.
DEFAULT_TENANT = "default"
# The latency metric's endpoint label when no route matched (404, 405).
UNMATCHED = "unmatched"


def create_app(
    service: RunServiceProtocol, *, server_names: Iterable[str] = DEFAULT_SERVER_NAMES
) -> QuartTrio:
    """Build the application for ``service``, accepting requests only for ``server_names``.

    Raises ``UsageError`` when ``server_names`` is empty or has an empty name.
    """
    app = QuartTrio("cicd.api", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION] = ApiState(service, HostGuard(server_names), openapi_json())

    app.before_request(_check_request)
    app.after_request(_finish_request)
    app.before_websocket(_check_websocket)
    app.after_websocket(_finish_websocket)
    app.register_error_handler(Exception, _handle_error)

    app.register_blueprint(system)
    app.register_blueprint(runs, url_prefix=API_PREFIX)
    app.register_blueprint(logs, url_prefix=API_PREFIX)
    app.register_blueprint(events, url_prefix=API_PREFIX)
    app.register_blueprint(dead_letters, url_prefix=API_PREFIX)
    app.register_blueprint(traces, url_prefix=API_PREFIX)
    # The browser console: its page at /, its files at /static, its API under /api/v1/console.
    app.register_blueprint(console)
    return app


async def _check_request() -> None:
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.started = time.monotonic()
    current_state().guard.check(request.headers.get("Host"), request.headers.get("Origin"))


async def _finish_request(response: Response) -> Response:
    request_id = current_request_id()
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("started")
    elapsed_ms = (time.monotonic() - started) * 1000 if isinstance(started, float) else 0.0
    # A created resource is named in the same line: one line per request, also under load.
    created = response.headers.get("Location", "") if response.status_code == 201 else ""
    logger.info(
        "%s %s -> %d in %.1f ms (request %s)%s",
        request.method, loggable_path(request.path), response.status_code, elapsed_ms, request_id,
        f", created {created}" if created else "",
    )
    _record_latency(elapsed_ms, request_id)
    return response


def _record_latency(elapsed_ms: float, request_id: str) -> None:
    """Record the request's latency through the service, logging its errors, never raising.

    A streamed response (a followed log) is measured up to its headers, not its end.
    """
    rule = request.url_rule
    # The label uses the rule, not the path, so that it has one value per route. A request
    # that matched no route gets no method either, because its method can be any token.
    endpoint = f"{request.method} {rule.rule}" if rule is not None else UNMATCHED
    # NOTE: the tenant is unchecked client input on every route, so each new value
    # makes a new series in ui_latency_ms.
    tenant = request.args.get("tenant") or DEFAULT_TENANT
    state = current_state()
    try:
        state.service.record_request_latency(endpoint, tenant, elapsed_ms)
    except Exception:  # the metrics code may raise anything, and the response is ready
        state.latency_failures += 1
        if state.latency_failures == 1:
            logger.warning(
                "recording the latency of request %s (%s, tenant %r) failed; later "
                "failures are logged at DEBUG level only",
                request_id, endpoint, tenant, exc_info=True,
            )
        else:
            logger.debug(
                "recording the latency of request %s failed (failure %d)",
                request_id, state.latency_failures, exc_info=True,
            )


async def _check_websocket() -> None:
    g.request_id = request_id_from(websocket.headers.get(REQUEST_ID_HEADER))
    current_state().guard.check(websocket.headers.get("Host"), websocket.headers.get("Origin"))


async def _finish_websocket(response: ResponseTypes | None) -> ResponseTypes | None:
    # A response here rejects the handshake; an accepted WebSocket returns None.
    request_id = current_request_id()
    if response is None:
        logger.info("WebSocket %s ended (request %s)", loggable_path(websocket.path), request_id)
        return None
    response.headers[REQUEST_ID_HEADER] = request_id
    logger.info(
        "WebSocket %s rejected with %d (request %s)",
        loggable_path(websocket.path), response.status_code, request_id,
    )
    return response


# Characters of a path that stay as they are in the log; the others are percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def loggable_path(path: str) -> str:
    """Return the decoded request ``path`` encoded again for the log, so that a line
    break, an escape sequence or a NUL in a URL cannot forge log lines or reach the
    terminal of someone reading the log."""
    return quote(path, safe=_PATH_SAFE, errors="backslashreplace")


async def _handle_error(error: Exception) -> Response:
    return response_for_error(error, current_request_id())
