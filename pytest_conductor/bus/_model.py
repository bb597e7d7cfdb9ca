"""Names, value types and checks of the bus: what may go into it and what comes out."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pytest_conductor.util.ids import SAFE_ID
from pytest_conductor.util.timestamps import parse_iso

__all__ = [
    "FINISHED_STATES",
    "MESSAGE_TYPES",
    "STATE_ALIASES",
    "WORKER_STATES",
    "BusError",
    "BusWarning",
    "JSONDict",
    "LockInfo",
    "LockResult",
    "as_percent",
    "check_file_name",
    "check_id",
    "check_type",
    "find_cycle",
    "normalize_lock_path",
    "parse_time",
    "payload_problems",
]

JSONDict = dict[str, Any]

WORKER_STATES = ("RUNNING", "COMPLETED", "FAILED", "BLOCKED")
#: Worker states that mean "this worker has ended", as readers meet them: the upstream
#: worker template writes ``COMPLETE`` where we write ``COMPLETED``.
FINISHED_STATES = frozenset({"COMPLETED", "COMPLETE", "FAILED"})
#: Other spellings of a state, accepted when a state is set.
STATE_ALIASES = {"COMPLETE": "COMPLETED"}

_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_NUMBER = (int, float)
_TEXT_OR_NONE = (str, type(None))
_IDS = (list, str)

# Fields the product's own messages carry (DESIGN section 6) and the JSON types readers
# expect. A payload that misses one or has the wrong type is still posted (the queue is a
# record) but the poster is warned, because readers will not understand it.
MESSAGE_TYPES: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    "WORKER_DISPATCHED": {"worker_id": (str,), "task_id": (str,), "parallel_group": _TEXT_OR_NONE},
    "PROGRESS": {
        "task_id": (str,),
        "progress_pct": (*_NUMBER, type(None)),
        "current_subtask": _TEXT_OR_NONE,
    },
    "TASK_COMPLETE": {
        "task_id": (str,),
        "commit_sha": _TEXT_OR_NONE,
        "files_modified": (list,),
        "unblocks": (list,),
    },
    "TASK_FAILED": {"task_id": (str,), "error": (str,)},
    "TASK_BLOCKED": {"task_id": (str,), "blocked_by": _IDS, "reason": (str,)},
    "FILE_LOCK": {"filepath": (str,)},
    "FILE_UNLOCK": {"filepath": (str,)},
    "BLOCKED": {"task_id": (str,), "waiting_for": (str,), "resource": (str,)},
    "PARALLEL_COMPLETE": {"track": (str,), "status": (str,)},
}


class BusError(ValueError):
    """A request the bus refuses: an unsafe id or path, a malformed type or payload."""


class BusWarning(UserWarning):
    """Damaged bus data was found and worked around; the run goes on."""


@dataclass(frozen=True)
class LockInfo:
    """One entry of ``locks.json``; ``active`` is false once ``expires_at`` has passed."""

    path: str
    worker_id: str
    task_id: str | None
    acquired_at: str
    expires_at: str
    active: bool

    @property
    def expired(self) -> bool:
        return not self.active


@dataclass(frozen=True)
class LockResult:
    """The answer to ``acquire_lock``; truthy when granted.

    When not granted, ``holder`` is the worker id holding the path and ``holder_task`` its
    task (when known); ``expires_at`` is when the holder's lock runs out.
    """

    granted: bool
    path: str
    holder: str
    holder_task: str | None
    expires_at: str
    took_over_from: str | None = None

    def __bool__(self) -> bool:
        return self.granted


def check_id(value: object, what: str) -> str:
    """``value`` if it is safe as part of a file name (``[A-Za-z0-9._-]+``, not . or ..)."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or value in {".", ".."}:
        raise BusError(
            f"{what} {value!r} is not usable on the bus: use letters, digits, '.', '_' or '-' "
            "(and not '.' or '..')"
        )
    return value


def check_type(value: object) -> str:
    """``value`` if it is a message type (letters, digits, underscores; a letter first)."""
    if not isinstance(value, str) or not _TYPE.fullmatch(value):
        raise BusError(
            f"message type {value!r} is not valid: use letters, digits and '_', e.g. TASK_COMPLETE"
        )
    return value


def check_file_name(value: str) -> str:
    """``value`` if it names a plain file directly inside the bus folder."""
    if not _FILE_NAME.fullmatch(value):
        raise BusError(f"bus file name {value!r} must be a plain name such as 'verdict.json'")
    return value


def normalize_lock_path(value: object) -> str:
    """A project-relative POSIX path for ``locks.json``; refuses anything leaving the project.

    ``./src//a.py`` and ``src/x/../a.py`` both become ``src/a.py`` so that two workers
    naming one file differently still contend for the same lock.
    """
    if not isinstance(value, str) or not value.strip():
        raise BusError(f"lock path {value!r} must be a non-empty relative path")
    text = value.strip().replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        raise BusError(f"lock path {value!r} is absolute: give it relative to the project root")
    normal = posixpath.normpath(text)
    if normal in {".", ".."} or normal.startswith("../"):
        raise BusError(f"lock path {value!r} leaves the project root")
    return normal


def payload_problems(message_type: str, payload: Mapping[str, Any]) -> list[str]:
    """What is missing or mistyped in ``payload`` for a known type (empty when fine)."""
    fields = MESSAGE_TYPES.get(message_type)
    if fields is None:
        return []
    problems = []
    for name, kinds in fields.items():
        if name not in payload:
            problems.append(f"{name} is missing")
            continue
        value = payload[name]
        # bool is an int to Python but not a percentage or an id to anyone reading JSON.
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = ("null" if k is type(None) else _JSON_NAMES[k] for k in kinds)
            wanted = " or ".join(dict.fromkeys(names))
            problems.append(f"{name} should be {wanted}, got {value!r}")
    return problems


_JSON_NAMES: Mapping[type, str] = {
    str: "a string",
    int: "a number",
    float: "a number",
    list: "a list",
}


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in a directed graph as ``[a, b, ..., a]``, or None; deterministic order."""
    done: set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        path: list[str] = []
        on_path: dict[str, int] = {}
        # Iterative depth-first search: each frame is a node and its remaining successors.
        stack: list[tuple[str, list[str]]] = [(start, sorted(edges.get(start, ())))]
        path.append(start)
        on_path[start] = 0
        while stack:
            node, successors = stack[-1]
            if not successors:
                stack.pop()
                path.pop()
                del on_path[node]
                done.add(node)
                continue
            nxt = successors.pop(0)
            if nxt in on_path:
                return [*path[on_path[nxt] :], nxt]
            if nxt in done:
                continue
            on_path[nxt] = len(path)
            path.append(nxt)
            stack.append((nxt, sorted(edges.get(nxt, ()))))
    return None


def as_percent(value: object) -> int | float | None:
    """A percentage from a number or numeric text (``"40"`` -> 40), or None when neither.

    Whole numbers come back as ``int`` so that files and messages show ``40``, not ``40.0``.
    """
    number: float
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() else number


def parse_time(value: object) -> datetime | None:
    """An aware datetime from a bus timestamp, or None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None
