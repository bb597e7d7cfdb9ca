"""The DAG as Mermaid or DOT, coloured by outcome or by plan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_conductor.plan.reader import parse_plan
from pytest_conductor.report.graph_file import (
    STATES,
    node_states,
    render_graph,
    to_dot,
    to_mermaid,
    write_graph,
)

PLAN = parse_plan(
    """
```yaml
dag:
  nodes:
    - id: "1.1"
      name: 'Create "data" store'
      acceptance: [{exists: "a"}]
    - id: "1.2"
      name: "Use <store> #1"
      depends_on: ["1.1"]
      acceptance: [{exists: "a"}]
    - id: "1.3"
      depends_on: ["1.1"]
      acceptance: [{exists: "a"}]
    - id: "2.1"
      depends_on: ["1.2", "1.3"]
      acceptance: [{exists: "a"}]
```
"""
)
RAN = {"1.1": "passed", "1.2": "failed", "2.1": "blocked"}


def test_node_states() -> None:
    ids = PLAN.ids
    assert node_states(ids, ["1.1", "1.2", "2.1"], RAN) == {
        "1.1": "passed",
        "1.2": "failed",
        "1.3": "not selected",
        "2.1": "blocked",
    }
    assert node_states(ids, ids, None, ["1.1", "1.2"]) == {
        "1.1": "critical",
        "1.2": "critical",
        "1.3": "planned",
        "2.1": "planned",
    }
    assert node_states(["a"], ["a"], {"a": "skipped"}) == {"a": "not run"}


def test_mermaid_after_a_run() -> None:
    states = node_states(PLAN.ids, PLAN.ids, RAN)
    text = to_mermaid(PLAN, states, ["1.1", "1.2", "2.1"], title="track t")
    assert text.startswith("---\ntitle: track t\n---\nflowchart LR\n")
    assert '    n0["1.1 Create #quot;data#quot; store<br/>passed"]' in text
    assert '    n1["1.2 Use #lt;store#gt; #35;1<br/>failed"]' in text
    assert '    n2["1.3<br/>not run"]' in text
    assert "    n0 ==> n1\n    n0 --> n2\n    n1 ==> n3\n    n2 --> n3\n" in text
    fill, stroke, _ = STATES["failed"]
    assert f"    classDef failed fill:{fill},stroke:{stroke}" in text
    assert "    class n1,k1 failed" in text
    assert "    classDef not_run fill:" in text and "stroke-dasharray" in text
    assert "    class n2,k3 not_run" in text
    # The legend: one sample per colour used, and which critical path the thick edges are.
    legend = text[text.index('    subgraph legend["legend"]') : text.index("    end\n")]
    assert '        k0["passed"]' in legend and '        k3["not run"]' in legend
    assert "thick arrows: critical path (planned) 1.1 -#gt; 1.2 -#gt; 2.1" in legend
    measured = to_mermaid(PLAN, states, ["1.1", "1.2"], critical_label="measured")
    assert "critical path (measured) 1.1 -#gt; 1.2" in measured


def test_mermaid_of_the_plan_alone_has_no_outcomes() -> None:
    text = to_mermaid(PLAN, None, ["1.1", "1.3", "2.1"])
    for word in ("passed", "failed", "blocked", "not run"):
        assert word not in text
    assert "class n0,n2,n3,k1 critical" in text
    assert "class n1,k0 planned" in text
    assert 'k1["on the critical path (planned)"]' in text


def test_dot() -> None:
    states = node_states(PLAN.ids, PLAN.ids, RAN)
    text = to_dot(PLAN, states, ["1.1", "1.2"], title='track "t"')
    assert text.startswith('digraph "track \\"t\\"" {\n    rankdir=LR;\n')
    fill, stroke, _ = STATES["passed"]
    assert (
        f'    "1.1" [label="1.1 Create \\"data\\" store\\npassed", '
        f'fillcolor="{fill}", color="{stroke}"];'
    ) in text
    assert '    "1.1" -> "1.2" [penwidth=2.5];' in text
    assert '    "1.1" -> "1.3";' in text
    assert re.search(r'"1\.3" \[label="1\.3\\nnot run".*style="rounded,filled,dashed"\];', text)
    assert "    subgraph cluster_legend {" in text
    assert '"legend: failed" [label="failed"' in text
    assert 'label="thick arrows: critical path (planned) 1.1 -> 1.2"' in text
    assert text.rstrip().endswith("}")


def test_md_is_a_mermaid_fence() -> None:
    text = render_graph(PLAN, ".md")
    assert text.startswith("```mermaid\nflowchart LR\n")
    assert text.endswith("\n```\n")


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"unknown graph format '\.png'"):
        render_graph(PLAN, ".png")


@pytest.mark.parametrize("suffix", [".mmd", ".md", ".dot"])
def test_write_graph_creates_the_folder(tmp_path: Path, suffix: str) -> None:
    path = write_graph(tmp_path / "out" / f"graph{suffix}", PLAN)
    assert path.read_text(encoding="utf-8") == render_graph(PLAN, suffix)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
