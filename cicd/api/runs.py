"""Routes for runs: submit, list, show, cancel, retry."""

from __future__ import annotations

import logging
import string
from urllib.parse import quote

import msgspec
from quart import Blueprint, Response, request

from cicd.api.params import DEFAULT_PAGE, MAX_PAGE, RUN_STATES, Query, decode_body
from cicd.api.responses import ApiError, json_response
from cicd.api.state import current_request_id, current_service
from cicd.orchestration.documents import SubmitRequest

logger = logging.getLogger("cicd.api")

runs = Blueprint("runs", __name__)

SUBMIT_DECODER = msgspec.json.Decoder(SubmitRequest)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
_KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + string.punctuation)


def run_location(run_id: str) -> str:
    return f"/api/v1/runs/{quote(run_id, safe='')}"


def _idempotency_key() -> str | None:
    keys = request.headers.getlist(IDEMPOTENCY_KEY_HEADER)
    if not keys:
        return None
    if len(keys) > 1:
        raise ApiError(f"the {IDEMPOTENCY_KEY_HEADER} header is given {len(keys)} times; send "
                       "it once")
    key = keys[0]
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not set(key) <= _KEY_CHARACTERS:
        raise ApiError(
            f"invalid {IDEMPOTENCY_KEY_HEADER} header: use 1 to {MAX_IDEMPOTENCY_KEY} visible "
            "ASCII characters, such as a UUID"
        )
    return key


def _require_json() -> None:
    if request.mimetype != "application/json":
        content_type = request.mimetype or "none"
        raise ApiError(
            f"the request body must be JSON (Content-Type: application/json), not {content_type}",
            status=415,
            code="MEDIA-TYPE",
        )


@runs.post("/runs")
async def submit_run() -> Response:
    Query(request.args, ())
    key = _idempotency_key()
    _require_json()
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    submit = decode_body(body, SUBMIT_DECODER)
    document, created = await current_service().submit(submit, idempotency_key=key)
    return json_response(
        document, status=201 if created else 200, headers={"Location": run_location(document.id)}
    )


@runs.get("/runs")
async def list_runs() -> Response:
    query = Query(request.args, ("state", "tenant", "pipeline", "since", "cursor", "limit"))
    page = await current_service().list_runs(
        state=query.choice("state", RUN_STATES),
        tenant=query.text("tenant"),
        pipeline=query.text("pipeline"),
        since_ms=query.timestamp_ms("since"),
        cursor=query.text("cursor"),
        limit=query.integer("limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE),
    )
    return json_response(page)


@runs.get("/runs/<run_id>")
async def get_run(run_id: str) -> Response:
    Query(request.args, ())
    return json_response(await current_service().get_run(run_id))


@runs.post("/runs/<run_id>/cancel")
async def cancel_run(run_id: str) -> Response:
    Query(request.args, ())
    result = await current_service().cancel_run(run_id)
    if result.changed:
        logger.info("request %s cancelled run %s", current_request_id(), run_id)
    return json_response(result)


@runs.post("/runs/<run_id>/jobs/<job_id>/cancel")
async def cancel_job(run_id: str, job_id: str) -> Response:
    Query(request.args, ())
    result = await current_service().cancel_job(run_id, job_id)
    if result.changed:
        logger.info("request %s cancelled job %s of run %s", current_request_id(), job_id, run_id)
    return json_response(result)


@runs.post("/runs/<run_id>/retry")
async def retry_run(run_id: str) -> Response:
    Query(request.args, ())
    result = await current_service().retry_run(run_id)
    logger.info(
        "request %s retried run %s as run %s", current_request_id(), run_id, result.run.id
    )
    return json_response(result, status=201, headers={"Location": run_location(result.run.id)})
