"""Options and paths people type from habit, through the real command line: a mistyped
path, ``-W error`` with a capped ``-n``, ``--dist``, ini types, and ``conductor-bus``
run from inside the project."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FAST = ("-p", "no:hypothesispytest", "-p", "no:randomly")

Example = Callable[[str], Path]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [(), ("-n", "0"), ("-n", "2")], ids=["default", "n0", "n2"])
def test_a_mistyped_path_is_pytests_own_error_before_anything_runs(
    pytester: pytest.Pytester, example: Example, mode: tuple[str, ...]
) -> None:
    example("quickstart")
    result = pytester.runpytest_subprocess("--conductor-track=quickstart", "nosuchdir", *mode)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == "ERROR: file or directory not found: nosuchdir"
    assert '"verdict"' not in result.stdout.str()
    assert not (pytester.path / "conductor/tracks/quickstart/.message-bus").exists()


def test_paths_that_exist_with_selection_parts_are_fine(
    pytester: pytest.Pytester, example: Example
) -> None:
    example("quickstart")
    result = pytester.runpytest(
        "--conductor-track=quickstart",
        "-n",
        "0",
        "conductor/tracks/quickstart/plan.md::1.1",
        "tests/test_core.py::test_greet",
        *FAST,
    )
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("how", ["-W", "ini"])
def test_the_worker_cap_warning_under_warnings_as_errors_is_a_usage_error(
    pytester: pytest.Pytester, example: Example, how: str
) -> None:
    example("quickstart")
    args: tuple[str, ...] = ("-W", "error") if how == "-W" else ()
    if how == "ini":
        (pytester.path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    result = pytester.runpytest_subprocess("--conductor-track=quickstart", "-n", "8", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: -n 8 asks for more workers than conductor_max_workers allows: using 5*"]
    )
    assert "Traceback" not in result.stderr.str()


@pytest.mark.slow
def test_the_worker_cap_warning_points_at_the_option(
    pytester: pytest.Pytester, example: Example
) -> None:
    example("quickstart")
    result = pytester.runpytest_subprocess("--conductor-track=quickstart", "-n", "8", *FAST)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*= warnings summary =*",
            "-n 8:1",
            "  -n 8:1: ConductorWarning: -n 8 asks for more workers than*",
        ]
    )
    assert "plugin.py" not in result.stdout.str()


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["loadscope", "loadfile", "worksteal"])
def test_dist_is_told_once_that_the_dag_scheduler_replaces_it(
    pytester: pytest.Pytester, example: Example, dist: str
) -> None:
    example("quickstart")
    result = pytester.runpytest_subprocess(
        "--conductor-track=quickstart", "-n", "2", "--dist", dist, *FAST
    )
    assert result.ret == 0
    told = [line for line in result.outlines if f"--dist {dist}" in line]
    assert len(told) == 1
    assert told[0].startswith(f"conductor: --dist {dist} is replaced by the DAG scheduler")


def test_ini_settings_declare_their_types(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*conductor_max_workers (int):*",
            "*conductor_timeout (string):*",
            "*conductor_strict_prose (bool):*",
        ]
    )


def test_toml_values_of_their_own_type_are_read(
    pytester: pytest.Pytester, example: Example
) -> None:
    """pyproject.toml holds numbers and booleans as such; under filterwarnings = error a
    `string` ini setting given a number would be a deprecation error in pytest 9."""
    example("quickstart")
    (pytester.path / "pytest.ini").unlink()
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        testpaths = ["tests"]
        filterwarnings = ["error"]
        conductor_max_workers = 1
        conductor_strict_prose = true
        """
    )
    result = pytester.runpytest("--conductor-track=quickstart", *FAST)
    # 3.1's prose criterion fails under strict prose: the boolean was read.
    result.assert_outcomes(passed=7, failed=1)


def test_a_bad_bool_ini_value_names_the_key(pytester: pytest.Pytester, example: Example) -> None:
    example("quickstart")
    (pytester.path / "pytest.ini").write_text("[pytest]\nconductor_strict_prose = maybe\n")
    result = pytester.runpytest("--conductor-track=quickstart", *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini conductor_strict_prose: *'maybe'*"])


def _bus(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest_conductor.cli", *args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_conductor_bus_finds_the_root_from_inside_the_project(
    pytester: pytest.Pytester, example: Example
) -> None:
    example("quickstart")
    pytester.runpytest("--conductor-track=quickstart", "-n", "0", *FAST)
    deep = pytester.path / "src" / "greet"
    done = _bus(deep, "tail", "--track", "quickstart", "--lines", "1")
    assert done.returncode == 0, done.stderr
    assert '"PARALLEL_COMPLETE"' in done.stdout
    status = _bus(deep, "status", "--track", "quickstart")
    assert status.returncode == 0, status.stderr


def test_conductor_bus_outside_any_project_says_so(tmp_path: Path) -> None:
    done = _bus(tmp_path, "status", "--track", "quickstart")
    assert done.returncode == 2
    assert f"no conductor/ folder in {tmp_path} or above it" in done.stderr
