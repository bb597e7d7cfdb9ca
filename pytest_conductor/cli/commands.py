"""The ``conductor-bus`` commands that report to the bus and read it, one handler each.

Each handler takes the :class:`~pytest_conductor.cli.context.Context` and returns the exit
status; ``watch`` lives in :mod:`pytest_conductor.cli.watch`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from pytest_conductor.agents.dispatch import agent_registry
from pytest_conductor.bus import LockResult, MessageBus, normalize_lock_path
from pytest_conductor.bus.forward import forwarded_to, lock_result, request_lock
from pytest_conductor.cli.context import (
    EXIT_FAILED,
    EXIT_HELD,
    EXIT_OK,
    PROG,
    Context,
    UsageError,
    project_path,
)
from pytest_conductor.cli.tables import table, until, workers_table
from pytest_conductor.util.timestamps import utc_now

__all__ = [
    "cmd_blocked",
    "cmd_complete",
    "cmd_fail",
    "cmd_heartbeat",
    "cmd_init",
    "cmd_lock",
    "cmd_locks",
    "cmd_post",
    "cmd_progress",
    "cmd_status",
    "cmd_tail",
    "cmd_unlock",
]


def cmd_init(ctx: Context) -> int:
    bus = ctx.bus(create=True)
    bus.init()
    print(bus.path)
    return EXIT_OK


def cmd_post(ctx: Context) -> int:
    text, where = _payload_text(ctx)
    try:
        payload = json.loads(text)
    except ValueError as error:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise UsageError(f"{where} is not valid JSON ({error}): {shown!r}") from None
    except RecursionError:
        raise UsageError(f"{where} is nested too deeply") from None
    if not isinstance(payload, dict):
        raise UsageError('--payload must be a JSON object, e.g. \'{"task_id": "1.1"}\'')
    message = ctx.bus().post(ctx.args.type, payload)
    print(message["id"])
    return EXIT_OK


def _payload_text(ctx: Context) -> tuple[str, str]:
    """The payload's JSON text and where it came from (for messages)."""
    source = ctx.args.payload_file
    if source is None:
        return str(ctx.args.payload), "--payload"
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise UsageError(f"--payload-file {source}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8"), f"--payload-file {source}"
    except UnicodeDecodeError:
        raise UsageError(f"--payload-file {source} is not valid UTF-8 text") from None


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
    unblocks = ctx.args.unblocks
    if unblocks is None:
        unblocks = _direct_dependents(ctx, task)
    ctx.bus().complete(task, ctx.args.commit, ctx.args.files or (), unblocks, worker_id=worker)
    print(f"TASK_COMPLETE {task}")
    return EXIT_OK


def _direct_dependents(ctx: Context, task: str) -> list[str]:
    """The nodes that depend on ``task`` directly (readers of ``TASK_COMPLETE.unblocks``
    expect them): ``CONDUCTOR_UNBLOCKS`` from the dispatcher, else read from the track's
    plan; none when neither is there."""
    given = os.environ.get("CONDUCTOR_UNBLOCKS")
    if given is not None:
        return given.split()
    track, root = ctx.option("track", "CONDUCTOR_TRACK"), ctx.root
    if not track or root is None:
        return []
    # Imported here: the plan reader brings PyYAML, which every heartbeat would pay for.
    from pytest_conductor.graph.algorithms import dependents
    from pytest_conductor.plan.reader import PlanError, load_plan

    try:
        plan = load_plan(root / "conductor" / "tracks" / track / "plan.md")
    except (PlanError, OSError, ValueError):
        return []
    return list(dependents(plan.deps).get(task, ()))


def cmd_fail(ctx: Context) -> int:
    task = ctx.task
    worker = ctx.option("worker", "CONDUCTOR_WORKER_ID")
    ctx.bus().fail(task, ctx.args.error, worker_id=worker, stack_trace=ctx.args.stack_trace)
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
    bus = ctx.bus()
    result: LockResult
    if forwarded_to(bus.path):
        # A worker on another machine: the controller's bus decides, for every machine.
        request = {"op": "lock", "path": path, "worker_id": worker, "task_id": task}
        request |= {"ttl": ctx.args.ttl, "source": bus.source}
        result = lock_result(request_lock(bus.path, request, carrier_pid=_carrier(bus, worker)))
    else:
        result = bus.acquire_lock(path, worker, task, ttl=ctx.args.ttl)
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
    if forwarded_to(bus.path):
        request = {"op": "unlock", "path": path, "worker_id": worker, "source": bus.source}
        answer = request_lock(bus.path, request, carrier_pid=_carrier(bus, worker))
        released, holders = bool(answer["released"]), dict(answer["holders"])
    else:
        released = bus.release_lock(path, worker)
        holders = {} if released else {info.path: info.worker_id for info in bus.locks()}
    if released:
        print(f"unlocked {path}")
        return EXIT_OK
    holder = holders.get(normalize_lock_path(path))
    reason = f"it is held by {holder}" if holder else "it is not locked"
    print(f"{PROG}: {path} not unlocked: {reason}", file=sys.stderr)
    return EXIT_FAILED


def _carrier(bus: MessageBus, worker: str) -> int | None:
    """The xdist worker process that started agent ``worker`` (its registry record)."""
    for record in agent_registry(bus.path).records():
        if record.name == worker:
            return record.owner_pid
    return None


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
            i.expires_at or "-",
            until(i.expires_at, now),
        ]
        for i in infos
    ]
    print(table(["PATH", "WORKER", "TASK", "STATE", "EXPIRES AT", "IN"], rows))
    return EXIT_OK


def cmd_status(ctx: Context) -> int:
    status = ctx.bus().worker_status()
    if ctx.args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    if not status:
        print("no workers")
        return EXIT_OK
    print(workers_table(status, utc_now(), ctx.args.stale_after))
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
