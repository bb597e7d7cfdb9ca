"""The message bus of one track run: ``conductor/tracks/<id>/.message-bus/``.

Layout (DESIGN section 6; orchestrators already read these names)::

    queue.jsonl          one JSON envelope a line, append-only
    events/              <TYPE>_<id>.event marker files that orchestrators poll
    worker-status.json   {worker_id: {worker_id, task_id, status, started_at, ...}}
    locks.json           {path: {worker_id, task_id, acquired_at, expires_at}}
                         (or {path: "worker-id"}, written by upstream worker templates)
    verdict.json, logs/  written by the report and the dispatcher
    runs/<UTC stamp>/    earlier runs, moved aside by rotate() (the last N are kept)
    .<file>.lock         inter-process lock files, one per bus file

Pure Python; no pytest import. Damaged data never stops a run: it is reported as a
:class:`BusWarning` (also kept in ``MessageBus.warnings``), copied aside, and the file
goes on from what could be saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_conductor.bus._base import (
    _EMPTY_JSON,
    EVENTS,
    LOCKS,
    LOGS,
    PROMPTS,
    QUEUE,
    VERDICT,
    WORKER_STATUS,
)
from pytest_conductor.bus._files import append_line, atomic_write, copy_aside, refuse_symlinks
from pytest_conductor.bus._model import (
    BusError,
    JSONDict,
    check_file_name,
    check_id,
    check_type,
    find_cycle,
)
from pytest_conductor.bus.locks import FileLocksPart
from pytest_conductor.bus.workers import WorkerStatusPart
from pytest_conductor.util.timestamps import format_iso

__all__ = ["ROTATED_NAMES", "RUN_EVENT_KINDS", "MessageBus"]

# The longest file name (Linux NAME_MAX, bytes): an event name longer than this cannot exist.
_NAME_MAX = 255

#: What belongs to one run and moves to ``runs/<stamp>/`` when the next run starts
#: (of ``events/``, only the event files of :data:`RUN_EVENT_KINDS`).
ROTATED_NAMES = (QUEUE, EVENTS, WORKER_STATUS, LOCKS, VERDICT, LOGS, PROMPTS)
#: The kinds of event file a run writes (the controller, the dispatcher, the agents).
RUN_EVENT_KINDS = (
    "TASK_COMPLETE",
    "TASK_FAILED",
    "TASK_BLOCKED",
    "PARALLEL_COMPLETE",
    "FILE_UNLOCK",
)
_ARCHIVE_NAME = re.compile(r"(\d{8}T\d{6}Z)(?:-(\d+))?")


_RUN_EVENT_PREFIXES = tuple(f"{kind}_" for kind in RUN_EVENT_KINDS)


def _is_run_event(name: str) -> bool:
    return name.endswith(".event") and name.startswith(_RUN_EVENT_PREFIXES)


class MessageBus(WorkerStatusPart, FileLocksPart):
    """Reader and writer of one bus folder; safe to use from many processes at once.

    ``source`` fills the envelope's ``source`` field (the controller, or a worker id).
    ``clock`` returns an aware UTC datetime; tests pass a fake one to age locks.
    ``lock_timeout`` bounds the wait for another process's bus lock (seconds).
    ``warn=False`` only collects damage reports in ``warnings`` instead of also raising
    :class:`BusWarning`: a caller running under ``filterwarnings=error`` (the pytest
    plugin, in a user's session) would otherwise get them as exceptions.
    """

    # -- setup and rotation --------------------------------------------------------

    def init(self) -> None:
        """Create the bus files that are missing; keep every file already there."""
        refuse_symlinks(self.path, self.events_dir)  # before mkdir creates anything in them
        self.path.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(exist_ok=True)
        with self._locked(QUEUE):
            append_line(self.queue_path, b"")
        for name in (WORKER_STATUS, LOCKS):
            with self._locked(name):
                if not (self.path / name).exists():
                    atomic_write(self.path / name, _EMPTY_JSON)

    def rotate(self, now: datetime | None = None, *, keep: int = 0) -> Path | None:
        """Move the previous run's files into ``runs/<UTC stamp>/``, then :meth:`init`.

        Only what a run writes moves: the files of :data:`ROTATED_NAMES`, and of
        ``events/`` only the kinds of :data:`RUN_EVENT_KINDS`; another tool's event files
        (an orchestrator's ``PLAN_EVAL_COMPLETE_<track>.event``) and folders (``board/``)
        stay where they are. Returns the archive folder, or None when there was nothing
        worth keeping (files that are absent or empty stay where they are).

        ``keep`` > 0 then removes the oldest archives beyond the last ``keep``; 0 keeps
        them all.
        """
        if not self.path.is_dir():
            self.init()
            return None
        stamp = format_iso(now or self._clock())[:19].replace("-", "").replace(":", "") + "Z"
        archive: Path | None = None
        with contextlib.ExitStack() as stack:
            # Every writer takes one of these locks at a time, so taking all of them in
            # a fixed order cannot deadlock, and nobody writes into a file mid-move.
            for name in sorted((QUEUE, EVENTS, WORKER_STATUS, LOCKS, VERDICT)):
                stack.enter_context(self._locked(name))
            movable = [
                name for name in ROTATED_NAMES if name != EVENTS and self._worth_keeping(name)
            ]
            movable += sorted(p.name for p in self.path.glob("*.corrupt-*"))
            events = self._run_events()
            if movable or events:
                archive = self._claim_archive(stamp)
                for name in movable:
                    (self.path / name).replace(archive / name)
                if events:
                    (archive / EVENTS).mkdir()
                    # Text paths: one rename per node of the last run, and pathlib's
                    # joins cost a third as much again as the rename itself.
                    source, target = self._events_text, str(archive / EVENTS)
                    for name in events:
                        os.replace(f"{source}/{name}", f"{target}/{name}")
        self.init()
        if keep > 0:
            self.prune_runs(keep)
        return archive

    def _run_events(self) -> list[str]:
        """Names of the event files in ``events/`` of the kinds a run writes, sorted."""
        # scandir: the entry's type comes with the listing, no stat per file.
        try:
            with os.scandir(self._events_text) as entries:
                return sorted(e.name for e in entries if _is_run_event(e.name) and e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def prune_runs(self, keep: int) -> list[Path]:
        """Remove the archives in ``runs/`` older than the last ``keep``; returns them.

        Only folders named as :meth:`rotate` names them are considered; anything else in
        ``runs/`` is not ours and stays.
        """
        if keep <= 0 or not self.runs_dir.is_dir():
            return []
        archives = []
        for entry in self.runs_dir.iterdir():
            match = _ARCHIVE_NAME.fullmatch(entry.name)
            if match and entry.is_dir() and not entry.is_symlink():
                archives.append(((match.group(1), int(match.group(2) or 1)), entry))
        archives.sort()
        removed = [entry for _, entry in archives[: max(0, len(archives) - keep)]]
        for entry in removed:
            shutil.rmtree(entry, ignore_errors=True)
        return removed

    def _worth_keeping(self, name: str) -> bool:
        target = self.path / name
        if target.is_dir():
            return any(target.iterdir())
        try:
            content = target.read_bytes()
        except FileNotFoundError:
            return False
        return content.strip() not in {b"", b"{}"}

    def _claim_archive(self, stamp: str) -> Path:
        refuse_symlinks(self.runs_dir)  # the last run's files are not moved out through it
        self.runs_dir.mkdir(exist_ok=True)
        counter = 1
        while True:
            name = stamp if counter == 1 else f"{stamp}-{counter}"
            try:
                # mkdir is atomic: two rotations in one second get two folders.
                (self.runs_dir / name).mkdir()
            except FileExistsError:
                counter += 1
                continue
            return self.runs_dir / name

    # -- events --------------------------------------------------------------------

    def write_event(self, type: str, task_id: str, content: str = "") -> Path:
        """Write ``events/<TYPE>_<task_id>.event`` whole (replacing an older one)."""
        # Text paths: one event per node, and pathlib's joins cost more than the write.
        target = f"{self._events_text}/{self._event_name(type, task_id)}"
        data = content.encode("utf-8")
        with self._locked(EVENTS):
            # No fsync: the controller writes one per node on the path that dispatches the
            # next node, where an fsync cost ~2.5 ms per hand-over (bench_scheduler latency).
            try:
                atomic_write(target, data, durable=False)
            except FileNotFoundError:  # events/ removed by hand: make it again (not per node)
                self.events_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(target, data, durable=False)
        return Path(target)

    def read_event(self, type: str, task_id: str) -> str | None:
        """The content of an event file, or None when it does not exist."""
        try:
            return (self.events_dir / self._event_name(type, task_id)).read_text("utf-8")
        except FileNotFoundError:
            return None

    def has_event(self, type: str, task_id: str) -> bool:
        return os.path.isfile(f"{self._events_text}/{self._event_name(type, task_id)}")

    def events(self) -> list[str]:
        """Names of the event files present, sorted (``TASK_COMPLETE_1.1.event``, ...)."""
        if not self.events_dir.is_dir():
            return []
        return sorted(p.name for p in self.events_dir.glob("*.event") if p.is_file())

    @staticmethod
    def _event_name(type: str, task_id: str) -> str:
        name = f"{check_type(type)}_{check_id(task_id, 'task id')}.event"
        if len(name.encode()) > _NAME_MAX:
            raise BusError(f"event file name {name[:40]}... is longer than {_NAME_MAX} bytes")
        return name

    def find_deadlock(self) -> list[str] | None:
        """A cycle of tasks each waiting for a lock the next one holds, e.g. ``[a, b, a]``.

        Built from ``BLOCKED`` messages, keeping only waits still current: the resource
        is still held (not expired) by the same holder, and the waiting task has not since
        taken that lock or finished.
        """
        held = {info.path: info for info in self.locks(include_expired=False)}
        status = self.worker_status()
        waits: dict[tuple[str, str], tuple[str, str | None]] = {}
        for message in self.messages():
            payload = message.get("payload")
            if not isinstance(payload, dict):
                continue
            task, kind = payload.get("task_id"), message["type"]
            if not isinstance(task, str):
                continue
            if kind == "BLOCKED":
                holder, resource = payload.get("waiting_for"), payload.get("resource")
                hint = payload.get("holder_task")
                if isinstance(holder, str) and isinstance(resource, str):
                    waits[(task, resource)] = (holder, hint if isinstance(hint, str) else None)
            elif kind == "FILE_LOCK":
                waits.pop((task, str(payload.get("filepath"))), None)
            elif kind in {"TASK_COMPLETE", "TASK_FAILED"}:
                for key in [k for k in waits if k[0] == task]:
                    del waits[key]
        edges: dict[str, list[str]] = {}
        for (task, resource), (holder, hint) in sorted(waits.items()):
            info = held.get(resource)
            if info is None or info.worker_id != holder:
                continue
            holder_task = info.task_id or status.get(holder, {}).get("task_id") or hint
            if isinstance(holder_task, str):
                edges.setdefault(task, []).append(holder_task)
        return find_cycle(edges)

    # -- convenience posts for the product's message types -------------------------

    def dispatched(
        self, worker_id: str, task_id: str, parallel_group: str | None = None
    ) -> JSONDict:
        """Post ``WORKER_DISPATCHED``."""
        check_id(worker_id, "worker id")
        check_id(task_id, "task id")
        payload = {"worker_id": worker_id, "task_id": task_id, "parallel_group": parallel_group}
        return self.post("WORKER_DISPATCHED", payload)

    def progress(
        self,
        task_id: str,
        progress_pct: object,
        current_subtask: str = "",
        *,
        worker_id: str | None = None,
    ) -> JSONDict:
        """Post ``PROGRESS``; with ``worker_id`` also record it in ``worker-status.json``."""
        check_id(task_id, "task id")
        pct = self._percent(progress_pct, worker_id or task_id)
        if worker_id is not None:
            self.set_progress(worker_id, pct, current_subtask, task_id=task_id)
        payload = {"task_id": task_id, "progress_pct": pct, "current_subtask": current_subtask}
        return self.post("PROGRESS", payload)

    def complete(
        self,
        task_id: str,
        commit_sha: str | None = None,
        files_modified: Iterable[str] = (),
        unblocks: Iterable[str] = (),
        *,
        worker_id: str | None = None,
    ) -> JSONDict:
        """Post ``TASK_COMPLETE`` and write its event (content: the commit SHA, if any)."""
        check_id(task_id, "task id")
        payload = {
            "task_id": task_id,
            # Always text, whoever posts: "" when no commit is known.
            "commit_sha": commit_sha or "",
            "files_modified": list(files_modified),
            "unblocks": list(unblocks),
        }
        return self._finish("TASK_COMPLETE", task_id, payload, commit_sha or "", worker_id)

    def fail(
        self,
        task_id: str,
        error: str,
        *,
        worker_id: str | None = None,
        stack_trace: str | None = None,
    ) -> JSONDict:
        """Post ``TASK_FAILED`` and write its event (content: the error).

        ``stack_trace`` (e.g. the last lines of the agent's log) is added to the payload
        when there is one.
        """
        check_id(task_id, "task id")
        payload: JSONDict = {"task_id": task_id, "error": error}
        if stack_trace:
            payload["stack_trace"] = stack_trace
        return self._finish("TASK_FAILED", task_id, payload, error, worker_id)

    def blocked(
        self,
        task_id: str,
        blocked_by: str | Sequence[str],
        reason: str,
        *,
        worker_id: str | None = None,
    ) -> JSONDict:
        """Post ``TASK_BLOCKED`` and write its event (content: the reason)."""
        check_id(task_id, "task id")
        by = blocked_by if isinstance(blocked_by, str) else list(blocked_by)
        payload = {"task_id": task_id, "blocked_by": by, "reason": reason}
        return self._finish("TASK_BLOCKED", task_id, payload, reason, worker_id)

    def parallel_complete(self, track: str, passed: bool) -> JSONDict:
        """Post ``PARALLEL_COMPLETE`` and write ``PARALLEL_COMPLETE_<track>.event`` (PASS/FAIL)."""
        check_id(track, "track id")
        verdict = "PASS" if passed else "FAIL"
        self._event_name("PARALLEL_COMPLETE", track)
        message = self.post("PARALLEL_COMPLETE", {"track": track, "status": verdict})
        self.write_event("PARALLEL_COMPLETE", track, verdict)
        return message

    def _finish(
        self, kind: str, task_id: str, payload: JSONDict, content: str, worker_id: str | None
    ) -> JSONDict:
        # Message first, event second: whoever sees the event finds the message too. So
        # everything the event needs is checked first: a post is whole or not at all.
        self._event_name(kind, task_id)
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise BusError(f"{kind} text is not valid UTF-8 (a lone surrogate)") from None
        message = self.post(kind, payload)
        self.write_event(kind, task_id, content)
        if worker_id is not None:
            state = {"TASK_COMPLETE": "COMPLETED", "TASK_FAILED": "FAILED"}.get(kind, "BLOCKED")
            self.set_worker_status(worker_id, state, task_id=task_id)
        return message

    # -- other JSON files ----------------------------------------------------------

    def write_json(self, name: str, obj: object) -> Path:
        """Replace ``<bus>/<name>`` atomically with ``obj`` as JSON (e.g. ``verdict.json``)."""
        check_file_name(name)
        try:
            data = (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()
        except (TypeError, ValueError) as error:
            raise BusError(f"{name}: value is not JSON: {error}") from None
        with self._locked(name):
            atomic_write(self.path / name, data)
        return self.path / name

    def read_json(self, name: str, default: object = None) -> Any:
        """The JSON content of ``<bus>/<name>``; ``default`` when missing or damaged.

        A damaged file is moved aside to ``<name>.corrupt-<stamp>`` (kept, not deleted).
        """
        check_file_name(name)
        target = self.path / name
        try:
            # Files are replaced atomically, so an unlocked read sees one whole version.
            return json.loads(target.read_bytes())
        except FileNotFoundError:
            return default
        except ValueError:
            pass
        with self._locked(name):
            try:
                return json.loads(target.read_bytes())
            except FileNotFoundError:
                return default
            except ValueError as error:
                aside = copy_aside(target, self._stamp())
                target.unlink()
                self._defer(f"{name} is not JSON ({error}); moved to {aside.name}")
        self._emit()
        return default
