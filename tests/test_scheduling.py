"""DagScheduling driven by fake worker nodes (no processes), and the xdist hooks around it.

The fake nodes follow xdist's own ``testing/test_dsession.py`` (MockNode); the "plugin"
is simulated by writing ``state.outcomes`` before each ``mark_test_complete``, which is
the order in which xdist delivers a node's reports and its completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import execnet
import pytest

from pytest_conductor.graph.blocking import NodeOutcome
from pytest_conductor.plan.reader import Node, Plan
from pytest_conductor.scheduling import scheduler, xdist_hooks
from pytest_conductor.scheduling.scheduler import DagScheduling
from pytest_conductor.settings import Settings
from pytest_conductor.state import STATE_KEY, ConductorState
from tests.conftest import PlanWriter

if TYPE_CHECKING:
    from xdist.scheduler import Scheduling
    from xdist.workermanage import WorkerController

    BaseOfMockGateway = execnet.Gateway
    BaseOfMockNode = WorkerController
else:
    BaseOfMockGateway = object
    BaseOfMockNode = object

PLAN = "conductor/tracks/t/plan.md"


class MockGateway(BaseOfMockGateway):
    def __init__(self, gid: str) -> None:
        self.id = gid


class MockNode(BaseOfMockNode):
    def __init__(self, gid: str) -> None:
        self.sent: list[int] = []
        self.messages: list[list[int]] = []  # one entry per send_runtest_some call
        self.gateway = MockGateway(gid)
        self._shutdown = False

    def send_runtest_some(self, indices: Sequence[int]) -> None:
        assert not self._shutdown, "sent work to a worker that was shut down"
        assert indices, "an empty message"
        self.sent.extend(indices)
        self.messages.append(list(indices))

    def shutdown(self) -> None:
        self._shutdown = True

    @property
    def shutting_down(self) -> bool:
        return self._shutdown


class StealNode(MockNode):
    """A worker that can give queued items back, as xdist >= 3.2's ``steal`` command."""

    def __init__(self, gid: str) -> None:
        super().__init__(gid)
        self.steals: list[list[int]] = []

    def send_steal(self, indices: Sequence[int]) -> None:
        self.steals.append(list(indices))


@dataclass
class Recorder:
    """Records what the scheduler reports on the controller."""

    events: list[tuple[str, str]] = field(default_factory=list)
    reports: list[pytest.TestReport] = field(default_factory=list)
    collect_reports: list[pytest.CollectReport] = field(default_factory=list)

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        assert isinstance(location[0], str) and isinstance(location[2], str)
        self.events.append(("logstart", nodeid))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.events.append((f"{report.when}:{report.outcome}", report.nodeid))
        self.reports.append(report)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.events.append(("logfinish", nodeid))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.collect_reports.append(report)

    def skipped(self) -> dict[str, str]:
        """nodeid -> skip reason, from the setup reports."""
        result = {}
        for rep in self.reports:
            if rep.when == "setup" and rep.skipped:
                assert isinstance(rep.longrepr, tuple)
                result[rep.nodeid] = rep.longrepr[2]
        return result


@dataclass
class FakeSession:
    shouldfail: bool | str = False
    shouldstop: bool | str = False


def nid(task: str) -> str:
    return f"{PLAN}::{task}"


@dataclass
class Harness:
    config: pytest.Config
    state: ConductorState
    recorder: Recorder
    sched: DagScheduling
    nodes: list[MockNode]
    collection: list[str]

    def start(self) -> None:
        for node in self.nodes:
            self.sched.add_node(node)
        for node in self.nodes:
            self.sched.add_node_collection(node, self.collection)
        assert self.sched.collection_is_completed
        self.sched.schedule()

    def running(self) -> dict[str, str]:
        """worker id -> task (or nodeid) it runs now."""
        assert self.sched.collection is not None
        return {
            node.gateway.id: self.sched.collection[index].rpartition("::")[2]
            for node, index in self.sched.node2running.items()
            if index is not None
        }

    def complete(self, task: str, status: str = "passed") -> None:
        """The worker running ``task`` reports it (the plugin records it), then completes."""
        assert self.sched.collection is not None
        for node, index in self.sched.node2running.items():
            if index is not None and self.sched.collection[index].endswith(f"::{task}"):
                if self.state.task_id_of(self.sched.collection[index]) is not None:
                    self.state.outcomes[task] = NodeOutcome(status)
                self.sched.mark_test_complete(node, index, 0.01)
                return
        raise AssertionError(f"{task} is not running: {self.running()}")

    def node(self, gid: str) -> MockNode:
        return next(n for n in self.nodes if n.gateway.id == gid)

    def pending(self) -> dict[str, list[str]]:
        """worker id -> tasks sent to it and not completed, running one first."""
        assert self.sched.collection is not None
        return {
            node.gateway.id: [self.sched.collection[i].rpartition("::")[2] for i in pending]
            for node, pending in self.sched.node2pending.items()
        }

    def index(self, task: str) -> int:
        return self.collection.index(nid(task))

    def messages(self, gid: str) -> list[list[str]]:
        """The tasks of each message sent to worker ``gid``, in order."""
        return [
            [self.collection[i].rpartition("::")[2] for i in m] for m in self.node(gid).messages
        ]

    def steals(self, gid: str) -> list[list[str]]:
        """The tasks of each steal request sent to worker ``gid``, in order."""
        node = self.node(gid)
        assert isinstance(node, StealNode)
        return [[self.collection[i].rpartition("::")[2] for i in s] for s in node.steals]

    def give_back(self, gid: str, *tasks: str) -> None:
        """Worker ``gid`` answers a steal: these queued tasks had not started."""
        indices = [self.index(t) for t in tasks]
        self.sched.remove_pending_tests_from_node(self.node(gid), indices)


def make_state(
    root: Path,
    nodes: Sequence[tuple[str, Sequence[str]]],
    *,
    files: dict[str, tuple[str, ...]] | None = None,
    max_workers: int = 5,
    last_outcomes: dict[str, str] | None = None,
    estimates: dict[str, float] | None = None,
) -> ConductorState:
    plan_nodes = tuple(
        Node(
            id=t,
            name=f"name {t}",
            depends_on=tuple(d),
            files=(files or {}).get(t, ()),
            line=i + 3,
            estimated_duration=(estimates or {}).get(t),
        )
        for i, (t, d) in enumerate(nodes)
    )
    plan = Plan(path=root / PLAN, nodes=plan_nodes)
    settings = Settings(
        track="t", root=root, max_workers=max_workers, strict_prose=False, command_timeout=300.0
    )
    return ConductorState(
        settings=settings,
        plan=plan,
        criteria={n.id: [] for n in plan_nodes},
        weights={n.id: (estimates or {}).get(n.id, 1.0) for n in plan_nodes},
        resources={n.id: n.files for n in plan_nodes},
        last_outcomes=last_outcomes or {},
    )


class MakeHarness(Protocol):
    def __call__(
        self,
        nodes: Sequence[tuple[str, Sequence[str]]],
        *,
        workers: int = 2,
        args: Sequence[str] = (),
        collection: Sequence[str] | None = None,
        session: FakeSession | None = None,
        files: dict[str, tuple[str, ...]] | None = None,
        max_workers: int = 5,
        last_outcomes: dict[str, str] | None = None,
        estimates: dict[str, float] | None = None,
        steal: bool = False,
    ) -> Harness: ...


@pytest.fixture
def harness(pytester: pytest.Pytester) -> MakeHarness:
    """A factory: a scheduler with fake workers over a small plan, on a real config."""

    def make(
        nodes: Sequence[tuple[str, Sequence[str]]],
        *,
        workers: int = 2,
        args: Sequence[str] = (),
        collection: Sequence[str] | None = None,
        session: FakeSession | None = None,
        files: dict[str, tuple[str, ...]] | None = None,
        max_workers: int = 5,
        last_outcomes: dict[str, str] | None = None,
        estimates: dict[str, float] | None = None,
        steal: bool = False,
    ) -> Harness:
        config = pytester.parseconfig(f"--tx={workers}*popen", *args)
        state = make_state(
            pytester.path,
            nodes,
            files=files,
            max_workers=max_workers,
            last_outcomes=last_outcomes,
            estimates=estimates,
        )
        config.stash[STATE_KEY] = state
        recorder = Recorder()
        config.pluginmanager.register(recorder, "recorder")
        if session is not None:
            config.pluginmanager.register(session, "session")
        sched = DagScheduling(config)
        fakes = [(StealNode if steal else MockNode)(f"gw{i}") for i in range(workers)]
        ids = [nid(t) for t, _ in nodes] if collection is None else list(collection)
        return Harness(config, state, recorder, sched, fakes, ids)

    return make


def test_implements_the_scheduling_protocol(harness: MakeHarness) -> None:
    h = harness([("a", ())])
    sched: Scheduling = h.sched  # mypy checks the protocol here
    assert sched.nodes == []
    assert not sched.collection_is_completed


def test_collection_completes_only_when_every_worker_reported(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ("a",))])
    for node in h.nodes:
        h.sched.add_node(node)
    h.sched.add_node_collection(h.nodes[0], h.collection)
    assert not h.sched.collection_is_completed
    assert not h.sched.tests_finished
    h.sched.add_node_collection(h.nodes[1], h.collection)
    assert h.sched.collection_is_completed
    assert not h.sched.has_pending  # nothing scheduled yet
    h.sched.schedule()
    assert h.sched.has_pending
    assert h.state.selected == ("a", "b")


def test_only_ready_nodes_are_sent_one_per_worker(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ()), ("c", ()), ("d", ("a", "b"))], workers=2)
    h.start()
    assert h.running() == {"gw0": "a", "gw1": "b"}
    assert [len(n.sent) for n in h.nodes] == [1, 1]
    h.complete("b")
    assert h.running() == {"gw0": "a", "gw1": "c"}  # d still waits for a
    h.complete("a")
    assert h.running() == {"gw0": "d", "gw1": "c"}
    h.complete("c")
    h.complete("d")
    assert h.sched.tests_finished
    assert all(n.shutting_down for n in h.nodes)
    assert h.recorder.reports == []  # everything ran on workers


def test_idle_workers_beyond_the_nodes_left_to_start_go_early(harness: MakeHarness) -> None:
    """Each node that starts takes one worker: with fewer nodes left to start than idle
    workers, the extra ones can never be needed, and are let go at once (they end their
    sessions beside the last nodes); the ones that may be needed stay. Once nothing is
    left to start, a worker running its last node is let go too."""
    h = harness([("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ("a",))], workers=4)
    h.start()
    assert h.running() == {"gw0": "a"}
    # b, c and d are still to start: all three idle workers may be needed (b and d at once).
    assert [n.shutting_down for n in h.nodes] == [False, False, False, False]
    h.complete("a")
    assert h.running() == {"gw0": "b", "gw1": "d"}
    # Only c is left to start: one idle worker stays for it, the other goes.
    assert [n.shutting_down for n in h.nodes] == [False, False, False, True]
    h.complete("d")
    # gw1 and gw2 idle, c still the only one to start: gw2 goes too.
    assert [n.shutting_down for n in h.nodes] == [False, False, True, True]
    h.complete("b")
    # Nothing left to start: gw0 is told too, and ends once it has run c.
    assert h.running() == {"gw0": "c"}
    assert [n.shutting_down for n in h.nodes] == [True, True, True, True]
    h.complete("c")
    assert h.sched.tests_finished
    assert all(n.shutting_down for n in h.nodes)


def test_a_worker_with_queued_nodes_is_kept_for_a_crash_elsewhere(
    harness: MakeHarness, depth3: int
) -> None:
    """Nothing left to start, but gw1 still holds queued nodes: it is not let go, so the
    queue of a worker that crashes can still go to it."""
    h = harness([(t, ()) for t in "abcd"], workers=2, steal=True)
    h.start()
    assert h.pending() == {"gw0": ["a", "c"], "gw1": ["b", "d"]}
    assert not any(n.shutting_down for n in h.nodes)
    h.complete("b")  # gw1 runs its last node, d
    assert h.node("gw1").shutting_down and not h.node("gw0").shutting_down


def test_at_most_max_workers_nodes_in_flight(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ()), ("c", ())], workers=3, max_workers=2)
    h.start()
    assert h.running() == {"gw0": "a", "gw1": "b"}
    h.complete("a")
    assert h.running() == {"gw0": "c", "gw1": "b"}


def test_nodes_sharing_a_file_do_not_overlap(harness: MakeHarness) -> None:
    h = harness(
        [("a", ()), ("b", ()), ("c", ())],
        workers=3,
        files={"a": ("store.ts",), "b": ("store.ts",)},
    )
    h.start()
    assert h.running() == {"gw0": "a", "gw1": "c"}
    h.complete("a")
    assert h.running() == {"gw0": "b", "gw1": "c"}


def test_failure_blocks_dependents_and_reports_them_on_the_controller(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ("a",)), ("c", ("b",)), ("x", ())], workers=2)
    h.start()
    h.complete("a", "failed")
    assert h.state.outcomes["b"] == NodeOutcome("blocked", "a", "blocked: dependency a failed")
    assert h.state.outcomes["c"].root == "a"
    assert h.recorder.skipped() == {
        nid("b"): "blocked: dependency a failed",
        nid("c"): "blocked: dependency a failed (via b)",
    }
    assert h.recorder.events[:4] == [
        ("logstart", nid("b")),
        ("setup:skipped", nid("b")),
        ("teardown:passed", nid("b")),
        ("logfinish", nid("b")),
    ]
    setup = h.recorder.reports[0]
    assert not hasattr(setup, "node")
    assert setup.location == (PLAN, 3, "task b: name b")
    assert setup.longrepr == (PLAN, 4, "blocked: dependency a failed")
    assert ("task_id", "b") in setup.user_properties
    assert h.running() == {"gw1": "x"}  # the independent node still runs
    assert not h.sched.tests_finished
    h.complete("x")
    assert h.sched.tests_finished


def test_a_node_without_a_recorded_outcome_counts_as_skipped(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ("a",))], workers=1)
    h.start()
    node = h.nodes[0]
    h.sched.mark_test_complete(node, node.sent[-1])
    assert h.recorder.skipped() == {nid("b"): "blocked: dependency a was skipped"}


def test_a_deselected_dependency_that_failed_last_time_blocks_at_schedule(
    harness: MakeHarness,
) -> None:
    h = harness(
        [("a", ()), ("b", ("a",)), ("c", ())],
        collection=[nid("b"), nid("c")],
        last_outcomes={"a": "failed"},
    )
    h.start()
    assert h.state.selected == ("b", "c")
    assert h.recorder.skipped() == {
        nid("b"): "blocked: dependency a not selected (last recorded outcome failed)"
    }
    assert h.running() == {"gw0": "c"}


def test_user_tests_run_as_independent_work(harness: MakeHarness) -> None:
    h = harness(
        [("a", ()), ("b", ("a",))],
        collection=[nid("a"), nid("b"), "tests/test_x.py::test_one"],
    )
    h.start()
    assert h.running() == {"gw0": "a", "gw1": "test_one"}
    h.complete("test_one")
    assert "tests/test_x.py::test_one" not in h.state.outcomes
    h.complete("a")
    h.complete("b")
    assert h.sched.tests_finished


def test_collection_mismatch_is_reported_like_xdist(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ())])
    for node in h.nodes:
        h.sched.add_node(node)
    h.sched.add_node_collection(h.nodes[0], [nid("a"), nid("b")])
    h.sched.add_node_collection(h.nodes[1], [nid("b"), nid("a")])
    h.sched.schedule()
    [report] = h.recorder.collect_reports
    assert report.failed
    assert report.nodeid == "gw1"
    assert "Different tests were collected between gw0 and gw1" in str(report.longrepr)
    assert h.sched.tests_finished
    assert [n.sent for n in h.nodes] == [[], []]


def test_a_crash_fails_the_node_blocks_dependents_and_a_replacement_continues(
    harness: MakeHarness,
) -> None:
    h = harness([("a", ()), ("b", ("a",)), ("c", ()), ("d", ("c",))], workers=1)
    h.start()
    assert h.running() == {"gw0": "a"}
    crashed = h.nodes[0]
    assert h.sched.remove_node(crashed) == nid("a")
    assert h.state.outcomes["a"].status == "failed"
    assert h.recorder.skipped() == {nid("b"): "blocked: dependency a failed"}
    assert not h.sched.tests_finished
    # xdist replaces the worker: add_node, then its collection, then schedule().
    clone = MockNode("gw1")
    h.sched.add_node(clone)
    h.sched.add_node_collection(clone, h.collection)
    h.sched.schedule()
    assert h.sched.collection is not None
    assert [h.sched.collection[i] for i in clone.sent] == [nid("c")]
    h.nodes.append(clone)
    h.complete("c")
    h.complete("d")
    assert h.sched.tests_finished


def test_a_replacement_with_another_collection_gets_no_work(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ())], workers=1)
    h.start()
    h.sched.remove_node(h.nodes[0])
    clone = MockNode("gw1")
    h.sched.add_node(clone)
    h.sched.add_node_collection(clone, [nid("b")])
    h.sched.schedule()
    assert clone.sent == []


def test_crash_with_restarts_disabled_reports_the_undispatched(harness: MakeHarness) -> None:
    h = harness(
        [("a", ()), ("b", ()), ("c", ("b",)), ("d", ())],
        workers=2,
        args=["--max-worker-restart=0"],
    )
    h.start()
    assert h.running() == {"gw0": "b", "gw1": "a"}  # b heads the longer path
    assert h.sched.remove_node(h.node("gw1")) == nid("a")
    reason = "not run: worker gw1 crashed and worker restarting is disabled"
    assert h.recorder.skipped() == {nid("c"): reason, nid("d"): reason}
    assert h.sched.stop_reason == reason
    assert h.state.outcomes["d"] == NodeOutcome("skipped", reason=reason)
    assert not h.sched.tests_finished  # b still runs
    h.complete("b")
    assert h.sched.tests_finished
    assert h.node("gw0").shutting_down


def test_exitfirst_stops_dispatch_and_reports_the_rest(harness: MakeHarness) -> None:
    session = FakeSession()
    h = harness(
        [("a", ()), ("b", ()), ("c", ()), ("d", ("b",))], workers=2, args=["-x"], session=session
    )
    h.start()
    assert h.running() == {"gw0": "b", "gw1": "a"}
    session.shouldfail = "stopping after 1 failures"  # what pytest's Session sets on the report
    h.complete("a", "failed")
    reason = "not run: stopped after the first failure (-x/--maxfail=1)"
    assert h.recorder.skipped() == {nid("c"): reason, nid("d"): reason}
    assert h.running() == {"gw0": "b"}  # in flight (b heads the longer path): it may finish
    assert h.node("gw1").shutting_down  # idle and nothing more to do
    h.complete("b")
    assert h.sched.tests_finished
    assert len(h.recorder.skipped()) == 2


def test_maxfail_counts_failures_itself(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ()), ("c", ()), ("d", ())], workers=2, args=["--maxfail=2"])
    h.start()
    h.complete("a", "failed")
    assert h.recorder.skipped() == {}
    h.complete("b", "failed")
    reason = "not run: stopped after 2 failures (--maxfail=2)"
    assert h.recorder.skipped() == {nid("d"): reason}


def test_finish_session_reports_what_xdist_left_undispatched(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ("a",))], workers=1)
    h.start()
    h.sched.finish_session()
    assert h.recorder.skipped() == {
        nid("b"): "not run: the xdist session ended before it was dispatched"
    }
    h.sched.finish_session()  # idempotent
    assert len(h.recorder.skipped()) == 1


# -- queued nodes, sent in batches ---------------------------------------------------------


@pytest.fixture
def depth3(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pin the queue depth, so these tests read the same whatever the constants are."""
    monkeypatch.setattr(scheduler, "QUEUE_DEPTH", 3)
    monkeypatch.setattr(scheduler, "QUEUE_DEPTH_MAX", 3)
    return 3


def test_idle_workers_get_their_node_and_a_queue_in_one_message(
    harness: MakeHarness, depth3: int
) -> None:
    h = harness([(t, ()) for t in "abcdefghijkl"], workers=2, steal=True)
    h.start()
    # Each worker's first node, then the best ready nodes round by round, in one message.
    assert h.pending() == {"gw0": ["a", "c", "e", "g"], "gw1": ["b", "d", "f", "h"]}
    assert h.messages("gw0") == [["a", "c", "e", "g"]]
    assert h.messages("gw1") == [["b", "d", "f", "h"]]
    assert h.sched.queue is not None and h.sched.queue.ready_nodes() == ["i", "j", "k", "l"]
    h.complete("a")
    h.complete("c")
    assert h.pending()["gw0"] == ["e", "g"]  # not topped up while it still has a queue
    assert len(h.messages("gw0")) == 1
    h.complete("e")
    # Only its running node left: topped up to the depth, in one message.
    assert h.pending()["gw0"] == ["g", "i", "j", "k"]
    assert h.messages("gw0") == [["a", "c", "e", "g"], ["i", "j", "k"]]
    for task in "bdf":
        h.complete(task)
    assert h.messages("gw1") == [["b", "d", "f", "h"], ["l"]]
    for task in "gijkhl":
        h.complete(task)
    assert h.sched.tests_finished
    assert (h.sched.messages, h.sched.queued) == (4, 10)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_a_worker_holds_at_most_queue_depth_queued_nodes(
    harness: MakeHarness, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    monkeypatch.setattr(scheduler, "QUEUE_DEPTH", depth)
    monkeypatch.setattr(scheduler, "QUEUE_DEPTH_MAX", depth)
    h = harness([(f"n{i:02d}", ()) for i in range(30)], workers=3, steal=True)
    h.start()
    assert [len(p) for p in h.pending().values()] == [1 + depth] * 3
    assert h.sched.queue is not None
    assert len(h.sched.queue.ready_nodes()) == 30 - 3 * (1 + depth)  # the rest wait here
    while not h.sched.tests_finished:
        for gid in ("gw2", "gw0", "gw1"):
            running = h.running()
            if gid in running:
                h.complete(running[gid])
            assert all(len(p) <= 1 + depth for p in h.pending().values())
    sent = sorted(i for node in h.nodes for i in node.sent)
    assert sent == list(range(30))  # each node sent once
    messages = [m for node in h.nodes for m in node.messages]
    assert max(len(m) for m in messages) == 1 + depth
    assert len(messages) == h.sched.messages < 30


@pytest.mark.parametrize(
    ("ready", "workers", "depth"),
    [
        (0, 5, 3),
        (29, 5, 3),
        (30, 5, 3),
        (60, 5, 6),
        (159, 5, 15),
        (300, 5, 16),
        (10**6, 5, 16),
        (40, 1, 16),
        (40, 0, 16),
    ],
)
def test_queues_grow_only_while_the_ready_backlog_is_deep(
    ready: int, workers: int, depth: int
) -> None:
    assert scheduler.queue_depth(ready, workers) == depth


def test_a_deep_backlog_fills_deeper_queues_and_they_shrink_with_it(
    harness: MakeHarness,
) -> None:
    h = harness([(f"n{i:03d}", ()) for i in range(200)], workers=2, steal=True)
    h.start()
    # 198 ready after each worker took its first node: far more than 2 x 2 x 16.
    assert [len(p) for p in h.pending().values()] == [1 + scheduler.QUEUE_DEPTH_MAX] * 2
    while not h.sched.tests_finished:
        for gid in ("gw0", "gw1"):
            running = h.running()
            if gid in running:
                h.complete(running[gid])
            assert all(len(p) <= 1 + scheduler.QUEUE_DEPTH_MAX for p in h.pending().values())
    sent = sorted(i for node in h.nodes for i in node.sent)
    assert sent == list(range(200))  # each node sent once
    last = [node.messages[-1] for node in h.nodes]
    # The backlog ran low: the last top-ups are back to the usual depth.
    assert all(len(m) <= scheduler.QUEUE_DEPTH for m in last)
    assert h.sched.messages < 200 / scheduler.QUEUE_DEPTH


def test_without_steal_nothing_is_queued(harness: MakeHarness, depth3: int) -> None:
    h = harness([(t, ()) for t in "abcd"], workers=2)
    h.start()
    assert h.pending() == {"gw0": ["a"], "gw1": ["b"]}
    h.complete("a")
    assert h.messages("gw0") == [["a"], ["c"]]


def test_long_nodes_are_never_queued_nor_queued_behind(harness: MakeHarness, depth3: int) -> None:
    # a: long and first in plan order; d: long, so nothing queues in front of it.
    estimates = {"a": 2.0, "d": 2.0, **{t: 0.01 for t in "bcefgh"}}
    h = harness([(t, ()) for t in "abcdefgh"], workers=2, steal=True, estimates=estimates)
    h.start()
    # Ready by rank: a (2.0), d (2.0), then the short ones. a and d run, alone.
    assert h.pending() == {"gw0": ["a"], "gw1": ["d"]}
    assert (h.messages("gw0"), h.messages("gw1")) == ([["a"]], [["d"]])
    h.complete("d")
    # b runs on gw1 with three short ones queued behind it; never any behind a.
    assert h.pending() == {"gw0": ["a"], "gw1": ["b", "c", "e", "f"]}
    assert h.messages("gw1") == [["d"], ["b", "c", "e", "f"]]


def test_a_long_ready_node_is_not_passed_by_a_queued_short_one(
    harness: MakeHarness, depth3: int
) -> None:
    # p and q are short but head paths of 2 s; L (1 s) is ready next, s (short) after it.
    nodes = [("p", ()), ("p2", ("p",)), ("q", ()), ("q2", ("q",)), ("L", ()), ("s", ())]
    estimates = {"p": 0.01, "p2": 2.0, "q": 0.01, "q2": 2.0, "L": 1.0, "s": 0.01}
    h = harness(nodes, workers=2, steal=True, estimates=estimates)
    h.start()
    assert h.pending() == {"gw0": ["p"], "gw1": ["q"]}  # s may not jump ahead of L
    h.complete("p")
    assert h.pending() == {"gw0": ["p2"], "gw1": ["q"]}


def test_a_critical_node_is_never_queued_nor_queued_behind(
    harness: MakeHarness, depth3: int
) -> None:
    # x1 -> x2 -> x3 is the critical path (3 >= 5 nodes / 2 workers); y and z have slack.
    nodes = [("x1", ()), ("x2", ("x1",)), ("x3", ("x2",)), ("y", ()), ("z", ())]
    h = harness(nodes, workers=2, steal=True)
    h.start()
    assert h.pending() == {"gw0": ["x1"], "gw1": ["y", "z"]}  # nothing behind x1
    assert h.messages("gw0") == [["x1"]]
    h.complete("x1")
    assert h.pending() == {"gw0": ["x2"], "gw1": ["y", "z"]}  # x2 started at once
    assert h.messages("gw0") == [["x1"], ["x2"]]


def test_a_deep_backlog_still_never_queues_a_critical_node_nor_behind_one(
    harness: MakeHarness,
) -> None:
    # x01 -> ... -> x60 is critical (60 >= 100 nodes / 2 workers); the 40 y have slack.
    chain = [(f"x{i:02d}", (f"x{i - 1:02d}",) if i > 1 else ()) for i in range(1, 61)]
    nodes = [*chain, *[(f"y{i:02d}", ()) for i in range(40)]]
    h = harness(nodes, workers=2, steal=True)
    h.start()
    pending = h.pending()
    assert pending["gw0"] == ["x01"]  # nothing queued behind the critical node
    # 39 ready once each worker has its first node: a queue deeper than 3 behind a node
    # with slack, and none of it critical.
    assert len(pending["gw1"]) == 1 + scheduler.queue_depth(39, 2) == 10
    assert not any(t.startswith("x") for t in pending["gw1"])
    h.complete("x01")
    assert h.pending()["gw0"] == ["x02"]  # the next critical node starts at once


def test_a_queued_node_holds_its_files(harness: MakeHarness, depth3: int) -> None:
    # c and e write the same file: once c is queued, e waits and f, g, h go before it.
    files = {"c": ("shared.txt",), "e": ("shared.txt",)}
    h = harness([(t, ()) for t in "abcdefgh"], workers=2, steal=True, files=files)
    h.start()
    assert h.pending() == {"gw0": ["a", "c", "f", "h"], "gw1": ["b", "d", "g"]}
    assert h.sched.queue is not None and h.sched.queue.ready_nodes() == ["e"]
    h.complete("a")
    h.complete("c")  # frees the file; e waits for a worker's queue to run low
    h.complete("f")
    assert h.messages("gw0") == [["a", "c", "f", "h"], ["e"]]


def test_short_nodes_of_unknown_duration_check_files_only() -> None:
    from pytest_conductor.acceptance.criteria import Criterion
    from pytest_conductor.scheduling.scheduler import short_nodes

    state = make_state(Path("/nowhere"), [("a", ()), ("b", ()), ("c", ()), ("d", ())])
    state.criteria["a"] = [Criterion("exists", {"exists": "x"})]
    state.criteria["b"] = [Criterion("run", {"run": "make"})]
    state.weights["c"] = 0.002  # measured last time
    state.weights["d"] = 3.0
    assert short_nodes(state, ["a", "b", "c", "d"]) == {"a", "c"}


def test_exitfirst_takes_back_every_queued_node_and_reports_them_not_run(
    harness: MakeHarness, depth3: int
) -> None:
    session = FakeSession()
    h = harness(
        [(t, ()) for t in "abcdefghij"], workers=2, args=["-x"], session=session, steal=True
    )
    h.start()
    assert h.pending() == {"gw0": ["a", "c", "e", "g"], "gw1": ["b", "d", "f", "h"]}
    session.shouldfail = "stopping after 1 failures"
    h.complete("a", "failed")  # gw0 went on to c already, so e and g are asked back
    reason = "not run: stopped after the first failure (-x/--maxfail=1)"
    assert h.recorder.skipped() == {nid("i"): reason, nid("j"): reason}
    # One request per item: xdist's steal gives back all it is asked for, or none.
    assert h.steals("gw0") == [["e"], ["g"]]
    assert h.steals("gw1") == [["d"], ["f"], ["h"]]
    # gw1 finished b before it read the requests: d is first in line here, yet it never
    # started, since the worker gave it back.
    h.complete("b")
    h.give_back("gw1", "d")
    h.give_back("gw1", "f")
    h.give_back("gw1", "h")
    assert h.pending()["gw1"] == []
    assert h.node("gw1").shutting_down  # idle and nothing more to do
    # gw0 had started e already (an empty answer); g comes back.
    h.complete("c")
    h.give_back("gw0")
    h.give_back("gw0", "g")
    assert h.pending()["gw0"] == ["e"]
    h.complete("e")
    assert h.sched.tests_finished
    assert h.recorder.skipped() == {nid(t): reason for t in "dfghij"}
    assert all(h.state.outcomes[t].status == "skipped" for t in "dfghij")


def test_a_queued_node_that_a_finished_worker_never_ran_is_reported(
    harness: MakeHarness, depth3: int
) -> None:
    h = harness([(t, ()) for t in "abcdefgh"], workers=2, steal=True)
    h.start()
    h.complete("a")  # gw0 now runs c, with e and g behind it
    gw0 = h.node("gw0")
    gw0.workeroutput = {"shouldfail": "stopping after 1 failures"}
    h.sched.finish_session()
    skipped = h.recorder.skipped()
    assert all(skipped[nid(t)].startswith("not run:") for t in "ceg")  # gw0 ran none of them
    # Queued behind b on a worker that may still run b.
    assert set(skipped) == {nid(t) for t in "cegdfh"}
    assert h.pending() == {"gw0": [], "gw1": ["b"]}


def test_a_crash_gives_the_queued_nodes_to_another_worker(
    harness: MakeHarness, depth3: int
) -> None:
    h = harness([(t, ()) for t in "abcdefgh"], workers=2, steal=True)
    h.start()
    assert h.pending() == {"gw0": ["a", "c", "e", "g"], "gw1": ["b", "d", "f", "h"]}
    assert h.sched.remove_node(h.node("gw0")) == nid("a")
    assert h.state.outcomes["a"].status == "failed"
    assert h.recorder.skipped() == {}  # c, e and g never started: ready again
    for task in "bdf":
        h.complete(task)
    assert h.messages("gw1") == [["b", "d", "f", "h"], ["c", "e", "g"]]
    for task in "hceg":
        h.complete(task)
    assert h.sched.tests_finished


def test_a_crash_past_the_limit_reports_every_queued_node_not_run(
    harness: MakeHarness, depth3: int
) -> None:
    h = harness(
        [(t, ()) for t in "abcdefgh"],
        workers=2,
        steal=True,
        args=["--max-worker-restart=0"],
    )
    h.start()
    h.sched.remove_node(h.node("gw0"))
    reason = "not run: worker gw0 crashed and worker restarting is disabled"
    assert h.recorder.skipped() == {nid(t): reason for t in "ceg"}
    assert h.steals("gw1") == [["d"], ["f"], ["h"]]
    h.give_back("gw1", "d")
    h.give_back("gw1", "f")
    h.give_back("gw1", "h")
    h.complete("b")
    assert h.sched.tests_finished
    assert h.recorder.skipped() == {nid(t): reason for t in "cdefgh"}


def test_unknown_completion_is_refused(harness: MakeHarness) -> None:
    h = harness([("a", ()), ("b", ())], workers=2)
    h.start()
    with pytest.raises(AssertionError, match="completed item 1, not 0"):
        h.sched.mark_test_complete(h.nodes[0], 1)


# -- the xdist hooks ---------------------------------------------------------------------


def test_make_scheduler_only_under_a_track(pytester: pytest.Pytester) -> None:
    from xdist.remote import Producer

    config = pytester.parseconfig("--tx=popen")
    assert xdist_hooks.pytest_xdist_make_scheduler(config, Producer("x", enabled=False)) is None
    config.stash[STATE_KEY] = make_state(pytester.path, [("a", ())])
    sched = xdist_hooks.pytest_xdist_make_scheduler(config, Producer("x", enabled=False))
    assert isinstance(sched, DagScheduling)
    assert config.stash[xdist_hooks.SCHEDULER_KEY] is sched


def test_handlecrashitem_turns_the_crash_into_a_call_failure(harness: MakeHarness) -> None:
    h = harness([("a", ())])
    report = pytest.TestReport(
        nid("a"),
        (PLAN, None, PLAN),
        {},
        "failed",
        "worker 'gw0' crashed",
        "???",  # type: ignore[arg-type]
    )
    xdist_hooks.pytest_handlecrashitem(nid("a"), report, h.sched)
    assert report.when == "call"
    assert report.location == (PLAN, 2, "task a: name a")
    assert report.user_properties == [("task_id", "a")]


@pytest.mark.parametrize(
    ("args", "cap_width", "expected"),
    [
        # expected: numprocesses, maxprocesses, a warning returned
        ((), (5, 3), (3, None, False)),  # no -n: min(cap, width)
        ((), (2, 9), (2, None, False)),
        ((), (5, 1), (None, None, False)),  # a chain: in-process
        (("-n", "0"), (5, 3), (0, None, False)),
        (("-n", "2"), (5, 3), (2, None, False)),
        (("-n", "8"), (5, 3), (5, None, True)),
        (("-n", "auto"), (5, 3), ("auto", 3, False)),
        (("-n", "auto", "--maxprocesses=2"), (5, 3), ("auto", 2, False)),
        (("--pdb",), (5, 3), (None, None, False)),  # xdist refuses --pdb with workers
        (("--tx=popen",), (5, 3), (None, None, False)),  # a hand-made --tx wins
    ],
)
def test_choose_worker_count(
    pytester: pytest.Pytester,
    args: tuple[str, ...],
    cap_width: tuple[int, int],
    expected: tuple[int | str | None, int | None, bool],
) -> None:
    config = pytester.parseconfig(*args)
    warning = xdist_hooks.choose_worker_count(config, *cap_width)
    numprocesses, maxprocesses, warned = expected
    assert config.option.numprocesses == numprocesses
    assert config.option.maxprocesses == maxprocesses
    assert (warning is not None) == warned
    if warning:
        assert "-n 8" in warning and "using 5" in warning


def test_choose_worker_count_leaves_workers_alone(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    config.workerinput = {}  # type: ignore[attr-defined]
    assert xdist_hooks.choose_worker_count(config, 5, 3) is None
    assert config.option.numprocesses is None


@pytest.mark.parametrize(
    ("args", "seen"),
    [
        ((), 3),  # the plan is 3 wide
        (("-n", "0"), 0),
        (("-n", "8"), 5),
        (("--collect-only",), None),
    ],
)
def test_plugins_starting_early_see_the_worker_count_of_the_run(
    pytester: pytest.Pytester,
    write_plan: PlanWriter,
    args: tuple[str, ...],
    seen: int | None,
) -> None:
    """pytest-cov picks its xdist or single-process mode in pytest_load_initial_conftests,
    before pytest_cmdline_main: the count must already be chosen there."""
    write_plan(
        """
        dag:
          nodes:
            - {id: a, depends_on: []}
            - {id: b, depends_on: []}
            - {id: c, depends_on: []}
        """
    )
    pytester.makepyfile(
        early_probe="""
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_load_initial_conftests(early_config):
            early_config.stash[KEY] = early_config.known_args_namespace.numprocesses

        KEY = pytest.StashKey()
        """
    )
    pytester.syspathinsert()
    config = pytester.parseconfig("-p", "early_probe", "--conductor-track=t", *args)
    import early_probe

    assert config.stash[early_probe.KEY] == seen


def test_a_bad_plan_leaves_the_early_choice_to_the_usage_error(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan("dag: [", raw=True)
    result = pytester.runpytest("--conductor-track=t")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: conductor: *plan.md*"])
