"""The plan collector and the node item: one pytest item per DAG node."""

from __future__ import annotations

import contextlib
import functools
import time
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
from pytest_conductor.acceptance.checks import NodeFailure, failure_headline
from pytest_conductor.acceptance.commands import command_registry
from pytest_conductor.acceptance.status import (
    DISPATCH,
    FAIL,
    IMPLICIT,
    RESUME,
    SKIP,
    commit_results,
    decide,
    machine_checkable,
)
from pytest_conductor.agents.dispatch import (
    TAIL_LINES,
    AgentJob,
    AgentResult,
    bus_cli,
    new_worker_id,
    run_agent,
    set_aside_events,
)
from pytest_conductor.agents.plugin import agents_waiter
from pytest_conductor.agents.prompt import (
    PreviousFailure,
    PromptInput,
    dependency_results,
    render_prompt,
)
from pytest_conductor.bus import BusError, BusLockTimeout, MessageBus
from pytest_conductor.graph.algorithms import dependents
from pytest_conductor.plan.durations import format_duration
from pytest_conductor.plan.marks import Mark
from pytest_conductor.plan.reader import Node
from pytest_conductor.report.junit import set_properties
from pytest_conductor.state import ConductorState, get_state
from pytest_conductor.track.workspace import NodeWorkspace, WorkspaceFailed

__all__ = ["AcceptanceFailed", "AgentFailed", "MarkFailed", "PlanFile", "TaskItem"]


class AcceptanceFailed(NodeFailure):
    """Raised by a node whose acceptance criteria (or the commits it names) did not all hold."""

    def __init__(self, results: list[CheckResult], marked_done: Mark | None = None) -> None:
        first = next((r for r in results if not r.passed), None)
        headline = failure_headline(results)
        text = format_failure(results)
        if marked_done is not None:
            headline = f"marked done {marked_done.shown()} but the work is not there: {headline}"
            text = (
                f"plan.md marks it done {marked_done.shown()} (line {marked_done.line}), "
                f"but the work is not there:\n\n{text}"
            )
        super().__init__(headline, first.criterion.kind if first else "acceptance", text)
        self.results = results


class MarkFailed(NodeFailure):
    """Raised by a checklist task whose mark says it is not done (verify-only run), or by
    an unchecked node under ``--conductor-strict``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason.splitlines()[0], "mark", reason)


class AgentFailed(NodeFailure):
    """Raised by a node whose agent failed, or after whose agent a criterion failed."""

    def __init__(
        self,
        result: AgentResult,
        failed: list[CheckResult],
        checks: list[CheckResult],
        attempts: int,
        history: list[str],
    ) -> None:
        self.result = result
        self.failed = failed
        text = _agent_failure_text(result, checks, attempts, history)
        if result.reason:
            super().__init__(result.reason.splitlines()[0], "agent", text)
        else:
            super().__init__(failure_headline(checks), failed[0].criterion.kind, text)


def _agent_failure_text(
    result: AgentResult, checks: list[CheckResult], attempts: int, history: list[str]
) -> str:
    """The failure report: why first (its first line becomes TASK_FAILED's summary)."""
    where = f"attempt {result.attempt} of {attempts}, worker {result.worker_id}"
    parts = []
    if result.reason:
        parts.append(f"{result.reason} ({where})")
    else:
        parts.append(format_failure(checks))
        parts.append(f"the agent ended well ({where}, {format_duration(result.duration)})")
    if len(history) > 1:
        parts.append("attempts:\n" + "\n".join(f"  {line}" for line in history))
    details = [f"  prompt: {result.prompt}", f"  log:    {result.log}"]
    details += [f"  bus:    {warning}" for warning in result.warnings]
    if result.released_locks:
        details.append("  locks released: " + ", ".join(result.released_locks))
    if result.tail.strip():
        details.append(f"  agent output (last {TAIL_LINES} lines):")
        details += [f"    {line}" for line in result.tail.splitlines()]
    parts.append("\n".join(details))
    return "\n\n".join(parts)


class PlanFile(pytest.File):
    """``plan.md`` of the track: yields one :class:`TaskItem` per node, in plan order."""

    def collect(self) -> Iterator[TaskItem]:
        state = _require_state(self.config)
        for node in state.plan.nodes:
            item = TaskItem.from_parent(self, name=node.id, task=node)
            decision = decide(node.mark, state.plan.form, dispatching=False, redo=False)
            if decision.action == SKIP:
                # A mark, not pytest.skip(): the report points at the task's line in plan.md.
                item.add_marker(pytest.mark.skip(reason=decision.reason))
            yield item


class TaskItem(pytest.Item):
    """One DAG node. Running it runs the node's agent (dispatch mode), then checks the
    node's acceptance criteria."""

    def __init__(self, *, task: Node, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        #: The run's state: asked for ten times per node, and it is the config's for good.
        self.state: ConductorState = _require_state(self.config)
        # `-k <type>` selects nodes; phases and words of node names match too.
        self.extra_keyword_matches.update(k for k in (task.type, task.phase, task.name) if k)
        self.user_properties.append(("task_id", task.id))
        if self.state.unchecked(task.id):
            self.user_properties.append(("unchecked", "true"))
        #: A tighter limit set from outside (pytest-timeout's ``--timeout``), if any.
        self.outer_limit: float | None = None

    @property
    def bus(self) -> MessageBus:
        """The track's bus, for the node's checks, prompts and status: one object per
        process (it only caches paths; each call reads and writes the files anew)."""
        return _shared_bus(self.state.settings.bus_dir)

    def runtest(self) -> None:
        state = self.state
        template = self.task.worker or state.settings.worker
        decision = decide(
            self.task.mark,
            state.plan.form,
            dispatching=template is not None,
            redo=state.settings.redoes(self.task.id),
        )
        if decision.note and decision.action != RESUME:
            self.user_properties.append(("acceptance_note", decision.note))
        if decision.action == FAIL:
            raise MarkFailed(decision.reason)
        if decision.action == DISPATCH and template is not None:
            self._dispatch(template)
        else:  # verify, or resume a task done earlier: its criteria and commits decide
            self._verify_only(resumed=decision.action == RESUME)

    @property
    def time_limit(self) -> float:
        """The node's own ``timeout:``, else ``--conductor-timeout``; pytest-timeout's
        ``--timeout`` when that is shorter."""
        own = self.task.timeout or self.state.settings.timeout
        return own if self.outer_limit is None else min(own, self.outer_limit)

    def _verify_only(self, *, resumed: bool = False) -> None:
        criteria = self.state.criteria[self.task.id]
        if self.state.settings.strict and not machine_checkable(criteria):
            what = "only prose criteria" if criteria else "no acceptance criteria and no files"
            raise MarkFailed(
                f"unchecked: {what}, so nothing a machine can check (--conductor-strict); "
                "add a {run: ...}, {pytest: ...}, {exists: ...} or {contains: ...} criterion"
            )
        deadline = time.monotonic() + self.time_limit
        results = [*self._commit_checks(), *self._check_all(agent_ran=False, deadline=deadline)]
        if not all(r.passed for r in results):
            raise AcceptanceFailed(results, marked_done=self.task.mark if resumed else None)
        if resumed and self.task.mark is not None:
            note = f"done earlier ({self.task.mark.sha or 'no commit named'})"
            self.user_properties.append(("acceptance_note", note))
            self.add_report_section("call", "conductor", f"not dispatched: {note}")

    def _commit_checks(self) -> list[CheckResult]:
        """The commits plan.md names for the node; none when git cannot say (warned once)."""
        if self.state.git_problem is not None:
            return []
        return commit_results(self.task.mark, self.task.checkpoint, self.state.settings.root)

    def _check_all(
        self, *, agent_ran: bool, deadline: float, root: Path | None = None
    ) -> list[CheckResult]:
        settings = self.state.settings
        context = CheckContext(
            root=root or settings.root,
            task_id=self.task.id,
            has_event=self.bus.has_event,
            agent_ran=agent_ran,
            strict_prose=settings.strict_prose,
            default_timeout=settings.command_timeout,
            registry=command_registry(settings.bus_dir),
            deadline=deadline,
        )
        criteria = self.state.criteria[self.task.id]
        results = [self._check(criterion, context) for criterion in criteria]
        # user_properties travel with the report (through xdist too) and into --junitxml.
        self.user_properties.extend(
            ("acceptance_note", f"{r.criterion.describe()}: {r.note}") for r in results if r.note
        )
        self.user_properties.extend(
            (
                "acceptance_note",
                f"{c.describe()}: implicit check: no acceptance criteria, so "
                "the node's files must exist",
            )
            for c in criteria
            if c.spec.get(IMPLICIT)
        )
        return results

    def _dispatch(self, template: str) -> None:
        """Run the node's agent, then its acceptance criteria; retry as configured."""
        # Its own worktree and branch (--conductor-isolation=worktree) and the scope check.
        workspace = NodeWorkspace(self, self.task, self.state, self.bus)
        merged = workspace.already_merged()
        if merged is not None:
            self.add_report_section(
                "call", "conductor", f"merged by an earlier run as {merged[:7]}; not dispatched"
            )
            return
        try:
            self._attempts(template, workspace)
        except (AgentFailed, WorkspaceFailed):
            if workspace.lines:
                self.add_report_section("call", "conductor workspace", "\n".join(workspace.lines))
            raise

    def _attempts(self, template: str, workspace: NodeWorkspace) -> None:
        state = self.state
        settings = state.settings
        attempts = settings.retries + 1
        previous: PreviousFailure | None = None
        history: list[str] = []
        for attempt in range(1, attempts + 1):
            worker_id = new_worker_id(self.task.id)
            # A retry replaces the values of the attempt before.
            set_properties(
                self.user_properties, [("worker_id", worker_id), ("attempts", str(attempt))]
            )
            workspace.before_attempt(attempt)
            # One time limit for the attempt: the agent, then its criteria in what is left.
            deadline = time.monotonic() + self.time_limit
            result = run_agent(
                self._job(template, worker_id, attempt, attempts, previous, workspace=workspace),
                on_wait=agents_waiter(self.config),
            )
            workspace.after_agent(worker_id, attempt)
            checks: list[CheckResult] = []
            if not result.failed:
                checks = self._check_all(agent_ran=True, deadline=deadline, root=workspace.root)
                if all(c.passed for c in checks):
                    workspace.integrate()
                    _set_status(self.bus, worker_id, self.task.id, "COMPLETED")
                    section = _passed_section(result, attempts, history, workspace.lines)
                    self.add_report_section("call", "conductor", section)
                    return
                _set_status(self.bus, worker_id, self.task.id, "FAILED")
            failed = [c for c in checks if not c.passed]
            reason = (
                result.reason or f"acceptance criterion failed: {failed[0].criterion.describe()}"
            )
            history.append(f"attempt {attempt}: {reason} (worker {worker_id})")
            # The next attempt (or the controller, after the last) reports for itself;
            # after the last, the agent's own TASK_FAILED is kept as the node's event.
            kinds = ("TASK_COMPLETE", "TASK_FAILED") if attempt < attempts else ("TASK_COMPLETE",)
            set_aside_events(settings.bus_dir, self.task.id, attempt, kinds)
            previous = PreviousFailure(
                attempt=attempt,
                reason=reason,
                failed_criteria=tuple(
                    f"{c.criterion.describe()}: expected {c.expected}; seen {c.seen}"
                    for c in failed
                ),
                output_tail=result.tail,
            )
            if attempt == attempts:
                raise AgentFailed(result, failed, checks, attempts, history)

    def _job(
        self,
        template: str,
        worker_id: str,
        attempt: int,
        attempts: int,
        previous: PreviousFailure | None,
        *,
        workspace: NodeWorkspace,
    ) -> AgentJob:
        state = self.state
        settings = state.settings
        task = self.task
        group = next((g.id for g in state.plan.groups if task.id in g.tasks), None)
        timeout = self.time_limit
        root = workspace.root
        prompt = render_prompt(
            PromptInput(
                track=str(settings.track),
                node=task,
                worker_id=worker_id,
                root=root,
                bus_dir=settings.bus_dir,
                plan_path=settings.plan_path,
                criteria=state.criteria[task.id],
                dependencies=dependency_results(
                    task, state.plan, self.bus.messages(), state.selected, state.last_outcomes
                ),
                parallel_group=group,
                attempt=attempt,
                attempts=attempts,
                previous=previous,
                heartbeat=settings.heartbeat,
                timeout=timeout,
                bus_command=bus_cli(),
                workspace=workspace.prompt_note(),
            )
        )
        return AgentJob(
            track=str(settings.track),
            task_id=task.id,
            worker_id=worker_id,
            template=template,
            root=root,
            bus_dir=settings.bus_dir,
            prompt_text=prompt,
            attempt=attempt,
            timeout=timeout,
            heartbeat=settings.heartbeat,
            parallel_group=group,
            unblocks=dependents(state.plan.deps).get(task.id, ()),
        )

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
        if isinstance(excinfo.value, NodeFailure):
            headline = f"{self.task.id}: {excinfo.value.headline}"
            # --tb=line: pytest prints the crash line after the report; the report is empty.
            text = None if self.config.getoption("tbstyle") == "line" else str(excinfo.value)
            return failure_repr(self.location[0], self.task.line, headline, text)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.task.line - 1 if self.task.line else None
        return self.path, line, f"task {self.task.id}: {self.task.name}"


def failure_repr(path: str, line: int | None, headline: str, text: str | None) -> str | Any:
    """A node's failure as pytest shows a failed test: ``headline`` is its crash line (the
    short summary's reason, ``--tb=line``'s line, JUnit's ``message``), then the report
    ``text`` (None: no report, only the crash line).

    pytest has no public constructor for these; the classes have kept their shape since
    pytest 7, travel through xdist's report serialization, and tests/test_reporters.py
    fails if they change. A plain string (what the short summary would cut to one line,
    and ``--tb=line`` to 50 characters) is the fallback.
    """
    block = "" if text is None else f"{headline}\n\n{text}"
    try:
        from _pytest._code.code import (
            ReprExceptionInfo,
            ReprFileLocation,
            ReprTracebackNative,
        )
    except ImportError:  # pragma: no cover - a pytest that moved them
        return block
    lines = [f"{row}\n" for row in block.splitlines()]
    return ReprExceptionInfo(
        reprtraceback=ReprTracebackNative(lines),
        reprcrash=ReprFileLocation(path, line or 0, headline),
    )


def _set_status(bus: MessageBus, worker_id: str, task_id: str, status: str) -> None:
    """Record the worker's end state; a bus that cannot be written must not fail the node."""
    with contextlib.suppress(OSError, BusError, BusLockTimeout):
        bus.set_worker_status(worker_id, status, task_id=task_id)


def _passed_section(
    result: AgentResult, attempts: int, history: list[str], workspace: list[str]
) -> str:
    lines = [
        f"attempt {result.attempt} of {attempts} passed "
        f"(worker {result.worker_id}, {format_duration(result.duration)})",
        *history,
        *workspace,
        f"log: {result.log}",
    ]
    lines += [f"bus: {warning}" for warning in result.warnings]
    if result.released_locks:
        lines.append("locks released for the agent: " + ", ".join(result.released_locks))
    return "\n".join(lines)


@functools.lru_cache(maxsize=8)
def _shared_bus(bus_dir: Path) -> MessageBus:
    return MessageBus(bus_dir, warn=False)


def _require_state(config: pytest.Config) -> ConductorState:
    state = get_state(config)
    if state is None:  # only reachable if a PlanFile is built without --conductor-track
        raise pytest.UsageError("pytest-conductor: no track loaded (use --conductor-track=ID)")
    return state
