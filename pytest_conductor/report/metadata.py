"""The track's ``metadata.json``: merge this run's execution record into it, never clobber.

The orchestrator owns the file and adds keys of its own (``board_sessions`` at the top or
under ``loop_state``, and others we do not know); every key this module does not set
keeps its value. The orchestrator serialises writers with ``mkdir <track>/.metadata.lock``
(``mkdir`` is atomic), so this module takes the same lock, and replaces the file whole
(temporary file + ``os.replace``) so that a reader never sees half of it.

A file that is not valid JSON, or whose top level or ``loop_state`` is not an object, is
someone's data that this module cannot merge into: it is reported and left untouched.

Pure Python: no pytest import.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_conductor.util.atomic import atomic_write

__all__ = [
    "AGENT",
    "LOCK_NAME",
    "METADATA_NAME",
    "STEP_AFTER",
    "STEP_RUNNING",
    "ExecutionRecord",
    "MetadataError",
    "MetadataLockTimeout",
    "completed_groups",
    "merge_execution",
    "metadata_lock",
    "update_metadata",
]

METADATA_NAME = "metadata.json"
LOCK_NAME = ".metadata.lock"
AGENT = "pytest-conductor"
# The orchestrator's loop: after the parallel execution comes its evaluation.
STEP_AFTER = "EVALUATE_EXECUTION"
# The step an interrupted run leaves current when the file named none.
STEP_RUNNING = "PARALLEL_EXECUTE"

_POLL = 0.05


class MetadataError(Exception):
    """metadata.json was not updated; the message says why, for the user."""


class MetadataLockTimeout(MetadataError):
    """Another process held ``.metadata.lock`` for longer than we wait."""


@dataclass(frozen=True)
class ExecutionRecord:
    """What one run adds to metadata.json. ``status``: PASSED | FAILED | INTERRUPTED."""

    status: str
    started_at: str
    completed_at: str
    total_workers_spawned: int = 0
    completed_workers: int = 0
    failed_workers: int = 0
    blocked_tasks: Sequence[str] = ()
    parallel_groups_completed: Sequence[str] = ()
    failed_tasks: Mapping[str, str] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.status == "INTERRUPTED"

    def parallel_state(self) -> dict[str, Any]:
        return {
            "total_workers_spawned": self.total_workers_spawned,
            "completed_workers": self.completed_workers,
            "failed_workers": self.failed_workers,
            "blocked_tasks": list(self.blocked_tasks),
            "parallel_groups_completed": list(self.parallel_groups_completed),
            "failed_tasks": dict(self.failed_tasks),
        }

    def checkpoint(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "agent": AGENT,
        }


def completed_groups(groups: Mapping[str, Sequence[str]], statuses: Mapping[str, str]) -> list[str]:
    """Ids of the groups whose every task passed (``statuses[task] == "passed"``)."""
    return [
        group
        for group, tasks in groups.items()
        if tasks and all(statuses.get(task) == "passed" for task in tasks)
    ]


def _object_at(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """``data[key]`` as a dict, created when absent; MetadataError when it is not one."""
    value = data.setdefault(key, {})
    if not isinstance(value, dict):
        raise MetadataError(
            f"metadata.json not updated: {where}{key} is a {type(value).__name__}, "
            "expected a JSON object; left as it is"
        )
    return value


def merge_execution(metadata: Mapping[str, Any], record: ExecutionRecord) -> dict[str, Any]:
    """A copy of ``metadata`` with ``record`` merged in; ``metadata`` is not changed.

    Sets ``loop_state.current_step`` / ``step_status`` (an interrupted run keeps the
    current step and says ``INTERRUPTED``), merges ``loop_state.parallel_state`` and
    ``loop_state.checkpoints.PARALLEL_EXECUTE`` key by key. Everything else is kept.
    """
    data = copy.deepcopy(dict(metadata))
    loop = _object_at(data, "loop_state", "")
    if record.interrupted:
        loop.setdefault("current_step", STEP_RUNNING)
        loop["step_status"] = "INTERRUPTED"
    else:
        loop["current_step"] = STEP_AFTER
        loop["step_status"] = "NOT_STARTED"
    _object_at(loop, "parallel_state", "loop_state.").update(record.parallel_state())
    checkpoints = _object_at(loop, "checkpoints", "loop_state.")
    _object_at(checkpoints, STEP_RUNNING, "loop_state.checkpoints.").update(record.checkpoint())
    return data


@contextlib.contextmanager
def metadata_lock(track_dir: Path, timeout: float = 30.0) -> Iterator[Path]:
    """Hold the orchestrator's lock, ``<track>/.metadata.lock`` (a directory), for the block.

    Raises :class:`MetadataLockTimeout` when it is still held after ``timeout`` seconds.
    """
    lock = Path(track_dir) / LOCK_NAME
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock.mkdir()  # mkdir(2) is atomic: exactly one of several racing processes succeeds
            break
        except FileExistsError:
            if time.monotonic() >= deadline:
                raise MetadataLockTimeout(
                    f"metadata.json not updated: lock {lock} held for {timeout:g}s"
                ) from None
            time.sleep(_POLL)
        except OSError as error:
            raise MetadataError(
                f"metadata.json not updated: cannot create {lock}: {error}"
            ) from None
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):  # someone removed it for us; nothing to undo
            lock.rmdir()


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise MetadataError(f"metadata.json not updated: cannot read {path}: {error}") from None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise MetadataError(
            f"metadata.json not updated: {path} is not valid JSON ({error}); left as it is"
        ) from None
    if not isinstance(value, dict):
        raise MetadataError(
            f"metadata.json not updated: {path} holds a JSON {type(value).__name__}, "
            "expected an object; left as it is"
        )
    return value


def update_metadata(
    track_dir: Path, record: ExecutionRecord, *, lock_timeout: float = 30.0
) -> Path:
    """Merge ``record`` into ``<track_dir>/metadata.json`` under the orchestrator's lock.

    A missing file is created. Raises :class:`MetadataError` (file left untouched) when the
    lock stays held, the file does not parse, or it cannot be merged into.
    """
    path = Path(track_dir) / METADATA_NAME
    with metadata_lock(track_dir, lock_timeout):
        merged = merge_execution(_read(path), record)
        # allow_nan stays on: a NaN the orchestrator wrote (json.loads accepts it) round-trips.
        text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
        try:
            atomic_write(path, text.encode("utf-8"))
        except OSError as error:
            raise MetadataError(
                f"metadata.json not updated: cannot write {path}: {error}"
            ) from None
    return path
