"""The run's record for metadata.json, from the nodes' statuses so far. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_conductor.plan.reader import Plan
from pytest_conductor.report.events import first_reason
from pytest_conductor.report.metadata import ExecutionRecord, completed_groups
from pytest_conductor.util.timestamps import utc_now_iso

__all__ = ["done_tasks", "execution_record", "plan_groups"]


def plan_groups(plan: Plan) -> dict[str, tuple[str, ...]]:
    """The plan's parallel groups; without any, the levels of the DAG (``level-1``, …)."""
    if plan.groups:
        return {g.id: g.tasks for g in plan.groups}
    return {f"level-{i}": level for i, level in enumerate(plan.levels, 1)}


def done_tasks(
    plan: Plan,
    selected: Sequence[str],
    statuses: Mapping[str, str],
    last_outcomes: Mapping[str, str],
) -> list[str]:
    """The nodes known to be done, plan order: passed in this run, or not run in it
    while plan.md marks it done ``[x]``, or left out of it (``-k``, ``--lf``) with a
    last recorded outcome that passed (the rule that lets their dependents run)."""
    chosen = set(selected)  # membership only
    done = []
    for node in plan.nodes:
        status = statuses.get(node.id)
        if status is None:
            marked = node.mark is not None and node.mark.state == "x"
            passed_before = node.id not in chosen and last_outcomes.get(node.id) == "passed"
            if marked or passed_before:
                done.append(node.id)
        elif status == "passed":
            done.append(node.id)
    return done


def execution_record(
    plan: Plan,
    selected: Sequence[str],
    statuses: Mapping[str, str],
    last_outcomes: Mapping[str, str],
    errors: Mapping[str, str],
    *,
    status: str,
    started_at: str,
    spawned: int,
) -> ExecutionRecord:
    """What this run did so far, for :func:`~pytest_conductor.report.metadata.update_metadata`.

    ``status`` is RUNNING while the run goes on, then PASSED, FAILED or INTERRUPTED.
    ``spawned`` counts agent processes started, retries included (in verify-only runs,
    which start none, the nodes that ran).
    """
    ran = [t for t in selected if statuses.get(t) in ("passed", "failed")]
    failed = [t for t in ran if statuses[t] == "failed"]
    blocked = [t for t in selected if statuses.get(t) == "blocked"]
    chosen = set(selected)  # membership only
    # A node left out of this run counts as done if it passed last time (as for blocking).
    effective = {t: last_outcomes.get(t, "") for t in plan.ids if t not in chosen}
    effective.update(statuses)
    now = utc_now_iso()
    finished = status in ("PASSED", "FAILED")
    return ExecutionRecord(
        status=status,
        started_at=started_at,
        completed_at=now if finished else "",
        updated_at=now,
        total_workers_spawned=spawned,
        completed_workers=len(ran) - len(failed),
        failed_workers=len(failed),
        blocked_tasks=blocked,
        parallel_groups_completed=completed_groups(plan_groups(plan), effective),
        failed_tasks={t: first_reason(errors.get(t, "failed"), t) for t in failed},
        done_tasks=done_tasks(plan, selected, statuses, last_outcomes),
        undone_tasks=failed + blocked,
        plan_ids=plan.ids,
    )
