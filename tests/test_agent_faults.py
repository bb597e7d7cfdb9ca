"""Agents that go wrong: each fault fails its node with the reason, blocks its dependents,
lets independent nodes pass, and leaves no process behind.

The agents are ``examples/agents/scripted_agent.py``; each records its pid (and its
child's, with ``spawn_child``) under ``SCRIPTED_AGENT_RECORD``, so that after the run we
can check that none of them is alive (a zombie counts as dead: in containers PID 1 often
never reaps the orphans it inherits).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, PlanWriter

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="process checks read /proc"
)

AGENT = EXAMPLES / "agents" / "scripted_agent.py"
WORKER = (
    f"--conductor-worker={shlex.quote(sys.executable)} {shlex.quote(str(AGENT))} {{prompt_file}}"
)


@pytest.fixture
def record(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder where the scripted agents record what they did (inherited env)."""
    folder = pytester.path / "record"
    folder.mkdir()
    monkeypatch.setenv("SCRIPTED_AGENT_RECORD", str(folder))
    return folder


def events(record: Path) -> list[dict[str, object]]:
    found = []
    for path in sorted(record.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            entry["worker"] = path.stem
            found.append(entry)
    return found


def pids(record: Path) -> list[int]:
    return [int(str(e["pid"])) for e in events(record) if e["event"] in ("start", "child")]


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def assert_no_survivors(record: Path, at_least: int) -> None:
    found = pids(record)
    assert len(found) >= at_least, f"expected at least {at_least} recorded pids: {found}"
    deadline = time.monotonic() + 3
    while any(alive(pid) for pid in found) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in found if alive(pid)]
    for pid in survivors:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes left behind: {survivors}"


def fault_plan(script: str, extra: str = "") -> str:
    """A faulty node ``bad``, its dependent ``after`` and an independent node ``solo``."""
    return f"""
    dag:
      nodes:
        - id: "bad"
          name: "Faulty agent"
          {extra}
          acceptance:
            - exists: "bad.txt"
          script: {script}
        - id: "after"
          name: "Needs bad"
          depends_on: ["bad"]
          script: {{sleep: 0}}
        - id: "solo"
          name: "Independent"
          timeout: "60s"  # its own limit: a short --conductor-timeout is for "bad" only
          acceptance:
            - exists: "solo.txt"
          script: {{sleep: 0.2, heartbeat_every: 0.1, write: {{solo.txt: "ok"}}}}
    """


def run_fault(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--conductor-track=t", WORKER, "-n", "0", "-ra", *args)


def assert_fault(result: pytest.RunResult, reason: str) -> None:
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines([f"*{reason}*"])
    result.stdout.fnmatch_lines(["SKIPPED*blocked: dependency bad failed*"])
    result.stdout.fnmatch_lines(["FAILED*::bad*"])


def test_agent_killed_by_a_signal(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan("{spawn_child: true, kill_self: SIGKILL, write: {bad.txt: x}}"))
    result = run_fault(pytester)
    assert_fault(result, "agent killed by signal SIGKILL (attempt 1 of 1, worker worker-bad-*")
    # The tail of the agent's log is in the report.
    result.stdout.fnmatch_lines(["*agent output (last 30 lines):*", "*started child *"])
    assert_no_survivors(record, at_least=3)


def test_agent_that_hangs_is_killed_at_its_timeout(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan("{spawn_child: true, hang: true, heartbeat_every: 0.2}"))
    start = time.monotonic()
    result = run_fault(pytester, "--conductor-timeout=1s")
    assert_fault(result, "agent timed out after 1s")
    assert time.monotonic() - start < 20
    assert_no_survivors(record, at_least=3)


def test_agent_that_never_heartbeats_is_stale(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan("{spawn_child: true, no_heartbeat: true, sleep: 30}"))
    result = run_fault(pytester, "--conductor-heartbeat=0.5s")
    assert_fault(result, "agent stale: no heartbeat for 1s")
    assert_no_survivors(record, at_least=3)


def test_agent_that_exits_0_but_reports_failure(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan('{write: {bad.txt: x}, post_failed: "the schema is missing"}'))
    result = run_fault(pytester)
    assert_fault(result, "agent reported TASK_FAILED: the schema is missing (attempt 1 of 1*")
    bus = pytester.path / "conductor/tracks/t/.message-bus"
    assert (bus / "events/TASK_FAILED_bad.event").read_text() == "the schema is missing"
    assert_no_survivors(record, at_least=2)


def test_agent_that_exits_non_zero_has_its_locks_released(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan("{lock: [src/a.py], keep_locks: true, spawn_child: true, exit: 3}"))
    result = run_fault(pytester)
    assert_fault(result, "agent exited with status 3 (attempt 1 of 1*")
    result.stdout.fnmatch_lines(["*locks released: src/a.py*"])
    bus = pytester.path / "conductor/tracks/t/.message-bus"
    assert json.loads((bus / "locks.json").read_text()) == {}
    unlocks = [
        json.loads(line)
        for line in (bus / "queue.jsonl").read_text().splitlines()
        if '"FILE_UNLOCK"' in line
    ]
    assert [m["payload"]["filepath"] for m in unlocks] == ["src/a.py"]
    assert unlocks[0]["payload"]["released_by"] == "controller"
    status = json.loads((bus / "worker-status.json").read_text())
    assert {e["task_id"]: e["status"] for e in status.values()} == {
        "bad": "FAILED",
        "solo": "COMPLETED",
    }
    assert_no_survivors(record, at_least=3)


def test_agent_that_corrupts_worker_status_is_survived(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    # The damage is repaired (and kept aside); the agent's later heartbeats count again.
    write_plan(
        fault_plan("{corrupt_status: true, sleep: 1.5, heartbeat_every: 0.2, write: {bad.txt: x}}")
    )
    result = run_fault(pytester, "--conductor-heartbeat=1s", "-rP")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*bus: worker-status.json was damaged*"])
    bus = pytester.path / "conductor/tracks/t/.message-bus"
    assert list(bus.glob("worker-status.json.corrupt-*"))
    status = json.loads((bus / "worker-status.json").read_text())
    assert {e["task_id"]: e["status"] for e in status.values()} == {
        "bad": "COMPLETED",
        "after": "COMPLETED",
        "solo": "COMPLETED",
    }
    assert_no_survivors(record, at_least=3)


def _wait_for(record: Path, kind: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while sum(e["event"] == kind for e in events(record)) < count:
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, f"fewer than {count} agents recorded {kind}"
        time.sleep(0.1)


def _interrupt(
    pytester: pytest.Pytester, record: Path, agents: int, *args: str, sig: int = signal.SIGINT
) -> str:
    """Run pytest in a subprocess, press Ctrl-C (send ``sig``) once ``agents`` agents run."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--conductor-track=t", WORKER, *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(record, "child", agents, proc)
        proc.send_signal(sig)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    return output


def test_ctrl_c_in_process_kills_the_running_agent(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan("{spawn_child: true, hang: true, heartbeat_every: 0.5}"))
    output = _interrupt(pytester, record, 1, "-n", "0")
    assert "KeyboardInterrupt" in output
    assert_no_survivors(record, at_least=2)


def test_sigterm_in_process_ends_the_run_like_ctrl_c(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(fault_plan("{spawn_child: true, hang: true, heartbeat_every: 0.5}"))
    output = _interrupt(pytester, record, 1, "-n", "0", sig=signal.SIGTERM)
    assert "terminated by SIGTERM" in output
    assert_no_survivors(record, at_least=2)


def _hanging_nodes(count: int) -> str:
    nodes = "\n".join(
        f"""
        - id: "h{i}"
          name: "Hangs {i}"
          script: {{spawn_child: true, hang: true, heartbeat_every: 1}}"""
        for i in range(1, count + 1)
    )
    return f"dag:\n  nodes:{nodes}"


@pytest.mark.slow
def test_ctrl_c_while_five_agents_run_kills_them_all(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    write_plan(_hanging_nodes(5))
    _interrupt(pytester, record, 5, "-n", "5", "-p", "no:cacheprovider")
    assert_no_survivors(record, at_least=10)


@pytest.mark.slow
def test_a_killed_xdist_worker_leaves_no_agent_behind(
    pytester: pytest.Pytester, write_plan: PlanWriter, record: Path
) -> None:
    # The agent kills the xdist worker that runs it: its own process dies with the worker
    # (PR_SET_PDEATHSIG), and the controller kills the rest of its group.
    write_plan(fault_plan("{spawn_child: true, kill_parent: true, heartbeat_every: 0.2}"))
    result = pytester.runpytest_subprocess(
        "--conductor-track=t", WORKER, "-n", "2", "-ra", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*crashed*bad*"])
    assert_no_survivors(record, at_least=3)


@pytest.mark.slow
def test_five_agents_at_once_respect_dependencies(pytester: pytest.Pytester, record: Path) -> None:
    root = pytester.path
    shutil.copytree(EXAMPLES / "dispatch", root, dirs_exist_ok=True)
    for leftover in (root / "work", root / "conductor/tracks/dispatch/.message-bus"):
        shutil.rmtree(leftover, ignore_errors=True)
    result = pytester.runpytest_subprocess(
        "--conductor-track=dispatch", WORKER, "-n", "5", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=8)
    spans = agent_spans(record)
    assert sorted(spans) == ["1.1", "2.1", "2.2", "2.3", "2.4", "2.5", "3.1", "3.2"]
    wide = [spans[f"2.{i}"] for i in range(1, 6)]
    assert max(start for start, _ in wide) < min(end for _, end in wide), "5 never overlapped"
    deps = {"2.1": ["1.1"], "2.2": ["1.1"], "2.3": ["1.1"], "2.4": ["1.1"], "2.5": ["1.1"]}
    deps.update({"3.1": [f"2.{i}" for i in range(1, 6)], "3.2": ["3.1"]})
    for task, needs in deps.items():
        for dep in needs:
            assert spans[task][0] > spans[dep][1], f"{task} started before {dep} ended"


def agent_spans(record: Path) -> dict[str, tuple[float, float]]:
    """task id -> (start, end) epoch times of its agent."""
    spans = {}
    for path in record.glob("*.jsonl"):
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        start = next(e for e in entries if e["event"] == "start")
        end = next(e for e in entries if e["event"] == "end")
        spans[str(start["task"])] = (float(start["time"]), float(end["time"]))
    return spans
