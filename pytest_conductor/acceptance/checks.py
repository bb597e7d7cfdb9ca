"""Checking acceptance criteria when a node runs, and the report of those that failed.

Pure logic: nothing here knows about pytest. The plugin calls :func:`check` for each
criterion of a node (parsed by :mod:`pytest_conductor.acceptance.criteria`) when the node runs.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_conductor.acceptance.commands import command_env, run_command
from pytest_conductor.acceptance.criteria import PROSE, Criterion, command_argv, exists_paths
from pytest_conductor.acceptance.paths import (
    GLOB_CHARS,
    exists_inside,
    glob_inside,
    inside_root,
    lexical_escape,
)
from pytest_conductor.acceptance.search import search_file
from pytest_conductor.plan.durations import format_duration, parse_duration
from pytest_conductor.util.nested import NESTED_ENV
from pytest_conductor.util.processes import GroupRegistry
from pytest_conductor.util.signals import signal_name

__all__ = [
    "NESTED_ENV",
    "CheckContext",
    "CheckResult",
    "NodeFailure",
    "check",
    "failure_headline",
    "format_failure",
]


_TAIL_LINES = 40
_PYTEST_EXIT_MEANING = {
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests ran",
}


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
    #: Where running commands are recorded, so another process can kill them (optional).
    registry: GroupRegistry | None = None
    #: ``time.monotonic()`` by which the whole node must be done (its timeout), if any.
    deadline: float | None = None


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


# --------------------------------------------------------------------------- checking


def check(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    """Check one criterion; raise :class:`LookupError` for a kind only an extension knows."""
    checker = _CHECKERS.get(criterion.kind)
    if checker is None:
        raise LookupError(
            f"no builtin check for acceptance kind '{criterion.kind}'; an extension must answer it"
        )
    start = time.monotonic()
    try:
        result = checker(criterion, ctx)
    except (OSError, ValueError) as exc:
        # What plan reading could not foresee (the tree changed, an OS limit) fails this
        # criterion with one line instead of a traceback in the node's report.
        result = CheckResult(criterion, False, "a criterion that can be checked", _oneline(exc))
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
    argv = command_argv(criterion.spec["run"])
    return _check_command(criterion, ctx, argv, pytest_summary=False)


def _check_pytest(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    argv = [sys.executable, "-m", "pytest", *command_argv(criterion.spec["pytest"])]
    return _check_command(criterion, ctx, argv, pytest_summary=True)


def _check_command(
    criterion: Criterion, ctx: CheckContext, argv: list[str], *, pytest_summary: bool
) -> CheckResult:
    spec = criterion.spec
    written = spec.get("timeout")
    # Validated by parse_criteria; str() only narrows the type for a hand-built Criterion.
    limit = ctx.default_timeout if written is None else parse_duration(str(written))
    expected = "exit status 0" + (" (tests pass)" if pytest_summary else "")
    env = command_env(ctx.env, spec.get("env"))
    if pytest_summary:
        # The nested run is for the user's tests: even if PYTEST_ADDOPTS names a track,
        # it must not run the track again (and again, inside that run).
        env[NESTED_ENV] = "1"
    node_left = _time_left(ctx)
    if node_left is not None and node_left <= limit:
        if node_left <= 0:
            return CheckResult(criterion, False, expected, "not run: the node's time was up")
        limit, why = node_left, " (the node's time limit)"
    else:
        why = ""
    run = run_command(
        argv, ctx.root, env, limit, registry=ctx.registry, label=f"criterion-{ctx.task_id}"
    )
    if run.start_error:
        return CheckResult(criterion, False, expected, run.start_error)
    lines = run.output.splitlines()
    tail = "\n".join(lines[-_TAIL_LINES:])
    if run.timed_out:
        return CheckResult(
            criterion, False, expected, f"timed out after {format_duration(limit)}{why}", tail
        )
    code = run.returncode
    if code == 0:
        return CheckResult(criterion, True, expected, "exit status 0", tail)
    if code < 0:
        seen = f"killed by signal {signal_name(-code)}"
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
    paths = exists_paths(criterion.spec["exists"])
    missing: list[str] = []
    outside: list[str] = []
    for path in paths:
        if lexical_escape(path):
            outside.append(path)
        elif GLOB_CHARS.search(path):
            found = glob_inside(ctx.root, path)
            if found is None:
                missing.append(f"{path} (no match)")
            elif not found:
                outside.append(path)
        else:
            found = exists_inside(ctx.root, path)
            if found is None:
                outside.append(path)
            elif not found:
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


def _check_contains(criterion: Criterion, ctx: CheckContext) -> CheckResult:
    path = str(criterion.spec["contains"])
    pattern = str(criterion.spec["pattern"])
    expected = f"{path} matches /{pattern}/"
    if lexical_escape(path) or not inside_root(ctx.root, path):
        return CheckResult(criterion, False, expected, "file outside the project root")
    target = ctx.root / path
    if not target.exists():
        return CheckResult(criterion, False, expected, "file missing")
    if not target.is_file():
        return CheckResult(criterion, False, expected, "not a file")
    limit = _time_left(ctx)
    limit = ctx.default_timeout if limit is None else min(limit, ctx.default_timeout)
    if limit <= 0:
        return CheckResult(criterion, False, expected, "not run: the node's time was up")
    # In a child process: a pathological pattern must not hang the run (see search.py).
    found = search_file(
        target, pattern, limit, registry=ctx.registry, label=f"search-{ctx.task_id}"
    )
    if found.problem:
        return CheckResult(criterion, False, expected, found.problem)
    if found.line:
        return CheckResult(criterion, True, expected, f"match at {path}:{found.line}")
    return CheckResult(
        criterion, False, expected, f"no match for /{pattern}/ in {path} ({found.lines} lines)"
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


# --------------------------------------------------------------------------- pytest output


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


def failure_headline(results: Sequence[CheckResult]) -> str:
    """Why, in one line: the first failed criterion and what was seen, e.g.
    ``run: pytest tests/test_store.py: tests failed (exit status 1): 1 failed in 0.12s``."""
    failed = [result for result in results if not result.passed]
    if not failed:
        return "no acceptance criterion failed"
    first = failed[0]
    seen = first.seen.splitlines()[0] if first.seen.strip() else "failed"
    more = len(failed) - 1
    return f"{first.criterion.describe()}: {seen}" + (f" (and {more} more)" if more else "")


class NodeFailure(Exception):
    """A node that did not pass. ``headline`` says why in one line (the first line of the
    report, the short summary, JUnit's ``message``); ``kind`` names what failed (a
    criterion kind, or ``agent``: JUnit's ``type``); ``str()`` is the whole report."""

    def __init__(self, headline: str, kind: str, text: str) -> None:
        super().__init__(text)
        self.headline = headline
        self.kind = kind


# --------------------------------------------------------------------------- helpers


def _time_left(ctx: CheckContext) -> float | None:
    return None if ctx.deadline is None else ctx.deadline - time.monotonic()


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot check it: {text[:200]}"
