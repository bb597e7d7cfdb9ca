"""The conductor terminal summary, from plain data."""

from __future__ import annotations

import time

from pytest_conductor.graph.blocking import NodeOutcome
from pytest_conductor.report.summary import (
    RunFacts,
    blocked_lines,
    blocking_chain,
    collect_only_lines,
    count_line,
    critical_line,
    format_chain,
    slowest,
    summary_lines,
)

# 1.1 -> 1.2 -> 1.4 -> 2.1, 1.3 -> 2.2; 1.2 failed.
DEPS = {
    "1.1": (),
    "1.2": ("1.1",),
    "1.3": (),
    "1.4": ("1.2", "1.3"),
    "2.1": ("1.4",),
    "2.2": ("1.3",),
}
OUTCOMES = {
    "1.1": NodeOutcome("passed"),
    "1.2": NodeOutcome("failed"),
    "1.3": NodeOutcome("passed"),
    "1.4": NodeOutcome("blocked", "1.2", "blocked: dependency 1.2 failed"),
    "2.1": NodeOutcome("blocked", "1.2", "blocked: dependency 1.2 failed (via 1.4)"),
    "2.2": NodeOutcome("passed"),
}
FACTS = RunFacts(
    track="t",
    selected=list(DEPS),
    deps=DEPS,
    outcomes=OUTCOMES,
    durations={"1.1": 1.0, "1.2": 2.0, "1.3": 0.5, "2.2": 4.0},
    wall_time=5.0,
    names={"2.2": "Smoke test"},
)


def test_blocking_chain_walks_back_to_the_failed_node() -> None:
    assert blocking_chain("2.1", DEPS, OUTCOMES) == ["2.1", "1.4", "1.2"]
    assert blocking_chain("1.4", DEPS, OUTCOMES) == ["1.4", "1.2"]
    assert blocking_chain("1.1", DEPS, OUTCOMES) == ["1.1"]


def test_format_chain_names_how_the_root_ended() -> None:
    assert format_chain(["2.1", "1.4", "1.2"], OUTCOMES) == "2.1 <- 1.4 <- 1.2 (failed)"
    deselected = {"2": NodeOutcome("blocked", "1", "blocked: dependency 1 not selected")}
    chain = blocking_chain("2", {"1": (), "2": ("1",)}, deselected)
    assert format_chain(chain, deselected) == "2 <- 1 (not selected)"


def test_chain_with_a_missing_link_still_names_the_root() -> None:
    outcomes = {"c": NodeOutcome("blocked", "a", "blocked: dependency a failed (via b)")}
    assert blocking_chain("c", {"a": (), "b": ("a",), "c": ("b",)}, outcomes) == ["c", "a"]


def test_count_line() -> None:
    assert count_line(FACTS) == "3 passed, 1 failed, 2 blocked"
    assert count_line(FACTS, with_ids=True) == "3 passed, 1 failed (1.2), 2 blocked (1.4, 2.1)"
    partial = RunFacts("t", ["1.1", "1.2"], DEPS, {"1.1": NodeOutcome("passed")})
    assert count_line(partial) == "1 passed, 0 failed, 0 blocked, 1 not run"


def test_critical_line_measures_the_nodes_that_ran() -> None:
    # Ran: 1.1 (1s) -> 1.2 (2s); 1.3 (0.5s) -> 2.2 (4s): the heavier chain is 1.3 -> 2.2.
    assert critical_line(FACTS) == (
        "critical path 1.3 -> 2.2 took 4.5s (measured); "
        "the nodes took 5s from first start to last end, 11% longer"
    )
    same = RunFacts("t", FACTS.selected, DEPS, FACTS.outcomes, FACTS.durations, wall_time=4.5)
    assert str(critical_line(same)).endswith("to last end, as long as the critical path")
    slow = RunFacts("t", FACTS.selected, DEPS, FACTS.outcomes, FACTS.durations, wall_time=13.5)
    assert str(critical_line(slow)).endswith("to last end, 3.0 times as long")
    unmeasured = RunFacts("t", FACTS.selected, DEPS, FACTS.outcomes, FACTS.durations)
    assert critical_line(unmeasured) == "critical path 1.3 -> 2.2 took 4.5s (measured)"
    nothing = RunFacts("t", ["1.4"], DEPS, {"1.4": OUTCOMES["1.4"]})
    assert critical_line(nothing) is None


def test_slowest_keeps_five_longest_first() -> None:
    durations = {str(i): float(i) for i in range(8)}
    assert [t for t, _ in slowest(durations)] == ["7", "6", "5", "4", "3"]


def test_summary_default() -> None:
    assert summary_lines(FACTS) == [
        "track t: 3 passed, 1 failed, 2 blocked",
        "failed: 1.2",
        "blocked: 1.4 <- 1.2 (failed)",
        "blocked: 2.1 <- 1.4 <- 1.2 (failed)",
        "critical path 1.3 -> 2.2 took 4.5s (measured); "
        "the nodes took 5s from first start to last end, 11% longer",
        "slowest: 2.2 4s, 1.2 2s, 1.1 1s, 1.3 0.5s",
    ]


def test_summary_verbose_lists_slowest_with_names() -> None:
    lines = summary_lines(FACTS, verbosity=1)
    assert lines[-5:] == [
        "slowest nodes:",
        "        4s  2.2  Smoke test",
        "        2s  1.2",
        "        1s  1.1",
        "      0.5s  1.3",
    ]


def test_summary_quiet_is_at_most_two_lines() -> None:
    assert summary_lines(FACTS, verbosity=-1) == [
        "conductor t: 3 passed, 1 failed (1.2), 2 blocked (1.4, 2.1)",
        "conductor critical path 1.3 -> 2.2 took 4.5s (measured); "
        "the nodes took 5s from first start to last end, 11% longer",
    ]
    nothing_ran = RunFacts("t", ["1.1"], DEPS, {})
    assert summary_lines(nothing_ran, verbosity=-2) == [
        "conductor t: 0 passed, 0 failed, 0 blocked, 1 not run (1.1)"
    ]


def test_tiny_durations_do_not_read_as_zero() -> None:
    facts = RunFacts("t", ["1.1"], DEPS, {"1.1": NodeOutcome("passed")}, {"1.1": 0.0001})
    assert summary_lines(facts)[-1] == "slowest: 1.1 <1ms"


def test_collect_only_lines_give_order_and_planned_critical_path() -> None:
    weights = {"1.1": 60.0, "1.2": 60.0, "1.3": 1.0, "1.4": 60.0, "2.1": 1.0, "2.2": 1.0}
    assert collect_only_lines(list(DEPS), DEPS, weights) == [
        "execution order: 1.1, 1.2, 1.3, 1.4, 2.1, 2.2",
        "critical path 1.1 -> 1.2 -> 1.4 -> 2.1 (3m1s planned)",
    ]
    assert collect_only_lines(["1.3", "2.2"], DEPS, weights) == [
        "execution order: 1.3, 2.2",
        "critical path 1.3 -> 2.2 (2s planned)",
    ]
    assert collect_only_lines([], DEPS, weights) == ["no node selected"]


def test_blocked_lines_are_linear_for_a_long_chain() -> None:
    count = 5000
    ids = [str(i) for i in range(count)]
    deps = {t: ([ids[i - 1]] if i else []) for i, t in enumerate(ids)}
    outcomes = {"0": NodeOutcome("failed")}
    outcomes.update({t: NodeOutcome("blocked", root="0") for t in ids[1:]})
    started = time.perf_counter()
    lines = blocked_lines(ids[1:], deps, outcomes)
    assert time.perf_counter() - started < 2.0
    assert len(lines) == count - 1
    assert lines[0] == "blocked: 1 <- 0 (failed)"
    assert (
        lines[-1]
        == "blocked: 4999 <- 4998 <- 4997 <- 4996 <- 4995 <- … <- 0 (failed; a chain of 5000 nodes)"
    )
    assert sum(len(line) for line in lines) < 100 * count  # was ~107 MB for this plan


def test_blocked_lines_show_a_short_chain_whole() -> None:
    deps = {"1.2": [], "1.4": ["1.2"], "2.1": ["1.4"]}
    outcomes = {
        "1.2": NodeOutcome("failed"),
        "1.4": NodeOutcome("blocked", root="1.2"),
        "2.1": NodeOutcome("blocked", root="1.2"),
    }
    assert blocked_lines(["1.4", "2.1"], deps, outcomes) == [
        "blocked: 1.4 <- 1.2 (failed)",
        "blocked: 2.1 <- 1.4 <- 1.2 (failed)",
    ]
