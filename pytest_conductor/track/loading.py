"""Build the run's ConductorState: find the track, read the plan and check its criteria."""

from __future__ import annotations

import hashlib
import pickle
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
from pytest_conductor.acceptance.commits import git_available
from pytest_conductor.acceptance.paths import lexical_escape
from pytest_conductor.acceptance.status import implicit_criteria
from pytest_conductor.plan.checklist import load_track_plan
from pytest_conductor.plan.reader import Plan, PlanError, PlanProblem
from pytest_conductor.settings import Settings
from pytest_conductor.state import ConductorState

__all__ = [
    "CACHE_DURATIONS",
    "CACHE_OUTCOMES",
    "WORKER_STATE",
    "TrackError",
    "check_criteria",
    "find_track",
    "load_history",
    "load_state",
    "node_resources",
    "node_weights",
    "pack_state",
    "resource_problems",
    "unpack_state",
]

#: The ``workerinput`` key of the controller's packed plan (:func:`pack_state`).
WORKER_STATE = "conductor_state"

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
    return load_track_plan(settings.plan_path, settings.checklist_order)


def check_criteria(
    plan: Plan, extra_kinds: Sequence[str], root: Path, earlier: Sequence[PlanProblem] = ()
) -> dict[str, list[Criterion]]:
    """Parse every node's acceptance; all problems, with the ``earlier`` ones of the plan
    itself (a cycle, an unknown id), are raised together as one PlanError."""
    criteria: dict[str, list[Criterion]] = {}
    problems: list[PlanProblem] = list(earlier)
    for node in plan.nodes:
        parsed: list[Criterion] = []
        # Entry by entry, so that every bad entry of a node is reported in one round.
        for index, entry in enumerate(node.acceptance, 1):
            try:
                parsed += parse_criteria(entry, extra_kinds=extra_kinds, root=root)
            except CriterionError as exc:
                where = f"acceptance #{index}" if len(node.acceptance) > 1 else "acceptance"
                problems.append(PlanProblem(f"node {node.id}: {where}: {exc}", node.line))
        criteria[node.id] = parsed or implicit_criteria(node.files)
    problems.extend(resource_problems(plan))
    if problems:
        raise PlanError(plan.path, problems, plan)
    return criteria


def resource_problems(plan: Plan) -> list[PlanProblem]:
    """``files`` and ``shared_resources`` name paths in the project, like criterion paths:
    the run locks them and may report them, so one leaving the root is a plan problem."""
    owners: list[tuple[str, tuple[str, ...], int | None]] = [
        (f"node {n.id}: files", n.files, n.line) for n in plan.nodes
    ]
    owners += [
        (f"parallel group {g.id}: shared_resources", g.shared_resources, g.line)
        for g in plan.groups
    ]
    problems = []
    for owner, paths, line in owners:
        for path in paths:
            why = "contains a NUL byte" if "\0" in path else lexical_escape(path)
            if why:
                problems.append(PlanProblem(f"{owner}: {why}", line))
    return problems


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


def load_state(
    settings: Settings, extra_kinds: Sequence[str], plan: Plan | None = None
) -> ConductorState:
    """The run's state from its settings: the track's plan, checked criteria, resources.

    ``plan``: the track's plan when it was already read for these settings (the worker
    count is chosen from it before pytest parses the command line).
    """
    clash = sorted(set(extra_kinds) & {*BUILTIN_KINDS, PROSE})
    if clash:
        raise TrackError(f"a plugin redefines built-in acceptance kinds: {clash}")
    try:
        plan = plan if plan is not None else find_track(settings)
    except PlanError as error:
        if error.plan is None:
            raise
        # The graph's problems hide none of the acceptance problems: report all at once.
        check_criteria(error.plan, extra_kinds, settings.root, error.problems)
        raise
    unknown = [t for t in settings.redo if t != "all" and t not in plan.by_id]
    if unknown:
        raise TrackError(
            f"--conductor-redo names {', '.join(unknown)}, which is not a task of the plan "
            f"(tasks: {', '.join(plan.ids)})"
        )
    names_commits = any(
        (n.mark is not None and n.mark.sha) or n.checkpoint is not None for n in plan.nodes
    )
    return ConductorState(
        settings=settings,
        plan=plan,
        criteria=check_criteria(plan, extra_kinds, settings.root),
        weights=node_weights(plan, {}),
        resources=node_resources(plan),
        last_outcomes={},
        git_problem=git_available(settings.root) if names_commits else None,
    )


def load_history(cache: pytest.Cache | None, state: ConductorState) -> None:
    """Last outcomes and measured durations of earlier runs, from the pytest cache."""
    if cache is None:
        return
    track = str(state.settings.track)
    state.last_outcomes = dict(cache.get(CACHE_OUTCOMES.format(track=track), {}))
    measured = dict(cache.get(CACHE_DURATIONS.format(track=track), {}))
    state.weights = node_weights(state.plan, measured)


# -- the controller's parsed plan, handed to xdist workers ------------------------------


def _state_key(settings: Settings, extra_kinds: Sequence[str]) -> str | None:
    """What :func:`load_state` reads, hashed: the settings, the plugins' kinds, plan.md."""
    try:
        text = settings.plan_path.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(repr((settings, tuple(extra_kinds))).encode())
    digest.update(text)
    return digest.hexdigest()


def pack_state(state: ConductorState, extra_kinds: Sequence[str]) -> bytes | None:
    """The parsed and checked plan of ``state``, for a worker of the same run.

    Each xdist worker would otherwise read, parse and check plan.md again before its
    first node (about 0.1 s per worker at 1,000 nodes; unpacking takes a few ms).
    """
    key = _state_key(state.settings, extra_kinds)
    if key is None:
        return None
    parts = (key, state.plan, state.criteria, state.resources, state.git_problem)
    return pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_state(
    settings: Settings, extra_kinds: Sequence[str], payload: object
) -> ConductorState | None:
    """The state :func:`pack_state` packed, if it is what :func:`load_state` would build
    here: same settings (so the same root and plan path), same kinds, same plan.md bytes.
    Otherwise None (a worker on another machine, plan.md edited since): read it again."""
    if not isinstance(payload, bytes):
        return None
    try:
        key, plan, criteria, resources, git_problem = pickle.loads(payload)
    except Exception:  # another Python on a remote worker, or damage: just read it again
        return None
    if not isinstance(plan, Plan) or key != _state_key(settings, extra_kinds):
        return None
    return ConductorState(
        settings=settings,
        plan=plan,
        criteria=criteria,
        weights=node_weights(plan, {}),
        resources=resources,
        last_outcomes={},
        git_problem=git_problem,
    )
