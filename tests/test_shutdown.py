"""Every process of a run exits without the interpreter's last collection of all it holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import PlanWriter

# Registered before the plugin's handler, so run after it (atexit: last in, first out):
# what it sees is what the interpreter's finalization will see.
FREEZE_PROBE = """
import atexit, gc, os
from pathlib import Path

def _probe():
    who = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    Path(os.environ["PROBE_DIR"], who + ".txt").write_text(str(gc.get_freeze_count()))

atexit.register(_probe)
"""


def test_objects_are_frozen_after_the_atexit_handlers_registered_later() -> None:
    code = textwrap.dedent(
        """
        import atexit, gc
        from pytest_conductor.util.shutdown import skip_final_collection

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


@pytest.mark.slow
@pytest.mark.parametrize("mode", [("-n", "0"), ("-n", "2")], ids=["in-process", "xdist"])
def test_the_controller_and_its_workers_skip_the_final_collection(
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
        assert int((pytester.path / f"{name}.txt").read_text()) > 0, name


def test_a_run_without_a_track_leaves_the_exit_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_DIR", str(pytester.path))
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makepyfile("def test_one(): pass")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "controller.txt").read_text() == "0"
