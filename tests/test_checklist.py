"""Checklist plans (no DAG block): the three shapes in the wild, ids, order, criteria,
marks; the marks of a DAG plan's checklist lines; reading never fails on other markdown."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_conductor.plan.checklist import parse_checklist, parse_track_plan
from pytest_conductor.plan.marks import Mark, read_checkbox, rewrite_mark
from pytest_conductor.plan.reader import Plan, PlanError

PLANS = Path(__file__).resolve().parent / "plans"


def mark_of(plan: Plan, task: str) -> Mark:
    mark = plan.node(task).mark
    assert mark is not None, f"task {task} has no mark"
    return mark


def md(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --------------------------------------------------------------------------- Google


def test_google_conductor_plan_ids_order_marks_and_checkpoint() -> None:
    plan = parse_track_plan((PLANS / "google.md").read_text(encoding="utf-8"))
    assert plan.form == "checklist"
    assert plan.ids == ("1.1", "1.2", "1.3", "2.1", "2.2", "2.3", "3.1")
    deps = dict(plan.deps)
    assert deps["1.1"] == ()
    assert deps["1.2"] == ("1.1",)  # file order within a phase
    assert deps["2.1"] == ("1.1", "1.2", "1.3")  # a phase's first task after all of the last
    assert deps["3.1"] == ("2.1", "2.2", "2.3")  # "## Phase: Review Fixes": position 3
    first = plan.node("1.1")
    assert first.name == "Write tests for the token store"
    assert first.mark is not None and first.mark.state == "x" and first.mark.sha == "5d6e7f8"
    assert first.line == 7
    # Indented sub-tasks are part of their task, not nodes.
    assert "Cover expiry" not in [n.name for n in plan.nodes]
    meta = plan.node("1.3")
    assert meta.type == "verification"
    assert meta.checkpoint is not None and meta.checkpoint.sha == "1a2b3c4"
    assert meta.checkpoint.line == 5
    assert mark_of(plan, "2.1").state == "~"
    assert plan.node("3.1").phase == "3"


def test_phase_order_makes_a_phases_tasks_independent_but_keeps_phases_as_barriers() -> None:
    plan = parse_track_plan((PLANS / "google.md").read_text(encoding="utf-8"), order="phase")
    deps = dict(plan.deps)
    assert deps["1.1"] == deps["1.2"] == deps["1.3"] == ()
    assert deps["2.1"] == deps["2.2"] == ("1.1", "1.2", "1.3")


# --------------------------------------------------------------------------- wshobson


def test_wshobson_plan_written_ids_verification_and_dependencies() -> None:
    plan = parse_track_plan((PLANS / "wshobson.md").read_text(encoding="utf-8"))
    assert plan.ids == ("1.1", "1.2", "1.3", "1.verify", "2.1", "2.2", "2.verify")
    states = {n.id: n.mark.state if n.mark else None for n in plan.nodes}
    assert states == {
        "1.1": "x",
        "1.2": "~",
        "1.3": "!",
        "1.verify": " ",
        "2.1": "-",
        "2.2": " ",
        "2.verify": " ",
    }
    assert plan.node("1.1").name == "Define the filter schema"
    assert plan.node("1.1").acceptance == ("the schema rejects unknown fields",)
    assert plan.node("1.2").files == ("src/filters.py",)
    verify = plan.node("1.verify")
    assert verify.type == "verification"
    assert verify.acceptance == ("Unit tests for the schema pass", "Query strings round-trip")
    assert verify.depends_on == ("1.1", "1.2", "1.3")
    # "**Dependencies:** Phase 1 complete": the phase's first task after all of phase 1.
    assert plan.node("2.1").depends_on == ("1.1", "1.2", "1.3", "1.verify")
    # A <!-- deps: --> comment overrides file order.
    assert plan.node("2.2").depends_on == ("1.1",)


# --------------------------------------------------------------------------- superpowers


def test_superpowers_plan_tasks_files_and_run_criteria() -> None:
    plan = parse_track_plan((PLANS / "superpowers.md").read_text(encoding="utf-8"))
    assert plan.ids == ("1", "2")
    first, second = plan.node("1"), plan.node("2")
    assert first.name == "Greeting function"
    assert first.files == ("src/greet.py", "tests/test_greet.py")
    # The step expected to FAIL is a TDD red step: only the PASS run is a criterion.
    # A pytest command runs as a `pytest` criterion: with pytest-conductor's own Python.
    assert first.acceptance == (
        {"pytest": ["tests/test_greet.py", "-v"]},
        {"exists": "src/greet.py"},
    )
    assert first.mark is None  # no checkbox anywhere: its criteria alone decide
    assert second.depends_on == ("1",)
    assert second.files == ("src/cli.py", "src/greet.py")  # ":1-3" line range dropped
    # A `;` inside quotes is not shell syntax: the command is split, no shell runs.
    assert second.acceptance[0] == {"run": 'python -c "import sys; sys.exit(0)"'}
    assert second.mark is not None and second.mark.state == "~"  # one of two steps done


def test_a_run_with_shell_syntax_runs_through_sh() -> None:
    plan = parse_checklist("### Task 1: A\n\nRun: `make test | tee out.txt`\nExpected: PASS\n")
    assert plan.node("1").acceptance == ({"run": ["sh", "-c", "make test | tee out.txt"]},)


def test_paths_outside_the_project_are_no_criteria() -> None:
    text = "### Task 1: A\n\n**Files:**\n- Create: `/etc/passwd`\n- Create: `../x.py`\n"
    node = parse_checklist(text).node("1")
    assert node.files == () and node.acceptance == ()


# --------------------------------------------------------------------------- rules


def test_ids_are_position_in_phase_when_none_is_written() -> None:
    text = md(
        """
        ## Phase 2: B
        - [ ] Task: one
        - [ ] Task 2.7: written
        - [ ] Task: three
        """
    )
    assert parse_checklist(text).ids == ("2.1", "2.7", "2.3")


def test_without_phase_headings_ids_are_positions() -> None:
    plan = parse_checklist("- [ ] first\n- [x] second\n")
    assert plan.ids == ("1", "2")
    assert plan.node("2").depends_on == ("1",)
    assert plan.node("1").phase is None


def test_duplicate_ids_unknown_deps_and_cycles_are_plan_errors_with_lines() -> None:
    text = md(
        """
        ## Phase 1: A
        - [ ] **1.1 one** <!-- deps: 1.2 -->
        - [ ] **1.2 two**
        - [ ] **1.2 again**
        - [ ] **1.4 four** <!-- deps: 9.9 -->
        """
    )
    with pytest.raises(PlanError) as info:
        parse_checklist(text, "p.md")
    assert [str(p) for p in info.value.problems] == [
        "line 2: cycle: 1.1 -> 1.2 -> 1.1",
        "line 4: duplicate id 1.2 (lines 3 and 4)",
        "line 5: task 1.4 depends on 9.9, which is not a task in the plan",
    ]


def test_no_dag_and_no_tasks_is_one_clear_error() -> None:
    with pytest.raises(PlanError, match="no DAG block and no task list"):
        parse_track_plan("# Notes\n\nJust prose.\n")


def test_checklists_in_code_fences_and_other_sections_are_not_tasks() -> None:
    text = md(
        """
        ## Phase 1: A
        - [ ] Task: real
        ```markdown
        - [ ] Task: an example in a fence
        ```
        ## Notes
        - [ ] not a task: outside every phase
        """
    )
    assert [n.name for n in parse_checklist(text).nodes] == ["real"]


# --------------------------------------------------------------------------- DAG plans


def test_a_dag_plans_checklist_lines_give_its_nodes_marks_and_deps_warnings() -> None:
    text = md(
        """
        # Plan
        - [x] Task 1.1: Base abc1234 <!-- deps: none, parallel: pg-1 -->
        - [ ] Task 1.2: Next <!-- deps: 1.9 -->

        ```yaml
        dag:
          nodes:
            - id: "1.1"
            - id: "1.2"
              depends_on: ["1.1"]
        ```
        """
    )
    plan = parse_track_plan(text)
    assert plan.form == "dag"
    assert mark_of(plan, "1.1").sha == "abc1234"
    assert mark_of(plan, "1.2").state == " "
    assert plan.node("1.2").depends_on == ("1.1",)  # the DAG block decides
    assert [str(w) for w in plan.warnings] == [
        "line 3: task 1.2: the checklist line says deps: 1.9, the DAG block says "
        "depends_on: [1.1] (line 9); the DAG block is followed"
    ]


def test_a_dag_plans_ids_need_not_be_numbers_on_its_checklist_lines() -> None:
    text = "- [~] Task store-a: Store\n\n```yaml\ndag:\n  nodes:\n    - {id: store-a}\n```\n"
    assert mark_of(parse_track_plan(text), "store-a").state == "~"


# --------------------------------------------------------------------------- marks


@pytest.mark.parametrize(
    ("line", "state", "sha"),
    [
        ("- [x] Task: Write tests abc1234", "x", "abc1234"),
        ("- [X] **1.1 Title** `abc1234`", "x", "abc1234"),
        ("  * [x] Task 2: thing (ABC1234) <!-- deps: 1 -->", "x", "abc1234"),
        ("- [x] Task: remove the defaced", "x", None),  # no digit: a word, not a SHA
        ("- [~] Task: under way", "~", None),
        ("1. [!] blocked", "!", None),
        ("- [-] skipped", "-", None),
    ],
)
def test_reading_marks(line: str, state: str, sha: str | None) -> None:
    box = read_checkbox(line)
    assert box is not None and (box.state, box.sha) == (state, sha)


@pytest.mark.parametrize(
    ("line", "state", "sha", "style", "expected"),
    [
        ("- [ ] Task: A", "~", None, ("", ""), "- [~] Task: A"),
        ("- [~] Task: A", "x", "abc1234", ("", ""), "- [x] Task: A abc1234"),
        (
            "    - [ ] Task 1.1: A <!-- deps: none -->",
            "x",
            "abc1234",
            ("[", "]"),
            "    - [x] Task 1.1: A [abc1234] <!-- deps: none -->",
        ),
        ("- [x] Task: A def5678", "!", None, ("", ""), "- [!] Task: A"),
        ("- [ ] **1.1 Title**  ", "x", None, ("", ""), "- [x] **1.1 Title**  "),
    ],
)
def test_rewriting_a_mark_changes_only_the_mark_and_the_sha(
    line: str, state: str, sha: str | None, style: tuple[str, str], expected: str
) -> None:
    assert rewrite_mark(line, state, sha, style) == expected


# --------------------------------------------------------------------------- robustness

_MARKDOWN_BITS = st.sampled_from(
    [
        "## Phase 1: A",
        "## Phase: B [checkpoint: abc1234]",
        "### Tasks",
        "### Verification",
        "### Task 3: C",
        "- [ ] Task: x",
        "- [x] **1.1 y** abc1234",
        "    - [ ] sub",
        "- [~] Task 2.1: z <!-- deps: 1.1 -->",
        "**Dependencies:** Phase 1 complete",
        "**Dependencies:** Phase 9",
        "- Create: `a.py`",
        "**Files:**",
        "Run: `pytest -q`",
        "Expected: PASS",
        "**Acceptance**: works",
        "```",
        "<!--",
        "-->",
        "",
        "# Title",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_MARKDOWN_BITS, st.text(max_size=40)), max_size=30))
def test_reading_arbitrary_markdown_never_raises_anything_but_a_plan_error(
    lines: list[str],
) -> None:
    text = "\n".join(lines)
    try:
        plan = parse_track_plan(text)
    except PlanError as exc:
        assert exc.problems
        return
    for node in plan.nodes:
        assert all(dep in plan.by_id for dep in node.depends_on)


# --------------------------------------------------------------------------- collection


@pytest.mark.parametrize(
    ("shape", "order"),
    [
        ("google", ["1.1", "1.2", "1.3", "2.1", "2.2", "2.3", "3.1"]),
        ("wshobson", ["1.1", "1.2", "1.3", "1.verify", "2.1", "2.2", "2.verify"]),
        ("superpowers", ["1", "2"]),
    ],
)
def test_collect_only_lists_each_shape_in_the_stated_order(
    pytester: pytest.Pytester, shape: str, order: list[str]
) -> None:
    folder = pytester.path / "conductor" / "tracks" / "t"
    folder.mkdir(parents=True)
    shutil.copy(PLANS / f"{shape}.md", folder / "plan.md")
    result = pytester.runpytest("--conductor-track=t", "--collect-only", "-q", "-n", "0")
    assert result.ret == pytest.ExitCode.OK
    collected = [line.rpartition("::")[2] for line in result.stdout.lines if "::" in line]
    assert collected == order


def test_a_bad_checklist_order_is_a_usage_error(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "conductor" / "tracks" / "t"
    folder.mkdir(parents=True)
    shutil.copy(PLANS / "google.md", folder / "plan.md")
    result = pytester.runpytest("--conductor-track=t", "--conductor-checklist-order=random")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--conductor-checklist-order='random': expected 'file' or*"])


@pytest.mark.slow
def test_checklist_example_passes_verify_only(
    pytester: pytest.Pytester, example: Callable[[str], Path]
) -> None:
    example("checklist")
    result = pytester.runpytest("--conductor-track=slugify", "-n", "0", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "*plan.md::1.1 PASSED*",
            "*plan.md::1.2 PASSED*",
            "*plan.md::1.3 PASSED*",
            "*plan.md::2.1 PASSED*",
            "*plan.md::2.2 PASSED*",
            "unchecked (nothing machine-checkable; --conductor-strict fails them): 1.3, 2.2",
        ]
    )
    # The example's README: a task marked not done fails the gate.
    plan = pytester.path / "conductor" / "tracks" / "slugify" / "plan.md"
    plan.write_text(plan.read_text().replace("- [x] Task: Cut long", "- [ ] Task: Cut long"))
    result = pytester.runpytest("--conductor-track=slugify", "-n", "0")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
