"""Parsing of query parameters, integer path segments and the Range header.

Each invalid value raises ApiError (400).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Collection
from typing import TypeVar

import msgspec
from werkzeug.datastructures import MultiDict

from cicd.api.responses import ApiError
from cicd.orchestration.states import State

MAX_PAGE = 200
DEFAULT_PAGE = 50
# The largest integer a JavaScript client can hold exactly; bounds offsets and event ids.
MAX_INTEGER = 2**53 - 1
RUN_STATES = tuple(state.value for state in State)

_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


class Query:
    """The query parameters of one request, checked against the names a route accepts."""

    def __init__(self, args: MultiDict[str, str], allowed: Collection[str]) -> None:
        unknown = sorted(set(args) - set(allowed))
        if unknown:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise ApiError(
                f"unknown query parameter {unknown[0]!r}; this route accepts: {accepted}"
            )
        for name in args:
            if len(args.getlist(name)) > 1:
                raise ApiError(f"query parameter {name!r} is given more than once")
        self._args = args

    def text(self, name: str) -> str | None:
        value = self._args.get(name)
        if value == "":
            raise ApiError(f"query parameter {name!r} is empty; give a value or leave it out")
        return value

    def integer(self, name: str, *, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.optional_integer(name, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def optional_integer(
        self, name: str, *, minimum: int, maximum: int | None = None
    ) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        maximum = MAX_INTEGER if maximum is None else maximum
        bounds = f"from {minimum} to {maximum}"
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise ApiError(f"query parameter {name}={raw!r} is not an integer {bounds}")
        value = int(raw)
        if not minimum <= value <= maximum:
            raise ApiError(
                f"query parameter {name}={value} is out of range; give an integer {bounds}"
            )
        return value

    def flag(self, name: str) -> bool:
        raw = self.text(name)
        if raw is None:
            return False
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ApiError(f"query parameter {name}={raw!r} is not a flag; give 1, 0, true or false")

    def choice(self, name: str, choices: Collection[str]) -> str | None:
        raw = self.text(name)
        if raw is not None and raw not in choices:
            raise ApiError(f"query parameter {name}={raw!r} is not one of: {', '.join(choices)}")
        return raw

    def timestamp_ms(self, name: str) -> int | None:
        """Parse milliseconds since the epoch, or an ISO 8601 time (UTC when it has no offset)."""
        raw = self.text(name)
        if raw is None:
            return None
        if raw.isascii() and raw.isdigit() and len(raw) <= 15:
            return int(raw)
        try:
            moment = datetime.datetime.fromisoformat(raw)
        except ValueError:
            raise ApiError(
                f"query parameter {name}={raw!r} is neither milliseconds since the epoch nor an "
                "ISO 8601 time such as 2024-05-01T12:00:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        since_ms = int(moment.timestamp() * 1000)
        if since_ms < 0:
            raise ApiError(f"query parameter {name}={raw!r} is before 1970")
        return since_ms


def path_integer(label: str, raw: str, *, minimum: int, maximum: int = MAX_INTEGER) -> int:
    """Parse an integer path segment, such as a dead letter id, that the route takes as text.

    The route takes text so that a non-integer gets 400 with this message, not a 404.
    ``label`` names the value in the message ("dead letter id").
    """
    bounds = f"from {minimum} to {maximum}"
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(f"invalid {label} {raw!r}: give an integer {bounds}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(f"{label} {value} is out of range; give an integer {bounds}")
    return value


T = TypeVar("T")


# A \u escape of a surrogate (\ud800 to \udfff), which msgspec rejects as "truncated"
# input when it is not half of a pair.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode a JSON request body, turning msgspec's error (with its ``$`` path) into ApiError."""
    if not body.strip():
        raise ApiError("the request body is empty; send a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        if str(exc) == "Input data was truncated" and _SURROGATE_ESCAPE.search(body):
            raise ApiError("the request body is not valid JSON: it ends early, or it escapes "
                           "a lone surrogate (\\ud800 to \\udfff without its pair), which "
                           "is no character; send the character itself") from None
        raise ApiError(f"the request body is not valid JSON: {exc}") from None


class ByteRange(msgspec.Struct, frozen=True):
    """One range of a ``Range: bytes=...`` header: ``first-last``, ``first-`` or ``-suffix``."""

    first: int | None
    last: int | None
    suffix: int | None = None


def parse_range(header: str) -> ByteRange | None:
    """Parse a Range header, or return None when its unit is not ``bytes``.

    The caller ignores a Range in another unit and sends the whole output.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        raise ApiError(f"Range {header!r} requests several ranges; this server sends only one")
    invalid = ApiError(
        f"invalid Range {header!r}; use bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT"
    )
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    numbers = [part for part in (first, last) if part]
    if not dash or not numbers or not all(part.isascii() and part.isdigit() for part in numbers):
        raise invalid
    if not first:
        return ByteRange(first=None, last=None, suffix=int(last))
    start = int(first)
    end = int(last) if last else None
    if end is not None and end < start:
        raise ApiError(f"invalid Range {header!r}: the last byte is before the first")
    return ByteRange(first=start, last=end)
