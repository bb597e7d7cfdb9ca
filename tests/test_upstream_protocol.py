"""The orchestrators' protocol, against a live run: the orchestrator and the upstream
worker template are played by separate processes (``tests/upstream_roles.py``) that read
and write the track's files as those programs do, while ``pytest --conductor-track``
runs in a process of its own with scripted agents.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from pytest_conductor.util.timestamps import parse_iso
from tests.conftest import EXAMPLES, PlanWriter

pytestmark = pytest.mark.slow

ROLES = Path(__file__).resolve().parent / "upstream_roles.py"
AGENT = EXAMPLES / "agents" / "scripted_agent.py"
WORKER = f"{shlex.quote(sys.executable)} {shlex.quote(str(AGENT))} {{prompt_file}}"


def track_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / "conductor" / "tracks" / "t"


def bus_dir(pytester: pytest.Pytester) -> Path:
    return track_dir(pytester) / ".message-bus"


def start_run(pytester: pytest.Pytester, *args: str, workers: str = "0") -> subprocess.Popen[bytes]:
    """``pytest --conductor-track=t`` in a process of its own (in-process nodes by default)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--conductor-track=t",
            f"--conductor-worker={WORKER}",
            "--conductor-heartbeat=5s",
            "-n",
            workers,
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=pytester.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def role(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROLES), *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 90) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def messages(pytester: pytest.Pytester, kind: str) -> list[dict[str, Any]]:
    lines = (bus_dir(pytester) / "queue.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, filter(None, lines)) if m["type"] == kind]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_orchestrator_polling_mid_run_sees_a_dispatcher_at_work(
    pytester: pytest.Pytester, write_plan: PlanWriter, workers: str
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{exists: "a.txt"}]
              script: {sleep: 3, heartbeat_every: 0.3, write: {a.txt: "a"}}
        """
    )
    (track_dir(pytester) / "metadata.json").write_text(
        json.dumps(
            {
                "version": 3,
                "track_id": "t",
                "status": "in_progress",
                "loop_state": {"current_step": "PARALLEL_EXECUTE", "step_status": "NOT_STARTED"},
            }
        )
    )
    seen, stop = pytester.path / "seen.jsonl", pytester.path / "stop"
    poller = role("poll-metadata", track_dir(pytester), seen, stop)
    started = time.monotonic()
    code, output = finish(start_run(pytester, workers=workers))
    took = time.monotonic() - started
    stop.touch()
    finish(poller)
    assert code == 0, output
    states = [json.loads(line) for line in seen.read_text().splitlines()]
    steps = [tuple(s["state"][:2]) for s in states]
    # The dispatch-now state the orchestrator wrote, then ours while the run goes on
    # (monitor, do not dispatch again), then the next step once it has ended.
    assert steps[0] == ("PARALLEL_EXECUTE", "NOT_STARTED")
    assert ("PARALLEL_EXECUTE", "IN_PROGRESS") in steps
    assert steps[-1] == ("EVALUATE_EXECUTION", "NOT_STARTED")
    running = states[steps.index(("PARALLEL_EXECUTE", "IN_PROGRESS"))]
    assert running["agent"] == "pytest-conductor"
    assert running["version"] == 3
    data = json.loads((track_dir(pytester) / "metadata.json").read_text())
    # The orchestrator's own write under its lock, mid-run, survived our later merges.
    assert data["board_sessions"] == [{"session_id": "board-1", "verdict": "APPROVED"}]
    assert data["completed_tasks"] == ["1.1"]
    assert data["loop_state"]["parallel_state"]["total_workers_spawned"] == 1
    # The 2 s the orchestrator held its lock did not hold the run up by as much again.
    assert took < 30


def test_a_string_shaped_lock_is_respected(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{exists: "a.txt"}]
              script: {sleep: 1.0, heartbeat_every: 0.3, write: {a.txt: "a"}}
            - id: "1.2"
              depends_on: ["1.1"]
              acceptance: [{exists: "src/shared.py"}]
              script: {lock: [src/shared.py], heartbeat_every: 0.3, write: {src/shared.py: "x"}}
        """
    )
    out = pytester.path / "upstream.json"
    run = start_run(pytester)
    holder = role("hold-string-lock", bus_dir(pytester), "src/shared.py", "worker-up-1", 3.0, out)
    code, output = finish(run)
    assert finish(holder)[0] == 0, out.read_text()
    assert code == 0, output
    released = parse_iso(json.loads(out.read_text())["released_at"])
    assert json.loads(out.read_text())["held_by"] == "worker-up-1"  # nobody took it over
    [blocked] = [m for m in messages(pytester, "BLOCKED") if m["payload"]["task_id"] == "1.2"][:1]
    assert blocked["payload"]["waiting_for"] == "worker-up-1"
    [granted] = [
        m
        for m in messages(pytester, "FILE_LOCK")
        if m["payload"]["filepath"] == "src/shared.py" and m["source"] != "worker-up-1"
    ]
    assert parse_iso(granted["timestamp"]) >= released
    assert list(bus_dir(pytester).glob("*.corrupt-*")) == []  # read, never moved aside
    # The agents' own TASK_COMPLETE names the direct dependents, as the controller's does.
    completes = {m["payload"]["task_id"]: m for m in messages(pytester, "TASK_COMPLETE")}
    assert completes["1.1"]["source"].startswith("worker-1.1-")
    assert completes["1.1"]["payload"]["unblocks"] == ["1.2"]
    assert completes["1.2"]["payload"]["unblocks"] == []


def test_the_template_waiting_on_an_unlock_gets_its_event(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{exists: "src/shared.py"}]
              script:
                lock: [src/shared.py]
                sleep: 2.0
                heartbeat_every: 0.3
                write: {src/shared.py: "x"}
        """
    )
    out = pytester.path / "waiter.json"
    run = start_run(pytester)
    waiter = role("wait-unlock", bus_dir(pytester), "src/shared.py", "worker-up-2", out)
    code, output = finish(run)
    assert finish(waiter)[0] == 0, out.read_text()
    assert code == 0, output
    seen = json.loads(out.read_text())
    assert seen["holder"].startswith("worker-1.1-")
    [name] = seen["events"]
    assert name == "FILE_UNLOCK_src%2Fshared.py.event"
    assert unquote(name[len("FILE_UNLOCK_") : -len(".event")]) == "src/shared.py"
    assert seen["content"] == "src/shared.py"
    [unlock] = messages(pytester, "FILE_UNLOCK")
    assert parse_iso(seen["seen_at"]) >= parse_iso(unlock["timestamp"])
    assert seen["waited"] < 30  # got it, not its timeout


def test_an_orchestrators_own_files_survive_the_next_runs(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{exists: "a.txt"}]
        """
    )
    (pytester.path / "a.txt").write_text("a")
    events = bus_dir(pytester) / "events"
    events.mkdir(parents=True)
    (events / "PLAN_EVAL_COMPLETE_t.event").write_text("PASS")
    (bus_dir(pytester) / "board").mkdir()
    (bus_dir(pytester) / "board" / "votes.json").write_text('{"CA": {"final_verdict": "APPROVE"}}')
    for _ in range(2):
        code, output = finish(start_run(pytester))
        assert code == 0, output
    assert (events / "PLAN_EVAL_COMPLETE_t.event").read_text() == "PASS"
    assert json.loads((bus_dir(pytester) / "board" / "votes.json").read_text()) == {
        "CA": {"final_verdict": "APPROVE"}
    }
    [archive] = (bus_dir(pytester) / "runs").iterdir()
    assert sorted(p.name for p in (archive / "events").iterdir()) == [
        "PARALLEL_COMPLETE_t.event",
        "TASK_COMPLETE_1.1.event",
    ]


def test_google_conductor_metadata_is_read_back_in_its_own_vocabulary(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{exists: "a.txt"}]
              script: {sleep: 2, heartbeat_every: 0.3, write: {a.txt: "a"}}
        """
    )
    google = {
        "track_id": "t",
        "type": "feature",
        "status": "new",
        "created_at": "2026-11-27T09:00:00Z",
        "updated_at": "2026-11-27T09:00:00Z",
        "description": "Sign in with a password",
    }
    path = track_dir(pytester) / "metadata.json"
    path.write_text(json.dumps(google, indent=2))
    seen, stop = pytester.path / "seen.jsonl", pytester.path / "stop"
    poller = role("poll-metadata", track_dir(pytester), seen, stop)
    code, output = finish(start_run(pytester))
    stop.touch()
    finish(poller)
    assert code == 0, output
    statuses = [json.loads(line)["state"][2] for line in seen.read_text().splitlines()]
    assert statuses[0] == "new"
    assert "in_progress" in statuses
    assert statuses[-1] == "completed"
    data = json.loads(path.read_text())
    assert set(data) == set(google) | {"pytest_conductor"}
    assert data["status"] == "completed"
    assert data["description"] == google["description"]
    assert data["updated_at"] != google["updated_at"]
    assert len(data["updated_at"]) == len("2026-11-27T09:00:00Z")
    assert data["pytest_conductor"]["completed_tasks"] == ["1.1"]


def test_task_failed_carries_the_end_of_the_agents_log(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              script: {exit: 1}
            - id: "1.2"
              depends_on: ["1.1"]
        """
    )
    code, output = finish(start_run(pytester, "--conductor-retries=1"))
    assert code == 1, output
    [failed] = messages(pytester, "TASK_FAILED")
    assert failed["source"] == "controller"
    assert "done, exit status 1" in failed["payload"]["stack_trace"]
    assert failed["payload"]["error"].startswith("1.1: agent exited")
    data = json.loads((track_dir(pytester) / "metadata.json").read_text())
    assert data["version"] == 3
    assert data["completed_tasks"] == []
    state = data["loop_state"]["parallel_state"]
    # Agent processes started, the retry included; the node failed once.
    assert (state["total_workers_spawned"], state["failed_workers"]) == (2, 1)
    assert state["blocked_tasks"] == ["1.2"]
