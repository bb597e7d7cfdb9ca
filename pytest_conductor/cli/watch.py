"""``conductor-bus watch``: a live view of workers, locks and the last messages."""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import datetime
from typing import Any

from pytest_conductor.bus import MessageBus
from pytest_conductor.cli.context import EXIT_OK, PROG, Context, print_warnings
from pytest_conductor.cli.tables import indent, table, until, workers_table
from pytest_conductor.util.timestamps import format_iso, utc_now

__all__ = ["cmd_watch", "render_frame"]


def cmd_watch(ctx: Context) -> int:
    bus = ctx.bus()
    clear = not ctx.args.once and sys.stdout.isatty()
    while True:
        width = max(shutil.get_terminal_size((120, 40)).columns, 60)
        frame = render_frame(bus, utc_now(), ctx.args.stale_after, ctx.args.messages, width)
        if clear:
            sys.stdout.write("\x1b[H\x1b[2J")
        sys.stdout.write(frame + "\n")
        sys.stdout.flush()
        print_warnings(bus)
        if ctx.args.once:
            return EXIT_OK
        time.sleep(ctx.args.interval)


def render_frame(
    bus: MessageBus, now: datetime, stale_after: float, last: int, width: int | None = None
) -> str:
    """One screen of ``watch``: workers, active locks, deadlock if any, last messages.

    Lines longer than ``width`` are cut, so that a frame never wraps into a mess.
    """
    status = bus.worker_status()
    active = bus.locks(include_expired=False)
    messages = bus.messages()
    out = [f"{PROG} watch  {bus.path}  {format_iso(now)}", ""]
    out.append(f"Workers ({len(status)})")
    out.append(indent(workers_table(status, now, stale_after)) if status else "  none")
    out += ["", f"Active locks ({len(active)})"]
    if active:
        rows = [[i.path, i.worker_id, i.task_id or "-", until(i.expires_at, now)] for i in active]
        out.append(indent(table(["PATH", "WORKER", "TASK", "EXPIRES IN"], rows)))
    else:
        out.append("  none")
    cycle = bus.find_deadlock()
    if cycle:
        out += ["", f"DEADLOCK: {' -> '.join(cycle)}"]
    shown = messages[-last:] if last > 0 else []
    out += ["", f"Last messages ({len(shown)} of {len(messages)})"]
    rows = [_message_row(m) for m in shown]
    out.append(indent(table(["TIME", "TYPE", "SOURCE", "PAYLOAD"], rows)) if rows else "  none")
    text = "\n".join(out)
    if width is None:
        return text
    return "\n".join(ln if len(ln) <= width else ln[: width - 3] + "..." for ln in text.split("\n"))


def _message_row(message: dict[str, Any]) -> list[str]:
    stamp = str(message.get("timestamp", ""))
    payload = message.get("payload")
    if isinstance(payload, dict):
        text = " ".join(f"{k}={_short(v)}" for k, v in payload.items())
    else:
        text = _short(payload)
    return [stamp[11:19] or "?", str(message.get("type")), str(message.get("source")), text]


def _short(value: object, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."
