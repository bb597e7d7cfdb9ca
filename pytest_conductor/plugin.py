"""pytest hooks of pytest-conductor; each wires the pure parts together and stays thin.

Everybody who installs the plugin pays for this module's imports on every pytest run, so
only what a run without ``--conductor-track`` needs is imported here; the rest is imported
once a track is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_conductor import hookspecs
from pytest_conductor.settings import add_options, early_settings, resolve_settings
from pytest_conductor.state import STATE_KEY, get_state

if TYPE_CHECKING:
    from pytest_conductor.plan.reader import Plan
    from pytest_conductor.settings import Settings
    from pytest_conductor.state import ConductorState
    from pytest_conductor.util.garbage import CollectorHold

__all__ = [
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_cmdline_main",
    "pytest_configure",
    "pytest_load_initial_conftests",
    "pytest_runtestloop",
    "pytest_sessionstart",
]


#: Set in the controller's environment only while xdist starts its workers (to the
#: controller's pid): a process started then, by it, knows it is one of its workers
#: before pytest has parsed anything, and skips reading the plan early (the controller
#: hands workers its parsed plan). Nested runs and later children never match it.
WORKERS_OF = "PYTEST_CONDUCTOR_WORKERS_OF"

#: The plan read before pytest parsed the command line (to choose the worker count), with
#: the settings it was read for: read once, not again when the run's state is built.
_EARLY_PLAN = pytest.StashKey[tuple["Settings", "Plan"]]()
#: The garbage collector held off the run's set-up (see util/garbage.py).
_COLLECTOR: pytest.StashKey[CollectorHold] = pytest.StashKey()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _load_state(config: pytest.Config) -> ConductorState | None:
    """Read settings, track and plan once per config; every problem becomes a UsageError."""
    state = get_state(config)
    if state is not None:
        return state
    settings = resolve_settings(config)
    if not settings.active:
        return None
    from pytest_conductor.plan.reader import PlanError
    from pytest_conductor.track.loading import (
        WORKER_STATE,
        TrackError,
        load_state,
        unpack_state,
    )

    extra_kinds = [k for kinds in config.hook.pytest_conductor_criterion_kinds() for k in kinds]
    workerinput = getattr(config, "workerinput", {})
    # An xdist worker gets the controller's parsed plan (see TrackPlugin) when it still
    # matches plan.md; otherwise, and on the controller, the plan is read and checked.
    state = unpack_state(settings, extra_kinds, workerinput.get(WORKER_STATE))
    if state is None:
        early = config.stash.get(_EARLY_PLAN, None)
        plan = early[1] if early is not None and early[0] == settings else None
        try:
            state = load_state(settings, extra_kinds, plan)
        except (TrackError, PlanError) as exc:
            raise pytest.UsageError(f"conductor: {exc}") from None
    config.stash[STATE_KEY] = state
    if not hasattr(config, "workerinput"):  # once per run: workers read the same plan
        from pytest_conductor.warnings import ConductorWarning

        for warning in state.plan.warnings:
            config.issue_config_time_warning(
                ConductorWarning(f"conductor: {state.settings.plan_path.name} {warning}"),
                stacklevel=2,
            )
        if state.git_problem is not None:
            config.issue_config_time_warning(
                ConductorWarning(
                    f"conductor: the commits plan.md names are not checked: {state.git_problem}"
                ),
                stacklevel=2,
            )
    return state


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    # A wrapper runs before every plain implementation, so plugins that pick an xdist or a
    # single-process mode here (pytest-cov does) already see the worker count the run will
    # use; pytest_cmdline_main sets the same count again on the fully parsed options.
    if getattr(early_config.known_args_namespace, "conductor_track", None):
        _hold_collector(early_config)
        _choose_workers_early(early_config)
    return (yield)


def _hold_collector(config: pytest.Config) -> None:
    """Keep the garbage collector off the run's set-up (see util/garbage.py).

    The release is registered now, before any plugin's ``pytest_configure``, so that it
    runs after their cleanups (last in, first out): pytest's own collections at the end
    of a session still skip what set-up built.
    """
    from pytest_conductor.util.garbage import CollectorHold

    hold = CollectorHold()
    config.stash[_COLLECTOR] = hold
    config.add_cleanup(hold.release)


def _choose_workers_early(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("xdist") or _started_as_worker():
        return
    namespace = config.known_args_namespace
    from pytest_conductor.plan.reader import PlanError
    from pytest_conductor.scheduling.xdist_hooks import choose_worker_count
    from pytest_conductor.track.loading import TrackError, find_track

    try:
        settings = early_settings(config)
        if not settings.active:
            return
        plan = find_track(settings)
    except (pytest.UsageError, TrackError, PlanError, OSError):
        return  # pytest_cmdline_main reports it, as one usage error
    config.stash[_EARLY_PLAN] = (settings, plan)
    choose_worker_count(config, settings.max_workers, plan.width, option=namespace)


def _started_as_worker() -> bool:
    """An xdist worker this run's controller started (see :data:`WORKERS_OF`).

    Any other worker (one restarted after a crash) reads the plan early like everybody
    else: wasted work, never a wrong answer, since a worker starts no workers itself.
    """
    return "PYTEST_XDIST_WORKER" in os.environ and os.environ.get(WORKERS_OF) == str(os.getppid())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> Generator[None, None, None]:
    # xdist's own sessionstart (trylast) starts the workers: around it, and only then,
    # the controller's environment names it (they inherit the environment at start).
    if get_state(session.config) is None or hasattr(session.config, "workerinput"):
        return (yield)
    before = os.environ.get(WORKERS_OF)
    os.environ[WORKERS_OF] = str(os.getpid())
    try:
        return (yield)
    finally:
        if before is None:
            os.environ.pop(WORKERS_OF, None)
        else:
            os.environ[WORKERS_OF] = before


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    # Set up: the plan, the state and (on workers and in-process) every item exist now and
    # live as long as the process. Full collections during the run skip them.
    hold = session.config.stash.get(_COLLECTOR, None)
    if hold is not None:
        hold.set_up()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # Runs before xdist's own cmdline_main turns -n into --tx, so a bad plan fails fast and
    # the worker count can still be chosen from the plan.
    state = _load_state(config)
    if state is not None and not hasattr(config, "workerinput"):
        _check_paths(config)
    if state is not None and config.pluginmanager.hasplugin("xdist"):
        from pytest_conductor.scheduling.xdist_hooks import choose_worker_count

        asked = getattr(config.option, "numprocesses", None)
        warning = choose_worker_count(config, state.settings.max_workers, state.plan.width)
        if warning is not None:
            _warn_at_option(config, warning, f"-n {asked}")
    # xdist workers run this hook too: the run lock is the controller's.
    if state is None or hasattr(config, "workerinput") or config.getoption("collectonly", False):
        return (yield)
    from pytest_conductor.track.run_lock import hold_run_lock

    # The whole run, session end included, under the track's run lock.
    with hold_run_lock(state.settings):
        return (yield)


def _check_paths(config: pytest.Config) -> None:
    """Paths given beside the track must exist, as pytest itself demands, and be reported
    before anything runs: pytest would say so only while collecting (after the session
    has started, so after a verdict), and under xdist only from the workers."""
    if config.args_source != pytest.Config.ArgsSource.ARGS or config.option.pyargs:
        return  # --pyargs names modules: pytest resolves those itself
    for arg in config.args:
        path = arg.partition("[")[0].split("::")[0]
        if not (config.invocation_params.dir / path).exists():
            raise pytest.UsageError(f"file or directory not found: {arg}")


def _warn_at_option(config: pytest.Config, message: str, option: str) -> None:
    """A configuration warning about one of the user's options.

    Issued by pytest, so the user's filters (``-W``, ``filterwarnings``) apply, but from
    a frame named after the option, so the warnings summary points at ``-n 8``, not at
    this file. Turned into an error by those filters, it is a usage error naming the
    option, not a traceback.
    """
    from pytest_conductor.warnings import ConductorWarning

    def issue() -> None:
        # stacklevel 3: the frame of the code compiled below, named after the option.
        config.issue_config_time_warning(ConductorWarning(message), stacklevel=3)

    code = compile("issue()", option, "exec")
    try:
        exec(code, {"issue": issue})
    except ConductorWarning as error:
        raise pytest.UsageError(
            f"{error} (a warning, made an error by -W or filterwarnings)"
        ) from None


@pytest.hookimpl(trylast=True)  # after the cacheprovider has set config.cache
def pytest_configure(config: pytest.Config) -> None:
    state = _load_state(config)
    if state is None:
        return
    from pytest_conductor.agents.plugin import AgentsPlugin
    from pytest_conductor.report.plugin import ReportPlugin
    from pytest_conductor.scheduling import xdist_hooks
    from pytest_conductor.track import workspace
    from pytest_conductor.track.loading import load_history
    from pytest_conductor.track.plugin import TrackPlugin
    from pytest_conductor.util.garbage import skip_final_collection

    # Every process of the run (controller, xdist worker, in-process run) exits faster;
    # the controller waits for its workers to exit before its summary.
    skip_final_collection()
    load_history(getattr(config, "cache", None), state)  # absent: -p no:cacheprovider
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        # No paths on the command line: run only the track, not the user's whole test suite.
        config.args = [str(state.settings.plan_path)]
    config.pluginmanager.register(TrackPlugin(state), "conductor-track")
    config.pluginmanager.register(
        ReportPlugin(state, metadata_lock_timeout=state.settings.metadata_lock_timeout),
        "conductor-report",
    )
    config.pluginmanager.register(AgentsPlugin(state, config), "conductor-agents")
    config.pluginmanager.register(workspace.IsolationPlugin(state), workspace.PLUGIN_NAME)
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_conductor.scheduling.remote import RemoteBusPlugin

        config.pluginmanager.register(xdist_hooks, "conductor-xdist")
        config.pluginmanager.register(RemoteBusPlugin(state, config), "conductor-remote")
    if state.settings.write_plan and not hasattr(config, "workerinput"):
        from pytest_conductor.track.writeback import WriteBackPlugin

        config.pluginmanager.register(WriteBackPlugin(state), "conductor-write-plan")
