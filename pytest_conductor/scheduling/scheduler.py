"""The dependency-aware xdist scheduler: :class:`DagScheduling`.

It implements xdist's ``Scheduling`` protocol (``xdist/scheduler/protocol.py``) on top of a
:class:`~pytest_conductor.scheduling.readiness.DagQueue`: one node running per worker, at most
``conductor_max_workers`` workers busy, a node sent as soon as its dependencies passed.
When more nodes are ready than workers are free, a worker may also hold a few short
*queued* nodes behind the one it runs (how many: :func:`queue_depth`; see
:meth:`DagScheduling._fill_queues`), so it does not idle for a round trip between two short
nodes; what one worker gets in one pass goes in one message. It relies on two facts about
xdist (DESIGN §9): a node's test reports reach the controller before its
``mark_test_complete``, so ``state.outcomes`` already holds its outcome; and a worker runs
an item as soon as it arrives only with :mod:`pytest_conductor.scheduling.worker_patch`
installed on the workers.

Nodes that never reach a worker (blocked, or left undispatched when the run stops) are
reported here on the controller, as skipped tests with the reason, so every node shows in
the terminal and in ``--junitxml``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import pytest

from pytest_conductor.graph.blocking import Blocked, NodeOutcome
from pytest_conductor.scheduling.readiness import FAILED, PASSED, SKIPPED, DagQueue
from pytest_conductor.scheduling.skip_reports import report_not_run, stopped_reason
from pytest_conductor.state import ConductorState, get_state

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.workermanage import WorkerController

__all__ = [
    "QUEUE_DEPTH",
    "QUEUE_DEPTH_MAX",
    "QUEUE_THRESHOLD",
    "QUICK_KINDS",
    "DagScheduling",
    "queue_depth",
    "short_nodes",
]

#: Seconds: a node expected to take longer is never queued, nor queued behind. Queuing
#: saves one controller round trip (a few ms) per node; above this it is noise, while a
#: node stuck behind a long one could wait for all of it.
QUEUE_THRESHOLD = 0.05
#: Queued nodes a worker may hold behind the one it runs. A worker is topped up only when
#: its running node is all it has left, so it gets about one message per QUEUE_DEPTH
#: nodes (each message costs the controller's single thread a send and wakes the worker);
#: deeper saves less and less (1/2, 1/3, 1/4 message per node) while a queued node may
#: wait for up to QUEUE_DEPTH short nodes and a worker commits to more work early.
QUEUE_DEPTH = 3
#: How deep a worker's queue may grow while far more nodes are ready than the workers
#: hold (see :func:`queue_depth`).
QUEUE_DEPTH_MAX = 16
#: Criteria kinds that only look at files: a node with only these (and no agent) is quick
#: even when nothing estimated or measured its duration.
QUICK_KINDS = frozenset({"exists", "contains", "prose"})


def queue_depth(ready: int, workers: int) -> int:
    """How many queued nodes each worker may hold while ``ready`` nodes are ready.

    :data:`QUEUE_DEPTH`, or deeper (up to :data:`QUEUE_DEPTH_MAX`) while the ready nodes
    are at least twice what the workers' queues would hold. Then the controller keeps as
    many ready nodes as it sends, so a node waits in a worker's queue about as long as it
    would have waited with the controller, and a worker that empties its queue still
    finds ready work; each message carries more nodes (16 instead of 3 in chains of ten
    with 300 heads).
    """
    return max(QUEUE_DEPTH, min(QUEUE_DEPTH_MAX, ready // (2 * max(1, workers))))


def short_nodes(state: ConductorState, tasks: Collection[str]) -> frozenset[str]:
    """The nodes of ``tasks`` expected to take at most :data:`QUEUE_THRESHOLD` seconds.

    ``estimated_duration`` decides when given, else the duration measured last time
    (``state.weights`` holds one of them, or the default 1.0 when neither is known);
    unknown, a node is short only if no agent runs for it and it checks files only.
    """
    short: set[str] = set()
    for task in tasks:
        node = state.plan.node(task)
        if node.estimated_duration is not None:
            expected: float | None = node.estimated_duration
        else:
            weight = state.weights.get(task, 1.0)
            expected = None if weight == 1.0 else weight  # 1.0 is the "unknown" default
        if expected is not None:
            quick = expected <= QUEUE_THRESHOLD
        else:
            quick = not state.dispatches(task) and all(
                c.kind in QUICK_KINDS for c in state.criteria.get(task, ())
            )
        if quick:
            short.add(task)
    return frozenset(short)


class DagScheduling:
    """Send each DAG node to a free worker once its dependencies passed.

    ``numnodes`` workers must submit their collections before anything is sent; their
    collections must be identical (as for xdist's LoadScheduling). Items that are not plan
    nodes (the user's own tests) run as independent work of weight 1.
    """

    def __init__(
        self,
        config: pytest.Config,
        log: Producer | None = None,
        *,
        state: ConductorState | None = None,
    ) -> None:
        from xdist.remote import Producer

        found = state if state is not None else get_state(config)
        if found is None:
            raise pytest.UsageError("DagScheduling needs --conductor-track (no track loaded)")
        self.config = config
        self.state = found
        self.log = log.dagsched if log is not None else Producer("dagsched", enabled=False)
        self.numnodes = _expected_workers(config)
        self.max_in_flight = found.settings.max_workers
        self.node2collection: dict[WorkerController, list[str]] = {}
        # The item indices sent to each worker and not completed, in the order it runs
        # them: the first is running (or about to), any other is queued behind it. Dict
        # order = join order, which also decides which idle worker gets the next node.
        self.node2pending: dict[WorkerController, list[int]] = {}
        # When each busy worker's first pending item was sent or became first.
        self._head_since: dict[WorkerController, float] = {}
        # Queue keys that may be queued behind another node (short ones), set at schedule.
        self._short: frozenset[str] = frozenset()
        #: How many nodes were sent to wait in a worker's queue behind another one.
        self.queued = 0
        #: How many ``send_runtest_some`` messages went to workers (each carries one or more).
        self.messages = 0
        self.collection: list[str] | None = None
        self.queue: DagQueue | None = None
        # Why the run stopped dispatching (``-x``, ``--maxfail``, a crash limit), once it has.
        self.stop_reason: str | None = None
        self._mismatch = False
        self._keys: list[str] = []  # item index -> queue key (task id, or nodeid of a test)
        self._tasks: list[str | None] = []  # item index -> task id, None for user tests
        self._index_of: dict[str, int] = {}  # queue key -> item index
        self._failures = 0
        self._crashes = 0

    # -- the Scheduling protocol -----------------------------------------------------------

    @property
    def nodes(self) -> list[WorkerController]:
        return list(self.node2pending)

    @property
    def node2running(self) -> dict[WorkerController, int | None]:
        """The item each worker runs (its first pending one), None when idle."""
        return {node: (p[0] if p else None) for node, p in self.node2pending.items()}

    @property
    def collection_is_completed(self) -> bool:
        # node2collection keeps crashed workers, so this stays true once it was.
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if self._mismatch:
            return True  # nothing will run; let xdist shut the workers down
        if not self.collection_is_completed or self.queue is None:
            return False
        return self.queue.done

    @property
    def has_pending(self) -> bool:
        return self.queue is not None and not self.queue.done

    def add_node(self, node: WorkerController) -> None:
        assert node not in self.node2pending, node
        self.node2pending[node] = []

    def add_node_collection(self, node: WorkerController, collection: Sequence[str]) -> None:
        assert node in self.node2pending, node
        if self.collection is not None and list(collection) != self.collection:
            # A replacement for a crashed worker gets work only if it agrees.
            from xdist.report import report_collection_diff

            other = next(iter(self.node2collection))
            msg = report_collection_diff(
                self.collection, list(collection), other.gateway.id, node.gateway.id
            )
            self.log(msg)
            return
        self.node2collection[node] = list(collection)

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            self._dispatch()  # a replacement worker joined
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            self._mismatch = True
            return
        self.collection = list(next(iter(self.node2collection.values())))
        self._build_queue(self.collection)
        assert self.queue is not None
        for task, why in self.queue.initially_blocked():
            self._report_not_run(task, why.reason)
        self._check_stop()
        self._dispatch()

    def mark_test_complete(
        self, node: WorkerController, item_index: int, duration: float = 0
    ) -> None:
        assert self.queue is not None
        pending = self.node2pending.get(node)
        running = pending[0] if pending else None
        if pending is None or running != item_index:
            # Not something this scheduler sent (or sent elsewhere): never guess; a worker
            # runs what it was sent in order.
            raise AssertionError(f"{node.gateway.id} completed item {item_index}, not {running}")
        del pending[0]
        if pending:
            self._head_since[node] = time.monotonic()
        status = self._status_of(item_index)
        if status == FAILED:
            self._failures += 1
        blocked = self.queue.finish(self._keys[item_index], status)
        self._report_blocked(blocked)
        self._check_stop()
        self._dispatch()

    def mark_test_pending(self, item: str) -> None:
        raise NotImplementedError(
            "pytest-conductor's DagScheduling does not re-queue items (e.g. rerun plugins): "
            "a node's outcome is final for its dependents"
        )

    def remove_pending_tests_from_node(
        self, node: WorkerController, indices: Sequence[int]
    ) -> None:
        """Queued items a worker gave back (the answer to our ``steal``): they never ran.

        Once the run stopped they are reported as not run; otherwise they are ready again.
        The worker gives back only items still waiting in its queue, so the answer holds
        even for the first pending one: the worker may have finished the one before (its
        completion already handled here) without having started this one yet.
        """
        pending = self.node2pending.get(node, [])
        for index in indices:
            if index in pending:
                first = pending[0] == index
                pending.remove(index)
                if first and pending:
                    self._head_since[node] = time.monotonic()
                self._withdraw(index)
        self._dispatch()

    def remove_node(self, node: WorkerController) -> str | None:
        """Forget a worker that finished or died; returns the nodeid it was running.

        xdist reports the returned item as failed (see ``pytest_handlecrashitem``); the
        node's dependents are blocked here at once.
        """
        pending = self.node2pending.pop(node)  # KeyError for an unknown node, as xdist expects
        self._head_since.pop(node, None)
        running = pending[0] if pending else None
        # Queued behind the one it ran: never started, so ready again (or not run).
        for index in pending[1:]:
            self._withdraw(index)
        # A worker that ends without being told to shut down has crashed, busy or not.
        crashed = node if running is not None or not node.shutting_down else None
        if crashed is not None:
            self._crashes += 1
        if running is not None:
            assert self.queue is not None and self.collection is not None
            task = self._tasks[running]
            if task is not None:
                # Recorded now: xdist logs the crash report only after this returns.
                self.state.outcomes[task] = NodeOutcome(
                    FAILED, reason=f"worker {node.gateway.id} crashed while running it"
                )
            self._failures += 1
            self._report_blocked(self.queue.finish(self._keys[running], FAILED))
        self._check_stop(crashed)
        self._dispatch()
        if running is None:
            return None
        assert self.collection is not None
        return self.collection[running]

    # -- used by the xdist hooks -----------------------------------------------------------

    def finish_session(self) -> None:
        """Report every node that was never dispatched when xdist's loop ended.

        xdist drops undispatched items silently when it stops early (``-x``, crashed
        workers, an interrupt); this keeps every node visible in the report.
        """
        if self.queue is None or self.queue.done:
            return
        reason = self.stop_reason or self._stop_reason()
        self._stop(reason or "not run: the xdist session ended before it was dispatched")
        for node, pending in self.node2pending.items():
            # A worker that finished (-x ends its loop early) ran none of what it still
            # holds; a worker cut off otherwise may be running its first item.
            finished = hasattr(node, "workeroutput")
            never = pending if finished else pending[1:]
            for index in list(never):
                pending.remove(index)
                self._withdraw(index)

    # -- internals -------------------------------------------------------------------------

    def _build_queue(self, collection: list[str]) -> None:
        state = self.state
        tasks: list[str] = []
        extra: list[str] = []
        for nodeid in collection:
            task = state.task_id_of(nodeid)
            if task is not None and task in state.plan.deps and task not in self._index_of:
                key = task
                tasks.append(task)
            else:
                # The user's own test, or a plan node collected twice (runs independently).
                task = None
                key = nodeid
                extra.append(nodeid)
            self._index_of[key] = len(self._keys)
            self._keys.append(key)
            self._tasks.append(task)
        picked = set(tasks)  # membership only
        state.selected = tuple(t for t in state.plan.ids if t in picked)
        self._short = short_nodes(state, tasks)
        self.queue = DagQueue(
            state.plan.deps,
            state.weights,
            state.resources,
            tasks,
            last_outcomes=state.last_outcomes,
            outcomes=state.outcomes,
            extra=extra,
        )

    def _status_of(self, index: int) -> str:
        """How the item ended, from the outcome the plugin recorded from its reports."""
        task = self._tasks[index]
        if task is None:
            return PASSED  # user tests have no dependents; -x/--maxfail see them via Session
        outcome = self.state.outcomes.get(task)
        if outcome is None:
            # No report recorded (should not happen): never let dependents run on a guess.
            self.log(f"no outcome recorded for {task}; treating it as skipped")
            return SKIPPED
        if outcome.status in (PASSED, FAILED):
            return outcome.status
        return SKIPPED

    def _dispatch(self) -> None:
        queue = self.queue
        if queue is None:
            return
        # Items chosen for each worker in this pass, sent together at the end.
        batches: dict[WorkerController, list[int]] = {}
        busy = sum(1 for pending in self.node2pending.values() if pending)
        for node, pending in self.node2pending.items():
            if busy >= self.max_in_flight:
                break
            if pending or node.shutting_down or node not in self.node2collection:
                continue
            key = queue.next_node()
            if key is None:
                break
            self._take(node, key, batches)
            busy += 1
        if queue.next_node() is not None:
            # Every usable worker is busy and nodes are still ready: some may wait in
            # workers' queues.
            self._fill_queues(batches)
        for node, items in batches.items():
            node.send_runtest_some(items)
            self.messages += 1
        self._let_workers_go(queue)

    def _let_workers_go(self, queue: DagQueue) -> None:
        """Shut down the workers no node can need any more (busy ones end after what
        they hold: an xdist worker runs its queue before a shutdown)."""
        if queue.done or queue.stopped:
            # Nothing more will be sent: idle workers may go (busy ones finish first).
            for node, pending in self.node2pending.items():
                if not pending and not node.shutting_down:
                    node.shutdown()
            return
        # Fewer nodes left to start than idle workers: each node that starts takes one
        # worker, so the extra idle ones can never be needed (not even when several nodes
        # become ready at once). They go now and end their sessions beside the last nodes,
        # as xdist's own schedulers let workers go once their share is done.
        idle = [
            node
            for node, pending in self.node2pending.items()
            if not pending and not node.shutting_down and node in self.node2collection
        ]
        for node in idle[queue.unstarted :]:
            node.shutdown()
        if queue.unstarted == 0:
            # Nothing is left to start: a worker running its last node may end as soon as
            # that node does, as LoadScheduling lets workers go once nothing is pending.
            # Not one with queued nodes: should another worker crash, it may yet take that
            # worker's queue.
            for node, pending in self.node2pending.items():
                if len(pending) == 1 and not node.shutting_down:
                    node.shutdown()

    def _take(
        self, node: WorkerController, key: str, batches: dict[WorkerController, list[int]]
    ) -> None:
        """Start ``key`` on ``node``: it joins the worker's pending list and this pass's
        batch for it (sent by :meth:`_dispatch`)."""
        assert self.queue is not None
        self.queue.start(key)
        item = self._index_of[key]
        pending = self.node2pending[node]
        if not pending:
            self._head_since[node] = time.monotonic()
        pending.append(item)
        batches.setdefault(node, []).append(item)

    def _fill_queues(self, batches: dict[WorkerController, list[int]]) -> None:
        """Queue up to :func:`queue_depth` ready nodes behind busy workers, while allowed.

        Only a worker whose running node is all it has left is topped up (a worker just
        given its first node in this pass included, so that node and its queue go in one
        message), and only if that node may be waited behind. Workers whose running node
        started first go first (likely free first), round by round: the best ready node
        goes first in line behind a running node, the next best first in line on the next
        worker, and so on. Only the best ready node is ever queued, so nothing jumps ahead
        of a better one: filling stops at the first ready node that may not wait.
        """
        queue = self.queue
        assert queue is not None
        live = sum(
            1 for n in self.node2pending if n in self.node2collection and not n.shutting_down
        )
        workers = max(1, min(self.max_in_flight, live))
        low = [
            node
            for node, pending in self.node2pending.items()
            if len(pending) == 1
            and not node.shutting_down
            and hasattr(node, "send_steal")
            and self._may_wait(self._keys[pending[0]], workers)
        ]
        low.sort(key=lambda n: self._head_since.get(n, 0.0))
        for _ in range(queue_depth(queue.ready_count, workers)):
            for node in low:
                key = queue.next_node()
                if key is None or not self._may_wait(key, workers):
                    return
                self._take(node, key, batches)
                self.queued += 1

    def _may_wait(self, key: str, workers: int) -> bool:
        """Whether ``key`` may be queued, or be queued behind.

        It must be short (:func:`short_nodes`) and not critical: a node whose remaining
        path reaches the run's remaining lower bound would delay the end if it waited,
        and so would its dependents if it ran with a queued node behind it.
        """
        assert self.queue is not None
        return key in self._short and not self.queue.critical(key, workers)

    def _withdraw(self, index: int) -> None:
        """A queued item that will not run where it was sent."""
        assert self.queue is not None
        key = self._keys[index]
        if self.queue.withdraw(key):
            reason = self.stop_reason or "not run: the xdist session ended before it ran"
            task = self._tasks[index]
            if task is not None:
                self.state.outcomes[task] = NodeOutcome(SKIPPED, reason=reason)
            self._report_not_run(key, reason)

    def _check_stop(self, crashed: WorkerController | None = None) -> None:
        if self.queue is None or self.queue.stopped:
            return
        reason = self._stop_reason(crashed)
        if reason is not None:
            self._stop(reason)

    def _stop_reason(self, crashed: WorkerController | None = None) -> str | None:
        """Why no more nodes may be dispatched, as the skip reason of those left; or None."""
        if crashed is not None:
            from xdist.dsession import get_default_max_worker_restart

            limit = get_default_max_worker_restart(self.config)
            if limit is not None and self._crashes > limit:
                if limit == 0:
                    return (
                        f"not run: worker {crashed.gateway.id} crashed "
                        "and worker restarting is disabled"
                    )
                return f"not run: maximum crashed workers reached ({limit})"
        maxfail = int(self.config.getoption("maxfail", 0) or 0)
        session = self.config.pluginmanager.getplugin("session")
        shouldfail = getattr(session, "shouldfail", False)
        if maxfail > 0 and self._failures >= maxfail:
            shouldfail = shouldfail or True  # counted here before the session notices
        shouldstop = getattr(session, "shouldstop", False) or getattr(
            self.config.pluginmanager.getplugin("dsession"), "shouldstop", False
        )
        return stopped_reason(maxfail, shouldfail, shouldstop)

    def _stop(self, reason: str) -> None:
        assert self.queue is not None
        self.stop_reason = reason
        for key in self.queue.stop():
            index = self._index_of[key]
            task = self._tasks[index]
            if task is not None:
                self.state.outcomes[task] = NodeOutcome(SKIPPED, reason=reason)
            self._report_not_run(key, reason)
        for node, pending in self.node2pending.items():
            if len(pending) > 1 and not hasattr(node, "workeroutput"):
                # Ask for the queued ones back; the worker answers with those it had not
                # started yet (remove_pending_tests_from_node reports them as not run).
                # One request per item: xdist's steal gives back all it is asked for or
                # none, and the worker may have started the first queued one already.
                with contextlib.suppress(OSError):  # its channel closed: finish_session
                    for index in pending[1:]:
                        node.send_steal([index])

    def _report_blocked(self, blocked: list[tuple[str, Blocked]]) -> None:
        # The queue already put each node's blocked outcome into state.outcomes.
        for key, why in blocked:
            self._report_not_run(key, why.reason)

    def location_of(self, nodeid: str) -> tuple[str, int | None, str]:
        """The report location of an item, as its own worker would give it (the controller
        has no items): plan.md and the node's 0-based line, ``task <id>: <name>``."""
        path, _, name = nodeid.partition("::")
        task = self.state.task_id_of(nodeid)
        if task is None or task not in self.state.plan.deps:
            return (path, None, name or nodeid)
        node = self.state.plan.node(task)
        return (path, node.line - 1 if node.line else None, f"task {task}: {node.name}")

    def _report_not_run(self, key: str, reason: str) -> None:
        assert self.collection is not None
        index = self._index_of[key]
        nodeid = self.collection[index]
        task = self._tasks[index]
        props: list[tuple[str, object]] = [("task_id", task)] if task is not None else []
        report_not_run(self.config, nodeid, self.location_of(nodeid), reason, props)

    def _check_nodes_have_same_collection(self) -> bool:
        """True if all workers collected the same ids; otherwise each difference is logged
        and posted as a failed collection report, as xdist's LoadScheduling does."""
        from xdist.report import report_collection_diff

        (first, reference), *others = self.node2collection.items()
        same = True
        for node, collection in others:
            msg = report_collection_diff(reference, collection, first.gateway.id, node.gateway.id)
            if msg:
                same = False
                self.log(msg)
                rep = pytest.CollectReport(
                    nodeid=node.gateway.id, outcome="failed", longrepr=msg, result=[]
                )
                self.config.hook.pytest_collectreport(report=rep)
        return same


def _expected_workers(config: pytest.Config) -> int:
    """How many workers xdist starts (``--tx`` specs expanded), as LoadScheduling counts."""
    from xdist import workermanage

    # Renamed after xdist 3.6 (parse_spec_config before); both take the config.
    name = "parse_tx_spec_config"
    if not hasattr(workermanage, name):
        name = "parse_spec_config"
    specs: list[str] = getattr(workermanage, name)(config)
    return len(specs)
