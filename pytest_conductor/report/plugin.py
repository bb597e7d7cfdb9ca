"""Session end of a track run, as pytest hooks: each hook gathers what pytest knows and
calls a pure module of this package — :mod:`.events` (live bus events), :mod:`.record`
and :mod:`.metadata` (metadata.json), :mod:`.verdict`, :mod:`.changes` (files changed),
:mod:`.summary` (terminal lines), :mod:`.junit` (properties and testcase names),
:mod:`.graph_file`.

Everything that writes runs on the controller only (or in-process with ``-n 0``), with
one exception: an xdist worker that shares the controller's files posts the
``TASK_COMPLETE``/``TASK_FAILED`` of each node it ran itself, before the node's report
leaves it (see :meth:`ReportPlugin.pytest_configure_node`). Otherwise a worker only adds
the JUnit properties to the reports that travel back to the controller.

Nothing here may turn a finished run into a traceback: a file that cannot be written is
reported in the ``conductor`` section of the terminal summary and the run goes on. A bus
event or metadata.json write that failed fails the run (verdict FAIL saying why, exit
status 1): an orchestrator reading those files would act on a wrong picture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_conductor.acceptance.checks import NodeFailure
from pytest_conductor.agents.dispatch import TAIL_LINES, log_path, read_tail
from pytest_conductor.bus import MessageBus
from pytest_conductor.graph.algorithms import critical_path, dependents
from pytest_conductor.isolation.worktrees import IsolationError, TrackRepo
from pytest_conductor.plan.reader import Node
from pytest_conductor.report.changes import (
    HeadWatch,
    TreeSnapshot,
    changed_files,
    git_toplevel,
    reported_files,
    take_snapshot,
)
from pytest_conductor.report.events import LiveEvents, error_text, final_status
from pytest_conductor.report.graph_file import node_states, write_graph
from pytest_conductor.report.junit import junit_properties, name_testcases, set_properties
from pytest_conductor.report.markdown import render_markdown
from pytest_conductor.report.metadata import (
    LOCK_NAME,
    METADATA_NAME,
    MetadataError,
    MetadataLockTimeout,
    update_metadata,
)
from pytest_conductor.report.record import execution_record
from pytest_conductor.report.summary import (
    RunFacts,
    collect_only_lines,
    measured_critical_path,
    summary_lines,
)
from pytest_conductor.report.verdict import Verdict, decide, exit_status
from pytest_conductor.scheduling.remote import CHANGED_OUTPUT, remote_plugin
from pytest_conductor.state import ConductorState
from pytest_conductor.util.atomic import atomic_write
from pytest_conductor.util.git import GitError
from pytest_conductor.util.timestamps import utc_now_iso

__all__ = ["ReportPlugin"]

# Set by the dispatcher (track/items.py) in dispatch mode, per attempt.
_DISPATCHER_KEYS = ("worker_id", "attempts")
#: Seconds between two metadata.json refreshes while nodes finish.
METADATA_REFRESH = 2.0
# How long the first metadata.json write of a run may wait for the orchestrator's lock;
# later refreshes never wait (they try again on a later node).
_START_LOCK_WAIT = 1.0
# A failed node's report names the kind of what failed (JUnit's failure type) in this
# attribute: report attributes travel from xdist workers with the report.
_FAILURE_TYPE = "conductor_failure_type"
# The event a worker posted for the node itself, on the report that settled it, and why
# that failed if it did (the controller then fails the run, as for its own writes).
_POSTED = "conductor_posted"
_POST_FAILED = "conductor_post_failed"
# workerinput key: present when the worker posts its nodes' events (value: the git work
# tree whose HEAD TASK_COMPLETE carries, or None outside git).
_POSTS_EVENTS = "conductor_posts_events"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class ReportPlugin:
    """Registered next to ``TrackPlugin`` under ``--conductor-track``.

    ``metadata_lock_timeout`` bounds the wait for the orchestrator's ``.metadata.lock``.
    """

    def __init__(self, state: ConductorState, *, metadata_lock_timeout: float = 30.0) -> None:
        self.state = state
        self.metadata_lock_timeout = metadata_lock_timeout
        self.bus = MessageBus(state.settings.bus_dir, warn=False)
        self.nodes = state.plan.by_id
        self.events = LiveEvents(self.bus, self.nodes, dependents(state.plan.deps))
        #: Problems met while writing files; shown in the terminal summary.
        self.warnings: list[str] = []
        #: The verdict, once the session has finished (controller only).
        self.verdict: Verdict | None = None
        self.started_at = ""
        self.snapshot: TreeSnapshot | None = None
        self.graph_written: Path | None = None
        #: Controller: the files changed in each remote worker's copy, by (host, root).
        self.changes_elsewhere: dict[tuple[str, str], list[str]] = {}
        self._changed_elsewhere: tuple[dict[str, object], ...] = ()
        self._running = False  # a controller session that runs nodes (not --collect-only)
        self._collect_only = False
        self._interrupted = False
        self._spans: dict[str, tuple[float, float]] = {}
        #: Agent processes started per node that ran (verify-only: 1 per node).
        self._spawned: dict[str, int] = {}
        #: Event and metadata writes that failed: each fails the run.
        self.not_written: list[str] = []
        self._metadata_due = 0.0  # monotonic time of the next mid-run refresh
        self._metadata_broken = False  # a mid-run write met a file it cannot merge into
        self._extra_outputs: list[Path] = []
        self._merge_shas: dict[str, str] = {}
        self._branch: str | None = None  # worktree isolation: the track branch at its head
        self._failure_types: dict[str, str] = {}  # task -> criterion kind, or "agent"
        self._head: HeadWatch | None = None  # HEAD for TASK_COMPLETE, cached per commit
        self._toplevel: Path | None = None  # the git work tree whose HEAD that is
        self._posts_here = False  # an xdist worker that posts its nodes' events itself

    # -- session start -------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> Generator[None, None, None]:
        config = session.config
        if _is_worker(config):
            self._start_worker(config)
            return (yield)
        if config.getoption("collectonly", False):
            self._collect_only = True  # nothing runs: no bus, no metadata, no verdict
            return (yield)
        self._running = True
        self.started_at = utc_now_iso()
        # What the workers need from us (pytest_configure_node, while xdist starts them).
        self._toplevel = git_toplevel(self.state.settings.root)
        result = yield
        # The rest once xdist has started its workers, while they boot (a few tenths of
        # a second): nothing writes to the bus before the controller sends a node, which
        # it does only in its run loop, after this; in-process, nodes run after it too.
        self._start_run(config)
        return result

    def _start_worker(self, config: pytest.Config) -> None:
        remote = remote_plugin(config)
        if remote is not None and remote.link is not None:
            # This worker's copy is not the controller's: the work is measured here.
            root = self.state.settings.root
            self.snapshot = take_snapshot(root, self._not_counted(config))
            return
        posts = config.workerinput.get(_POSTS_EVENTS, False)  # type: ignore[attr-defined]
        if posts is not False:
            self._posts_here = True
            self._toplevel = Path(posts) if isinstance(posts, str) else None

    def _start_run(self, config: pytest.Config) -> None:
        with self._guard("message bus not rotated"):
            # The last run's events move to runs/<stamp>/: this run's events are this run's.
            self.bus.rotate(keep=self.state.settings.keep_runs)
        self._extra_outputs = _pytest_outputs(config)
        if self._toplevel is not None:  # else not in a git work tree: nothing to measure
            self.snapshot = take_snapshot(
                self.state.settings.root, self._not_counted(config), toplevel=self._toplevel
            )
        # An orchestrator polling metadata.json now sees a dispatcher at work.
        self._refresh_metadata(wait=_START_LOCK_WAIT)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Let a worker post the events of the nodes it runs, on the controller's bus.

        The controller handles every report on one thread, and the bus write of each
        node's outcome was the largest part of its work per node: done by the five
        workers instead, it runs beside the scheduler, and still before the controller
        learns the outcome, so the event is there before any dependent starts. Only a
        worker that shares this machine's files does it (a forwarded one's bus is a copy),
        and not under worktree isolation, where the merge commit is known here only.
        """
        if not self._running or self.state.settings.uses_worktrees(self.state.plan.nodes):
            return
        top = str(self._toplevel) if self._toplevel is not None else None
        node.workerinput[_POSTS_EVENTS] = top

    # -- every process that runs nodes -----------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        task = self.state.task_id_of(item.nodeid)
        if task is not None:
            if call.when == "teardown":
                # junitxml reads a testcase's properties from its teardown report only;
                # on the setup and call reports they would only add to what every
                # report costs to send from an xdist worker and read on the controller.
                props = self._properties(self.nodes[task], item.user_properties)
                set_properties(item.user_properties, props)
                set_properties(report.user_properties, props)
            if report.failed and call.excinfo and isinstance(call.excinfo.value, NodeFailure):
                setattr(report, _FAILURE_TYPE, call.excinfo.value.kind)
            if self._posts_here:
                self._post_from_worker(task, report)
        return report

    def _post_from_worker(self, task: str, report: pytest.TestReport) -> None:
        """Post the event ``report`` settles, and say so on the report.

        A write that failed is not tried again by the controller (its message may be in
        the queue already): the report says why, and the controller fails the run.
        """
        status = final_status(report.when, report.outcome)
        if status is None:
            return
        if report.failed:
            self._record_failure(task, report)
        kind = self.events.pending(task, status)
        if kind is None:
            return
        setattr(report, _POSTED, kind)
        try:
            self._post(task, kind)
        except (OSError, ValueError) as error:  # ValueError includes BusError
            setattr(report, _POST_FAILED, f"{kind}_{task}.event not written: {error}")

    def _properties(
        self, node: Node, present: Sequence[tuple[str, object]] = ()
    ) -> list[tuple[str, str]]:
        """The node's JUnit properties as far as this plugin decides them.

        In dispatch mode the dispatcher sets ``worker_id`` and ``attempts`` itself while
        the node runs (a retry replaces them); they are only given their place here (empty,
        0 attempts) and never overwritten.
        """
        outcome = self.state.outcomes.get(node.id)
        if outcome is not None and outcome.status == "blocked":
            return junit_properties(node, outcome.root or outcome.reason)
        if outcome is not None and outcome.status == "skipped":
            return junit_properties(node, None, attempts=0)  # never dispatched (-x, Ctrl-C)
        if self.state.settings.worker is None and node.worker is None:
            return junit_properties(node, None)
        have = {key for key, _ in present}
        return [
            (key, value)
            for key, value in junit_properties(node, None, attempts=0)
            if key not in _DISPATCHER_KEYS or key not in have
        ]

    # -- each node's outcome, as it becomes known (controller) -----------------------------

    # Two plain hooks rather than one wrapper: three reports per node, and a wrapper costs
    # a generator each time.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self._running or report.when != "teardown":
            return
        task = self.state.task_id_of(report.nodeid)
        if task is not None:
            # Before junitxml reads them: reports made without an item (the xdist
            # scheduler's blocked nodes) get the properties here.
            keys = {key for key, _ in report.user_properties}
            if keys.isdisjoint(("name", "attempts")):
                set_properties(report.user_properties, self._properties(self.nodes[task]))

    # (pytest registers only methods named pytest_*; specname says which hook.)
    @pytest.hookimpl(trylast=True, specname="pytest_runtest_logreport")
    def pytest_runtest_logreport_last(self, report: pytest.TestReport) -> None:
        # After the other implementations, so TrackPlugin has recorded the outcome.
        task = self.state.task_id_of(report.nodeid) if self._running else None
        if task is not None:
            self._node_report(task, report)

    def _node_report(self, task: str, report: pytest.TestReport) -> None:
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if isinstance(start, float) and isinstance(stop, float):
            first, last = self._spans.get(task, (start, stop))
            self._spans[task] = (min(first, start), max(last, stop))
        if final_status(report.when, report.outcome) is None:
            return
        if report.failed:
            self._record_failure(task, report)
            kind = getattr(report, _FAILURE_TYPE, None)
            if isinstance(kind, str):
                self._failure_types[task] = kind
        posted = getattr(report, _POSTED, None)
        if isinstance(posted, str):
            self.events.mark_posted(task, posted)  # by the worker that ran it
            failed = getattr(report, _POST_FAILED, None)
            if isinstance(failed, str):
                self.warnings.append(failed)
                self.not_written.append(failed)
        merged = dict(report.user_properties).get("merge_sha")
        if isinstance(merged, str) and merged:
            self._merge_shas[task] = merged[:7]
        outcome = self.state.outcomes.get(task)
        status = outcome.status if outcome is not None else report.outcome
        if status in ("passed", "failed"):
            self._spawned[task] = _attempts(report.user_properties)
        self._emit(task, status)
        self._refresh_metadata()

    def _record_failure(self, task: str, report: pytest.TestReport) -> None:
        """What TASK_FAILED and metadata.json say about a failed node."""
        self.events.record_error(task, error_text(report))
        trace = self._agent_log_tail(task, report)
        if trace:
            self.events.record_trace(task, trace)

    def _agent_log_tail(self, task: str, report: pytest.TestReport) -> str:
        """The last lines of the node's last agent log (dispatch mode), else ""."""
        node = self.nodes[task]
        if node.worker is None and self.state.settings.worker is None:
            return ""
        attempt = _attempts(report.user_properties)
        if attempt < 1:
            return ""
        return read_tail(log_path(self.state.settings.bus_dir, task, attempt), TAIL_LINES)

    def _emit(self, task: str, status: str) -> None:
        kind = self.events.pending(task, status)
        if kind is None:
            return
        with self._guard(f"{kind}_{task}.event not written", fails_run=True):
            self._post(task, kind)

    def _post(self, task: str, kind: str) -> None:
        sha = ""
        if kind == "TASK_COMPLETE" and task in self._merge_shas:
            sha = self._merge_shas[task]  # worktree isolation: the node's merge commit
        elif kind == "TASK_COMPLETE" and self._toplevel is not None:
            if self._head is None:
                self._head = HeadWatch(self._toplevel)
            sha = self._head.sha() or ""
        outcome = self.state.outcomes.get(task)
        self.events.emit(
            task,
            kind,
            commit_sha=sha,
            blocked_by=(outcome.root or "") if outcome is not None else "",
            reason=outcome.reason if outcome is not None else "",
        )

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self._interrupted = True

    # -- session end (controller) ----------------------------------------------------------

    @pytest.hookimpl(trylast=True)  # after junitxml has written its file
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = session.config
        if _is_worker(config):
            if self.snapshot is not None:
                # Sent with xdist's workerfinished event (its wrapper sends after us).
                changed = changed_files(self.snapshot, self._not_counted(config))
                config.workeroutput[CHANGED_OUTPUT] = changed  # type: ignore[attr-defined]
            return
        if self._collect_only:
            self._write_graph(None)
            return
        if not self._running:
            return
        interrupted = self._interrupted or exitstatus == pytest.ExitCode.INTERRUPTED
        statuses = self._statuses()
        branch = self._track_branch()
        if branch is not None:  # worktree isolation: the work is the track branch's diff
            self._branch, files_changed = branch[0], len(branch[1])
        else:
            files_changed = self._files_changed(config)
        # Filled by _files_changed: remote xdist workers' copies that hold changes.
        self._changed_elsewhere = self._elsewhere(config) if self.changes_elsewhere else ()
        # The verdict and PARALLEL_COMPLETE first: nothing that goes wrong later (a
        # metadata.json nobody can read, a graph that cannot be written) may keep an
        # orchestrator waiting for them.
        self.verdict = self._decide(statuses, files_changed, interrupted)
        self._amending_verdict(self._write_verdict, statuses, files_changed, interrupted)
        status = "PASSED" if self.verdict.passed else "FAILED"
        if interrupted:
            status = "INTERRUPTED"
        self._amending_verdict(
            lambda: self._write_metadata(status, lock_timeout=self.metadata_lock_timeout),
            statuses,
            files_changed,
            interrupted,
        )
        # A blocked node is a skip to pytest: without this a FAIL verdict could exit 0.
        session.exitstatus = exit_status(
            self.verdict, nodes_selected=len(self.state.selected), pytest_status=session.exitstatus
        )
        self._write_graph(statuses)
        self._name_junit_testcases(config)
        self._write_markdown_summary()

    def _statuses(self) -> dict[str, str]:
        state = self.state
        return {t: o.status for t in state.selected if (o := state.outcomes.get(t))}

    def _decide(self, statuses: dict[str, str], files_changed: int, interrupted: bool) -> Verdict:
        verdict = decide(
            self.state.selected,
            statuses,
            track=str(self.state.settings.track),
            files_changed=files_changed,
            interrupted=interrupted,
            not_written=self.not_written,
            branch=self._branch,
        )
        if self._changed_elsewhere:
            verdict = dataclasses.replace(verdict, changed_elsewhere=self._changed_elsewhere)
        return verdict

    def _amending_verdict(
        self,
        write: Callable[[], None],
        statuses: dict[str, str],
        files_changed: int,
        interrupted: bool,
    ) -> None:
        """Run ``write``; if it failed, say so in the verdict already written. A PASS
        becomes a FAIL, and PARALLEL_COMPLETE is posted again with it."""
        before = len(self.not_written)
        write()
        if len(self.not_written) == before:
            return
        assert self.verdict is not None
        was_passed = self.verdict.passed
        self.verdict = self._decide(statuses, files_changed, interrupted)
        if was_passed:
            self._write_verdict()
        else:
            with self._guard("verdict.json not written"):
                self.bus.write_json("verdict.json", self.verdict.as_dict())

    def _write_verdict(self) -> None:
        assert self.verdict is not None
        with self._guard("verdict.json not written", fails_run=True):
            self.bus.write_json("verdict.json", self.verdict.as_dict())
        with self._guard("PARALLEL_COMPLETE event not written", fails_run=True):
            self.bus.parallel_complete(str(self.state.settings.track), self.verdict.passed)

    # -- metadata.json ---------------------------------------------------------------------

    def _refresh_metadata(self, *, wait: float = 0.0) -> None:
        """The run's state so far into metadata.json, at most every few seconds.

        Never blocks the scheduler: while the orchestrator holds its lock the refresh is
        skipped and tried again as the next node finishes; the session end writes the
        final state in any case.
        """
        now = time.monotonic()
        if self._metadata_broken or now < self._metadata_due:
            return
        self._metadata_due = now + METADATA_REFRESH
        try:
            self._update_metadata("RUNNING", lock_timeout=wait)
        except MetadataLockTimeout:
            self._metadata_due = now  # held right now: the next node tries again
        except MetadataError:
            self._metadata_broken = True  # left as it is; the session end reports it
        else:
            # A large plan's record takes longer to build and write: refreshing at most
            # 1/20 of the time keeps it off the scheduler's thread that much.
            took = time.monotonic() - now
            self._metadata_due = max(self._metadata_due, now + 20 * took)

    def _write_metadata(self, status: str, *, lock_timeout: float) -> None:
        with self._guard("metadata.json not updated", fails_run=True):
            try:
                self._update_metadata(status, lock_timeout=lock_timeout)
            except MetadataError as error:
                self.warnings.append(str(error))
                self.not_written.append(str(error))

    def _update_metadata(self, status: str, *, lock_timeout: float) -> None:
        state = self.state
        # Progress while the run goes on is not fsynced (about 10 ms a write here, at
        # start-up too): a power cut loses at most a state the final write replaces.
        update_metadata(
            state.settings.track_dir,
            execution_record(
                state.plan,
                state.selected,
                self._statuses(),
                state.last_outcomes,
                self.events.errors,
                status=status,
                started_at=self.started_at,
                spawned=sum(self._spawned.values()),
            ),
            lock_timeout=lock_timeout,
            durable=status != "RUNNING",
        )

    def _not_counted(self, config: pytest.Config) -> list[Path]:
        """Paths whose changes are the plugin's or pytest's own output, not the work's."""
        settings = self.state.settings
        paths = [
            settings.bus_dir,
            settings.track_dir / METADATA_NAME,
            settings.track_dir / LOCK_NAME,
            *self._extra_outputs,
            *_pytest_outputs(config),  # again: coverage's parallel files come and go
        ]
        if settings.graph is not None:
            paths.append(settings.graph)
        xml = self._junit_path(config)
        if xml is not None:
            paths.append(xml)
        return paths

    def _track_branch(self) -> tuple[str, list[str]] | None:
        """Under worktree isolation: the track branch and its head (``conductor/t at
        1a2b3c4``) and the files it changes against its base; None otherwise."""
        settings = self.state.settings
        if not settings.uses_worktrees(self.state.plan.nodes):
            return None
        with self._guard("track branch not read"):
            try:
                repo = TrackRepo.find(settings.root, str(settings.track))
                files = repo.changed_files()
            except (IsolationError, GitError) as error:
                raise OSError(str(error)) from None
            if files is not None:
                return repo.describe_head(), files
        return None

    def _files_changed(self, config: pytest.Config) -> int:
        """Files changed here, plus those measured in each other copy the workers used.

        Without git here, the files the agents reported (forwarded from every machine)
        count, united with those measured elsewhere (one project, one set of paths).
        """
        elsewhere = self._changes_elsewhere(config)
        if self.snapshot is not None:
            here = len(changed_files(self.snapshot, self._not_counted(config)))
            return here + sum(len(files) for files in elsewhere.values())
        messages = []
        with self._guard("message bus not read"):
            messages = self.bus.messages()
        reported = set(reported_files(messages, ignore_source=self.bus.source))
        return len(reported.union(*elsewhere.values()))

    def _elsewhere(self, config: pytest.Config) -> tuple[dict[str, object], ...]:
        remote = remote_plugin(config)
        return tuple(
            {
                "host": host,
                "root": root,
                "workers": remote.workers_in(host, root) if remote is not None else [],
                "files_changed": len(files),
            }
            for (host, root), files in sorted(self.changes_elsewhere.items())
        )

    def _changes_elsewhere(self, config: pytest.Config) -> dict[tuple[str, str], list[str]]:
        """The files changed in each remote copy, by (host, root): workers may share one."""
        remote = remote_plugin(config)
        self.changes_elsewhere = remote.changed_by_copy() if remote is not None else {}
        return self.changes_elsewhere

    def _write_graph(self, statuses: dict[str, str] | None) -> None:
        state = self.state
        path = state.settings.graph
        if path is None:
            return
        chosen = set(state.selected)  # membership only
        # After a run, the path the terminal reports (measured); else the planned one.
        measured = self._measured_path() if statuses is not None else None
        if measured:
            critical, label = measured, "measured"
        else:
            critical = critical_path(
                {t: d for t, d in state.plan.deps.items() if t in chosen}, state.weights
            )
            label = "planned"
        states = node_states(state.plan.ids, state.selected, statuses, critical)
        with self._guard(f"graph not written to {path}"):
            self.graph_written = write_graph(
                path,
                state.plan,
                states,
                critical,
                title=f"track {state.settings.track}",
                critical_label=label,
            )

    def _measured_path(self) -> list[str] | None:
        found = measured_critical_path(self._facts())
        return found[0] if found is not None and found[1] > 0 else None

    def _facts(self) -> RunFacts:
        state = self.state
        return RunFacts(
            track=str(state.settings.track),
            selected=state.selected,
            deps=state.plan.deps,
            outcomes=state.outcomes,
            durations=state.durations,
            wall_time=self._wall_time(),
            names={t: n.name for t, n in self.nodes.items()},
        )

    @staticmethod
    def _junit_path(config: pytest.Config) -> Path | None:
        xmlpath = getattr(config.option, "xmlpath", None)
        if not xmlpath or _is_worker(config):
            return None
        return Path(config.invocation_params.dir, xmlpath).resolve()

    def _name_junit_testcases(self, config: pytest.Config) -> None:
        """Give each node's testcase a name that reads well in CI viewers.

        junitxml derives ``classname``/``name`` from the node id
        (``conductor.tracks.t.plan.md`` / ``1.1``) and offers no public way to set them
        for reports that arrive from xdist workers, so the finished file is rewritten:
        ``classname="conductor.<track>"`` (after ``--junit-prefix``),
        ``name="1.1 Create data store"``. Only testcases that carry this plan's
        ``task_id`` property under their original name are touched.
        """
        path = self._junit_path(config)
        if path is None or not path.is_file():
            return
        prefix = getattr(config.option, "junitprefix", None)
        classname = f"conductor.{self.state.settings.track}"
        if prefix:
            classname = f"{prefix}.{classname}"
        # junitxml's own classname for this plan's testcases, to recognise the ones that
        # carry no properties: it writes properties from teardown reports only, and a node
        # whose worker crashed has none.
        try:
            plan_id = self.state.settings.plan_path.relative_to(config.rootpath).as_posix()
        except ValueError:  # a plan outside the rootdir: junitxml names it otherwise
            plan_id = ""
        derived = plan_id.replace("/", ".")
        if prefix and derived:
            derived = f"{prefix}.{derived}"
        with self._guard(f"testcase names not set in {path}"):
            name_testcases(
                path,
                self.nodes,
                classname=classname,
                derived=derived,
                properties_of=self._properties,
                failure_types=self._failure_types,
                properties=self.state.settings.junit_properties,
            )

    # -- terminal --------------------------------------------------------------------------

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if _is_worker(config):
            return
        state = self.state
        verbosity = config.get_verbosity()
        if self._collect_only:
            lines = collect_only_lines(state.selected, state.plan.deps, state.weights)
        elif self._running:
            lines = summary_lines(self._facts(), verbosity=verbosity)
        else:
            return
        if self.graph_written is not None and verbosity >= 0:
            lines.append(f"graph written to {self.graph_written}")
        if verbosity >= 0:
            terminalreporter.section("conductor", sep="-")
        for line in lines:
            terminalreporter.write_line(line)
        for warning in self.warnings:
            terminalreporter.write_line(f"conductor warning: {warning}", yellow=True)

    def _wall_time(self) -> float | None:
        spans = [
            span
            for task, span in self._spans.items()
            if (o := self.state.outcomes.get(task)) is not None and o.status in ("passed", "failed")
        ]
        if not spans:
            return None
        return max(stop for _, stop in spans) - min(start for start, _ in spans)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The verdict, as the very last line of the output.

        Here, not in the terminal summary: the terminal reporter prints its final stats
        line (and a KeyboardInterrupt notice) after every summary hook, and unconfigure
        runs after all of that.
        """
        if self.verdict is None or _is_worker(config):
            return
        line = self.verdict.line()
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)
        else:  # -p no:terminal: orchestrators still read the last line of stdout
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    # -- Markdown summary (CI job summary) ---------------------------------------------------

    def _write_markdown_summary(self) -> None:
        """The run as Markdown: appended to ``$GITHUB_STEP_SUMMARY`` (GitHub Actions shows
        the file on the run's page; other steps append to it too) and written whole to
        ``--conductor-summary-md``."""
        state = self.state
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
        if self.verdict is None or (not step_summary and state.settings.summary_md is None):
            return
        facts = self._facts()
        text = render_markdown(state.plan, facts, self.verdict, self.events.errors)
        if state.settings.summary_md is not None:
            path = state.settings.summary_md
            with self._guard(f"Markdown summary not written to {path}"):
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, text.encode("utf-8"), durable=False)
        if step_summary:
            with (
                self._guard(f"job summary not written to {step_summary}"),
                Path(step_summary).open("a", encoding="utf-8") as file,
            ):
                # Apart from what earlier steps wrote: a heading must start its own line.
                file.write(f"\n{text}" if file.tell() else text)

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str, *, fails_run: bool = False) -> Iterator[None]:
        """Turn a failed write into a warning line of the summary, never a traceback.

        With ``fails_run`` (bus events, verdict, metadata.json) the failure is also kept
        in :attr:`not_written`, which fails the run. The bus reports damage it worked
        around in ``bus.warnings`` (it is built with ``warn=False``: under ``-W error`` a
        warning raised in a session hook would end the run with a traceback); those go
        to the summary too.
        """
        seen = len(self.bus.warnings)
        try:
            yield
        # OSError includes BusLockTimeout (a TimeoutError); ValueError includes BusError.
        except (OSError, ValueError, ET.ParseError, RecursionError) as error:
            self.warnings.append(f"{what}: {error}")
            if fails_run:
                self.not_written.append(f"{what}: {error}")
        finally:
            self.warnings.extend(self.bus.warnings[seen:])


def _attempts(properties: Sequence[tuple[str, object]]) -> int:
    """The ``attempts`` JUnit property (agent processes started; 1 in verify-only)."""
    for key, value in reversed(properties):
        if key == "attempts":
            try:
                return int(str(value))
            except ValueError:
                return 0
    return 1


def _pytest_outputs(config: pytest.Config) -> list[Path]:
    """Files pytest and its usual plugins write, which are no work of the agents:
    ``--html``, ``--json-report``, ``--report-log``, coverage's data files and reports,
    and the pytest cache folder."""
    base = Path(config.invocation_params.dir)
    found: list[Path] = []
    for dest in ("htmlpath", "json_report_file", "reportlog", "xmlpath"):
        value = getattr(config.option, dest, None)
        if isinstance(value, str) and value:
            found.append(base / value)
    if getattr(config.option, "json_report", False) and not getattr(
        config.option, "json_report_file", None
    ):
        found.append(base / ".report.json")
    for report in getattr(config.option, "cov_report", None) or {}:
        target = (getattr(config.option, "cov_report", {}) or {}).get(report)
        if isinstance(target, str) and target:
            found.append(base / target)
    if getattr(config.option, "cov_source", None) is not None or getattr(
        config.option, "cov_report", None
    ):
        found += [base / "coverage.xml", base / "htmlcov", base / "coverage.json"]
    coverage_file = os.environ.get("COVERAGE_FILE", ".coverage")
    data = base / coverage_file
    found.append(data)
    found += sorted(data.parent.glob(f"{data.name}.*"))
    try:
        cache_dir = config.getini("cache_dir")
    except ValueError:  # -p no:cacheprovider: there is no cache
        cache_dir = None
    if isinstance(cache_dir, str) and cache_dir:
        found.append(Path(config.rootpath) / os.path.expandvars(cache_dir))
    return found
