from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_conductor.graph.algorithms import (
    ancestors,
    critical_path,
    dependents,
    descendants,
    find_cycle,
    levels,
    longest_remaining,
    priority_order,
    simulate,
    width,
)

Deps = dict[str, list[str]]

# Ids that look like plan ids.
NAMES = [f"{major}.{minor}" for major in range(1, 4) for minor in range(1, 5)]


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 12) -> Deps:
    """A random DAG: each node depends only on earlier ones, then plan order is shuffled."""
    count = draw(st.integers(0, max_nodes))
    ids = NAMES[:count]
    # One bitmask per node (bit j: depends on node j) keeps generation cheap; and-ing two
    # masks now and then gives sparse graphs as well as dense ones.
    masks = st.lists(st.integers(0, 2**count - 1), min_size=count, max_size=count)
    bits = draw(masks)
    if draw(st.booleans()):
        bits = [a & b for a, b in zip(bits, draw(masks), strict=True)]
    deps = {node: [ids[j] for j in range(i) if bits[i] >> j & 1] for i, node in enumerate(ids)}
    order = draw(st.permutations(ids))
    return {node: deps[node] for node in order}


@st.composite
def weighted_dags(draw: st.DrawFn, max_nodes: int = 12) -> tuple[Deps, dict[str, float]]:
    deps = draw(dags(max_nodes))
    # Integers keep sums exact; -1 leaves the node out, to exercise the default weight of 1.
    drawn = {node: draw(st.integers(-1, 20)) for node in deps}
    weights = {node: float(value) for node, value in drawn.items() if value >= 0}
    return deps, weights


def closure(deps: Deps) -> dict[str, set[str]]:
    """Brute force: every id each node depends on, transitively."""
    result = {node: set(ds) for node, ds in deps.items()}
    changed = True
    while changed:
        changed = False
        for node, known in result.items():
            grown = known.union(*(result[d] for d in known))
            if grown != known:
                result[node] = grown
                changed = True
    return result


def all_paths_weight(deps: Deps, weights: dict[str, float], start: str) -> float:
    """Brute force: heaviest path from ``start`` down through its dependents."""
    users = [node for node, ds in deps.items() if start in ds]
    below = max((all_paths_weight(deps, weights, u) for u in users), default=0.0)
    return weights.get(start, 1.0) + below


def is_topological(order: list[str], deps: Deps) -> bool:
    position = {node: i for i, node in enumerate(order)}
    return all(position[d] < position[node] for node, ds in deps.items() for d in ds)


SETTINGS = settings(max_examples=100, deadline=None)


@SETTINGS
@given(weighted_dags())
def test_priority_order_is_a_topological_permutation(case: tuple[Deps, dict[str, float]]) -> None:
    deps, weights = case
    order = priority_order(deps, weights)
    assert sorted(order) == sorted(deps)
    assert is_topological(order, deps)


@SETTINGS
@given(weighted_dags())
def test_priority_order_takes_the_longest_remaining_ready_node(
    case: tuple[Deps, dict[str, float]],
) -> None:
    deps, weights = case
    remaining = longest_remaining(deps, weights)
    plan_index = {node: i for i, node in enumerate(deps)}
    done: set[str] = set()
    for node in priority_order(deps, weights):
        ready = [n for n in deps if n not in done and set(deps[n]) <= done]
        best = min(ready, key=lambda n: (-remaining[n], plan_index[n]))
        assert node == best
        done.add(node)


@SETTINGS
@given(dags())
def test_levels_respect_dependencies(deps: Deps) -> None:
    result = levels(deps)
    level = {node: i for i, group in enumerate(result) for node in group}
    assert sorted(level) == sorted(deps)
    assert all(group for group in result)
    for node, ds in deps.items():
        assert level[node] == 1 + max((level[d] for d in ds), default=-1)
    plan_index = {node: i for i, node in enumerate(deps)}
    for group in result:
        assert group == sorted(group, key=plan_index.__getitem__)


@SETTINGS
@given(dags(), st.data())
def test_descendants_and_ancestors_match_brute_force(deps: Deps, data: st.DataObject) -> None:
    if not deps:
        return
    node = data.draw(st.sampled_from(list(deps)))
    up = closure(deps)
    assert ancestors(deps, node) == [n for n in deps if n in up[node]]
    assert descendants(deps, node) == [n for n in deps if node in up[n]]


@SETTINGS
@given(dags())
def test_dependents_are_direct_and_in_plan_order(deps: Deps) -> None:
    result = dependents(deps)
    assert list(result) == list(deps)
    for node in deps:
        assert result[node] == tuple(n for n, ds in deps.items() if node in ds)


@SETTINGS
@given(weighted_dags(max_nodes=9))
def test_critical_path_is_the_heaviest_chain(case: tuple[Deps, dict[str, float]]) -> None:
    deps, weights = case
    remaining = longest_remaining(deps, weights)
    for node in deps:
        assert remaining[node] == all_paths_weight(deps, weights, node)
    path = critical_path(deps, weights)
    if not deps:
        assert path == []
        return
    for before, after in itertools.pairwise(path):
        assert before in deps[after]
    assert sum(weights.get(n, 1.0) for n in path) == max(remaining.values())
    assert dependents(deps)[path[-1]] == ()


@SETTINGS
@given(dags(max_nodes=9))
def test_width_is_the_maximum_antichain(deps: Deps) -> None:
    up = closure(deps)
    nodes = list(deps)

    def antichain(members: tuple[str, ...]) -> bool:
        return all(a not in up[b] and b not in up[a] for a, b in itertools.combinations(members, 2))

    best = max(
        (
            size
            for size in range(len(nodes) + 1)
            for c in itertools.combinations(nodes, size)
            if antichain(c)
        ),
        default=0,
    )
    assert width(deps) == best


@SETTINGS
@given(dags())
def test_find_cycle_is_none_on_dags(deps: Deps) -> None:
    assert find_cycle(deps) is None


@SETTINGS
@given(dags(), st.data())
def test_find_cycle_finds_an_added_cycle(deps: Deps, data: st.DataObject) -> None:
    if not deps:
        return
    # Make ``first`` depend on ``last`` where ``last`` already depends on ``first`` (or is it).
    last = data.draw(st.sampled_from(list(deps)))
    first = data.draw(st.sampled_from([last, *ancestors(deps, last)]))
    cyclic = {node: [*ds, last] if node == first else list(ds) for node, ds in deps.items()}
    cycle = find_cycle(cyclic)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    members = cycle[:-1]
    assert len(set(members)) == len(members)
    for node, dep in itertools.pairwise(cycle):
        assert dep in cyclic[node]
    plan_index = {node: i for i, node in enumerate(cyclic)}
    assert cycle[0] == min(members, key=plan_index.__getitem__)


@SETTINGS
@given(weighted_dags(), st.integers(1, 6))
def test_simulate_is_between_the_lower_bounds_and_serial_time(
    case: tuple[Deps, dict[str, float]], workers: int
) -> None:
    deps, weights = case
    total = sum(weights.get(n, 1.0) for n in deps)
    longest = max(longest_remaining(deps, weights).values(), default=0.0)
    makespan = simulate(deps, weights, workers)
    assert makespan >= max(longest, total / workers) - 1e-9
    assert makespan <= total + 1e-9
    assert simulate(deps, weights, 1) == total
    assert simulate(deps, weights, max(len(deps), 1)) == longest


# --- examples -------------------------------------------------------------------------

DIAMOND: Deps = {"1.1": [], "1.2": ["1.1"], "1.3": ["1.1"], "1.4": ["1.2", "1.3"]}


def test_find_cycle_example_from_the_design() -> None:
    deps = {"1.1": ["1.3"], "1.2": [], "1.3": ["1.1"]}
    assert find_cycle(deps) == ["1.1", "1.3", "1.1"]


def test_find_cycle_self_dependency_and_unknown_ids() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["missing"], "b": ["a"]}) is None


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(5000)}
    chain["n5000"] = ["n0"]
    cycle = find_cycle(chain)
    assert cycle is not None
    assert len(cycle) == 5002
    assert cycle[0] == cycle[-1] == "n0"


def test_functions_refuse_a_cycle() -> None:
    with pytest.raises(ValueError, match=r"cycle: a -> b -> a"):
        levels({"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="cycle"):
        priority_order({"a": ["b"], "b": ["a"]}, {})


def test_diamond() -> None:
    assert levels(DIAMOND) == [["1.1"], ["1.2", "1.3"], ["1.4"]]
    assert width(DIAMOND) == 2
    assert dependents(DIAMOND) == {
        "1.1": ("1.2", "1.3"),
        "1.2": ("1.4",),
        "1.3": ("1.4",),
        "1.4": (),
    }
    assert descendants(DIAMOND, "1.2") == ["1.4"]
    assert ancestors(DIAMOND, "1.4") == ["1.1", "1.2", "1.3"]
    # Equal weights: plan order breaks the tie; a heavier 1.3 wins.
    assert critical_path(DIAMOND, {}) == ["1.1", "1.2", "1.4"]
    assert critical_path(DIAMOND, {"1.3": 5}) == ["1.1", "1.3", "1.4"]
    assert priority_order(DIAMOND, {"1.3": 5}) == ["1.1", "1.3", "1.2", "1.4"]
    assert longest_remaining(DIAMOND, {"1.3": 5}) == {"1.1": 7, "1.2": 2, "1.3": 6, "1.4": 1}


def test_priority_order_prefers_the_long_chain_over_plan_order() -> None:
    deps = {"short": [], "long1": [], "long2": ["long1"], "long3": ["long2"]}
    # After long2, short and long3 both have 1 left: plan order decides.
    assert priority_order(deps, {}) == ["long1", "long2", "short", "long3"]
    assert simulate(deps, {}, 2) == 3.0


def test_unknown_ids_and_repeats_are_ignored() -> None:
    deps = {"a": [], "b": ["a", "a", "gone"]}
    assert dependents(deps) == {"a": ("b",), "b": ()}
    assert levels(deps) == [["a"], ["b"]]
    assert width(deps) == 1


def test_empty_graph() -> None:
    assert levels({}) == []
    assert width({}) == 0
    assert critical_path({}, {}) == []
    assert priority_order({}, {}) == []
    assert simulate({}, {}, 3) == 0.0


def test_simulate_refuses_no_workers() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        simulate(DIAMOND, {}, 0)


def test_ancestors_of_an_unknown_id() -> None:
    with pytest.raises(KeyError):
        ancestors(DIAMOND, "9.9")


def test_width_of_a_large_graph_is_quick_and_exact() -> None:
    # 30 independent chains of 30: width 30, and every antichain picks one node per chain.
    deps: Deps = {}
    for chain in range(30):
        for step in range(30):
            deps[f"c{chain}.{step}"] = [f"c{chain}.{step - 1}"] if step else []
    # Reverse plan order so the greedy start is not handed the answer.
    deps = dict(reversed(list(deps.items())))
    assert width(deps) == 30


DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import json, random
    from pytest_conductor.graph import algorithms as graph
    from pytest_conductor.plan.reader import parse_plan
    rng = random.Random(7)
    ids = [f"{a}.{b}" for a in range(1, 8) for b in range(1, 8)]
    deps = {n: rng.sample(ids[:i], min(i, rng.randint(0, 3))) for i, n in enumerate(ids)}
    items = list(deps.items()); rng.shuffle(items); deps = dict(items)
    weights = {n: 1.0 for n in ids}
    rows = "".join(
        f"    - id: {n}\\n      depends_on: [{', '.join(d)}]\\n" for n, d in deps.items()
    )
    plan = parse_plan("```yaml\\ndag:\\n  nodes:\\n" + rows + "```\\n")
    print(json.dumps([
        graph.priority_order(deps, weights), graph.levels(deps),
        graph.critical_path(deps, weights), graph.dependents(deps),
        graph.descendants(deps, ids[0]), graph.width(deps), graph.find_cycle(deps),
        list(plan.deps.items()),
    ]))
    """
)


def test_results_do_not_depend_on_the_hash_seed() -> None:
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0][0]  # the script really produced an order
