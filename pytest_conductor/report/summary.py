"""The ``conductor`` terminal summary, as text lines built from plain data.

What a person wants at a glance after a run: how many nodes passed, failed and were
blocked; for each blocked node the chain back to the node that failed
(``2.1 <- 1.4 <- 1.2 (failed)``); the critical path of the work that ran against the
wall time the node phase took; the slowest nodes. With ``-q`` it is two lines at most.

Pure Python: no pytest import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pytest_conductor.graph.algorithms import critical_path, priority_order
from pytest_conductor.graph.blocking import NodeOutcome
from pytest_conductor.plan.durations import format_duration

__all__ = [
    "CHAIN_SHOWN",
    "RunFacts",
    "blocked_lines",
    "blocking_chain",
    "collect_only_lines",
    "count_line",
    "critical_line",
    "format_chain",
    "measured_critical_path",
    "slowest",
    "summary_lines",
]

SLOWEST = 5
#: A blocked node's chain is shown whole up to this many nodes; a longer one is cut to
#: its first links and its root, with its length (the output stays linear in the nodes).
CHAIN_SHOWN = 6
_RAN = ("passed", "failed")


@dataclass(frozen=True)
class RunFacts:
    """What the summary needs to know about a finished run."""

    track: str
    selected: Sequence[str]  # the nodes of this run, plan order
    deps: Mapping[str, Sequence[str]]  # the whole plan, plan order
    outcomes: Mapping[str, NodeOutcome]
    durations: Mapping[str, float] = field(default_factory=dict)  # measured, this run
    wall_time: float | None = None  # first node's start to last node's end
    names: Mapping[str, str] = field(default_factory=dict)


def blocking_chain(
    task: str, deps: Mapping[str, Sequence[str]], outcomes: Mapping[str, NodeOutcome]
) -> list[str]:
    """``[task, dependency, ..., root]``: how the blocked ``task`` traces back to the node
    that failed (or was not selected). ``[task]`` alone when ``task`` is not blocked."""
    outcome = outcomes.get(task)
    if outcome is None or outcome.status != "blocked":
        return [task]
    root = outcome.root
    chain = [task]
    current = task
    # Each step goes to a dependency blocked by the same root, so the walk ends at root;
    # the bound only guards against inconsistent data.
    for _ in range(len(deps) + 1):
        step = _next_link(deps.get(current, ()), root, outcomes)
        if step is None:
            if root is not None and root != chain[-1]:
                chain.append(root)  # the link between them was not recorded: name the root
            break
        chain.append(step)
        if step == root:
            break
        current = step
    return chain


def _next_link(
    deps: Sequence[str], root: str | None, outcomes: Mapping[str, NodeOutcome]
) -> str | None:
    for dep in deps:
        if dep == root:
            return dep
    for dep in deps:
        found = outcomes.get(dep)
        if found is not None and found.status == "blocked" and found.root == root:
            return dep
    return None


def blocked_lines(
    blocked: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    outcomes: Mapping[str, NodeOutcome],
    *,
    shown: int = CHAIN_SHOWN,
) -> list[str]:
    """One ``blocked: …`` line per blocked node, in linear time and output.

    Each node's next link is found once and the chain lengths are memoised, so 5,000
    nodes chained one behind the other cost 5,000 short lines, not 5,000 whole chains.
    """
    nxt: dict[str, str | None] = {}
    for task in blocked:
        outcome = outcomes.get(task)
        root = outcome.root if outcome is not None else None
        nxt[task] = _next_link(deps.get(task, ()), root, outcomes)
    length: dict[str, int] = {}

    def chain_length(task: str) -> int:
        # Iterative: a recursive walk would hit the recursion limit on long chains.
        path = []
        current: str | None = task
        while current is not None and current not in length and current in nxt:
            path.append(current)
            current = nxt[current]
            if current in path:  # inconsistent data: never loop
                break
        tail = length.get(current, 1) if current is not None else 0
        for node in reversed(path):
            tail += 1
            length[node] = tail
        return length.get(task, 1)

    lines = []
    for task in blocked:
        outcome = outcomes.get(task)
        if outcome is None or outcome.status != "blocked":
            continue
        links = [task]
        current: str | None = task
        while len(links) < shown and current is not None:
            current = nxt.get(current) if current in nxt else None
            if current is None or current in links:
                break
            links.append(current)
        total = chain_length(task)
        root = outcome.root
        if total <= shown or root is None:
            lines.append(f"blocked: {format_chain(blocking_chain_from(links, root), outcomes)}")
            continue
        head = " <- ".join(links[: shown - 1])
        label = _root_label(root, outcomes)
        lines.append(f"blocked: {head} <- … <- {root} ({label}; a chain of {total} nodes)")
    return lines


def blocking_chain_from(links: Sequence[str], root: str | None) -> list[str]:
    """``links`` ending at ``root`` (appended when the walk did not reach it)."""
    chain = list(links)
    if root is not None and chain[-1] != root:
        chain.append(root)
    return chain


def _root_label(root: str, outcomes: Mapping[str, NodeOutcome]) -> str:
    outcome = outcomes.get(root)
    return "not selected" if outcome is None else outcome.status


def format_chain(chain: Sequence[str], outcomes: Mapping[str, NodeOutcome]) -> str:
    """``2.1 <- 1.4 <- 1.2 (failed)``."""
    if len(chain) < 2:
        return " <- ".join(chain)
    return f"{' <- '.join(chain)} ({_root_label(chain[-1], outcomes)})"


def _by_status(facts: RunFacts) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for task in facts.selected:
        outcome = facts.outcomes.get(task)
        status = "not run" if outcome is None or outcome.status == "skipped" else outcome.status
        groups.setdefault(status, []).append(task)
    return groups


def count_line(facts: RunFacts, *, with_ids: bool = False) -> str:
    """``3 passed, 1 failed, 2 blocked`` (and ``1 not run`` when some were not run)."""
    groups = _by_status(facts)
    parts = []
    for status in ("passed", "failed", "blocked", "not run"):
        ids = groups.get(status, [])
        if status == "not run" and not ids:
            continue
        shown = f" ({', '.join(ids)})" if with_ids and ids and status != "passed" else ""
        parts.append(f"{len(ids)} {status}{shown}")
    return ", ".join(parts)


def measured_critical_path(facts: RunFacts) -> tuple[list[str], float] | None:
    """The critical path of the nodes that ran, by this run's measured durations, and its
    length in seconds; None when no node ran."""
    ran = {
        t: facts.deps.get(t, ())
        for t in facts.selected
        if (o := facts.outcomes.get(t)) is not None and o.status in _RAN
    }
    if not ran:
        return None
    measured = {t: facts.durations.get(t, 0.0) for t in ran}  # failed in setup: no time
    path = critical_path(ran, measured)
    return path, sum(measured[t] for t in path)


def critical_line(facts: RunFacts) -> str | None:
    """The measured critical path against the wall time of the node phase, in plain
    words; None when no node ran."""
    found = measured_critical_path(facts)
    if found is None:
        return None
    path, weight = found
    text = f"critical path {' -> '.join(path)} took {_seconds(weight)} (measured)"
    if facts.wall_time is None:
        return text
    wall = f"the nodes took {_seconds(facts.wall_time)} from first start to last end"
    if weight <= 0:
        return f"{text}; {wall}"
    ratio = facts.wall_time / weight
    if abs(ratio - 1) < 0.005:
        return f"{text}; {wall}, as long as the critical path"
    if ratio >= 2:  # "2868% longer" reads worse than this
        return f"{text}; {wall}, {ratio:.1f} times as long"
    more = "longer" if ratio > 1 else "shorter"
    return f"{text}; {wall}, {abs(ratio - 1):.0%} {more}"


def _seconds(value: float) -> str:
    # format_duration rounds to whole milliseconds; "0ms" would read as "did not run".
    return "<1ms" if 0 <= value < 0.0005 else format_duration(value)


def slowest(durations: Mapping[str, float], count: int = SLOWEST) -> list[tuple[str, float]]:
    """The ``count`` longest measured nodes, longest first (ties: the order given)."""
    ranked = sorted(durations.items(), key=lambda item: -item[1])
    return ranked[:count]


def summary_lines(facts: RunFacts, *, verbosity: int = 0) -> list[str]:
    """The summary; ``verbosity < 0`` (``-q``) keeps it to two lines."""
    critical = critical_line(facts)
    if verbosity < 0:
        lines = [f"conductor {facts.track}: {count_line(facts, with_ids=True)}"]
        if critical:
            lines.append(f"conductor {critical}")
        return lines
    lines = [f"track {facts.track}: {count_line(facts)}"]
    groups = _by_status(facts)
    for status in ("failed", "not run"):
        if groups.get(status):
            lines.append(f"{status}: {', '.join(groups[status])}")
    lines.extend(blocked_lines(groups.get("blocked", []), facts.deps, facts.outcomes))
    if critical:
        lines.append(critical)
    ranked = slowest({t: d for t, d in facts.durations.items() if t in facts.outcomes})
    if ranked and verbosity > 0:
        lines.append("slowest nodes:")
        lines.extend(
            f"  {_seconds(d):>8}  {t}  {facts.names.get(t, '')}".rstrip() for t, d in ranked
        )
    elif ranked:
        lines.append("slowest: " + ", ".join(f"{t} {_seconds(d)}" for t, d in ranked))
    return lines


def collect_only_lines(
    selected: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
) -> list[str]:
    """Under ``--collect-only``: the order one worker would run the selected nodes in and
    the critical path by planned weights (estimated_duration, else last measured, else 1)."""
    chosen = set(selected)  # membership only
    sub = {t: deps.get(t, ()) for t in deps if t in chosen}
    if not sub:
        return ["no node selected"]
    path = critical_path(sub, weights)
    weight = sum(weights.get(t, 1.0) for t in path)
    return [
        f"execution order: {', '.join(priority_order(sub, weights))}",
        f"critical path {' -> '.join(path)} ({format_duration(weight)} planned)",
    ]
