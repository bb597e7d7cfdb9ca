"""Dispatch mode: the command template, the agent's environment and prompt, its outcome,
retries, the live status line and the agent registry."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pytest_conductor.agents.dispatch import (
    TemplateError,
    agent_registry,
    new_worker_id,
    parse_template,
    render_argv,
    running_line,
    set_aside_events,
)
from pytest_conductor.util.processes import GroupRecord, kill_group, process_alive
from tests.conftest import PlanWriter

PY = shlex.quote(sys.executable)
BUS = "conductor/tracks/t/.message-bus"

# An agent that writes what it was given (argv, CONDUCTOR_* environment, cwd) to a file.
PROBE = """
import json, os, pathlib, sys
task = os.environ["CONDUCTOR_TASK_ID"]
env = {k: v for k, v in os.environ.items() if k.startswith("CONDUCTOR_")}
data = {"argv": sys.argv[1:], "env": env, "cwd": os.getcwd()}
pathlib.Path(f"probe-{task}.json").write_text(json.dumps(data))
"""
PROBE_WORKER = f"{PY} probe.py {{prompt_file}} {{task_id}} {{track}} {{worker_id}} {{bus}} {{root}}"


def _worker(command: str) -> str:
    return f"--conductor-worker={command}"


def _script(pytester: pytest.Pytester, name: str, text: str) -> None:
    pytester.path.joinpath(name).write_text(textwrap.dedent(text), encoding="utf-8")


def _messages(pytester: pytest.Pytester, kind: str) -> list[dict[str, object]]:
    lines = (pytester.path / BUS / "queue.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, filter(None, lines)) if m["type"] == kind]


def _properties(xml: Path) -> dict[str, dict[str, str]]:
    found = {}
    for case in ET.parse(xml).iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        found[props["task_id"]] = props
    return found


# --------------------------------------------------------------------------- templates


def test_a_template_is_split_like_a_shell_would() -> None:
    argv = parse_template("claude -p '@{prompt_file}' --append \"two words\" {task_id}")
    assert argv == ("claude", "-p", "@{prompt_file}", "--append", "two words", "{task_id}")


def test_placeholders_are_substituted_within_each_argument() -> None:
    argv = parse_template("agent --id={task_id} {prompt_file} '{\"json\": true}' {{literal}}")
    values = {"task_id": "1.1", "prompt_file": "/a b/p.md"}
    assert render_argv(argv, values) == [
        "agent",
        "--id=1.1",
        "/a b/p.md",  # a value with a space stays one argument: no shell runs
        '{"json": true}',  # braces that are no placeholder are left alone
        "{literal}",
    ]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "agent {prompt}",
            "unknown placeholder {prompt} in 'agent {prompt}'; known: {prompt_file}",
        ),
        ("agent 'unclosed", "cannot split"),
        ("   ", "the command template is empty"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_template(template)


def test_an_unknown_placeholder_is_a_usage_error_before_anything_runs(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan('dag: {nodes: [{id: "a", name: "A"}]}')
    result = pytester.runpytest("--conductor-track=t", _worker("agent {promt_file}"), "-n", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*worker command template: unknown placeholder {promt_file}*"])
    assert not (pytester.path / BUS / "prompts").exists()


def test_a_node_template_with_an_unknown_placeholder_names_the_node(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan('dag: {nodes: [{id: "a", name: "A", worker: "agent {task}"}]}')
    result = pytester.runpytest("--conductor-track=t", "-n", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*node a: worker: unknown placeholder {task}*"])


def test_worker_ids_carry_the_task_and_epoch_milliseconds() -> None:
    assert new_worker_id("1.1", now=1795780800.1234) == "worker-1.1-1795780800123"
    assert re.fullmatch(r"worker-2\.3-\d{13}", new_worker_id("2.3"))


# --------------------------------------------------------------------------- one agent


def test_the_agent_gets_its_arguments_environment_prompt_and_registration(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    _script(pytester, "probe.py", PROBE)
    write_plan(
        """
        dag:
          nodes:
            - id: "a"
              name: "Write the store"
              files: ["src/store.py"]
              acceptance: [{exists: "probe-a.json"}]
          parallel_groups:
            - {id: "pg-1", tasks: ["a"]}
        """
    )
    result = pytester.runpytest(
        "--conductor-track=t", _worker(PROBE_WORKER), "-n", "0", "--junitxml=out.xml"
    )
    result.assert_outcomes(passed=1)
    root = pytester.path.resolve()
    bus = root / BUS
    seen = json.loads((pytester.path / "probe-a.json").read_text())
    prompt, task, track, worker, bus_arg, root_arg = seen["argv"]
    assert re.fullmatch(r"worker-a-\d{13}", worker)
    assert (task, track, bus_arg, root_arg) == ("a", "t", str(bus), str(root))
    assert prompt == str(bus / "prompts" / "a-1.md")
    assert seen["env"] == {
        "CONDUCTOR_TRACK": "t",
        "CONDUCTOR_TASK_ID": "a",
        "CONDUCTOR_WORKER_ID": worker,
        "CONDUCTOR_BUS": str(bus),
        "CONDUCTOR_PROMPT_FILE": prompt,
        "CONDUCTOR_ROOT": str(root),
        "CONDUCTOR_UNBLOCKS": "",  # no node depends on a
    }
    assert seen["cwd"] == str(root)
    text = Path(prompt).read_text()
    assert text.startswith("# Task a: Write the store")
    assert worker in text
    assert "these paths exist: `probe-a.json`" in text
    (dispatched,) = _messages(pytester, "WORKER_DISPATCHED")
    assert dispatched["payload"] == {"worker_id": worker, "task_id": "a", "parallel_group": "pg-1"}
    status = json.loads((bus / "worker-status.json").read_text())
    assert status[worker]["status"] == "COMPLETED"
    assert (bus / "logs" / "a-1.log").read_text().startswith(f"$ {sys.executable} probe.py ")
    assert agent_registry(bus).records() == []
    props = _properties(pytester.path / "out.xml")["a"]
    assert (props["worker_id"], props["attempts"]) == (worker, "1")


def test_a_node_template_wins_over_the_option(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    _script(pytester, "probe.py", PROBE)
    write_plan(
        f"""
        dag:
          nodes:
            - {{id: "own", name: "Own worker", worker: "{PY} probe.py"}}
            - {{id: "default", name: "Option's worker"}}
        """
    )
    result = pytester.runpytest("--conductor-track=t", _worker("false"), "-n", "0")
    result.assert_outcomes(passed=1, failed=1)
    assert (pytester.path / "probe-own.json").exists()
    result.stdout.fnmatch_lines(
        ["*agent exited with status 1 (attempt 1 of 1, worker worker-default-*"]
    )


def test_a_node_timeout_wins_over_the_option(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan('dag: {nodes: [{id: "slow", name: "Slow", timeout: "0.5s"}]}')
    sleeper = f"{PY} -c 'import time; time.sleep(30)'"
    result = pytester.runpytest(
        "--conductor-track=t", _worker(sleeper), "--conductor-timeout=30m", "-n", "0"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*agent timed out after 0.5s*"])


def test_prose_needs_the_agents_own_task_complete(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        f"""
        dag:
          nodes:
            - {{id: "quiet", name: "Says nothing", acceptance: "It reads well", worker: "true"}}
            - id: "done"
              name: "Reports done"
              acceptance: "It reads well"
              worker: "{PY} -m pytest_conductor.cli complete"
        """
    )
    result = pytester.runpytest("--conductor-track=t", "-n", "0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*acceptance criterion failed: prose: 'It reads well'",
            "*seen:     no TASK_COMPLETE for task quiet",
            "*the agent ended well (attempt 1 of 1, worker worker-quiet-*",
        ]
    )


def test_a_failed_criterion_after_the_agent_shows_the_log_tail(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan('dag: {nodes: [{id: "a", name: "A", acceptance: [{exists: "missing.txt"}]}]}')
    chatty = f"{PY} -c 'for i in range(1, 51): print(\"line\", i)'"
    result = pytester.runpytest("--conductor-track=t", _worker(chatty), "-n", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "a: exists: missing.txt: missing: missing.txt",
            "",
            "acceptance criterion failed: exists: missing.txt",
            "*agent output (last 30 lines):",
            "    line 21",
        ]
    )
    assert "    line 20" not in result.stdout.lines
    result.stdout.fnmatch_lines(["    line 50"])


def test_an_agent_that_cannot_start(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan('dag: {nodes: [{id: "a", name: "A"}, {id: "b", name: "B", depends_on: a}]}')
    result = pytester.runpytest(
        "--conductor-track=t", _worker("no-such-agent-4711 {prompt_file}"), "-n", "0", "-ra"
    )
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*agent could not start: command not found: no-such-agent-4711*"])


# --------------------------------------------------------------------------- retries

RETRY = """
import os, pathlib, subprocess, sys
prompt = pathlib.Path(sys.argv[1]).read_text()
bus = [sys.executable, "-m", "pytest_conductor.cli"]
if "## Attempt 1 failed" not in prompt:
    print("first try: the schema is not there yet")
    subprocess.run([*bus, "fail", "--error", "no schema"], check=True)
    sys.exit(0)
assert "Reason: agent reported TASK_FAILED: no schema" in prompt, prompt
assert "first try: the schema is not there yet" in prompt, prompt
pathlib.Path("done.txt").write_text("ok")
subprocess.run([*bus, "complete", "--files", "done.txt"], check=True)
"""


def test_a_retry_gets_the_previous_failure_in_its_prompt_and_can_pass(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    _script(pytester, "retry.py", RETRY)
    write_plan('dag: {nodes: [{id: "a", name: "A", acceptance: [{exists: "done.txt"}]}]}')
    result = pytester.runpytest(
        "--conductor-track=t",
        _worker(f"{PY} retry.py {{prompt_file}}"),
        "--conductor-retries=2",
        "-n",
        "0",
        "-rP",
        "--junitxml=out.xml",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*Captured conductor call*",
            "attempt 2 of 3 passed (worker worker-a-*",
            "attempt 1: agent reported TASK_FAILED: no schema (worker worker-a-*",
        ]
    )
    bus = pytester.path / BUS
    assert sorted(p.name for p in (bus / "prompts").iterdir()) == ["a-1.md", "a-2.md"]
    # The first attempt's verdict is kept beside its log, not left among the events.
    assert (bus / "logs" / "a-1.TASK_FAILED.event").read_text() == "no schema"
    assert not (bus / "events" / "TASK_FAILED_a.event").exists()
    assert (bus / "events" / "TASK_COMPLETE_a.event").exists()
    assert _properties(pytester.path / "out.xml")["a"]["attempts"] == "2"
    assert len(_messages(pytester, "WORKER_DISPATCHED")) == 2


def test_when_every_attempt_fails_the_report_lists_them(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan('dag: {nodes: [{id: "a", name: "A"}]}')
    failing = f"{PY} -c 'import sys; sys.exit(2)'"
    result = pytester.runpytest(
        "--conductor-track=t", _worker(failing), "--conductor-retries=1", "-n", "0"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "agent exited with status 2 (attempt 2 of 2, worker worker-a-*",
            "attempts:",
            "  attempt 1: agent exited with status 2 (worker worker-a-*",
            "  attempt 2: agent exited with status 2 (worker worker-a-*",
        ]
    )


def test_set_aside_events_keeps_them_beside_the_log(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    (events / "TASK_COMPLETE_1.1.event").write_text("abc")
    (events / "TASK_FAILED_1.1.event").write_text("boom")
    (events / "TASK_FAILED_1.2.event").write_text("other")
    moved = set_aside_events(tmp_path, "1.1", 1, ["TASK_COMPLETE"])
    assert [p.name for p in moved] == ["1.1-1.TASK_COMPLETE.event"]
    assert moved[0].read_text() == "abc"
    assert sorted(p.name for p in events.iterdir()) == [
        "TASK_FAILED_1.1.event",
        "TASK_FAILED_1.2.event",
    ]
    assert [p.name for p in set_aside_events(tmp_path, "1.1", 2)] == ["1.1-2.TASK_FAILED.event"]


# --------------------------------------------------------------------------- live status


def test_running_line_names_each_agent_its_age_and_heartbeat() -> None:
    now = datetime(2026, 11, 27, 12, 0, 10, tzinfo=timezone.utc).timestamp()
    records = [
        GroupRecord(
            "worker-b-1", 11, None, 1, None, now - 125, {"task_id": "b", "worker_id": "wb"}
        ),
        GroupRecord(
            "worker-a-1", 10, None, 1, None, now - 3700, {"task_id": "a", "worker_id": "wa"}
        ),
    ]
    status = {
        "wa": {"last_heartbeat": "2026-11-27T12:00:00.000000Z"},
        "wb": {"last_heartbeat": "not a time"},
    }
    assert running_line(records, status, now) == (
        "conductor: 2 agents running: a 1h01m (heartbeat 10s ago), b 2m05s (no heartbeat)"
    )
    assert (
        running_line(records[:1], {}, now) == "conductor: 1 agent running: b 2m05s (no heartbeat)"
    )
    assert running_line([], status, now) is None


def test_in_process_the_running_agent_is_shown_while_it_runs(
    pytester: pytest.Pytester, write_plan: PlanWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_CONDUCTOR_STATUS_INTERVAL", "0.2")
    write_plan('dag: {nodes: [{id: "long", name: "Takes a while"}]}')
    sleeper = f"{PY} -c 'import time; time.sleep(0.8)'"
    result = pytester.runpytest("--conductor-track=t", _worker(sleeper), "-n", "0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["conductor: 1 agent running: long *s (heartbeat *s ago)"])
    quiet = pytester.runpytest("--conductor-track=t", _worker(sleeper), "-n", "0", "-q")
    assert "agent running" not in quiet.stdout.str()


@pytest.mark.slow
def test_under_xdist_the_controller_shows_the_running_agents(
    pytester: pytest.Pytester, write_plan: PlanWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_CONDUCTOR_STATUS_INTERVAL", "0.5")
    write_plan('dag: {nodes: [{id: "x", name: "X"}, {id: "y", name: "Y"}]}')
    sleeper = f"{PY} -c 'import time; time.sleep(2.5)'"
    result = pytester.runpytest_subprocess(
        "--conductor-track=t", _worker(sleeper), "-n", "2", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["conductor: 2 agents running: * (heartbeat *s ago)*"])
    # Each status line stands alone: nothing of pytest's progress is glued to it.
    for line in result.stdout.lines:
        assert "conductor:" not in line or line.startswith("conductor:")


# --------------------------------------------------------------------------- registry


def test_a_new_run_kills_agents_an_earlier_run_left_behind(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan('dag: {nodes: [{id: "a", name: "A"}]}')
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        bus = pytester.path / BUS
        agent_registry(bus).add("worker-a-1", leftover.pid, {"task_id": "a"})
        record = bus / "agents" / "worker-a-1.json"
        data = json.loads(record.read_text())
        gone = subprocess.Popen(["true"])  # the earlier run's pytest, long gone
        gone.wait()
        data.update(owner_pid=gone.pid, owner_start=None)
        record.write_text(json.dumps(data))
        result = pytester.runpytest("--conductor-track=t", "-n", "0")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            ["conductor: killed 1 agent process group(s) an earlier run left running: worker-a-1"]
        )
        leftover.wait(timeout=5)
        assert not process_alive(leftover.pid)
        assert not record.exists()
    finally:
        kill_group(leftover)
