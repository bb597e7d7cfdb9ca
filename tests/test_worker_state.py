"""The controller's parsed plan handed to xdist workers: used only when it is what the
worker would read itself."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from pytest_conductor.settings import Settings
from pytest_conductor.track.loading import load_state, pack_state, unpack_state
from tests.conftest import PlanWriter

PLAN = """
dag:
  nodes:
    - {id: a, files: [src/a.py], acceptance: [{exists: marker.txt}]}
    - {id: b, depends_on: [a], acceptance: [{run: "true"}], estimated_duration: 2m}
"""


@pytest.fixture
def settings(pytester: pytest.Pytester, write_plan: PlanWriter) -> Settings:
    write_plan(PLAN)
    return Settings(
        track="t", root=pytester.path, max_workers=5, strict_prose=False, command_timeout=300.0
    )


def test_a_worker_gets_the_controller_plan_when_nothing_differs(settings: Settings) -> None:
    state = load_state(settings, [])
    state.plan.by_id  # cached views must not stop pickling  # noqa: B018
    packed = pack_state(state, [])
    assert packed is not None
    worker = unpack_state(settings, [], packed)
    assert worker is not None
    assert worker.plan.nodes == state.plan.nodes
    assert worker.plan.node("b").estimated_duration == 120
    assert worker.criteria == state.criteria
    assert worker.resources == state.resources
    assert worker.weights == state.weights
    assert worker.settings is settings


def test_a_changed_plan_settings_or_kinds_mean_reading_it_again(settings: Settings) -> None:
    packed = pack_state(load_state(settings, []), [])
    assert unpack_state(settings, ["custom"], packed) is None
    other_root = dataclasses.replace(settings, max_workers=3)
    assert unpack_state(other_root, [], packed) is None
    settings.plan_path.write_text(settings.plan_path.read_text() + "\n", encoding="utf-8")
    assert unpack_state(settings, [], packed) is None


@pytest.mark.parametrize("payload", [None, "text", b"not a pickle", pickle.dumps((1, 2))])
def test_anything_else_is_ignored(settings: Settings, payload: object) -> None:
    assert unpack_state(settings, [], payload) is None


def test_no_plan_file_packs_nothing(settings: Settings, tmp_path: Path) -> None:
    state = load_state(settings, [])
    gone = dataclasses.replace(settings, root=tmp_path)
    assert pack_state(dataclasses.replace(state, settings=gone), []) is None


EARLY_PROBE = """
import os
from pathlib import Path

from pytest_conductor import plugin


def pytest_configure(config):
    # Runs after pytest_load_initial_conftests, where the plan is read early or not.
    early = config.stash.get(plugin._EARLY_PLAN, None)
    who = getattr(config, "workerinput", {}).get("workerid", "controller")
    Path(f"early-{who}.txt").write_text("read" if early is not None else "not read")


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        Path("env-after.txt").write_text(os.environ.get(plugin.WORKERS_OF, "unset"))
"""


@pytest.mark.slow
def test_workers_the_controller_starts_do_not_read_the_plan_early(
    pytester: pytest.Pytester, settings: Settings
) -> None:
    """Only the controller reads plan.md before pytest parses the command line (to choose
    the worker count); its workers take its parsed plan instead, and the marker that tells
    them so is gone from the controller's environment once they started."""
    pytester.makeconftest(EARLY_PROBE)
    pytester.path.joinpath("marker.txt").write_text("x\n")
    result = pytester.runpytest_subprocess("--conductor-track=t", "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "early-controller.txt").read_text() == "read"
    for worker in ("gw0", "gw1"):
        assert (pytester.path / f"early-{worker}.txt").read_text() == "not read"
    assert (pytester.path / "env-after.txt").read_text() == "unset"
