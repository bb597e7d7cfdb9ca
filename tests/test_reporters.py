"""How a failed node reads in pytest's own reporters: the short summary, ``--tb=line``,
``-v`` progress lines and ``--junitxml`` (message, type, properties)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_conductor.report.events import error_text
from pytest_conductor.track.items import failure_repr

FAST = ("-p", "no:hypothesispytest", "-p", "no:randomly")

REASON = (
    r"1.2: contains: src/store.py /def save\(/: no match for /def save\(/ in src/store.py (5 lines)"
)

Example = Callable[[str], Path]


@pytest.fixture
def failing(pytester: pytest.Pytester, example: Example, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CI", raising=False)  # pytest prints whole reasons on CI
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    return example("failing")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--conductor-track=failing", *FAST, *args)


def junit_cases(path: Path) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in ET.parse(path).iter("testcase")}


def test_the_short_summary_gives_the_reason(pytester: pytest.Pytester, failing: Path) -> None:
    result = run(pytester, "-n", "0")
    line = next(x for x in result.outlines if x.startswith("FAILED "))
    assert line.startswith("FAILED conductor/tracks/failing/plan.md::1.2 - 1.2: contains:")
    # The failure's first line is that reason; the details follow it.
    result.stdout.fnmatch_lines(["*_ task 1.2: Add save() to the store _*", REASON, ""])


@pytest.mark.slow
@pytest.mark.parametrize("mode", [("-n", "0"), ("-n", "2")], ids=["in-process", "xdist"])
def test_on_ci_or_with_vv_the_short_summary_line_is_the_whole_reason_and_no_more(
    pytester: pytest.Pytester,
    failing: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: tuple[str, ...],
) -> None:
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_subprocess("--conductor-track=failing", *FAST, *mode)
    lines = result.outlines
    at = next(i for i, x in enumerate(lines) if x.startswith("FAILED "))
    assert lines[at] == f"FAILED conductor/tracks/failing/plan.md::1.2 - {REASON}"
    assert re.match(r"=+ 1 failed", lines[at + 1])


@pytest.mark.parametrize("mode", [("-n", "0"), ("-n", "2")], ids=["in-process", "xdist"])
def test_tb_line_prints_one_line_per_failure(
    pytester: pytest.Pytester, failing: Path, mode: tuple[str, ...]
) -> None:
    result = pytester.runpytest_subprocess("--conductor-track=failing", "--tb=line", *FAST, *mode)
    # xdist puts its "[gw0] linux -- Python ..." line before every failure it reports.
    lines = [x for x in result.outlines if not x.startswith("[gw")]
    at = next(i for i, x in enumerate(lines) if "= FAILURES =" in x)
    assert lines[at + 1] == f"conductor/tracks/failing/plan.md:15: {REASON}"
    assert lines[at + 2].startswith("---")  # the conductor section: nothing else was printed


def test_v_failed_lines_carry_the_task_name_as_passed_lines_do(
    pytester: pytest.Pytester, failing: Path
) -> None:
    result = run(pytester, "-n", "0", "-vv", "-rA")
    result.stdout.fnmatch_lines(
        [
            "*plan.md::1.1 PASSED (Create the store module)*",
            "*plan.md::1.2 FAILED (Add save() to the store)*",
        ]
    )
    # Not in the short summary: there the reason comes after the id, in full.
    result.stdout.fnmatch_lines(
        [
            "PASSED conductor/tracks/failing/plan.md::1.1",
            f"FAILED conductor/tracks/failing/plan.md::1.2 - {REASON}",
        ]
    )


@pytest.mark.parametrize("mode", [("-n", "0"), ("-n", "2")], ids=["in-process", "xdist"])
def test_junit_failure_has_the_reason_as_message_and_the_kind_as_type(
    pytester: pytest.Pytester, failing: Path, mode: tuple[str, ...]
) -> None:
    result = run(pytester, "--junitxml=r.xml", *mode)
    assert result.ret == 1
    case = junit_cases(pytester.path / "r.xml")["1.2 Add save() to the store"]
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == REASON
    assert failure.get("type") == "contains"
    text = failure.text or ""
    assert text.startswith(REASON + "\n\n")
    assert "  seen:     no match for /def save\\(/ in src/store.py (5 lines)" in text
    # Empty properties are left out: no phase, worker_id or blocked_by here.
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props == {
        "task_id": "1.2",
        "name": "Add save() to the store",
        "type": "code",
        "files": "src/store.py",
        "attempts": "1",
    }


def test_junit_failure_of_a_run_criterion_has_type_run(
    pytester: pytest.Pytester, write_plan: Callable[..., Path]
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.2"
              acceptance:
                - exists: conductor
                - run: "python -c 'raise SystemExit(3)'"
        """
    )
    pytester.runpytest("--conductor-track=t", "-n", "0", "--junitxml=r.xml", *FAST)
    failure = junit_cases(pytester.path / "r.xml")["1.2"].find("failure")
    assert failure is not None
    assert failure.get("type") == "run"
    assert failure.get("message") == "1.2: run: python -c 'raise SystemExit(3)': exit status 3"


def test_junit_properties_none_leaves_the_testcases_without_properties(
    pytester: pytest.Pytester, failing: Path
) -> None:
    run(pytester, "-n", "0", "--junitxml=r.xml", "--conductor-junit-properties=none")
    cases = junit_cases(pytester.path / "r.xml")
    assert len(cases) == 6
    assert all(case.find("properties") is None for case in cases.values())
    # The testcases are still named after their nodes.
    assert "1.4 Wire the store into the API" in cases


def test_junit_properties_is_checked(pytester: pytest.Pytester, failing: Path) -> None:
    result = run(pytester, "--conductor-junit-properties=suite")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --conductor-junit-properties='suite': expected testcase or none"]
    )


def test_task_failed_event_keeps_the_details(pytester: pytest.Pytester, failing: Path) -> None:
    run(pytester, "-n", "0")
    events = pytester.path / "conductor/tracks/failing/.message-bus/events"
    lines = (events / "TASK_FAILED_1.2.event").read_text().splitlines()
    assert lines[0] == REASON
    assert "  expected: src/store.py matches /def save\\(/" in lines


def test_failure_repr_survives_xdist_serialization() -> None:
    """The failure is built from pytest's report classes (there is no public constructor):
    fails loudly if a pytest release changes them."""
    longrepr = failure_repr("plan.md", 7, "1.2: why", "the details\nmore")
    report = pytest.TestReport(
        "plan.md::1.2", ("plan.md", 6, "1.2"), {}, "failed", longrepr, "call"
    )
    data = report._to_json()
    again = pytest.TestReport._from_json(data)
    for rep in (report, again):
        crash = getattr(rep.longrepr, "reprcrash", None)
        assert crash is not None
        assert (crash.path, crash.lineno, crash.message) == ("plan.md", 7, "1.2: why")
        assert rep.longreprtext == "1.2: why\n\nthe details\nmore"
        assert error_text(rep) == "1.2: why\n\nthe details\nmore"
