"""The processes of a run keep the cyclic garbage collector off their long-lived objects:
off during set-up, what set-up built frozen for the run, everything frozen at exit; and
the collector given back as it was when the run ends."""

from __future__ import annotations

import gc
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
who = ["controller"]  # not PYTEST_XDIST_WORKER: an outer xdist run sets it for us too

def pytest_configure(config):
    if hasattr(config, "workerinput"):
        who[0] = config.workerinput["workerid"]

def pytest_runtest_logreport(report):
    seen.setdefault("running", gc.get_freeze_count())
    seen.setdefault("enabled", int(gc.isenabled()))

def pytest_unconfigure(config):
    seen["after"] = gc.get_freeze_count()

def _probe():
    seen["exit"] = gc.get_freeze_count()
    text = " ".join(f"{k}={v}" for k, v in sorted(seen.items()))
    Path(os.environ["PROBE_DIR"], who[0] + ".txt").write_text(text)

atexit.register(_probe)
"""


def _seen(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in text.split())}


def _run(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.splitlines()


def test_objects_are_frozen_after_the_atexit_handlers_registered_later() -> None:
    lines = _run(
        """
        import atexit, gc
        from pytest_conductor.util.garbage import skip_final_collection

        atexit.register(lambda: print("at exit:", gc.get_freeze_count() > 0))
        skip_final_collection()
        skip_final_collection()  # once per process, however often asked
        print("before:", gc.get_freeze_count())
        """
    )
    assert lines == ["before: 0", "at exit: True"]


def test_the_hold_keeps_the_collector_off_set_up_then_off_what_it_built() -> None:
    lines = _run(
        """
        import gc, weakref
        from pytest_conductor.util.garbage import CollectorHold

        class Cycle:
            pass

        hold = CollectorHold()
        print("setting up:", gc.isenabled(), gc.get_freeze_count() == 0)
        hold.set_up()
        hold.set_up()  # once
        print("running:", gc.isenabled(), gc.get_freeze_count() > 0)
        later = Cycle()
        later.me = later
        gone = weakref.ref(later)
        del later
        gc.collect()
        print("made later, collected:", gone() is None)
        hold.release()
        hold.release()  # once
        print("released:", gc.isenabled(), gc.get_freeze_count())
        """
    )
    assert lines == [
        "setting up: False True",
        "running: True True",
        "made later, collected: True",
        "released: True 0",
    ]


def test_a_run_that_never_set_up_still_gives_the_collector_back() -> None:
    lines = _run(
        """
        import gc
        from pytest_conductor.util.garbage import CollectorHold

        hold = CollectorHold()
        hold.release()
        hold.set_up()  # too late: nothing frozen, nothing turned on twice
        print(gc.isenabled(), gc.get_freeze_count())
        """
    )
    assert lines == ["True 0"]


def test_what_the_program_froze_itself_stays_frozen() -> None:
    lines = _run(
        """
        import gc
        from pytest_conductor.util.garbage import CollectorHold

        theirs = [object() for _ in range(10)]
        gc.freeze()
        before = gc.get_freeze_count()
        hold = CollectorHold()
        hold.set_up()
        print("running:", gc.isenabled(), gc.get_freeze_count() == before)
        hold.release()
        print("released:", gc.isenabled(), gc.get_freeze_count() == before)
        """
    )
    assert lines == ["running: True True", "released: True True"]


def test_a_collector_the_program_turned_off_stays_off() -> None:
    lines = _run(
        """
        import gc
        from pytest_conductor.util.garbage import CollectorHold

        gc.disable()
        hold = CollectorHold()
        hold.set_up()
        print("running:", gc.isenabled())
        hold.release()
        print("released:", gc.isenabled())
        """
    )
    assert lines == ["running: False", "released: False"]


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
        assert seen["enabled"] == 1, name  # and the collector back on for the run
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
        "enabled": 1,
        "exit": 0,
        "running": 0,
    }


@pytest.mark.parametrize(
    "args", [("--conductor-track=t",), ("--conductor-track=nosuch",)], ids=["ran", "usage-error"]
)
def test_a_run_in_process_leaves_the_collector_as_it_was(
    pytester: pytest.Pytester, write_plan: PlanWriter, args: tuple[str, ...]
) -> None:
    write_plan("dag:\n  nodes:\n    - {id: a}\n")
    assert gc.isenabled()
    before = gc.get_freeze_count()
    pytester.runpytest(*args, "-n", "0", "-p", "no:randomly")
    assert gc.isenabled()
    assert gc.get_freeze_count() == before
