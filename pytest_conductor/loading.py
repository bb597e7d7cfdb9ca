"""Build the run's ConductorState: find the track, read the plan and check its criteria."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_conductor.acceptance import Criterion, CriterionError, parse_criteria
from pytest_conductor.plan import Plan, PlanError, PlanProblem, load_plan
from pytest_conductor.settings import Settings

__all__ = ["TrackError", "check_criteria", "find_track", "node_resources", "node_weights"]


class TrackError(Exception):
    """The track cannot be found; the message lists the tracks that exist."""


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
    plan: Plan, extra_kinds: Sequence[str], root: Path
) -> dict[str, list[Criterion]]:
    """Parse every node's acceptance; all problems are raised together as one PlanError."""
    criteria: dict[str, list[Criterion]] = {}
    problems: list[PlanProblem] = []
    for node in plan.nodes:
        try:
            criteria[node.id] = parse_criteria(
                list(node.acceptance), extra_kinds=extra_kinds, root=root
            )
        except CriterionError as exc:
            problems.append(PlanProblem(f"node {node.id}: acceptance: {exc}", node.line))
    if problems:
        raise PlanError(plan.path, problems)
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
