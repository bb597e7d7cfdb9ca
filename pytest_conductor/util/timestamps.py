"""UTC timestamps in the one text form the message bus and its readers share.

Written as ``2026-11-27T12:00:00.123456Z``: always UTC, always six fraction digits, always
ending in ``Z``. Existing readers parse them with
``datetime.fromisoformat(ts.replace("Z", ""))``, so the form must stay exactly this one
(an offset such as ``+00:00`` would survive that call, but the fixed form keeps the
strings sortable as text too).
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["format_iso", "parse_iso", "utc_now", "utc_now_iso"]

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def format_iso(moment: datetime) -> str:
    """``moment`` in the bus form; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime(_FORMAT)


def utc_now_iso() -> str:
    """The current time in the bus form, e.g. ``2026-11-27T12:00:00.123456Z``."""
    return format_iso(utc_now())


def parse_iso(ts: str) -> datetime:
    """An aware datetime from an ISO-8601 text; ``Z`` and naive forms are read as UTC.

    Raises ``ValueError`` naming the text when it is not a timestamp.
    """
    text = ts.strip()
    if text.endswith(("Z", "z")):
        # Python 3.10's fromisoformat does not know the "Z" suffix.
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {ts!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
