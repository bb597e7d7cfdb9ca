"""File locks between workers: ``locks.json``, ``FILE_LOCK`` and ``BLOCKED`` messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pytest_conductor.bus._base import LOCKS, BusBase
from pytest_conductor.bus._model import (
    BusError,
    JSONDict,
    LockInfo,
    LockResult,
    check_id,
    normalize_lock_path,
    parse_time,
)
from pytest_conductor.util.timestamps import format_iso

__all__ = ["FileLocksPart"]


class FileLocksPart(BusBase):
    """Leases on project files, so that two workers never edit one file at once."""

    def acquire_lock(
        self, path: str, worker_id: str, task_id: str, ttl: float = 1800
    ) -> LockResult:
        """Take the lock on a project file for ``ttl`` seconds.

        The holder may take it again (the expiry moves on); an expired lock is taken
        over. Otherwise the lock stays with its holder, a ``BLOCKED`` message records who
        waits for whom (the input of :meth:`find_deadlock`), and the result is falsy.
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
            entry = data.get(key)
            active = entry is not None and _is_active(entry, now)
            if entry is not None and active and entry["worker_id"] != worker_id:
                result = LockResult(
                    granted=False,
                    path=key,
                    holder=entry["worker_id"],
                    holder_task=entry.get("task_id"),
                    expires_at=entry["expires_at"],
                )
            else:
                renewal = entry is not None and active
                previous = entry["worker_id"] if entry is not None and not renewal else None
                data[key] = {
                    "worker_id": worker_id,
                    "task_id": task_id,
                    "acquired_at": entry["acquired_at"] if renewal and entry else format_iso(now),
                    "expires_at": expires,
                }
                self._store(LOCKS, data)
                result = LockResult(
                    granted=True,
                    path=key,
                    holder=worker_id,
                    holder_task=task_id,
                    expires_at=expires,
                    took_over_from=previous if previous != worker_id else None,
                )
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
            released = entry is not None and entry["worker_id"] == worker_id
            if released:
                del data[key]
                self._store(LOCKS, data)
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
            released = sorted(k for k, v in data.items() if v["worker_id"] == worker_id)
            for key in released:
                del data[key]
            if released:
                self._store(LOCKS, data)
        for key in released:
            self.post(
                "FILE_UNLOCK",
                {"filepath": key, "worker_id": worker_id, "released_by": self.source},
            )
        self._emit()
        return released

    def locks(self, include_expired: bool = True) -> list[LockInfo]:
        """Entries of ``locks.json`` sorted by path, each flagged active or expired."""
        if not self.path.is_dir():
            return []
        now = self._clock()
        with self._locked(LOCKS):
            data = self._load(LOCKS, _clean_locks)
        self._emit()
        infos = [
            LockInfo(
                path=key,
                worker_id=entry["worker_id"],
                task_id=entry.get("task_id"),
                acquired_at=str(entry.get("acquired_at", "")),
                expires_at=entry["expires_at"],
                active=_is_active(entry, now),
            )
            for key, entry in sorted(data.items())
        ]
        return [i for i in infos if include_expired or i.active]


def _is_active(entry: Mapping[str, Any], now: datetime) -> bool:
    expires = parse_time(entry.get("expires_at"))
    return expires is not None and expires > now


def _clean_locks(value: dict[str, Any]) -> tuple[dict[str, JSONDict], list[str]]:
    data: dict[str, JSONDict] = {}
    problems: list[str] = []
    for key, entry in value.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("worker_id"), str)
            or parse_time(entry.get("expires_at")) is None
        ):
            problems.append(f"lock {key!r} has no holder or expiry; dropped")
            continue
        data[key] = dict(entry)
    return data, problems
