"""DagQueue: node states, readiness, priority, resources, blocking and stopping."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_conductor.graph.algorithms import descendants
from pytest_conductor.graph.blocking import NodeOutcome
from pytest_conductor.scheduling.readiness import (
    BLOCKED,
    FAILED,
    FINAL_STATES,
    NOT_RUN,
    PASSED,
    PENDING,
    READY,
    RUNNING,
    SKIPPED,
    DagQueue,
)

Deps = dict[str, tuple[str, ...]]


def make_queue(
    deps: Mapping[str, Sequence[str]],
    *,
    weights: Mapping[str, float] | None = None,
    resources: Mapping[str, Sequence[str]] | None = None,
    selected: Sequence[str] | None = None,
    last_outcomes: Mapping[str, str] | None = None,
    outcomes: dict[str, NodeOutcome] | None = None,
    extra: Sequence[str] = (),
) -> DagQueue:
    return DagQueue(
        deps,
        weights or {},
        resources or {},
        list(deps) if selected is None else selected,
        last_outcomes=last_outcomes or {},
        outcomes={} if outcomes is None else outcomes,
        extra=extra,
    )


def run_next(queue: DagQueue) -> str:
    key = queue.next_node()
    assert key is not None
    queue.start(key)
    return key


def test_a_chain_runs_in_dependency_order() -> None:
    queue = make_queue({"a": (), "b": ("a",), "c": ("b",)})
    assert queue.ready_nodes() == ["a"]
    assert run_next(queue) == "a"
    assert queue.next_node() is None  # b waits for a
    assert queue.state("b") == PENDING
    assert queue.finish("a", PASSED) == []
    assert queue.state("b") == READY
    assert run_next(queue) == "b"
    queue.finish("b", PASSED)
    assert run_next(queue) == "c"
    assert not queue.done
    queue.finish("c", PASSED)
    assert queue.done


def test_readiness_is_per_node_not_per_level() -> None:
    # d depends only on a; it must not wait for b (same level as a's other dependents).
    queue = make_queue({"a": (), "b": (), "c": ("b",), "d": ("a",)})
    a, b = run_next(queue), run_next(queue)
    assert {a, b} == {"a", "b"}
    queue.finish("a", PASSED)
    assert queue.ready_nodes() == ["d"]
    assert queue.state("c") == PENDING


def test_longest_remaining_path_goes_first_then_plan_order() -> None:
    deps: Deps = {"short": (), "long": (), "tail": ("long",), "also": ()}
    queue = make_queue(deps, weights={"short": 5, "long": 1, "tail": 10, "also": 5})
    # long: 1 + 10 = 11; short and also: 5 each, plan order breaks the tie.
    assert queue.ready_nodes() == ["long", "short", "also"]
    assert [run_next(queue) for _ in range(3)] == ["long", "short", "also"]


def test_deselected_nodes_add_no_path_length() -> None:
    deps: Deps = {"x": (), "y": (), "after_x": ("x",)}
    weights = {"x": 1, "y": 2, "after_x": 100}
    queue = make_queue(deps, weights=weights, selected=["x", "y"])
    assert queue.ready_nodes() == ["y", "x"]


def test_nodes_sharing_a_resource_never_overlap() -> None:
    deps: Deps = {"a": (), "b": (), "c": ()}
    resources = {"a": ("store.ts",), "b": ("store.ts", "other"), "c": ()}
    queue = make_queue(deps, resources=resources)
    assert run_next(queue) == "a"
    # b is the better ready node but shares store.ts with running a: c goes instead.
    assert run_next(queue) == "c"
    assert queue.next_node() is None
    with pytest.raises(ValueError, match="holds a shared resource"):
        queue.start("b")
    queue.finish("a", PASSED)
    assert run_next(queue) == "b"


def test_a_failure_blocks_transitive_dependents_and_spares_the_rest() -> None:
    deps: Deps = {"a": (), "b": ("a",), "c": ("b",), "d": (), "e": ("d", "c")}
    outcomes: dict[str, NodeOutcome] = {}
    queue = make_queue(deps, outcomes=outcomes)
    run_next(queue)
    run_next(queue)
    blocked = queue.finish("a", FAILED)
    assert [(key, why.reason) for key, why in blocked] == [
        ("b", "blocked: dependency a failed"),
        ("c", "blocked: dependency a failed (via b)"),
        ("e", "blocked: dependency a failed (via c)"),
    ]
    assert [why.root for _, why in blocked] == ["a", "a", "a"]
    # The queue writes the blocked outcomes it decides into the shared map, nothing else.
    assert outcomes == {key: NodeOutcome(BLOCKED, "a", why.reason) for key, why in blocked}
    assert queue.state("d") == RUNNING
    queue.finish("d", PASSED)
    assert queue.done


def test_a_skipped_node_blocks_its_dependents() -> None:
    queue = make_queue({"a": (), "b": ("a",)})
    run_next(queue)
    [(key, why)] = queue.finish("a", SKIPPED)
    assert (key, why.reason) == ("b", "blocked: dependency a was skipped")


def test_deselected_dependency_that_did_not_last_pass_blocks_at_once() -> None:
    deps: Deps = {"a": (), "b": (), "c": ("a",), "d": ("b",), "e": ("c",)}
    outcomes: dict[str, NodeOutcome] = {}
    queue = make_queue(
        deps,
        selected=["c", "d", "e"],
        last_outcomes={"a": "failed", "b": "passed"},
        outcomes=outcomes,
    )
    blocked = queue.initially_blocked()
    assert [key for key, _ in blocked] == ["c", "e"]
    assert (
        blocked[0][1].reason == "blocked: dependency a not selected (last recorded outcome failed)"
    )
    assert set(outcomes) == {"c", "e"}
    # b last passed, so d is ready although b does not run.
    assert queue.ready_nodes() == ["d"]


def test_stop_returns_the_never_dispatched_nodes() -> None:
    queue = make_queue({"a": (), "b": (), "c": ("a",), "d": ()})
    run_next(queue)  # a
    assert queue.stop() == ["b", "c", "d"]
    assert queue.state("c") == NOT_RUN
    assert queue.next_node() is None
    assert not queue.done  # a still runs
    assert queue.finish("a", FAILED) == []  # c was already not run, not blocked
    assert queue.done
    assert queue.stop() == []


def test_a_withdrawn_node_is_ready_again_or_not_run_once_stopped() -> None:
    queue = make_queue({"a": (), "b": (), "c": ("a",)}, resources={"b": ["f"]})
    run_next(queue)  # a
    run_next(queue)  # b, holding f
    assert queue.withdraw("b") is False
    assert queue.state("b") == READY
    assert queue.running == ("a",)
    assert run_next(queue) == "b"  # f was given back
    queue.stop()
    assert queue.withdraw("b") is True
    assert queue.state("b") == NOT_RUN
    with pytest.raises(ValueError, match="cannot withdraw 'c'"):
        queue.withdraw("c")
    queue.finish("a", PASSED)
    assert queue.done


def test_critical_compares_the_remaining_path_with_the_work_left_per_worker() -> None:
    # A chain of three and two single nodes, weight 1 each: 5 units of work.
    queue = make_queue({"x1": (), "x2": ("x1",), "x3": ("x2",), "y": (), "z": ()})
    assert queue.work_left == 5
    assert queue.critical("x1", 2)  # path 3 >= 5 / 2
    assert not queue.critical("y", 2)
    assert not queue.critical("x1", 1)  # one worker: the work (5) bounds the run
    run_next(queue)  # x1
    queue.finish("x1", FAILED)  # blocks x2 and x3: 2 units left
    assert queue.work_left == 2
    assert queue.critical("y", 2)  # path 1 >= 2 / 2


def test_extra_items_are_independent_work() -> None:
    queue = make_queue({"a": (), "b": ("a",)}, extra=["tests/test_x.py::test_one"])
    assert queue.keys == ("a", "b", "tests/test_x.py::test_one")
    # a heads a path of 2, the extra item weighs 1.
    assert queue.ready_nodes() == ["a", "tests/test_x.py::test_one"]


def test_invalid_uses_are_refused() -> None:
    with pytest.raises(ValueError, match="not plan nodes"):
        make_queue({"a": ()}, selected=["zz"])
    with pytest.raises(ValueError, match="clash"):
        make_queue({"a": ()}, extra=["a"])
    queue = make_queue({"a": (), "b": ("a",)})
    with pytest.raises(ValueError, match="it is pending"):
        queue.start("b")
    with pytest.raises(ValueError, match="it is ready"):
        queue.finish("a", PASSED)
    run_next(queue)
    with pytest.raises(ValueError, match="finish status"):
        queue.finish("a", BLOCKED)


# -- property tests ----------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[Deps, dict[str, tuple[str, ...]]]:
    """A random DAG in plan order (edges only to earlier ids) with random file resources."""
    n = draw(st.integers(min_value=1, max_value=12))
    ids = [f"n{i}" for i in range(n)]
    deps: Deps = {}
    resources: dict[str, tuple[str, ...]] = {}
    for i, node in enumerate(ids):
        earlier = ids[:i]
        deps[node] = (
            tuple(draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)))
            if earlier
            else ()
        )
        resources[node] = tuple(
            draw(st.lists(st.sampled_from(["f1", "f2", "f3"]), unique=True, max_size=1))
        )
    return deps, resources


def simulate(
    queue: DagQueue,
    *,
    deps: Deps,
    resources: Mapping[str, Sequence[str]],
    workers: int,
    rng: random.Random,
    status_of: Mapping[str, str],
    satisfied: set[str],
) -> list[str]:
    """Drive the queue like a scheduler would; check the invariants at every start."""
    started: list[str] = []
    passed = set(satisfied)
    while not queue.done:
        assert any(queue.state(k) not in FINAL_STATES for k in queue.keys)
        while len(queue.running) < workers:
            key = queue.next_node()
            if key is None:
                break
            assert all(dep in passed for dep in deps[key]), (key, deps[key])
            held = {r for other in queue.running for r in resources[other]}
            assert not held & set(resources[key]), key
            queue.start(key)
            started.append(key)
        assert queue.running, "nothing runs although the queue is not done: deadlock"
        open_keys = [k for k in queue.keys if queue.state(k) not in FINAL_STATES]
        assert queue.work_left == pytest.approx(len(open_keys))  # weight 1 each
        key = rng.choice(queue.running)
        status = status_of[key]
        queue.finish(key, status)
        if status == PASSED:
            passed.add(key)
    assert all(queue.state(k) in FINAL_STATES for k in queue.keys)
    assert queue.work_left == pytest.approx(0)
    return started


@settings(max_examples=150, deadline=None)
@given(dags(), st.data(), st.integers(min_value=1, max_value=5), st.randoms(use_true_random=False))
def test_random_dag_runs_correctly(
    dag: tuple[Deps, dict[str, tuple[str, ...]]],
    data: st.DataObject,
    workers: int,
    rng: random.Random,
) -> None:
    deps, resources = dag
    status_of = {t: data.draw(st.sampled_from([PASSED, PASSED, FAILED, SKIPPED])) for t in deps}
    queue = make_queue(deps, resources=resources)
    started = simulate(
        queue,
        deps=deps,
        resources=resources,
        workers=workers,
        rng=rng,
        status_of=status_of,
        satisfied=set(),
    )
    assert len(started) == len(set(started))
    not_passed = [t for t in started if status_of[t] != PASSED]
    expected_blocked = {d for t in not_passed for d in descendants(deps, t)}
    blocked = {t for t in deps if queue.state(t) == BLOCKED}
    assert blocked == expected_blocked
    assert set(started) == set(deps) - expected_blocked
    assert all(queue.state(t) in FINAL_STATES for t in deps)


@settings(max_examples=100, deadline=None)
@given(dags(), st.data(), st.integers(min_value=1, max_value=5), st.randoms(use_true_random=False))
def test_random_selection_blocks_by_the_dependency_rule(
    dag: tuple[Deps, dict[str, tuple[str, ...]]],
    data: st.DataObject,
    workers: int,
    rng: random.Random,
) -> None:
    deps, resources = dag
    selected = [t for t in deps if data.draw(st.booleans())]
    last = {t: data.draw(st.sampled_from(["passed", "failed"])) for t in deps if t not in selected}
    status_of = {t: data.draw(st.sampled_from([PASSED, FAILED])) for t in deps}
    queue = make_queue(deps, resources=resources, selected=selected, last_outcomes=last)
    satisfied = {t for t, s in last.items() if s == "passed"}
    started = simulate(
        queue,
        deps=deps,
        resources=resources,
        workers=workers,
        rng=rng,
        status_of=status_of,
        satisfied=satisfied,
    )
    # Oracle: a selected node is blocked iff a direct dependency is unsatisfied, where a
    # deselected dependency is satisfied iff it last passed, a selected one iff it passed.
    ok: dict[str, bool] = {}
    for t in deps:  # plan order is topological here
        if t not in selected:
            ok[t] = last[t] == "passed"
        else:
            runs = all(ok[d] for d in deps[t])
            ok[t] = runs and status_of[t] == PASSED
            assert (queue.state(t) == BLOCKED) == (not runs), t
    assert set(started) == {t for t in selected if queue.state(t) != BLOCKED}
