"""Plain-text tables and durations for the ``status``, ``locks`` and ``watch`` output."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pytest_conductor.util.timestamps import parse_iso

__all__ = ["duration", "indent", "table", "until", "workers_table"]


def workers_table(status: dict[str, dict[str, Any]], now: datetime, stale_after: float) -> str:
    """``worker-status.json`` as a table; RUNNING workers silent too long are marked STALE."""
    rows = []
    for worker_id, entry in sorted(status.items()):
        age = _age(entry.get("last_heartbeat"), now)
        seen = "never" if age is None else f"{duration(age)} ago"
        if entry.get("status") == "RUNNING" and (age is None or age > stale_after):
            seen += "  STALE"
        pct = entry.get("progress_pct")
        rows.append(
            [
                worker_id,
                str(entry.get("task_id") or "-"),
                str(entry.get("status", "?")),
                "-" if pct is None else f"{pct}%",
                seen,
                str(entry.get("note") or ""),
            ]
        )
    return table(["WORKER", "TASK", "STATUS", "PROGRESS", "HEARTBEAT", "NOTE"], rows)


def _age(timestamp: object, now: datetime) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return max((now - parse_iso(timestamp)).total_seconds(), 0.0)
    except ValueError:
        return None


def until(timestamp: str, now: datetime) -> str:
    """Time left before ``timestamp``, or how long ago it passed; ``?`` if unreadable.

    No timestamp at all is a lock in the worker template's shape, which lasts as long as
    its worker does.
    """
    if not timestamp:
        return "while its worker runs"
    try:
        left = (parse_iso(timestamp) - now).total_seconds()
    except ValueError:
        return "?"
    return duration(left) if left > 0 else f"expired {duration(-left)} ago"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h10m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, headers first, no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def indent(text: str) -> str:
    """Every line of ``text`` two spaces in."""
    return "\n".join("  " + line for line in text.splitlines())
