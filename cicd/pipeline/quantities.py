"""Durations, CPU amounts and memory sizes as written in a pipeline file.

Each ``parse_*`` function takes the text of one YAML scalar and raises
``ValueError`` with a message of the form ``expected ..., found ...`` when the text
is invalid. The parser adds the file, line and key path to that message.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

DURATION_EXAMPLE = "a duration like 30s, 10m or 1h30m"
CPU_EXAMPLE = "a number of CPUs like 0.5 or 2, or millicores like 500m"
MEMORY_EXAMPLE = "a memory size like 512Mi, 1Gi or 1000000 (bytes)"

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


def parse_duration(text: str) -> float:
    """Parse a duration such as ``30s``, ``10m``, ``1h30m`` or ``500ms`` into seconds.

    Components are whole numbers with the units h, m, s and ms, in that order and each
    at most once. The result is greater than 0 and at most 365 days.
    """
    found = f"expected {DURATION_EXAMPLE}, found {text!r}"
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
        raise ValueError(f"expected a duration greater than 0, found {text!r}")
    if total_millis > MAX_DURATION_SECONDS * 1000:
        raise ValueError(f"expected a duration of at most 8760h (365 days), found {text!r}")
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
    found = f"expected {CPU_EXAMPLE}, found {value!r}"
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
        raise ValueError(f"expected a CPU amount greater than 0, found {value!r}")
    if millis > MAX_CPU_MILLIS:
        raise ValueError(f"expected at most {MAX_CPU_MILLIS // 1000} CPUs, found {value!r}")
    return millis


def parse_memory(value: str | int) -> int:
    """Parse a memory size into bytes: ``512Mi`` gives 536870912.

    An integer counts bytes. A string may end in Ki, Mi, Gi or Ti (powers of 1024) or
    in k, M, G or T (powers of 1000). The number may have decimals when the result is
    a whole number of bytes, as in ``1.5Gi``. The result is greater than 0.
    """
    found = f"expected {MEMORY_EXAMPLE}, found {value!r}"
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
        raise ValueError(f"expected a memory size greater than 0, found {value!r}")
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"expected a memory size below 8Ei, found {value!r}")
    return size


def _to_decimal(text: str, found: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(found) from None
