from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_conductor.plan.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("45s", 45.0),
        ("2h", 7200.0),
        ("90", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        (" 2H ", 7200.0),
        ("1 hour 2 minutes", 3720.0),
        ("10min", 600.0),
        ("1d", 86400.0),
        ("0", 0.0),
        (".5s", 0.5),
        (90, 90.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration_accepts(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("abc", "invalid duration 'abc'"),
        ("-5m", "must not be negative"),
        (-1, "must not be negative"),
        ("1h30", "'30' has no unit"),
        ("5x", "unknown unit 'x'"),
        ("nan", "invalid duration 'nan'"),
        (math.inf, "not a finite number"),
        ("9" * 400 + "h", "not a finite number"),
        (True, "invalid duration True"),
    ],
)
def test_parse_duration_refuses(text: str | float, message: str) -> None:
    with pytest.raises(ValueError, match=r"expected|unit|negative|finite") as info:
        parse_duration(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5400, "1h30m"),
        (45, "45s"),
        (0.4, "0.4s"),
        (0.04, "40ms"),
        (0, "0s"),
        (60, "1m"),
        (3605, "1h5s"),
        (125, "2m5s"),
        (59.99, "1m"),
        (12.34, "12.3s"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_refuses_non_finite() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        format_duration(math.nan)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=10 * 86400, allow_nan=False))
def test_format_then_parse_round_trips_to_the_precision_shown(seconds: float) -> None:
    back = parse_duration(format_duration(seconds))
    tolerance = 0.0005 if seconds < 0.1 else 0.05 if seconds < 60 else 0.5
    assert abs(back - seconds) <= tolerance + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12))
def test_parse_duration_only_ever_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0
    assert math.isfinite(seconds)
