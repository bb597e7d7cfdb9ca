"""The run's state: one object per pytest config, kept in ``config.stash``.

Module-level state would leak between runs in one process (pytester), so everything a run
knows lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from pytest_conductor.graph.blocking import NodeOutcome

if TYPE_CHECKING:  # kept out of the import path of a run without --conductor-track
    from pytest_conductor.acceptance.criteria import Criterion
    from pytest_conductor.plan.reader import Plan
    from pytest_conductor.settings import Settings

__all__ = ["STATE_KEY", "ConductorState", "get_state"]


@dataclass
class ConductorState:
    settings: Settings
    plan: Plan
    criteria: dict[str, list[Criterion]]
    # Path weight per node: estimated_duration, else last measured duration, else 1.
    weights: dict[str, float]
    # Per node: its files plus the shared_resources of its non-conflict-free groups.
    resources: dict[str, tuple[str, ...]]
    # Last recorded outcome per node from earlier runs (pytest cache): "passed" | "failed" | ...
    last_outcomes: dict[str, str]
    # This run's outcomes, filled on the controller from test reports as they arrive.
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    # Task ids of the nodes selected for this run (after -k/--lf/node ids); set after collection.
    selected: tuple[str, ...] = ()
    # Measured call durations of this run (seconds), saved as weights for the next run.
    durations: dict[str, float] = field(default_factory=dict)
    # Notes of criteria that passed without a machine check (prose in a verify-only run).
    notes: dict[str, list[str]] = field(default_factory=dict)
    # Why the commits plan.md names cannot be checked (no git, no repository), or None.
    git_problem: str | None = None
    # task_id_of's answers: every hook of every report asks it again for the same item.
    _task_ids: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def dispatches(self, task_id: str) -> bool:
        """Whether an agent runs for the node in this run (it has a command template and
        is not a done task resumed, nor a skipped one)."""
        from pytest_conductor.acceptance.status import DISPATCH, decide

        node = self.plan.node(task_id)
        template = node.worker or self.settings.worker
        if template is None:
            return False
        redo = self.settings.redoes(task_id)
        return decide(node.mark, self.plan.form, dispatching=True, redo=redo).action == DISPATCH

    def unchecked(self, task_id: str) -> bool:
        """Whether nothing checks the node: no agent runs for it and none of its criteria
        is machine-checkable (no criteria, or prose only)."""
        from pytest_conductor.acceptance.status import machine_checkable

        return not self.dispatches(task_id) and not machine_checkable(self.criteria[task_id])

    def record(self, task_id: str, when: str, status: str, duration: float) -> None:
        """Fold one test report into the node's outcome (controller side)."""
        current = self.outcomes.get(task_id)
        if current is not None and (current.status in ("blocked", "failed") or current.reason):
            return  # decided by the runner (blocked, not run) or final (failed)
        if when == "call":
            self.durations[task_id] = duration
            self.outcomes[task_id] = NodeOutcome(status)
        elif status != "passed":  # setup/teardown only speak when something went wrong
            self.outcomes[task_id] = NodeOutcome(status)

    def task_id_of(self, nodeid: str) -> str | None:
        """The plan node an item id stands for, or None for the user's own tests."""
        try:
            return self._task_ids[nodeid]
        except KeyError:
            pass
        path, sep, name = nodeid.rpartition("::")
        task = name if sep and path.endswith("plan.md") and name in self.criteria else None
        self._task_ids[nodeid] = task
        return task


STATE_KEY = pytest.StashKey[ConductorState]()


def get_state(config: pytest.Config) -> ConductorState | None:
    return config.stash.get(STATE_KEY, None)
