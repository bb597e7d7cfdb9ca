"""pytest hooks of pytest-conductor; each wires the pure parts together and stays thin.

Everybody who installs the plugin pays for this module's imports on every pytest run, so
only what a run without ``--conductor-track`` needs is imported here; the rest is imported
once a track is asked for.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_conductor import hookspecs
from pytest_conductor.settings import add_options, resolve_settings
from pytest_conductor.state import STATE_KEY, get_state

if TYPE_CHECKING:
    from pytest_conductor.state import ConductorState

__all__ = [
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_cmdline_main",
    "pytest_configure",
]


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
        try:
            state = load_state(settings, extra_kinds)
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
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # Runs before xdist's own cmdline_main turns -n into --tx, so a bad plan fails fast and
    # the worker count can still be chosen from the plan.
    state = _load_state(config)
    if state is not None and config.pluginmanager.hasplugin("xdist"):
        from pytest_conductor.graph.algorithms import width
        from pytest_conductor.scheduling.xdist_hooks import choose_worker_count
        from pytest_conductor.warnings import ConductorWarning

        warning = choose_worker_count(config, state.settings.max_workers, width(state.plan.deps))
        if warning is not None:
            config.issue_config_time_warning(ConductorWarning(warning), stacklevel=2)
    return (yield)


@pytest.hookimpl(trylast=True)  # after the cacheprovider has set config.cache
def pytest_configure(config: pytest.Config) -> None:
    state = _load_state(config)
    if state is None:
        return
    from pytest_conductor.agents.plugin import AgentsPlugin
    from pytest_conductor.report.plugin import ReportPlugin
    from pytest_conductor.scheduling import xdist_hooks
    from pytest_conductor.track.loading import load_history
    from pytest_conductor.track.plugin import TrackPlugin

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
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_conductor.scheduling.remote import RemoteBusPlugin

        config.pluginmanager.register(xdist_hooks, "conductor-xdist")
        config.pluginmanager.register(RemoteBusPlugin(state, config), "conductor-remote")
    if state.settings.write_plan and not hasattr(config, "workerinput"):
        from pytest_conductor.track.writeback import WriteBackPlugin

        config.pluginmanager.register(WriteBackPlugin(state), "conductor-write-plan")
