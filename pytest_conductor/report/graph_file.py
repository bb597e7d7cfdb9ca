"""The track's DAG as a picture: Mermaid (``.mmd``, or ``.md`` in a mermaid fence) or DOT.

After a run the nodes are coloured by outcome (and labelled with it, for readers who do
not see colour); without one (``--collect-only``) only by what the plan says: the
critical path stands out, deselected nodes are dashed. Critical-path edges are thick
in both cases, and a legend says what each colour means and which critical path the
thick edges are: ``measured`` (this run's durations) or ``planned`` (estimates).

Pure Python: no pytest import.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_conductor.plan.reader import Plan
from pytest_conductor.util.atomic import atomic_write

__all__ = [
    "GRAPH_SUFFIXES",
    "STATES",
    "node_states",
    "render_graph",
    "to_dot",
    "to_mermaid",
    "write_graph",
]

GRAPH_SUFFIXES = (".mmd", ".md", ".dot")

# state -> (fill, stroke, dashed)
STATES: Mapping[str, tuple[str, str, bool]] = {
    "passed": ("#d4edda", "#2e7d32", False),
    "failed": ("#f8d7da", "#c62828", False),
    "blocked": ("#fff3cd", "#b26a00", False),
    "not run": ("#e2e3e5", "#6c757d", True),
    "not selected": ("#ffffff", "#9e9e9e", True),
    "planned": ("#e8f0fe", "#1a73e8", False),
    "critical": ("#d2e3fc", "#0b3d91", False),
}
# States a plan alone gives; their names are not written into the labels.
_PLAN_STATES = ("planned", "critical", "not selected")


def node_states(
    ids: Sequence[str],
    selected: Sequence[str],
    statuses: Mapping[str, str] | None,
    critical: Sequence[str] = (),
) -> dict[str, str]:
    """A state of :data:`STATES` per node.

    ``statuses`` (passed | failed | blocked | skipped per node) is None when nothing ran:
    then nodes are ``critical`` or ``planned``. A selected node without a status, or one
    skipped, did not run; a node outside ``selected`` was deselected.
    """
    chosen = set(selected)  # membership only
    on_path = set(critical)
    states: dict[str, str] = {}
    for task in ids:
        if task not in chosen:
            states[task] = "not selected"
        elif statuses is None:
            states[task] = "critical" if task in on_path else "planned"
        else:
            status = statuses.get(task, "not run")
            states[task] = status if status in ("passed", "failed", "blocked") else "not run"
    return states


def _critical_edges(critical: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(critical))


def _mermaid_text(text: str) -> str:
    # Inside a quoted label Mermaid reads entity codes (#quot;) and, with HTML labels, tags.
    for raw, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text


def _label(task: str, name: str) -> str:
    return task if not name or name == task else f"{task} {name}"


def to_mermaid(
    plan: Plan,
    states: Mapping[str, str] | None = None,
    critical: Sequence[str] = (),
    *,
    title: str = "",
    critical_label: str = "planned",
) -> str:
    """A Mermaid ``flowchart``; node ``n<i>`` is the i-th node of the plan (ids such as
    ``1.1`` are not Mermaid identifiers)."""
    ids = {node.id: f"n{i}" for i, node in enumerate(plan.nodes)}
    states = states or node_states(plan.ids, plan.ids, None, critical)
    lines = []
    if title:
        lines += ["---", f"title: {_mermaid_text(title)}", "---"]
    lines.append("flowchart LR")
    for node in plan.nodes:
        label = _mermaid_text(_label(node.id, node.name))
        state = states.get(node.id, "planned")
        if state not in _PLAN_STATES:
            label += f"<br/>{state}"
        lines.append(f'    {ids[node.id]}["{label}"]')
    thick = _critical_edges(critical)
    for node in plan.nodes:
        for dep in node.depends_on:
            if dep in ids:
                arrow = "==>" if (dep, node.id) in thick else "-->"
                lines.append(f"    {ids[dep]} {arrow} {ids[node.id]}")
    used = [s for s in STATES if s in states.values()]
    lines.append('    subgraph legend["legend"]')
    lines.append("        direction LR")
    for i, state in enumerate(used):
        lines.append(f'        k{i}["{_state_text(state, critical_label)}"]')
    if critical:
        lines.append(f'        k_path["{_mermaid_text(_path_text(critical, critical_label))}"]')
    lines.append("    end")
    for state in used:
        fill, stroke, dashed = STATES[state]
        dash = ",stroke-dasharray:4 3" if dashed else ""
        lines.append(f"    classDef {_class(state)} fill:{fill},stroke:{stroke}{dash}")
    lines.append("    classDef legend_text fill:#ffffff,stroke:#ffffff")
    for i, state in enumerate(used):
        members = ",".join(ids[t] for t in plan.ids if states.get(t) == state)
        lines.append(f"    class {members},k{i} {_class(state)}")
    if critical:
        lines.append("    class k_path legend_text")
    return "\n".join(lines) + "\n"


def _state_text(state: str, critical_label: str) -> str:
    if state == "critical":
        return f"on the critical path ({critical_label})"
    return state


def _path_text(critical: Sequence[str], critical_label: str) -> str:
    """The legend's line for the thick edges, naming the path and how it was found."""
    return f"thick arrows: critical path ({critical_label}) {' -> '.join(critical)}"


def _class(state: str) -> str:
    return state.replace(" ", "_")


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(
    plan: Plan,
    states: Mapping[str, str] | None = None,
    critical: Sequence[str] = (),
    *,
    title: str = "",
    critical_label: str = "planned",
) -> str:
    """A Graphviz ``digraph``, left to right, one box per node."""
    states = states or node_states(plan.ids, plan.ids, None, critical)
    known = set(plan.ids)
    lines = [f'digraph "{_dot_text(title or "plan")}" {{', "    rankdir=LR;"]
    if title:
        lines.append(f'    label="{_dot_text(title)}"; labelloc=t;')
    lines.append('    node [shape=box, style="rounded,filled", fontname="Helvetica"];')
    for node in plan.nodes:
        state = states.get(node.id, "planned")
        fill, stroke, dashed = STATES[state]
        label = _label(node.id, node.name)
        if state not in _PLAN_STATES:
            label += f"\n{state}"
        style = ', style="rounded,filled,dashed"' if dashed else ""
        lines.append(
            f'    "{_dot_text(node.id)}" [label="{_dot_text(label)}", '
            f'fillcolor="{fill}", color="{stroke}"{style}];'
        )
    thick = _critical_edges(critical)
    for node in plan.nodes:
        for dep in node.depends_on:
            if dep in known:
                width = " [penwidth=2.5]" if (dep, node.id) in thick else ""
                lines.append(f'    "{_dot_text(dep)}" -> "{_dot_text(node.id)}"{width};')
    lines += ["    subgraph cluster_legend {", '        label="legend";']
    for state in (s for s in STATES if s in states.values()):
        fill, stroke, dashed = STATES[state]
        style = ', style="rounded,filled,dashed"' if dashed else ""
        lines.append(
            f'        "legend: {state}" [label="{_state_text(state, critical_label)}", '
            f'fillcolor="{fill}", color="{stroke}"{style}];'
        )
    if critical:
        text = _dot_text(_path_text(critical, critical_label))
        lines.append(f'        "legend: path" [shape=plaintext, style="", label="{text}"];')
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


def render_graph(
    plan: Plan,
    suffix: str,
    states: Mapping[str, str] | None = None,
    critical: Sequence[str] = (),
    *,
    title: str = "",
    critical_label: str = "planned",
) -> str:
    """The graph in the format ``suffix`` names (``.mmd``, ``.md`` or ``.dot``);
    ``critical_label`` says how ``critical`` was found: ``planned`` or ``measured``."""
    if suffix == ".dot":
        return to_dot(plan, states, critical, title=title, critical_label=critical_label)
    mermaid = to_mermaid(plan, states, critical, title=title, critical_label=critical_label)
    if suffix == ".mmd":
        return mermaid
    if suffix == ".md":
        return f"```mermaid\n{mermaid}```\n"
    raise ValueError(f"unknown graph format {suffix!r}: expected one of {GRAPH_SUFFIXES}")


def write_graph(
    path: Path,
    plan: Plan,
    states: Mapping[str, str] | None = None,
    critical: Sequence[str] = (),
    *,
    title: str = "",
    critical_label: str = "planned",
) -> Path:
    """Write the graph to ``path`` (format from its suffix) whole, creating its folder."""
    text = render_graph(
        plan, path.suffix, states, critical, title=title, critical_label=critical_label
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), durable=False)  # a picture, not a record
    return path
