"""The exit statuses a CI job gates on, through the real command line (docs/running.md,
"Exit status"): 0 every node verified, 1 a node failed or was blocked, 2 interrupted,
4 a usage or plan error, 5 nothing selected. The verdict always agrees."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PlanWriter

pytestmark = pytest.mark.slow

FAST = ("-p", "no:hypothesispytest", "-p", "no:randomly")

Example = Callable[[str], Path]


def verdict_of(result: pytest.RunResult) -> dict[str, object]:
    verdict: dict[str, object] = json.loads(result.outlines[-1])
    return verdict


def test_0_when_every_node_passed(pytester: pytest.Pytester, example: Example) -> None:
    example("quickstart")
    result = pytester.runpytest_subprocess("--conductor-track=quickstart", "-n", "0", *FAST)
    assert result.ret == 0
    assert verdict_of(result)["verdict"] == "PASS"


def test_1_when_a_node_failed(pytester: pytest.Pytester, example: Example) -> None:
    example("failing")
    result = pytester.runpytest_subprocess("--conductor-track=failing", "-n", "0", *FAST)
    assert result.ret == 1
    assert verdict_of(result)["verdict"] == "FAIL"


@pytest.mark.parametrize("mode", [("-n", "0"), ()], ids=["in-process", "xdist"])
def test_1_when_nodes_are_blocked_by_a_deselected_dependency(
    pytester: pytest.Pytester, example: Example, mode: tuple[str, ...]
) -> None:
    """Nothing failed in this run, but 1.2 never passed: its dependents are blocked."""
    example("failing")
    result = pytester.runpytest_subprocess(
        "--conductor-track=failing", "-k", "not 1.2", "-rs", *mode, *FAST
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*blocked: dependency 1.2 not selected (no recorded outcome)*"])
    verdict = verdict_of(result)
    assert verdict["verdict"] == "FAIL"
    assert verdict["summary"] == "Track failing: 3 of 5 nodes passed; 2 blocked (1.4, 2.1)."


def test_0_when_a_deselected_dependency_passed_last_time(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - {id: a, acceptance: [{exists: a.txt}]}
            - {id: b, depends_on: [a], acceptance: [{exists: a.txt}]}
        """
    )
    (pytester.path / "a.txt").write_text("a")
    first = pytester.runpytest_subprocess("--conductor-track=t", "-n", "0", *FAST)
    assert first.ret == 0  # the cache now records that a passed
    again = pytester.runpytest_subprocess("--conductor-track=t", "-n", "0", "-k", "b", *FAST)
    assert again.ret == 0
    again.assert_outcomes(passed=1, deselected=1)
    assert verdict_of(again)["verdict"] == "PASS"


def test_2_when_interrupted(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: a
              acceptance:
                - run: "python -c 'import os,signal; os.kill(os.getppid(), signal.SIGINT)'"
            - {id: b, depends_on: [a], acceptance: [{exists: conductor/tracks/t/plan.md}]}
        """
    )
    result = pytester.runpytest_subprocess("--conductor-track=t", "-n", "0", *FAST)
    assert result.ret == 2
    assert verdict_of(result)["verdict"] == "FAIL"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--conductor-track=t",), "*cycle*a -> b -> a*"),
        (("--conductor-track=nope",), "*no track 'nope'*tracks that exist: t*"),
        (("--conductor-track=t", "--conductor-max-workers=0"), "*expected a whole number*"),
    ],
    ids=["plan", "track", "option"],
)
def test_4_on_a_usage_or_plan_error(
    pytester: pytest.Pytester, write_plan: PlanWriter, args: tuple[str, ...], message: str
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - {id: a, depends_on: [b]}
            - {id: b, depends_on: [a]}
        """
    )
    result = pytester.runpytest_subprocess(*args, *FAST)
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


def test_5_when_no_node_is_selected(pytester: pytest.Pytester, example: Example) -> None:
    example("quickstart")
    result = pytester.runpytest_subprocess(
        "--conductor-track=quickstart", "-k", "no_such_node", *FAST
    )
    assert result.ret == 5
    verdict = verdict_of(result)
    assert verdict["verdict"] == "FAIL"
    assert verdict["summary"] == "Track quickstart: no node was selected, so none ran."


def test_own_tests_failing_beside_a_passing_track_exit_1(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    """The verdict speaks for the track's nodes, the exit status for the whole run."""
    write_plan("dag:\n  nodes:\n    - {id: a, acceptance: [{exists: conductor}]}\n")
    pytester.makepyfile(test_own="def test_fails():\n    assert False\n")
    result = pytester.runpytest_subprocess("--conductor-track=t", "-n", "0", "test_own.py", *FAST)
    assert result.ret == 1
    assert verdict_of(result)["verdict"] == "PASS"
