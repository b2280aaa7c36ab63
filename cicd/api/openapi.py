"""The OpenAPI 3.1 document of the API, built from the msgspec types the handlers encode.

Schemas come from :func:`msgspec.json.schema_components`, so the document and the
responses cannot drift apart. The routes, parameters and statuses are listed here
by hand, and a test compares them with the application's URL map. The two WebSocket
routes appear as GET operations returning 101, with ``x-websocket: true``, because
OpenAPI has no notion of WebSockets.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cicd import __version__
from cicd.api.dead_letters import ReplayResult
from cicd.api.events import DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE
from cicd.api.params import DEFAULT_PAGE, MAX_INTEGER, MAX_PAGE, RUN_STATES
from cicd.api.runs import MAX_IDEMPOTENCY_KEY
from cicd.api.system import Liveness, Readiness
from cicd.api.traces import DEFAULT_TRACES, MAX_TRACES
from cicd.orchestration.documents import (
    ActionResult,
    DeadLetter,
    ErrorBody,
    EventPage,
    EventRecord,
    NodeInfo,
    RunDocument,
    RunPage,
    SubmitRequest,
)
from cicd.telemetry.traces import TracesData

Schema = dict[str, Any]

REF = "#/components/schemas/{name}"

_ERRORS: dict[int, str] = {
    400: "The request is invalid: a parameter, header or body (code REQUEST-INVALID or USAGE).",
    403: "The Origin header names another site (code ORIGIN-NOT-ALLOWED).",
    404: "The run, job, step or dead letter does not exist (code NOT-FOUND).",
    409: "The run or job is not in a state that allows this action (code ORC-STATE).",
    413: "The request body is over 4 MiB (code BODY-TOO-LARGE).",
    415: "The request body is not JSON (code MEDIA-TYPE).",
    416: "The range starts past the end of the output (code RANGE-NOT-SATISFIABLE).",
    421: "The Host header is not one of the server's names (code HOST-NOT-ALLOWED).",
    422: "The pipeline is invalid (code PIPELINE-INVALID, details: file, line, column, path), "
         "or the Idempotency-Key names a run of another request (code IDEMPOTENCY-MISMATCH).",
    429: "No capacity for new runs now; retry after Retry-After seconds (code SCH-CAP).",
    500: "The server failed (code ORC-INFRA, WKM-PROV or INTERNAL); the log has the request id.",
    503: "The server is shutting down (code SRV-STOPPING).",
}

# Every route can return these, because the request checks run before routing.
_ALWAYS = (400, 403, 421, 500)


def _schema_hook(kind: type) -> Schema:
    if kind is object:
        return {"description": "any JSON value"}
    raise NotImplementedError


def _components() -> Schema:
    types = [
        SubmitRequest, RunDocument, RunPage, ActionResult, EventRecord, EventPage,
        NodeInfo, ErrorBody, Liveness, Readiness, DeadLetter, ReplayResult, TracesData,
    ]
    _, schemas = msgspec.json.schema_components(
        types, schema_hook=_schema_hook, ref_template=REF
    )
    responses = {
        f"Error{status}": {
            "description": description,
            "headers": _error_headers(status),
            "content": {"application/json": {"schema": _ref("ErrorBody")}},
        }
        for status, description in _ERRORS.items()
    }
    return {
        "schemas": schemas,
        "responses": responses,
        "headers": {
            "X-Request-Id": {
                "description": "The client's request id when it sent a valid one, else a new id.",
                "schema": {"type": "string"},
            },
        },
        "parameters": _shared_parameters(),
    }


def _error_headers(status: int) -> Schema:
    headers: Schema = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    if status == 429:
        headers["Retry-After"] = {
            "description": "Seconds to wait before retrying, at least 1.",
            "schema": {"type": "integer", "minimum": 1},
        }
    if status == 416:
        headers["Content-Range"] = {
            "description": "bytes */SIZE, the output size so far.",
            "schema": {"type": "string"},
        }
    return headers


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def _integer(minimum: int, maximum: int = MAX_INTEGER, default: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return schema


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _shared_parameters() -> Schema:
    return {
        "RunId": _path("run_id", "The run's id."),
        "JobId": _path("job_id", "The job's id within the run."),
        "Step": _path("step", "The step's 1-based index within the job, or its name."),
        "NodeName": _path("name", "The node's name, as listed by GET /api/v1/nodes."),
        "DeadLetterId": {
            "name": "dead_letter_id", "in": "path", "required": True,
            "description": "The dead letter's id, as listed by GET /api/v1/dead-letters.",
            "schema": _integer(1),
        },
        "RequestId": {
            "name": "X-Request-Id", "in": "header", "required": False,
            "description": "An id for this request, echoed in the response and the server "
                           "log. An id that does not match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$ "
                           "is replaced by a new one.",
            "schema": {"type": "string"},
        },
    }


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _json(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"].update(headers)
    return response


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: Schema,
    *,
    errors: tuple[int, ...] = (),
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    extra: Schema | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "parameters": [*(parameters or []), _param("RequestId")],
        "responses": dict(responses),
    }
    for status in sorted(set(errors) | set(_ALWAYS)):
        operation["responses"].setdefault(
            str(status), {"$ref": f"#/components/responses/Error{status}"}
        )
    if body is not None:
        operation["requestBody"] = body
    operation.update(extra or {})
    return operation


_LOCATION = {"Location": {"description": "The path of the run.", "schema": {"type": "string"}}}

_LOG_HEADERS = {
    name: {"description": description, "schema": schema}
    for name, description, schema in [
        ("X-Log-Offset", "Offset of the first byte sent.", {"type": "integer"}),
        ("X-Log-Size", "Bytes the step has written so far, dropped bytes included.",
         {"type": "integer"}),
        ("X-Log-Complete", "true once the step has ended, so X-Log-Size is final.",
         {"type": "string", "enum": ["true", "false"]}),
        ("X-Log-Truncated", "true when the middle of the output was dropped.",
         {"type": "string", "enum": ["true", "false"]}),
        ("X-Log-Pruned", "true when retention removed the run's output: no byte is left.",
         {"type": "string", "enum": ["true", "false"]}),
    ]
}


def _run_paths() -> Schema:
    submit_body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("SubmitRequest")}},
    }
    idempotency_key = {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Submitting again with the same key returns the first run (200).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY,
                   "pattern": "^[!-~]+$"},
    }
    list_parameters = [
        _query("state", "Only runs in this state.", {"type": "string", "enum": list(RUN_STATES)}),
        _query("tenant", "Only runs of this tenant.", {"type": "string", "minLength": 1}),
        _query("pipeline", "Only runs of this pipeline.", {"type": "string", "minLength": 1}),
        _query("since", "Only runs created at or after this time: milliseconds since the "
               "epoch, or ISO 8601 (UTC when it has no offset).",
               {"type": "string", "minLength": 1, "examples": ["2024-05-01T12:00:00Z"]}),
        _query("cursor", "The next_cursor of the previous page.",
               {"type": "string", "minLength": 1}),
        _query("limit", "Runs per page.", _integer(1, MAX_PAGE, DEFAULT_PAGE)),
    ]
    action = (404, 409)
    return {
        "/api/v1/runs": {
            "post": _operation(
                "submitRun", "Start a run", "runs",
                {
                    "201": _json("The run was created.", _ref("RunDocument"), _LOCATION),
                    "200": _json("A run with this Idempotency-Key or run_id already exists.",
                                 _ref("RunDocument"), _LOCATION),
                },
                errors=(413, 415, 422, 429, 503),
                parameters=[idempotency_key], body=submit_body,
            ),
            "get": _operation(
                "listRuns", "List runs, newest first", "runs",
                {"200": _json("A page of runs.", _ref("RunPage"))},
                parameters=list_parameters,
            ),
        },
        "/api/v1/runs/{run_id}": {
            "get": _operation(
                "getRun", "Show a run with its jobs and steps", "runs",
                {"200": _json("The run.", _ref("RunDocument"))},
                errors=(404,), parameters=[_param("RunId")],
            ),
        },
        "/api/v1/runs/{run_id}/cancel": {
            "post": _operation(
                "cancelRun", "Cancel a run (idempotent)", "runs",
                {"200": _json("The run after the request.", _ref("ActionResult"))},
                errors=action, parameters=[_param("RunId")],
            ),
        },
        "/api/v1/runs/{run_id}/jobs/{job_id}/cancel": {
            "post": _operation(
                "cancelJob", "Cancel one job of a run (idempotent)", "runs",
                {"200": _json("The run after the request.", _ref("ActionResult"))},
                errors=action, parameters=[_param("RunId"), _param("JobId")],
            ),
        },
        "/api/v1/runs/{run_id}/retry": {
            "post": _operation(
                "retryRun", "Start a new run of the same pipeline and source", "runs",
                {"201": _json("The new run.", _ref("ActionResult"), _LOCATION)},
                errors=(*action, 422, 429, 503), parameters=[_param("RunId")],
            ),
        },
    }


def _log_paths() -> Schema:
    step = [_param("RunId"), _param("JobId"), _param("Step")]
    octets: Schema = {"application/octet-stream": {}}
    read_parameters = [
        *step,
        _query("offset", "First byte to send.", _integer(0, default=0)),
        _query("limit", "Bytes to send at most; all when absent. With follow=1 the stream "
               "ends after this many bytes, or when the step ends.", _integer(0)),
        _query("follow", "1: stream the output as it is written until the step ends.",
               {"type": "string", "enum": ["0", "1", "true", "false"]}),
        {"name": "Range", "in": "header", "required": False,
         "description": "One byte range: bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT. "
                        "A request with Range must not have offset, limit or follow.",
         "schema": {"type": "string", "pattern": "^bytes=([0-9]+-[0-9]*|-[0-9]+)$"}},
    ]
    log_headers = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, **_LOG_HEADERS}
    partial_headers = {**log_headers, "Content-Range": {
        "description": "bytes FIRST-LAST/SIZE, with * as SIZE while the step runs.",
        "schema": {"type": "string"}}}
    return {
        "/api/v1/runs/{run_id}/jobs/{job_id}/steps/{step}/log": {
            "get": _operation(
                "readStepLog", "Read a step's output as raw bytes", "logs",
                {
                    "200": {"description": "The output from offset (streamed with follow=1).",
                            "headers": log_headers, "content": octets},
                    "206": {"description": "The requested range.", "headers": partial_headers,
                            "content": octets},
                },
                errors=(404, 416), parameters=read_parameters,
            ),
        },
        "/api/v1/runs/{run_id}/jobs/{job_id}/steps/{step}/log/stream": {
            "get": _operation(
                "streamStepLog",
                "WebSocket: the output from offset as binary messages, then a text message "
                '{"type": "end", "size": N} when the step has ended',
                "logs",
                {"101": {"description": "The WebSocket is open."}},
                errors=(404, 416),
                parameters=[*step, _query("offset", "First byte to send.", _integer(0, default=0))],
                extra={"x-websocket": True},
            ),
        },
    }


def _dead_letter_paths() -> Schema:
    return {
        "/api/v1/dead-letters": {
            "get": _operation(
                "listDeadLetters",
                "List events a subscriber failed to handle after its retries, in id order",
                "events",
                {"200": _json("The dead letters, the replayed ones included.",
                              {"type": "array", "items": _ref("DeadLetter")})},
            ),
        },
        "/api/v1/dead-letters/{dead_letter_id}/replay": {
            "post": _operation(
                "replayDeadLetter", "Deliver a dead letter's event to its subscriber again",
                "events",
                {"200": _json("The outcome; replayed is false when the dead letter was "
                              "replayed before or the subscriber failed again.",
                              _ref("ReplayResult"))},
                errors=(404,), parameters=[_param("DeadLetterId")],
            ),
        },
    }


def _trace_paths() -> Schema:
    return {
        "/api/v1/traces": {
            "get": _operation(
                "listTraces",
                "The runs accepted last as OpenTelemetry traces (OTLP/JSON), newest first",
                "events",
                {"200": _json("An OTLP TracesData document: one resourceSpans per run.",
                              _ref("TracesData"))},
                parameters=[_query("limit", "Runs to include.",
                                   _integer(1, MAX_TRACES, DEFAULT_TRACES))],
            ),
        },
        "/api/v1/runs/{run_id}/trace": {
            "get": _operation(
                "getRunTrace",
                "One run as an OpenTelemetry trace (OTLP/JSON): run, job, step and "
                "schedule spans",
                "events",
                {"200": _json("An OTLP TracesData document.", _ref("TracesData"))},
                errors=(404,), parameters=[_param("RunId")],
            ),
        },
    }


def _event_and_system_paths() -> Schema:
    after = _query("after", "Send events with an id above this one.", _integer(0, default=0))
    return {
        "/api/v1/events": {
            "get": _operation(
                "listEvents", "Read events in id order", "events",
                {"200": _json("A page of events; pass next_after as after for the next page.",
                              _ref("EventPage"))},
                parameters=[after, _query("limit", "Events per page.",
                                          _integer(1, MAX_EVENTS_PAGE, DEFAULT_EVENTS_PAGE))],
            ),
        },
        "/api/v1/events/stream": {
            "get": _operation(
                "streamEvents",
                "WebSocket: each new event as a JSON text message (EventRecord), without end",
                "events",
                {"101": {"description": "The WebSocket is open."}},
                parameters=[after], extra={"x-websocket": True},
            ),
        },
        "/api/v1/nodes": {
            "get": _operation(
                "listNodes", "List the nodes that run jobs", "server",
                {"200": _json("The nodes.", {"type": "array", "items": _ref("NodeInfo")})},
            ),
        },
        "/api/v1/nodes/{name}": {
            "get": _operation(
                "getNode", "One node: capacity, allocation, jobs, labels, breaker", "server",
                {"200": _json("The node.", _ref("NodeInfo"))},
                errors=(404,), parameters=[_param("NodeName")],
            ),
        },
        "/api/v1/nodes/{name}/cordon": {
            "post": _operation(
                "cordonNode", "Take no new jobs on the node; running jobs go on", "server",
                {"200": _json("The node.", _ref("NodeInfo"))},
                errors=(404,), parameters=[_param("NodeName")],
            ),
        },
        "/api/v1/nodes/{name}/drain": {
            "post": _operation(
                "drainNode", "Cordon the node; it shows drained once its jobs ended", "server",
                {"200": _json("The node.", _ref("NodeInfo"))},
                errors=(404,), parameters=[_param("NodeName")],
            ),
        },
        "/api/v1/nodes/{name}/uncordon": {
            "post": _operation(
                "uncordonNode", "Let the node take jobs again", "server",
                {"200": _json("The node.", _ref("NodeInfo"))},
                errors=(404,), parameters=[_param("NodeName")],
            ),
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "getOpenApi", "This document", "server",
                {"200": _json("The OpenAPI 3.1 document.", {"type": "object"})},
            ),
        },
        "/healthz": {
            "get": _operation(
                "getLiveness", "Liveness: 200 while the process serves requests", "server",
                {"200": _json("Alive.", _ref("Liveness"))},
            ),
        },
        "/readyz": {
            "get": _operation(
                "getReadiness", "Readiness: 200 when every component is ok", "server",
                {"200": _json("Ready.", _ref("Readiness")),
                 "503": _json("Not ready; components give the reasons.", _ref("Readiness"))},
            ),
        },
        "/metrics": {
            "get": _operation(
                "getMetrics", "Metrics in the Prometheus text format", "server",
                {"200": {"description": "The metrics.",
                         "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
                         "content": {"text/plain": {"schema": {"type": "string"}}}}},
            ),
        },
    }


def openapi_document() -> Schema:
    """Build the OpenAPI 3.1 document as a dict."""
    # The browser console's routes are described beside them, in cicd.api.console.
    from cicd.api.console import add_console_routes

    return add_console_routes({
        "openapi": "3.1.0",
        "info": {
            "title": "cicd API",
            "version": __version__,
            "description": "Runs, step logs, events, dead letters and nodes of a cicd server.",
        },
        "paths": {
            **_run_paths(), **_log_paths(), **_dead_letter_paths(), **_trace_paths(),
            **_event_and_system_paths(),
        },
        "components": _components(),
    })


def openapi_json() -> bytes:
    return msgspec.json.encode(openapi_document())
