"""Process groups: kill a command together with everything it started, and keep track of them.

Pure Python: no pytest import. Commands (acceptance ``run`` criteria, agent workers) run
in their own session (``start_new_session=True``), so their process id is also the id of
a process group holding every process they start (unless one of those starts a session
of its own). Killing the group, not the process, is what leaves nothing behind.

:class:`GroupRegistry` records the groups still alive in a folder of small JSON files, one
per group, so that a process other than the one that started a group (the pytest
controller, while an xdist worker started the agent; the next run, after this one was
killed) can still find and kill it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_conductor.util.atomic import atomic_write

__all__ = [
    "KILL_GRACE",
    "MARK_ENV",
    "RUN_ENV",
    "GroupRecord",
    "GroupRegistry",
    "child_pids",
    "group_running",
    "kill_group",
    "kill_marked",
    "kill_pgid",
    "new_run_id",
    "parent_death_signal",
    "process_alive",
    "process_mark",
    "process_start_time",
    "signal_group",
]

# Time a process group gets between SIGTERM and SIGKILL.
KILL_GRACE = 2.0
_POLL = 0.02
_PROC = Path("/proc")


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its credentials (setuid); nothing more we may do to it.
        return False
    return True


def group_running(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in group ``pgid``.

    Orphans are reparented to PID 1, and in containers PID 1 often never reaps them, so a
    dead group can linger as zombies; ``killpg(pgid, 0)`` alone would wait out the grace.
    """
    if not signal_group(pgid, 0):
        return False
    if not _PROC.is_dir():
        return True
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue  # exited meanwhile, or not a process entry
        state, pgrp = fields[0], fields[2]
        if pgrp == str(pgid) and state not in ("Z", "X"):
            return True
    return False


def kill_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE) -> None:
    """TERM the process group of ``proc``, KILL it after ``grace`` seconds, reap ``proc``.

    ``proc`` must have been started with ``start_new_session=True`` (it leads the group).
    """
    pgid = proc.pid
    if not signal_group(pgid, signal.SIGTERM):
        proc.wait()
        return
    # Reaping the leader matters: while it is a zombie the group still "exists".
    _wait_group(pgid, grace, proc.poll)
    if group_running(pgid):
        signal_group(pgid, signal.SIGKILL)
    proc.wait()


def kill_pgid(pgid: int, grace: float = KILL_GRACE) -> bool:
    """TERM group ``pgid``, KILL it after ``grace`` seconds; for a group that is not our child.

    Returns whether anything was still running in it. Never touches PID 1's group or
    the caller's own (a damaged record must not make us kill ourselves).
    """
    if pgid <= 1 or pgid == os.getpgrp() or not group_running(pgid):
        return False
    signal_group(pgid, signal.SIGTERM)
    _wait_group(pgid, grace, None)
    if group_running(pgid):
        signal_group(pgid, signal.SIGKILL)
        _wait_group(pgid, grace, None)
    return True


def _wait_group(pgid: int, grace: float, reap: Callable[[], object] | None) -> None:
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_running(pgid):
            return
        time.sleep(_POLL)


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ".
    _, _, rest = text.rpartition(")")
    fields = rest.split()
    return fields if len(fields) > 19 else None


def child_pids(parent: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``parent``; empty without /proc."""
    if not _PROC.is_dir():
        return []
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and fields[1] == str(parent) and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux), or None when unknown.

    Together with the pid it names one process: a pid is reused, a start time is not.
    """
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` runs and is not a zombie (and, given ``start_time``, is that process)."""
    fields = _stat_fields(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        return start_time is None or int(fields[19]) == start_time
    if _PROC.is_dir():
        return False
    try:  # no /proc (macOS): existence is all we can tell
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_death_signal(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies.

    An extra guard only (the registry sweep is the real one): it covers a parent killed
    outright, before anyone could sweep. Note that Linux sends it when the parent
    *thread* ends, so the thread that starts the child must outlive it. None where not
    available (not Linux, no libc).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            # The parent died before the request was in place: nobody will signal us.
            os.kill(os.getpid(), sig)

    return preexec


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class GroupRecord:
    """One process group in the registry and who started it."""

    name: str
    pgid: int
    leader_start: int | None  # process_start_time of the leader, when known
    owner_pid: int  # the process that started the group
    owner_start: int | None
    started: float  # epoch seconds
    info: Mapping[str, str] = field(default_factory=dict)

    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start)

    def to_json(self) -> dict[str, object]:
        return {
            "pgid": self.pgid,
            "leader_start": self.leader_start,
            "owner_pid": self.owner_pid,
            "owner_start": self.owner_start,
            "started": self.started,
            "info": dict(self.info),
        }


class GroupRegistry:
    """Process groups still alive, one JSON file each in ``folder``.

    Each file has one writer (the process that started the group) and is written whole
    and renamed into place, so no lock is needed; readers skip files they cannot parse.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def add(self, name: str, pgid: int, info: Mapping[str, str] | None = None) -> GroupRecord:
        """Record group ``pgid`` (led by process ``pgid``) as started by this process."""
        record = GroupRecord(
            name=name,
            pgid=pgid,
            leader_start=process_start_time(pgid),
            owner_pid=os.getpid(),
            owner_start=process_start_time(os.getpid()),
            started=time.time(),
            info=dict(info or {}),
        )
        if self.folder.is_symlink():
            # The folder is the run's own; a link there could point anywhere.
            raise OSError(
                errno.ELOOP, "is a symbolic link; not writing through it", str(self.folder)
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self._file(name), (json.dumps(record.to_json()) + "\n").encode())
        return record

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(name).unlink()

    def records(self) -> list[GroupRecord]:
        """Every record, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.json")):
            record = _read_record(path)
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda r: r.started)

    def sweep(self, which: str = "all", grace: float = KILL_GRACE) -> list[GroupRecord]:
        """Kill the recorded groups still running and forget them; returns those killed.

        ``which``: ``"all"``; ``"dead-owner"``, groups whose starter is gone (a crashed
        worker, an earlier run); ``"mine"``, groups this process started.
        """
        killed = []
        me = os.getpid()
        for record in self.records():
            if which == "dead-owner" and record.owner_alive():
                continue
            if which == "mine" and record.owner_pid != me:
                continue
            if _still_ours(record) and kill_pgid(record.pgid, grace):
                killed.append(record)
            self.remove(record.name)
        return killed

    def _file(self, name: str) -> Path:
        return self.folder / f"{name}.json"


def _still_ours(record: GroupRecord) -> bool:
    """Whether group ``record.pgid`` is still the one recorded, not a reused id.

    While a group has members, Linux never hands its id out as a new pid; so a live leader
    with another start time means the group died and the id now names someone else's.
    """
    fields = _stat_fields(record.pgid)
    if fields is None or record.leader_start is None:
        return True
    return int(fields[19]) == record.leader_start


def _read_record(path: Path) -> GroupRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = data.get("info") or {}
        return GroupRecord(
            name=path.stem,
            pgid=int(data["pgid"]),
            leader_start=_optional_int(data.get("leader_start")),
            owner_pid=int(data["owner_pid"]),
            owner_start=_optional_int(data.get("owner_start")),
            started=float(data.get("started", 0.0)),
            info={str(k): str(v) for k, v in info.items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- marks

#: Set in every command and agent the run starts, and so inherited by everything they
#: start: ``<run id>/<owner pid>:<owner start time>``. The registry finds a group only
#: once it is recorded, and only the group; the mark also finds a process started in the
#: instant before its group was recorded, or one that left the group (``setsid``).
MARK_ENV = "PYTEST_CONDUCTOR_PROCESS_MARK"
#: The run's id, set by the controller for itself and its xdist workers.
RUN_ENV = "PYTEST_CONDUCTOR_RUN"


def new_run_id() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def process_mark() -> str:
    """The mark for a process this one starts now (empty outside a run)."""
    run = os.environ.get(RUN_ENV, "")
    if not run:
        return ""
    me = os.getpid()
    return f"{run}/{me}:{process_start_time(me)}"


def kill_marked(run: str, which: str = "all") -> list[int]:
    """SIGKILL the processes marked by run ``run``; returns their pids.

    ``which`` as for :meth:`GroupRegistry.sweep`: ``"all"``, ``"dead-owner"`` (started by
    a process that is gone, e.g. a crashed xdist worker) or ``"mine"``. Only for
    leftovers: what is still recorded in a registry is ended gently first, by its sweep.
    """
    if not run or not _PROC.is_dir():
        return []
    me = os.getpid()
    prefix = f"{MARK_ENV}={run}/".encode()
    killed = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        owner = _marked_owner(entry, prefix)
        if owner is None:
            continue
        owner_pid, owner_start = owner
        if which == "mine" and owner_pid != me:
            continue
        if which == "dead-owner" and process_alive(owner_pid, owner_start):
            continue
        with contextlib.suppress(OSError):
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed


def _marked_owner(entry: Path, prefix: bytes) -> tuple[int, int | None] | None:
    try:
        environ = (entry / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            pid, _, start = item[len(prefix) :].decode("ascii", "replace").partition(":")
            if not pid.isdigit():
                return None
            return int(pid), int(start) if start.isdigit() else None
    return None
