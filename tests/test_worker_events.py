"""xdist workers post the events of the nodes they ran (report/plugin.py), before the
node's report leaves them: so the event is on the bus before any dependent starts, once,
and a write that fails there fails the run as the controller's own writes do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PlanWriter

pytestmark = pytest.mark.slow

PLAN = """
dag:
  nodes:
    - {id: a, acceptance: [{exists: marker.txt}]}
    - {id: b, acceptance: [{exists: marker.txt}]}
    - {id: c, depends_on: [a], acceptance: [{run: "python saw.py a"}]}
    - {id: d, depends_on: [b], acceptance: [{run: "python saw.py b"}]}
"""

# A dependent's check: its dependency's event must already be there when it runs.
SAW = """
import pathlib, sys
events = pathlib.Path("conductor/tracks/t/.message-bus/events")
sys.exit(0 if (events / f"TASK_COMPLETE_{sys.argv[1]}.event").is_file() else 1)
"""

# On the controller: which reports arrived saying their worker posted the event.
POSTED_PROBE = """
from pathlib import Path

# Not PYTEST_XDIST_WORKER: this run may itself be started from an xdist worker.
on_worker = []


def pytest_configure(config):
    on_worker.append(hasattr(config, "workerinput"))


def pytest_runtest_logreport(report):
    posted = getattr(report, "conductor_posted", None)
    if posted and not on_worker[0]:
        with Path("posted.txt").open("a") as f:
            f.write(f"{report.nodeid.rpartition('::')[2]} {posted}\\n")
"""

# On the workers only: the event file cannot be written (the queue line can).
BROKEN_EVENTS = """
from pytest_conductor.bus import MessageBus


def write_event(self, type, task_id, content=""):
    raise OSError(28, "No space left on device")


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        MessageBus.write_event = write_event
"""


def bus(pytester: pytest.Pytester) -> Path:
    return pytester.path / "conductor" / "tracks" / "t" / ".message-bus"


def node_messages(pytester: pytest.Pytester) -> list[tuple[str, str]]:
    lines = (bus(pytester) / "queue.jsonl").read_text().splitlines()
    found: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
    return sorted((m["type"], m["payload"]["task_id"]) for m in found if "task_id" in m["payload"])


@pytest.fixture
def project(pytester: pytest.Pytester, write_plan: PlanWriter) -> pytest.Pytester:
    write_plan(PLAN)
    pytester.path.joinpath("marker.txt").write_text("x\n")
    pytester.path.joinpath("saw.py").write_text(SAW)
    return pytester


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--conductor-track=t", "-n", "2", "-p", "no:randomly", timeout=60
    )


def test_workers_post_their_nodes_events_before_dependents_start(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(POSTED_PROBE)
    result = run(project)
    result.assert_outcomes(passed=4)
    posted = sorted((project.path / "posted.txt").read_text().splitlines())
    assert posted == [f"{t} TASK_COMPLETE" for t in "abcd"]
    # Posted once each: the controller did not post them again.
    assert node_messages(project) == [("TASK_COMPLETE", t) for t in "abcd"]
    assert sorted(p.name for p in (bus(project) / "events").glob("TASK_*.event")) == [
        f"TASK_COMPLETE_{t}.event" for t in "abcd"
    ]


def test_an_event_a_worker_cannot_write_fails_the_run(project: pytest.Pytester) -> None:
    project.makeconftest(BROKEN_EVENTS)
    result = run(project)
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    verdict = json.loads((bus(project) / "verdict.json").read_text())
    assert verdict["verdict"] == "FAIL"
    assert re.search(
        r"not written: TASK_COMPLETE_[ab]\.event not written: \[Errno 28\] No space left",
        verdict["summary"],
    )
    result.stdout.fnmatch_lines(["conductor warning: TASK_COMPLETE_?.event not written: *"])
    # The message went out before the event failed; the controller does not repeat it.
    assert node_messages(project).count(("TASK_COMPLETE", "a")) == 1
