"""Why a node cannot run: the single rule shared by in-process runs and the xdist scheduler.

Pure: no pytest import.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Blocked", "NodeOutcome", "blocked_by"]

PASSED = "passed"
FAILED = "failed"
BLOCKED = "blocked"


@dataclass(frozen=True)
class NodeOutcome:
    """Outcome of one node in this run. ``root`` names the failed ancestor of a blocked node."""

    status: str  # passed | failed | blocked | skipped
    root: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Blocked:
    dependency: str  # the direct dependency that is not satisfied
    root: str  # the failed (or deselected) node at the origin of the chain
    reason: str  # "blocked: dependency 1.2 failed"


def blocked_by(
    deps: Sequence[str],
    outcomes: Mapping[str, NodeOutcome],
    selected: Container[str],
    last_outcomes: Mapping[str, str],
) -> Blocked | None:
    """The first unsatisfied dependency among ``deps`` (in plan order), or None when all passed.

    A deselected dependency (``-k``, node ids, ``--lf``) counts as satisfied only if its last
    recorded outcome passed; otherwise nothing in this run can make it pass, so block now.
    A selected dependency with no outcome yet is not a block: the caller must wait for it.
    """
    for dep in deps:
        if dep not in selected:
            last = last_outcomes.get(dep)
            if last == PASSED:
                continue
            seen = f"last recorded outcome {last}" if last else "no recorded outcome"
            return Blocked(dep, dep, f"blocked: dependency {dep} not selected ({seen})")
        outcome = outcomes.get(dep)
        if outcome is None or outcome.status == PASSED:
            continue
        if outcome.status == FAILED:
            return Blocked(dep, dep, f"blocked: dependency {dep} failed")
        root = outcome.root or dep
        via = f" (via {dep})" if root != dep else ""
        return Blocked(dep, root, f"blocked: dependency {root} {_verb(outcomes, root)}{via}")
    return None


def _verb(outcomes: Mapping[str, NodeOutcome], root: str) -> str:
    if root not in outcomes:
        return "was not selected"
    status = outcomes[root].status
    return "failed" if status == FAILED else f"was {status}"
