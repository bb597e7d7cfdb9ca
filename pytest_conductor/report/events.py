"""Live bus events: each node's TASK_COMPLETE / TASK_FAILED / TASK_BLOCKED, once.

Pure: no pytest import. Written as each outcome becomes known on the controller, so an
orchestrator polling ``events/`` sees a node finish while the run goes on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from pytest_conductor.bus import MessageBus
from pytest_conductor.plan.reader import Node

__all__ = [
    "EVENT_OF",
    "FailedReport",
    "LiveEvents",
    "error_text",
    "final_status",
    "first_reason",
]

#: The bus event of each final node status; skipped (never run) nodes get none.
EVENT_OF = {"passed": "TASK_COMPLETE", "failed": "TASK_FAILED", "blocked": "TASK_BLOCKED"}
_ERROR_LINES = 20  # TASK_FAILED content: enough to see what failed, not a whole log
_HEADER = re.compile(r"task \S+ \(.*\):")  # the first line of a node's failure report
_XDIST_HEADER = re.compile(r"\[[\w-]+\] .* -- Python \S+")


class FailedReport(Protocol):
    """What :func:`error_text` reads of a ``pytest.TestReport``."""

    @property
    def longrepr(self) -> object: ...
    @property
    def longreprtext(self) -> str: ...
    @property
    def when(self) -> str | None: ...


def error_text(report: FailedReport) -> str:
    """The first lines of a failed report: what TASK_FAILED carries."""
    lines = report.longreprtext.strip().splitlines()
    while lines and _XDIST_HEADER.match(lines[0]):
        del lines[0]  # "[gw0] linux -- Python 3.11.7 /usr/bin/python", added by xdist
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and (not lines or lines[0] != str(crash.message)):
        # An exception's traceback starts with code lines; its crash line says what
        # happened. A node's failure report starts with that line: keep its details.
        lines = str(crash.message).strip().splitlines()
    lines = lines[:_ERROR_LINES]
    return "\n".join(lines) or f"{report.when} failed"


def final_status(when: str | None, outcome: str) -> str | None:
    """The node status a test report settles, or None while the node is still running.

    A node's outcome is final with its call report, or with a setup that did not pass (a
    blocked node, a setup error); a failing teardown can still fail a node that passed.
    """
    if when == "call" or (when in ("setup", "teardown") and outcome != "passed"):
        return outcome
    return None


def first_reason(text: str, task: str = "") -> str:
    """One line of ``text`` that says why, skipping a ``task 1.2 (name):`` header and the
    ``1.2: `` in front of a node's failure line."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not _HEADER.fullmatch(stripped):
            return stripped.removeprefix(f"{task}: ") if task else stripped
    return text.strip() or "failed"


class LiveEvents:
    """Posts each node's final event to the bus, at most once per node and kind.

    ``unblocks`` maps each node to its direct dependents (``TASK_COMPLETE.unblocks``).
    Errors of the bus (OSError, ValueError) reach the caller, which reports them.
    """

    def __init__(
        self,
        bus: MessageBus,
        nodes: Mapping[str, Node],
        unblocks: Mapping[str, Sequence[str]],
    ) -> None:
        self.bus = bus
        self.nodes = nodes
        self.unblocks = unblocks
        #: The error text of each failed node, as first reported.
        self.errors: dict[str, str] = {}
        #: The last lines of each failed node's agent log (dispatch mode).
        self.traces: dict[str, str] = {}
        self._emitted: set[tuple[str, str]] = set()

    def record_error(self, task: str, text: str) -> None:
        self.errors.setdefault(task, text)

    def record_trace(self, task: str, text: str) -> None:
        """``TASK_FAILED.stack_trace`` of ``task``: the end of its agent's log."""
        self.traces[task] = text

    def mark_posted(self, task: str, kind: str) -> None:
        """``kind`` was posted for ``task`` elsewhere (by the xdist worker that ran it)."""
        self._emitted.add((task, kind))

    def pending(self, task: str, status: str) -> str | None:
        """The event ``status`` calls for, or None when there is none or it was posted."""
        kind = EVENT_OF.get(status)
        if kind is None or (task, kind) in self._emitted:
            return None
        return kind

    def emit(
        self,
        task: str,
        kind: str,
        *,
        commit_sha: str = "",
        blocked_by: str = "",
        reason: str = "",
    ) -> None:
        """Post ``kind`` for ``task`` unless the agent already reported it itself.

        Looked for in every mode: in verify-only runs the orchestrator's own agents (or a
        ``run:`` criterion) may have posted it.
        """
        self._emitted.add((task, kind))
        if self.bus.has_event(kind, task):
            return  # the agent reported it itself (dispatch mode) and agrees
        if kind == "TASK_COMPLETE":
            self.bus.complete(
                task,
                commit_sha,
                files_modified=self.nodes[task].files,
                unblocks=self.unblocks.get(task, ()),
            )
        elif kind == "TASK_FAILED":
            self.bus.fail(task, self.errors.get(task, "failed"), stack_trace=self.traces.get(task))
        else:
            self.bus.blocked(task, blocked_by, reason)
