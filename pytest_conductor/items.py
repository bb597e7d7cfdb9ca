"""The plan collector and the node item: one pytest item per DAG node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_conductor.acceptance import (
    BUILTIN_KINDS,
    CheckContext,
    CheckResult,
    format_failure,
)
from pytest_conductor.acceptance import check as check_builtin
from pytest_conductor.bus import MessageBus
from pytest_conductor.plan import Node
from pytest_conductor.state import ConductorState, get_state

__all__ = ["AcceptanceFailed", "PlanFile", "TaskItem"]


class AcceptanceFailed(Exception):
    """Raised by a node whose acceptance criteria did not all hold."""

    def __init__(self, results: list[CheckResult]) -> None:
        super().__init__(format_failure(results))
        self.results = results


class PlanFile(pytest.File):
    """``plan.md`` of the track: yields one :class:`TaskItem` per node, in plan order."""

    def collect(self) -> Iterator[TaskItem]:
        state = _require_state(self.config)
        for node in state.plan.nodes:
            yield TaskItem.from_parent(self, name=node.id, task=node)


class TaskItem(pytest.Item):
    """One DAG node. Running it checks the node's acceptance criteria."""

    def __init__(self, *, task: Node, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        # `-k <type>` selects nodes; phases and words of node names match too.
        self.extra_keyword_matches.update(k for k in (task.type, task.phase, task.name) if k)
        self.user_properties.append(("task_id", task.id))

    @property
    def state(self) -> ConductorState:
        return _require_state(self.config)

    def runtest(self) -> None:
        state = self.state
        settings = state.settings
        bus = MessageBus(settings.bus_dir, warn=False)
        context = CheckContext(
            root=settings.root,
            task_id=self.task.id,
            has_event=bus.has_event,
            strict_prose=settings.strict_prose,
            default_timeout=settings.command_timeout,
        )
        results = [self._check(criterion, context) for criterion in state.criteria[self.task.id]]
        # user_properties travel with the report (through xdist too) and into --junitxml.
        self.user_properties.extend(
            ("acceptance_note", f"{r.criterion.describe()}: {r.note}") for r in results if r.note
        )
        if not all(r.passed for r in results):
            raise AcceptanceFailed(results)

    def _check(self, criterion: Any, context: CheckContext) -> CheckResult:
        if criterion.kind == "prose" or criterion.kind in BUILTIN_KINDS:
            return check_builtin(criterion, context)
        result: CheckResult | None = self.ihook.pytest_conductor_check_criterion(
            criterion=criterion, context=context
        )
        if result is None:
            raise pytest.UsageError(f"no plugin answered acceptance kind {criterion.kind!r}")
        return result

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, AcceptanceFailed):
            return f"task {self.task.id} ({self.task.name}):\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.task.line - 1 if self.task.line else None
        return self.path, line, f"task {self.task.id}: {self.task.name}"


def _require_state(config: pytest.Config) -> ConductorState:
    state = get_state(config)
    if state is None:  # only reachable if a PlanFile is built without --conductor-track
        raise pytest.UsageError("pytest-conductor: no track loaded (use --conductor-track=ID)")
    return state
