#!/usr/bin/env python3
"""The other side of the protocol, played as separate processes by test_upstream_protocol.

Each role reads and writes the track's files the way the upstream orchestrator
(conductor-orchestrator-superpowers) and its worker template do: plain ``open``/``json``,
no filelock, no pytest_conductor import. The file shapes are written out here from the
upstream documents; no upstream code is copied.

    python upstream_roles.py poll-metadata TRACK_DIR OUT STOP
        Read metadata.json every 20 ms until the file STOP exists; append each new
        (current_step, step_status, status) seen to OUT as a JSON line. Once, mid-run,
        take the orchestrator's ``mkdir .metadata.lock`` for 2 s and add a key of its own.

    python upstream_roles.py hold-string-lock BUS PATH WORKER HOLD OUT
        Wait until the run has a worker registered, then lock PATH the worker template's
        way (``locks.json[PATH] = WORKER``, a plain string) while heartbeating as RUNNING
        in worker-status.json; after HOLD seconds release it as the template does and
        write the release time to OUT.

    python upstream_roles.py wait-unlock BUS PATH WORKER OUT
        Wait until PATH is locked by someone else, post BLOCKED, then wait (60 s at most)
        for ``events/FILE_UNLOCK_*.event`` as the worker template polls it; write what it
        saw and when to OUT.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    # The template writes in place; a temporary file and rename keeps our readers whole.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.up")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def post(bus: Path, kind: str, source: str, payload: dict[str, Any]) -> None:
    message = {
        "id": f"msg-{uuid.uuid4()}",
        "type": kind,
        "source": source,
        "timestamp": now_text(),
        "payload": payload,
    }
    with (bus / "queue.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(message) + "\n")


def poll_metadata(track_dir: Path, out: Path, stop: Path) -> int:
    path = track_dir / "metadata.json"
    seen: tuple[Any, ...] | None = None
    wrote_own_key = False
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        data = read_json(path)
        if isinstance(data, dict):
            loop = data.get("loop_state") or {}
            state = (loop.get("current_step"), loop.get("step_status"), data.get("status"))
            if state != seen:
                seen = state
                checkpoint = (loop.get("checkpoints") or {}).get("PARALLEL_EXECUTE") or {}
                record = {"state": list(state), "agent": checkpoint.get("agent")}
                record["version"] = data.get("version")
                with out.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            if state[1] == "IN_PROGRESS" and not wrote_own_key:
                wrote_own_key = True
                lock = track_dir / ".metadata.lock"
                while True:
                    try:
                        lock.mkdir()
                        break
                    except FileExistsError:
                        time.sleep(0.01)
                try:
                    data = read_json(path)
                    data["board_sessions"] = [{"session_id": "board-1", "verdict": "APPROVED"}]
                    write_json(path, data)
                    time.sleep(2.0)  # a slow orchestrator: the run must not wait for it
                finally:
                    lock.rmdir()
        time.sleep(0.02)
    return 0


def heartbeat(bus: Path, worker: str, status: str) -> None:
    path = bus / "worker-status.json"
    data = read_json(path) or {}
    data[worker] = {
        "worker_id": worker,
        "task_id": "up-1",
        "started_at": data.get(worker, {}).get("started_at", now_text()),
        "last_heartbeat": now_text(),
        "status": status,
    }
    write_json(path, data)


def hold_string_lock(bus: Path, filepath: str, worker: str, hold: float, out: Path) -> int:
    deadline = time.monotonic() + 60
    while not (read_json(bus / "worker-status.json") or {}) and time.monotonic() < deadline:
        time.sleep(0.02)  # the run has rotated the bus and registered its first worker
    heartbeat(bus, worker, "RUNNING")
    locks = read_json(bus / "locks.json") or {}
    if filepath in locks:
        out.write_text(json.dumps({"error": f"{filepath} already locked: {locks[filepath]}"}))
        return 1
    locks[filepath] = worker  # the template's shape: a plain string
    write_json(bus / "locks.json", locks)
    post(bus, "FILE_LOCK", worker, {"filepath": filepath})
    until = time.monotonic() + hold
    while time.monotonic() < until:
        heartbeat(bus, worker, "RUNNING")
        time.sleep(0.2)
    locks = read_json(bus / "locks.json") or {}
    held_by = locks.pop(filepath, None)
    released_at = now_text()
    write_json(bus / "locks.json", locks)
    post(bus, "FILE_UNLOCK", worker, {"filepath": filepath})
    # The template's post_message touches an event named after the payload's task id.
    (bus / "events" / "FILE_UNLOCK_all.event").touch()
    heartbeat(bus, worker, "COMPLETE")
    out.write_text(json.dumps({"held_by": held_by, "released_at": released_at}))
    return 0


def wait_unlock(bus: Path, filepath: str, worker: str, out: Path) -> int:
    deadline = time.monotonic() + 60
    holder = None
    while time.monotonic() < deadline:
        entry = (read_json(bus / "locks.json") or {}).get(filepath)
        if isinstance(entry, dict) and entry.get("worker_id") != worker:
            # The readers' own parse: fromisoformat(ts.replace("Z", "")), naive UTC.
            expires = datetime.fromisoformat(entry["expires_at"].replace("Z", ""))
            if expires > datetime.now(timezone.utc).replace(tzinfo=None):
                holder = entry["worker_id"]
                break
        time.sleep(0.02)
    if holder is None:
        out.write_text(json.dumps({"error": "never saw the lock"}))
        return 1
    post(
        bus,
        "BLOCKED",
        worker,
        {"task_id": "up-2", "waiting_for": "file_lock", "resource": filepath},
    )
    blocked_at = now_text()
    found: list[str] = []
    start = time.time()
    while time.time() - start < 60:
        # The template's exact call (glob.glob on this pattern), not a pathlib equivalent.
        found = glob.glob(f"{bus}/events/FILE_UNLOCK_*.event")  # noqa: PTH207
        if found:
            break
        time.sleep(0.05)
    seen_at = now_text()
    content = Path(found[0]).read_text(encoding="utf-8") if found else None
    out.write_text(
        json.dumps(
            {
                "holder": holder,
                "blocked_at": blocked_at,
                "events": [Path(f).name for f in found],
                "content": content,
                "seen_at": seen_at,
                "waited": time.time() - start,
            }
        )
    )
    return 0 if found else 1


def main(argv: list[str]) -> int:
    role, *args = argv
    if role == "poll-metadata":
        return poll_metadata(Path(args[0]), Path(args[1]), Path(args[2]))
    if role == "hold-string-lock":
        return hold_string_lock(Path(args[0]), args[1], args[2], float(args[3]), Path(args[4]))
    if role == "wait-unlock":
        return wait_unlock(Path(args[0]), args[1], args[2], Path(args[3]))
    raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
