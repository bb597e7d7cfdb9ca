"""The run's record for metadata.json, from the nodes' final statuses. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_conductor.graph.algorithms import levels
from pytest_conductor.plan.reader import Plan
from pytest_conductor.report.events import first_reason
from pytest_conductor.report.metadata import ExecutionRecord, completed_groups
from pytest_conductor.util.timestamps import utc_now_iso

__all__ = ["execution_record", "plan_groups"]


def plan_groups(plan: Plan) -> dict[str, tuple[str, ...]]:
    """The plan's parallel groups; without any, the levels of the DAG (``level-1``, …)."""
    if plan.groups:
        return {g.id: g.tasks for g in plan.groups}
    return {f"level-{i}": tuple(lv) for i, lv in enumerate(levels(plan.deps), 1)}


def execution_record(
    plan: Plan,
    selected: Sequence[str],
    statuses: Mapping[str, str],
    last_outcomes: Mapping[str, str],
    errors: Mapping[str, str],
    *,
    passed: bool,
    interrupted: bool,
    started_at: str,
) -> ExecutionRecord:
    """What this run did, for :func:`~pytest_conductor.report.metadata.update_metadata`."""
    ran = [t for t in selected if statuses.get(t) in ("passed", "failed")]
    failed = [t for t in ran if statuses[t] == "failed"]
    chosen = set(selected)  # membership only
    # A node left out of this run counts as done if it passed last time (as for blocking).
    effective = {t: last_outcomes.get(t, "") for t in plan.ids if t not in chosen}
    effective.update(statuses)
    status = "INTERRUPTED" if interrupted else ("PASSED" if passed else "FAILED")
    return ExecutionRecord(
        status=status,
        started_at=started_at,
        completed_at=utc_now_iso(),
        total_workers_spawned=len(ran),
        completed_workers=len(ran) - len(failed),
        failed_workers=len(failed),
        blocked_tasks=[t for t in selected if statuses.get(t) == "blocked"],
        parallel_groups_completed=completed_groups(plan_groups(plan), effective),
        failed_tasks={t: first_reason(errors.get(t, "failed"), t) for t in failed},
    )
