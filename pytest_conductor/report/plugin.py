"""Session end of a track run, as pytest hooks: each hook gathers what pytest knows and
calls a pure module of this package — :mod:`.events` (live bus events), :mod:`.record`
and :mod:`.metadata` (metadata.json), :mod:`.verdict`, :mod:`.changes` (files changed),
:mod:`.summary` (terminal lines), :mod:`.junit` (properties and testcase names),
:mod:`.graph_file`.

Everything that writes runs on the controller only (or in-process with ``-n 0``), never
on an xdist worker: there, only :meth:`ReportPlugin.pytest_runtest_makereport` adds the
JUnit properties to the reports that travel back to the controller.

Nothing here may turn a finished run into a traceback: a file that cannot be written is
reported in the ``conductor`` section of the terminal summary and the run goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest

from pytest_conductor.bus import MessageBus
from pytest_conductor.graph.algorithms import critical_path, dependents
from pytest_conductor.plan.reader import Node
from pytest_conductor.report.changes import (
    HeadWatch,
    TreeSnapshot,
    changed_files,
    reported_files,
    take_snapshot,
)
from pytest_conductor.report.events import LiveEvents, error_text
from pytest_conductor.report.graph_file import node_states, write_graph
from pytest_conductor.report.junit import junit_properties, name_testcases, set_properties
from pytest_conductor.report.markdown import render_markdown
from pytest_conductor.report.metadata import (
    LOCK_NAME,
    METADATA_NAME,
    MetadataError,
    update_metadata,
)
from pytest_conductor.report.record import execution_record
from pytest_conductor.report.summary import RunFacts, collect_only_lines, summary_lines
from pytest_conductor.report.verdict import Verdict, decide
from pytest_conductor.scheduling.remote import CHANGED_OUTPUT, remote_plugin
from pytest_conductor.state import ConductorState
from pytest_conductor.util.atomic import atomic_write
from pytest_conductor.util.timestamps import utc_now_iso

__all__ = ["ReportPlugin"]

# Set by the dispatcher (track/items.py) in dispatch mode, per attempt.
_DISPATCHER_KEYS = ("worker_id", "attempts")


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
        self._running = False  # a controller session that runs nodes (not --collect-only)
        self._collect_only = False
        self._interrupted = False
        self._spans: dict[str, tuple[float, float]] = {}
        self._head: HeadWatch | None = None  # HEAD for TASK_COMPLETE, cached per commit

    # -- session start -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before xdist's trylast sessionstart starts workers
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        config = session.config
        if _is_worker(config):
            remote = remote_plugin(config)
            if remote is not None and remote.link is not None:
                # This worker's copy is not the controller's: the work is measured here.
                root = self.state.settings.root
                self.snapshot = take_snapshot(root, self._not_counted(config))
            return
        if config.getoption("collectonly", False):
            self._collect_only = True  # nothing runs: no bus, no metadata, no verdict
            return
        self._running = True
        self.started_at = utc_now_iso()
        with self._guard("message bus not rotated"):
            # The last run's events move to runs/<stamp>/: this run's events are this run's.
            self.bus.rotate()
        self.snapshot = take_snapshot(self.state.settings.root, self._not_counted(config))

    # -- every process that runs nodes -----------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        task = self.state.task_id_of(item.nodeid)
        if task is not None:
            props = self._properties(self.nodes[task], item.user_properties)
            # The item's list too: each later report copies it, and junitxml takes the
            # properties from the last (teardown) report.
            set_properties(item.user_properties, props)
            set_properties(report.user_properties, props)
        return report

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

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, None, None]:
        task = self.state.task_id_of(report.nodeid) if self._running else None
        if task is not None:
            # Before junitxml reads them: reports made without an item (the xdist
            # scheduler's blocked nodes) get the properties here.
            keys = {key for key, _ in report.user_properties}
            if keys.isdisjoint(("name", "attempts")):
                set_properties(report.user_properties, self._properties(self.nodes[task]))
        yield
        if task is not None:
            # After every other implementation, so TrackPlugin has recorded the outcome.
            self._node_report(task, report)

    def _node_report(self, task: str, report: pytest.TestReport) -> None:
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if isinstance(start, float) and isinstance(stop, float):
            first, last = self._spans.get(task, (start, stop))
            self._spans[task] = (min(first, start), max(last, stop))
        # A node's outcome is final with its call report, or with a setup that did not
        # pass (a blocked node, a setup error); a failing teardown can still fail it.
        final = report.when == "call" or (
            report.when in ("setup", "teardown") and not report.passed
        )
        if not final:
            return
        if report.failed:
            self.events.record_error(task, error_text(report))
        outcome = self.state.outcomes.get(task)
        self._emit(task, outcome.status if outcome is not None else report.outcome)

    def _emit(self, task: str, status: str) -> None:
        kind = self.events.pending(task, status)
        if kind is None:
            return
        with self._guard(f"{kind}_{task}.event not written"):
            sha = ""
            if kind == "TASK_COMPLETE" and self.snapshot is not None:
                if self._head is None:
                    self._head = HeadWatch(self.snapshot.toplevel)
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
        state = self.state
        interrupted = self._interrupted or exitstatus == pytest.ExitCode.INTERRUPTED
        statuses = {t: o.status for t in state.selected if (o := state.outcomes.get(t))}
        self.verdict = decide(
            state.selected,
            statuses,
            track=str(state.settings.track),
            files_changed=self._files_changed(config),
            interrupted=interrupted,
        )
        if self.changes_elsewhere:
            self.verdict = dataclasses.replace(
                self.verdict, changed_elsewhere=self._elsewhere(config)
            )
        # metadata.json first, the PARALLEL_COMPLETE event last: an orchestrator that
        # polls for the event then finds the metadata and the verdict already written.
        with self._guard("metadata.json not updated"):
            try:
                update_metadata(
                    state.settings.track_dir,
                    execution_record(
                        state.plan,
                        state.selected,
                        statuses,
                        state.last_outcomes,
                        self.events.errors,
                        passed=self.verdict.passed,
                        interrupted=interrupted,
                        started_at=self.started_at,
                    ),
                    lock_timeout=self.metadata_lock_timeout,
                )
            except MetadataError as error:
                self.warnings.append(str(error))
        with self._guard("verdict.json not written"):
            self.bus.write_json("verdict.json", self.verdict.as_dict())
        with self._guard("PARALLEL_COMPLETE event not written"):
            self.bus.parallel_complete(str(state.settings.track), self.verdict.passed)
        self._write_graph(statuses)
        self._name_junit_testcases(config)
        self._write_markdown_summary()

    def _not_counted(self, config: pytest.Config) -> list[Path]:
        """Paths whose changes are the plugin's or pytest's own output, not the work's."""
        settings = self.state.settings
        paths = [
            settings.bus_dir,
            settings.track_dir / METADATA_NAME,
            settings.track_dir / LOCK_NAME,
        ]
        if settings.graph is not None:
            paths.append(settings.graph)
        xml = self._junit_path(config)
        if xml is not None:
            paths.append(xml)
        return paths

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
        workers = remote.remotes.values() if remote is not None else ()
        return tuple(
            {
                "host": host,
                "root": root,
                "workers": sorted(w.worker for w in workers if (w.host, w.root) == (host, root)),
                "files_changed": len(files),
            }
            for (host, root), files in sorted(self.changes_elsewhere.items())
        )

    def _changes_elsewhere(self, config: pytest.Config) -> dict[tuple[str, str], list[str]]:
        """The files changed in each remote copy, by (host, root): workers may share one."""
        remote = remote_plugin(config)
        found: dict[tuple[str, str], list[str]] = {}
        for worker in remote.remotes.values() if remote is not None else ():
            if worker.changed_files is not None:
                found[(worker.host, worker.root)] = worker.changed_files
        self.changes_elsewhere = found
        return found

    def _write_graph(self, statuses: dict[str, str] | None) -> None:
        state = self.state
        path = state.settings.graph
        if path is None:
            return
        chosen = set(state.selected)  # membership only
        critical = critical_path(
            {t: d for t, d in state.plan.deps.items() if t in chosen}, state.weights
        )
        states = node_states(state.plan.ids, state.selected, statuses, critical)
        with self._guard(f"graph not written to {path}"):
            self.graph_written = write_graph(
                path, state.plan, states, critical, title=f"track {state.settings.track}"
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
            facts = RunFacts(
                track=str(state.settings.track),
                selected=state.selected,
                deps=state.plan.deps,
                outcomes=state.outcomes,
                durations=state.durations,
                wall_time=self._wall_time(),
                names={t: n.name for t, n in self.nodes.items()},
            )
            lines = summary_lines(facts, verbosity=verbosity)
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
        facts = RunFacts(
            track=str(state.settings.track),
            selected=state.selected,
            deps=state.plan.deps,
            outcomes=state.outcomes,
            durations=state.durations,
            wall_time=self._wall_time(),
            names={t: n.name for t, n in self.nodes.items()},
        )
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
    def _guard(self, what: str) -> Iterator[None]:
        """Turn a failed write into a warning line of the summary, never a traceback.

        The bus reports damage it worked around in ``bus.warnings`` (it is built with
        ``warn=False``: under ``-W error`` a warning raised in a session hook would end
        the run with a traceback); those go to the summary too.
        """
        seen = len(self.bus.warnings)
        try:
            yield
        # OSError includes BusLockTimeout (a TimeoutError); ValueError includes BusError.
        except (OSError, ValueError, ET.ParseError) as error:
            self.warnings.append(f"{what}: {error}")
        finally:
            self.warnings.extend(self.bus.warnings[seen:])
