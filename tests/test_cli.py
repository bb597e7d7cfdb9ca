"""``conductor-bus`` run for real, as an agent runs it: a subprocess with CONDUCTOR_* set."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pytest_conductor.bus import MESSAGE_TYPES, MessageBus
from pytest_conductor.cli.main import build_parser, main
from pytest_conductor.util.timestamps import format_iso, utc_now

COMMANDS = [
    "init",
    "post",
    "heartbeat",
    "progress",
    "complete",
    "fail",
    "blocked",
    "lock",
    "unlock",
    "locks",
    "status",
    "tail",
    "watch",
]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    clean.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "pytest_conductor.cli", *args],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def bus(tmp_path: Path) -> MessageBus:
    b = MessageBus(tmp_path / "track" / ".message-bus")
    b.init()
    return b


@pytest.fixture
def agent(bus: MessageBus, tmp_path: Path) -> dict[str, str]:
    """The environment the dispatcher gives worker 1.1."""
    return {
        "CONDUCTOR_BUS": str(bus.path),
        "CONDUCTOR_TASK_ID": "1.1",
        "CONDUCTOR_WORKER_ID": "worker-1.1-1",
        "CONDUCTOR_TRACK": "auth_20261127",
        "CONDUCTOR_ROOT": str(tmp_path),
    }


def as_worker(agent: dict[str, str], n: int) -> dict[str, str]:
    return {**agent, "CONDUCTOR_TASK_ID": f"1.{n}", "CONDUCTOR_WORKER_ID": f"worker-1.{n}-1"}


def test_main_returns_a_status_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "conductor-bus" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_help_runs_as_a_real_command() -> None:
    done = run("lock", "--help")
    assert done.returncode == 0
    assert "exit 0 granted, 3 held by another worker" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: help text is argparse's alone, and thirteen interpreters cost seconds.
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out
    assert f"conductor-bus {command}" in out
    assert "CONDUCTOR_BUS" in out


def test_init_creates_the_bus(tmp_path: Path) -> None:
    target = tmp_path / "new" / ".message-bus"
    done = run("init", "--bus", str(target))
    assert done.returncode == 0
    assert done.stdout.strip() == str(target)
    assert (target / "queue.jsonl").exists()
    assert json.loads((target / "worker-status.json").read_text()) == {}


def test_the_bus_folder_can_come_from_root_and_track(tmp_path: Path) -> None:
    env = {"CONDUCTOR_ROOT": str(tmp_path), "CONDUCTOR_TRACK": "t1"}
    assert run("init", env=env).returncode == 0
    assert (tmp_path / "conductor" / "tracks" / "t1" / ".message-bus" / "queue.jsonl").exists()


@pytest.mark.parametrize(
    "case",
    [
        (["status"], [], "CONDUCTOR_BUS"),
        (["heartbeat"], ["CONDUCTOR_BUS"], "CONDUCTOR_WORKER_ID"),
        (["progress", "10"], ["CONDUCTOR_BUS", "CONDUCTOR_WORKER_ID"], "CONDUCTOR_TASK_ID"),
        (["complete"], ["CONDUCTOR_BUS"], "CONDUCTOR_TASK_ID"),
        (["lock", "a.py"], ["CONDUCTOR_BUS", "CONDUCTOR_TASK_ID"], "CONDUCTOR_WORKER_ID"),
    ],
)
def test_a_missing_variable_is_named(
    agent: dict[str, str],
    case: tuple[list[str], list[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, env_keys, needed = case
    for key in agent:
        monkeypatch.delenv(key, raising=False)
    for key in env_keys:
        monkeypatch.setenv(key, agent[key])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needed in err
    flag = {"CONDUCTOR_BUS": "--bus", "CONDUCTOR_WORKER_ID": "--worker"}.get(needed, "--task")
    assert flag in err


def test_a_missing_variable_is_a_message_not_a_traceback(agent: dict[str, str]) -> None:
    done = run("lock", "a.py", env={"CONDUCTOR_BUS": agent["CONDUCTOR_BUS"]})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("conductor-bus lock: error:")


def test_a_bus_folder_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    done = run("heartbeat", "--bus", str(tmp_path / "typo"), "--worker", "w1")
    assert done.returncode == 2
    assert "does not exist" in done.stderr
    assert not (tmp_path / "typo").exists()


def test_heartbeat_progress_and_status(
    bus: MessageBus, agent: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("heartbeat", "--progress", "20", env=agent).returncode == 0
    assert run("progress", "45", "--note", "writing tests", env=agent).returncode == 0
    entry = bus.worker_status()["worker-1.1-1"]
    assert (entry["task_id"], entry["progress_pct"], entry["note"]) == ("1.1", 45, "writing tests")
    (progress,) = [m for m in bus.messages() if m["type"] == "PROGRESS"]
    assert progress["payload"] == {
        "task_id": "1.1",
        "progress_pct": 45,
        "current_subtask": "writing tests",
    }
    assert progress["source"] == "worker-1.1-1"
    table = run("status", env=agent)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "WORKER",
        "TASK",
        "STATUS",
        "PROGRESS",
        "HEARTBEAT",
        "NOTE",
    ]
    assert "worker-1.1-1  1.1   RUNNING  45%" in table.stdout
    assert main(["status", "--json", "--bus", str(bus.path)]) == 0
    assert json.loads(capsys.readouterr().out) == bus.worker_status()


def test_flags_override_the_environment(bus: MessageBus, agent: dict[str, str]) -> None:
    assert run("--worker", "w-flag", "heartbeat", env=agent).returncode == 0
    assert run("heartbeat", "--worker", "w-after", "--task", "9.9", env=agent).returncode == 0
    status = bus.worker_status()
    assert sorted(status) == ["w-after", "w-flag"]
    assert status["w-after"]["task_id"] == "9.9"


def test_a_bad_progress_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["heartbeat", "--progress", "abc", "--bus", "x", "--worker", "w"]) == 2
    assert "progress must be a number, not 'abc'" in capsys.readouterr().err


def test_post(bus: MessageBus, agent: dict[str, str]) -> None:
    done = run("post", "CUSTOM_NOTE", "--payload", '{"text": "hi"}', env=agent)
    assert done.returncode == 0
    (message,) = bus.messages()
    assert done.stdout.strip() == message["id"]
    assert (message["type"], message["payload"]) == ("CUSTOM_NOTE", {"text": "hi"})


@pytest.mark.parametrize(
    ("payload", "said"), [("{bad", "not valid JSON"), ("[1, 2]", "must be a JSON object")]
)
def test_post_with_a_bad_payload_is_a_usage_error(
    bus: MessageBus, payload: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["post", "X", "--payload", payload, "--bus", str(bus.path)]) == 2
    assert said in capsys.readouterr().err
    assert bus.messages() == []


def test_post_of_a_mistyped_known_payload_warns_on_stderr(
    bus: MessageBus, agent: dict[str, str]
) -> None:
    payload = '{"task_id": "1.1", "progress_pct": "abc", "current_subtask": ""}'
    done = run("post", "PROGRESS", "--payload", payload, env=agent)
    assert done.returncode == 0
    assert "warning: PROGRESS message" in done.stderr
    assert "progress_pct should be a number" in done.stderr


def test_complete_and_fail(bus: MessageBus, agent: dict[str, str]) -> None:
    run("heartbeat", env=agent)
    done = run("complete", "--commit", "abc123", "--files", "src/a.py", "src/b.py", env=agent)
    assert done.returncode == 0
    assert bus.read_event("TASK_COMPLETE", "1.1") == "abc123"
    (message,) = [m for m in bus.messages() if m["type"] == "TASK_COMPLETE"]
    assert message["payload"]["files_modified"] == ["src/a.py", "src/b.py"]
    assert bus.worker_status()["worker-1.1-1"]["status"] == "COMPLETED"
    other = as_worker(agent, 2)
    assert run("fail", "--error", "3 tests fail", env=other).returncode == 0
    assert bus.read_event("TASK_FAILED", "1.2") == "3 tests fail"
    assert run("blocked", "--by", "1.2", "--reason", "no schema", env=agent).returncode == 0
    assert bus.read_event("TASK_BLOCKED", "1.1") == "no schema"


def test_complete_names_the_plans_direct_dependents_and_fail_a_stack_trace(
    bus: MessageBus, agent: dict[str, str], tmp_path: Path
) -> None:
    plan = tmp_path / "conductor" / "tracks" / "auth_20261127" / "plan.md"
    plan.parent.mkdir(parents=True)
    plan.write_text(
        "```yaml\ndag:\n  nodes:\n"
        '    - {id: "1.1"}\n'
        '    - {id: "1.2", depends_on: ["1.1"]}\n'
        '    - {id: "1.3", depends_on: ["1.2"]}\n'
        '    - {id: "1.4", depends_on: ["1.1"]}\n'
        "```\n"
    )
    assert run("complete", env=agent).returncode == 0
    assert run("complete", "--unblocks", env=as_worker(agent, 2)).returncode == 0
    payloads = [m["payload"] for m in bus.messages() if m["type"] == "TASK_COMPLETE"]
    assert payloads[0]["unblocks"] == ["1.2", "1.4"]  # direct dependents, plan order
    assert payloads[0]["commit_sha"] == ""  # text, as when the controller posts it
    assert payloads[1]["unblocks"] == []  # said so explicitly
    given = {**as_worker(agent, 4), "CONDUCTOR_UNBLOCKS": "2.1 2.2"}  # the dispatcher's
    assert run("complete", env=given).returncode == 0
    last = [m["payload"] for m in bus.messages() if m["type"] == "TASK_COMPLETE"][-1]
    assert last["unblocks"] == ["2.1", "2.2"]
    done = run(
        "fail", "--error", "boom", "--stack-trace", "line 1\nline 2", env=as_worker(agent, 3)
    )
    assert done.returncode == 0
    [failed] = [m["payload"] for m in bus.messages() if m["type"] == "TASK_FAILED"]
    assert failed["stack_trace"] == "line 1\nline 2"


def test_locks_shows_a_template_shaped_lock(bus: MessageBus, agent: dict[str, str]) -> None:
    bus.locks_path.write_text(json.dumps({"src/shared.py": "worker-up-1"}))
    done = run("locks", env=agent)
    assert done.returncode == 0
    assert "while its worker runs" in done.stdout
    assert run("lock", "src/shared.py", env=agent).returncode == 3


def test_an_unsafe_task_id_is_refused(bus: MessageBus, agent: dict[str, str]) -> None:
    done = run("complete", env={**agent, "CONDUCTOR_TASK_ID": "../../etc"})
    assert done.returncode == 2
    assert "not usable on the bus" in done.stderr
    assert bus.events() == []


def test_lock_contention_and_unlock(bus: MessageBus, agent: dict[str, str]) -> None:
    first = run("lock", "src/a.py", env=agent)
    assert first.returncode == 0
    assert "locked src/a.py" in first.stdout
    second = run("lock", "./src/a.py", env=as_worker(agent, 2))
    assert second.returncode == 3
    assert "held by worker-1.1-1 (task 1.1)" in second.stdout
    refused = run("unlock", "src/a.py", env=as_worker(agent, 2))
    assert refused.returncode == 1
    assert "held by worker-1.1-1" in refused.stderr
    assert run("unlock", "src/a.py", env=agent).returncode == 0
    assert bus.locks() == []
    assert run("unlock", "src/a.py", env=agent).returncode == 1
    assert run("lock", "src/a.py", env=as_worker(agent, 2)).returncode == 0


def test_lock_paths_are_project_relative(
    bus: MessageBus,
    agent: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inside = run("lock", str(tmp_path / "src" / "x.py"), env=agent)
    assert inside.returncode == 0
    assert [i.path for i in bus.locks()] == ["src/x.py"]
    for key, value in agent.items():
        monkeypatch.setenv(key, value)
    assert main(["lock", "/etc/passwd"]) == 2
    assert "outside the project root" in capsys.readouterr().err
    assert main(["lock", "../x.py"]) == 2
    assert "leaves the project root" in capsys.readouterr().err
    monkeypatch.delenv("CONDUCTOR_ROOT")
    assert main(["lock", str(tmp_path / "src" / "y.py")]) == 2
    assert "set CONDUCTOR_ROOT" in capsys.readouterr().err
    assert [i.path for i in bus.locks()] == ["src/x.py"]


def test_locks_lists_active_and_expired(bus: MessageBus, agent: dict[str, str]) -> None:
    past = format_iso(utc_now() - timedelta(hours=1))
    bus.acquire_lock("new.py", "worker-1.1-1", "1.1")
    # Written after the acquire, which would have released the expired lock on its way.
    locks = json.loads(bus.locks_path.read_text())
    locks["old.py"] = {"worker_id": "w0", "task_id": "0.1", "acquired_at": past, "expires_at": past}
    bus.locks_path.write_text(json.dumps(locks))
    done = run("locks", env=agent)
    assert done.returncode == 0
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:]}
    assert rows["old.py"][3] == "EXPIRED"
    assert rows["new.py"][3] == "active"
    active = run("locks", "--active", "--json", env=agent)
    assert [i["path"] for i in json.loads(active.stdout)] == ["new.py"]


def test_damaged_worker_status_is_reported_not_fatal(
    bus: MessageBus, agent: dict[str, str]
) -> None:
    bus.worker_status_path.write_text("{oops")
    done = run("heartbeat", env=agent)
    assert done.returncode == 0
    assert "warning: worker-status.json was damaged" in done.stderr
    assert list(bus.path.glob("worker-status.json.corrupt-*"))
    assert "worker-1.1-1" in bus.worker_status()


def test_tail_prints_the_last_lines(bus: MessageBus, agent: dict[str, str]) -> None:
    for n in range(5):
        bus.post("PING", {"n": n})
    done = run("tail", "-n", "2", env=agent)
    assert done.returncode == 0
    assert [json.loads(line)["payload"]["n"] for line in done.stdout.splitlines()] == [3, 4]


def test_tail_follow_prints_new_lines_and_stops_on_ctrl_c(
    bus: MessageBus, agent: dict[str, str]
) -> None:
    bus.post("PING", {"n": 0})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}, **agent}
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest_conductor.cli", "tail", "-f", "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert json.loads(child.stdout.readline())["payload"] == {"n": 0}
        bus.post("PING", {"n": 1})
        assert json.loads(child.stdout.readline())["payload"] == {"n": 1}
        # A new run moves the queue aside; tail goes on with the new one.
        bus.rotate()
        bus.post("PING", {"n": 2})
        assert json.loads(child.stdout.readline())["payload"] == {"n": 2}
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert "Traceback" not in err


def test_watch_once_prints_one_frame(bus: MessageBus, agent: dict[str, str]) -> None:
    bus.register_worker("worker-1.1-1", "1.1")
    bus.set_progress("worker-1.1-1", 40, "writing")
    status = json.loads(bus.worker_status_path.read_text())
    old = format_iso(utc_now() - timedelta(minutes=20))
    status["worker-1.2-1"] = {
        "worker_id": "worker-1.2-1",
        "task_id": "1.2",
        "status": "RUNNING",
        "started_at": old,
        "last_heartbeat": old,
        "progress_pct": 10,
    }
    bus.worker_status_path.write_text(json.dumps(status))
    bus.acquire_lock("src/a.py", "worker-1.1-1", "1.1")
    bus.acquire_lock("src/a.py", "worker-1.2-1", "1.2")
    bus.complete("0.9", "abc")
    started = time.monotonic()
    done = run("watch", "--once", "--stale-after", "600", env=agent)
    assert time.monotonic() - started < 10
    assert done.returncode == 0
    out = done.stdout
    assert "Workers (2)" in out
    lines = out.splitlines()
    (fresh,) = [line for line in lines if line.strip().startswith("worker-1.1-1  1.1")]
    (stale,) = [line for line in lines if line.strip().startswith("worker-1.2-1  1.2")]
    assert "40%" in fresh and "STALE" not in fresh
    assert "20m00s ago" in stale or "20m01s ago" in stale
    assert stale.rstrip().endswith("STALE")
    assert "Active locks (1)" in out
    assert "src/a.py  worker-1.1-1" in out
    assert "Last messages (3 of 3)" in out
    assert "TASK_COMPLETE" in out and "BLOCKED" in out
    assert "DEADLOCK" not in out


def test_watch_stops_on_ctrl_c(bus: MessageBus, agent: dict[str, str]) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}, **agent}
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest_conductor.cli", "watch", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        while "Last messages" not in child.stdout.readline():
            pass
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert "Traceback" not in err


DOCS = Path(__file__).resolve().parent.parent / "docs" / "bus.md"


def test_every_command_line_in_the_bus_docs_parses() -> None:
    parser = build_parser()
    lines = [
        line.strip().split("#")[0]
        for line in DOCS.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("conductor-bus ") and "watch  /" not in line
    ]
    assert len(lines) >= 12
    for line in lines:
        args = shlex.split(line.replace("$(git rev-parse HEAD)", "abc"))[1:]
        parsed = parser.parse_args(args)
        assert parsed.command in COMMANDS, line


def test_every_message_type_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for kind in MESSAGE_TYPES:
        assert f"| `{kind}` |" in text, kind
        assert f'"type": "{kind}"' in text, kind
