"""Which node runs next: node states, readiness, priority and resource exclusion.

A :class:`DagQueue` holds the nodes selected for one run and moves each one through
``pending -> ready -> running -> passed | failed | skipped``, or to ``blocked`` (a dependency
did not pass) or ``not_run`` (the run stopped before it was dispatched). It decides nothing
about workers or pytest; the xdist scheduler and any in-process runner drive it.

Every order it produces comes from plan order and list positions, never from iterating a
set: each xdist worker and the controller must see the same order.

Pure Python: no pytest import.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, MutableMapping, Sequence

from pytest_conductor.graph.algorithms import dependents, longest_remaining, priority_order
from pytest_conductor.graph.blocking import Blocked, NodeOutcome, blocked_by

__all__ = [
    "BLOCKED",
    "FAILED",
    "FINAL_STATES",
    "NOT_RUN",
    "PASSED",
    "PENDING",
    "READY",
    "RUNNING",
    "SKIPPED",
    "DagQueue",
]

PENDING = "pending"
READY = "ready"
RUNNING = "running"
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
BLOCKED = "blocked"
NOT_RUN = "not_run"

FINAL_STATES = frozenset({PASSED, FAILED, SKIPPED, BLOCKED, NOT_RUN})
# The statuses a node that ran can finish with (a skip inside a node counts as not passed).
_FINISH_STATUSES = (PASSED, FAILED, SKIPPED)


class DagQueue:
    """The selected nodes of one run and their states.

    ``deps`` is the whole plan (``{id: depends_on}`` in plan order); only the ``selected``
    ids run. A dependency outside ``selected`` counts as satisfied only when its
    ``last_outcomes`` entry is ``"passed"`` (the rule of :func:`blocked_by`). ``extra``
    are independent work items (the user's own tests): no dependencies, weight 1, no
    resources; their keys must not clash with plan ids.

    ``outcomes`` is the run's shared outcome map: the queue writes into it the blocked
    outcomes it decides (before the caller reports them), and nothing else.
    """

    def __init__(
        self,
        deps: Mapping[str, Sequence[str]],
        weights: Mapping[str, float],
        resources: Mapping[str, Sequence[str]],
        selected: Iterable[str],
        *,
        last_outcomes: Mapping[str, str],
        outcomes: MutableMapping[str, NodeOutcome],
        extra: Sequence[str] = (),
    ) -> None:
        chosen = list(dict.fromkeys(selected))
        unknown = [t for t in chosen if t not in deps]
        if unknown:
            raise ValueError(f"selected ids that are not plan nodes: {unknown}")
        clash = [e for e in extra if e in deps]
        if clash:
            raise ValueError(f"extra work items clash with plan ids: {clash}")
        self._deps = {t: tuple(ds) for t, ds in deps.items()}
        self._selected = frozenset(chosen)  # membership only
        self._last_outcomes = last_outcomes
        self._shared = outcomes
        # Plan nodes in plan order, then extra items in the order given: every tie-break.
        self._order = [t for t in deps if t in self._selected] + list(dict.fromkeys(extra))
        self._position = {key: i for i, key in enumerate(self._order)}
        # The graph that actually runs: deselected nodes never run, so they add no length.
        sub: dict[str, tuple[str, ...]] = {
            t: tuple(d for d in self._deps.get(t, ()) if d in self._selected) for t in self._order
        }
        remaining = longest_remaining(sub, weights)
        self._remaining = remaining
        self._weight = {key: float(weights.get(key, 1.0)) for key in self._order}
        # Sort key of a ready node: longest remaining path first, then plan order.
        self._rank = {key: (-remaining[key], self._position[key]) for key in self._order}
        self._topo = {key: i for i, key in enumerate(priority_order(sub, weights))}
        self._users = dependents(sub)
        self._resources = {
            key: tuple(dict.fromkeys(resources.get(key, ()))) if key in deps else ()
            for key in self._order
        }
        self._waiting = {key: len(sub[key]) for key in self._order}
        self._state = dict.fromkeys(self._order, PENDING)
        # Nodes not yet final, and their total weight: ``done`` and ``critical`` in O(1).
        self._open = len(self._order)
        self._work_left = sum(self._weight.values())
        # Outcomes as this queue saw them (the shared map may lag, e.g. after a crash).
        self._outcomes: dict[str, NodeOutcome] = {}
        self._held: dict[str, str] = {}  # resource -> running key holding it
        self._ready: list[tuple[tuple[float, int], str]] = []  # sorted by rank
        self._running: list[str] = []  # in start order
        self._stopped = False
        self._initially_blocked = self._block([t for t in self._order if self._state[t] == PENDING])
        for key in self._order:
            if self._state[key] == PENDING and self._waiting[key] == 0:
                self._make_ready(key)

    # -- queries -------------------------------------------------------------------------

    @property
    def keys(self) -> tuple[str, ...]:
        """Every node and extra item of the run, plan order first."""
        return tuple(self._order)

    @property
    def running(self) -> tuple[str, ...]:
        """Running nodes, in the order they started."""
        return tuple(self._running)

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def done(self) -> bool:
        """True when every node reached a final state (nothing pending, ready or running)."""
        return self._open == 0

    @property
    def unstarted(self) -> int:
        """How many nodes have not started yet (pending or ready): at most this many more
        workers can ever be needed."""
        return self._open - len(self._running)

    @property
    def work_left(self) -> float:
        """Total weight of the nodes not yet final (pending, ready or running)."""
        return self._work_left

    def critical(self, key: str, workers: int) -> bool:
        """Whether delaying ``key`` may delay the end of the run.

        The run cannot end before ``max(longest remaining path, work left / workers)``.
        While the work term is the larger, every node has slack; a node whose own remaining
        path reaches it has none.
        """
        return self._remaining[key] >= self._work_left / max(1, workers)

    def state(self, key: str) -> str:
        return self._state[key]

    @property
    def ready_count(self) -> int:
        """How many nodes are ready (whether or not their resources are free)."""
        return len(self._ready)

    def ready_nodes(self) -> list[str]:
        """Ready nodes, best first (longest remaining path, then plan order)."""
        return [key for _, key in self._ready]

    def initially_blocked(self) -> list[tuple[str, Blocked]]:
        """Nodes blocked before anything ran (a deselected dependency that did not last pass,
        and the selected nodes behind them), in plan order."""
        return list(self._initially_blocked)

    # -- transitions ---------------------------------------------------------------------

    def next_node(self) -> str | None:
        """The ready node to start next, or None.

        Best ready node whose resources no running node holds; a ready node that would
        conflict is skipped for now, so a lower-priority one may go first.
        """
        if self._stopped:
            return None
        for _, key in self._ready:
            if not any(r in self._held for r in self._resources[key]):
                return key
        return None

    def start(self, key: str) -> None:
        if self._state.get(key) != READY:
            raise ValueError(f"cannot start {key!r}: it is {self._state.get(key, 'unknown')}")
        holders = [self._held[r] for r in self._resources[key] if r in self._held]
        if holders:
            raise ValueError(f"cannot start {key!r}: {holders[0]!r} holds a shared resource")
        if self._stopped:
            raise ValueError(f"cannot start {key!r}: the queue is stopped")
        self._ready.remove((self._rank[key], key))
        self._state[key] = RUNNING
        self._running.append(key)
        for resource in self._resources[key]:
            self._held[resource] = key

    def finish(self, key: str, status: str) -> list[tuple[str, Blocked]]:
        """Record how a running node ended; returns the nodes this newly blocks, in plan order.

        On ``passed`` its dependents whose dependencies all passed become ready. Any other
        status blocks its pending transitive dependents (their outcomes go to the shared map).
        """
        if status not in _FINISH_STATUSES:
            raise ValueError(f"finish status must be one of {_FINISH_STATUSES}, got {status!r}")
        self._leave_running(key, "finish")
        self._state[key] = status
        self._closed(key)
        self._outcomes[key] = NodeOutcome(status)
        if status == PASSED:
            for user in self._users[key]:
                self._waiting[user] -= 1
                if self._waiting[user] == 0 and self._state[user] == PENDING:
                    self._make_ready(user)
            return []
        return self._block(self._pending_descendants(key))

    def stop(self) -> list[str]:
        """Dispatch nothing more (``-x``, ``--maxfail``, a worker crash limit).

        Returns the nodes that were never dispatched, in plan order, now ``not_run``;
        running nodes may still finish. A second call returns an empty list.
        """
        self._stopped = True
        never = [k for k in self._order if self._state[k] in (PENDING, READY)]
        for key in never:
            self._state[key] = NOT_RUN
            self._closed(key)
        self._ready.clear()
        return never

    def withdraw(self, key: str) -> bool:
        """Take back a running node that never started (a worker's queue gave it back).

        It frees its resources and becomes ready again; or, once the queue is stopped,
        ``not_run`` (returns True then, for the caller to report it).
        """
        self._leave_running(key, "withdraw")
        if self._stopped:
            self._state[key] = NOT_RUN
            self._closed(key)
            return True
        self._make_ready(key)
        return False

    # -- internals -----------------------------------------------------------------------

    def _leave_running(self, key: str, verb: str) -> None:
        """``key`` stops running (it ended, or was given back): its resources are free."""
        if self._state.get(key) != RUNNING:
            raise ValueError(f"cannot {verb} {key!r}: it is {self._state.get(key, 'unknown')}")
        self._running.remove(key)
        for resource in self._resources[key]:
            del self._held[resource]

    def _closed(self, key: str) -> None:
        self._open -= 1
        self._work_left -= self._weight[key]

    def _make_ready(self, key: str) -> None:
        self._state[key] = READY
        bisect.insort(self._ready, (self._rank[key], key))

    def _pending_descendants(self, key: str) -> list[str]:
        seen = {key}
        todo = [key]
        found: list[str] = []
        while todo:
            for user in self._users[todo.pop()]:
                if user not in seen:
                    seen.add(user)
                    todo.append(user)
                    if self._state[user] == PENDING:
                        found.append(user)
        return found

    def _block(self, candidates: Iterable[str]) -> list[tuple[str, Blocked]]:
        """Block each candidate a dependency keeps from running.

        Candidates are visited in topological order, so a node sees the blocked outcomes
        of its ancestors decided in the same pass.
        """
        newly: list[tuple[str, Blocked]] = []
        for key in sorted(candidates, key=self._topo.__getitem__):
            why = blocked_by(
                self._deps.get(key, ()), self._outcomes, self._selected, self._last_outcomes
            )
            if why is None:
                continue
            outcome = NodeOutcome(BLOCKED, why.root, why.reason)
            self._state[key] = BLOCKED
            self._closed(key)
            self._outcomes[key] = outcome
            self._shared[key] = outcome
            newly.append((key, why))
        newly.sort(key=lambda pair: self._position[pair[0]])
        return newly
