"""End-to-end: real ``pytest -n N`` runs of small tracks, ordering checked from timestamps.

Each node's acceptance criterion runs ``stamp.py``, which writes the node's start and end
times to ``t/<id>.start`` / ``t/<id>.end`` (and can fail, or kill the xdist worker that
runs it). The assertions read those files, so they check what really ran when.
"""

from __future__ import annotations

import shlex
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pytest

from pytest_conductor.scheduling.scheduler import QUEUE_DEPTH
from tests.conftest import PlanWriter

pytestmark = pytest.mark.slow

STAMP = """
import os, sys, time
from pathlib import Path
from typing import Protocol

task, seconds = sys.argv[1], float(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "pass"
out = Path("t")
out.mkdir(exist_ok=True)
(out / f"{task}.start").write_text(repr(time.time()))
if mode == "crash":
    os.kill(os.getppid(), 9)  # the parent is the xdist worker checking this criterion
time.sleep(seconds)
(out / f"{task}.end").write_text(repr(time.time()))
sys.exit(1 if mode == "fail" else 0)
"""


def node(
    task: str,
    *,
    deps: Sequence[str] = (),
    seconds: float = 0.3,
    mode: str = "pass",
    files: Sequence[str] = (),
    estimate: str | None = None,
) -> str:
    command = shlex.join([sys.executable, "stamp.py", task, str(seconds), mode])
    lines = [
        f'- id: "{task}"',
        f'  name: "node {task}"',
        f"  files: [{', '.join(repr(f) for f in files)}]",
        f"  depends_on: [{', '.join(repr(d) for d in deps)}]",
        "  acceptance:",
        f"    - run: {command!r}",
    ]
    if estimate:
        lines.append(f'  estimated_duration: "{estimate}"')
    return "\n".join(lines)


class MakeTrack(Protocol):
    def __call__(self, *nodes: str) -> None: ...


@pytest.fixture
def track(pytester: pytest.Pytester, write_plan: PlanWriter) -> MakeTrack:
    """Write stamp.py and a plan made of :func:`node` entries."""

    def make(*nodes: str) -> None:
        pytester.makepyfile(stamp=STAMP)
        body = textwrap.indent("\n".join(nodes), "    ")
        write_plan(f"dag:\n  nodes:\n{body}\n")

    return make


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--conductor-track=t", f"--conductor-root={pytester.path}", "-rs", *args, timeout=60
    )


def stamps(pytester: pytest.Pytester, task: str) -> tuple[float, float]:
    folder = pytester.path / "t"
    return float((folder / f"{task}.start").read_text()), float(
        (folder / f"{task}.end").read_text()
    )


def started(pytester: pytest.Pytester, task: str) -> bool:
    return (pytester.path / "t" / f"{task}.start").exists()


def junit_cases(path: Path) -> dict[str, ET.Element]:
    """Testcases by task id (the name reads "<id> <node name>" for CI viewers)."""
    root = ET.parse(path).getroot()
    return {
        prop.attrib["value"]: case
        for case in root.iter("testcase")
        for prop in case.iter("property")
        if prop.attrib["name"] == "task_id"
    }


@pytest.mark.parametrize("workers", [2, 3, 4, 5])
def test_dependencies_finish_before_dependents_start(
    pytester: pytest.Pytester, track: MakeTrack, workers: int
) -> None:
    track(
        node("a"),
        node("b", deps=["a"]),
        node("c", deps=["a"]),
        node("d", deps=["b", "c"]),
        node("e"),  # as long as a, so that b and c find two free workers even at -n 2
    )
    result = run(pytester, "-n", str(workers))
    result.assert_outcomes(passed=5)
    a, b, c, d, e = (stamps(pytester, t) for t in "abcde")
    assert a[1] <= b[0] and a[1] <= c[0]
    assert max(b[1], c[1]) <= d[0]
    # Node-level readiness: b and c run side by side, and e alongside a.
    assert b[0] < c[1] and c[0] < b[1]
    assert e[0] < a[1]


def test_nodes_sharing_a_file_never_overlap(pytester: pytest.Pytester, track: MakeTrack) -> None:
    track(
        node("a", files=["store.ts"]),
        node("b", files=["store.ts"]),
        node("c", files=["other.ts"]),
    )
    run(pytester, "-n", "3").assert_outcomes(passed=3)
    a, b, c = (stamps(pytester, t) for t in "abc")
    assert a[1] <= b[0] or b[1] <= a[0], (a, b)
    assert c[0] < max(a[1], b[1])  # the free node did not wait


def test_a_failure_blocks_dependents_and_independent_nodes_run(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    track(
        node("a", mode="fail"),
        node("b", deps=["a"]),
        node("c", deps=["b"]),
        node("x"),
    )
    xml = pytester.path / "report.xml"
    result = run(pytester, "-n", "2", f"--junitxml={xml}")
    result.assert_outcomes(passed=1, failed=1, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "*SKIPPED*blocked: dependency a failed",
            "*SKIPPED*blocked: dependency a failed (via b)",
        ]
    )
    assert not started(pytester, "b") and not started(pytester, "c")
    assert started(pytester, "x")
    cases = junit_cases(xml)
    assert cases["a"].find("failure") is not None
    skipped = cases["b"].find("skipped")
    assert skipped is not None
    assert skipped.attrib["message"] == "blocked: dependency a failed"
    assert cases["c"].find("skipped") is not None
    assert cases["x"].find("failure") is None and cases["x"].find("skipped") is None


def test_a_crashed_worker_fails_its_node_and_blocks_dependents(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    track(
        node("a", mode="crash", estimate="5m"),
        node("b", deps=["a"]),
        node("x"),
        node("y", deps=["x"]),
    )
    xml = pytester.path / "report.xml"
    result = run(pytester, "-n", "2", f"--junitxml={xml}")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*blocked: dependency a failed*"])
    assert not started(pytester, "b")
    cases = junit_cases(xml)
    failure = cases["a"].find("failure")
    assert failure is not None, ET.tostring(cases["a"])
    assert "crashed" in failure.attrib["message"]
    assert cases["a"].find("error") is None


def test_exitfirst_reports_the_nodes_it_never_dispatched(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    track(
        node("a", mode="fail", seconds=0.1, estimate="5m"),
        node("b", seconds=1.0, estimate="5m"),
        node("c", estimate="1m"),
        node("d", estimate="1m"),
    )
    xml = pytester.path / "report.xml"
    result = run(pytester, "-n", "2", "-x", f"--junitxml={xml}")
    reason = "not run: stopped after the first failure (-x/--maxfail=1)"
    result.stdout.fnmatch_lines_random([f"*SKIPPED*{reason}*"])
    assert not started(pytester, "c") and not started(pytester, "d")
    cases = junit_cases(xml)
    for task in "cd":
        skipped = cases[task].find("skipped")
        assert skipped is not None and skipped.attrib["message"] == reason


QUEUED_PROBE = """
from pytest_conductor.scheduling.xdist_hooks import SCHEDULER_KEY

def pytest_sessionfinish(session):
    scheduler = session.config.stash.get(SCHEDULER_KEY, None)
    if scheduler is not None:
        with open("queued.txt", "w") as out:
            out.write(f"{scheduler.queued} {scheduler.messages}")
"""


def queued_and_messages(pytester: pytest.Pytester) -> tuple[int, int]:
    """How many nodes the run queued, and how many messages carried nodes to workers."""
    queued, messages = (pytester.path / "queued.txt").read_text().split()
    return int(queued), int(messages)


def test_short_chained_nodes_are_queued_and_all_run_in_order(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    # 10 chains of 4 quick file checks on 2 workers: more ready than free workers.
    pytester.makeconftest(QUEUED_PROBE)
    (pytester.path / "marker.txt").write_text("x")
    lines = []
    for chain in range(10):
        for step in range(4):
            deps = f"[c{chain}s{step - 1}]" if step else "[]"
            lines.append(
                f"    - {{id: c{chain}s{step}, depends_on: {deps}, "
                "acceptance: [{exists: marker.txt}]}"
            )
    write_plan("dag:\n  nodes:\n" + "\n".join(lines) + "\n")
    result = run(pytester, "-n", "2", "-v")
    result.assert_outcomes(passed=40)
    queued, messages = queued_and_messages(pytester)
    assert queued > 0
    # At least the first message to each worker carries its first node and a full queue
    # (10 chain heads ready, none critical); most later ones top a queue up.
    assert messages <= 40 - 2 * QUEUE_DEPTH
    order = [line.split("::")[1].split()[0] for line in result.outlines if " PASSED" in line]
    for chain in range(10):
        steps = [order.index(f"c{chain}s{step}") for step in range(4)]
        assert steps == sorted(steps), (chain, order)


def test_exitfirst_reports_queued_nodes_as_not_run(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    # The estimates say short, so nodes wait in the workers' queues; a fails first.
    track(
        node("a", mode="fail", seconds=0.05, estimate="10ms"),
        node("b", seconds=1.5, estimate="10ms"),
        *(node(t, seconds=0.05, estimate="10ms") for t in "cdefgh"),
    )
    pytester.makeconftest(QUEUED_PROBE)
    xml = pytester.path / "report.xml"
    result = run(pytester, "-n", "2", "-x", f"--junitxml={xml}")
    assert queued_and_messages(pytester)[0] > 0
    reason = "not run: stopped after the first failure (-x/--maxfail=1)"
    cases = junit_cases(xml)
    assert set(cases) == set("abcdefgh")
    assert cases["a"].find("failure") is not None
    assert cases["b"].find("failure") is None and cases["b"].find("skipped") is None
    for task in "cdefgh":
        assert not started(pytester, task), task
        skipped = cases[task].find("skipped")
        assert skipped is not None and skipped.attrib["message"] == reason, task
    result.assert_outcomes(passed=1, failed=1, skipped=6)


def test_the_dag_scheduler_is_used_whatever_dist_says(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    # --dist=each would run every node on every worker; under a track ours decides.
    track(node("a", seconds=0.1), node("b", deps=["a"], seconds=0.1))
    result = run(pytester, "-n", "2", "--dist=each", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["scheduling tests via DagScheduling"])


def test_the_longest_remaining_path_goes_first(pytester: pytest.Pytester, track: MakeTrack) -> None:
    track(
        node("a", estimate="10m"),
        node("b", deps=["a"], estimate="10m"),
        node("x", estimate="1m"),
        node("y", estimate="2m"),
        node("z", estimate="3m"),
    )
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=5)
    starts = sorted(("abxyz"), key=lambda t: stamps(pytester, t)[0])
    # Two workers: the heads of the two heaviest remaining paths start first (a: 20m, z:
    # 3m); among the light ones, y (2m) starts before x (1m).
    assert set(starts[:2]) == {"a", "z"}
    assert starts.index("y") < starts.index("x")


def test_without_n_the_plugin_starts_as_many_workers_as_the_dag_is_wide(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    track(node("a"), node("b"), node("c"), node("d", deps=["a", "b", "c"]))
    result = run(pytester)
    result.stdout.fnmatch_lines(["3 workers [[]4 items[]]"])
    result.assert_outcomes(passed=4)


def test_a_chain_runs_in_process_without_n(pytester: pytest.Pytester, track: MakeTrack) -> None:
    track(node("a"), node("b", deps=["a"]))
    result = run(pytester)
    result.stdout.no_fnmatch_line("*workers*")
    result.assert_outcomes(passed=2)


def test_n_above_the_cap_is_capped_with_a_warning(
    pytester: pytest.Pytester, track: MakeTrack
) -> None:
    track(*(node(f"n{i}", seconds=0.1) for i in range(7)))
    result = run(pytester, "-n", "7")
    result.stdout.fnmatch_lines(
        [
            "5 workers [[]7 items[]]",
            "*-n 7 asks for more workers than conductor_max_workers allows: using 5*",
        ]
    )
    result.assert_outcomes(passed=7)


def test_selection_and_last_failed_under_xdist(pytester: pytest.Pytester, track: MakeTrack) -> None:
    track(node("a", seconds=0.1), node("b", deps=["a"], seconds=0.1), node("c", seconds=0.1))
    # No history yet: a deselected dependency blocks its dependent.
    result = run(pytester, "-n", "2", "-k", "b")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*blocked: dependency a not selected (no recorded outcome)*"])
    # After a run in which it passed, the deselected dependency counts as satisfied.
    run(pytester, "-n", "2").assert_outcomes(passed=3)
    run(pytester, "-n", "2", "-k", "b").assert_outcomes(passed=1)
    # --lf reruns only what failed, and what it blocked.
    (pytester.path / "stamp.py").write_text(
        STAMP.replace("sys.exit(1 if mode", 'sys.exit(1 if task == "a" or mode')
    )
    run(pytester, "-n", "2").assert_outcomes(passed=1, failed=1, skipped=1)
    (pytester.path / "stamp.py").write_text(STAMP)
    result = run(pytester, "-n", "2", "--lf", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*plan.md::c*")
