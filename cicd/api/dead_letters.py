"""Routes for dead letters: events a subscriber still failed to handle after its retries."""

from __future__ import annotations

import logging

import msgspec
from quart import Blueprint, Response, request

from cicd.api.params import Query, path_integer
from cicd.api.responses import json_response
from cicd.api.state import current_request_id, current_service

logger = logging.getLogger("cicd.api")

dead_letters = Blueprint("dead_letters", __name__)


class ReplayResult(msgspec.Struct, kw_only=True):
    """The outcome of replaying one dead letter."""

    # False when the dead letter was replayed before or its subscriber failed again.
    replayed: bool
    message: str


@dead_letters.get("/dead-letters")
async def list_dead_letters() -> Response:
    Query(request.args, ())
    return json_response(await current_service().list_dead_letters())


@dead_letters.post("/dead-letters/<dead_letter_id>/replay")
async def replay_dead_letter(dead_letter_id: str) -> Response:
    Query(request.args, ())
    letter_id = path_integer("dead letter id", dead_letter_id, minimum=1)
    replayed, message = await current_service().replay_dead_letter(letter_id)
    if replayed:
        logger.info("request %s replayed dead letter %d", current_request_id(), letter_id)
    else:
        logger.info(
            "request %s did not replay dead letter %d: %s", current_request_id(), letter_id,
            message,
        )
    return json_response(ReplayResult(replayed=replayed, message=message))
