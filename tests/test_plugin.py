"""Plugin behaviour through the real command line (pytester), in-process runs (-n 0)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PlanWriter

DIAMOND = """
dag:
  nodes:
    - id: "1.1"
      name: "Base"
      files: ["a.txt"]
      acceptance: [{exists: "a.txt"}]
    - id: "1.2"
      name: "Left"
      type: "docs"
      depends_on: ["1.1"]
      acceptance: [{contains: "a.txt", pattern: "left"}]
    - id: "1.3"
      name: "Right"
      depends_on: "1.1"
      acceptance: [{exists: "a.txt"}]
    - id: "1.4"
      name: "Join"
      depends_on: ["1.2", "1.3"]
      acceptance: [{exists: "a.txt"}]
    - id: "1.10"
      name: "Independent"
      acceptance: [{exists: "a.txt"}]
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-n", "0", "-p", "no:randomly", *args)


@pytest.fixture
def diamond(pytester: pytest.Pytester, write_plan: PlanWriter) -> pytest.Pytester:
    write_plan(DIAMOND)
    (pytester.path / "a.txt").write_text("left\n")
    return pytester


def test_without_track_the_plugin_does_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_track_runs_only_its_nodes(diamond: pytest.Pytester) -> None:
    diamond.makepyfile("def test_users_own(): pass")
    result = run(diamond, "--conductor-track=t", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.no_fnmatch_line("*test_users_own*")
    result.stdout.fnmatch_lines(["*conductor/tracks/t/plan.md::1.10 PASSED*"])
    assert result.ret == 0


def test_paths_given_run_both(diamond: pytest.Pytester) -> None:
    diamond.makepyfile(test_mine="def test_users_own(): pass")
    result = run(diamond, "--conductor-track=t", "test_mine.py")
    result.assert_outcomes(passed=6)


def test_unquoted_110_stays_an_id(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: 1.1
              acceptance: [{exists: "a"}]
            - id: 1.10
              depends_on: 1.1
              acceptance: [{exists: "a"}]
        """
    )
    (pytester.path / "a").touch()
    result = run(pytester, "--conductor-track=t", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*plan.md::1.1", "*plan.md::1.10"])


def test_failure_blocks_dependents_and_independents_run(
    diamond: pytest.Pytester,
) -> None:
    (diamond.path / "a.txt").write_text("no match here\n")
    result = run(diamond, "--conductor-track=t", "-rs")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*contains: a.txt*",
            "*SKIPPED*blocked: dependency 1.2 failed*",
        ]
    )
    assert result.ret == 1


def test_blocked_chain_names_the_failed_ancestor(
    pytester: pytest.Pytester, example: Callable[[str], Path]
) -> None:
    example("failing")
    result = run(pytester, "--conductor-track=failing", "-rs")
    result.assert_outcomes(passed=3, failed=1, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] conductor/tracks/failing/plan.md*: blocked: dependency 1.2 failed",
            "SKIPPED [[]1[]] */plan.md*: blocked: dependency 1.2 failed (via 1.4)",
        ]
    )


def test_quickstart_example_passes(
    pytester: pytest.Pytester, example: Callable[[str], Path]
) -> None:
    example("quickstart")
    result = run(pytester, "--conductor-track=quickstart", "-v")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            "*conductor: acceptance notes*",
            "3.1: prose: *The greeter reads well*not machine-checked*",
        ]
    )
    assert result.stdout.str().count("reads well") == 1


def test_order_is_dependency_order_longest_path_first(diamond: pytest.Pytester) -> None:
    result = run(diamond, "--conductor-track=t", "--collect-only", "-q")
    ids = [line.rpartition("::")[2] for line in result.outlines if "plan.md::" in line]
    # 1.1 heads the longest path; the lone 1.10 has the shortest remaining path and goes last.
    assert ids == ["1.1", "1.2", "1.3", "1.4", "1.10"]


def test_verbose_shows_node_name(diamond: pytest.Pytester) -> None:
    result = run(diamond, "--conductor-track=t", "-v")
    result.stdout.fnmatch_lines(["*plan.md::1.4 PASSED (Join)*"])


@pytest.mark.parametrize(
    ("expr", "selected"),
    [("1.3", ["1.3"]), ("docs", ["1.2"]), ("Join", ["1.4"])],
)
def test_k_selects_by_id_type_and_name(
    diamond: pytest.Pytester, expr: str, selected: list[str]
) -> None:
    result = run(diamond, "--conductor-track=t", "--collect-only", "-q", "-k", expr)
    ids = [line.rpartition("::")[2] for line in result.outlines if "plan.md::" in line]
    assert ids == selected


def test_deselected_dependency_without_history_blocks(diamond: pytest.Pytester) -> None:
    result = run(diamond, "--conductor-track=t", "-k", "1.2", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*blocked: dependency 1.1 not selected (no recorded outcome)*"])


def test_deselected_dependency_that_last_passed_is_satisfied(diamond: pytest.Pytester) -> None:
    assert run(diamond, "--conductor-track=t").ret == 0
    result = run(diamond, "--conductor-track=t", "-k", "1.4")
    result.assert_outcomes(passed=1)


def test_last_failed_reruns_only_the_failed_and_blocked(diamond: pytest.Pytester) -> None:
    (diamond.path / "a.txt").write_text("nothing\n")
    assert run(diamond, "--conductor-track=t").ret == 1
    (diamond.path / "a.txt").write_text("left\n")
    result = run(diamond, "--conductor-track=t", "--lf", "-v")
    result.stdout.fnmatch_lines(["*plan.md::1.2 PASSED*", "*plan.md::1.4 PASSED*"])
    result.stdout.no_fnmatch_line("*plan.md::1.3 *")
    result.assert_outcomes(passed=2)


def test_plan_outside_given_paths_is_collected(diamond: pytest.Pytester) -> None:
    tests = diamond.mkdir("mytests")
    (tests / "test_a.py").write_text("def test_a(): pass\n")
    result = run(diamond, "--conductor-track=t", "mytests", "-k", "Base or test_a")
    result.assert_outcomes(passed=2)


def test_extension_kind_through_hooks(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    pytester.makeconftest(
        """
        from pytest_conductor.acceptance import CheckResult

        def pytest_conductor_criterion_kinds():
            return ["answer"]

        def pytest_conductor_check_criterion(criterion, context):
            if criterion.kind != "answer":
                return None
            ok = criterion.spec["answer"] == "42"
            return CheckResult(criterion, ok, expected="42", seen=str(criterion.spec["answer"]))
        """
    )
    write_plan(
        """
        dag:
          nodes:
            - {id: good, acceptance: [{answer: 42}]}
            - {id: bad, acceptance: [{answer: 41}]}
        """
    )
    result = run(pytester, "--conductor-track=t")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*expected*42*", "*seen*41*"])


def test_unknown_kind_is_a_usage_error_listing_known_kinds(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan("dag:\n  nodes:\n    - {id: a, acceptance: [{http: 'x'}]}\n")
    result = run(pytester, "--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: conductor:*node a: acceptance:*http*known kinds*"])


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        pytest.param("# a plan without a DAG\n", "*no DAG block*", id="no-dag-block"),
        pytest.param(
            "```yaml\ndag:\n  nodes: [{id: a}]\n```\n\n```yaml\ndag:\n  nodes: [{id: b}]\n```\n",
            "*two DAG blocks, at lines 1 and 6*",
            id="two-dag-blocks",
        ),
        pytest.param(
            "# Plan\n\n```yaml\ndag:\n  nodes: [\n```\n", "*line 5: invalid YAML*", id="yaml"
        ),
        pytest.param(
            "dag:\n  nodes:\n    - {id: a, depends_on: [b]}\n    - {id: b, depends_on: [a]}\n",
            "*cycle: a -> b -> a*",
            id="cycle",
        ),
        pytest.param(
            "dag:\n  nodes:\n    - {id: a, depends_on: [zz]}\n",
            "*node a depends on zz, which is not a node in the plan*",
            id="unknown-dependency",
        ),
        pytest.param(
            "dag:\n  nodes:\n    - {id: a}\n    - {id: a}\n",
            "*duplicate id a (lines 6 and 7)*",
            id="duplicate-id",
        ),
        pytest.param("dag:\n  nodes:\n    - {id: ../x}\n", "*'../x' is not safe*", id="id-dotdot"),
        pytest.param("dag:\n  nodes:\n    - {id: a/b}\n", "*'a/b' is not safe*", id="id-slash"),
        pytest.param("dag:\n  nodes:\n    - {id: 'a b'}\n", "*'a b' is not safe*", id="id-space"),
        pytest.param("dag:\n  nodes:\n    - {id: ''}\n", "*has no id*", id="id-empty"),
        pytest.param("dag:\n  nodes:\n    - {name: x}\n", "*has no id*", id="no-id"),
        pytest.param(
            "dag:\n  nodes:\n    - {id: a, depends_on: {b: 1}}\n",
            "*node a: depends_on must be a list of ids*",
            id="wrong-type",
        ),
    ],
)
def test_plan_errors_are_usage_errors_without_traceback(
    pytester: pytest.Pytester, write_plan: PlanWriter, plan: str, message: str
) -> None:
    write_plan(plan, raw=plan.startswith(("#", "```")))
    result = run(pytester, "--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: conductor:{message}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_group_naming_no_node_warns_naming_group_task_and_line(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan("dag:\n  nodes: [{id: a}]\n  parallel_groups:\n    - {id: g, tasks: [a, nope]}\n")
    result = run(pytester, "--conductor-track=t", "-W", "default::pytest.PytestWarning")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*ConductorWarning: conductor: plan.md line 7: parallel group g names nope, "
            "which is not a node in the plan; it is left out of the group*"
        ]
    )
    result.assert_outcomes(passed=1)


def test_missing_track_lists_existing_tracks(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(DIAMOND, track="auth_1")
    write_plan(DIAMOND, track="billing_2")
    result = run(pytester, "--conductor-track=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no track 'nope'*tracks that exist: auth_1, billing_2*"])


def test_missing_plan_md(pytester: pytest.Pytester) -> None:
    (pytester.path / "conductor" / "tracks" / "t").mkdir(parents=True)
    result = run(pytester, "--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*track 't' has no plan.md*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conductor-max-workers=0"], "*--conductor-max-workers='0'*"),
        (["--conductor-command-timeout=soon"], "*--conductor-command-timeout='soon'*"),
        (["--conductor-root=does-not-exist"], "*--conductor-root='does-not-exist'*"),
        (
            ["--conductor-isolation=branch"],
            "*--conductor-isolation='branch': expected none or worktree*",
        ),
    ],
)
def test_bad_option_values_name_option_and_value(
    diamond: pytest.Pytester, args: list[str], message: str
) -> None:
    result = run(diamond, "--conductor-track=t", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_ini_value_names_the_ini_key(diamond: pytest.Pytester) -> None:
    diamond.makeini("[pytest]\nconductor_max_workers = many\n")
    result = run(diamond, "--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini conductor_max_workers*'many'*"])


def test_conductor_root_option(pytester: pytest.Pytester, example: Callable[[str], Path]) -> None:
    project = pytester.mkdir("project")
    example("failing")
    for entry in ("conductor", "src"):
        (pytester.path / entry).rename(project / entry)
    result = run(pytester, "--conductor-track=failing", "--conductor-root=project")
    result.assert_outcomes(passed=3, failed=1, skipped=2)


def test_every_problem_of_a_plan_is_reported_at_once(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan("dag:\n  nodes:\n    - {id: a, depends_on: [zz]}\n    - {id: a}\n    - {id: ../x}\n")
    result = run(pytester, "--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: conductor:*plan.md: 3 problems",
            "  - line 6: node a depends on zz*",
            "  - line 7: duplicate id a*",
            "  - line 8: node id '../x' is not safe*",
        ]
    )


def test_graph_and_acceptance_problems_are_reported_in_one_round(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    """A cycle or an unknown id does not hide a mistyped criterion: all come at once."""
    write_plan(
        """
        dag:
          nodes:
            - id: a
              depends_on: [b]
              acceptance:
                - exist: src/a.py
            - id: b
              depends_on: [a, zz]
              acceptance:
                - run: "make test"
                  timout: 5m
        """
    )
    result = run(pytester, "--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: conductor:*plan.md: 4 problems",
            "  - line 6: cycle: a -> b -> a",
            "  - line 6: node a: acceptance: unknown acceptance kind(s) 'exist'*",
            "  - line 10: node b: acceptance: run: unexpected key(s) 'timout'*",
            "  - line 11: node b depends on zz, which is not a node in the plan",
        ]
    )


def test_a_pytest_criterion_does_not_run_the_track_again(
    pytester: pytest.Pytester, write_plan: PlanWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI often sets PYTEST_ADDOPTS; the nested run inherits it and must not recurse.
    monkeypatch.setenv("PYTEST_ADDOPTS", "--conductor-track=t -p no:cacheprovider")
    pytester.makepyfile(test_unit="def test_unit(): pass")
    write_plan(
        "dag:\n  nodes:\n    - {id: a, acceptance: [{pytest: 'test_unit.py -q', timeout: 60s}]}\n"
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)


def test_runs_with_xdist_disabled(diamond: pytest.Pytester) -> None:
    (diamond.path / "a.txt").write_text("no match\n")
    result = diamond.runpytest("-p", "no:xdist", "--conductor-track=t", "-rs")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*blocked: dependency 1.2 failed*"])


def test_without_a_track_the_plugin_imports_only_its_light_modules() -> None:
    # Every pytest run of everyone who installs the plugin imports plugin.py: the plan
    # reader, the bus, the scheduler and their dependencies wait for --conductor-track.
    code = (
        "import sys, pytest_conductor.plugin; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('pytest_conductor')"
        " or m in ('yaml', 'filelock'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "yaml" not in out and "filelock" not in out
    assert (
        "pytest_conductor.plan.reader" not in out
        and "pytest_conductor.scheduling.scheduler" not in out
    )
    assert "pytest_conductor.plugin" in out


def test_exitfirst_in_process_reports_the_nodes_it_never_ran(diamond: pytest.Pytester) -> None:
    (diamond.path / "a.txt").write_text("no match\n")
    xml = diamond.path / "report.xml"
    result = run(diamond, "--conductor-track=t", "-x", "-rs", f"--junitxml={xml}")
    result.assert_outcomes(passed=1, failed=1, skipped=3)
    result.stdout.fnmatch_lines(["*not run: stopped after the first failure (-x/--maxfail=1)*"])
    assert xml.read_text().count("<testcase ") == 5
