"""xdist hooks of pytest-conductor: the DAG scheduler, the worker patch, crash reports.

Register this module only when xdist is present (``config.pluginmanager.hasplugin("xdist")``);
each hook is inert without ``--conductor-track``. xdist's own hooks are declared
``optionalhook=True`` so that the module also loads with ``-p no:xdist``.

:func:`choose_worker_count` is for the plugin's ``pytest_load_initial_conftests`` and
``pytest_cmdline_main`` wrappers: it must run before xdist's tryfirst
``pytest_cmdline_main`` turns ``-n`` into ``--tx``, and before plugins that decide between
an xdist and a single-process mode as soon as they start (pytest-cov does so in its own
``pytest_load_initial_conftests``).
"""

from __future__ import annotations

import argparse
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_conductor.scheduling import worker_patch
from pytest_conductor.scheduling.scheduler import DagScheduling
from pytest_conductor.state import get_state

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.scheduler import Scheduling

__all__ = [
    "SCHEDULER_KEY",
    "choose_worker_count",
    "pytest_configure",
    "pytest_handlecrashitem",
    "pytest_report_header",
    "pytest_runtestloop",
    "pytest_xdist_make_scheduler",
]

SCHEDULER_KEY = pytest.StashKey[DagScheduling]()


def _active(config: pytest.Config) -> bool:
    state = get_state(config)
    return state is not None and state.settings.active


def _distributing(config: pytest.Config) -> bool:
    """Whether this controller will start xdist workers (xdist's own test, after -n)."""
    if config.getoption("collectonly", False):
        return False  # xdist collects in-process then
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def pytest_configure(config: pytest.Config) -> None:
    if not _active(config):
        return
    if hasattr(config, "workerinput"):
        worker_patch.install(config)
    elif _distributing(config):
        # Fail on the controller, with one clear message, before any worker starts.
        worker_patch.check_supported()


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say once that ``--dist`` does not apply: the DAG scheduler replaces every mode.

    ``load`` is xdist's own default under ``-n``, so only the other modes are named.
    """
    dist = config.getoption("dist", "no")
    if not _active(config) or not _distributing(config) or dist in ("no", "load"):
        return None
    return (
        f"conductor: --dist {dist} is replaced by the DAG scheduler "
        "(a node goes to a free worker once its dependencies passed)"
    )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Scheduling | None:
    """The DAG scheduler under ``--conductor-track``, whatever ``--dist`` says; else xdist's."""
    if not _active(config):
        return None
    scheduler = DagScheduling(config, log)
    config.stash[SCHEDULER_KEY] = scheduler
    return scheduler


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: Scheduling) -> None:
    """A node whose worker died failed: make its report a call failure of that node.

    xdist reports it with ``when="???"``, which junitxml writes as an error "failed on
    setup" and the terminal counts as an error; the node did fail while it ran. The
    location and ``task_id`` property are those a worker's report of the node carries.
    """
    if not isinstance(sched, DagScheduling):
        return
    report.when = "call"
    report.location = sched.location_of(crashitem)
    task = sched.state.task_id_of(crashitem)
    if task is not None:
        report.user_properties = [("task_id", task)]


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """After xdist's loop (even one ended by -x, a crash limit or Ctrl-C), report every
    node that was never dispatched: xdist itself drops them silently."""
    try:
        return (yield)
    finally:
        scheduler = session.config.stash.get(SCHEDULER_KEY, None)
        if scheduler is not None:
            scheduler.finish_session()


def choose_worker_count(
    config: pytest.Config, cap: int, width: int, *, option: argparse.Namespace | None = None
) -> str | None:
    """Set xdist's worker count for a track run; returns a warning to show, or None.

    ``option`` is the namespace to read and change: ``config.option`` by default, or
    ``config.known_args_namespace`` before pytest has parsed the whole command line.

    - no ``-n``: ``min(cap, width)`` workers; in-process when that is 1 (a worker process
      costs start-up time and a chain gains nothing from it);
    - ``-n 0``: in-process, unchanged;
    - ``-n N`` above ``cap``: ``cap`` workers, and a warning;
    - ``-n auto`` / ``-n logical``: xdist's count, capped at ``min(cap, width)``
      (at least 1) through ``--maxprocesses``.

    Leaves everything alone on xdist workers, without xdist, with ``--tx`` given by hand,
    under ``--collect-only`` and under ``--pdb`` (which xdist refuses to distribute).
    """
    if option is None:
        option = config.option
    if hasattr(config, "workerinput") or not hasattr(option, "numprocesses"):
        return None
    requested = option.numprocesses
    wanted = max(1, min(cap, width))
    if requested is None:
        if option.tx or getattr(option, "collectonly", False) or getattr(option, "usepdb", False):
            return None
        if wanted > 1:
            option.numprocesses = wanted
        return None
    if requested in ("auto", "logical"):
        limit = option.maxprocesses
        option.maxprocesses = min(limit, wanted) if limit else wanted
        return None
    if isinstance(requested, int) and requested > cap:
        option.numprocesses = cap
        return (
            f"-n {requested} asks for more workers than conductor_max_workers allows: "
            f"using {cap} (at most {cap} nodes run at once)"
        )
    return None
