"""Session end of a track run: bus events, metadata.json, the verdict, the summary, JUnit
names and properties, the graph file. Hooks only; the work is in pure modules
(:mod:`~pytest_conductor.metadata`, :mod:`~pytest_conductor.verdict`,
:mod:`~pytest_conductor.changes`, :mod:`~pytest_conductor.summary`,
:mod:`~pytest_conductor.graph_export`).

Everything that writes runs on the controller only (or in-process with ``-n 0``), never
on an xdist worker: there, only :meth:`ReportPlugin.pytest_runtest_makereport` adds the
JUnit properties to the reports that travel back to the controller.

Nothing here may turn a finished run into a traceback: a file that cannot be written is
reported in the ``conductor`` section of the terminal summary and the run goes on.
"""

from __future__ import annotations

import contextlib
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest

from pytest_conductor.atomic import atomic_write
from pytest_conductor.bus import MessageBus
from pytest_conductor.changes import (
    TreeSnapshot,
    changed_files,
    head_sha,
    reported_files,
    take_snapshot,
)
from pytest_conductor.graph import critical_path, dependents, levels
from pytest_conductor.graph_export import node_states, write_graph
from pytest_conductor.items import TaskItem
from pytest_conductor.metadata import (
    LOCK_NAME,
    METADATA_NAME,
    ExecutionRecord,
    MetadataError,
    completed_groups,
    update_metadata,
)
from pytest_conductor.plan import Node
from pytest_conductor.properties import set_properties
from pytest_conductor.state import ConductorState
from pytest_conductor.summary import RunFacts, collect_only_lines, summary_lines
from pytest_conductor.timestamps import utc_now_iso
from pytest_conductor.verdict import Verdict, decide

__all__ = ["JUNIT_PROPERTY_KEYS", "ReportPlugin", "error_text", "junit_properties"]

#: The properties each node's testcase carries in ``--junitxml``, in this order.
JUNIT_PROPERTY_KEYS = (
    "task_id",
    "name",
    "type",
    "phase",
    "files",
    "worker_id",
    "attempts",
    "blocked_by",
)

# Set by the dispatcher (items.py) in dispatch mode, per attempt.
_DISPATCHER_KEYS = ("worker_id", "attempts")
_EVENT_OF = {"passed": "TASK_COMPLETE", "failed": "TASK_FAILED", "blocked": "TASK_BLOCKED"}
_ERROR_LINES = 20  # TASK_FAILED content: enough to see what failed, not a whole log
_HEADER = re.compile(r"task \S+ \(.*\):")  # the first line of a node's failure report
_XDIST_HEADER = re.compile(r"\[[\w-]+\] .* -- Python \S+")


def junit_properties(
    node: Node,
    blocked_by: str | None,
    *,
    worker_id: str = "",
    attempts: int | None = None,
) -> list[tuple[str, str]]:
    """The JUnit properties of one node's testcase (keys: :data:`JUNIT_PROPERTY_KEYS`).

    ``blocked_by`` names the failed (or deselected) node at the root of the chain that
    blocked this one; None when it was not blocked. ``attempts`` defaults to 0 for a
    blocked node (it never ran) and 1 otherwise (verify-only runs each node once).
    """
    if attempts is None:
        attempts = 0 if blocked_by else 1
    return [
        ("task_id", node.id),
        ("name", node.name),
        ("type", node.type),
        ("phase", node.phase or ""),
        ("files", ", ".join(node.files)),
        ("worker_id", worker_id),
        ("attempts", str(attempts)),
        ("blocked_by", blocked_by or ""),
    ]


def error_text(report: pytest.TestReport) -> str:
    """The first lines of a failed report: what TASK_FAILED carries."""
    crash = getattr(report.longrepr, "reprcrash", None)
    # An exception's traceback starts with code lines; its crash line says what happened.
    text = str(crash.message) if crash is not None else report.longreprtext
    lines = text.strip().splitlines()
    while lines and _XDIST_HEADER.match(lines[0]):
        del lines[0]  # "[gw0] linux -- Python 3.11.7 /usr/bin/python", added by xdist
    lines = lines[:_ERROR_LINES]
    return "\n".join(lines) or f"{report.when} failed"


def _first_reason(text: str) -> str:
    """One line of ``text`` that says why, skipping the ``task 1.2 (name):`` header."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not _HEADER.fullmatch(stripped):
            return stripped
    return text.strip() or "failed"


def _prepend_properties(case: ET.Element, props: Sequence[tuple[str, str]]) -> None:
    """Give a testcase a ``<properties>`` element first, as junitxml places it."""
    element = ET.Element("properties")
    for key, value in props:
        ET.SubElement(element, "property", {"name": key, "value": value})
    case.insert(0, element)


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
        self.unblocks = dependents(state.plan.deps)
        #: Problems met while writing files; shown in the terminal summary.
        self.warnings: list[str] = []
        #: The verdict, once the session has finished (controller only).
        self.verdict: Verdict | None = None
        self.started_at = ""
        self.snapshot: TreeSnapshot | None = None
        self.graph_written: Path | None = None
        self._running = False  # a controller session that runs nodes (not --collect-only)
        self._collect_only = False
        self._interrupted = False
        self._emitted: set[tuple[str, str]] = set()
        self._errors: dict[str, str] = {}
        self._spans: dict[str, tuple[float, float]] = {}

    # -- session start -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before xdist's trylast sessionstart starts workers
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        config = session.config
        if _is_worker(config):
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
        if isinstance(item, TaskItem):
            props = self._properties(item.task, item.user_properties)
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
            self._errors.setdefault(task, error_text(report))
        outcome = self.state.outcomes.get(task)
        self._emit(task, outcome.status if outcome is not None else report.outcome)

    def _emit(self, task: str, status: str) -> None:
        kind = _EVENT_OF.get(status)
        if kind is None or (task, kind) in self._emitted:
            return  # skipped (not run) nodes get no event; nothing is written twice
        self._emitted.add((task, kind))
        with self._guard(f"{kind}_{task}.event not written"):
            if self.bus.has_event(kind, task):
                return  # the agent reported it itself (dispatch mode) and agrees
            if kind == "TASK_COMPLETE":
                sha = head_sha(self.snapshot.toplevel) if self.snapshot is not None else None
                self.bus.complete(
                    task,
                    sha or "",
                    files_modified=self.nodes[task].files,
                    unblocks=self.unblocks.get(task, ()),
                )
            elif kind == "TASK_FAILED":
                self.bus.fail(task, self._errors.get(task, "failed"))
            else:
                outcome = self.state.outcomes[task]
                self.bus.blocked(task, outcome.root or "", outcome.reason)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self._interrupted = True

    # -- session end (controller) ----------------------------------------------------------

    @pytest.hookimpl(trylast=True)  # after junitxml has written its file
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = session.config
        if _is_worker(config):
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
        # metadata.json first, the PARALLEL_COMPLETE event last: an orchestrator that
        # polls for the event then finds the metadata and the verdict already written.
        with self._guard("metadata.json not updated"):
            try:
                update_metadata(
                    state.settings.track_dir,
                    self._record(statuses, interrupted),
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
        if self.snapshot is not None:
            return len(changed_files(self.snapshot, self._not_counted(config)))
        messages = []
        with self._guard("message bus not read"):
            messages = self.bus.messages()
        return len(reported_files(messages, ignore_source=self.bus.source))

    def _record(self, statuses: dict[str, str], interrupted: bool) -> ExecutionRecord:
        state = self.state
        selected = state.selected
        ran = [t for t in selected if statuses.get(t) in ("passed", "failed")]
        failed = [t for t in ran if statuses[t] == "failed"]
        if state.plan.groups:
            groups = {g.id: g.tasks for g in state.plan.groups}
        else:
            groups = {f"level-{i}": tuple(lv) for i, lv in enumerate(levels(state.plan.deps), 1)}
        # A node left out of this run counts as done if it passed last time (as for blocking).
        effective = {t: state.last_outcomes.get(t, "") for t in state.plan.ids if t not in selected}
        effective.update(statuses)
        assert self.verdict is not None
        status = "INTERRUPTED" if interrupted else ("PASSED" if self.verdict.passed else "FAILED")
        return ExecutionRecord(
            status=status,
            started_at=self.started_at,
            completed_at=utc_now_iso(),
            total_workers_spawned=len(ran),
            completed_workers=len(ran) - len(failed),
            failed_workers=len(failed),
            blocked_tasks=[t for t in selected if statuses.get(t) == "blocked"],
            parallel_groups_completed=completed_groups(groups, effective),
            failed_tasks={t: _first_reason(self._errors.get(t, "failed")) for t in failed},
        )

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
            tree = ET.parse(path)
            changed = False
            for case in tree.iter("testcase"):
                task = next(
                    (p.get("value") for p in case.iter("property") if p.get("name") == "task_id"),
                    None,
                )
                if task is None and derived and case.get("classname") == derived:
                    task = case.get("name")
                    if task is not None and task in self.nodes:
                        _prepend_properties(case, self._properties(self.nodes[task]))
                if task is None or task not in self.nodes or case.get("name") != task:
                    continue
                name = self.nodes[task].name
                case.set("classname", classname)
                case.set("name", task if name in ("", task) else f"{task} {name}")
                changed = True
            if changed:
                _replace_xml(path, tree)

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


def _replace_xml(path: Path, tree: ET.ElementTree[ET.Element]) -> None:
    atomic_write(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
