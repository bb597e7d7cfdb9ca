"""Process groups: killing a command with everything it started, and the group registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_conductor.util.processes import (
    GroupRegistry,
    group_running,
    kill_group,
    kill_pgid,
    parent_death_signal,
    process_alive,
    process_start_time,
)

LINUX = sys.platform.startswith("linux")
# A shell that starts a grandchild in the background and waits: two processes in one group.
FAMILY = ["sh", "-c", "sleep 60 & echo $!; wait"]


Start = Callable[[list[str]], "subprocess.Popen[bytes]"]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a command in a session of its own; whatever is left is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def run(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        kill_group(proc)
        assert proc.stdout is not None
        proc.stdout.close()


def _grandchild(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def _gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_kill_group_kills_the_command_and_what_it_started(start: Start) -> None:
    proc = start(FAMILY)
    grandchild = _grandchild(proc)
    assert group_running(proc.pid)
    kill_group(proc, grace=2.0)
    assert proc.returncode is not None
    assert _gone(grandchild)
    assert not group_running(proc.pid)


def test_kill_group_after_the_leader_exited_still_kills_the_rest(start: Start) -> None:
    proc = start(["sh", "-c", "sleep 60 & echo $!"])  # the shell exits at once
    grandchild = _grandchild(proc)
    proc.wait()
    assert process_alive(grandchild)
    kill_group(proc, grace=2.0)
    assert _gone(grandchild)


def test_kill_pgid_escalates_to_sigkill_when_term_is_ignored(start: Start) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)"
    )
    proc = start([sys.executable, "-c", code])
    assert proc.stdout is not None
    proc.stdout.readline()  # the handler is in place
    start = time.monotonic()
    assert kill_pgid(proc.pid, grace=0.3)
    proc.wait(timeout=5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 3


def test_kill_pgid_refuses_our_own_group_and_init() -> None:
    assert not kill_pgid(os.getpgrp())
    assert not kill_pgid(1)


@pytest.mark.skipif(not LINUX, reason="start times come from /proc")
def test_a_reused_pid_is_not_the_process_recorded() -> None:
    me = process_start_time(os.getpid())
    assert me is not None
    assert process_alive(os.getpid(), me)
    assert not process_alive(os.getpid(), me + 1)


def test_registry_records_and_forgets(tmp_path: Path, start: Start) -> None:
    registry = GroupRegistry(tmp_path / "agents")
    assert registry.records() == []
    proc = start(["sleep", "60"])
    record = registry.add("worker-1.1-1", proc.pid, {"task_id": "1.1"})
    assert record.owner_pid == os.getpid()
    (found,) = registry.records()
    assert (found.name, found.pgid, found.info["task_id"]) == ("worker-1.1-1", proc.pid, "1.1")
    registry.remove("worker-1.1-1")
    assert registry.records() == []
    registry.remove("worker-1.1-1")  # twice is fine


def test_registry_skips_damaged_records(tmp_path: Path) -> None:
    registry = GroupRegistry(tmp_path)
    (tmp_path / "broken.json").write_text("{ not json")
    (tmp_path / "partial.json").write_text(json.dumps({"pgid": 5}))
    assert registry.records() == []
    assert registry.sweep("all") == []


def test_sweep_dead_owner_kills_only_groups_whose_starter_is_gone(
    tmp_path: Path, start: Start
) -> None:
    registry = GroupRegistry(tmp_path)
    ours = start(["sleep", "60"])
    orphan = start(FAMILY)
    grandchild = _grandchild(orphan)
    registry.add("ours", ours.pid)
    registry.add("orphan", orphan.pid)
    # Pretend a process that has exited started the orphan's group.
    gone = subprocess.Popen(["true"])
    gone.wait()
    data = json.loads((tmp_path / "orphan.json").read_text())
    data.update(owner_pid=gone.pid, owner_start=None)
    (tmp_path / "orphan.json").write_text(json.dumps(data))

    killed = registry.sweep("dead-owner", grace=2.0)
    assert [r.name for r in killed] == ["orphan"]
    assert _gone(grandchild)
    assert process_alive(ours.pid)
    assert [r.name for r in registry.records()] == ["ours"]

    assert [r.name for r in registry.sweep("mine", grace=2.0)] == ["ours"]
    ours.wait(timeout=5)
    assert registry.records() == []


@pytest.mark.skipif(not LINUX, reason="start times come from /proc")
def test_sweep_leaves_a_group_whose_id_was_reused(tmp_path: Path, start: Start) -> None:
    registry = GroupRegistry(tmp_path)
    proc = start(["sleep", "60"])
    registry.add("old", proc.pid)
    data = json.loads((tmp_path / "old.json").read_text())
    data["leader_start"] -= 1  # the recorded leader started earlier: not this process
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert registry.sweep("all") == []
    assert process_alive(proc.pid)
    assert registry.records() == []  # forgotten all the same


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux only")
def test_parent_death_signal_kills_the_child_when_its_parent_dies(tmp_path: Path) -> None:
    assert parent_death_signal() is not None
    parent = textwrap.dedent(
        """
        import subprocess, sys
        from pytest_conductor.util.processes import parent_death_signal
        child = subprocess.Popen(
            ["sleep", "60"], preexec_fn=parent_death_signal(), start_new_session=True
        )
        print(child.pid, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, check=True, timeout=30
    )
    assert _gone(int(out.stdout))
