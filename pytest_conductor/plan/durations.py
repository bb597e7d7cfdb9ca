"""Durations as planners write them (``30m``, ``1h30m``, ``500ms``) to and from seconds.

Pure Python: no pytest import.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BARE = re.compile(_NUMBER)
_PART = re.compile(rf"\s*({_NUMBER})\s*([a-z]*)\s*")
_EXPECTED = "expected e.g. '30m', '1h30m', '1h 30m', '45s', '1.5h', '500ms' or a number of seconds"


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``: ``30m``, ``1h30m``, ``1h 30m``, ``45s``, ``1.5h``, ``500ms``,
    or a bare number of seconds (``90``). Raises ``ValueError`` for anything else, including
    negative, empty and non-finite values."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"invalid duration {text!r}: {_EXPECTED}")
    if not isinstance(text, str):
        return _checked(float(text), text)
    source = text.strip().lower()
    if not source:
        raise ValueError(f"empty duration: {_EXPECTED}")
    if source.startswith("-"):
        raise ValueError(f"duration must not be negative: {text!r}")
    if _BARE.fullmatch(source):
        return _checked(float(source), text)
    total = 0.0
    pos = 0
    while pos < len(source):
        match = _PART.match(source, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: {_EXPECTED}")
        number, unit = match.groups()
        if not unit:
            # "1h30" could mean minutes or seconds; make the planner say which.
            raise ValueError(f"invalid duration {text!r}: {number!r} has no unit; {_EXPECTED}")
        if unit not in _UNIT_SECONDS:
            units = ", ".join(_UNIT_SECONDS)
            raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r} (known: {units})")
        total += float(number) * _UNIT_SECONDS[unit]
        pos = match.end()
    return _checked(total, text)


def _checked(seconds: float, text: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: not a finite number")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form: ``1h30m``, ``2m5s``, ``45s``, ``0.4s``, ``20ms``.

    :func:`parse_duration` reads every result back (to the precision shown)."""
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format a non-finite duration: {seconds!r}")
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if 0 < seconds < 0.1:
        return f"{round(seconds * 1000)}ms"
    tenths = round(seconds, 1)
    if tenths < 60:
        return f"{int(tenths)}s" if tenths == int(tenths) else f"{tenths:.1f}s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
    return "".join(f"{value}{unit}" for value, unit in parts if value)
