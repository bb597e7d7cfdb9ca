"""Worker status: ``worker-status.json``, written by the dispatcher and the agents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_conductor.bus._base import WORKER_STATUS, BusBase
from pytest_conductor.bus._model import (
    STATE_ALIASES,
    WORKER_STATES,
    BusError,
    JSONDict,
    as_percent,
    check_id,
)

__all__ = ["WorkerStatusPart"]


class WorkerStatusPart(BusBase):
    """Registration, heartbeats, progress and end state of each worker."""

    def register_worker(self, worker_id: str, task_id: str) -> JSONDict:
        """Record a freshly started worker as RUNNING at 0 %; returns its entry."""
        check_id(worker_id, "worker id")
        check_id(task_id, "task id")
        now = self._now_iso()
        entry: JSONDict = {
            "worker_id": worker_id,
            "task_id": task_id,
            "status": "RUNNING",
            "started_at": now,
            "last_heartbeat": now,
            "progress_pct": 0,
        }
        return self._update_worker(worker_id, lambda _: entry)

    def heartbeat(
        self, worker_id: str, progress_pct: object = None, *, task_id: str | None = None
    ) -> JSONDict:
        """Mark ``worker_id`` alive now, optionally with its progress; returns its entry.

        An unknown worker is added as RUNNING (``task_id`` fills its task). A progress
        value that is not a number is reported and ignored; the heartbeat still counts.
        """
        pct = self._percent(progress_pct, worker_id)

        def change(entry: JSONDict) -> JSONDict:
            entry["last_heartbeat"] = self._now_iso()
            if pct is not None:
                entry["progress_pct"] = pct
            return entry

        return self._update_worker(worker_id, change, task_id)

    def set_progress(
        self, worker_id: str, pct: object, note: str = "", *, task_id: str | None = None
    ) -> JSONDict:
        """Record progress and what the worker is doing; also counts as a heartbeat."""
        value = self._percent(pct, worker_id)

        def change(entry: JSONDict) -> JSONDict:
            entry["last_heartbeat"] = self._now_iso()
            if value is not None:
                entry["progress_pct"] = value
            entry["note"] = note
            return entry

        return self._update_worker(worker_id, change, task_id)

    def set_worker_status(
        self, worker_id: str, status: str, *, task_id: str | None = None
    ) -> JSONDict:
        """Set RUNNING, COMPLETED, FAILED or BLOCKED; the end states stamp ``finished_at``.

        ``COMPLETE`` (the upstream worker template's word) is taken as ``COMPLETED``.
        """
        status = STATE_ALIASES.get(status, status)
        if status not in WORKER_STATES:
            raise BusError(f"worker status {status!r} must be one of {', '.join(WORKER_STATES)}")

        def change(entry: JSONDict) -> JSONDict:
            entry["status"] = status
            if status in {"COMPLETED", "FAILED"}:
                entry["finished_at"] = self._now_iso()
                if status == "COMPLETED":
                    entry["progress_pct"] = 100
            return entry

        return self._update_worker(worker_id, change, task_id)

    def worker_status(self) -> dict[str, JSONDict]:
        """The content of ``worker-status.json`` (a damaged file is repaired first)."""
        if not self.path.is_dir():
            return {}
        with self._locked(WORKER_STATUS):
            data = self._load(WORKER_STATUS, _clean_status)
        self._emit()
        return data

    def _update_worker(
        self,
        worker_id: str,
        change: Callable[[JSONDict], JSONDict],
        task_id: str | None = None,
    ) -> JSONDict:
        check_id(worker_id, "worker id")
        if task_id is not None:
            check_id(task_id, "task id")
        with self._locked(WORKER_STATUS):
            data = self._load(WORKER_STATUS, _clean_status)
            entry = data.get(worker_id)
            if entry is None:
                now = self._now_iso()
                entry = {
                    "worker_id": worker_id,
                    "task_id": task_id,
                    "status": "RUNNING",
                    "started_at": now,
                    "last_heartbeat": now,
                    "progress_pct": 0,
                }
            elif task_id is not None and entry.get("task_id") is None:
                entry["task_id"] = task_id
            data[worker_id] = entry = change(entry)
            self._store(WORKER_STATUS, data)
        self._emit()
        return dict(entry)

    def _percent(self, value: object, worker_id: str) -> int | float | None:
        if value is None:
            return None
        pct = as_percent(value)
        if pct is None:
            self._defer(f"progress_pct {value!r} of {worker_id} is not a number; ignored")
        elif not 0 <= pct <= 100:
            self._defer(f"progress_pct {value!r} of {worker_id} is outside 0..100; clamped")
            pct = min(max(pct, 0), 100)
        return pct


def _clean_status(value: dict[str, Any]) -> tuple[dict[str, JSONDict], list[str]]:
    data: dict[str, JSONDict] = {}
    problems: list[str] = []
    for key, raw in value.items():
        if not isinstance(raw, dict):
            problems.append(f"entry {key!r} is not an object; dropped")
            continue
        entry = dict(raw)
        entry.setdefault("worker_id", key)
        pct = entry.get("progress_pct")
        if pct is not None and (isinstance(pct, bool) or as_percent(pct) != pct):
            entry["progress_pct"] = as_percent(pct)
            problems.append(
                f"progress_pct {pct!r} of {key!r} is not a number; set to {entry['progress_pct']}"
            )
        data[key] = entry
    return data, problems
