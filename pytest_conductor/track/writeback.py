"""``--conductor-write-plan``: the dispatched tasks' marks written back into plan.md.

Registered on the controller only (xdist workers never write plan.md), when the option
is on. A dispatched task's line becomes ``[~]`` once its setup passed (its agent is about
to start), then ``[x] <sha7>`` (the agent's ``--commit``, else plain ``[x]``) when it
passed, or ``[!]`` when it failed or was blocked. Tasks not dispatched (done earlier,
skipped) keep their marks; the writing itself is :mod:`pytest_conductor.plan.writeback`.
"""

from __future__ import annotations

import re

import pytest

from pytest_conductor.acceptance.status import DISPATCH, decide
from pytest_conductor.bus import MessageBus
from pytest_conductor.plan.marks import BLOCKED, DONE, IN_PROGRESS
from pytest_conductor.plan.writeback import MarkWriter
from pytest_conductor.state import ConductorState

__all__ = ["WriteBackPlugin"]

_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


class WriteBackPlugin:
    def __init__(self, state: ConductorState) -> None:
        self.state = state
        settings = state.settings
        self.writer = MarkWriter(settings.plan_path, settings.bus_dir / "plan.md.lock")
        self.problems: list[str] = []
        self.written: dict[str, str] = {}  # task id -> the state last written
        self.tasks = {
            node.id
            for node in state.plan.nodes
            if node.mark is not None
            and node.mark.text
            and (node.worker or settings.worker) is not None
            and decide(
                node.mark,
                state.plan.form,
                dispatching=True,
                redo=settings.redoes(node.id),
            ).action
            == DISPATCH
        }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        task_id = self.state.task_id_of(report.nodeid)
        if task_id is None or task_id not in self.tasks:
            return
        if report.when == "setup" and report.passed:
            self._write(task_id, IN_PROGRESS)
        elif report.when == "call" and report.passed:
            self._write(task_id, DONE, self._commit(task_id))
        elif report.failed or (report.when == "setup" and report.skipped):
            self._write(task_id, BLOCKED)  # failed, or blocked by a dependency

    def _commit(self, task_id: str) -> str | None:
        bus = MessageBus(self.state.settings.bus_dir, warn=False)
        try:
            content = (bus.read_event("TASK_COMPLETE", task_id) or "").strip()
        except OSError:
            return None
        return content[:7].lower() if _SHA.fullmatch(content) else None

    def _write(self, task_id: str, state: str, sha: str | None = None) -> None:
        if self.written.get(task_id) == DONE:
            return  # a teardown error after a pass must not turn [x] into [!]
        mark = self.state.plan.node(task_id).mark
        assert mark is not None  # only tasks with a line are in self.tasks
        problem = self.writer.write(task_id, mark.line, mark.text, state, sha)
        if problem is None:
            self.written[task_id] = state
        else:
            self.problems.append(problem)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.written and not self.problems:
            return
        terminalreporter.section("conductor: plan.md marks", sep="-")
        for task_id, state in self.written.items():
            terminalreporter.line(f"{task_id}: [{state}]")
        for problem in self.problems:
            terminalreporter.line(f"not written: {problem}")
