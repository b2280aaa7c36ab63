"""Tests of duration, CPU and memory parsing in cicd.pipeline.quantities."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cicd.pipeline.quantities import (
    MAX_DURATION_SECONDS,
    format_duration,
    parse_cpu,
    parse_duration,
    parse_memory,
)

DURATION = "expected a duration like 30s, 10m or 1h30m, found"
CPU = "expected a number of CPUs like 0.5 or 2, or millicores like 500m, found"
MEMORY = "expected a memory size like 512Mi, 1Gi or 1000000 (bytes), found"
MEMORY_UNITS = "use one of the units Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000)"

VALID_DURATIONS = [
    ("30s", 30.0),
    ("10m", 600.0),
    ("1h30m", 5400.0),
    ("2h", 7200.0),
    ("1h2m3s", 3723.0),
    ("500ms", 0.5),
    ("1s500ms", 1.5),
    ("1h0m", 3600.0),
    ("90m", 5400.0),
    ("0h1s", 1.0),
    ("007s", 7.0),
    ("8760h", 31_536_000.0),
]

INVALID_DURATIONS = [
    ("90", f"{DURATION} '90'; add a unit, e.g. 90s"),
    ("1.5", f"{DURATION} '1.5'; add a unit, e.g. 90s"),
    ("-5", f"{DURATION} '-5'; add a unit, e.g. 90s"),
    ("", f"{DURATION} ''"),
    ("10 minutes", f"{DURATION} '10 minutes'"),
    ("10 m", f"{DURATION} '10 m'"),
    (" 10m", f"{DURATION} ' 10m'"),
    ("-5s", f"{DURATION} '-5s'"),
    ("1d", f"{DURATION} '1d'"),
    ("h", f"{DURATION} 'h'"),
    ("1.5h", f"{DURATION} '1.5h'; use whole numbers, e.g. 1h30m instead of 1.5h"),
    ("10M", f"{DURATION} '10M'; write the units in lowercase: h, m, s, ms"),
    ("1H30M", f"{DURATION} '1H30M'; write the units in lowercase: h, m, s, ms"),
    ("30m1h", f"{DURATION} '30m1h'; write the units in the order h, m, s, ms, each once"),
    ("1m1m", f"{DURATION} '1m1m'; write the units in the order h, m, s, ms, each once"),
    ("5ms1s", f"{DURATION} '5ms1s'; write the units in the order h, m, s, ms, each once"),
    ("0s", "expected a duration greater than 0, found '0s'"),
    ("0h0m", "expected a duration greater than 0, found '0h0m'"),
    ("8761h", "expected a duration of at most 8760h (365 days), found '8761h'"),
]


@pytest.mark.parametrize(("text", "seconds"), VALID_DURATIONS)
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), INVALID_DURATIONS)
def test_parse_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (1, "1s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (3723.004, "1h2m3s4ms"),
        (0.0004, "0s"),
        (0.0006, "1ms"),
        (100 * 3600, "100h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="expected a finite number of seconds >= 0"):
        format_duration(seconds)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=MAX_DURATION_SECONDS * 1000))
def test_duration_round_trip(millis: int) -> None:
    text = format_duration(millis / 1000)
    assert parse_duration(text) == millis / 1000
    assert format_duration(parse_duration(text)) == text


@settings(max_examples=200)
@given(
    st.lists(st.booleans(), min_size=4, max_size=4).filter(any),
    st.lists(st.integers(min_value=1, max_value=999), min_size=4, max_size=4),
)
def test_duration_components_add_up(present: list[bool], counts: list[int]) -> None:
    units = [("h", 3600_000), ("m", 60_000), ("s", 1000), ("ms", 1)]
    text = ""
    millis = 0
    for (unit, unit_millis), use, count in zip(units, present, counts, strict=True):
        if use:
            text += f"{count}{unit}"
            millis += count * unit_millis
    assert parse_duration(text) == millis / 1000


VALID_CPUS: list[tuple[str | float, int]] = [
    ("0.5", 500),
    ("2", 2000),
    ("500m", 500),
    ("1m", 1),
    ("0.001", 1),
    (".25", 250),
    ("2.", 2000),
    ("1.250", 1250),
    ("0500m", 500),
    (0.5, 500),
    (4, 4000),
    (1e-3, 1),
]

INVALID_CPUS: list[tuple[str | float, str]] = [
    ("0", "expected a CPU amount greater than 0, found '0'"),
    ("0m", "expected a CPU amount greater than 0, found '0m'"),
    (0, "expected a CPU amount greater than 0, found 0"),
    ("0.0005", f"{CPU} '0.0005'; the smallest step is 0.001 CPU (1m)"),
    ("1.5m", f"{CPU} '1.5m'"),
    ("-1", f"{CPU} '-1'"),
    ("1e3", f"{CPU} '1e3'"),
    ("two", f"{CPU} 'two'"),
    ("500 m", f"{CPU} '500 m'"),
    ("", f"{CPU} ''"),
    (float("inf"), f"{CPU} inf"),
    (float("nan"), f"{CPU} nan"),
    ("10000000000000", "expected at most 9223372036 CPUs, found '10000000000000'"),
]


@pytest.mark.parametrize(("value", "millis"), VALID_CPUS)
def test_parse_cpu_valid(value: str | float, millis: int) -> None:
    assert parse_cpu(value) == millis


@pytest.mark.parametrize(("value", "message"), INVALID_CPUS)
def test_parse_cpu_invalid(value: str | float, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cpu(value)
    assert str(caught.value) == message


def test_parse_cpu_rejects_bool() -> None:
    with pytest.raises(TypeError):
        parse_cpu(True)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=10**9))
def test_cpu_forms_agree(millis: int) -> None:
    whole, fraction = divmod(millis, 1000)
    assert parse_cpu(f"{millis}m") == millis
    assert parse_cpu(f"{whole}.{fraction:03d}") == millis


VALID_MEMORY: list[tuple[str | int, int]] = [
    ("512Mi", 512 * 1024**2),
    ("1Gi", 1024**3),
    ("1.5Gi", 1536 * 1024**2),
    ("2Ti", 2 * 1024**4),
    ("64Ki", 65536),
    ("1k", 1000),
    ("500M", 500_000_000),
    ("2G", 2_000_000_000),
    ("1T", 10**12),
    ("1000000", 1_000_000),
    (4096, 4096),
]

INVALID_MEMORY: list[tuple[str | int, str]] = [
    ("512MB", f"{MEMORY} '512MB'; {MEMORY_UNITS}"),
    ("1K", f"{MEMORY} '1K'; {MEMORY_UNITS}"),
    ("1m", f"{MEMORY} '1m'; {MEMORY_UNITS}"),
    ("1GiB", f"{MEMORY} '1GiB'; {MEMORY_UNITS}"),
    ("512 Mi", f"{MEMORY} '512 Mi'; write the unit without a space, e.g. 512Mi"),
    ("0.1Ki", f"{MEMORY} '0.1Ki'; the size must be a whole number of bytes"),
    ("1.5", f"{MEMORY} '1.5'; the size must be a whole number of bytes"),
    ("Mi", f"{MEMORY} 'Mi'"),
    ("-1Mi", f"{MEMORY} '-1Mi'"),
    ("", f"{MEMORY} ''"),
    ("0", "expected a memory size greater than 0, found '0'"),
    ("0Gi", "expected a memory size greater than 0, found '0Gi'"),
    (-5, "expected a memory size greater than 0, found -5"),
    ("8192Pi", f"{MEMORY} '8192Pi'; {MEMORY_UNITS}"),
    ("9000000Ti", "expected a memory size below 8Ei, found '9000000Ti'"),
]


@pytest.mark.parametrize(("value", "size"), VALID_MEMORY)
def test_parse_memory_valid(value: str | int, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(("value", "message"), INVALID_MEMORY)
def test_parse_memory_invalid(value: str | int, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory(value)
    assert str(caught.value) == message


def test_parse_memory_rejects_bool() -> None:
    with pytest.raises(TypeError):
        parse_memory(False)


@settings(max_examples=200)
@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(
        [("", 1), ("k", 1000), ("M", 1000**2), ("G", 1000**3), ("T", 1000**4)]
        + [("Ki", 1024), ("Mi", 1024**2), ("Gi", 1024**3), ("Ti", 1024**4)]
    ),
)
def test_memory_units_multiply(count: int, unit: tuple[str, int]) -> None:
    suffix, multiplier = unit
    assert parse_memory(f"{count}{suffix}") == count * multiplier
