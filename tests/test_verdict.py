"""The verdict: PASS iff a node ran and none failed or was blocked; one line of JSON."""

from __future__ import annotations

import json

import pytest

from pytest_conductor.report.verdict import FAIL, PASS, Verdict, decide, exit_status


def test_all_passed_is_pass() -> None:
    verdict = decide(["1.1", "1.2"], {"1.1": "passed", "1.2": "passed"}, track="t", files_changed=3)
    assert verdict == Verdict(PASS, "Track t: 2 of 2 nodes passed.", 3)
    assert verdict.passed


@pytest.mark.parametrize("bad", ["failed", "blocked"])
def test_a_failed_or_blocked_node_fails_the_run(bad: str) -> None:
    verdict = decide(["1.1", "1.2"], {"1.1": "passed", "1.2": bad}, track="t", files_changed=0)
    assert verdict.verdict == FAIL
    assert f"1 {bad} (1.2)" in verdict.summary


def test_summary_names_failed_blocked_and_not_run_nodes() -> None:
    statuses = {"a": "passed", "b": "failed", "c": "blocked", "d": "skipped"}
    verdict = decide(["a", "b", "c", "d", "e"], statuses, track="t", files_changed=0)
    assert verdict.summary == (
        "Track t: 1 of 5 nodes passed; 1 failed (b), 1 blocked (c), 2 not run (d, e)."
    )


def test_no_node_ran_is_fail() -> None:
    verdict = decide(["a"], {"a": "skipped"}, track="t", files_changed=0)
    assert verdict.verdict == FAIL
    assert verdict.summary == "Track t: no node ran; 1 not run (a)."
    nothing = decide([], {}, track="t", files_changed=0)
    assert nothing.verdict == FAIL
    assert "no node was selected" in nothing.summary


def test_interrupted_run_fails_even_if_all_that_ran_passed() -> None:
    verdict = decide(["a", "b"], {"a": "passed"}, track="t", files_changed=1, interrupted=True)
    assert verdict.verdict == FAIL
    assert verdict.summary == "Track t: interrupted after 1 of 2 nodes passed; 1 not run (b)."


def test_long_id_lists_are_cut() -> None:
    ids = [f"n{i}" for i in range(8)]
    verdict = decide(ids, dict.fromkeys(ids, "failed"), track="t", files_changed=0)
    assert "8 failed (n0, n1, n2, n3, n4 and 3 more)" in verdict.summary


def test_line_is_one_json_object_in_the_documented_key_order() -> None:
    verdict = Verdict(FAIL, 'a "quoted"\nsummary', 2)
    line = verdict.line()
    assert "\n" not in line
    assert list(json.loads(line)) == ["verdict", "summary", "files_changed"]
    assert json.loads(line) == {
        "verdict": "FAIL",
        "summary": 'a "quoted"\nsummary',
        "files_changed": 2,
    }
    assert line.startswith('{"verdict": "FAIL", "summary": ')


def test_a_write_that_failed_fails_the_verdict_and_says_which() -> None:
    verdict = decide(
        ["1.1"],
        {"1.1": "passed"},
        track="t",
        files_changed=0,
        not_written=["metadata.json not updated: lock held for 30s", "verdict.json not written: x"],
    )
    assert verdict.verdict == "FAIL"
    assert verdict.summary == (
        "Track t: 1 of 1 node passed; not written: metadata.json not updated: "
        "lock held for 30s and 1 more."
    )


def test_under_worktree_isolation_the_summary_names_the_track_branch() -> None:
    v = decide(
        ["a", "b"],
        {"a": "passed", "b": "failed"},
        track="t",
        files_changed=2,
        branch="conductor/t at 1a2b3c4",
    )
    assert (
        v.summary
        == "Track t: 1 of 2 nodes passed; 1 failed (b); the work is on conductor/t at 1a2b3c4."
    )


@pytest.mark.parametrize(
    ("verdict", "selected", "pytest_status", "expected"),
    [
        (PASS, 3, 0, 0),
        (FAIL, 3, 0, 1),  # blocked nodes only: pytest saw skips and would exit 0
        (FAIL, 0, 5, 5),  # nothing selected
        (FAIL, 0, 0, 5),  # only the user's own tests were selected
        (FAIL, 3, 1, 1),
        (FAIL, 3, 2, 2),  # interrupted stays interrupted
        (PASS, 3, 1, 1),  # the user's own tests failed beside a passing track
        (FAIL, 3, 3, 3),
    ],
)
def test_exit_status_agrees_with_the_verdict(
    verdict: str, selected: int, pytest_status: int, expected: int
) -> None:
    decided = Verdict(verdict, "s", 0)
    assert exit_status(decided, nodes_selected=selected, pytest_status=pytest_status) == expected
