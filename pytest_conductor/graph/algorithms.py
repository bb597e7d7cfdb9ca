"""DAG algorithms over plain ids: order, levels, critical path, width.

Every function takes ``deps``, a mapping ``{id: ids it depends on}``. The mapping's
iteration order is *plan order*: it breaks every tie, so results are the same in every
process. That matters because each xdist worker collects on its own and the controller
compares the id lists; for the same reason nothing here iterates a set to decide an order.

A dependency that is not a key of ``deps`` is ignored (callers may pass a sub-graph).
Every function except :func:`find_cycle` assumes the graph is acyclic and raises
``ValueError`` naming a cycle if it is not. Weights are non-negative numbers (seconds);
a node missing from ``weights`` weighs 1.

Pure Python: no pytest import.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "ancestors",
    "critical_path",
    "dependents",
    "descendants",
    "find_cycle",
    "levels",
    "longest_remaining",
    "priority_order",
    "simulate",
    "width",
]

Deps = Mapping[str, Sequence[str]]

DEFAULT_WEIGHT = 1.0


def _known_deps(deps: Deps) -> dict[str, tuple[str, ...]]:
    """``deps`` without unknown ids and repeated entries, in the order written."""
    return {node: tuple(dict.fromkeys(d for d in ds if d in deps)) for node, ds in deps.items()}


def find_cycle(deps: Deps) -> list[str] | None:
    """One dependency cycle, or None when the graph is acyclic.

    The cycle is returned closed (first == last), each id depending on the next one, and
    starts at the member that comes first in plan order: ``["1.1", "1.3", "1.1"]`` means
    1.1 depends on 1.3 and 1.3 depends on 1.1. A self-dependency is ``["a", "a"]``.
    """
    known = _known_deps(deps)
    index = {node: i for i, node in enumerate(known)}
    done: set[str] = set()  # membership only, never iterated
    for start in known:
        if start in done:
            continue
        # Iterative DFS: plans of a thousand chained nodes would hit the recursion limit.
        path: list[str] = [start]
        on_path = {start: 0}
        stack: list[Iterator[str]] = [iter(known[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                stack.pop()
                continue
            if nxt in on_path:
                members = path[on_path[nxt] :]
                first = min(range(len(members)), key=lambda i: index[members[i]])
                rotated = members[first:] + members[:first]
                return [*rotated, rotated[0]]
            if nxt in done:
                continue
            on_path[nxt] = len(path)
            path.append(nxt)
            stack.append(iter(known[nxt]))
    return None


def _topological(known: dict[str, tuple[str, ...]]) -> list[str]:
    """Kahn's algorithm, ready nodes taken in plan order; ValueError on a cycle."""
    index = {node: i for i, node in enumerate(known)}
    waiting = {node: len(ds) for node, ds in known.items()}
    users = _dependents_of(known)
    ready = [index[node] for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    nodes = list(known)
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, index[user])
    if len(order) != len(known):
        cycle = find_cycle(known)
        raise ValueError(f"cycle: {' -> '.join(cycle or [])}")
    return order


def _dependents_of(known: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    result: dict[str, list[str]] = {node: [] for node in known}
    # Walking nodes in plan order appends each dependent in plan order.
    for node, ds in known.items():
        for dep in ds:
            result[dep].append(node)
    return {node: tuple(users) for node, users in result.items()}


def dependents(deps: Deps) -> dict[str, tuple[str, ...]]:
    """``{id: ids that depend on it directly}``, every id present, dependents in plan order."""
    return _dependents_of(_known_deps(deps))


def _reachable(edges: dict[str, tuple[str, ...]], start: str) -> list[str]:
    """Ids reachable from ``start`` (exclusive) along ``edges``, in plan order."""
    if start not in edges:
        raise KeyError(start)
    seen = {start}
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return [node for node in edges if node in seen and node != start]


def descendants(deps: Deps, node_id: str) -> list[str]:
    """Every id that depends on ``node_id`` directly or transitively, in plan order."""
    return _reachable(dependents(deps), node_id)


def ancestors(deps: Deps, node_id: str) -> list[str]:
    """Every id ``node_id`` depends on directly or transitively, in plan order."""
    return _reachable(_known_deps(deps), node_id)


def levels(deps: Deps) -> list[list[str]]:
    """Nodes by level: level 0 has no dependencies, otherwise 1 + the deepest dependency."""
    known = _known_deps(deps)
    level: dict[str, int] = {}
    for node in _topological(known):
        level[node] = 1 + max((level[d] for d in known[node]), default=-1)
    result: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in known:  # plan order within a level
        result[level[node]].append(node)
    return result


def _weight(weights: Mapping[str, float], node: str) -> float:
    return float(weights.get(node, DEFAULT_WEIGHT))


def longest_remaining(deps: Deps, weights: Mapping[str, float]) -> dict[str, float]:
    """Weight of the heaviest path that starts at each node (inclusive) and runs down
    through its dependents; keys in plan order."""
    known = _known_deps(deps)
    users = _dependents_of(known)
    remaining: dict[str, float] = {}
    for node in reversed(_topological(known)):
        below = max((remaining[u] for u in users[node]), default=0.0)
        remaining[node] = _weight(weights, node) + below
    return {node: remaining[node] for node in known}


def critical_path(deps: Deps, weights: Mapping[str, float]) -> list[str]:
    """The heaviest dependency chain, first node first; ties go to plan order."""
    known = _known_deps(deps)
    if not known:
        return []
    remaining = longest_remaining(known, weights)
    users = _dependents_of(known)
    # max() keeps the first of equal keys, and both candidates lists are in plan order.
    node = max(known, key=lambda n: remaining[n])
    path = [node]
    while users[node]:
        node = max(users[node], key=lambda n: remaining[n])
        path.append(node)
    return path


class _ReadyByPriority:
    """Kahn's algorithm with the ready nodes ordered by :func:`longest_remaining`, greatest
    first (ties: plan order): what :func:`priority_order` and :func:`simulate` share."""

    def __init__(self, deps: Deps, weights: Mapping[str, float]) -> None:
        known = _known_deps(deps)
        self._remaining = longest_remaining(known, weights)
        #: Each node's place in plan order.
        self.position = {node: i for i, node in enumerate(known)}
        self._nodes = list(known)
        self._users = _dependents_of(known)
        self._waiting = {node: len(ds) for node, ds in known.items()}
        self._ready = [
            (-self._remaining[n], self.position[n])
            for n, count in self._waiting.items()
            if not count
        ]
        heapq.heapify(self._ready)

    def __bool__(self) -> bool:
        return bool(self._ready)

    def pop(self) -> str:
        """The best ready node (there must be one)."""
        return self._nodes[heapq.heappop(self._ready)[1]]

    def finish(self, node: str) -> None:
        """``node`` is done: its dependents with nothing else to wait for become ready."""
        for user in self._users[node]:
            self._waiting[user] -= 1
            if self._waiting[user] == 0:
                heapq.heappush(self._ready, (-self._remaining[user], self.position[user]))


def priority_order(deps: Deps, weights: Mapping[str, float]) -> list[str]:
    """The order one worker would run the nodes: among the ready nodes, always the one
    with the greatest :func:`longest_remaining` (ties: plan order). A topological order."""
    ready = _ReadyByPriority(deps, weights)
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        ready.finish(node)
    return order


def width(deps: Deps) -> int:
    """The most nodes that can ever run at once: the size of a maximum antichain.

    By Dilworth's theorem that is ``n - `` the size of a maximum matching in the bipartite
    graph ``u -> v`` for every ``v`` reachable from ``u``. Reachability is kept as integer
    bitsets (bit = plan index) so that the closure of ~1000 nodes stays cheap, and the
    matching uses Kuhn's augmenting paths over those bitsets.
    """
    known = _known_deps(deps)
    index = {node: i for i, node in enumerate(known)}
    users = _dependents_of(known)
    reach: dict[str, int] = {}
    for node in reversed(_topological(known)):
        bits = 0
        for user in users[node]:
            bits |= reach[user] | (1 << index[user])
        reach[node] = bits
    reach_by_index = [reach[node] for node in known]
    match_right = [-1] * len(known)  # right vertex -> matched left vertex
    matched = 0
    # A greedy start along direct edges matches every chain at once, which leaves the
    # augmenting searches (quadratic on long chains) only the real choices.
    unmatched: list[int] = []
    for node in known:
        free = [index[u] for u in users[node] if match_right[index[u]] == -1]
        if free:
            match_right[free[0]] = index[node]
            matched += 1
        else:
            unmatched.append(index[node])
    for left in unmatched:
        if _augment(left, reach_by_index, match_right):
            matched += 1
    return len(known) - matched


def _augment(root: int, reach: list[int], match_right: list[int]) -> bool:
    """One augmenting-path search from ``root`` (iterative DFS); updates ``match_right``."""
    visited = 0
    lefts = [root]
    rights: list[int] = []  # rights[i] is the edge taken out of lefts[i]
    while lefts:
        candidates = reach[lefts[-1]] & ~visited
        if not candidates:
            lefts.pop()
            if rights:
                rights.pop()
            continue
        lowest = candidates & -candidates
        visited |= lowest
        right = lowest.bit_length() - 1
        rights.append(right)
        owner = match_right[right]
        if owner == -1:
            for left, taken in zip(lefts, rights, strict=True):
                match_right[taken] = left
            return True
        lefts.append(owner)
    return False


def simulate(deps: Deps, weights: Mapping[str, float], workers: int) -> float:
    """Makespan of greedy list scheduling on ``workers`` workers with the
    :func:`priority_order` priority: whenever a worker is free it takes the ready node with
    the greatest longest remaining path. For documentation and benchmarks."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    ready = _ReadyByPriority(deps, weights)
    running: list[tuple[float, int, str]] = []  # (finish time, plan position, node)
    now = 0.0
    while ready or running:
        while ready and len(running) < workers:
            node = ready.pop()
            heapq.heappush(running, (now + _weight(weights, node), ready.position[node], node))
        now, _, node = heapq.heappop(running)
        finished = [node]
        while running and running[0][0] == now:
            finished.append(heapq.heappop(running)[2])
        for node in finished:
            ready.finish(node)
    return now
