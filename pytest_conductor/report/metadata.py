"""The track's ``metadata.json``: merge this run's execution record into it, never clobber.

Two owners write such a file, and the plugin speaks the vocabulary of whichever one
wrote it; the keys present decide (:func:`metadata_shape`):

* **the orchestrator** (conductor-orchestrator-superpowers): ``loop_state`` with
  ``current_step`` / ``step_status`` / ``checkpoints`` / ``parallel_state``, a top-level
  ``completed_tasks`` its dispatcher resumes from, and a ``version`` (3) below which it
  migrates the file. A missing file is created in this shape, with that version.
* **Google's Conductor**: ``track_id``, ``type``, ``status`` (``new | in_progress |
  completed | cancelled``), ``created_at``, ``updated_at``, ``description`` and no
  ``loop_state`` or ``version``. The plugin sets ``status`` and ``updated_at`` in that
  vocabulary and puts its own record under the one key :data:`OWN_KEY`, adding no loop
  keys of the other orchestrator.

Every key this module does not set keeps its value. The orchestrator serialises writers
with ``mkdir <track>/.metadata.lock`` (``mkdir`` is atomic), so this module takes the
same lock, and replaces the file whole (temporary file + ``os.replace``) so that a reader
never sees half of it.

A file that is not valid JSON, is nested too deeply to read, or whose top level or
``loop_state`` is not an object, is someone's data that this module cannot merge into: it
is reported and left untouched.

Pure Python: no pytest import.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_conductor.util.atomic import atomic_write

__all__ = [
    "AGENT",
    "GOOGLE",
    "LOCK_NAME",
    "METADATA_NAME",
    "METADATA_VERSION",
    "ORCHESTRATOR",
    "OWN_KEY",
    "STEP_AFTER",
    "STEP_RUNNING",
    "STEP_STATUSES",
    "ExecutionRecord",
    "MetadataError",
    "MetadataLockTimeout",
    "completed_groups",
    "merge_execution",
    "metadata_lock",
    "metadata_shape",
    "update_metadata",
]

METADATA_NAME = "metadata.json"
LOCK_NAME = ".metadata.lock"
AGENT = "pytest-conductor"
#: The version the orchestrator writes into a new file; below 2 it migrates the file.
METADATA_VERSION = 3
# The orchestrator's loop: after the parallel execution comes its evaluation.
STEP_AFTER = "EVALUATE_EXECUTION"
# The step this plugin performs.
STEP_RUNNING = "PARALLEL_EXECUTE"
#: The only values the orchestrator knows for ``step_status``.
STEP_STATUSES = (
    "NOT_STARTED",
    "IN_PROGRESS",
    "PASSED",
    "FAILED",
    "BLOCKED",
    "SKIPPED",
    "PARTIAL_FAIL",
)
#: The key holding this plugin's record in a Google Conductor metadata.json.
OWN_KEY = "pytest_conductor"
ORCHESTRATOR = "orchestrator"
GOOGLE = "google"

#: ExecutionRecord.status values: a run going on, or how it ended.
RUNNING = "RUNNING"
INTERRUPTED = "INTERRUPTED"

_POLL = 0.05


class MetadataError(Exception):
    """metadata.json was not updated; the message says why, for the user."""


class MetadataLockTimeout(MetadataError):
    """Another process held ``.metadata.lock`` for longer than we wait."""


@dataclass(frozen=True)
class ExecutionRecord:
    """What one run adds to metadata.json.

    ``status``: RUNNING (written during the run), PASSED, FAILED or INTERRUPTED.
    ``done_tasks`` are the nodes known to have passed (this run, or earlier for nodes
    this run left out); ``undone_tasks`` the nodes that failed or were blocked in this
    run: together they update the top-level ``completed_tasks``. ``plan_ids`` are all the
    plan's nodes (Google's ``completed`` needs every one done).
    """

    status: str
    started_at: str
    completed_at: str = ""
    updated_at: str = ""
    total_workers_spawned: int = 0
    completed_workers: int = 0
    failed_workers: int = 0
    blocked_tasks: Sequence[str] = ()
    parallel_groups_completed: Sequence[str] = ()
    failed_tasks: Mapping[str, str] = field(default_factory=dict)
    done_tasks: Sequence[str] = ()
    undone_tasks: Sequence[str] = ()
    plan_ids: Sequence[str] = ()

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def last_updated(self) -> str:
        return self.updated_at or self.completed_at or self.started_at

    def counts(self) -> dict[str, Any]:
        return {
            "total_workers_spawned": self.total_workers_spawned,
            "completed_workers": self.completed_workers,
            "failed_workers": self.failed_workers,
            "blocked_tasks": list(self.blocked_tasks),
            "failed_tasks": dict(self.failed_tasks),
        }


def completed_groups(groups: Mapping[str, Sequence[str]], statuses: Mapping[str, str]) -> list[str]:
    """Ids of the groups whose every task passed (``statuses[task] == "passed"``)."""
    return [
        group
        for group, tasks in groups.items()
        if tasks and all(statuses.get(task) == "passed" for task in tasks)
    ]


def metadata_shape(data: Mapping[str, Any]) -> str:
    """:data:`GOOGLE` for a Google Conductor file, else :data:`ORCHESTRATOR`.

    Google's: a ``track_id`` and a text ``status``, and neither ``loop_state`` nor
    ``version`` (the orchestrator's own files carry both). An empty or missing file is
    the orchestrator's.
    """
    if "loop_state" in data or "version" in data:
        return ORCHESTRATOR
    if "track_id" in data and isinstance(data.get("status"), str):
        return GOOGLE
    return ORCHESTRATOR


def _object_at(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """A copy of ``data[key]`` stored back in ``data`` (created when absent).

    Copies are shallow on purpose: only the objects this module changes are copied, so a
    deeply nested value elsewhere in the file is never walked.
    """
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise MetadataError(
            f"metadata.json not updated: {where}{key} is a {type(value).__name__}, "
            "expected a JSON object; left as it is"
        )
    data[key] = copy = dict(value)
    return copy


def _merged_list(previous: object, add: Sequence[str], remove: Sequence[str] = ()) -> list[Any]:
    """``previous`` (kept in its order) without ``remove``, then ``add`` not yet in it."""
    kept = list(previous) if isinstance(previous, list) else []
    gone = set(remove)
    result = [item for item in kept if not (isinstance(item, str) and item in gone)]
    have = {item for item in result if isinstance(item, str)}
    for item in add:
        if item not in have:
            have.add(item)
            result.append(item)
    return result


def _completed_tasks(previous: object, record: ExecutionRecord) -> list[Any]:
    """The done list: plan order for the plan's nodes, other entries kept after them."""
    merged = _merged_list(previous, record.done_tasks, record.undone_tasks)
    present = {item for item in merged if isinstance(item, str)}
    plan = [t for t in record.plan_ids if t in present]
    in_plan = set(record.plan_ids)
    return plan + [item for item in merged if not (isinstance(item, str) and item in in_plan)]


def _google_status(current: object, record: ExecutionRecord, done: Sequence[Any]) -> object:
    if current == "cancelled":
        return current  # a person cancelled the track; a run does not undo that
    finished = record.status == "PASSED" and set(record.plan_ids) <= set(done)
    return "completed" if finished else "in_progress"


def _seconds(timestamp: str) -> str:
    """``2026-11-27T12:00:00Z``: Google Conductor writes its times without fractions."""
    return timestamp[:19] + "Z" if len(timestamp) >= 19 else timestamp


def merge_execution(metadata: Mapping[str, Any], record: ExecutionRecord) -> dict[str, Any]:
    """A copy of ``metadata`` with ``record`` merged in; ``metadata`` is not changed.

    See docs/files.md for every key set, in both shapes.
    """
    data = dict(metadata)
    if metadata_shape(data) == GOOGLE:
        return _merge_google(data, record)
    if not data:
        data["version"] = METADATA_VERSION  # a new file: the orchestrator must not migrate it
    loop = _object_at(data, "loop_state", "")
    checkpoints = _object_at(loop, "checkpoints", "loop_state.")
    checkpoint = _object_at(checkpoints, STEP_RUNNING, "loop_state.checkpoints.")
    state = _object_at(loop, "parallel_state", "loop_state.")
    checkpoint["agent"] = AGENT
    checkpoint["started_at"] = record.started_at
    checkpoint["last_updated"] = record.last_updated
    if record.running:
        loop["current_step"] = STEP_RUNNING
        loop["step_status"] = "IN_PROGRESS"
        checkpoint["status"] = "IN_PROGRESS"
        checkpoint.pop("completed_at", None)
        state.pop("interrupted_at", None)
    elif record.interrupted:
        # Not IN_PROGRESS: nobody is running the step any more, and the orchestrator
        # would monitor it forever. NOT_STARTED makes it dispatch again, skipping the
        # completed_tasks; the interruption is recorded in our own key.
        loop["current_step"] = STEP_RUNNING
        loop["step_status"] = "NOT_STARTED"
        checkpoint["status"] = "NOT_STARTED"
        checkpoint.pop("completed_at", None)
        state["interrupted_at"] = record.last_updated
    else:
        loop["current_step"] = STEP_AFTER
        loop["step_status"] = "NOT_STARTED"
        checkpoint["status"] = record.status
        checkpoint["completed_at"] = record.completed_at or record.last_updated
    state.update(record.counts())
    state["parallel_groups_completed"] = _merged_list(
        state.get("parallel_groups_completed"), record.parallel_groups_completed
    )
    data["completed_tasks"] = _completed_tasks(data.get("completed_tasks"), record)
    return data


def _merge_google(data: dict[str, Any], record: ExecutionRecord) -> dict[str, Any]:
    own = _object_at(data, OWN_KEY, "")
    done = _completed_tasks(own.get("completed_tasks"), record)
    data["status"] = _google_status(data.get("status"), record, done)
    data["updated_at"] = _seconds(record.last_updated)
    own["status"] = record.status
    own["started_at"] = record.started_at
    own["last_updated"] = record.last_updated
    if record.completed_at and not record.running and not record.interrupted:
        own["completed_at"] = record.completed_at
    else:
        own.pop("completed_at", None)
    if record.interrupted:
        own["interrupted_at"] = record.last_updated
    else:
        own.pop("interrupted_at", None)
    own.update(record.counts())
    own["parallel_groups_completed"] = _merged_list(
        own.get("parallel_groups_completed"), record.parallel_groups_completed
    )
    own["completed_tasks"] = done
    return data


@contextlib.contextmanager
def metadata_lock(track_dir: Path, timeout: float = 30.0) -> Iterator[Path]:
    """Hold the orchestrator's lock, ``<track>/.metadata.lock`` (a directory), for the block.

    Raises :class:`MetadataLockTimeout` when it is still held after ``timeout`` seconds;
    ``timeout=0`` tries once and never waits.
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
    track_dir: Path,
    record: ExecutionRecord,
    *,
    lock_timeout: float = 30.0,
    durable: bool = True,
) -> Path:
    """Merge ``record`` into ``<track_dir>/metadata.json`` under the orchestrator's lock.

    A missing file is created. Raises :class:`MetadataError` (file left untouched) when the
    lock stays held, the file does not parse, or it cannot be merged into.
    ``durable=False`` skips the fsync (see :func:`~pytest_conductor.util.atomic.atomic_write`):
    for the progress written while a run goes on, which the run's last write supersedes.
    """
    path = Path(track_dir) / METADATA_NAME
    with metadata_lock(track_dir, lock_timeout):
        try:
            merged = merge_execution(_read(path), record)
            # allow_nan stays on: a NaN the orchestrator wrote (json.loads accepts it)
            # round-trips.
            text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
        except RecursionError:
            # json reads and writes nesting recursively; a file nested thousands deep
            # is someone's data we cannot hold, not a reason for a traceback.
            raise MetadataError(
                f"metadata.json not updated: {path} is nested too deeply to read; left as it is"
            ) from None
        try:
            atomic_write(path, text.encode("utf-8"), durable=durable)
        except OSError as error:
            raise MetadataError(
                f"metadata.json not updated: cannot write {path}: {error}"
            ) from None
    return path
