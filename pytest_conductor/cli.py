"""``conductor-bus``: the message bus from a shell, for agents and for the people watching.

Agents are not Python programs; they report through this tool. It reads the environment
the dispatcher gives every worker (``CONDUCTOR_BUS``, ``CONDUCTOR_TASK_ID``,
``CONDUCTOR_WORKER_ID``, ``CONDUCTOR_TRACK``, ``CONDUCTOR_ROOT``); ``--bus``, ``--task``,
``--worker``, ``--track`` and ``--root`` override it.

Exit status: 0 done, 1 the operation did not happen (e.g. unlocking a lock one does not
hold), 2 usage error (missing variable, bad JSON), 3 lock held by another worker,
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_conductor.bus import (
    BusError,
    BusLockTimeout,
    MessageBus,
    normalize_lock_path,
)
from pytest_conductor.timestamps import format_iso, parse_iso, utc_now

__all__ = [
    "EXIT_FAILED",
    "EXIT_HELD",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "project_path",
    "render_frame",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HELD = 3
EXIT_INTERRUPTED = 130

PROG = "conductor-bus"

# Two missed five-minute heartbeats (DESIGN section 5) make a worker stale.
DEFAULT_STALE_AFTER = 600.0


class UsageError(Exception):
    """A user error: reported as one line and exit status 2, never as a traceback."""


@dataclass
class Context:
    """Where the bus is and who is talking, resolved from flags and environment."""

    args: argparse.Namespace
    command: str
    opened: MessageBus | None = None

    def option(self, name: str, env: str) -> str | None:
        value = getattr(self.args, name, None)
        if value is None:
            value = os.environ.get(env) or None
        return value

    def need(self, name: str, env: str, what: str) -> str:
        value = self.option(name, env)
        if value is None:
            raise UsageError(f"{what} is needed: set {env} or pass --{name}")
        return value

    @property
    def worker(self) -> str:
        return self.need("worker", "CONDUCTOR_WORKER_ID", "a worker id")

    @property
    def task(self) -> str:
        return self.need("task", "CONDUCTOR_TASK_ID", "a task id")

    @property
    def root(self) -> Path | None:
        value = self.option("root", "CONDUCTOR_ROOT")
        return Path(value) if value else None

    def bus_dir(self) -> Path:
        value = self.option("bus", "CONDUCTOR_BUS")
        if value:
            return Path(value)
        track, root = self.option("track", "CONDUCTOR_TRACK"), self.root
        if track and root:
            return root / "conductor" / "tracks" / track / ".message-bus"
        raise UsageError(
            "the bus folder is needed: set CONDUCTOR_BUS or pass --bus "
            "(or set CONDUCTOR_ROOT and CONDUCTOR_TRACK)"
        )

    def bus(self, *, create: bool = False) -> MessageBus:
        if self.opened is None:
            path = self.bus_dir()
            if not create and not path.is_dir():
                raise UsageError(
                    f"bus folder {path} does not exist: check CONDUCTOR_BUS / --bus, "
                    f"or create it with '{PROG} init'"
                )
            source = self.option("worker", "CONDUCTOR_WORKER_ID") or PROG
            # Damage reports are printed in this tool's own words (_print_warnings).
            self.opened = MessageBus(path, source=source, warn=False)
        return self.opened


# -- commands ---------------------------------------------------------------------------


def cmd_init(ctx: Context) -> int:
    bus = ctx.bus(create=True)
    bus.init()
    print(bus.path)
    return EXIT_OK


def cmd_post(ctx: Context) -> int:
    try:
        payload = json.loads(ctx.args.payload)
    except ValueError as error:
        raise UsageError(f"--payload is not valid JSON ({error}): {ctx.args.payload!r}") from None
    if not isinstance(payload, dict):
        raise UsageError('--payload must be a JSON object, e.g. \'{"task_id": "1.1"}\'')
    message = ctx.bus().post(ctx.args.type, payload)
    print(message["id"])
    return EXIT_OK


def cmd_heartbeat(ctx: Context) -> int:
    task = ctx.option("task", "CONDUCTOR_TASK_ID")
    entry = ctx.bus().heartbeat(ctx.worker, ctx.args.progress, task_id=task)
    print(f"{entry['worker_id']} alive at {entry['last_heartbeat']}")
    return EXIT_OK


def cmd_progress(ctx: Context) -> int:
    worker, task = ctx.worker, ctx.task
    ctx.bus().progress(task, ctx.args.pct, ctx.args.note, worker_id=worker)
    print(f"{task}: {ctx.args.pct:g}%")
    return EXIT_OK


def cmd_complete(ctx: Context) -> int:
    task = ctx.task
    worker = ctx.option("worker", "CONDUCTOR_WORKER_ID")
    ctx.bus().complete(
        task, ctx.args.commit, ctx.args.files or (), ctx.args.unblocks or (), worker_id=worker
    )
    print(f"TASK_COMPLETE {task}")
    return EXIT_OK


def cmd_fail(ctx: Context) -> int:
    task = ctx.task
    worker = ctx.option("worker", "CONDUCTOR_WORKER_ID")
    ctx.bus().fail(task, ctx.args.error, worker_id=worker)
    print(f"TASK_FAILED {task}")
    return EXIT_OK


def cmd_blocked(ctx: Context) -> int:
    task = ctx.task
    worker = ctx.option("worker", "CONDUCTOR_WORKER_ID")
    by = ctx.args.by[0] if len(ctx.args.by) == 1 else ctx.args.by
    ctx.bus().blocked(task, by, ctx.args.reason, worker_id=worker)
    print(f"TASK_BLOCKED {task}")
    return EXIT_OK


def cmd_lock(ctx: Context) -> int:
    worker, task = ctx.worker, ctx.task
    path = project_path(ctx.args.path, ctx.root)
    result = ctx.bus().acquire_lock(path, worker, task, ttl=ctx.args.ttl)
    if result.granted:
        print(f"locked {result.path} until {result.expires_at}")
        return EXIT_OK
    holder_task = f" (task {result.holder_task})" if result.holder_task else ""
    print(f"{result.path} is held by {result.holder}{holder_task} until {result.expires_at}")
    return EXIT_HELD


def cmd_unlock(ctx: Context) -> int:
    worker = ctx.worker
    path = project_path(ctx.args.path, ctx.root)
    bus = ctx.bus()
    if bus.release_lock(path, worker):
        print(f"unlocked {path}")
        return EXIT_OK
    holders = {info.path: info.worker_id for info in bus.locks()}
    holder = holders.get(normalize_lock_path(path))
    reason = f"it is held by {holder}" if holder else "it is not locked"
    print(f"{PROG}: {path} not unlocked: {reason}", file=sys.stderr)
    return EXIT_FAILED


def cmd_locks(ctx: Context) -> int:
    infos = ctx.bus().locks(include_expired=not ctx.args.active)
    if ctx.args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return EXIT_OK
    if not infos:
        print("no locks")
        return EXIT_OK
    now = utc_now()
    rows = [
        [
            i.path,
            i.worker_id,
            i.task_id or "-",
            "active" if i.active else "EXPIRED",
            i.expires_at,
            _until(i.expires_at, now),
        ]
        for i in infos
    ]
    print(_table(["PATH", "WORKER", "TASK", "STATE", "EXPIRES AT", "IN"], rows))
    return EXIT_OK


def cmd_status(ctx: Context) -> int:
    status = ctx.bus().worker_status()
    if ctx.args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    if not status:
        print("no workers")
        return EXIT_OK
    print(_workers_table(status, utc_now(), ctx.args.stale_after))
    return EXIT_OK


def cmd_tail(ctx: Context) -> int:
    bus = ctx.bus()
    path = bus.queue_path
    data = path.read_bytes() if path.exists() else b""
    complete, _, partial = data.rpartition(b"\n")
    lines = complete.split(b"\n") if complete else []
    for line in lines[-ctx.args.lines :] if ctx.args.lines > 0 else []:
        _write_line(line)
    if not ctx.args.follow:
        return EXIT_OK
    _follow(path, len(data), partial, ctx.args.interval)
    return EXIT_OK  # pragma: no cover - _follow returns only through Ctrl-C


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
        _print_warnings(bus)
        if ctx.args.once:
            return EXIT_OK
        time.sleep(ctx.args.interval)


# -- pieces ------------------------------------------------------------------------------


def project_path(path: str, root: Path | None) -> str:
    """A lock path relative to the project root; absolute paths must lie inside the root."""
    given = Path(path)
    if not given.is_absolute():
        return path
    if root is None:
        raise UsageError(
            f"{path} is absolute: give it relative to the project root, "
            "or set CONDUCTOR_ROOT (or --root) so it can be made relative"
        )
    try:
        return given.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{path} is outside the project root {root}") from None


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
    out.append(_indent(_workers_table(status, now, stale_after)) if status else "  none")
    out += ["", f"Active locks ({len(active)})"]
    if active:
        rows = [[i.path, i.worker_id, i.task_id or "-", _until(i.expires_at, now)] for i in active]
        out.append(_indent(_table(["PATH", "WORKER", "TASK", "EXPIRES IN"], rows)))
    else:
        out.append("  none")
    cycle = bus.find_deadlock()
    if cycle:
        out += ["", f"DEADLOCK: {' -> '.join(cycle)}"]
    shown = messages[-last:] if last > 0 else []
    out += ["", f"Last messages ({len(shown)} of {len(messages)})"]
    rows = [_message_row(m) for m in shown]
    out.append(_indent(_table(["TIME", "TYPE", "SOURCE", "PAYLOAD"], rows)) if rows else "  none")
    text = "\n".join(out)
    if width is None:
        return text
    return "\n".join(ln if len(ln) <= width else ln[: width - 3] + "..." for ln in text.split("\n"))


def _workers_table(status: dict[str, dict[str, Any]], now: datetime, stale_after: float) -> str:
    rows = []
    for worker_id, entry in sorted(status.items()):
        age = _age(entry.get("last_heartbeat"), now)
        seen = "never" if age is None else f"{_duration(age)} ago"
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
    return _table(["WORKER", "TASK", "STATUS", "PROGRESS", "HEARTBEAT", "NOTE"], rows)


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


def _age(timestamp: object, now: datetime) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return max((now - parse_iso(timestamp)).total_seconds(), 0.0)
    except ValueError:
        return None


def _until(timestamp: str, now: datetime) -> str:
    try:
        left = (parse_iso(timestamp) - now).total_seconds()
    except ValueError:
        return "?"
    return _duration(left) if left > 0 else f"expired {_duration(-left)} ago"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _write_line(line: bytes) -> None:
    sys.stdout.write(line.decode("utf-8", "replace") + "\n")


def _follow(path: Path, position: int, partial: bytes, interval: float) -> None:
    """Print lines appended to ``path`` until interrupted; start over when it is rotated."""
    sys.stdout.flush()
    identity = _identity(path)
    while True:
        time.sleep(interval)
        current = _identity(path)
        if current is None:
            continue
        if current[0] != (identity[0] if identity else None) or current[1] < position:
            # The queue was moved to runs/ and a new one begun: read the new one whole.
            identity, position, partial = current, 0, b""
        with path.open("rb") as handle:
            handle.seek(position)
            chunk = handle.read()
        if not chunk:
            continue
        position += len(chunk)
        complete, _, partial = (partial + chunk).rpartition(b"\n")
        if complete:
            for line in complete.split(b"\n"):
                _write_line(line)
            sys.stdout.flush()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size


def _print_warnings(bus: MessageBus) -> None:
    for message in bus.warnings:
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    bus.warnings.clear()


# -- parser ------------------------------------------------------------------------------

Command = Callable[[Context], int]

_COMMON_HELP = {
    "bus": "bus folder (default: $CONDUCTOR_BUS)",
    "task": "task id (default: $CONDUCTOR_TASK_ID)",
    "worker": "worker id (default: $CONDUCTOR_WORKER_ID)",
    "track": "track id (default: $CONDUCTOR_TRACK)",
    "root": "project root (default: $CONDUCTOR_ROOT)",
}


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("where and who (flags override the environment)")
    for name, text in _COMMON_HELP.items():
        group.add_argument(f"--{name}", default=default, metavar=name.upper(), help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Talk to a pytest-conductor message bus: report progress, take file "
        "locks, watch a run.",
        epilog="examples:\n"
        "  conductor-bus heartbeat --progress 40\n"
        "  conductor-bus lock src/stores/data-store.ts\n"
        "  conductor-bus complete --commit $(git rev-parse HEAD)\n"
        "  conductor-bus watch\n\n"
        "exit status: 0 done, 1 not done, 2 usage error, 3 lock held by another worker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Command, summary: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS: a flag given before the command must survive the subparser's defaults.
        _add_common(p, argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    command(
        "init",
        cmd_init,
        "create the bus folder and its files (keeps existing ones)",
        "conductor-bus init --bus conductor/tracks/auth_20261127/.message-bus",
    )

    p = command(
        "post",
        cmd_post,
        "append one message of any type to queue.jsonl",
        """conductor-bus post PROGRESS --payload '{"task_id": "1.1", "progress_pct": 50}'""",
    )
    p.add_argument("type", metavar="TYPE", help="message type, e.g. PROGRESS")
    p.add_argument("--payload", default="{}", metavar="JSON", help="payload, a JSON object")

    p = command(
        "heartbeat",
        cmd_heartbeat,
        "tell the dispatcher this worker is alive",
        "conductor-bus heartbeat --progress 40",
    )
    p.add_argument("--progress", type=float, metavar="N", help="progress in percent (0-100)")

    p = command(
        "progress",
        cmd_progress,
        "record progress and post a PROGRESS message",
        'conductor-bus progress 60 --note "writing tests"',
    )
    p.add_argument("pct", type=float, metavar="N", help="progress in percent (0-100)")
    p.add_argument("--note", default="", help="what the worker is doing now")

    p = command(
        "complete",
        cmd_complete,
        "report the task done (TASK_COMPLETE + event)",
        "conductor-bus complete --commit $(git rev-parse HEAD) --files src/auth.py",
    )
    p.add_argument("--commit", metavar="SHA", help="commit holding the work")
    p.add_argument("--files", nargs="*", action="extend", metavar="PATH", help="files modified")
    p.add_argument("--unblocks", nargs="*", action="extend", metavar="ID", help="tasks unblocked")

    p = command(
        "fail",
        cmd_fail,
        "report the task failed (TASK_FAILED + event)",
        'conductor-bus fail --error "tests in tests/test_auth.py fail: 3 of 12"',
    )
    p.add_argument("--error", required=True, help="what went wrong, for the report")

    p = command(
        "blocked",
        cmd_blocked,
        "report the task cannot go on (TASK_BLOCKED + event)",
        'conductor-bus blocked --by 1.2 --reason "needs the schema from 1.2"',
    )
    p.add_argument("--by", nargs="+", required=True, metavar="ID", help="blocking task id(s)")
    p.add_argument("--reason", required=True, help="why the task cannot go on")

    p = command(
        "lock",
        cmd_lock,
        "lock a project file before editing it (exit 0 granted, 3 held by another worker)",
        "conductor-bus lock src/stores/data-store.ts --ttl 900",
    )
    p.add_argument("path", metavar="PATH", help="file path relative to the project root")
    p.add_argument(
        "--ttl",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds until the lock expires (default 1800)",
    )

    p = command(
        "unlock",
        cmd_unlock,
        "release a lock this worker holds",
        "conductor-bus unlock src/stores/data-store.ts",
    )
    p.add_argument("path", metavar="PATH", help="file path relative to the project root")

    p = command(
        "locks", cmd_locks, "list file locks, active and expired", "conductor-bus locks --active"
    )
    p.add_argument("--active", action="store_true", help="only locks not yet expired")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "status", cmd_status, "show worker-status.json as a table", "conductor-bus status --json"
    )
    p.add_argument("--json", action="store_true", help="print the JSON itself")
    p.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="S",
        help="flag RUNNING workers silent this long (default 600)",
    )

    p = command(
        "tail",
        cmd_tail,
        "print the last queue lines; -f follows new ones",
        "conductor-bus tail -n 20 -f",
    )
    p.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="how many lines to print first (default 10)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--interval", type=float, default=0.2, metavar="S", help=argparse.SUPPRESS)

    p = command(
        "watch",
        cmd_watch,
        "live view of workers, locks and the last messages",
        "conductor-bus watch --interval 2 --stale-after 600",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between frames (default 2)",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="S",
        help="flag RUNNING workers silent this long (default 600)",
    )
    p.add_argument(
        "--messages",
        type=int,
        default=10,
        metavar="N",
        help="how many recent messages to show (default 10)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``conductor-bus`` with ``argv`` (default: the command line); returns the status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    ctx = Context(args, args.command)
    func: Command = args.func
    try:
        status = func(ctx)
    except (UsageError, BusError) as error:
        print(f"{PROG} {ctx.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``conductor-bus tail -f | head``): stop quietly, and
        # keep Python from complaining about the unflushed rest at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except (BusLockTimeout, OSError) as error:
        print(f"{PROG} {ctx.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if ctx.opened is not None:
            _print_warnings(ctx.opened)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
