"""JSON responses and the mapping from errors to HTTP statuses and error bodies.

Every error the API returns is an :class:`~cicd.orchestration.documents.ErrorBody`::

    code                  status  raised by
    REQUEST-INVALID       400     ApiError: a body, query parameter or header is invalid
    USAGE                 400     UsageError: the source of a run cannot be used
    HOST-NOT-ALLOWED      421     the Host header is not one of the server's names
    ORIGIN-NOT-ALLOWED    403     the Origin header names another site
    NOT-FOUND             404     NotFoundError, or no route matches the URL
    METHOD-NOT-ALLOWED    405     the route exists but not for this method
    ORC-STATE             409     IllegalTransition: the run or job is not in a state for this
    BODY-TOO-LARGE        413     the request body is over the limit
    MEDIA-TYPE            415     the body is not JSON
    RANGE-NOT-SATISFIABLE 416     a log range starts past the end of the output
    PIPELINE-INVALID      422     PipelineError, with details {file, line, column, path}
    SCH-CAP               429     CapacityError, with a Retry-After header
    SRV-STOPPING          503     ShuttingDown
    ORC-INFRA, WKM-PROV   500     StorageError, ProviderError (logged; message without internals)
    INTERNAL              500     any other error (logged with the request id)
"""

from __future__ import annotations

import logging
import math

import msgspec
from quart import Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import WebsocketMismatch

from cicd.errors import (
    CapacityError,
    CicdError,
    IdempotencyMismatch,
    IllegalTransition,
    NotFoundError,
    PipelineError,
    ProviderError,
    ShuttingDown,
    StorageError,
    UsageError,
)
from cicd.orchestration.documents import ErrorBody

logger = logging.getLogger("cicd.api")

ENCODER = msgspec.json.Encoder()

JSON = "application/json"

# A submitted pipeline travels as YAML text inside the JSON body.
MAX_BODY_BYTES = 4 * 1024 * 1024


class ApiError(CicdError):
    """An invalid request (parameter, header, body, range) that the API rejects itself."""

    code = "REQUEST-INVALID"

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "REQUEST-INVALID",
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.headers = headers or {}
        self.details = details


def json_response(
    value: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Encode ``value`` (a msgspec struct, list or dict) as a JSON response."""
    return Response(ENCODER.encode(value), status=status, headers=headers, content_type=JSON)


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(code=code, message=message, request_id=request_id, details=details)
    return json_response(body, status=status, headers=headers)


def response_for_error(error: BaseException, request_id: str) -> Response:
    """Map an error raised while handling a request to its status and error body.

    Errors the client cannot fix (storage, provider, anything unexpected) are logged
    here with the request id, and their message stays in the log.
    """
    if isinstance(error, ApiError):
        return error_response(
            error.status, error.code, error.message, request_id,
            details=error.details, headers=error.headers,
        )
    if isinstance(error, HTTPException):
        return _response_for_http_exception(error, request_id)
    if isinstance(error, PipelineError):
        details: dict[str, object] = {
            "file": error.file, "line": error.line, "column": error.column, "path": error.path,
        }
        return error_response(422, error.code, str(error), request_id, details=details)
    if isinstance(error, CapacityError):
        seconds = max(1, math.ceil(error.retry_after))
        return error_response(
            429, error.code, f"{error} (retry after {seconds} s)", request_id,
            details={"retry_after": seconds}, headers={"Retry-After": str(seconds)},
        )
    if isinstance(error, ShuttingDown):
        return error_response(503, error.code, str(error), request_id)
    if isinstance(error, NotFoundError):
        return error_response(404, error.code, str(error), request_id)
    if isinstance(error, IdempotencyMismatch):
        return error_response(422, error.code, str(error), request_id)
    if isinstance(error, UsageError):
        return error_response(400, error.code, str(error), request_id)
    if isinstance(error, IllegalTransition):
        return error_response(409, error.code, str(error), request_id)
    if isinstance(error, StorageError):
        message = "the run store failed"
    elif isinstance(error, ProviderError):
        message = "a worker provider failed"
    else:
        message = "the server failed to handle the request"
    code = error.code if isinstance(error, CicdError) else "INTERNAL"
    logger.error("request %s failed with %s: %s", request_id, code, error, exc_info=error)
    return error_response(
        500, code, f"{message}; the server log has the cause under request id {request_id}",
        request_id,
    )


def _response_for_http_exception(error: HTTPException, request_id: str) -> Response:
    """Turn Quart's own errors (no route, wrong method, body too large) into error bodies."""
    status = error.code or 500
    headers: dict[str, str] = {}
    if isinstance(error, WebsocketMismatch):
        code, message = "REQUEST-INVALID", "this URL takes WebSocket connections only"
    elif isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or []))
        code, message = "METHOD-NOT-ALLOWED", f"this URL accepts only {allowed}"
        headers["Allow"] = allowed
    elif status == 404:
        code = "NOT-FOUND"
        message = "no route matches this URL; the API is under /api/v1 (see /api/v1/openapi.json)"
    elif status == 413:
        code = "BODY-TOO-LARGE"
        message = (
            f"the request body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB; "
            "send a shorter pipeline_yaml or use pipeline_path"
        )
    elif status < 500:
        code, message = "REQUEST-INVALID", error.description or error.name
    else:
        code, message = "INTERNAL", "the server failed to handle the request"
        logger.error("request %s failed with HTTP %d: %s", request_id, status, error)
    return error_response(status, code, message, request_id, headers=headers)
