"""The pytest side of one run per track: take the run lock, or say who holds it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest

from pytest_conductor.bus import SymlinkRefused
from pytest_conductor.bus.run_lock import RunHolder, RunLock, RunLocked
from pytest_conductor.settings import Settings

__all__ = ["hold_run_lock"]


@contextlib.contextmanager
def hold_run_lock(settings: Settings) -> Iterator[None]:
    """Hold the track's run lock for the block; a live holder is a usage error (exit 4)
    naming it, unless ``--conductor-wait-for-run`` asks to wait."""
    lock = RunLock(settings.bus_dir)

    def waiting(holder: RunHolder | None) -> None:
        who = holder.describe() if holder is not None else "another run"
        _say(f"waiting for the run of track {settings.track} in progress ({who}) to end")

    try:
        left_behind = lock.acquire(wait=settings.wait_for_run, on_wait=waiting)
    except RunLocked as exc:
        raise pytest.UsageError(
            f"conductor: track {settings.track}: {exc}; wait for it to end, "
            "or pass --conductor-wait-for-run to wait"
        ) from None
    except SymlinkRefused as exc:
        raise pytest.UsageError(f"conductor: track {settings.track}: {exc}") from None
    except OSError as exc:
        raise pytest.UsageError(
            f"conductor: track {settings.track}: cannot take the run lock in "
            f"{settings.bus_dir}: {exc.strerror or exc}"
        ) from None
    if left_behind is not None:
        _say(
            f"warning: took over the run lock of track {settings.track} from "
            f"{left_behind.describe()}, which is no longer running"
        )
    try:
        yield
    finally:
        lock.release()


def _say(line: str) -> None:
    # Before pytest_configure there is no terminal reporter yet; and not a Python warning,
    # which filterwarnings=error would turn into a failure of the run.
    print(f"conductor: {line}", file=sys.stderr, flush=True)
