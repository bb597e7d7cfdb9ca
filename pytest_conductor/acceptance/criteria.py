"""Acceptance criteria of a DAG node: the model, and reading it from the plan.

Pure logic: nothing here knows about pytest. The plugin parses each node's ``acceptance``
at collection time (so a bad shape is a collection error, not a late surprise); checking
the criteria when the node runs is :mod:`pytest_conductor.acceptance.checks`.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_conductor.acceptance.paths import GLOB_CHARS, inside_root, lexical_escape
from pytest_conductor.plan.durations import parse_duration
from pytest_conductor.util.ids import MAX_ID_LENGTH, id_problem

__all__ = [
    "BUILTIN_KINDS",
    "PROSE",
    "Criterion",
    "CriterionError",
    "command_argv",
    "exists_paths",
    "parse_criteria",
]

BUILTIN_KINDS: tuple[str, ...] = ("run", "pytest", "exists", "contains", "event")
PROSE = "prose"

# Keys each builtin kind accepts besides its own; anything else is most likely a typo
# (``timout:``) that would otherwise be silently ignored.
_EXTRA_KEYS: dict[str, frozenset[str]] = {
    "run": frozenset({"timeout", "env"}),
    "pytest": frozenset({"timeout", "env"}),
    "exists": frozenset(),
    "contains": frozenset({"pattern"}),
    "event": frozenset({"task"}),
}

_EVENT_TYPE = re.compile(r"[A-Z_]+")
# Limits the operating system puts on a path (Linux: NAME_MAX and PATH_MAX, in bytes).
_NAME_MAX = 255
_PATH_MAX = 4096
_MAX_EVENT_TYPE = _NAME_MAX - MAX_ID_LENGTH - len("_.event")


class CriterionError(ValueError):
    """An acceptance entry of the wrong shape.

    ``index`` is the entry's position in the node's acceptance list (``None`` when the
    acceptance was a single entry), so the caller can point at it.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Criterion:
    """One acceptance entry: ``kind`` and the mapping as written (``{"text": ...}`` for prose)."""

    kind: str
    # A plain dict (not a MappingProxyType) so criteria pickle across xdist workers;
    # excluded from the hash because dicts are unhashable.
    spec: Mapping[str, object] = field(hash=False)

    def describe(self) -> str:
        """One line naming the criterion, e.g. ``run: make test``."""
        if self.kind == PROSE:
            return f"prose: '{_shorten(str(self.spec.get('text', '')))}'"
        value = self.spec.get(self.kind)
        if self.kind in ("run", "pytest"):
            shown = _shorten(_command_text(value), 100)
        elif self.kind == "exists":
            shown = ", ".join(exists_paths(value))
        elif self.kind == "contains":
            shown = f"{value} /{self.spec.get('pattern', '')}/"
        elif self.kind == "event" and "task" in self.spec:
            shown = f"{value} (task {self.spec['task']})"
        else:
            shown = _shorten(str(value), 100)
        return f"{self.kind}: {shown}"


def command_argv(value: object) -> list[str]:
    """The arguments a ``run`` or ``pytest`` value names: a shell-style string or a list."""
    if isinstance(value, str):
        return shlex.split(value)
    return [str(arg) for arg in _as_list(value)]


def exists_paths(value: object) -> list[str]:
    """The paths or globs an ``exists`` value names: one, or a list of them."""
    return [str(item) for item in _as_list(value)]


# --------------------------------------------------------------------------- parsing


def parse_criteria(
    raw: object, *, extra_kinds: Sequence[str] = (), root: Path | None = None
) -> list[Criterion]:
    """Parse a node's ``acceptance`` value into criteria; raise :class:`CriterionError`.

    ``raw`` is ``None``, a prose string, one mapping, or a list of strings and mappings.
    Kinds in ``extra_kinds`` are accepted without validating their spec (an extension
    checks them). With ``root``, paths are also resolved against it, so a symlink that
    already points outside the root is refused here rather than at run time.
    """
    if raw is None:
        return []
    if isinstance(raw, (str, Mapping)):
        return [_parse_entry(raw, extra_kinds, root, None)]
    if isinstance(raw, (list, tuple)):
        return [_parse_entry(entry, extra_kinds, root, i) for i, entry in enumerate(raw)]
    raise CriterionError(
        f"acceptance must be a string or a list of strings and mappings, not {type(raw).__name__}"
    )


def _parse_entry(
    entry: object, extra_kinds: Sequence[str], root: Path | None, index: int | None
) -> Criterion:
    try:
        if isinstance(entry, str):
            if not entry.strip():
                raise CriterionError("empty prose acceptance criterion")
            return Criterion(PROSE, {"text": entry})
        if isinstance(entry, Mapping):
            return _parse_mapping(entry, extra_kinds, root)
        raise CriterionError(
            f"acceptance entry must be a string or a mapping, not {type(entry).__name__}"
        )
    except CriterionError as exc:
        raise CriterionError(str(exc), index=index) from None


def _parse_mapping(
    entry: Mapping[object, object], extra_kinds: Sequence[str], root: Path | None
) -> Criterion:
    if not entry:
        raise CriterionError("empty acceptance mapping; " + _known_kinds_text(extra_kinds))
    spec: dict[str, object] = {}
    for key, value in entry.items():
        if not isinstance(key, str):
            raise CriterionError(f"acceptance mapping key {key!r} is not a string")
        spec[key] = dict(value) if isinstance(value, Mapping) else value
    known = set(BUILTIN_KINDS) | set(extra_kinds)
    kinds = [key for key in spec if key in known]
    if not kinds:
        unknown = ", ".join(f"'{key}'" for key in spec)
        raise CriterionError(
            f"unknown acceptance kind(s) {unknown}; {_known_kinds_text(extra_kinds)}"
        )
    if len(kinds) > 1:
        both = " and ".join(f"'{kind}'" for kind in kinds)
        raise CriterionError(f"one acceptance mapping names two kinds, {both}; split it in two")
    kind = kinds[0]
    if kind in BUILTIN_KINDS:
        _validate_builtin(kind, spec, root)
    return Criterion(kind, spec)


def _known_kinds_text(extra_kinds: Sequence[str]) -> str:
    kinds = sorted(set(BUILTIN_KINDS) | set(extra_kinds))
    return f"known kinds: {', '.join(kinds)}, (plus prose strings)"


# --------------------------------------------------------------------------- validation


def _validate_builtin(kind: str, spec: Mapping[str, object], root: Path | None) -> None:
    allowed = _EXTRA_KEYS[kind]
    stray = [key for key in spec if key != kind and key not in allowed]
    if stray:
        names = ", ".join(f"'{key}'" for key in stray)
        accepted = ", ".join(sorted(allowed)) or "none"
        raise CriterionError(
            f"{kind}: unexpected key(s) {names}; keys besides '{kind}': {accepted}"
        )
    # What the operating system will refuse later (a NUL byte in an argument, a path or an
    # environment value; text that cannot be encoded) is refused here, while the plan is
    # read, rather than as a traceback when the node runs.
    for key, item in spec.items():
        if key != "pattern":  # a regular expression may match a NUL byte
            _validate_text(kind, key, item)
    value = spec[kind]
    if kind in ("run", "pytest"):
        _validate_command(kind, value)
        if "timeout" in spec:
            _validate_timeout(kind, spec["timeout"])
        if "env" in spec:
            _validate_env(kind, spec["env"])
    elif kind == "exists":
        paths = _validate_exists_value(value)
        for path in paths:
            _validate_path(kind, path, root)
    elif kind == "contains":
        if not isinstance(value, str) or not value.strip():
            raise CriterionError("contains: needs a file path (a non-empty string)")
        _validate_path(kind, value, root)
        if "pattern" not in spec:
            raise CriterionError(f"contains: {value}: missing 'pattern' (a regular expression)")
        pattern = spec["pattern"]
        if not isinstance(pattern, str) or not pattern:
            raise CriterionError("contains: 'pattern' must be a non-empty string")
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise CriterionError(f"contains: pattern /{pattern}/ does not compile: {exc}") from None
    elif kind == "event":
        if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
            raise CriterionError(
                f"event: {value!r} is not an event type (capitals and '_', e.g. TASK_COMPLETE)"
            )
        if "task" in spec:
            task = spec["task"]
            if not isinstance(task, str) or not task.strip():
                raise CriterionError("event: 'task' must be a task id (a non-empty string)")
            problem = id_problem(task)
            if problem:
                raise CriterionError(
                    f"event: task {task[:40]!r} cannot name a bus event file ({problem})"
                )
            name = f"{value}_{task}.event"
            if len(name.encode()) > _NAME_MAX:
                raise CriterionError(
                    f"event: {value}_<task>.event is {len(name.encode())} bytes long; "
                    f"a file name holds at most {_NAME_MAX}"
                )
        elif len(value) > _MAX_EVENT_TYPE:
            # With the node's own id (up to MAX_ID_LENGTH), <TYPE>_<id>.event must still fit.
            raise CriterionError(
                f"event: the event type is {len(value)} characters long; "
                f"at most {_MAX_EVENT_TYPE} fit in a bus event file name"
            )


def _validate_command(kind: str, value: object) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise CriterionError(f"{kind}: the command is empty")
        try:
            shlex.split(value)
        except ValueError as exc:
            raise CriterionError(f"{kind}: cannot split {value!r}: {exc}") from None
        return
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(arg, str) for arg in value):
            raise CriterionError(f"{kind}: an argument list must be a non-empty list of strings")
        if kind == "run" and not value[0]:
            raise CriterionError("run: the program name is empty")
        return
    raise CriterionError(
        f"{kind}: expected a command string or a list of arguments, not {type(value).__name__}"
    )


def _validate_timeout(kind: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CriterionError(f"{kind}: timeout must be a duration like '5m' or '30s'")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise CriterionError(f"{kind}: timeout {value!r} is not a duration: {exc}") from None
    if seconds <= 0:
        raise CriterionError(f"{kind}: timeout {value!r} must be more than zero")


def _validate_env(kind: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise CriterionError(f"{kind}: env must be a mapping of NAME: value")
    for name, setting in value.items():
        if not isinstance(name, str) or not name or "=" in name:
            raise CriterionError(f"{kind}: env name {name!r} is not a variable name")
        if isinstance(setting, bool) or not isinstance(setting, (str, int, float)):
            raise CriterionError(f"{kind}: env {name} must be a string")


def _validate_exists_value(value: object) -> list[str]:
    if isinstance(value, str):
        paths = [value]
    elif isinstance(value, (list, tuple)) and value and all(isinstance(p, str) for p in value):
        paths = list(value)
    else:
        raise CriterionError("exists: expected a path or glob, or a non-empty list of them")
    if not all(path.strip() for path in paths):
        raise CriterionError("exists: a path is empty")
    return paths


def _validate_text(kind: str, key: str, value: object) -> None:
    """Every string in ``value`` (nested lists and mappings too) can reach the OS."""
    if isinstance(value, str):
        what = f"{kind}:" if key == kind else f"{kind}: {key}"
        if "\0" in value:
            raise CriterionError(f"{what} {value!r} contains a NUL byte, which no OS call accepts")
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise CriterionError(f"{what} is not valid text (a lone surrogate)") from None
    elif isinstance(value, Mapping):
        for name, item in value.items():
            _validate_text(kind, key, name)
            _validate_text(kind, key, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _validate_text(kind, key, item)


def _validate_path(kind: str, path: str, root: Path | None) -> None:
    size = len(os.fsencode(path))
    if size > _PATH_MAX:
        raise CriterionError(f"{kind}: a path is {size} bytes long; at most {_PATH_MAX} fit")
    long_part = next((p for p in path.split("/") if len(os.fsencode(p)) > _NAME_MAX), None)
    if long_part is not None:
        raise CriterionError(
            f"{kind}: {long_part[:20]}... is longer than a file name can be ({_NAME_MAX} bytes)"
        )
    problem = lexical_escape(path)
    if problem:
        raise CriterionError(f"{kind}: {problem}")
    if root is not None and not GLOB_CHARS.search(path) and not inside_root(root, path):
        raise CriterionError(f"{kind}: {path!r} resolves outside the project root")


# --------------------------------------------------------------------------- helpers


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _command_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return shlex.join(str(arg) for arg in value)
    return str(value)


def _shorten(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
