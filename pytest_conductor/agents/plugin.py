"""Dispatch mode around the nodes: template checks, the live status, no agent left behind.

Registered next to ``TrackPlugin`` under ``--conductor-track``, in every process (the
controller, each xdist worker, or the one process of ``-n 0``). The nodes' agents are run
by :meth:`TaskItem.runtest <pytest_conductor.track.items.TaskItem.runtest>` through
:mod:`pytest_conductor.agents.dispatch`; this plugin does what no single node can:

- checks every command template when the run starts (an unknown placeholder is a usage
  error naming it, before any agent starts);
- shows the running agents, how long each runs and its heartbeat age, at least every
  30 s: in-process from the agent's waiting loop (the main thread), under xdist from a
  controller thread that hands each line to xdist's own event loop (see
  :meth:`AgentsPlugin._start_status_thread`);
- kills every agent process group still alive in the agent registry when the session
  ends, however it ends (Ctrl-C, an error, ``pytest_unconfigure``), when the xdist worker
  that started one died, and, at the next start, those an earlier run left behind.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_conductor.acceptance.commands import command_registry
from pytest_conductor.agents.dispatch import (
    TemplateError,
    Terminated,
    agent_registry,
    parse_template,
    running_line,
    termination_signals,
)
from pytest_conductor.bus import BusError, BusLockTimeout, MessageBus
from pytest_conductor.state import ConductorState
from pytest_conductor.util.processes import (
    RUN_ENV,
    GroupRecord,
    child_pids,
    kill_marked,
    new_run_id,
)

if TYPE_CHECKING:
    from types import FrameType

__all__ = [
    "AGENTS_KEY",
    "STATUS_INTERVAL_ENV",
    "AgentsPlugin",
    "agents_waiter",
    "check_templates",
]

#: Seconds between two status lines (internal: tests shorten it). At most 30 s.
STATUS_INTERVAL_ENV = "PYTEST_CONDUCTOR_STATUS_INTERVAL"
_DEFAULT_INTERVAL = 30.0
# How often the controller thread looks for agents whose xdist worker died.
_SWEEP_EVERY = 2.0
# The DSession event that prints a status line; see _start_status_thread.
_STATUS_EVENT = "conductor_status"


def check_templates(state: ConductorState) -> bool:
    """Check the run's and every node's command template; True when any node dispatches.

    Raises a UsageError naming the template's owner and the unknown placeholder.
    """
    dispatching = False
    if state.settings.worker is not None:
        dispatching = True
        try:
            parse_template(state.settings.worker)
        except TemplateError as exc:
            raise pytest.UsageError(f"conductor: worker command template: {exc}") from None
    for node in state.plan.nodes:
        if node.worker is not None:
            dispatching = True
            try:
                parse_template(node.worker)
            except TemplateError as exc:
                raise pytest.UsageError(f"conductor: node {node.id}: worker: {exc}") from None
    return dispatching


def _interval() -> float:
    raw = os.environ.get(STATUS_INTERVAL_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return _DEFAULT_INTERVAL
    return value if 0 < value <= _DEFAULT_INTERVAL else _DEFAULT_INTERVAL


class AgentsPlugin:
    """See the module docstring. Raises a UsageError on a bad command template."""

    def __init__(self, state: ConductorState, config: pytest.Config) -> None:
        self.state = state
        self.config = config
        self.dispatching = check_templates(state)
        self.interval = _interval()
        self.is_worker = hasattr(config, "workerinput")
        self.registry = agent_registry(state.settings.bus_dir)
        # Criterion commands (and pattern searches) are recorded apart from agents: they
        # are killed the same way but are not shown as running agents.
        self.commands = command_registry(state.settings.bus_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.terminated_by = ""
        self._raise_on_signal = True
        self._previous_handlers: dict[int, Any] = {}
        config.stash[AGENTS_KEY] = self
        self._handle_termination()
        # The run's id marks every command and agent (see util.processes.MARK_ENV); set
        # by the controller before xdist starts its workers, who inherit it.
        self._previous_run_id = os.environ.get(RUN_ENV)
        if not self.is_worker:
            os.environ[RUN_ENV] = new_run_id()
        self.run_id = os.environ.get(RUN_ENV, "")

    # -- SIGTERM / SIGHUP -----------------------------------------------------------------

    def _handle_termination(self) -> None:
        """Make SIGTERM and SIGHUP end the run as Ctrl-C does (CI runners and ``timeout``
        send TERM; a closed terminal sends HUP).

        Their default action ends the process at once, skipping every clean-up. Only in
        the main thread (the only one that can handle signals) and only where nobody
        installed a handler of their own.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in termination_signals():
            if signal.getsignal(sig) == signal.SIG_DFL:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        first = not self.terminated_by
        self.terminated_by = self.terminated_by or name
        if first and not self.is_worker:
            # xdist workers share our process group only when a terminal or `timeout`
            # signalled the whole group; tell them too, so each stops its node (and the
            # commands it runs) now rather than at xdist's shutdown timeout.
            for pid in child_pids(os.getpid()):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        if self._raise_on_signal:
            raise Terminated(f"terminated by {name}")

    def _restore_signals(self) -> None:
        for sig, previous in self._previous_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous)
        self._previous_handlers.clear()

    # -- the live status ------------------------------------------------------------------

    def status_line(self) -> str | None:
        """The running agents in one line, from the registry and worker-status.json."""
        records = self.registry.records()
        if not records:
            return None
        bus = MessageBus(self.state.settings.bus_dir, warn=False)
        try:
            status = bus.worker_status()
        except (OSError, BusError, BusLockTimeout):
            status = {}
        return running_line(records, status, time.time())

    def waiter(self) -> Callable[[], None] | None:
        """The callback an in-process agent's waiting loop calls; None on an xdist worker
        (its output reaches nobody) and under ``-q``."""
        if self.is_worker or self.config.get_verbosity() < 0:
            return None
        next_line = time.monotonic() + self.interval

        def tick() -> None:
            nonlocal next_line
            if time.monotonic() < next_line:
                return
            next_line = time.monotonic() + self.interval
            with _best_effort():
                self._write(self.status_line())

        return tick

    def _write(self, line: str | None) -> None:
        """Write one whole line through the terminal reporter (main thread only)."""
        if line is None or self.config.get_verbosity() < 0:
            return
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        # During a node's call phase output is captured: like live logging, step around it.
        suspended = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with suspended:
            _write_whole_line(self.config, line)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        dsession = self.config.pluginmanager.get_plugin("dsession")
        # Also in verify-only runs: the thread kills the criterion commands of a worker
        # that died.
        if not self.is_worker and dsession is not None:
            self._start_status_thread(dsession)
        try:
            return (yield)
        finally:
            self._stop_status_thread()
            if not self.is_worker:
                # From here on the session end writes the verdict and metadata.json: a
                # signal is recorded (the run reports itself interrupted), not raised in
                # the middle of a write.
                self._raise_on_signal = False

    def _start_status_thread(self, dsession: Any) -> None:
        """Under xdist: a controller thread that prints status lines and sweeps agents
        whose worker died.

        The controller's main thread sits in xdist's event loop (``DSession.loop_once``
        waits on ``DSession.queue`` and calls ``worker_<event>`` for each event). The
        thread puts a ``conductor_status`` event on that queue, so the line is written by
        the main thread between two worker events and never cuts into pytest's own
        output. When this xdist does not dispatch events that way, the thread writes the
        whole line itself.
        """
        inject = _can_inject(dsession)
        if inject:
            dsession.worker_conductor_status = self._print_status
        self._stop.clear()

        def run() -> None:
            next_line = time.monotonic() + self.interval
            while not self._stop.wait(min(self.interval, _SWEEP_EVERY)):
                with _best_effort():
                    self._sweep("dead-owner")
                    if time.monotonic() < next_line:
                        continue
                    next_line = time.monotonic() + self.interval
                    if inject:
                        dsession.queue.put((_STATUS_EVENT, {}))
                    else:
                        self._print_status()

        self._thread = threading.Thread(target=run, name="conductor-status", daemon=True)
        self._thread.start()

    def _print_status(self) -> None:
        # Called in xdist's event loop: whatever goes wrong must not end the run.
        with _best_effort():
            line = self.status_line() if self.config.get_verbosity() >= 0 else None
            if line is not None:
                _write_whole_line(self.config, line)

    def _stop_status_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # -- no agent left behind -------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        killed = self._sweep("dead-owner")
        if killed:
            self._write(
                f"conductor: killed {len(killed)} agent process group(s) an earlier run left "
                f"running: {', '.join(r.name for r in killed)}"
            )

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self._raise_on_signal = False
        self._sweep_end()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        """An xdist worker ended; if it died, what it started dies with it now."""
        if error is not None:
            self._sweep("dead-owner")

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, object, object]:
        try:
            return (yield)
        finally:
            # After every other sessionfinish, xdist's (which stops the workers) included.
            self._sweep_end()

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stop_status_thread()
        self._sweep_end()
        self._restore_signals()
        if not self.is_worker:
            if self._previous_run_id is None:
                os.environ.pop(RUN_ENV, None)
            else:
                os.environ[RUN_ENV] = self._previous_run_id

    def _sweep_end(self) -> None:
        """At the end the controller kills every agent; a worker only the ones it started
        (another worker's agents may still be running)."""
        self._sweep("mine" if self.is_worker else "all")

    def _sweep(self, which: str) -> list[GroupRecord]:
        """Kill the recorded groups ``which`` names, then what is left of them by their
        mark; returns the agents among them."""
        agents: list[GroupRecord] = []
        with contextlib.suppress(OSError):
            self.commands.sweep(which)
        with contextlib.suppress(OSError):
            agents = self.registry.sweep(which)
        with contextlib.suppress(OSError):
            kill_marked(self.run_id, which)
        return agents


@contextlib.contextmanager
def _best_effort() -> Iterator[None]:
    """A status line is a courtesy: no error in making one may stop a run (or a thread)."""
    try:
        yield
    except Exception:  # broad on purpose, see the docstring
        return


def _write_whole_line(config: pytest.Config, line: str) -> None:
    """Write ``line`` on a line of its own, whatever pytest left on the current one.

    ``ensure_newline`` knows only the lines the reporter started with a file name; under
    xdist the progress dots are written without one, so the writer's own column counts.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.ensure_newline()
    if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
        reporter.line("")
    reporter.write_line(line)


def _can_inject(dsession: Any) -> bool:
    """Whether xdist's DSession dispatches queued events to ``worker_<name>`` methods."""
    queue = getattr(dsession, "queue", None)
    loop_once = getattr(type(dsession), "loop_once", None)
    if queue is None or not callable(getattr(queue, "put", None)) or loop_once is None:
        return False
    try:
        source = inspect.getsource(loop_once)
    except (OSError, TypeError):
        return False
    return '"worker_" + callname' in source and "getattr(self, method)" in source


AGENTS_KEY = pytest.StashKey[AgentsPlugin]()


def agents_waiter(config: pytest.Config) -> Callable[[], None] | None:
    """The in-process status callback for :func:`~pytest_conductor.agents.dispatch.run_agent`."""
    plugin = config.stash.get(AGENTS_KEY, None)
    return plugin.waiter() if plugin is not None else None
