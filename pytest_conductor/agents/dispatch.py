"""Agent workers: one agent process per node, watched for liveness.

Pure Python: no pytest import. :func:`run_agent` does one attempt of one node: it writes
the prompt file, registers the worker on the bus, starts the agent command in a process
group of its own, and watches it until it exits, runs past its timeout, or goes silent
for two heartbeat intervals. Whatever happens (also Ctrl-C), the whole group is killed
before it returns, the locks the agent still holds are released, and the outcome says
why the attempt failed, if it did, with the tail of the agent's log.

Orphans: every running agent group is also recorded in ``<bus>/agents/`` (see
:class:`~pytest_conductor.util.processes.GroupRegistry`), so that the controller can kill it
even when the process that started it (an xdist worker) was killed outright.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_conductor.bus import (
    BusError,
    BusLockTimeout,
    MessageBus,
    SymlinkRefused,
    refuse_symlinks,
)
from pytest_conductor.bus.forward import forwarded_to, request_lock
from pytest_conductor.plan.durations import format_duration
from pytest_conductor.util.processes import (
    MARK_ENV,
    GroupRecord,
    GroupRegistry,
    kill_group,
    parent_death_signal,
    process_mark,
)
from pytest_conductor.util.signals import (
    Terminated,
    signal_name,
    termination_as_interrupt,
    termination_signals,
)
from pytest_conductor.util.timestamps import parse_iso

__all__ = [
    "AGENTS_DIR",
    "AGENT_KILL_GRACE",
    "PLACEHOLDERS",
    "TAIL_LINES",
    "AgentJob",
    "AgentResult",
    "TemplateError",
    "Terminated",
    "agent_registry",
    "bus_cli",
    "log_path",
    "new_worker_id",
    "parse_template",
    "prompt_path",
    "read_tail",
    "render_argv",
    "run_agent",
    "running_line",
    "set_aside_events",
    "termination_signals",
]

PLACEHOLDERS = ("prompt_file", "task_id", "track", "worker_id", "bus", "root")
#: Folder of the bus holding one record per running agent group.
AGENTS_DIR = "agents"
#: Time an agent gets between SIGTERM and SIGKILL: enough to flush a log, not to linger.
AGENT_KILL_GRACE = 5.0
#: Lines of the agent's log shown in a failure report.
TAIL_LINES = 30

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_POLL = 0.05
_TASK_EVENTS = ("TASK_COMPLETE", "TASK_FAILED")


class TemplateError(ValueError):
    """An agent command template that cannot be used (unknown placeholder, bad quoting)."""


# --------------------------------------------------------------------------- the command


def parse_template(template: str) -> tuple[str, ...]:
    """Split ``template`` as a shell would and check its placeholders; raise TemplateError.

    Placeholders are ``{name}`` inside any argument; ``{{`` and ``}}`` stand for literal
    braces. Other braces (a JSON argument) are left alone.
    """
    try:
        argv = tuple(shlex.split(template))
    except ValueError as exc:
        raise TemplateError(f"cannot split {template!r} like a shell would: {exc}") from None
    if not argv:
        raise TemplateError("the command template is empty")
    for arg in argv:
        for match in _PLACEHOLDER.finditer(arg):
            name = match.group(1)
            if name is not None and name not in PLACEHOLDERS:
                known = " ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                raise TemplateError(
                    f"unknown placeholder {{{name}}} in {template!r}; known: {known}"
                )
    return argv


def render_argv(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Substitute the placeholders of each argument (one argument stays one argument)."""

    def substitute(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        return values[match.group(1)]

    return [_PLACEHOLDER.sub(substitute, arg) for arg in argv]


def new_worker_id(task_id: str, now: float | None = None) -> str:
    """``worker-<task id>-<epoch ms>``, the form orchestrators know."""
    return f"worker-{task_id}-{int((time.time() if now is None else now) * 1000)}"


def prompt_path(bus_dir: Path, task_id: str, attempt: int) -> Path:
    return bus_dir / "prompts" / f"{task_id}-{attempt}.md"


def log_path(bus_dir: Path, task_id: str, attempt: int) -> Path:
    return bus_dir / "logs" / f"{task_id}-{attempt}.log"


def agent_registry(bus_dir: Path) -> GroupRegistry:
    return GroupRegistry(bus_dir / AGENTS_DIR)


def _agent_path() -> str:
    """PATH for agents: ours, with this Python's scripts folder first when it holds the
    ``conductor-bus`` tool and PATH does not (pytest run as ``venv/bin/python -m pytest``)."""
    path = os.environ.get("PATH", os.defpath)
    scripts = sysconfig.get_path("scripts")
    tool = shutil.which("conductor-bus", path=scripts) if scripts else None
    if tool is not None and shutil.which("conductor-bus", path=path) != tool:
        return os.pathsep.join([scripts, path])
    return path


def bus_cli() -> str:
    """How an agent runs the bus tool: ``conductor-bus``, else through this Python."""
    if shutil.which("conductor-bus", path=_agent_path()):
        return "conductor-bus"
    return f"{shlex.quote(sys.executable)} -m pytest_conductor.cli.main"


# --------------------------------------------------------------------------- one attempt


@dataclass(frozen=True)
class AgentJob:
    """One attempt of one node: what to run and how to watch it."""

    track: str
    task_id: str
    worker_id: str
    template: str
    root: Path
    bus_dir: Path
    prompt_text: str
    attempt: int = 1
    timeout: float = 1800.0
    heartbeat: float = 300.0
    parallel_group: str | None = None
    #: The node's direct dependents (``CONDUCTOR_UNBLOCKS``, for ``TASK_COMPLETE.unblocks``).
    unblocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentResult:
    """How an attempt ended. ``reason`` is empty when the agent ended well (exit status 0,
    no TASK_FAILED of its own); the acceptance criteria decide then."""

    worker_id: str
    attempt: int
    reason: str
    returncode: int | None
    log: Path
    prompt: Path
    duration: float
    tail: str = ""
    released_locks: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def failed(self) -> bool:
        return bool(self.reason)


def run_agent(
    job: AgentJob,
    *,
    on_wait: Callable[[], None] | None = None,
    grace: float = AGENT_KILL_GRACE,
) -> AgentResult:
    """Run one agent attempt to its end; see the module docstring.

    ``on_wait`` is called every few hundredths of a second while the agent runs (the
    in-process live status). KeyboardInterrupt (and SIGTERM/SIGHUP, turned into it while
    the agent runs, when this is the main thread) kills the group and propagates.
    """
    return _Attempt(job).run(on_wait, grace)


class _Attempt:
    """The state of one :func:`run_agent` call."""

    def __init__(self, job: AgentJob) -> None:
        self.job = job
        self.bus = MessageBus(job.bus_dir, source="controller", warn=False)
        self.prompt = prompt_path(job.bus_dir, job.task_id, job.attempt)
        self.log = log_path(job.bus_dir, job.task_id, job.attempt)
        self.started = time.monotonic()
        self.started_wall = time.time()

    def run(self, on_wait: Callable[[], None] | None, grace: float) -> AgentResult:
        job = self.job
        self.bus.init()
        try:
            # Not through a link an agent may have put in the bus folder (it could point
            # outside the project).
            refuse_symlinks(self.prompt.parent, self.log.parent, self.prompt, self.log)
        except SymlinkRefused as exc:
            return self.result(f"agent not started: {exc}", None, ())
        self.prompt.parent.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.prompt.write_text(job.prompt_text, encoding="utf-8")
        values = {
            "prompt_file": str(self.prompt),
            "task_id": job.task_id,
            "track": job.track,
            "worker_id": job.worker_id,
            "bus": str(job.bus_dir),
            "root": str(job.root),
        }
        argv = render_argv(parse_template(job.template), values)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.bus.register_worker(job.worker_id, job.task_id)
        self.bus.dispatched(job.worker_id, job.task_id, job.parallel_group)
        with self.log.open("wb") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=job.root,
                    env=_environment(values, job.unblocks),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # Runs in the child before exec; only a prctl() call, safe with threads.
                    preexec_fn=parent_death_signal(),  # noqa: PLW1509
                )
            except OSError as exc:
                reason = f"agent could not start: {_start_error(argv[0], exc)}"
                out.write(f"{reason}\n".encode())
                return self.result(reason, None, ())
        registry = agent_registry(job.bus_dir)
        stopped = ""
        try:
            registry.add(
                job.worker_id,
                proc.pid,
                {"task_id": job.task_id, "worker_id": job.worker_id, "track": job.track},
            )
            with termination_as_interrupt():
                stopped = self.watch(proc, on_wait)
        finally:
            # Also after a normal exit: whatever the agent left running in its group goes.
            kill_group(proc, grace)
            registry.remove(job.worker_id)
            released = _release_locks(self.bus, job.worker_id)
        reason = stopped or _exit_reason(proc.returncode, self.reported_failure())
        return self.result(reason, proc.returncode, released)

    def watch(self, proc: subprocess.Popen[bytes], on_wait: Callable[[], None] | None) -> str:
        """Wait for the agent; returns "" when it exited, else why it must be stopped."""
        job = self.job
        last_beat = self.started_wall  # silence counts from dispatch
        # Often enough to notice a stale agent within a fraction of the allowed silence.
        read_every = min(1.0, job.heartbeat / 5)
        next_read = self.started + read_every
        while True:
            try:
                proc.wait(timeout=_POLL)
                return ""
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - self.started > job.timeout:
                return f"agent timed out after {format_duration(job.timeout)}"
            if now >= next_read:
                next_read = now + read_every
                beat = self.last_heartbeat()
                # Locks that ran out (or whose template-shaped holder ended) are released
                # here too, so that a waiter gets its FILE_UNLOCK event without anyone
                # having to ask for the lock first.
                with contextlib.suppress(OSError, BusError, BusLockTimeout):
                    self.bus.expire_locks()
                if beat is not None:
                    last_beat = max(last_beat, beat)
                if time.time() - last_beat > 2 * job.heartbeat:
                    return f"agent stale: no heartbeat for {format_duration(2 * job.heartbeat)}"
            if on_wait is not None:
                on_wait()

    def last_heartbeat(self) -> float | None:
        """The agent's last heartbeat (epoch seconds); None when unreadable right now.

        A damaged worker-status.json is repaired by the read (the damage is kept in
        ``bus.warnings``); the entry of this agent may be gone then, and its last
        heartbeat seen before still counts.
        """
        try:
            entry = self.bus.worker_status().get(self.job.worker_id)
        except (OSError, BusError, BusLockTimeout):
            return None
        return _epoch(entry.get("last_heartbeat")) if entry else None

    def reported_failure(self) -> str | None:
        """The error of a TASK_FAILED the agent posted for its task during this attempt."""
        task = self.job.task_id
        error: str | None = None
        for message in self.bus.messages():
            payload = message.get("payload")
            if message.get("type") != "TASK_FAILED" or not isinstance(payload, dict):
                continue
            moment = _epoch(message.get("timestamp"))
            if (
                payload.get("task_id") == task
                and moment is not None
                and moment >= self.started_wall
            ):
                error = str(payload.get("error", ""))
        if error is not None:
            return error
        # An agent that wrote the event file without the tool counts too.
        event = self.bus.events_dir / f"TASK_FAILED_{task}.event"
        with contextlib.suppress(OSError):
            if event.stat().st_mtime >= self.started_wall:
                return event.read_text(encoding="utf-8", errors="replace").strip()
        return None

    def result(self, reason: str, code: int | None, released: tuple[str, ...]) -> AgentResult:
        job = self.job
        if reason:
            with contextlib.suppress(OSError, BusError, BusLockTimeout):
                self.bus.set_worker_status(job.worker_id, "FAILED", task_id=job.task_id)
        return AgentResult(
            worker_id=job.worker_id,
            attempt=job.attempt,
            reason=reason,
            returncode=code,
            log=self.log,
            prompt=self.prompt,
            duration=time.monotonic() - self.started,
            tail=read_tail(self.log),
            released_locks=released,
            warnings=tuple(dict.fromkeys([*self.bus.warnings, *self.damage()])),
        )

    def damage(self) -> list[str]:
        """Bus files found damaged (and repaired, by anyone) while the agent ran."""
        found = []
        for copy in sorted(self.job.bus_dir.glob("*.corrupt-*")):
            with contextlib.suppress(OSError):
                # The copy keeps the damaged file's time: when it was written, not repaired.
                if copy.stat().st_mtime >= self.started_wall:
                    name = copy.name.split(".corrupt-")[0]
                    found.append(f"{name} was damaged while the agent ran; kept as {copy.name}")
        return found


def _exit_reason(code: int | None, reported: str | None) -> str:
    status = ""
    if code is not None and code < 0:
        status = f"agent killed by signal {signal_name(-code)}"
    elif code:
        status = f"agent exited with status {code}"
    if reported is not None:
        text = f"agent reported TASK_FAILED: {reported or '(no error given)'}"
        return f"{text} ({status})" if status else text
    return status


def _release_locks(bus: MessageBus, worker_id: str) -> tuple[str, ...]:
    try:
        if forwarded_to(bus.path):
            # This machine's bus is forwarded: the agent's locks live in the controller's.
            request = {"op": "release_all", "worker_id": worker_id, "source": bus.source}
            answer = request_lock(bus.path, request, carrier_pid=os.getpid())
            return tuple(answer["released"])
        return tuple(bus.release_worker_locks(worker_id))
    except (OSError, BusError, BusLockTimeout):
        return ()


def _environment(values: Mapping[str, str], unblocks: Sequence[str] = ()) -> dict[str, str]:
    # The agent is not part of this pytest run: xdist and pytest markers would mislead a
    # pytest it runs itself; a CONDUCTOR_* from an enclosing run would point elsewhere.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST", "CONDUCTOR_"))
    }
    env["PATH"] = _agent_path()
    env.update(
        CONDUCTOR_TRACK=values["track"],
        CONDUCTOR_TASK_ID=values["task_id"],
        CONDUCTOR_WORKER_ID=values["worker_id"],
        CONDUCTOR_BUS=values["bus"],
        CONDUCTOR_PROMPT_FILE=values["prompt_file"],
        CONDUCTOR_ROOT=values["root"],
        # Ids are plain words ([A-Za-z0-9._-]): one space between them is unambiguous.
        CONDUCTOR_UNBLOCKS=" ".join(unblocks),
    )
    mark = process_mark()
    if mark:
        env[MARK_ENV] = mark
    return env


def _start_error(program: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"command not executable: {program}"
    return f"cannot start {program}: {exc.strerror or exc}"


def read_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log (read from its end: logs can be large)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _epoch(value: object) -> float | None:
    """Epoch seconds of a bus timestamp, or None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- retries


def set_aside_events(
    bus_dir: Path, task_id: str, attempt: int, kinds: Sequence[str] = _TASK_EVENTS
) -> list[Path]:
    """Move this task's ``kinds`` events (TASK_COMPLETE/TASK_FAILED) next to the attempt's log.

    After a failed attempt, so that the next attempt is judged on what it reports itself
    and an orchestrator polling events/ never sees a verdict the node did not get; kept
    as ``logs/<task>-<attempt>.<KIND>.event``, not deleted.
    """
    moved = []
    for kind in kinds:
        source = bus_dir / "events" / f"{kind}_{task_id}.event"
        target = log_path(bus_dir, task_id, attempt).with_suffix(f".{kind}.event")
        with contextlib.suppress(FileNotFoundError):
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
            moved.append(target)
    return moved


# --------------------------------------------------------------------------- live status


def running_line(
    records: Sequence[GroupRecord], status: Mapping[str, Mapping[str, object]], now: float
) -> str | None:
    """One line naming the running agents, how long each runs and its heartbeat age.

    ``records`` are the agent registry's; ``status`` is worker-status.json. None when no
    agent runs.
    """
    parts = []
    for record in sorted(records, key=lambda r: (r.started, r.name)):
        task = record.info.get("task_id", record.name)
        entry = status.get(record.info.get("worker_id", record.name)) or {}
        beat = _epoch(entry.get("last_heartbeat"))
        age = f"heartbeat {_clock(now - beat)} ago" if beat is not None else "no heartbeat"
        parts.append(f"{task} {_clock(now - record.started)} ({age})")
    if not parts:
        return None
    agents = "agent" if len(parts) == 1 else "agents"
    return f"conductor: {len(parts)} {agents} running: " + ", ".join(parts)


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
