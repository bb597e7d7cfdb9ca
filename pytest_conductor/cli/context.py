"""What every ``conductor-bus`` command shares: exit codes, user errors, and the context.

The context resolves where the bus is and who is talking from flags first, then from the
environment the dispatcher gives every worker (``CONDUCTOR_BUS``, ``CONDUCTOR_TASK_ID``,
``CONDUCTOR_WORKER_ID``, ``CONDUCTOR_TRACK``, ``CONDUCTOR_ROOT``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_conductor.bus import MessageBus

__all__ = [
    "DEFAULT_STALE_AFTER",
    "EXIT_FAILED",
    "EXIT_HELD",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "Context",
    "UsageError",
    "find_root",
    "print_warnings",
    "project_path",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HELD = 3
EXIT_INTERRUPTED = 130

PROG = "conductor-bus"

# Two missed five-minute heartbeats (DESIGN section 5) make a worker stale.
DEFAULT_STALE_AFTER = 600.0


class UsageError(Exception):
    """A user error: reported as one line and exit status 2, never as a traceback."""


@dataclass
class Context:
    """Where the bus is and who is talking, resolved from flags and environment."""

    args: argparse.Namespace
    command: str
    opened: MessageBus | None = None

    def option(self, name: str, env: str) -> str | None:
        value = getattr(self.args, name, None)
        if value is None:
            value = os.environ.get(env) or None
        return value

    def need(self, name: str, env: str, what: str) -> str:
        value = self.option(name, env)
        if value is None:
            raise UsageError(f"{what} is needed: set {env} or pass --{name}")
        return value

    @property
    def worker(self) -> str:
        return self.need("worker", "CONDUCTOR_WORKER_ID", "a worker id")

    @property
    def task(self) -> str:
        return self.need("task", "CONDUCTOR_TASK_ID", "a task id")

    @property
    def root(self) -> Path | None:
        """``--root``, else ``CONDUCTOR_ROOT``, else the nearest folder holding
        ``conductor/`` from the working directory up, as pytest finds it."""
        value = self.option("root", "CONDUCTOR_ROOT")
        return Path(value) if value else find_root(Path.cwd())

    def bus_dir(self) -> Path:
        value = self.option("bus", "CONDUCTOR_BUS")
        if value:
            return Path(value)
        track, root = self.option("track", "CONDUCTOR_TRACK"), self.root
        if track and root:
            from pytest_conductor.util.ids import id_problem

            problem = id_problem(track)
            if problem:
                raise UsageError(f"track id {track!r} is not usable ({problem})")
            return root / "conductor" / "tracks" / track / ".message-bus"
        if track:
            raise UsageError(
                f"no conductor/ folder in {Path.cwd()} or above it: "
                "run from the project, or pass --root (or set CONDUCTOR_ROOT)"
            )
        raise UsageError(
            "the bus folder is needed: set CONDUCTOR_BUS or pass --bus "
            "(or pass --track, from inside the project)"
        )

    def bus(self, *, create: bool = False) -> MessageBus:
        if self.opened is None:
            path = self.bus_dir()
            if not create and not path.is_dir():
                raise UsageError(
                    f"bus folder {path} does not exist: check CONDUCTOR_BUS / --bus, "
                    f"or create it with '{PROG} init'"
                )
            source = self.option("worker", "CONDUCTOR_WORKER_ID") or PROG
            # Damage reports are printed in this tool's own words (print_warnings).
            self.opened = MessageBus(path, source=source, warn=False)
        return self.opened


def find_root(start: Path) -> Path | None:
    """The nearest of ``start`` and its parents that holds a ``conductor/`` folder."""
    for folder in (start, *start.parents):
        if (folder / "conductor").is_dir():
            return folder
    return None


def project_path(path: str, root: Path | None) -> str:
    """A lock path relative to the project root; absolute paths must lie inside the root."""
    given = Path(path)
    if not given.is_absolute():
        return path
    if root is None:
        raise UsageError(
            f"{path} is absolute: give it relative to the project root, "
            "or set CONDUCTOR_ROOT (or --root) so it can be made relative"
        )
    try:
        return given.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{path} is outside the project root {root}") from None


def print_warnings(bus: MessageBus) -> None:
    """Print, then forget, the damage the bus noticed while reading its files."""
    for message in bus.warnings:
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    bus.warnings.clear()
