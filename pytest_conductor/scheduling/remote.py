"""Workers on other machines: the controller's bus stays the one bus of the run.

Registered under ``--conductor-track`` when xdist is present, on the controller and on
every worker. Only public channels are used: xdist's ``pytest_configure_node`` hook and
``node.workerinput`` (as pytest-randomly uses them), and execnet's own API — the
controller opens one extra channel per worker (``node.gateway.newchannel()``) and hands
it over in ``workerinput``; execnet carries channels inside the data it sends.

On the worker, :class:`WorkerLink` looks for the controller's token in its own bus
folder. Found: the worker writes the controller's files already (``popen`` without
``chdir``, a shared disk) and nothing is forwarded. Not found: the worker's bus is set up
for this run, and a thread sends its changes (:class:`~pytest_conductor.bus.forward.BusTail`)
every :data:`POLL` seconds, and once more before each report of a node leaves the worker.
Both go out on one connection in order, and the controller applies the changes in the
channel's callback (the same receiver thread that queues xdist's report), so the
controller's bus holds what the agent posted before it learns the node's outcome.

On the controller, :class:`ControllerLink` applies the changes
(:class:`~pytest_conductor.bus.forward.BusMirror`), answers lock requests
(:class:`~pytest_conductor.bus.forward.LockBroker`), and releases the locks of a worker
whose connection ended while its agents held some.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_conductor.bus import BusError, BusLockTimeout, MessageBus
from pytest_conductor.bus.forward import (
    BusMirror,
    BusTail,
    LockBroker,
    lock_answer,
    prepare_local_bus,
    shares_bus,
    write_token,
)
from pytest_conductor.state import ConductorState

__all__ = [
    "POLL",
    "REMOTE_KEY",
    "ControllerLink",
    "RemoteBusPlugin",
    "RemoteWorker",
    "WorkerLink",
]

#: Seconds between two looks at a forwarded worker's bus.
POLL = 0.2
_LINK = "conductor_link"
_TOKEN = "conductor_token"
_BUS = "conductor_bus"
_END = ("end",)  # the channel's end marker: the worker's connection is gone


@dataclass
class RemoteWorker:
    """What the controller knows of one xdist worker that does not share its files."""

    worker: str
    host: str
    root: str
    bus: str
    errors: list[str] = field(default_factory=list)
    released_locks: list[str] = field(default_factory=list)
    changed_files: list[str] | None = None
    #: When its session ended (``time.monotonic()``): of workers sharing one copy, the
    #: last to end measured it last (idle workers may end before the last nodes do).
    finished_at: float = 0.0
    announced: bool = False

    def describe(self) -> str:
        return f"[{self.worker}] on {self.host} in {self.root}"


class ControllerLink:
    """The controller's end of one worker's channel (callbacks in execnet's thread)."""

    def __init__(self, plugin: RemoteBusPlugin, worker: str, channel: Any) -> None:
        self.plugin = plugin
        self.worker = worker
        self.channel = channel
        self.broker = LockBroker(plugin.state.settings.bus_dir)
        self.remote: RemoteWorker | None = None

    def receive(self, message: Any) -> None:
        # Runs in execnet's receiver thread: nothing may escape, or the worker is lost.
        try:
            self._receive(message)
        except Exception as error:  # broad on purpose, see above
            self._error(f"{type(error).__name__}: {error}")

    def _receive(self, message: Any) -> None:
        if message == _END:
            if self.remote is not None:
                self.remote.released_locks += self.broker.release_all()
            return
        kind = message[0]
        if kind == "hello":
            info = message[1]
            if not info["shared"]:
                self.remote = RemoteWorker(
                    self.worker, str(info["host"]), str(info["root"]), str(info["bus"])
                )
                self.plugin.remotes[self.worker] = self.remote
        elif kind == "changes":
            for change in message[1]:
                if change[0] == "lock":
                    answer = self.broker.answer(change[2])
                    self.channel.send(("answer", change[1], answer))
                    continue
                with self.plugin.mirror_lock:
                    self.plugin.mirror().apply(change)
        else:
            raise BusError(f"unknown message {kind!r}")

    def _error(self, text: str) -> None:
        if self.remote is not None and len(self.remote.errors) < 20:
            self.remote.errors.append(text)


class WorkerLink:
    """The worker's end: sends its bus's changes to the controller while nodes run."""

    def __init__(self, channel: Any, bus_dir: Path) -> None:
        self.channel = channel
        self.bus_dir = bus_dir
        self.tail = BusTail(bus_dir)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.channel.setcallback(self._answer)
        self._thread = threading.Thread(target=self._run, name="conductor-forward", daemon=True)
        self._thread.start()

    def _answer(self, message: Any) -> None:
        with contextlib.suppress(Exception):  # execnet's thread: see ControllerLink.receive
            if message[0] == "answer":
                lock_answer(self.bus_dir, message[1], message[2])

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            with contextlib.suppress(OSError, EOFError):
                self.flush()

    def flush(self) -> None:
        """Send every change made so far; one poll at a time, so changes keep their order."""
        with self._lock:
            changes = self.tail.poll()
            if changes:
                self.channel.send(("changes", changes))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with contextlib.suppress(OSError, EOFError):
            self.flush()


class RemoteBusPlugin:
    """See the module docstring."""

    def __init__(self, state: ConductorState, config: pytest.Config) -> None:
        self.state = state
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        #: Controller: the workers that do not share its files, by xdist worker id.
        self.remotes: dict[str, RemoteWorker] = {}
        self.mirror_lock = threading.Lock()
        self._mirror: BusMirror | None = None
        self._token: str | None = None
        #: Worker: the forwarding link, when this worker's files are not the controller's.
        self.link: WorkerLink | None = None
        config.stash[REMOTE_KEY] = self

    def mirror(self) -> BusMirror:
        if self._mirror is None:
            self._mirror = BusMirror(MessageBus(self.state.settings.bus_dir, warn=False))
        return self._mirror

    # -- controller ------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        bus_dir = self.state.settings.bus_dir
        if self._token is None:
            self._token = write_token(bus_dir)
        channel = node.gateway.newchannel()
        link = ControllerLink(self, str(node.gateway.id), channel)
        channel.setcallback(link.receive, endmarker=_END)
        node.workerinput[_LINK] = channel
        node.workerinput[_TOKEN] = self._token
        node.workerinput[_BUS] = str(bus_dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self, node: Any) -> None:
        remote = self.remotes.get(str(node.gateway.id))
        if remote is None or remote.announced:
            return
        remote.announced = True
        self._line(
            f"conductor: worker {remote.describe()} does not share this machine's files: "
            f"its bus ({remote.bus}) is forwarded to {self.state.settings.bus_dir}; "
            "the files its agents change stay in its copy"
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        remote = self.remotes.get(str(node.gateway.id))
        output = getattr(node, "workeroutput", None) or {}
        changed = output.get(CHANGED_OUTPUT)
        if remote is not None and isinstance(changed, list):
            remote.changed_files = [str(path) for path in changed]
            remote.finished_at = time.monotonic()

    def changed_by_copy(self) -> dict[tuple[str, str], list[str]]:
        """The files changed in each remote copy, by (host, root); workers may share one,
        and the last of them to end measured it last."""
        found: dict[tuple[str, str], list[str]] = {}
        for worker in sorted(self.remotes.values(), key=lambda w: w.finished_at):
            if worker.changed_files is not None:
                found[(worker.host, worker.root)] = worker.changed_files
        return found

    def workers_in(self, host: str, root: str) -> list[str]:
        """The ids of the remote workers that used the copy in ``root`` on ``host``."""
        return sorted(w.worker for w in self.remotes.values() if (w.host, w.root) == (host, root))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for (host, root), changed in sorted(self.changed_by_copy().items()):
            if changed:
                names = ", ".join(self.workers_in(host, root))
                terminalreporter.write_line(
                    f"conductor: {len(changed)} file(s) changed in the copy on {host} in "
                    f"{root} (workers {names}); they stay there: {', '.join(changed[:10])}"
                    + (" ..." if len(changed) > 10 else "")
                )
        for remote in self.remotes.values():
            if remote.released_locks:
                terminalreporter.write_line(
                    f"conductor: worker {remote.describe()} ended holding locks; released: "
                    + ", ".join(remote.released_locks)
                )
            for error in remote.errors:
                terminalreporter.write_line(
                    f"conductor: forwarding from worker {remote.describe()} failed: {error}"
                )

    def _line(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.get_verbosity() >= 0:
            reporter.ensure_newline()
            reporter.write_line(text)

    # -- worker ----------------------------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        if not self.is_worker:
            return
        workerinput: dict[str, Any] = config.workerinput  # type: ignore[attr-defined]
        channel = workerinput.get(_LINK)
        if channel is None:
            return
        bus_dir = self.state.settings.bus_dir
        shared = shares_bus(bus_dir, str(workerinput.get(_TOKEN)))
        channel.send(
            (
                "hello",
                {
                    "shared": shared,
                    "host": socket.gethostname(),
                    "root": str(self.state.settings.root),
                    "bus": str(bus_dir),
                },
            )
        )
        if shared:
            return
        prepare_local_bus(bus_dir, str(workerinput["testrunuid"]), str(workerinput[_BUS]))
        self.link = WorkerLink(channel, bus_dir)
        self.link.start()
        # Only here: a hook wrapper on every report costs every other run too.
        config.pluginmanager.register(_FlushBeforeReports(self), "conductor-remote-flush")

    @pytest.hookimpl(tryfirst=True)  # before xdist tells the controller this worker finished
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._stop_link()

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stop_link()

    def _stop_link(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link = None


class _FlushBeforeReports:
    """Registered on a forwarding worker only (see RemoteBusPlugin.pytest_configure)."""

    def __init__(self, plugin: RemoteBusPlugin) -> None:
        self.plugin = plugin

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        link = self.plugin.link
        if link is not None:
            # Before the report leaves the worker: the controller then has every line the
            # agent posted when it posts the node's own event.
            with contextlib.suppress(OSError, EOFError, BusError, BusLockTimeout):
                link.flush()
        return report


#: Key of ``config.workeroutput`` holding the files a forwarded worker's run changed.
CHANGED_OUTPUT = "conductor_changed_files"
REMOTE_KEY = pytest.StashKey[RemoteBusPlugin]()


def remote_plugin(config: pytest.Config) -> RemoteBusPlugin | None:
    """The run's :class:`RemoteBusPlugin`, if registered."""
    return config.stash.get(REMOTE_KEY, None)
