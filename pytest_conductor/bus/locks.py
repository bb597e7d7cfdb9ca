"""File locks between workers: ``locks.json``, ``FILE_LOCK`` / ``FILE_UNLOCK`` messages,
``BLOCKED`` messages and the ``FILE_UNLOCK_<path>.event`` files waiters poll.

``locks.json`` holds two shapes of entry, both valid locks:

* ours, ``{"worker_id", "task_id", "acquired_at", "expires_at"}``: a lease that lasts
  until ``expires_at``;
* the upstream worker template's, a plain string ``"worker-id"``: no expiry, it lasts
  until its holder's worker is finished (``COMPLETED``/``COMPLETE``/``FAILED`` in
  ``worker-status.json``) or dead (its heartbeat older than ``stale_after``). Such an
  entry is never rewritten into our shape and never granted to another worker.

Every release (by the holder, by the dispatcher for a worker that ended, or because the
lock expired or its holder ended) writes ``events/FILE_UNLOCK_<quoted path>.event``
(:func:`unlock_event_name`), the file the worker template waits for after a ``BLOCKED``;
taking the lock again removes it, so the file means "free now". Event files are written
and removed under the ``locks.json`` lock, so the two never disagree.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from pytest_conductor.bus._base import LOCKS, BusBase
from pytest_conductor.bus._files import atomic_write
from pytest_conductor.bus._model import (
    FINISHED_STATES,
    BusError,
    JSONDict,
    LockInfo,
    LockResult,
    check_id,
    normalize_lock_path,
    parse_time,
)
from pytest_conductor.util.timestamps import format_iso

__all__ = ["STALE_AFTER", "FileLocksPart", "unlock_event_name"]

#: A worker silent this long (seconds) is dead: its template-shaped locks end.
STALE_AFTER = 600.0

_Entry = JSONDict | str


def unlock_event_name(path: str) -> str:
    """``FILE_UNLOCK_<path>.event`` with the path percent-encoded into one file name.

    ``src/stores/data-store.ts`` -> ``FILE_UNLOCK_src%2Fstores%2Fdata-store.ts.event``:
    every character but letters, digits and ``_.-~`` is quoted, so a ``/`` never makes a
    sub-folder (the template's ``FILE_UNLOCK_*.event`` glob matches it) and
    ``urllib.parse.unquote`` gives the path back.
    """
    return f"FILE_UNLOCK_{quote(normalize_lock_path(path), safe='')}.event"


class FileLocksPart(BusBase):
    """Leases on project files, so that two workers never edit one file at once."""

    #: Seconds of silence after which the holder of a template-shaped lock is dead.
    stale_after: float = STALE_AFTER

    def acquire_lock(
        self, path: str, worker_id: str, task_id: str, ttl: float = 1800
    ) -> LockResult:
        """Take the lock on a project file for ``ttl`` seconds.

        The holder may take it again (the expiry moves on); an expired lock is taken
        over. Otherwise the lock stays with its holder, a ``BLOCKED`` message records who
        waits for whom (the input of :meth:`find_deadlock`), and the result is falsy.
        Other locks that have expired meanwhile are released on the way (see
        :meth:`expire_locks`).
        """
        key = normalize_lock_path(path)
        check_id(worker_id, "worker id")
        check_id(task_id, "task id")
        if not ttl > 0:
            raise BusError(f"lock ttl must be a positive number of seconds, got {ttl!r}")
        now = self._clock()
        expires = format_iso(now + timedelta(seconds=ttl))
        renewal = False
        with self._locked(LOCKS):
            data = self._load(LOCKS, _clean_locks)
            workers = self._statuses()
            ended = self._release_ended(data, now, workers, skip=key)
            entry = data.get(key)
            holder = _holder(entry) if entry is not None else None
            active = entry is not None and self._is_active(entry, now, workers)
            if entry is not None and active and holder != worker_id:
                result = LockResult(
                    granted=False,
                    path=key,
                    holder=str(holder),
                    holder_task=_task_of(entry, workers),
                    expires_at=entry.get("expires_at", "") if isinstance(entry, dict) else "",
                )
            else:
                renewal = isinstance(entry, dict) and active
                previous = holder if entry is not None and not renewal else None
                data[key] = {
                    "worker_id": worker_id,
                    "task_id": task_id,
                    "acquired_at": (
                        entry["acquired_at"]
                        if renewal and isinstance(entry, dict)
                        else format_iso(now)
                    ),
                    "expires_at": expires,
                }
                self._remove_unlock_event(key)
                result = LockResult(
                    granted=True,
                    path=key,
                    holder=worker_id,
                    holder_task=task_id,
                    expires_at=expires,
                    took_over_from=previous if previous != worker_id else None,
                )
            if result.granted or ended:
                self._store(LOCKS, data)
        self._post_released(ended)
        if not result.granted:
            self.post(
                "BLOCKED",
                {
                    "task_id": task_id,
                    "waiting_for": result.holder,
                    "resource": key,
                    "worker_id": worker_id,
                    "holder_task": result.holder_task,
                },
            )
        elif not renewal:
            payload: JSONDict = {"filepath": key, "worker_id": worker_id, "task_id": task_id}
            if result.took_over_from:
                payload["took_over_from"] = result.took_over_from
            self.post("FILE_LOCK", payload)
        self._emit()
        return result

    def release_lock(self, path: str, worker_id: str) -> bool:
        """Release a lock held by ``worker_id``; False (nothing changed) for anyone else."""
        key = normalize_lock_path(path)
        check_id(worker_id, "worker id")
        if not self.path.is_dir():
            return False
        with self._locked(LOCKS):
            data = self._load(LOCKS, _clean_locks)
            entry = data.get(key)
            released = entry is not None and _holder(entry) == worker_id
            if released:
                del data[key]
                self._store(LOCKS, data)
                self._write_unlock_event(key)
        if released:
            self.post("FILE_UNLOCK", {"filepath": key, "worker_id": worker_id})
        self._emit()
        return released

    def release_worker_locks(self, worker_id: str) -> list[str]:
        """Release every lock of a worker that has ended; returns the paths released."""
        check_id(worker_id, "worker id")
        if not self.path.is_dir():
            return []
        with self._locked(LOCKS):
            data = self._load(LOCKS, _clean_locks)
            released = sorted(k for k, v in data.items() if _holder(v) == worker_id)
            for key in released:
                del data[key]
                self._write_unlock_event(key)
            if released:
                self._store(LOCKS, data)
        for key in released:
            self.post(
                "FILE_UNLOCK",
                {"filepath": key, "worker_id": worker_id, "released_by": self.source},
            )
        self._emit()
        return released

    def expire_locks(self) -> list[str]:
        """Release the locks that have ended without their holder releasing them.

        Ours whose ``expires_at`` has passed; template-shaped ones whose holder's worker
        is finished or dead. Each gets its ``FILE_UNLOCK`` message (``reason``:
        ``expired`` or ``holder ended``) and event. Returns the paths released.
        """
        if not self.path.is_dir():
            return []
        with self._locked(LOCKS):
            data = self._load(LOCKS, _clean_locks)
            ended = self._release_ended(data, self._clock(), self._statuses())
            if ended:
                self._store(LOCKS, data)
        self._post_released(ended)
        self._emit()
        return [key for key, _, _ in ended]

    def locks(self, include_expired: bool = True) -> list[LockInfo]:
        """Entries of ``locks.json`` sorted by path, each flagged active or expired.

        A template-shaped entry has no ``acquired_at`` / ``expires_at`` (both ``""``);
        it is active while its holder's worker is.
        """
        if not self.path.is_dir():
            return []
        now = self._clock()
        with self._locked(LOCKS):
            data = self._load(LOCKS, _clean_locks)
        self._emit()
        workers = self._statuses()
        infos = [
            LockInfo(
                path=key,
                worker_id=_holder(entry),
                task_id=_task_of(entry, workers),
                acquired_at=str(entry.get("acquired_at", "")) if isinstance(entry, dict) else "",
                expires_at=str(entry.get("expires_at", "")) if isinstance(entry, dict) else "",
                active=self._is_active(entry, now, workers),
            )
            for key, entry in sorted(data.items())
        ]
        return [i for i in infos if include_expired or i.active]

    # -- internals -----------------------------------------------------------------

    def _statuses(self) -> Mapping[str, Any]:
        """worker-status.json as it is now, read without its lock (it is replaced whole).

        Only for deciding whether a holder still works: a damaged file reads as empty
        (every holder unknown, so every template-shaped lock stays), and is left for its
        own readers to repair.
        """
        try:
            value = json.loads(self.worker_status_path.read_bytes())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _is_active(self, entry: _Entry, now: datetime, workers: Mapping[str, Any]) -> bool:
        if isinstance(entry, dict):
            expires = parse_time(entry.get("expires_at"))
            return expires is not None and expires > now
        status = workers.get(entry)
        if not isinstance(status, dict):
            return True  # a holder we know nothing of: its lock lasts
        if str(status.get("status", "")).upper() in FINISHED_STATES:
            return False
        beat = parse_time(status.get("last_heartbeat"))
        return beat is None or (now - beat).total_seconds() <= self.stale_after

    def _release_ended(
        self,
        data: dict[str, _Entry],
        now: datetime,
        workers: Mapping[str, Any],
        skip: str | None = None,
    ) -> list[tuple[str, str, str]]:
        """Drop ended locks from ``data`` (caller holds the lock and stores it); write
        their unlock events. Returns ``(path, holder, reason)`` for the messages."""
        ended = []
        for key in sorted(data):
            entry = data[key]
            if key == skip or self._is_active(entry, now, workers):
                continue
            reason = "expired" if isinstance(entry, dict) else "holder ended"
            ended.append((key, _holder(entry), reason))
            del data[key]
            self._write_unlock_event(key)
        return ended

    def _post_released(self, ended: list[tuple[str, str, str]]) -> None:
        for key, holder, reason in ended:
            self.post(
                "FILE_UNLOCK",
                {
                    "filepath": key,
                    "worker_id": holder,
                    "released_by": self.source,
                    "reason": reason,
                },
            )

    def _write_unlock_event(self, key: str) -> None:
        """Write the unlock event; the caller holds the ``locks.json`` lock (see module)."""
        self.events_dir.mkdir(exist_ok=True)
        # No fsync: a signal file, written on the path that lets the next worker go on.
        atomic_write(self.events_dir / unlock_event_name(key), key.encode("utf-8"), durable=False)

    def _remove_unlock_event(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.events_dir / unlock_event_name(key)).unlink()


def _holder(entry: _Entry) -> str:
    return entry if isinstance(entry, str) else str(entry["worker_id"])


def _task_of(entry: _Entry, workers: Mapping[str, Any]) -> str | None:
    if isinstance(entry, dict):
        task = entry.get("task_id")
        return task if isinstance(task, str) else None
    status = workers.get(entry)
    task = status.get("task_id") if isinstance(status, dict) else None
    return task if isinstance(task, str) else None


def _clean_locks(value: dict[str, Any]) -> tuple[dict[str, _Entry], list[str]]:
    data: dict[str, _Entry] = {}
    problems: list[str] = []
    for key, entry in value.items():
        if isinstance(entry, str) and entry.strip():
            data[key] = entry  # the worker template's shape: {"path": "worker-id"}
            continue
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("worker_id"), str)
            or parse_time(entry.get("expires_at")) is None
        ):
            problems.append(f"lock {key!r} has no holder or expiry; dropped")
            continue
        data[key] = dict(entry)
    return data, problems
