"""pytest-cov, installed for real, in every worker mode (`pip install -e '.[integration]'`)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip(
    "pytest_cov", reason="pytest-cov is not installed: pip install -e '.[integration]'"
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODES = [(), ("-n", "0"), ("-n", "2")]


@pytest.fixture
def venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python` in a criterion is this interpreter, as in an activated virtualenv (or CI)."""
    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))


@pytest.mark.parametrize("mode", MODES, ids=["default", "n0", "n2"])
def test_cov_works_in_every_mode_and_measures_the_criteria_subprocesses(
    pytester: pytest.Pytester,
    example: Callable[[str], Path],
    venv_on_path: None,
    mode: tuple[str, ...],
) -> None:
    example("quickstart")  # carries a .coveragerc with `patch = subprocess`
    result = pytester.runpytest_subprocess(
        "--conductor-track=quickstart", "--cov=src", "--cov-report=term", *mode
    )
    out = result.stdout.str()
    assert "INTERNALERROR" not in out + result.stderr.str()
    assert result.ret == 0, out
    if not mode:
        result.stdout.fnmatch_lines(["*created: 3/3 workers*"])  # xdist was chosen for it
    result.stdout.fnmatch_lines(["*8 passed*", '{"verdict": "PASS"*'])
    # Every module is run only by criteria in subprocesses (a nested pytest, `python -m
    # greet.cli`): without subprocess measurement the total would be 0 %.
    assert _total(out) == "100"


def _total(out: str) -> str:
    match = re.search(r"^TOTAL\s+\d+\s+\d+\s+(\d+)%", out, re.MULTILINE)
    assert match is not None, out
    return match.group(1)


def test_cov_without_subprocess_measurement_still_gives_a_verdict(
    pytester: pytest.Pytester, example: Callable[[str], Path]
) -> None:
    example("quickstart")
    (pytester.path / ".coveragerc").unlink()
    result = pytester.runpytest_subprocess("--conductor-track=quickstart", "--cov=src")
    assert result.ret == 0
    result.stdout.fnmatch_lines(['{"verdict": "PASS"*'])
    assert _total(result.stdout.str()) == "0"  # what docs/running.md explains how to fix


def test_cov_and_the_track_in_addopts(
    pytester: pytest.Pytester, example: Callable[[str], Path], venv_on_path: None
) -> None:
    """As CI configurations carry them: xdist workers read addopts too."""
    example("quickstart")
    (pytester.path / "pytest.ini").write_text(
        "[pytest]\ntestpaths = tests\naddopts = --conductor-track=quickstart --cov=src\n"
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*created: 3/3 workers*", '{"verdict": "PASS"*'])
    assert _total(result.stdout.str()) == "100"
