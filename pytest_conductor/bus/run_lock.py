"""One run per track at a time: ``.message-bus/run.lock`` and who holds it, ``run.json``.

Pure Python; no pytest import. Two runs of one track would rotate each other's bus, kill
each other's agents and disagree about the verdict. The lock is an OS file lock
(``flock``) held for the whole run: the OS drops it when its process dies, however it
dies, so a crashed run never blocks the next. ``run.json`` names the holder (pid, its
start time, when the run started) for the message a second run prints; a ``run.json``
left by a holder that is gone is reported as a take-over.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_conductor.bus._files import BusLock, BusLockTimeout, refuse_symlinks
from pytest_conductor.util.atomic import atomic_write
from pytest_conductor.util.processes import process_alive, process_start_time
from pytest_conductor.util.timestamps import utc_now_iso

__all__ = ["RUN_HOLDER", "RUN_LOCK", "RunHolder", "RunLock", "RunLocked"]

RUN_LOCK = "run.lock"
RUN_HOLDER = "run.json"
_POLL = 0.2


@dataclass(frozen=True)
class RunHolder:
    """The run that holds (or held) the lock."""

    pid: int
    start: int | None  # process_start_time of pid, when known
    started_at: str  # UTC ISO-8601

    def describe(self) -> str:
        return f"pid {self.pid}, started {self.started_at}"

    def alive(self) -> bool:
        return process_alive(self.pid, self.start)


class RunLocked(Exception):
    """Another run of the track holds the lock; ``holder`` is who, when known."""

    def __init__(self, holder: RunHolder | None) -> None:
        self.holder = holder
        who = holder.describe() if holder is not None else "a process that did not say"
        super().__init__(f"another run of this track is in progress ({who})")


class RunLock:
    """The run lock of one bus folder; :meth:`acquire` once, :meth:`release` at the end."""

    def __init__(self, bus_dir: Path) -> None:
        self.bus_dir = Path(bus_dir)
        self._lock = BusLock(self.bus_dir / RUN_LOCK, timeout=0)
        self.held = False

    def holder(self) -> RunHolder | None:
        try:
            data = json.loads((self.bus_dir / RUN_HOLDER).read_text(encoding="utf-8"))
            start = data.get("start")
            return RunHolder(
                pid=int(data["pid"]),
                start=start if isinstance(start, int) and not isinstance(start, bool) else None,
                started_at=str(data.get("started_at", "an unknown time")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def acquire(
        self, *, wait: bool = False, on_wait: Callable[[RunHolder | None], None] | None = None
    ) -> RunHolder | None:
        """Take the lock; returns the earlier holder that died without releasing it, if any.

        Held by a live run: raise :class:`RunLocked`, or with ``wait`` call ``on_wait``
        once and wait until it is free.
        """
        refuse_symlinks(self.bus_dir, self.bus_dir / RUN_LOCK, self.bus_dir / RUN_HOLDER)
        self.bus_dir.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            try:
                self._lock.acquire()
                break
            except BusLockTimeout:
                holder = self.holder()
                if not wait:
                    raise RunLocked(holder) from None
                if not told and on_wait is not None:
                    on_wait(holder)
                told = True
                time.sleep(_POLL)
        self.held = True
        left_behind = self.holder()
        if left_behind is not None and left_behind.alive():
            # Alive yet not holding the lock: not that run any more (a reused pid, a
            # run.json copied from elsewhere); overwritten without a word.
            left_behind = None
        me = os.getpid()
        record = {"pid": me, "start": process_start_time(me), "started_at": utc_now_iso()}
        atomic_write(self.bus_dir / RUN_HOLDER, (json.dumps(record) + "\n").encode())
        return left_behind

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(OSError):
            (self.bus_dir / RUN_HOLDER).unlink()
        self._lock.release()
