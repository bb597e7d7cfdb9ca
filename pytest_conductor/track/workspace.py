"""Where a dispatched node's agent works, and what its work touched: pytest glue around
:mod:`pytest_conductor.isolation`.

:class:`NodeWorkspace` is what :class:`~pytest_conductor.track.items.TaskItem` calls while
it dispatches a node: with ``--conductor-isolation=worktree`` the node gets its own git
worktree and branch, its leftovers are committed, and once its criteria hold its branch
is merged into the track branch; in both modes the node's changes are checked against
its declared ``files`` (the scope check).

:class:`IsolationPlugin` does what no single node can: at the start it reports what an
earlier run left (and clears what an interrupted one left half-done), at the end it
removes the worktrees of passed nodes and prints the track branch, the kept worktrees
and the scope violations.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_conductor.acceptance.checks import NodeFailure
from pytest_conductor.agents.dispatch import agent_registry
from pytest_conductor.bus import BusError, BusLockTimeout, MessageBus
from pytest_conductor.isolation.scope import out_of_scope
from pytest_conductor.isolation.worktrees import (
    IsolationError,
    MergeConflict,
    NodeWorktree,
    TrackRepo,
)
from pytest_conductor.report.changes import TreeSnapshot, changed_files, take_snapshot
from pytest_conductor.report.junit import set_properties
from pytest_conductor.report.metadata import LOCK_NAME, METADATA_NAME
from pytest_conductor.state import ConductorState
from pytest_conductor.util.git import GitError
from pytest_conductor.util.timestamps import parse_iso

if TYPE_CHECKING:
    from pytest_conductor.plan.reader import Node

__all__ = ["PLUGIN_NAME", "IsolationPlugin", "NodeWorkspace", "WorkspaceFailed", "open_repo"]

#: The name the IsolationPlugin is registered under (plugin.py).
PLUGIN_NAME = "conductor-isolation"

#: JUnit property naming the paths a node touched outside its declared files.
SCOPE_PROPERTY = "scope_violation"


class WorkspaceFailed(NodeFailure):
    """The node's work could not be integrated, or left its declared scope (strict)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason.splitlines()[0], "workspace", reason)


def open_repo(state: ConductorState) -> TrackRepo | None:
    """The track's repository under ``--conductor-isolation=worktree`` when any node is
    dispatched to an agent, else None (a verify-only run checks the user's checkout).

    Raises pytest.UsageError when worktrees are asked for where there is no git.
    """
    settings = state.settings
    if not settings.uses_worktrees(state.plan.nodes):
        return None
    try:
        return TrackRepo.find(settings.root, str(settings.track))
    except (IsolationError, GitError) as exc:
        raise pytest.UsageError(f"--conductor-isolation=worktree: {exc}") from None


class NodeWorkspace:
    """One node's workspace during its dispatch (all attempts)."""

    def __init__(self, item: pytest.Item, node: Node, state: ConductorState, bus: MessageBus):
        self.item = item
        self.node = node
        self.state = state
        self.bus = bus
        # Found once per process by the IsolationPlugin (git calls); per node only without it.
        plugin = item.config.pluginmanager.get_plugin(PLUGIN_NAME)
        self.repo = plugin.repo if isinstance(plugin, IsolationPlugin) else open_repo(state)
        self.worktree: NodeWorktree | None = None
        self.snapshot: TreeSnapshot | None = None
        self.lines: list[str] = []  # for the node's report section
        self.outside: list[str] = []
        self.started = 0.0
        self.shared = False

    @property
    def root(self) -> Path:
        """Where the agent runs and the criteria are checked."""
        return self.worktree.root if self.worktree is not None else self.state.settings.root

    def prompt_note(self) -> str | None:
        """What the agent's prompt says about its worktree (None without one)."""
        if self.worktree is None or self.repo is None:
            return None
        deps = ", ".join(self.node.depends_on)
        start = f"with the work of its dependencies ({deps}) merged in" if deps else "as it is"
        return (
            f"You work in a git worktree of your own, on the branch `{self.worktree.branch}`, "
            f"made from the track's base commit {start}. Commit your work on this branch; "
            "whatever you leave uncommitted is committed for you when you exit. Do not switch "
            "branches, rebase or push. Once the acceptance criteria hold, the branch is "
            f"merged into `{self.repo.branch}`; changes outside the files named above are "
            "reported."
        )

    def already_merged(self) -> str | None:
        """The merge commit of a node an earlier run merged into the track branch."""
        if self.repo is None:
            return None
        sha = self.repo.merged_sha(self.node.id)
        if sha is not None:
            self._properties(("branch", self.repo.node_branch(self.node.id)), ("merge_sha", sha))
        return sha

    def before_attempt(self, attempt: int) -> None:
        settings = self.state.settings
        if self.repo is None:
            if self.node.files:  # a node that declares nothing is not checked
                self.started = time.time()
                # Agents already running share the tree with this one: what changes in
                # it meanwhile may be theirs.
                self.shared = bool(agent_registry(settings.bus_dir).records())
                self.snapshot = take_snapshot(settings.root, self._not_work())
            return
        try:
            self.worktree = self.repo.prepare(
                self.node.id, self.node.depends_on, fresh=attempt == 1
            )
        except MergeConflict as exc:
            raise WorkspaceFailed(
                f"the branches of its dependencies conflict: {', '.join(exc.paths)}"
            ) from None
        except (IsolationError, GitError, OSError) as exc:
            raise WorkspaceFailed(f"no worktree for the node: {exc}") from None
        if attempt == 1:
            self.lines.append(
                f"worktree {self.worktree.path} on branch {self.worktree.branch}, "
                f"from {self.worktree.start[:7]}"
            )
            self.lines += self.worktree.notes
        self._properties(("branch", self.worktree.branch))

    def after_agent(self, worker_id: str, attempt: int) -> None:
        """Commit the agent's leftovers (worktree) and check the node's scope."""
        if self.worktree is not None and self.repo is not None:
            message = (
                f"conductor: work the agent of node {self.node.id} ({self.node.name}) "
                f"left uncommitted (attempt {attempt}, worker {worker_id})"
            )
            try:
                sha = self.repo.commit_leftovers(self.worktree, message)
                touched = self.repo.node_changes(self.worktree)
            except (GitError, OSError) as exc:
                raise WorkspaceFailed(f"the agent's work could not be committed: {exc}") from None
            if sha is not None:
                self.lines.append(
                    f"the agent left uncommitted changes; committed them as {sha[:7]}"
                )
                self._properties(("auto_commit", sha))
        else:
            touched = self._touched_in_place(worker_id)
        self.outside = out_of_scope(touched, self.node.files)
        if self.outside:
            shown = ", ".join(self.outside)
            self.lines.append(f"scope: changed outside its declared files: {shown}")
            self._properties((SCOPE_PROPERTY, shown))
            with contextlib.suppress(OSError, BusError, BusLockTimeout):
                self.bus.post(
                    "SCOPE_VIOLATION",
                    {
                        "task_id": self.node.id,
                        "worker_id": worker_id,
                        "paths": self.outside,
                        "declared": list(self.node.files),
                    },
                )

    def integrate(self) -> None:
        """After the criteria held: the strict scope check, then the merge."""
        if self.outside and self.state.settings.strict_scope:
            raise WorkspaceFailed(
                "changed files outside its declared files (--conductor-strict-scope): "
                + ", ".join(self.outside)
                + f"\n  declared: {', '.join(self.node.files)}"
            )
        if self.repo is None or self.worktree is None:
            return
        try:
            sha = self.repo.integrate(self.node.id, self.node.name)
        except MergeConflict as exc:
            raise WorkspaceFailed(
                f"merge into {self.repo.branch} conflicts: {', '.join(exc.paths)}\n"
                f"  the worktree is kept for you: {self.worktree.path}"
            ) from None
        except (IsolationError, GitError, OSError) as exc:
            raise WorkspaceFailed(f"merge into {self.repo.branch} failed: {exc}") from None
        self.lines.append(f"merged into {self.repo.branch} as {sha[:7]}")
        self._properties(("merge_sha", sha))

    def _properties(self, *props: tuple[str, str]) -> None:
        set_properties(self.item.user_properties, list(props))

    def _not_work(self) -> list[Path]:
        settings = self.state.settings
        return [
            settings.bus_dir,
            settings.track_dir / METADATA_NAME,
            settings.track_dir / LOCK_NAME,
        ]

    def _touched_in_place(self, worker_id: str) -> list[str]:
        """Without worktrees: what the agent said it changed, plus what changed in the
        work tree while it ran when no other agent ran meanwhile (in one shared tree,
        another agent's changes cannot be told from this one's)."""
        reported = _reported_by(self.bus, worker_id, self.node.id)
        changed: list[str] = []
        if self.snapshot is not None and not self.shared and not self._others_dispatched():
            top = self.snapshot.toplevel
            root = self.state.settings.root
            for rel in changed_files(self.snapshot, self._not_work()):
                with contextlib.suppress(ValueError):
                    changed.append((top / rel).relative_to(root).as_posix())
        return sorted(set(reported) | set(changed))

    def _others_dispatched(self) -> bool:
        """Whether another node's agent was dispatched since this one started."""
        with contextlib.suppress(OSError, BusError, BusLockTimeout):
            for message in self.bus.messages():
                payload = message.get("payload")
                if message.get("type") != "WORKER_DISPATCHED" or not isinstance(payload, Mapping):
                    continue
                moment = message.get("timestamp")
                if payload.get("task_id") != self.node.id and isinstance(moment, str):
                    with contextlib.suppress(ValueError):
                        if parse_iso(moment).timestamp() >= self.started:
                            return True
            return False
        return True  # unreadable: assume the worst, count only what the agent reported


def _reported_by(bus: MessageBus, worker_id: str, task_id: str) -> list[str]:
    files: list[str] = []
    with contextlib.suppress(OSError, BusError, BusLockTimeout):
        for message in bus.messages():
            payload = message.get("payload")
            if message.get("type") != "TASK_COMPLETE" or not isinstance(payload, Mapping):
                continue
            if payload.get("task_id") != task_id or message.get("source") != worker_id:
                continue
            listed = payload.get("files_modified")
            if isinstance(listed, list):
                files += [str(f) for f in listed if isinstance(f, str) and f]
    return files


class IsolationPlugin:
    """Registered under ``--conductor-track`` in every process; acts on the controller."""

    def __init__(self, state: ConductorState) -> None:
        self.state = state
        self.repo = open_repo(state)
        self.found: list[str] = []
        self.scope: dict[str, str] = {}
        self.kept: list[str] = []
        self.removed: list[str] = []
        self._running = False

    @pytest.hookimpl(tryfirst=True)  # before xdist starts its workers
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        config = session.config
        if hasattr(config, "workerinput") or config.getoption("collectonly", False):
            return
        self._running = True
        if self.repo is None:
            return
        try:
            stale = self.repo.clean_stale()
            kept = self.repo.kept()
            state, reused = self.repo.ensure_track()
        except (IsolationError, GitError, OSError) as exc:
            raise pytest.UsageError(f"--conductor-isolation=worktree: {exc}") from None
        if stale:
            self.found.append("removed the scratch worktree of a merge an interrupted run left")
        if reused:
            merged = ", ".join(t for t in self.state.plan.ids if t in state.merged) or "none"
            self.found.append(
                f"reusing {self.repo.describe_head()} (base {state.base[:7]}); "
                f"nodes merged by earlier runs, not dispatched again: {merged}"
            )
        for wt in kept:
            self.found.append(
                f"worktree of node {wt.task_id} kept by an earlier run: {wt.path} "
                f"({wt.branch} at {wt.head[:7]}); replaced if the node runs again"
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        task = self.state.task_id_of(report.nodeid)
        if task is None or report.when != "call":
            return
        props = dict(report.user_properties)
        if SCOPE_PROPERTY in props:
            self.scope[task] = str(props[SCOPE_PROPERTY])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not self._running or self.repo is None:
            return
        passed = [
            t
            for t in self.state.selected
            if (o := self.state.outcomes.get(t)) and o.status == "passed"
        ]
        with contextlib.suppress(IsolationError, GitError, OSError):
            self.removed = self.repo.remove_worktrees(passed)
            self.kept = [f"{wt.task_id}: {wt.path}" for wt in self.repo.kept()]

    @pytest.hookimpl(trylast=True)  # after the conductor section's own lines
    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if hasattr(config, "workerinput") or not self._running:
            return
        lines = [f"earlier run: {line}" for line in self.found]
        if self.repo is not None:
            lines.append(
                f"track branch: {self.repo.describe_head()} "
                f"(your checkout and branch are unchanged)"
            )
            if self.kept:
                lines.append("worktrees kept for inspection: " + "; ".join(self.kept))
        for task, paths in sorted(self.scope.items()):
            lines.append(f"scope: node {task} changed files outside its declared files: {paths}")
        for line in lines:
            terminalreporter.write_line(line)
