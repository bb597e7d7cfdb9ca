"""The run as Markdown: the renderer on plain data, and the files a real run writes
(``$GITHUB_STEP_SUMMARY`` appended, ``--conductor-summary-md`` and its ini twin)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_conductor.graph.blocking import NodeOutcome
from pytest_conductor.plan.reader import parse_plan
from pytest_conductor.report.graph_file import node_states, to_mermaid
from pytest_conductor.report.markdown import REASON_CHARS, render_markdown, table_cell
from pytest_conductor.report.summary import RunFacts
from pytest_conductor.report.verdict import decide
from tests.conftest import PlanWriter

PLAN_YAML = """
dag:
  nodes:
    - id: "1.1"
      name: "Create data store"
      acceptance: [{exists: "a.txt"}]
    - id: "1.2"
      name: "Use the | store"
      depends_on: ["1.1"]
      acceptance: [{exists: "missing.txt"}]
    - id: "1.3"
      name: "Independent"
      acceptance: [{exists: "a.txt"}]
    - id: "2.1"
      name: "Join"
      depends_on: ["1.2", "1.3"]
      acceptance: [{exists: "a.txt"}]
    - id: "3.1"
      name: "Last"
      depends_on: ["2.1"]
      acceptance: [{exists: "a.txt"}]
"""
PLAN = parse_plan(f"```yaml\n{PLAN_YAML}\n```\n")
OUTCOMES = {
    "1.1": NodeOutcome("passed"),
    "1.2": NodeOutcome("failed"),
    "1.3": NodeOutcome("passed"),
    "2.1": NodeOutcome("blocked", "1.2", "blocked: dependency 1.2 failed"),
    "3.1": NodeOutcome("blocked", "1.2", "blocked: dependency 1.2 failed (via 2.1)"),
}
FACTS = RunFacts(
    track="t",
    selected=PLAN.ids,
    deps=PLAN.deps,
    outcomes=OUTCOMES,
    durations={"1.1": 1.5, "1.2": 0.25, "1.3": 0.0001},
    wall_time=2.0,
    names={n.id: n.name for n in PLAN.nodes},
)
ERRORS = {"1.2": "task 1.2 (Use the | store):\nexists: missing.txt\n  expected: a file"}


def _verdict(facts: RunFacts = FACTS) -> object:
    statuses = {t: o.status for t, o in facts.outcomes.items()}
    return decide(facts.selected, statuses, track=facts.track, files_changed=3)


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by node id, split into cells (escaped pipes kept inside their cell)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


def test_page_after_a_failed_run() -> None:
    verdict = decide(
        FACTS.selected,
        {t: o.status for t, o in OUTCOMES.items()},
        track="t",
        files_changed=3,
    )
    text = render_markdown(PLAN, FACTS, verdict, ERRORS)
    assert text.startswith("## ❌ Conductor track `t`: FAIL\n\n")
    assert verdict.summary in text
    assert "**2 passed, 1 failed, 2 blocked**, 3 files changed" in text
    rows = _rows(text)
    assert list(rows) == ["1.1", "1.2", "1.3", "2.1", "3.1"]
    assert rows["1.1"] == ["`1.1`", "Create data store", "✅ passed", "1.5s", ""]
    # The reason is the first line that says why, not the ``task 1.2 (…):`` header.
    assert rows["1.2"] == ["`1.2`", "Use the \\| store", "❌ failed", "0.2s", "exists: missing.txt"]
    assert rows["1.3"][3] == "<1ms"
    assert rows["2.1"] == ["`2.1`", "Join", "⛔ blocked", "—", "blocked: dependency 1.2 failed"]
    assert "- `3.1 <- 2.1 <- 1.2 (failed)`" in text.split("### Blocked chains")[1]
    critical = text.split("### Critical path\n\n")[1].splitlines()[0]
    assert critical.startswith("`1.1 -> 1.2 took 1.8s (measured); the nodes took 2s")
    # The DAG is graph_file's Mermaid, coloured by outcome, the measured path thick.
    states = node_states(PLAN.ids, PLAN.ids, {t: o.status for t, o in OUTCOMES.items()})
    mermaid = to_mermaid(PLAN, states, ["1.1", "1.2"])
    assert text.endswith(f"### DAG\n\n```mermaid\n{mermaid}```\n")


def test_page_after_a_passing_run_has_no_blocked_section() -> None:
    outcomes = {t: NodeOutcome("passed") for t in PLAN.ids}
    facts = RunFacts("t", PLAN.ids, PLAN.deps, outcomes, durations={t: 0.1 for t in PLAN.ids})
    verdict = decide(PLAN.ids, dict.fromkeys(PLAN.ids, "passed"), track="t", files_changed=0)
    text = render_markdown(PLAN, facts, verdict)
    assert text.startswith("## ✅ Conductor track `t`: PASS\n")
    assert "### Blocked chains" not in text
    assert all(cells[4] == "" for cells in _rows(text).values())


def test_nodes_not_run_and_not_selected() -> None:
    selected = ("1.1", "1.2")
    outcomes = {"1.1": NodeOutcome("passed"), "1.2": NodeOutcome("skipped", None, "not run: -x")}
    facts = RunFacts("t", selected, PLAN.deps, outcomes, durations={"1.1": 0.1})
    verdict = decide(selected, {"1.1": "passed", "1.2": "skipped"}, track="t", files_changed=0)
    text = render_markdown(PLAN, facts, verdict)
    rows = _rows(text)
    assert list(rows) == ["1.1", "1.2"]  # only the selected nodes have a row
    assert rows["1.2"][2:] == ["⏸️ not run", "—", "not run: -x"]
    assert "class n2,n3,n4,k2 not_selected" in text  # the rest is dashed in the DAG


def test_nothing_selected_has_no_table() -> None:
    facts = RunFacts("t", (), PLAN.deps, {})
    verdict = decide((), {}, track="t", files_changed=0)
    text = render_markdown(PLAN, facts, verdict)
    assert "| node |" not in text and "### Critical path" not in text
    assert "```mermaid\n" in text


def test_long_reasons_are_cut() -> None:
    errors = {"1.2": "x" * 1000}
    text = render_markdown(PLAN, FACTS, decide((), {}, track="t", files_changed=0), errors)
    reason = _rows(text)["1.2"][4]
    assert len(reason) == REASON_CHARS and reason.endswith("…")


def test_table_cell_makes_markup_inert() -> None:
    assert table_cell("a | b\n c") == "a \\| b c"
    assert table_cell("<script>&") == "&lt;script&gt;&amp;"
    assert table_cell("*not* _em_ `code` [link]") == "\\*not\\* \\_em\\_ \\`code\\` \\[link\\]"


@given(st.text())
def test_table_cell_is_one_cell_of_one_line(text: str) -> None:
    cell = table_cell(text, REASON_CHARS)
    assert "\n" not in cell and "\r" not in cell
    assert len(re.findall(r"(?<!\\)\|", cell)) == 0
    assert "<" not in cell


# -- through the command line ----------------------------------------------------------------

FAST = ("-p", "no:hypothesispytest", "-p", "no:randomly")


@pytest.fixture
def track(pytester: pytest.Pytester, write_plan: PlanWriter) -> pytest.Pytester:
    write_plan(PLAN_YAML)
    (pytester.path / "a.txt").write_text("a", encoding="utf-8")
    return pytester


def test_github_step_summary_is_appended(
    track: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = track.path / "step_summary.md"
    summary.write_text("## an earlier step", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = track.runpytest("-n", "0", "--conductor-track=t", *FAST)
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    text = summary.read_text(encoding="utf-8")
    earlier, ours = text.split("\n## ", 1)
    assert earlier == "## an earlier step"  # kept, and ours starts on a line of its own
    assert ours.startswith("❌ Conductor track `t`: FAIL\n")
    rows = _rows(text)
    assert [rows[t][2] for t in PLAN.ids] == [
        "✅ passed",
        "❌ failed",
        "✅ passed",
        "⛔ blocked",
        "⛔ blocked",
    ]
    assert "missing.txt" in rows["1.2"][4]
    assert rows["2.1"][4] == "blocked: dependency 1.2 failed"
    assert "- `3.1 <- 2.1 <- 1.2 (failed)`" in text
    assert "### Critical path\n\n`1.1 -> 1.2 took " in text
    assert "```mermaid\nflowchart LR\n" in text


def test_summary_md_option_writes_the_same_page(
    track: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = track.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = track.runpytest("-n", "0", "--conductor-track=t", "--conductor-summary-md=out/s.md")
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    page = (track.path / "out" / "s.md").read_text(encoding="utf-8")
    assert page == step.read_text(encoding="utf-8")
    # Written whole, not appended: a second run leaves one page.
    track.runpytest("-n", "0", "--conductor-track=t", "--conductor-summary-md=out/s.md", *FAST)
    assert (track.path / "out" / "s.md").read_text(encoding="utf-8").count("## ❌") == 1


def test_summary_md_ini_twin_and_nothing_without_either(
    track: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    track.runpytest("-n", "0", "--conductor-track=t", *FAST)
    written = [p for p in track.path.rglob("*.md") if ".pytest_cache" not in p.parts]
    assert [p.name for p in written] == ["plan.md"]
    track.makeini("[pytest]\nconductor_summary_md = reports/summary.md\n")
    track.runpytest("-n", "0", "--conductor-track=t", "-k", "1.1", *FAST)
    page = (track.path / "reports" / "summary.md").read_text(encoding="utf-8")
    assert page.startswith("## ✅ Conductor track `t`: PASS\n")
    assert list(_rows(page)) == ["1.1"]


def test_unwritable_summary_is_a_warning_not_a_traceback(track: pytest.Pytester) -> None:
    (track.path / "taken").mkdir()
    result = track.runpytest(
        "-n", "0", "--conductor-track=t", "--conductor-summary-md=taken", *FAST
    )
    result.stdout.fnmatch_lines(["conductor warning: Markdown summary not written to *taken*"])
    assert '"verdict": "FAIL"' in result.outlines[-1]


def test_no_summary_under_collect_only(
    track: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = track.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    track.runpytest("--conductor-track=t", "--collect-only", *FAST)
    assert not step.exists()


@pytest.mark.slow
def test_with_xdist_workers_the_page_is_written_once(
    track: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = track.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = track.runpytest_subprocess("-n", "2", "--conductor-track=t", *FAST)
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    page = step.read_text(encoding="utf-8")
    assert page.count("## ❌ Conductor track `t`: FAIL") == 1  # by the controller alone
    assert [cells[2] for cells in _rows(page).values()] == [
        "✅ passed",
        "❌ failed",
        "✅ passed",
        "⛔ blocked",
        "⛔ blocked",
    ]
    assert "missing.txt" in _rows(page)["1.2"][4]
