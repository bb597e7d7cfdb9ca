"""The prompt file an agent worker gets: its task, how it is judged, how to report.

Pure Python: no pytest import. The text is Markdown for a language-model agent, and also
what a person reads when an agent went wrong, so it says everything once and plainly:
the task, its acceptance criteria, what the dependencies produced, the previous failure
(on a retry), and the exact ``conductor-bus`` commands of the bus protocol.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_conductor.acceptance import PROSE, Criterion
from pytest_conductor.plan.durations import format_duration
from pytest_conductor.plan.reader import Node, Plan

__all__ = [
    "DependencyResult",
    "PreviousFailure",
    "PromptInput",
    "dependency_results",
    "describe_criterion",
    "render_prompt",
]


@dataclass(frozen=True)
class DependencyResult:
    """What one dependency of the node produced, in one line."""

    task_id: str
    name: str
    result: str


@dataclass(frozen=True)
class PreviousFailure:
    """Why the previous attempt failed; shown in the next attempt's prompt."""

    attempt: int
    reason: str
    failed_criteria: tuple[str, ...] = ()
    output_tail: str = ""


@dataclass(frozen=True)
class PromptInput:
    track: str
    node: Node
    worker_id: str
    root: Path
    bus_dir: Path
    plan_path: Path
    criteria: Sequence[Criterion]
    dependencies: Sequence[DependencyResult] = ()
    parallel_group: str | None = None
    attempt: int = 1
    attempts: int = 1
    previous: PreviousFailure | None = None
    heartbeat: float = 300.0
    timeout: float = 1800.0
    # How the agent runs the bus tool: "conductor-bus", or "<python> -m pytest_conductor.cli.main"
    # when the console script is not on the agent's PATH.
    bus_command: str = "conductor-bus"
    # With worktree isolation: where the agent works and what becomes of its branch.
    workspace: str | None = None


def describe_criterion(criterion: Criterion) -> str:
    """One criterion as an instruction: what must be true when the agent is done."""
    spec = criterion.spec
    value = spec.get(criterion.kind)
    if criterion.kind == PROSE:
        return (
            f"{spec.get('text', '')!s} (no machine checks this one: report the task complete "
            "only when it holds)"
        )
    if criterion.kind == "run":
        return f"the command `{_command(value)}` exits with status 0 (run from the project root)"
    if criterion.kind == "pytest":
        return f"`pytest {_command(value)}` passes (run from the project root)"
    if criterion.kind == "exists":
        paths = value if isinstance(value, (list, tuple)) else [value]
        return "these paths exist: " + ", ".join(f"`{p}`" for p in paths)
    if criterion.kind == "contains":
        return f"the file `{value}` matches the regular expression `{spec.get('pattern', '')}`"
    if criterion.kind == "event":
        return f"the bus event {value} exists for task {spec.get('task') or 'this task'}"
    return f"{criterion.describe()} (checked by an extension)"


def dependency_results(
    node: Node,
    plan: Plan,
    messages: Iterable[Mapping[str, Any]],
    selected: Container[str],
    last_outcomes: Mapping[str, str],
) -> list[DependencyResult]:
    """What each dependency of ``node`` reported on the bus in this run, in plan order."""
    last: dict[str, Mapping[str, Any]] = {}
    for message in messages:
        payload = message.get("payload")
        if message.get("type") in ("TASK_COMPLETE", "TASK_FAILED") and isinstance(payload, dict):
            task = payload.get("task_id")
            if task in node.depends_on:
                last[str(task)] = message
    results = []
    for dep in node.depends_on:
        name = _name(plan, dep)
        if dep not in selected:
            outcome = last_outcomes.get(dep, "unknown")
            results.append(
                DependencyResult(dep, name, f"not run now; last recorded outcome: {outcome}")
            )
            continue
        found = last.get(dep)
        if found is None:
            results.append(DependencyResult(dep, name, "passed (nothing reported on the bus)"))
            continue
        payload = found["payload"]
        if found["type"] == "TASK_FAILED":
            results.append(DependencyResult(dep, name, f"failed: {payload.get('error', '')}"))
            continue
        parts = ["passed"]
        if payload.get("commit_sha"):
            parts.append(f"commit {payload['commit_sha']}")
        files = payload.get("files_modified") or []
        if files:
            parts.append("files: " + ", ".join(str(f) for f in files))
        results.append(DependencyResult(dep, name, "; ".join(parts)))
    return results


def render_prompt(p: PromptInput) -> str:
    """The whole prompt file."""
    node = p.node
    out = [f"# Task {node.id}: {node.name}", ""]
    out.append(
        f"You are agent worker `{p.worker_id}` of Conductor track `{p.track}`, started by "
        "pytest-conductor to do this one task of the plan. Work in the project root; "
        "paths below are relative to it."
    )
    if p.attempts > 1:
        out += ["", f"This is attempt {p.attempt} of {p.attempts}."]
    out += ["", "## Task", ""]
    out.append(f"- id: {node.id}")
    out.append(f"- name: {node.name}")
    out.append(f"- type: {node.type}")
    if node.phase:
        out.append(f"- phase: {node.phase}")
    files = ", ".join(f"`{f}`" for f in node.files) or "(none named)"
    out.append(f"- files: {files}")
    if p.parallel_group:
        out.append(f"- parallel group: {p.parallel_group}")
    out.append(f"- project root: `{p.root}`")
    out.append(f"- plan: `{_relative(p.plan_path, p.root)}`")
    if p.workspace:
        out += ["", "## Your git worktree", "", p.workspace]
    out += ["", "## Acceptance criteria", ""]
    if p.criteria:
        out.append("When you exit, the dispatcher checks that:")
        out.append("")
        out += [f"{i}. {describe_criterion(c)}" for i, c in enumerate(p.criteria, 1)]
    else:
        out.append("None are written: the task passes when you exit 0 without reporting failure.")
    out += ["", "## Dependencies", ""]
    if p.dependencies:
        out += [f"- {d.task_id} {d.name}: {d.result}" for d in p.dependencies]
    else:
        out.append("None: this task starts from the project as it is.")
    if p.previous is not None:
        out += _previous(p.previous)
    out += _protocol(p)
    return "\n".join(out) + "\n"


def _previous(previous: PreviousFailure) -> list[str]:
    out = ["", f"## Attempt {previous.attempt} failed", ""]
    out.append(f"Reason: {previous.reason}")
    if previous.failed_criteria:
        out += ["", "Failed acceptance criteria:", ""]
        out += [f"- {line}" for line in previous.failed_criteria]
    if previous.output_tail.strip():
        out += ["", "Its output ended with:", "", "```text", previous.output_tail.rstrip(), "```"]
    out += ["", "Fix what made it fail; do not start over if the work is mostly there."]
    return out


def _protocol(p: PromptInput) -> list[str]:
    cli = p.bus_command
    beat, stale = format_duration(p.heartbeat), format_duration(2 * p.heartbeat)
    example = p.node.files[0] if p.node.files else "src/example.py"
    files = " ".join(p.node.files) or "PATH ..."
    return [
        "",
        "## Reporting through the message bus",
        "",
        f"Message bus: `{p.bus_dir}`. Your environment already holds `CONDUCTOR_BUS`,",
        "`CONDUCTOR_TASK_ID`, `CONDUCTOR_WORKER_ID`, `CONDUCTOR_TRACK`, `CONDUCTOR_ROOT` and",
        "`CONDUCTOR_PROMPT_FILE`, so these commands need no flags. Run them in a shell:",
        "",
        f"- Heartbeat, at least every {beat}: `{cli} heartbeat --progress 40`.",
        f"  Silent for {stale} (counted from your start), you are stopped and the task fails.",
        f'- Progress: `{cli} progress 60 --note "writing the tests"` (also a heartbeat).',
        f"- Before editing a file, lock it: `{cli} lock {example}`. Exit status 3 means",
        "  another worker holds it: wait a little, heartbeat, and try again.",
        f"- After editing it, unlock it: `{cli} unlock {example}`.",
        f"- When the task is done: `{cli} complete --files {files}`",
        "  (add `--commit SHA` if you committed).",
        f'- If you cannot do it: `{cli} fail --error "what went wrong"`, then exit.',
        "",
        "Then exit with status 0. A non-zero exit status, a reported failure, a missing",
        f"heartbeat or running longer than {format_duration(p.timeout)} fails the task; "
        "otherwise the",
        "acceptance criteria above decide. Locks you still hold when you exit are released.",
        "",
        "Without the environment variables, add these flags to every command:",
        f"`--bus {p.bus_dir} --task {p.node.id} --worker {p.worker_id}`.",
    ]


def _command(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _name(plan: Plan, task_id: str) -> str:
    try:
        return plan.node(task_id).name
    except KeyError:
        return ""


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
