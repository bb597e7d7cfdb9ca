"""What pytest-conductor relies on inside pytest-xdist (and pytest), asserted by name.

These tests fail loudly when a new xdist changes an internal that the DAG scheduler or
the worker patch uses: see DESIGN §9 and ``pytest_conductor/scheduling/worker_patch.py``.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

import execnet
import pytest
import xdist.dsession
import xdist.newhooks
import xdist.remote
import xdist.report
import xdist.workermanage
from xdist.scheduler.protocol import Scheduling

from pytest_conductor.scheduling import worker_patch
from pytest_conductor.scheduling.scheduler import DagScheduling


def test_installed_xdist_is_supported() -> None:
    found = worker_patch.xdist_version()
    assert found is not None
    low, high = worker_patch.SUPPORTED_XDIST
    assert low <= found[:2] < high, found
    worker_patch.check_supported()


def test_an_unsupported_version_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_patch, "version", lambda _name: "3.9.0")
    with pytest.raises(pytest.UsageError, match=r"pytest-xdist 3\.9\.0 is not supported"):
        worker_patch.check_supported()


def test_a_changed_worker_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(xdist.remote.WorkerInteractor, "run_one_test")
    with pytest.raises(pytest.UsageError, match="WorkerInteractor lacks run_one_test"):
        worker_patch.check_supported()


def test_worker_interactor_source_has_what_the_patch_relies_on() -> None:
    # check_supported skips this when no source is shipped; here the source must exist.
    for method, fragments in worker_patch._REQUIRED_SOURCE.items():
        source = inspect.getsource(getattr(xdist.remote.WorkerInteractor, method))
        for fragment in fragments:
            assert fragment in source, (method, fragment)


def test_scheduling_protocol_is_what_dag_scheduling_implements() -> None:
    wanted = {name for name in vars(Scheduling) if not name.startswith("_")}
    assert wanted == {
        "nodes",
        "collection_is_completed",
        "tests_finished",
        "has_pending",
        "add_node",
        "add_node_collection",
        "mark_test_complete",
        "mark_test_pending",
        "remove_pending_tests_from_node",
        "remove_node",
        "schedule",
    }
    for name in wanted:
        theirs = getattr(Scheduling, name)
        ours = getattr(DagScheduling, name)
        if isinstance(theirs, property):
            assert isinstance(ours, property), name
        else:
            assert list(inspect.signature(ours).parameters) == list(
                inspect.signature(theirs).parameters
            ), name


def test_dsession_calls_and_attributes() -> None:
    dsession = xdist.dsession.DSession
    for name in (
        "worker_runtest_protocol_complete",  # -> sched.mark_test_complete
        "worker_testreport",  # reports arrive first, on the same queue
        "worker_errordown",  # -> sched.remove_node, then handle_crashitem
        "worker_workerfinished",
        "handle_crashitem",
        "triggershutdown",
        "pytest_runtestloop",
    ):
        assert callable(getattr(dsession, name, None)), name
    assert "shouldstop" in dsession.__annotations__
    assert "self.sched = self.config.hook.pytest_xdist_make_scheduler(" in inspect.getsource(
        dsession.pytest_runtestloop
    )
    assert list(inspect.signature(xdist.dsession.get_default_max_worker_restart).parameters) == [
        "config"
    ]
    crash = inspect.getsource(dsession.handle_crashitem)
    assert 'when="???"' in crash and "pytest_handlecrashitem" in crash


def test_steal_gives_queued_items_back_through_unscheduled() -> None:
    # The worker queue of DagScheduling: on a stop, the controller asks a worker for its
    # queued items back; the worker answers with those it had not started (all or none),
    # and dsession hands them to sched.remove_pending_tests_from_node.
    assert list(inspect.signature(xdist.workermanage.WorkerController.send_steal).parameters) == [
        "self",
        "indices",
    ]
    steal = inspect.getsource(xdist.remote.WorkerInteractor.steal)
    assert 'sendevent("unscheduled", indices=stolen)' in steal
    assert "self.steal(" in inspect.getsource(xdist.remote.WorkerInteractor.handle_command)
    unscheduled = inspect.getsource(xdist.dsession.DSession.worker_unscheduled)
    assert "self.sched.remove_pending_tests_from_node(node, indices)" in unscheduled
    assert '"unscheduled"' in inspect.getsource(
        xdist.workermanage.WorkerController.process_from_remote
    )


def test_hookspecs() -> None:
    make = xdist.newhooks.pytest_xdist_make_scheduler
    assert list(inspect.signature(make).parameters) == ["config", "log"]
    crash = xdist.newhooks.pytest_handlecrashitem
    assert list(inspect.signature(crash).parameters) == ["crashitem", "report", "sched"]


def test_worker_controller_and_helpers() -> None:
    controller = xdist.workermanage.WorkerController
    assert callable(controller.send_runtest_some)
    assert callable(controller.shutdown)
    assert isinstance(controller.shutting_down, property)
    assert list(inspect.signature(xdist.report.report_collection_diff).parameters) == [
        "from_collection",
        "to_collection",
        "from_id",
        "to_id",
    ]
    assert hasattr(xdist.workermanage, "parse_tx_spec_config") or hasattr(
        xdist.workermanage, "parse_spec_config"
    )


def test_pytest_session_is_registered_as_session(pytester: pytest.Pytester) -> None:
    # The scheduler reads session.shouldfail / shouldstop through this name.
    pytester.makeconftest(
        """
        def pytest_sessionstart(session):
            assert session.config.pluginmanager.getplugin("session") is session
            assert session.shouldfail is False and session.shouldstop is False
        """
    )
    pytester.makepyfile("def test_ok(): pass")
    pytester.runpytest_inprocess("-p", "no:xdist").assert_outcomes(passed=1)


# -- the worker patch against the real WorkerInteractor ----------------------------------


@dataclass
class FakeChannel:
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gateway = type(
            "Gateway", (), {"execmodel": execnet.gateway_base.get_execmodel("thread")}
        )()

    def send(self, item: tuple[str, dict[str, Any]]) -> None:
        self.sent.append(item)

    def setcallback(self, callback: object, endmarker: object) -> None:
        pass


@dataclass(frozen=True)
class FakeItem:
    nodeid: str


@dataclass
class FakeSession:
    items: list[FakeItem]
    shouldfail: bool = False
    shouldstop: bool = False


class ProtocolRecorder:
    """Stands in for ``config.hook`` in the worker loop: records each runtest_protocol."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []  # nodeids of item, nextitem
        self.ran = threading.Event()

    def pytest_runtest_protocol(self, item: FakeItem, nextitem: FakeItem | None) -> bool:
        self.calls.append((item.nodeid, nextitem.nodeid if nextitem else None))
        self.ran.set()
        return True


@dataclass
class HookConfig:
    hook: ProtocolRecorder


def make_worker(
    pytester: pytest.Pytester, *, patched: bool
) -> tuple[Any, FakeChannel, ProtocolRecorder]:
    """A real WorkerInteractor on a fake channel, items and hook (no process, no items)."""
    config = pytester.parseconfig("-p", "no:cacheprovider")
    config.workerinput = {"workerid": "gw0", "testrunuid": "x"}  # type: ignore[attr-defined]
    channel = FakeChannel()
    interactor: Any = xdist.remote.WorkerInteractor(config, channel)  # type: ignore[arg-type]
    if patched:
        assert worker_patch.find_interactor(config) is interactor
        worker_patch.install(config)
    interactor.session = FakeSession(items=[FakeItem("item0"), FakeItem("item1")])
    recorder = ProtocolRecorder()
    # Only the loop's own hook call is observed: real plugins would want real items.
    interactor.config = HookConfig(recorder)
    return interactor, channel, recorder


def run_loop(interactor: Any) -> threading.Thread:
    thread = threading.Thread(
        target=interactor.pytest_runtestloop, args=(interactor.session,), daemon=True
    )
    thread.start()
    return thread


def test_unpatched_worker_waits_for_the_next_item(pytester: pytest.Pytester) -> None:
    """The reason for the patch: xdist runs item 0 only once item 1 (or shutdown) came."""
    interactor, _, recorder = make_worker(pytester, patched=False)
    interactor.torun.put(0)
    thread = run_loop(interactor)
    assert not recorder.ran.wait(0.3)
    interactor.handle_command(("shutdown", {}))
    thread.join(5)
    assert recorder.calls == [("item0", None)]


def test_patched_worker_runs_each_item_as_soon_as_it_arrives(pytester: pytest.Pytester) -> None:
    interactor, channel, recorder = make_worker(pytester, patched=True)
    interactor.torun.put(0)
    thread = run_loop(interactor)
    assert recorder.ran.wait(5), "item 0 did not run before item 1 was sent"
    recorder.ran.clear()
    interactor.handle_command(("runtests", {"indices": [1]}))
    assert recorder.ran.wait(5)
    interactor.handle_command(("shutdown", {}))
    thread.join(5)
    assert not thread.is_alive()
    assert recorder.calls == [("item0", None), ("item1", None)]
    completions = [kw for name, kw in channel.sent if name == "runtest_protocol_complete"]
    assert [c["item_index"] for c in completions] == [0, 1]
    assert all(isinstance(c["duration"], float) for c in completions)


def test_install_does_nothing_outside_a_worker(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    worker_patch.install(config)  # no workerinput: no interactor needed, no error
    assert worker_patch.find_interactor(config) is None


# -- remote workers: the controller's extra channel rides in workerinput ----------------


def test_configure_node_runs_before_workerinput_is_sent() -> None:
    """scheduling/remote.py adds an execnet channel to ``node.workerinput`` in
    ``pytest_configure_node``: xdist must send workerinput after that hook, over the
    gateway the hook sees as ``node.gateway``."""
    setup = inspect.getsource(xdist.workermanage.WorkerController.setup)
    hook = setup.index("self.config.hook.pytest_configure_node(node=self)")
    sent = setup.index("self.channel.send((self.workerinput,")
    assert hook < sent
    assert "self.gateway = gateway" in inspect.getsource(xdist.workermanage.WorkerController)
    remote_source = inspect.getsource(xdist.remote)
    assert "config.workerinput = workerinput" in remote_source


def test_workeroutput_is_sent_after_every_sessionfinish() -> None:
    """The report plugin puts a forwarded worker's changed files in ``workeroutput`` from
    its own ``pytest_sessionfinish``; xdist's wrapper sends workeroutput after it."""
    finish = inspect.getsource(xdist.remote.WorkerInteractor.pytest_sessionfinish)
    assert "hookwrapper=True" in finish
    assert finish.index("yield") < finish.index('"workerfinished", workeroutput=workeroutput')
    assert list(inspect.signature(xdist.newhooks.pytest_configure_node).parameters) == ["node"]
    assert list(inspect.signature(xdist.newhooks.pytest_testnodedown).parameters) == [
        "node",
        "error",
    ]


def test_execnet_sends_a_channel_inside_a_dict() -> None:
    """What the remote link relies on: a channel made here arrives usable over there."""
    gateway = execnet.makegateway("popen")
    try:
        extra = gateway.newchannel()
        received: list[object] = []
        done = threading.Event()
        extra.setcallback(lambda item: (received.append(item), done.set()))
        channel = gateway.remote_exec(
            "data = channel.receive(); data['link'].send(('hello', data['n']))"
        )
        channel.send({"link": extra, "n": 1})
        assert done.wait(30)
        assert received == [("hello", 1)]
    finally:
        gateway.exit()
