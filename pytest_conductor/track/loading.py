"""Build the run's ConductorState: find the track, read the plan and check its criteria."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pytest_conductor.acceptance import (
    BUILTIN_KINDS,
    PROSE,
    Criterion,
    CriterionError,
    parse_criteria,
)
from pytest_conductor.plan.reader import Plan, PlanError, PlanProblem, load_plan
from pytest_conductor.settings import Settings
from pytest_conductor.state import ConductorState

__all__ = [
    "CACHE_DURATIONS",
    "CACHE_OUTCOMES",
    "TrackError",
    "check_criteria",
    "find_track",
    "load_history",
    "load_state",
    "node_resources",
    "node_weights",
]

# Keys in the pytest cache: last outcomes (--lf, deselected deps) and measured durations.
CACHE_OUTCOMES = "conductor/{track}/outcomes"
CACHE_DURATIONS = "conductor/{track}/durations"


class TrackError(Exception):
    """The track cannot be run as asked: not found (the message lists those that exist),
    or its acceptance kinds clash with plugins."""


def find_track(settings: Settings) -> Plan:
    tracks_dir = settings.root / "conductor" / "tracks"
    if not settings.track_dir.is_dir():
        existing = (
            sorted(p.name for p in tracks_dir.iterdir() if p.is_dir())
            if tracks_dir.is_dir()
            else []
        )
        where = f"no track {settings.track!r} in {tracks_dir}"
        if existing:
            raise TrackError(f"{where}; tracks that exist: {', '.join(existing)}")
        raise TrackError(f"{where}; no tracks exist there (is --conductor-root right?)")
    if not settings.plan_path.is_file():
        raise TrackError(f"track {settings.track!r} has no plan.md: {settings.plan_path}")
    return load_plan(settings.plan_path)


def check_criteria(
    plan: Plan, extra_kinds: Sequence[str], root: Path, earlier: Sequence[PlanProblem] = ()
) -> dict[str, list[Criterion]]:
    """Parse every node's acceptance; all problems, with the ``earlier`` ones of the plan
    itself (a cycle, an unknown id), are raised together as one PlanError."""
    criteria: dict[str, list[Criterion]] = {}
    problems: list[PlanProblem] = list(earlier)
    for node in plan.nodes:
        try:
            criteria[node.id] = parse_criteria(
                list(node.acceptance), extra_kinds=extra_kinds, root=root
            )
        except CriterionError as exc:
            problems.append(PlanProblem(f"node {node.id}: acceptance: {exc}", node.line))
    if problems:
        raise PlanError(plan.path, problems, plan)
    return criteria


def node_weights(plan: Plan, measured: Mapping[str, float]) -> dict[str, float]:
    """Path weight: estimated_duration when given, else the last measured duration, else 1."""
    weights: dict[str, float] = {}
    for node in plan.nodes:
        if node.estimated_duration is not None:
            weights[node.id] = node.estimated_duration
        else:
            last = measured.get(node.id)
            weights[node.id] = float(last) if isinstance(last, (int, float)) and last > 0 else 1.0
    return weights


def node_resources(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Paths each node holds while it runs: its files plus its groups' shared_resources."""
    resources: dict[str, list[str]] = {n.id: list(n.files) for n in plan.nodes}
    for group in plan.groups:
        for task in group.tasks:
            if task in resources:
                resources[task].extend(
                    r for r in group.shared_resources if r not in resources[task]
                )
    return {k: tuple(v) for k, v in resources.items()}


def load_state(settings: Settings, extra_kinds: Sequence[str]) -> ConductorState:
    """The run's state from its settings: the track's plan, checked criteria, resources."""
    clash = sorted(set(extra_kinds) & {*BUILTIN_KINDS, PROSE})
    if clash:
        raise TrackError(f"a plugin redefines built-in acceptance kinds: {clash}")
    try:
        plan = find_track(settings)
    except PlanError as error:
        if error.plan is None:
            raise
        # The graph's problems hide none of the acceptance problems: report all at once.
        check_criteria(error.plan, extra_kinds, settings.root, error.problems)
        raise
    return ConductorState(
        settings=settings,
        plan=plan,
        criteria=check_criteria(plan, extra_kinds, settings.root),
        weights=node_weights(plan, {}),
        resources=node_resources(plan),
        last_outcomes={},
    )


def load_history(cache: pytest.Cache | None, state: ConductorState) -> None:
    """Last outcomes and measured durations of earlier runs, from the pytest cache."""
    if cache is None:
        return
    track = str(state.settings.track)
    state.last_outcomes = dict(cache.get(CACHE_OUTCOMES.format(track=track), {}))
    measured = dict(cache.get(CACHE_DURATIONS.format(track=track), {}))
    state.weights = node_weights(state.plan, measured)
