"""Durations, CPU amounts, memory sizes and image references as written in a pipeline file.

Each ``parse_*`` and ``check_*`` function takes the text of one YAML scalar and
raises ``ValueError`` with a message of the form ``expected ..., found ...`` when
the text is invalid. The parser adds the file, line and key path to that message.
``quote`` renders the found value in every such message.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

DURATION_EXAMPLE = "a duration like 30s, 10m or 1h30m"
CPU_EXAMPLE = "a number of CPUs like 0.5 or 2, or millicores like 500m"
MEMORY_EXAMPLE = "a memory size like 512Mi, 1Gi or 1000000 (bytes)"
IMAGE_EXAMPLE = (
    "an image reference like busybox, python:3.12-slim or registry.example.com:5000/team/app:1.0"
)

# Error messages show at most this many characters of a value.
QUOTE_MAX_CHARS = 80

# Policy limit: a longer timeout is almost always a typo such as 10000h.
MAX_DURATION_SECONDS = 365 * 24 * 3600
# The Docker Engine API takes CPUs as NanoCpus and memory as bytes, both int64.
MAX_CPU_MILLIS = (2**63 - 1) // 1_000_000
MAX_MEMORY_BYTES = 2**63 - 1

# Duration units in the only order they may appear, with their length in milliseconds.
_DURATION_UNITS: dict[str, int] = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_DURATION_UNIT_ORDER = list(_DURATION_UNITS)
# "ms" comes first in the alternation so that "500ms" is not read as "500m" plus "s".
_DURATION_COMPONENT = re.compile(r"([0-9]+)(ms|h|m|s)")
_BARE_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_DECIMAL_DURATION = re.compile(r"(?:[0-9]*\.[0-9]+(?:ms|h|m|s))+")

_CPU_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_CPU_MILLICORES = re.compile(r"([0-9]+)m")

_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_MEMORY_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")

# Image references follow Docker's grammar, as github.com/distribution/reference
# v0.5.0 documents it in reference.go: [REGISTRY[:PORT]/]PATH[:TAG][@DIGEST].
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_ALGORITHM = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
_IMAGE_DIGEST = re.compile(rf"{_DIGEST_ALGORITHM}:[0-9a-fA-F]{{32,}}")
# The same source limits the name, registry included, to 255 characters.
MAX_IMAGE_NAME_CHARS = 255


def quote(value: object) -> str:
    """Render a value for an error message as ``repr`` does, cut after 80 characters.

    ``repr`` escapes control characters and lone surrogates, so a quoted string is
    one printable line. A longer string ends in ``...`` and its length.
    """
    if not isinstance(value, str) or len(value) <= QUOTE_MAX_CHARS:
        return repr(value)
    return f"{value[:QUOTE_MAX_CHARS]!r}... ({len(value)} characters)"


def parse_duration(text: str) -> float:
    """Parse a duration such as ``30s``, ``10m``, ``1h30m`` or ``500ms`` into seconds.

    Components are whole numbers with the units h, m, s and ms, in that order and each
    at most once. The result is greater than 0 and at most 365 days.
    """
    found = f"expected {DURATION_EXAMPLE}, found {quote(text)}"
    if _BARE_NUMBER.fullmatch(text):
        raise ValueError(f"{found}; add a unit, e.g. 90s")
    components = _split_duration(text)
    if components is None:
        raise ValueError(found + _duration_hint(text))

    ranks = [_DURATION_UNIT_ORDER.index(unit) for _, unit in components]
    if ranks != sorted(set(ranks)):
        raise ValueError(f"{found}; write the units in the order h, m, s, ms, each once")
    total_millis = sum(count * _DURATION_UNITS[unit] for count, unit in components)
    if total_millis == 0:
        raise ValueError(f"expected a duration greater than 0, found {quote(text)}")
    if total_millis > MAX_DURATION_SECONDS * 1000:
        raise ValueError(f"expected a duration of at most 8760h (365 days), found {quote(text)}")
    return total_millis / 1000


def _split_duration(text: str) -> list[tuple[int, str]] | None:
    """Split ``1h30m`` into ``[(1, "h"), (30, "m")]``, or return None if it has other text."""
    if not text:
        return None
    components: list[tuple[int, str]] = []
    position = 0
    while position < len(text):
        component = _DURATION_COMPONENT.match(text, position)
        if component is None:
            return None
        components.append((int(component.group(1)), component.group(2)))
        position = component.end()
    return components


def _duration_hint(text: str) -> str:
    if _DECIMAL_DURATION.fullmatch(text):
        return "; use whole numbers, e.g. 1h30m instead of 1.5h"
    if text.lower() != text and _split_duration(text.lower()) is not None:
        return "; write the units in lowercase: h, m, s, ms"
    return ""


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest duration text that ``parse_duration`` reads back.

    The value is rounded to whole milliseconds. Zero is formatted as ``0s``, which
    ``parse_duration`` rejects because a timeout must be greater than 0.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite number of seconds >= 0, found {seconds!r}")
    remaining = round(seconds * 1000)
    if remaining == 0:
        return "0s"
    parts: list[str] = []
    for unit, millis in _DURATION_UNITS.items():
        count, remaining = divmod(remaining, millis)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_cpu(value: str | float) -> int:
    """Parse a CPU amount into millicores: ``0.5`` and ``"500m"`` both give 500.

    A number counts CPUs in steps of 0.001. A string ending in ``m`` counts
    millicores. The result is greater than 0.
    """
    found = f"expected {CPU_EXAMPLE}, found {quote(value)}"
    if isinstance(value, bool):
        raise TypeError(found)
    if isinstance(value, int):
        millis = value * 1000
    else:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(found)
            text = repr(value)
        else:
            text = value
        millicores = _CPU_MILLICORES.fullmatch(text)
        if millicores is not None:
            millis = int(millicores.group(1))
        elif _CPU_DECIMAL.fullmatch(text) or isinstance(value, float):
            exact = _to_decimal(text, found) * 1000
            if exact != exact.to_integral_value():
                raise ValueError(f"{found}; the smallest step is 0.001 CPU (1m)")
            millis = int(exact)
        else:
            raise ValueError(found)

    if millis <= 0:
        raise ValueError(f"expected a CPU amount greater than 0, found {quote(value)}")
    if millis > MAX_CPU_MILLIS:
        raise ValueError(f"expected at most {MAX_CPU_MILLIS // 1000} CPUs, found {quote(value)}")
    return millis


def parse_memory(value: str | int) -> int:
    """Parse a memory size into bytes: ``512Mi`` gives 536870912.

    An integer counts bytes. A string may end in Ki, Mi, Gi or Ti (powers of 1024) or
    in k, M, G or T (powers of 1000). The number may have decimals when the result is
    a whole number of bytes, as in ``1.5Gi``. The result is greater than 0.
    """
    found = f"expected {MEMORY_EXAMPLE}, found {quote(value)}"
    if isinstance(value, bool):
        raise TypeError(found)
    if isinstance(value, int):
        size = value
    else:
        written = _MEMORY_SIZE.fullmatch(value)
        if written is None:
            raise ValueError(found)
        number, unit = written.groups()
        if unit not in _MEMORY_UNITS:
            raise ValueError(
                f"{found}; use one of the units Ki, Mi, Gi, Ti (powers of 1024) "
                "or k, M, G, T (powers of 1000)"
            )
        if " " in value or "\t" in value:
            raise ValueError(f"{found}; write the unit without a space, e.g. 512Mi")
        exact = _to_decimal(number, found) * _MEMORY_UNITS[unit]
        if exact != exact.to_integral_value():
            raise ValueError(f"{found}; the size must be a whole number of bytes")
        size = int(exact)

    if size <= 0:
        raise ValueError(f"expected a memory size greater than 0, found {quote(value)}")
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"expected a memory size below 8Ei, found {quote(value)}")
    return size


def check_image_reference(text: str) -> None:
    """Check that ``text`` is a Docker image reference such as ``python:3.12-slim``.

    The registry part before the first ``/`` is recognised as Docker does: it
    contains a ``.`` or a ``:``, is ``localhost``, or has an uppercase letter.
    """
    found = f"expected {IMAGE_EXAMPLE}, found {quote(text)}"
    rest, at_sign, digest = text.partition("@")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, remainder
    else:
        registry, path = None, name

    if len(name) > MAX_IMAGE_NAME_CHARS:
        raise ValueError(f"{found}; the name before the tag has {len(name)} characters, "
                         f"and the maximum is {MAX_IMAGE_NAME_CHARS}")
    if registry is not None and not _REGISTRY.fullmatch(registry):
        raise ValueError(f"{found}; {quote(registry)} is not a registry host such as "
                         "registry.example.com:5000")
    if not _IMAGE_PATH.fullmatch(path):
        hint = (
            "; the repository name must be lowercase"
            if _IMAGE_PATH.fullmatch(path.lower())
            else "; a repository name is lowercase letters and digits joined by '.', '_', "
            "'__', dashes or '/', starting and ending with a letter or digit"
        )
        raise ValueError(found + hint)
    if tag is not None and not _IMAGE_TAG.fullmatch(tag):
        raise ValueError(f"{found}; a tag has up to 128 letters, digits, '_', '.' and '-', "
                         "not starting with '.' or '-'")
    if at_sign and not _IMAGE_DIGEST.fullmatch(digest):
        raise ValueError(f"{found}; a digest is an algorithm and at least 32 hex digits, "
                         "such as sha256:<64 hex digits>")


def _to_decimal(text: str, found: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(found) from None
