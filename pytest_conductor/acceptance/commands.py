"""Run a criterion's command in its own session and keep the tail of what it printed.

Pure logic: nothing here knows about pytest. Killing the command's process group is
:mod:`pytest_conductor.util.processes`.
"""

from __future__ import annotations

import collections
import functools
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pytest_conductor.util.processes import (
    KILL_GRACE,
    MARK_ENV,
    GroupRegistry,
    kill_group,
    parent_death_signal,
    process_mark,
)

__all__ = ["COMMANDS_DIR", "CommandRun", "command_env", "command_registry", "run_command"]

#: The bus subfolder where running criterion commands are recorded (one JSON file each),
#: so that the controller can kill those of an xdist worker that died, and every one
#: left at the end of the run.
COMMANDS_DIR = "commands"

# Bytes of command output kept in memory; the tail is all a report needs.
_TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class CommandRun:
    """How a command ended: its status and output, or that it timed out or never started."""

    returncode: int = 0
    output: str = ""
    timed_out: bool = False
    start_error: str = ""


def command_env(base: Mapping[str, str] | None, extra: object) -> dict[str, str]:
    """This process's environment for a command, with ``base``, then ``extra``, laid over it."""
    # A nested pytest (or a script calling one) run from inside an xdist worker must not
    # believe it is that worker or that test.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))
    }
    if base:
        env.update(base)
    if isinstance(extra, Mapping):
        env.update({str(name): str(value) for name, value in extra.items()})
    return env


@functools.lru_cache(maxsize=8)  # asked once per node; a registry only knows its folder
def command_registry(bus_dir: Path) -> GroupRegistry:
    return GroupRegistry(bus_dir / COMMANDS_DIR)


def run_command(
    argv: list[str],
    root: Path,
    env: Mapping[str, str],
    timeout: float,
    *,
    registry: GroupRegistry | None = None,
    label: str = "command",
) -> CommandRun:
    """Run ``argv`` in its own session; kill its whole process group on timeout.

    With ``registry``, the group is recorded there while it runs (as ``label``), so that
    another process can kill it if this one dies first.
    """
    if not root.is_dir():
        return CommandRun(start_error=f"project root is not a directory: {root}")
    env = dict(env)
    mark = process_mark()
    if mark:
        env[MARK_ENV] = mark
    try:
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Runs in the child before exec; only a prctl() call, safe with threads.
            preexec_fn=parent_death_signal(),  # noqa: PLW1509
        )
    except FileNotFoundError:
        return CommandRun(start_error=f"command not found: {argv[0]}")
    except PermissionError:
        return CommandRun(start_error=f"command not executable: {argv[0]}")
    except OSError as exc:
        return CommandRun(start_error=f"cannot start {argv[0]}: {exc.strerror or exc}")
    except ValueError as exc:  # an embedded NUL byte, in an argument or the environment
        return CommandRun(start_error=f"cannot start {argv[0]!r}: {exc}")
    name = f"{label}-{proc.pid}"
    try:
        if registry is not None:
            # Recorded right after the start: only a process killed in the few
            # milliseconds in between could leave a group nobody knows of (its leader
            # still dies with it, by the parent-death signal).
            try:
                registry.add(name, proc.pid, {"command": argv[0]})
            except BaseException:
                kill_group(proc)  # unrecorded, it could outlive a crash of this process
                raise
        return _wait(proc, timeout)
    finally:
        if registry is not None:
            registry.remove(name)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> CommandRun:
    assert proc.stdout is not None  # stdout=PIPE guarantees it
    chunks: collections.deque[bytes] = collections.deque()
    # A reader thread rather than communicate(): a background grandchild may hold the pipe
    # open long after the command itself exited, and we must not wait for it.
    reader = threading.Thread(target=_drain, args=(proc.stdout, chunks), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    except BaseException:
        # Ctrl-C: the command sits in its own session, so the terminal's SIGINT never
        # reached it; without this it would outlive us.
        kill_group(proc)
        raise
    # Also after a normal exit: what the command left running in its group would be orphaned.
    kill_group(proc)
    reader.join(timeout=KILL_GRACE)
    output = b"".join(list(chunks)).decode("utf-8", errors="replace")
    return CommandRun(returncode=proc.returncode, output=output, timed_out=timed_out)


def _drain(stream: IO[bytes], chunks: collections.deque[bytes]) -> None:
    fd = stream.fileno()
    kept = 0
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            kept += len(chunk)
            while kept > _TAIL_BYTES and len(chunks) > 1:
                kept -= len(chunks.popleft())
    except OSError:
        pass
    finally:
        stream.close()
