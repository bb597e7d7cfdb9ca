"""The processes of a run keep the cyclic garbage collector off their long-lived objects:
frozen once the run is set up, and everything frozen at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import PlanWriter

# How many objects are frozen: while nodes run (each report), after the session
# (unconfigure), and at exit. The atexit handler is registered at conftest import, before
# the plugin's (registered at configure), so it runs after it (last in, first out): what
# it sees is what the interpreter's finalization will see.
FREEZE_PROBE = """
import atexit, gc, os
from pathlib import Path

seen = {}

def _who():
    return os.environ.get("PYTEST_XDIST_WORKER", "controller")

def pytest_runtest_logreport(report):
    seen.setdefault("running", gc.get_freeze_count())

def pytest_unconfigure(config):
    seen["after"] = gc.get_freeze_count()

def _probe():
    seen["exit"] = gc.get_freeze_count()
    text = " ".join(f"{k}={v}" for k, v in sorted(seen.items()))
    Path(os.environ["PROBE_DIR"], _who() + ".txt").write_text(text)

atexit.register(_probe)
"""


def _seen(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in text.split())}


def test_objects_are_frozen_after_the_atexit_handlers_registered_later() -> None:
    code = textwrap.dedent(
        """
        import atexit, gc
        from pytest_conductor.util.garbage import skip_final_collection

        atexit.register(lambda: print("at exit:", gc.get_freeze_count() > 0))
        skip_final_collection()
        skip_final_collection()  # once per process, however often asked
        print("before:", gc.get_freeze_count())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == ["before: 0", "at exit: True"]


def test_freezing_keeps_later_objects_collectable() -> None:
    code = textwrap.dedent(
        """
        import gc, weakref
        from pytest_conductor.util.garbage import freeze_long_lived

        class Cycle:
            pass

        freeze_long_lived()
        later = Cycle()
        later.me = later
        gone = weakref.ref(later)
        del later
        gc.collect()
        print("collected:", gone() is None)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == ["collected: True"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [("-n", "0"), ("-n", "2")], ids=["in-process", "xdist"])
def test_the_controller_and_its_workers_freeze_what_lives_long(
    pytester: pytest.Pytester,
    write_plan: PlanWriter,
    monkeypatch: pytest.MonkeyPatch,
    mode: tuple[str, ...],
) -> None:
    monkeypatch.setenv("PROBE_DIR", str(pytester.path))
    write_plan("dag:\n  nodes:\n    - {id: a}\n    - {id: b}\n")
    pytester.makeconftest(FREEZE_PROBE)
    result = pytester.runpytest_subprocess("--conductor-track=t", *mode, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    who = ["controller"] + (["gw0", "gw1"] if mode[1] == "2" else [])
    for name in who:
        seen = _seen((pytester.path / f"{name}.txt").read_text())
        assert seen["running"] > 0, name  # frozen before the first node ran
        assert seen["exit"] > seen["after"], name  # and all that came later, at exit


def test_a_run_without_a_track_leaves_the_collector_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_DIR", str(pytester.path))
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makepyfile("def test_one(): pass")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert _seen((pytester.path / "controller.txt").read_text()) == {
        "after": 0,
        "exit": 0,
        "running": 0,
    }
