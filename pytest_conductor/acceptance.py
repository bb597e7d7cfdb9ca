"""Acceptance criteria of a DAG node: parse them from the plan, check them at run time.

Pure logic: nothing here knows about pytest. The plugin parses each node's ``acceptance``
at collection time (so a bad shape is a collection error, not a late surprise) and calls
:func:`check` for each criterion when the node runs.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pytest_conductor.durations import format_duration, parse_duration
from pytest_conductor.processes import KILL_GRACE, kill_group

__all__ = [
    "BUILTIN_KINDS",
    "NESTED_ENV",
    "PROSE",
    "CheckContext",
    "CheckResult",
    "Criterion",
    "CriterionError",
    "check",
    "format_failure",
    "parse_criteria",
]

BUILTIN_KINDS: tuple[str, ...] = ("run", "pytest", "exists", "contains", "event")
#: Set in the environment of a ``pytest`` criterion's nested run: no track runs there.
NESTED_ENV = "PYTEST_CONDUCTOR_NESTED"
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
_GLOB_CHARS = re.compile(r"[*?\[]")
_TAIL_LINES = 40
# Bytes of command output kept in memory; the tail is all a report needs.
_TAIL_BYTES = 256 * 1024
_PYTEST_EXIT_MEANING = {
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests ran",
}


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
            shown = ", ".join(_as_str_list(value))
        elif self.kind == "contains":
            shown = f"{value} /{self.spec.get('pattern', '')}/"
        elif self.kind == "event" and "task" in self.spec:
            shown = f"{value} (task {self.spec['task']})"
        else:
            shown = _shorten(str(value), 100)
        return f"{self.kind}: {shown}"


@dataclass(frozen=True)
class CheckContext:
    """What a check needs to know about the run it is part of."""

    root: Path
    task_id: str
    has_event: Callable[[str, str], bool]
    agent_ran: bool = False
    strict_prose: bool = False
    default_timeout: float = 300.0
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one criterion, worded for a failure report."""

    criterion: Criterion
    passed: bool
    expected: str
    seen: str
    output: str = ""
    note: str = ""
    duration: float = 0.0


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


def _validate_builtin(kind: str, spec: Mapping[str, object], root: Path | None) -> None:
    allowed = _EXTRA_KEYS[kind]
    stray = [key for key in spec if key != kind and key not in allowed]
    if stray:
        names = ", ".join(f"'{key}'" for key in stray)
        accepted = ", ".join(sorted(allowed)) or "none"
        raise CriterionError(
            f"{kind}: unexpected key(s) {names}; keys besides '{kind}': {accepted}"
        )
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


def _validate_path(kind: str, path: str, root: Path | None) -> None:
    problem = _lexical_escape(path)
    if problem:
        raise CriterionError(f"{kind}: {problem}")
    if root is not None and not _GLOB_CHARS.search(path) and not _inside(root, path):
        raise CriterionError(f"{kind}: {path!r} resolves outside the project root")


def _lexical_escape(path: str) -> str:
    """Why ``path`` leaves the root on its face (``""`` when it does not)."""
    if Path(path).is_absolute():
        return f"{path!r} is absolute; paths are relative to the project root"
    normal = os.path.normpath(path)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return f"{path!r} leaves the project root"
    return ""


def _inside(root: Path, path: str | Path) -> bool:
    """Whether ``root/path`` resolves (following symlinks) inside ``root``."""
    try:
        real_root = root.resolve()
        real = (real_root / path).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return False
    return real == real_root or real.is_relative_to(real_root)


# --------------------------------------------------------------------------- checking


def check(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    """Check one criterion; raise :class:`LookupError` for a kind only an extension knows."""
    checker = _CHECKERS.get(criterion.kind)
    if checker is None:
        raise LookupError(
            f"no builtin check for acceptance kind '{criterion.kind}'; an extension must answer it"
        )
    start = time.monotonic()
    result = checker(criterion, ctx)
    return dataclasses.replace(result, duration=time.monotonic() - start)


def _check_prose(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    expected = f"the worker reports task {ctx.task_id} complete (TASK_COMPLETE)"
    if ctx.agent_ran:
        done = ctx.has_event("TASK_COMPLETE", ctx.task_id)
        seen = "TASK_COMPLETE reported" if done else f"no TASK_COMPLETE for task {ctx.task_id}"
        return CheckResult(criterion, done, expected, seen)
    if ctx.strict_prose:
        return CheckResult(
            criterion,
            False,
            "a machine-checkable criterion (strict prose)",
            "prose criterion, which cannot be machine-checked in a verify-only run",
            note=(
                "write it as {run: ...}, {pytest: ...}, {exists: ...}, "
                "{contains: ..., pattern: ...} or {event: ...}"
            ),
        )
    return CheckResult(
        criterion,
        True,
        expected,
        "no agent ran (verify-only run)",
        note="prose criterion not machine-checked (verify-only run)",
    )


def _check_run(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    argv = _argv(criterion.spec["run"])
    return _check_command(criterion, ctx, argv, pytest_summary=False)


def _check_pytest(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    argv = [sys.executable, "-m", "pytest", *_argv(criterion.spec["pytest"])]
    return _check_command(criterion, ctx, argv, pytest_summary=True)


def _check_command(
    criterion: Criterion, ctx: CheckContext, argv: list[str], *, pytest_summary: bool
) -> CheckResult:
    spec = criterion.spec
    written = spec.get("timeout")
    # Validated by parse_criteria; str() only narrows the type for a hand-built Criterion.
    limit = ctx.default_timeout if written is None else parse_duration(str(written))
    expected = "exit status 0" + (" (tests pass)" if pytest_summary else "")
    env = _command_env(ctx, spec.get("env"))
    if pytest_summary:
        # The nested run is for the user's tests: even if PYTEST_ADDOPTS names a track,
        # it must not run the track again (and again, inside that run).
        env[NESTED_ENV] = "1"
    run = _run(argv, ctx.root, env, limit)
    if run.start_error:
        return CheckResult(criterion, False, expected, run.start_error)
    lines = run.output.splitlines()
    tail = "\n".join(lines[-_TAIL_LINES:])
    if run.timed_out:
        return CheckResult(
            criterion, False, expected, f"timed out after {format_duration(limit)}", tail
        )
    code = run.returncode
    if code == 0:
        return CheckResult(criterion, True, expected, "exit status 0", tail)
    if code < 0:
        seen = f"killed by signal {_signal_name(-code)}"
    elif pytest_summary and code in _PYTEST_EXIT_MEANING:
        seen = f"{_PYTEST_EXIT_MEANING[code]} (exit status {code})"
    else:
        seen = f"exit status {code}"
    if pytest_summary:
        final = _pytest_final_line(lines)
        if final:
            seen += f": {final}"
        tail = _pytest_summary(lines)
    return CheckResult(criterion, False, expected, seen, tail)


def _check_exists(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    paths = _as_str_list(criterion.spec["exists"])
    missing: list[str] = []
    outside: list[str] = []
    for path in paths:
        if _lexical_escape(path):
            outside.append(path)
        elif _GLOB_CHARS.search(path):
            found = _glob_inside(ctx.root, path)
            if found is None:
                missing.append(f"{path} (no match)")
            elif not found:
                outside.append(path)
        elif not _inside(ctx.root, path):
            outside.append(path)
        elif not (ctx.root / path).exists():
            missing.append(path)
    expected = "inside the project root: " + ", ".join(paths)
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if outside:
        problems.append("outside the project root: " + ", ".join(outside))
    if problems:
        return CheckResult(criterion, False, expected, "; ".join(problems))
    return CheckResult(criterion, True, expected, "all present")


def _glob_inside(root: Path, pattern: str) -> bool | None:
    """True if ``pattern`` matches a path inside ``root``, False if only outside, None if none."""
    matched = False
    for match in root.glob(pattern):
        if _inside(root, match):
            return True
        matched = True
    return False if matched else None


def _check_contains(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    path = str(criterion.spec["contains"])
    pattern = str(criterion.spec["pattern"])
    expected = f"{path} matches /{pattern}/"
    if _lexical_escape(path) or not _inside(ctx.root, path):
        return CheckResult(criterion, False, expected, "file outside the project root")
    target = ctx.root / path
    if not target.exists():
        return CheckResult(criterion, False, expected, "file missing")
    if not target.is_file():
        return CheckResult(criterion, False, expected, "not a file")
    try:
        text = target.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return CheckResult(criterion, False, expected, f"cannot read: {exc.strerror or exc}")
    match = re.search(pattern, text, re.MULTILINE)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        return CheckResult(criterion, True, expected, f"match at {path}:{line}")
    count = len(text.splitlines())
    return CheckResult(
        criterion, False, expected, f"no match for /{pattern}/ in {path} ({count} lines)"
    )


def _check_event(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    event_type = str(criterion.spec["event"])
    task = str(criterion.spec.get("task", ctx.task_id))
    expected = f"bus event {event_type} for task {task}"
    if ctx.has_event(event_type, task):
        return CheckResult(criterion, True, expected, f"{event_type} posted")
    return CheckResult(criterion, False, expected, f"no {event_type} event for task {task}")


_CHECKERS: dict[str, Callable[[Criterion, CheckContext], CheckResult]] = {
    PROSE: _check_prose,
    "run": _check_run,
    "pytest": _check_pytest,
    "exists": _check_exists,
    "contains": _check_contains,
    "event": _check_event,
}


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class _Run:
    returncode: int = 0
    output: str = ""
    timed_out: bool = False
    start_error: str = ""


def _argv(value: object) -> list[str]:
    if isinstance(value, str):
        return shlex.split(value)
    return [str(arg) for arg in _as_list(value)]


def _command_env(ctx: CheckContext, extra: object) -> dict[str, str]:
    # A nested pytest (or a script calling one) run from inside an xdist worker must not
    # believe it is that worker or that test.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))
    }
    if ctx.env:
        env.update(ctx.env)
    if isinstance(extra, Mapping):
        env.update({str(name): str(value) for name, value in extra.items()})
    return env


def _run(argv: list[str], root: Path, env: Mapping[str, str], timeout: float) -> _Run:
    """Run ``argv`` in its own session; kill its whole process group on timeout."""
    if not root.is_dir():
        return _Run(start_error=f"project root is not a directory: {root}")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        return _Run(start_error=f"command not found: {argv[0]}")
    except PermissionError:
        return _Run(start_error=f"command not executable: {argv[0]}")
    except OSError as exc:
        return _Run(start_error=f"cannot start {argv[0]}: {exc.strerror or exc}")
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
    return _Run(returncode=proc.returncode, output=output, timed_out=timed_out)


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


def _pytest_final_line(lines: Sequence[str]) -> str:
    """The ``N failed, M passed in 0.12s`` line of a pytest run, without its ``=`` rule."""
    for line in reversed(lines):
        match = re.fullmatch(r"=+ (.+?) =+", line.strip())
        if match:
            return match.group(1)
    return ""


def _pytest_summary(lines: Sequence[str]) -> str:
    """The ``short test summary info`` section when present, else the output tail."""
    for i in range(len(lines) - 1, -1, -1):
        if "short test summary info" in lines[i]:
            return "\n".join(lines[i:][:_TAIL_LINES])
    return "\n".join(lines[-_TAIL_LINES:])


# --------------------------------------------------------------------------- reporting


def format_failure(results: Sequence[CheckResult]) -> str:
    """A readable report of the failed criteria, ending with a count line."""
    failed = [result for result in results if not result.passed]
    parts: list[str] = []
    for result in failed:
        lines = [
            f"acceptance criterion failed: {result.criterion.describe()}",
            f"  expected: {result.expected}",
            f"  seen:     {result.seen}",
        ]
        if result.note:
            lines.append(f"  note:     {result.note}")
        if result.output.strip():
            lines.append("  output (tail):")
            lines.extend(f"    {line}" for line in result.output.splitlines())
        parts.append("\n".join(lines))
    parts.append(f"{len(failed)} of {len(results)} acceptance criteria failed")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- helpers


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _as_str_list(value: object) -> list[str]:
    return [str(item) for item in _as_list(value)]


def _command_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return shlex.join(str(arg) for arg in value)
    return str(value)


def _shorten(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
