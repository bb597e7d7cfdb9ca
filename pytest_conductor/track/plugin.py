"""The per-run plugin of a track: registered in pytest_configure only under --conductor-track."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_conductor.graph.algorithms import priority_order
from pytest_conductor.graph.blocking import NodeOutcome, blocked_by
from pytest_conductor.scheduling.skip_reports import report_not_run, stopped_reason
from pytest_conductor.state import ConductorState
from pytest_conductor.track.items import PlanFile, TaskItem
from pytest_conductor.track.loading import (
    CACHE_DURATIONS,
    CACHE_OUTCOMES,
    WORKER_STATE,
    pack_state,
)

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

__all__ = ["TrackPlugin"]


class TrackPlugin:
    def __init__(self, state: ConductorState) -> None:
        self.state = state
        self._nodeids: dict[str, str] = {}  # task id -> item id, as reports name them
        self._summarizing = False  # the terminal summary has begun
        self._packed: bytes | None = None  # the plan for xdist workers, packed once
        self._selected: tuple[tuple[str, ...], frozenset[str]] = ((), frozenset())

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: WorkerController) -> None:
        """Controller: hand each xdist worker the parsed plan, so it need not read and
        check plan.md again before its first node (see ``unpack_state``)."""
        if self._packed is None:
            config = node.config
            kinds = [k for found in config.hook.pytest_conductor_criterion_kinds() for k in found]
            self._packed = pack_state(self.state, kinds) or b""
        if self._packed:
            node.workerinput[WORKER_STATE] = self._packed

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> PlanFile | None:
        if file_path == self.state.settings.plan_path:
            return PlanFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, items: list[pytest.Item]
    ) -> None:
        if not any(isinstance(item, TaskItem) for item in items):
            # The plan lies outside the paths given: collect it anyway, before -k/--lf deselect.
            plan_file = PlanFile.from_parent(session, path=self.state.settings.plan_path)
            items.extend(session.genitems(plan_file))  # reports it as collected, like the rest

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """After deselection: order the track's nodes as one worker would run them.

        tryfirst, so that ``--collect-only`` already lists them in execution order.
        """
        state = self.state
        tasks = {item.task.id: item for item in session.items if isinstance(item, TaskItem)}
        state.selected = tuple(t for t in state.plan.ids if t in tasks)
        ranked = iter(
            [tasks[t] for t in priority_order(state.plan.deps, state.weights) if t in tasks]
        )
        # The user's own tests keep their places; the track's nodes fill theirs in run order.
        session.items[:] = [next(ranked) if isinstance(i, TaskItem) else i for i in session.items]

    # pytest-timeout: a node takes the limit as its own time limit instead of having the
    # plugin's timer end it. Its "thread" method ends the whole process with os._exit(),
    # which would leave the node's commands running and the run without a verdict.
    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        if not isinstance(item, TaskItem):
            return None
        limit = getattr(settings, "timeout", None)
        if isinstance(limit, (int, float)) and limit > 0:
            item.outer_limit = float(limit)
        return True

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool | None:
        return True if isinstance(item, TaskItem) else None

    @pytest.hookimpl(tryfirst=True)  # before the skipping plugin evaluates skip marks
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """In-process (and on a worker): a node whose dependency did not pass is skipped."""
        if not isinstance(item, TaskItem):
            return
        state = self.state
        if self._selected[0] is not state.selected:  # membership per node: a set, not a tuple
            self._selected = (state.selected, frozenset(state.selected))
        blocked = blocked_by(
            item.task.depends_on, state.outcomes, self._selected[1], state.last_outcomes
        )
        if blocked is not None:
            state.outcomes[item.task.id] = NodeOutcome("blocked", blocked.root, blocked.reason)
            # A skip mark (not pytest.skip()) so the report points at the node in plan.md.
            item.add_marker(pytest.mark.skip(reason=blocked.reason))

    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        """``-v`` shows each node's name after its outcome, passed or failed.

        Not in the short test summary (printed after every ``pytest_terminal_summary``):
        there the name would push the failure's reason off the line.
        """
        task_id = self.state.task_id_of(report.nodeid)
        if (
            task_id is None
            or report.when != "call"
            or hasattr(report, "wasxfail")
            or self._summarizing
        ):
            return None
        name = self.state.plan.node(task_id).name
        if report.passed:
            return "passed", ".", (f"PASSED ({name})", {"green": True})
        if report.failed:
            return "failed", "F", (f"FAILED ({name})", {"red": True})
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """In-process, after ``-x``/``--maxfail`` stopped the loop: report the nodes it
        never ran, as the xdist scheduler does, so every node shows in ``--junitxml``."""
        try:
            return (yield)
        finally:  # pytest raises session.Failed out of the loop when -x/--maxfail hit
            self._report_never_run(session)

    def _report_never_run(self, session: pytest.Session) -> None:
        config = session.config
        if hasattr(config, "workerinput") or config.pluginmanager.hasplugin("dsession"):
            return  # the xdist scheduler reports these itself
        maxfail = int(config.getoption("maxfail", 0) or 0)
        reason = stopped_reason(maxfail, session.shouldfail, session.shouldstop)
        if reason is None:
            return
        for item in session.items:
            if isinstance(item, TaskItem) and item.task.id not in self.state.outcomes:
                self.state.outcomes[item.task.id] = NodeOutcome("skipped", reason=reason)
                props = [("task_id", item.task.id)]
                report_not_run(config, item.nodeid, item.location, reason, props)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record each node's outcome as soon as its report arrives (controller or -n 0)."""
        task_id = self.state.task_id_of(report.nodeid)
        if task_id is None:
            return
        self._nodeids[task_id] = report.nodeid
        self.state.record(task_id, report.when or "", report.outcome, report.duration)
        # Every later report of the item repeats its user_properties: read the call's only.
        for key, value in report.user_properties if report.when == "call" else ():
            if key == "acceptance_note":
                self.state.notes.setdefault(task_id, []).append(str(value))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        self._summarizing = True
        state = self.state
        # Passed with nothing checked: the vacuous passes a reader must know about.
        unchecked = [
            t
            for t in state.selected
            if t in state.outcomes and state.outcomes[t].status == "passed" and state.unchecked(t)
        ]
        if not state.notes and not unchecked:
            return
        terminalreporter.section("conductor: acceptance notes", sep="-")
        for task_id, notes in state.notes.items():
            for note in notes:
                terminalreporter.line(f"{task_id}: {note}")
        if unchecked:
            terminalreporter.line(
                f"unchecked (nothing machine-checkable; --conductor-strict fails them): "
                f"{', '.join(unchecked)}"
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput"):
            return  # only the controller keeps history and writes files others read
        self._save_history(session.config)

    def _save_history(self, config: pytest.Config) -> None:
        """Outcomes and durations for the next run: --lf, deselected deps and path weights."""
        cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
        if cache is None:
            return
        state = self.state
        track = str(state.settings.track)
        outcomes = dict(state.last_outcomes)
        outcomes.update({t: o.status for t, o in state.outcomes.items()})
        cache.set(CACHE_OUTCOMES.format(track=track), outcomes)
        key = CACHE_DURATIONS.format(track=track)
        durations = dict(cache.get(key, {}))
        durations.update(state.durations)
        cache.set(key, durations)
        # --lf reruns what failed; a node blocked by a failure never ran, so it must rerun
        # too. pytest's last-failed plugin forgets skipped reports: add the blocked ones
        # back to its record (it wrote it in its own sessionfinish, before this trylast).
        blocked = [
            nodeid
            for task, nodeid in self._nodeids.items()
            if task in state.outcomes and state.outcomes[task].status == "blocked"
        ]
        if blocked and config.pluginmanager.has_plugin("lfplugin"):
            lastfailed = dict(cache.get("cache/lastfailed", {}))
            lastfailed.update(dict.fromkeys(blocked, True))
            cache.set("cache/lastfailed", lastfailed)
