"""One canonical bus across machines: what a remote worker's bus sends to the controller's.

Pure Python: no pytest import. The xdist glue (``scheduling/remote.py``) carries the
changes over an execnet channel; this module decides what changed and how it lands.

- :class:`BusTail` runs on a worker whose files are not the controller's. Each
  :meth:`~BusTail.poll` returns the changes of the worker's own bus folder since the last
  poll: new whole lines of ``queue.jsonl``, event files written or removed, entries of
  ``worker-status.json`` that changed, and bytes appended to files under ``prompts/`` and
  ``logs/``. Each change is a tuple of plain values (execnet sends nothing else).
- :class:`BusMirror` runs on the controller and applies them to its bus, under the same
  locks every other writer takes. Queue lines are kept once by message id: two workers
  of one machine share one bus folder and both see every line.
- Locks are not mirrored: a worker that forwards its bus marks it (:data:`FORWARDED`),
  and ``conductor-bus lock``/``unlock`` then ask the controller through
  :func:`request_lock` (a request file the worker's forwarder carries over), so that
  agents on two machines exclude each other.
- Sharing: the controller writes a token into its bus (:func:`write_token`); a worker that
  finds that token in its own bus folder writes to the controller's files already, and
  forwards nothing (:func:`shares_bus`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from pytest_conductor.bus._base import EVENTS, LOGS, PROMPTS, QUEUE, WORKER_STATUS
from pytest_conductor.bus._files import BusLock, append_line, atomic_write
from pytest_conductor.bus._model import BusError, LockResult, check_id
from pytest_conductor.bus.core import MessageBus
from pytest_conductor.bus.workers import _clean_status

__all__ = [
    "FORWARDED",
    "LOCK_REQUESTS",
    "TOKEN",
    "BusMirror",
    "BusTail",
    "Change",
    "LockBroker",
    "forwarded_to",
    "lock_answer",
    "lock_result",
    "prepare_local_bus",
    "request_lock",
    "shares_bus",
    "write_token",
]

#: The controller's token in its own bus: a worker that finds it shares the controller's files.
TOKEN = ".controller-token"
#: Written into a worker's own bus while it is forwarded; holds the controller's bus path.
FORWARDED = ".forwarded"
#: Lock requests of agents on a forwarded bus, answered by the controller.
LOCK_REQUESTS = ".lock-requests"
#: Which run last set up a worker-side bus (two workers on one machine share it).
_RUN_MARK = ".conductor-run"
_FILE_FOLDERS = (PROMPTS, LOGS)
#: Bytes of one file sent per poll: a chatty agent log is sent in pieces, never all at once.
_CHUNK = 256 * 1024

#: ``("queue", lines)``, ``("event", name, content or None)``, ``("status", id, entry)``,
#: ``("file", relative path, offset, data)``, ``("lock", request id, request)``.
Change = tuple[Any, ...]


# --------------------------------------------------------------------------- sharing


def write_token(bus_dir: Path) -> str:
    """Write a fresh token into the controller's bus folder and return it."""
    token = uuid.uuid4().hex
    bus_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(bus_dir / TOKEN, token.encode())
    return token


def shares_bus(bus_dir: Path, token: str) -> bool:
    """Whether ``bus_dir`` (a worker's own bus folder) holds the controller's ``token``."""
    try:
        return (bus_dir / TOKEN).read_text(encoding="utf-8").strip() == token
    except OSError:
        return False


def prepare_local_bus(bus_dir: Path, run_id: str, controller_bus: str) -> Path | None:
    """Set up a worker's own bus for this run: earlier runs' files moved aside, once.

    Workers of one machine share the folder; the first of them rotates it (as the
    controller rotates its own), the others find the run id and leave it. Marks the bus
    as forwarded (:data:`FORWARDED`). Returns the archive folder of the rotation, if any.
    """
    bus = MessageBus(bus_dir, warn=False)
    bus_dir.mkdir(parents=True, exist_ok=True)
    archive = None
    with BusLock(str(bus_dir / f"{_RUN_MARK}.lock"), bus.lock_timeout):
        mark = bus_dir / _RUN_MARK
        try:
            done = mark.read_text(encoding="utf-8").strip() == run_id
        except OSError:
            done = False
        if not done:
            archive = bus.rotate()
            atomic_write(mark, run_id.encode())
    bus.init()
    (bus_dir / LOCK_REQUESTS).mkdir(exist_ok=True)
    atomic_write(bus_dir / FORWARDED, controller_bus.encode())
    return archive


def forwarded_to(bus_dir: Path) -> str | None:
    """The controller's bus path when ``bus_dir`` is a forwarded worker-side bus."""
    try:
        return (bus_dir / FORWARDED).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------- worker side


class BusTail:
    """The changes of a worker's own bus folder since the last :meth:`poll`.

    Starts from an empty view: everything present is sent at the first poll (the
    controller keeps queue lines once, and the rest is written idempotently).
    """

    def __init__(self, bus_dir: Path, pid: int | None = None) -> None:
        self.bus_dir = bus_dir
        #: Lock requests naming another process as their carrier are left to it.
        self.pid = os.getpid() if pid is None else pid
        self._queue_offset = 0
        self._events: dict[str, bytes] = {}
        self._status: dict[str, Any] = {}
        self._files: dict[str, tuple[int, int]] = {}  # relative path -> (inode, offset)

    def poll(self) -> list[Change]:
        changes: list[Change] = []
        changes += self._queue()
        changes += self._event_files()
        changes += self._worker_status()
        changes += self._appended_files()
        changes += self._lock_requests()
        return changes

    def _queue(self) -> Iterator[Change]:
        try:
            with (self.bus_dir / QUEUE).open("rb") as handle:
                handle.seek(self._queue_offset)
                data = handle.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only: a post may be in flight
        if end:
            self._queue_offset += end
            lines = b"".join(line + b"\n" for line in data[:end].split(b"\n") if line.strip())
            if lines:
                yield ("queue", lines)

    def _event_files(self) -> Iterator[Change]:
        seen: dict[str, bytes] = {}
        with contextlib.suppress(FileNotFoundError):
            for path in sorted((self.bus_dir / EVENTS).glob("*.event")):
                with contextlib.suppress(OSError):
                    seen[path.name] = path.read_bytes()
        for name, content in seen.items():
            if self._events.get(name) != content:
                yield ("event", name, content)
        for name in sorted(set(self._events) - set(seen)):
            yield ("event", name, None)
        self._events = seen

    def _worker_status(self) -> Iterator[Change]:
        try:
            value = json.loads((self.bus_dir / WORKER_STATUS).read_bytes() or b"{}")
        except (OSError, ValueError):
            return  # absent, or damaged: the next write repairs it
        if not isinstance(value, dict):
            return
        for worker, entry in sorted(value.items()):
            if isinstance(entry, dict) and self._status.get(worker) != entry:
                self._status[worker] = entry
                yield ("status", worker, entry)

    def _appended_files(self) -> Iterator[Change]:
        for folder in _FILE_FOLDERS:
            with contextlib.suppress(FileNotFoundError):
                for path in sorted((self.bus_dir / folder).iterdir()):
                    if path.name.startswith(".") or not path.is_file():
                        continue
                    change = self._appended(path, f"{folder}/{path.name}")
                    if change is not None:
                        yield change

    def _appended(self, path: Path, relative: str) -> Change | None:
        try:
            with path.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                size = os.fstat(handle.fileno()).st_size
                known_inode, offset = self._files.get(relative, (inode, -1))
                if known_inode != inode or size < offset:
                    offset = -1  # replaced or cut short: send it again from the start
                start = max(offset, 0)
                if size == start and offset >= 0:
                    return None
                handle.seek(start)
                data = handle.read(_CHUNK)
        except OSError:
            return None
        self._files[relative] = (inode, start + len(data))
        return ("file", relative, start, data)

    def _lock_requests(self) -> Iterator[Change]:
        with contextlib.suppress(FileNotFoundError):
            for path in sorted((self.bus_dir / LOCK_REQUESTS).glob("*.request")):
                try:
                    request = json.loads(path.read_bytes())
                except (OSError, ValueError):
                    continue  # gone, or another worker's claim raced us
                carrier = request.get("carrier_pid") if isinstance(request, dict) else None
                if carrier is not None and carrier != self.pid:
                    continue  # the worker that started the agent carries it
                try:
                    # Workers of one machine share the folder: the rename lets one send it.
                    path.rename(path.with_suffix(".claimed"))
                except OSError:
                    continue
                yield ("lock", path.stem, request)


def lock_answer(bus_dir: Path, rid: str, answer: dict[str, Any]) -> None:
    """Write the controller's answer to lock request ``rid`` (worker side)."""
    folder = bus_dir / LOCK_REQUESTS
    atomic_write(folder / f"{rid}.answer", json.dumps(answer).encode())


# --------------------------------------------------------------------------- controller side


class BusMirror:
    """Applies a remote worker's changes to the controller's bus."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._ids: set[str] = set()
        self._seed_ids()

    def _seed_ids(self) -> None:
        for message in self.bus.messages():
            if isinstance(message.get("id"), str):
                self._ids.add(message["id"])

    def apply(self, change: Change) -> None:
        kind = change[0]
        if kind == "queue":
            self._queue(change[1])
        elif kind == "event":
            self._event(change[1], change[2])
        elif kind == "status":
            self._status(change[1], change[2])
        elif kind == "file":
            self._file(change[1], change[2], change[3])
        else:
            raise BusError(f"unknown change {kind!r} from a worker")

    def _queue(self, lines: bytes) -> None:
        fresh = []
        for line in lines.split(b"\n"):
            if not line.strip():
                continue
            try:
                ident = json.loads(line).get("id")
            except (ValueError, AttributeError):
                ident = None
            if isinstance(ident, str):
                if ident in self._ids:
                    continue  # already here: another worker of that machine sent it
                self._ids.add(ident)
            fresh.append(line + b"\n")
        if fresh:
            with self.bus._locked(QUEUE):
                append_line(self.bus.queue_path, b"".join(fresh))

    def _event(self, name: str, content: bytes | None) -> None:
        if not name.endswith(".event") or "/" in name or name.startswith("."):
            raise BusError(f"event file name {name!r} from a worker is not one")
        target = self.bus.events_dir / name
        with self.bus._locked(EVENTS):
            self.bus.events_dir.mkdir(exist_ok=True)
            if content is None:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
            elif not target.is_file() or target.read_bytes() != content:
                atomic_write(target, content, durable=False)

    def _status(self, worker: str, entry: dict[str, Any]) -> None:
        check_id(worker, "worker id")
        with self.bus._locked(WORKER_STATUS):
            data = self.bus._load(WORKER_STATUS, _clean_status)
            if data.get(worker) != entry:
                data[worker] = dict(entry)
                self.bus._store(WORKER_STATUS, data)

    def _file(self, relative: str, offset: int, data: bytes) -> None:
        parts = PurePosixPath(relative).parts
        if len(parts) != 2 or parts[0] not in _FILE_FOLDERS or parts[1].startswith("."):
            raise BusError(f"file {relative!r} from a worker is not a bus prompt or log")
        target = self.bus.path.joinpath(*parts)
        target.parent.mkdir(exist_ok=True)
        with target.open("r+b" if offset and target.exists() else "wb") as handle:
            handle.seek(offset)
            handle.write(data)


class LockBroker:
    """The controller's answer to a remote agent's lock request, on the controller's bus.

    Remembers which agent ids took locks through which worker, so that the locks of a
    worker that died can be released (:meth:`release_all`).
    """

    def __init__(self, bus_dir: Path) -> None:
        self.bus_dir = bus_dir
        self.holders: set[str] = set()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._answer(request)
        except (BusError, OSError, TimeoutError, KeyError, TypeError, ValueError) as error:
            return {"error": str(error)}

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        worker = str(request["worker_id"])
        bus = MessageBus(self.bus_dir, source=str(request.get("source") or worker), warn=False)
        if op == "lock":
            self.holders.add(worker)
            result = bus.acquire_lock(
                str(request["path"]), worker, str(request["task_id"]), ttl=float(request["ttl"])
            )
            return {"result": _result_dict(result)}
        if op == "unlock":
            released = bus.release_lock(str(request["path"]), worker)
            holders = {info.path: info.worker_id for info in bus.locks()}
            return {"released": released, "holders": holders}
        if op == "release_all":
            return {"released": bus.release_worker_locks(worker)}
        raise BusError(f"unknown lock operation {op!r}")

    def release_all(self) -> list[str]:
        """Release every lock the agents of this broker's worker still hold."""
        bus = MessageBus(self.bus_dir, warn=False)
        released: list[str] = []
        for worker in sorted(self.holders):
            with contextlib.suppress(BusError, OSError, TimeoutError):
                released += bus.release_worker_locks(worker)
        return released


def _result_dict(result: LockResult) -> dict[str, Any]:
    return {
        "granted": result.granted,
        "path": result.path,
        "holder": result.holder,
        "holder_task": result.holder_task,
        "expires_at": result.expires_at,
        "took_over_from": result.took_over_from,
    }


def request_lock(
    bus_dir: Path,
    request: dict[str, Any],
    timeout: float = 60.0,
    *,
    carrier_pid: int | None = None,
) -> dict[str, Any]:
    """Ask the controller, through the worker that forwards ``bus_dir``; wait for its answer.

    ``carrier_pid`` is the xdist worker process that started the agent: only it carries
    the request, so that the controller knows whose locks to release if it dies. None:
    any worker of the machine may.
    Raises BusError when no answer came within ``timeout`` seconds (the worker is gone).
    """
    folder = bus_dir / LOCK_REQUESTS
    rid = uuid.uuid4().hex
    request = {**request, "carrier_pid": carrier_pid}
    atomic_write(folder / f"{rid}.request", json.dumps(request).encode())
    answer_path = folder / f"{rid}.answer"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                answer = json.loads(answer_path.read_bytes())
            except (FileNotFoundError, ValueError):
                time.sleep(0.02)
                continue
            if not isinstance(answer, dict):
                raise BusError(f"the controller's answer to a lock request is not one: {answer!r}")
            if "error" in answer:
                raise BusError(f"the controller refused the lock request: {answer['error']}")
            return answer
        raise BusError(
            f"no answer from the controller within {timeout:g}s "
            f"(bus {bus_dir} is forwarded by an xdist worker that may be gone)"
        )
    finally:
        for suffix in (".request", ".claimed", ".answer"):
            with contextlib.suppress(OSError):
                (folder / f"{rid}{suffix}").unlink()


def lock_result(answer: dict[str, Any]) -> LockResult:
    """The :class:`LockResult` of a ``lock`` answer."""
    value = answer["result"]
    return LockResult(
        granted=bool(value["granted"]),
        path=value["path"],
        holder=value["holder"],
        holder_task=value.get("holder_task"),
        expires_at=value["expires_at"],
        took_over_from=value.get("took_over_from"),
    )
