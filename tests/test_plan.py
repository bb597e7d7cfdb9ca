from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_conductor.plan.reader import Group, Plan, PlanError, PlanProblem, load_plan, parse_plan


def md(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def dag(body: str) -> str:
    """plan.md with some prose, then a ```yaml block holding ``body`` (block line 3)."""
    return "# Plan\n\n```yaml\n" + md(body) + "```\n\nMore prose.\n"


def problems(text: str) -> list[str]:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "track/plan.md")
    return [str(p) for p in info.value.problems]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


SIMPLE = dag(
    """
    dag:
      nodes:
        - id: "1.1"
          name: "Create data store"
          type: "code"
          files: ["src/stores/data-store.ts"]
          depends_on: []
          estimated_duration: "30m"
          phase: 1
        - id: "1.2"
          depends_on: ["1.1"]
      parallel_groups:
        - id: "pg-1"
          tasks: ["1.1", "1.2"]
          conflict_free: true
        - id: "pg-2"
          tasks: ["1.2"]
          conflict_free: false
          shared_resources: ["src/stores/data-store.ts"]
          coordination_strategy: "file_lock"
    """
)


# --- reading a good plan --------------------------------------------------------------


def test_reads_the_design_example() -> None:
    plan = parse_plan(SIMPLE, "track/plan.md")
    assert plan.path == Path("track/plan.md")
    assert plan.ids == ("1.1", "1.2")
    assert plan.dag_line == 4
    first = plan.node("1.1")
    assert first.name == "Create data store"
    assert first.type == "code"
    assert first.files == ("src/stores/data-store.ts",)
    assert first.depends_on == ()
    assert first.estimated_duration == 1800.0
    assert first.phase == "1"
    assert first.line == 6
    second = plan.node("1.2")
    assert second.name == "1.2"  # name defaults to the id
    assert second.depends_on == ("1.1",)
    assert second.estimated_duration is None
    assert plan.deps == {"1.1": (), "1.2": ("1.1",)}
    assert plan.groups == (
        Group(id="pg-1", tasks=("1.1", "1.2"), conflict_free=True, line=16),
        Group(
            id="pg-2",
            tasks=("1.2",),
            conflict_free=False,
            shared_resources=("src/stores/data-store.ts",),
            coordination_strategy="file_lock",
            line=19,
        ),
    )


def test_unquoted_scalars_stay_text() -> None:
    plan = parse_plan(
        dag(
            """
            dag:
              nodes:
                - id: 1.1
                - id: 1.10
                  depends_on: [1.1]
                - id: 1.2
                  depends_on: 1.10
                  phase: 2026-11-27
                  name: 010
                - id: 1e3
                  name: yes
                  type: null
                  depends_on: [0x1F]
                - id: 0x1F
            """
        )
    )
    assert plan.ids == ("1.1", "1.10", "1.2", "1e3", "0x1F")
    assert plan.node("1.10").depends_on == ("1.1",)
    assert plan.node("1.2").depends_on == ("1.10",)
    assert plan.node("1.2").phase == "2026-11-27"
    assert plan.node("1.2").name == "010"
    # A YAML boolean or null is still the text written where text is wanted.
    assert plan.node("1e3").name == "yes"
    assert plan.node("1e3").type == "code"


def test_defaults() -> None:
    node = parse_plan(dag("dag:\n  nodes:\n    - id: a\n")).node("a")
    assert (node.name, node.type, node.files, node.depends_on) == ("a", "code", (), ())
    assert (node.estimated_duration, node.phase, node.acceptance) == (None, None, ())
    assert (node.worker, node.timeout, node.extra) == (None, None, {})


def test_single_values_are_accepted_for_lists() -> None:
    plan = parse_plan(
        dag(
            """
            dag:
              nodes:
                - id: "1"
                - id: "2"
                - id: "3"
                  files: src/one file.py
                  depends_on: 1, 2
                - id: "4"
                  depends_on: 3
                - id: "5"
                  depends_on: ["1", "1", "2 3"]
            """
        )
    )
    assert plan.node("3").files == ("src/one file.py",)
    assert plan.node("3").depends_on == ("1", "2")
    assert plan.node("4").depends_on == ("3",)
    assert plan.node("5").depends_on == ("1", "2", "3")


def test_acceptance_worker_timeout_and_unknown_keys() -> None:
    plan = parse_plan(
        dag(
            """
            dag:
              nodes:
                - id: a
                  acceptance: "the store exists"
                  worker: "claude -p @{prompt_file}"
                  timeout: 45m
                  owner: alice
                  retries: 2
                  notes: {ratio: 1.10, nested: [1.2, true]}
                - id: b
                  acceptance:
                    - "prose"
                    - {run: "pytest -q", timeout: 5m}
                    - exists: [src/a.py, src/b.py]
                    - {contains: src/a.py, pattern: "def login", limit: 1.10}
                - id: c
                  acceptance: {event: TASK_COMPLETE}
            """
        )
    )
    a, b, c = plan.nodes
    assert a.acceptance == ("the store exists",)
    assert a.worker == "claude -p @{prompt_file}"
    assert a.timeout == 2700.0
    assert a.extra == {
        "owner": "alice",
        "retries": "2",
        "notes": {"ratio": "1.10", "nested": ["1.2", True]},
    }
    assert b.acceptance == (
        "prose",
        {"run": "pytest -q", "timeout": "5m"},
        {"exists": ["src/a.py", "src/b.py"]},
        {"contains": "src/a.py", "pattern": "def login", "limit": "1.10"},
    )
    assert c.acceptance == ({"event": "TASK_COMPLETE"},)


def test_merge_keys_and_anchors() -> None:
    plan = parse_plan(
        dag(
            """
            dag:
              nodes:
                - &base
                  id: a
                  type: ui
                  files: [shared.css]
                - <<: *base
                  id: b
                  depends_on: [a]
            """
        )
    )
    assert plan.node("b").type == "ui"
    assert plan.node("b").files == ("shared.css",)
    assert plan.node("b").depends_on == ("a",)


def test_groups_are_optional_and_may_sit_beside_dag() -> None:
    assert parse_plan(dag("dag:\n  nodes:\n    - id: a\n")).groups == ()
    plan = parse_plan(
        dag(
            """
            dag:
              nodes:
                - id: a
            parallel_groups:
              - id: g
                tasks: a
                conflict_free: "false"
                extra_key: 1.5
            """
        )
    )
    assert plan.groups == (
        Group(id="g", tasks=("a",), conflict_free=False, line=8, extra={"extra_key": "1.5"}),
    )


def test_other_top_level_keys_are_ignored() -> None:
    plan = parse_plan(dag("track: auth\ndag:\n  nodes:\n    - id: a\nversion: 2\n"))
    assert plan.ids == ("a",)
    assert plan.dag_line == 5


# --- finding the block ----------------------------------------------------------------


def test_block_inside_a_markdown_fence_after_an_html_comment() -> None:
    text = md(
        """
        ```markdown
        # Implementation plan

        <!-- conductor: dag -->
        ```yaml
        dag:
          nodes:
            - id: a
            - id: b
              depends_on: [a]
        ```

        - [ ] Task a: do it <!-- deps: none -->
        ```
        """
    )
    plan = parse_plan(text)
    assert plan.ids == ("a", "b")
    assert plan.dag_line == 6
    assert plan.node("b").line == 9


def test_unlabelled_block_inside_a_markdown_fence() -> None:
    text = md(
        """
        ```markdown
        Some text.
        ```
        dag:
          nodes: [{id: a}]
        ```
        ```
        """
    )
    assert parse_plan(text).ids == ("a",)


def test_longer_outer_fence_and_other_blocks_inside_it() -> None:
    text = md(
        """
        ````md
        ```python
        dag = {"not": "this"}
        ```
        ```
        dag:
          nodes: [{id: inner}]
        ```
        ````
        """
    )
    assert parse_plan(text).ids == ("inner",)


@pytest.mark.parametrize("opener", ["```yaml", "```yml", "```", "~~~yaml", "```YAML title=dag"])
def test_fence_labels(opener: str) -> None:
    closer = opener[:3]
    text = f"intro\n{opener}\ndag:\n  nodes: [{{id: a}}]\n{closer}\n"
    assert parse_plan(text).dag_line == 3


def test_indented_block_in_a_list_item() -> None:
    text = "- the DAG:\n\n    ```yaml\n    dag:\n      nodes:\n        - id: a\n    ```\n"
    plan = parse_plan(text)
    assert plan.ids == ("a",)
    assert plan.node("a").line == 6


def test_fences_of_other_languages_and_other_yaml_are_ignored() -> None:
    text = md(
        """
        ```python
        dag: 1
        ```
        ```yaml
        config: {a: 1}
        ```
        ```
        echo "shell: [unbalanced"
        ```
        ```yaml
        dag:
          nodes: [{id: a}]
        ```
        """
    )
    assert parse_plan(text).ids == ("a",)


def test_a_commented_out_dag_is_not_a_second_dag() -> None:
    text = md(
        """
        <!--
        ```yaml
        dag: {nodes: [{id: old}]}
        ```
        -->
        ```yaml
        dag: {nodes: [{id: new}]}
        ```
        """
    )
    assert parse_plan(text).ids == ("new",)


def test_crlf_line_endings_keep_line_numbers() -> None:
    text = "# P\r\n\r\n```yaml\r\ndag:\r\n  nodes:\r\n    - id: a\r\n```\r\n"
    plan = parse_plan(text)
    assert plan.node("a").line == 6


def test_unclosed_block_runs_to_the_end() -> None:
    assert parse_plan("```yaml\ndag:\n  nodes: [{id: a}]\n").ids == ("a",)


# --- problems -------------------------------------------------------------------------


def test_no_dag_block() -> None:
    message = one_problem("# Plan\n\n- [ ] Task 1.1: something\n```yaml\na: 1\n```\n")
    assert message.startswith("no DAG block: expected one fenced ```yaml block")
    assert "top-level `dag:` key" in message


def test_two_dag_blocks_name_both_lines() -> None:
    text = "```yaml\ndag: {nodes: [{id: a}]}\n```\n\ntext\n\n```\ndag: {nodes: [{id: b}]}\n```\n"
    message = one_problem(text)
    assert message.startswith("two DAG blocks, at lines 1 and 7:")


def test_invalid_yaml_line_is_within_plan_md() -> None:
    text = "\n".join(["# Plan", *["prose"] * 9, "```yaml", "dag:", "  nodes: [", "  - x", "```"])
    message = one_problem(text)
    assert message.startswith("line 14: invalid YAML:")
    assert "column" in message


def test_invalid_yaml_tab_indentation() -> None:
    message = one_problem("intro\n\n```yaml\ndag:\n  nodes:\n\t- id: a\n```\n")
    assert message.startswith("line 6: invalid YAML:")


def test_control_character_is_invalid_yaml_with_a_line() -> None:
    message = one_problem("```yaml\ndag:\n  nodes:\n    - id: é\x01\n```\n")
    assert message == "line 4: invalid YAML: character #x0001 is not allowed"


def test_error_str_names_the_file() -> None:
    with pytest.raises(PlanError) as info:
        parse_plan("no dag here", "conductor/tracks/t/plan.md")
    assert str(info.value).startswith("conductor/tracks/t/plan.md: no DAG block")
    assert info.value.path == Path("conductor/tracks/t/plan.md")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("dag: [a, b]\n", "line 4: `dag:` must be a mapping holding `nodes:`, a list of tasks"),
        ("dag:\n  groups: []\n", "line 4: `dag:` has no `nodes:` list of tasks"),
        ("dag:\n  nodes: {a: 1}\n", "line 5: `dag.nodes` must be a list of tasks, not a mapping"),
        ("dag:\n  nodes: []\n", "line 5: `dag.nodes` is empty: there is no task to run"),
        (
            "dag:\n  nodes:\n    - just text\n",
            "line 6: dag.nodes entry #1 must be a mapping, not a scalar",
        ),
    ],
)
def test_dag_of_wrong_shape(body: str, expected: str) -> None:
    assert one_problem(dag(body)) == expected


@pytest.mark.parametrize("id_line", ["name: x", "id:", "id: ~", 'id: ""'])
def test_node_without_id(id_line: str) -> None:
    text = dag(f"dag:\n  nodes:\n    - id: a\n    - {id_line}\n      type: ui\n")
    assert one_problem(text) == "line 7: dag.nodes entry #2 has no id"


def test_id_of_wrong_type() -> None:
    text = dag("dag:\n  nodes:\n    - id: [a, b]\n")
    assert one_problem(text) == "line 6: dag.nodes entry #1: id must be text, not a list"


def test_duplicate_id_names_both_lines() -> None:
    text = dag("dag:\n  nodes:\n    - id: a\n    - id: b\n    - id: a\n")
    assert one_problem(text) == "line 8: duplicate id a (lines 6 and 8)"


@pytest.mark.parametrize("bad_id", ["a b", "a/b", "x\\\\y", "ü", "a:b", "*"])
def test_unsafe_ids(bad_id: str) -> None:
    text = dag(f'dag:\n  nodes:\n    - id: "{bad_id}"\n')
    shown = bad_id.replace("\\\\", "\\")
    assert one_problem(text) == (
        f"line 6: node id {shown!r} is not safe in a file name (TASK_COMPLETE_<id>.event): "
        "use only letters, digits, '.', '_' and '-'"
    )


@pytest.mark.parametrize("bad_id", [".", ".."])
def test_dot_ids(bad_id: str) -> None:
    text = dag(f'dag:\n  nodes:\n    - id: "{bad_id}"\n')
    assert one_problem(text) == (
        f"line 6: node id {bad_id!r} cannot be part of a file name (TASK_COMPLETE_<id>.event)"
    )


def test_safe_ids_with_dots_dashes_and_underscores() -> None:
    text = dag("dag:\n  nodes:\n    - id: v1.2-rc_3\n    - id: ..a\n")
    assert parse_plan(text).ids == ("v1.2-rc_3", "..a")


def test_too_long_id() -> None:
    text = dag(f"dag:\n  nodes:\n    - id: {'a' * 129}\n")
    assert "129 characters long; at most 128" in one_problem(text)


def test_depends_on_naming_no_node() -> None:
    text = dag("dag:\n  nodes:\n    - id: a\n    - id: b\n      depends_on: [a, 9.9]\n")
    assert one_problem(text) == "line 8: node b depends on 9.9, which is not a node in the plan"


def test_self_dependency() -> None:
    text = dag("dag:\n  nodes:\n    - id: a\n      depends_on: a\n")
    assert one_problem(text) == "line 7: node a depends on itself"


def test_cycle() -> None:
    text = dag(
        """
        dag:
          nodes:
            - id: "1.1"
              depends_on: ["1.3"]
            - id: "1.2"
            - id: "1.3"
              depends_on: ["1.2", "1.1"]
        """
    )
    assert one_problem(text) == "line 6: cycle: 1.1 -> 1.3 -> 1.1"


@pytest.mark.parametrize(
    "value", ["{a: b}", "[[a]]", "[{id: a}]", "[a, ~]"], ids=["map", "nested", "maps", "null"]
)
def test_depends_on_of_wrong_shape(value: str) -> None:
    text = dag(f"dag:\n  nodes:\n    - id: a\n    - id: b\n      depends_on: {value}\n")
    assert one_problem(text) == "line 8: node b: depends_on must be a list of ids"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "[a]", "name must be text, not a list"),
        ("type", "{a: 1}", "type must be text, not a mapping"),
        ("files", "[[a]]", "files must be a path or a list of paths"),
        ("worker", "[x]", "worker must be text, not a list"),
        ("phase", "[1]", "phase must be text, not a list"),
        ("acceptance", "[[a]]", "each acceptance entry must be text or a mapping, not a list"),
        ("acceptance", "[~]", "each acceptance entry must be text or a mapping, not a null"),
    ],
)
def test_fields_of_wrong_type(field: str, value: str, expected: str) -> None:
    text = dag(f"dag:\n  nodes:\n    - id: n1\n      {field}: {value}\n")
    assert one_problem(text) == f"line 7: node n1: {expected}"


@pytest.mark.parametrize("field", ["estimated_duration", "timeout"])
def test_bad_durations(field: str) -> None:
    text = dag(f"dag:\n  nodes:\n    - id: n1\n      {field}: soon\n")
    message = one_problem(text)
    assert message.startswith(f"line 7: node n1: {field}: invalid duration 'soon'")


def test_repeated_key_in_a_node() -> None:
    text = dag("dag:\n  nodes:\n    - id: a\n      type: ui\n      type: docs\n")
    assert one_problem(text) == "line 8: node a: key type appears twice (lines 7 and 8)"


def test_value_that_cannot_be_constructed() -> None:
    text = dag("dag:\n  nodes:\n    - id: a\n      when: !!timestamp 2026-99-99\n")
    message = one_problem(text)
    assert message.startswith("line 7: node a: when: cannot read value:")


def test_group_problems() -> None:
    text = dag(
        """
        dag:
          nodes:
            - id: a
          parallel_groups:
            - id: g1
              tasks: [a, zz]
            - id: g1
              tasks: []
              conflict_free: maybe
            - tasks: [a]
            - just text
        """
    )
    assert problems(text) == [
        "line 10: duplicate parallel group id g1 (lines 8 and 10)",
        "line 12: parallel group g1: conflict_free must be true or false, not maybe",
        "line 13: parallel_groups entry #3 has no id",
        "line 14: parallel_groups entry #4 must be a mapping, not a scalar",
    ]


def test_a_group_naming_no_node_is_a_warning_and_the_task_is_left_out() -> None:
    # The orchestrator's dispatcher skips such a task; superpowers' own planner template
    # names one, so refusing the plan would refuse plans the orchestrator runs.
    text = dag(
        """
        dag:
          nodes:
            - id: a
            - id: b
          parallel_groups:
            - id: g
              tasks: [a, zz, b]
        """
    )
    plan = parse_plan(text)
    assert plan.groups[0].tasks == ("a", "b")
    assert [str(w) for w in plan.warnings] == [
        "line 10: parallel group g names zz, which is not a node in the plan; "
        "it is left out of the group"
    ]


def test_groups_of_wrong_shape() -> None:
    text = dag("dag:\n  nodes: [{id: a}]\n  parallel_groups: {g: [a]}\n")
    assert one_problem(text) == "line 6: `parallel_groups` must be a list of groups, not a mapping"


def test_every_problem_is_reported_together_in_line_order() -> None:
    text = dag(
        """
        dag:
          nodes:
            - id: a
              depends_on: [b]
            - id: b
              depends_on: [a, missing]
              estimated_duration: forever
            - id: "bad id"
            - id: a
          parallel_groups:
            - id: g
              tasks: [nope]
        """
    )
    assert problems(text) == [
        "line 6: cycle: a -> b -> a",
        "line 9: node b depends on missing, which is not a node in the plan",
        "line 10: node b: estimated_duration: invalid duration 'forever': expected e.g. "
        "'30m', '1h30m', '1h 30m', '45s', '1.5h', '500ms' or a number of seconds",
        "line 11: node id 'bad id' is not safe in a file name (TASK_COMPLETE_<id>.event): "
        "use only letters, digits, '.', '_' and '-'",
        "line 12: duplicate id a (lines 6 and 12)",
    ]
    with pytest.raises(PlanError) as info:
        parse_plan(text, "p.md")
    assert str(info.value).startswith("p.md: 5 problems\n  - line 6: cycle: a -> b -> a\n")


def test_plan_problem_str() -> None:
    assert str(PlanProblem("x", 3)) == "line 3: x"
    assert str(PlanProblem("x")) == "x"


# --- load_plan ------------------------------------------------------------------------


def test_load_plan_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plan.md"
    path.write_bytes("\ufeff# Plän\n```yaml\ndag:\n  nodes: [{id: a, name: Café}]\n```\n".encode())
    plan = load_plan(path)
    assert plan.path == path
    assert plan.node("a").name == "Café"
    assert plan.dag_line == 3


def test_load_plan_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "plan.md")
    assert str(info.value) == f"{tmp_path / 'plan.md'}: plan file not found"


def test_load_plan_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plan.md"
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(PlanError, match="not valid UTF-8"):
        load_plan(path)


def test_load_plan_directory(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan file"):
        load_plan(tmp_path)


# --- properties -----------------------------------------------------------------------

# The line breaks YAML counts; plan.md lines are counted the same way.
LINE_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")

YAMLISH_LINES = [
    "dag:",
    "  nodes:",
    "    - id: 1.1",
    "    - id: a",
    '    - id: "x y"',
    "      depends_on: [1.1, a]",
    "      depends_on: a",
    "      depends_on: {a: b}",
    "      estimated_duration: 30m",
    "      estimated_duration: nope",
    "      acceptance: [{run: x}, y, [z]]",
    "      files: [[a]]",
    "      <<: *x",
    "    - &x {id: b}",
    "  parallel_groups:",
    "    - {id: g, tasks: [a, q], conflict_free: maybe}",
    "  parallel_groups: 3",
    "  nodes: [",
    "\t- id: tab",
    "    - !!int x",
    "    - when: !!timestamp 2026-99-99",
    "    - ? [a]",
    "      : b",
    "---",
    "```yaml",
    "```",
    "````markdown",
    "~~~",
    "<!--",
    "-->",
    "",
    "prose",
]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_garbage_text_raises_only_plan_error(text: str) -> None:
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        assert exc.problems
        return
    assert isinstance(plan, Plan)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(YAMLISH_LINES), st.text(max_size=20)), max_size=25),
    st.booleans(),
)
def test_yamlish_text_raises_only_plan_error(lines: list[str], fenced: bool) -> None:
    body = "\n".join(lines)
    text = f"intro\n```yaml\ndag:\n{body}\n```\n" if fenced else body
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        assert exc.problems
        line_count = len(LINE_BREAKS.split(text))
        for problem in exc.problems:
            assert problem.line is None or 1 <= problem.line <= line_count
        return
    assert isinstance(plan, Plan)


ID_TEXT = st.one_of(
    st.from_regex(r"[1-9][0-9]?\.[0-9]{1,2}", fullmatch=True),  # 1.10 must stay 1.10
    st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True).filter(lambda s: s != "null"),
    st.sampled_from(["yes", "no", "on", "0x1F", "1e3", "010", "2026-01-01"]),
)


@st.composite
def plan_texts(draw: st.DrawFn) -> tuple[str, dict[str, tuple[str, ...]]]:
    ids = draw(st.lists(ID_TEXT, min_size=1, max_size=8, unique=True))
    deps = {
        node: tuple(draw(st.lists(st.sampled_from(ids[:i]), unique=True))) if i else ()
        for i, node in enumerate(ids)
    }
    rows = []
    for node, ds in deps.items():
        rows.append(f"    - id: {node}")
        style = draw(st.sampled_from(["flow", "block", "scalar", "absent"]))
        if style == "flow" or (style == "scalar" and len(ds) != 1):
            rows.append(f"      depends_on: [{', '.join(ds)}]")
        elif style == "block":
            rows.append("      depends_on:" + (" []" if not ds else ""))
            rows += [f"        - {d}" for d in ds]
        elif style == "scalar":
            rows.append(f"      depends_on: {ds[0]}")
        elif ds:
            rows.append(f"      depends_on: [{', '.join(ds)}]")
    prose = draw(st.sampled_from(["", "# Plan\n\n", "<!-- dag -->\n"]))
    text = prose + "```yaml\ndag:\n  nodes:\n" + "\n".join(rows) + "\n```\n"
    if draw(st.booleans()):
        text = "```markdown\n" + text + "```\n"
    return text, deps


@settings(max_examples=100, deadline=None)
@given(plan_texts())
def test_valid_plans_round_trip(case: tuple[str, dict[str, tuple[str, ...]]]) -> None:
    text, deps = case
    plan = parse_plan(text)
    assert plan.deps == deps
    assert list(plan.deps) == list(deps)


def test_inline_triple_backticks_are_not_a_fence() -> None:
    text = "Write ```dag:``` in a block:\n```yaml\ndag: {nodes: [{id: a}]}\n```\n"
    assert parse_plan(text).dag_line == 3


def test_yaml_error_at_end_of_an_unclosed_block_names_a_line_of_the_file() -> None:
    with pytest.raises(PlanError) as info:
        parse_plan("```yaml\ndag:\n~~~")
    assert [p.line for p in info.value.problems] == [3]
