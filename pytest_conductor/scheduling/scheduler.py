"""The dependency-aware xdist scheduler: :class:`DagScheduling`.

It implements xdist's ``Scheduling`` protocol (``xdist/scheduler/protocol.py``) on top of a
:class:`~pytest_conductor.scheduling.readiness.DagQueue`: one node in flight per worker, at most
``conductor_max_workers`` in flight overall, a node sent as soon as its dependencies
passed. It relies on two facts about xdist (DESIGN §9): a node's test reports reach the
controller before its ``mark_test_complete``, so ``state.outcomes`` already holds its
outcome; and a worker runs an item as soon as it arrives only with
:mod:`pytest_conductor.scheduling.worker_patch` installed on the workers.

Nodes that never reach a worker (blocked, or left undispatched when the run stops) are
reported here on the controller, as skipped tests with the reason, so every node shows in
the terminal and in ``--junitxml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from pytest_conductor.graph.blocking import Blocked, NodeOutcome
from pytest_conductor.scheduling.readiness import FAILED, PASSED, SKIPPED, DagQueue
from pytest_conductor.scheduling.skip_reports import report_not_run, stopped_reason
from pytest_conductor.state import ConductorState, get_state

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.workermanage import WorkerController

__all__ = ["DagScheduling"]


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
        # The item index each worker is running, None when idle. Dict order = join order,
        # which also decides which idle worker gets the next node.
        self.node2running: dict[WorkerController, int | None] = {}
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
        return list(self.node2running)

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
        assert node not in self.node2running, node
        self.node2running[node] = None

    def add_node_collection(self, node: WorkerController, collection: Sequence[str]) -> None:
        assert node in self.node2running, node
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
        running = self.node2running.get(node)
        if running != item_index:
            # Not something this scheduler sent (or sent elsewhere): never guess.
            raise AssertionError(f"{node.gateway.id} completed item {item_index}, not {running}")
        self.node2running[node] = None
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
        raise NotImplementedError("DagScheduling never sends a worker more than one item")

    def remove_node(self, node: WorkerController) -> str | None:
        """Forget a worker that finished or died; returns the nodeid it was running.

        xdist reports the returned item as failed (see ``pytest_handlecrashitem``); the
        node's dependents are blocked here at once.
        """
        running = self.node2running.pop(node)  # KeyError for an unknown node, as xdist expects
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
        in_flight = sum(1 for index in self.node2running.values() if index is not None)
        for node, index in list(self.node2running.items()):
            if in_flight >= self.max_in_flight:
                break
            if index is not None or node.shutting_down or node not in self.node2collection:
                continue
            key = queue.next_node()
            if key is None:
                break
            queue.start(key)
            item = self._index_of[key]
            self.node2running[node] = item
            node.send_runtest_some([item])
            in_flight += 1
        if queue.done or queue.stopped:
            # Nothing more will be sent: idle workers may go (busy ones finish first).
            for node, index in self.node2running.items():
                if index is None and not node.shutting_down:
                    node.shutdown()

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
