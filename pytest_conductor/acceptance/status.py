"""What a task's status mark means for a run: verify it, dispatch it, resume it, fail or
skip it; and the commit checks of its ``[x] <sha>`` and its phase's checkpoint.

Pure Python: no pytest import. The rules (docs/plan-format.md, "Status marks"):

- a checklist plan's mark is the only status there is: in a verify-only run ``[ ]`` and
  ``[~]`` fail as not done, ``[!]`` as marked blocked, ``[-]`` is skipped, ``[x]`` is
  verified by its criteria and its commit;
- a DAG plan's criteria decide; its marks other than ``[x]`` are shown as notes (an
  ``[x]`` commit is still checked);
- a dispatch run resumes: ``[x]`` tasks are re-checked, not dispatched again, unless
  redone (``--conductor-redo``); in either form ``[-]`` is skipped in a checklist plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_conductor.acceptance.checks import CheckResult
from pytest_conductor.acceptance.commits import CommitCheck, check_commit
from pytest_conductor.acceptance.criteria import PROSE, Criterion
from pytest_conductor.acceptance.paths import lexical_escape
from pytest_conductor.plan.marks import BLOCKED, DONE, SKIPPED, Checkpoint, Mark

__all__ = [
    "DISPATCH",
    "FAIL",
    "RESUME",
    "SKIP",
    "VERIFY",
    "Decision",
    "commit_results",
    "decide",
    "implicit_criteria",
    "machine_checkable",
]

VERIFY, DISPATCH, RESUME, FAIL, SKIP = "verify", "dispatch", "resume", "fail", "skip"


@dataclass(frozen=True)
class Decision:
    """What to do with a node; ``reason`` for FAIL and SKIP, ``note`` for a report."""

    action: str
    reason: str = ""
    note: str = ""


def _where(mark: Mark) -> str:
    return f"plan.md line {mark.line}"


def decide(mark: Mark | None, form: str, *, dispatching: bool, redo: bool) -> Decision:
    """The action for a node marked ``mark`` in a plan of ``form`` ("dag" or "checklist")."""
    if mark is None:
        return Decision(DISPATCH if dispatching else VERIFY)
    shown = mark.shown()
    if form == "checklist" and mark.state == SKIPPED:
        return Decision(SKIP, f"marked skipped {shown} ({_where(mark)})")
    if dispatching:
        if mark.state == DONE and not redo:
            return Decision(RESUME, note=f"done earlier ({mark.sha or 'no commit named'})")
        return Decision(DISPATCH)
    if form != "checklist":
        # A done mark on a node its criteria pass says nothing new: note the others.
        if mark.state == DONE:
            return Decision(VERIFY)
        return Decision(VERIFY, note=f"plan.md marks it {shown} ({mark.name}, line {mark.line})")
    if mark.state == DONE:
        return Decision(VERIFY)
    if mark.state == BLOCKED:
        return Decision(FAIL, f"marked blocked {shown} ({_where(mark)})")
    return Decision(FAIL, f"not done: marked {shown}, {mark.name} ({_where(mark)})")


def commit_results(
    mark: Mark | None,
    checkpoint: Checkpoint | None,
    root: Path,
    check: Callable[[Path, str], CommitCheck] = check_commit,
) -> list[CheckResult]:
    """A result per commit the node's plan lines name: its ``[x]`` SHA, its checkpoint."""
    named: list[tuple[str, str]] = []
    if mark is not None and mark.state == DONE and mark.sha:
        named.append((mark.sha, f"the commit of done task (plan.md line {mark.line})"))
    if checkpoint is not None:
        named.append(
            (
                checkpoint.sha,
                f"phase {checkpoint.phase} checkpoint (plan.md line {checkpoint.line})",
            )
        )
    results = []
    for sha, what in named:
        found = check(root, sha)
        results.append(
            CheckResult(
                Criterion("commit", {"commit": sha}),
                found.ok,
                f"{what}: commit {sha} exists and is an ancestor of HEAD",
                found.seen,
            )
        )
    return results


#: Marks the ``exists`` criterion a node without criteria gets from its files.
IMPLICIT = "implicit"


def implicit_criteria(files: tuple[str, ...]) -> list[Criterion]:
    """The check a node without criteria gets from its plan: its files exist (paths that
    leave the project root are left out)."""
    paths = [path for path in files if path.strip() and not lexical_escape(path)]
    if not paths:
        return []
    return [Criterion("exists", {"exists": paths if len(paths) > 1 else paths[0], IMPLICIT: True})]


def machine_checkable(criteria: list[Criterion]) -> bool:
    """Whether any criterion is checked by a machine (not prose); False for none at all."""
    return any(criterion.kind != PROSE for criterion in criteria)
