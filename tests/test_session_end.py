"""Session end through the real command line: events, metadata.json, the verdict line and
verdict.json, the terminal summary, JUnit properties and names, the graph file."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_conductor.plan.reader import Node
from pytest_conductor.report.events import error_text
from pytest_conductor.report.junit import JUNIT_PROPERTY_KEYS, junit_properties
from tests.conftest import PlanWriter

CHAIN = """
dag:
  nodes:
    - id: "1.1"
      name: "Create data store"
      type: "code"
      phase: 1
      files: ["a.txt"]
      acceptance: [{exists: "a.txt"}]
    - id: "1.2"
      name: "Use the store"
      files: ["b.txt", "c.txt"]
      depends_on: ["1.1"]
      acceptance: [{exists: "b.txt"}]
    - id: "1.3"
      name: "Independent"
      acceptance: [{exists: "a.txt"}]
    - id: "1.4"
      name: "Join"
      depends_on: ["1.2", "1.3"]
      acceptance: [{exists: "a.txt"}]
    - id: "2.1"
      name: "Last"
      depends_on: ["1.4"]
      acceptance: [{exists: "a.txt"}]
"""


# hypothesis's terminal summary imports hypothesis anew in every in-process run (pytester
# restores sys.modules after each one): about a second per run that these tests do not need.
FAST = ("-p", "no:hypothesispytest", "-p", "no:randomly")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-n", "0", "--conductor-track=t", *FAST, *args)


def last_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.strip()]
    assert lines, "no output"
    return lines[-1]


def verdict_of(result: pytest.RunResult) -> dict[str, Any]:
    value = json.loads(last_line(result))
    assert isinstance(value, dict)
    return value


def bus(pytester: pytest.Pytester) -> Path:
    return pytester.path / "conductor" / "tracks" / "t" / ".message-bus"


def metadata(pytester: pytest.Pytester) -> dict[str, Any]:
    path = pytester.path / "conductor" / "tracks" / "t" / "metadata.json"
    value = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


def messages(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    text = (bus(pytester) / "queue.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def track(pytester: pytest.Pytester, write_plan: PlanWriter) -> pytest.Pytester:
    """The CHAIN plan with 1.2 failing (b.txt missing): 1.4 and 2.1 are blocked."""
    write_plan(CHAIN)
    (pytester.path / "a.txt").write_text("a")
    return pytester


@pytest.fixture
def passing(track: pytest.Pytester) -> pytest.Pytester:
    (track.path / "b.txt").write_text("b")
    return track


def test_events_for_each_outcome(track: pytest.Pytester) -> None:
    result = run(track)
    assert result.ret == 1
    events = bus(track) / "events"
    assert sorted(p.name for p in events.iterdir()) == [
        "PARALLEL_COMPLETE_t.event",
        "TASK_BLOCKED_1.4.event",
        "TASK_BLOCKED_2.1.event",
        "TASK_COMPLETE_1.1.event",
        "TASK_COMPLETE_1.3.event",
        "TASK_FAILED_1.2.event",
    ]
    assert (events / "PARALLEL_COMPLETE_t.event").read_text() == "FAIL"
    failed = (events / "TASK_FAILED_1.2.event").read_text()
    assert "acceptance criterion failed: exists: b.txt" in failed
    assert (events / "TASK_COMPLETE_1.1.event").read_text() == ""  # no git: no commit sha
    by_type: dict[str, list[dict[str, Any]]] = {}
    for message in messages(track):
        by_type.setdefault(message["type"], []).append(message["payload"])
    assert by_type["TASK_COMPLETE"][0] == {
        "task_id": "1.1",
        "commit_sha": "",
        "files_modified": ["a.txt"],
        "unblocks": ["1.2"],
    }
    assert [p["task_id"] for p in by_type["TASK_COMPLETE"]] == ["1.1", "1.3"]
    assert by_type["TASK_BLOCKED"] == [
        {"task_id": "1.4", "blocked_by": "1.2", "reason": "blocked: dependency 1.2 failed"},
        {
            "task_id": "2.1",
            "blocked_by": "1.2",
            "reason": "blocked: dependency 1.2 failed (via 1.4)",
        },
    ]
    assert by_type["PARALLEL_COMPLETE"] == [{"track": "t", "status": "FAIL"}]
    assert len(by_type["TASK_FAILED"]) == 1


def test_events_are_written_as_nodes_finish(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    check = "conductor/tracks/t/.message-bus/events/TASK_COMPLETE_1.1.event"
    write_plan(
        f"""
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{{exists: "a.txt"}}]
            - id: "1.2"
              depends_on: ["1.1"]
              acceptance: [{{exists: "{check}"}}]
        """
    )
    (pytester.path / "a.txt").write_text("a")
    result = run(pytester)
    result.assert_outcomes(passed=2)


def test_an_event_the_agent_wrote_is_not_written_again(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    """Dispatch mode: the agent posts TASK_COMPLETE itself. The controller keeps the agent's
    event when the node passes, and adds TASK_FAILED when acceptance disagrees."""
    agent = (
        "import sys, pathlib; d = pathlib.Path('conductor/tracks/t/.message-bus/events'); "
        "(d / f'TASK_COMPLETE_{sys.argv[1]}.event').write_text('agent-sha'); "
        "sys.exit(int(sys.argv[2]))"
    )
    (pytester.path / "agent.py").write_text(agent)
    write_plan(
        """
        dag:
          nodes:
            - id: "ok"
              acceptance: [{run: "python agent.py ok 0"}]
            - id: "bad"
              acceptance: [{run: "python agent.py bad 1"}]
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    events = bus(pytester) / "events"
    assert (events / "TASK_COMPLETE_ok.event").read_text() == "agent-sha"
    assert (events / "TASK_COMPLETE_bad.event").read_text() == "agent-sha"
    assert (events / "TASK_FAILED_bad.event").is_file()
    posted = [
        (m["type"], m["payload"]["task_id"])
        for m in messages(pytester)
        if "task_id" in m["payload"]
    ]
    assert posted == [("TASK_FAILED", "bad")]


def test_previous_run_is_moved_aside(track: pytest.Pytester) -> None:
    run(track)
    (track.path / "b.txt").write_text("b")
    run(track)
    runs = list((bus(track) / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "events" / "TASK_FAILED_1.2.event").is_file()
    events = sorted(p.name for p in (bus(track) / "events").iterdir())
    assert "TASK_FAILED_1.2.event" not in events
    assert "TASK_COMPLETE_2.1.event" in events


def test_metadata_after_a_failed_run(track: pytest.Pytester) -> None:
    run(track)
    loop = metadata(track)["loop_state"]
    assert loop["current_step"] == "EVALUATE_EXECUTION"
    assert loop["step_status"] == "NOT_STARTED"
    state = loop["parallel_state"]
    assert state == {
        "total_workers_spawned": 3,
        "completed_workers": 2,
        "failed_workers": 1,
        "blocked_tasks": ["1.4", "2.1"],
        # No parallel_groups in the plan: the DAG levels are the groups.
        "parallel_groups_completed": ["level-1"],  # 1.1 and 1.3
        "failed_tasks": {"1.2": "exists: b.txt: missing: b.txt"},
    }
    checkpoint = loop["checkpoints"]["PARALLEL_EXECUTE"]
    assert checkpoint["status"] == "FAILED"
    assert checkpoint["agent"] == "pytest-conductor"
    assert checkpoint["started_at"].endswith("Z") and checkpoint["completed_at"].endswith("Z")
    assert checkpoint["started_at"] <= checkpoint["completed_at"]


def test_metadata_merge_keeps_the_orchestrators_keys(passing: pytest.Pytester) -> None:
    path = passing.path / "conductor" / "tracks" / "t" / "metadata.json"
    original = {
        "track_id": "t",
        "board_sessions": [{"id": "top"}],
        "unknown": {"deep": [1, {"x": None}]},
        "loop_state": {
            "current_step": "PARALLEL_EXECUTE",
            "board_sessions": [{"id": "nested"}],
            "parallel_state": {"extra": "kept"},
            "checkpoints": {"PLAN": {"status": "PASSED"}},
        },
    }
    path.write_text(json.dumps(original), encoding="utf-8")
    result = run(passing)
    assert result.ret == 0
    data = metadata(passing)
    assert data["board_sessions"] == [{"id": "top"}]
    assert data["unknown"] == {"deep": [1, {"x": None}]}
    assert data["track_id"] == "t"
    loop = data["loop_state"]
    assert loop["board_sessions"] == [{"id": "nested"}]
    assert loop["parallel_state"]["extra"] == "kept"
    assert loop["parallel_state"]["parallel_groups_completed"] == [
        "level-1",
        "level-2",
        "level-3",
        "level-4",
    ]
    assert loop["checkpoints"]["PLAN"] == {"status": "PASSED"}
    assert loop["checkpoints"]["PARALLEL_EXECUTE"]["status"] == "PASSED"
    assert loop["current_step"] == "EVALUATE_EXECUTION"


def test_parallel_groups_completed_uses_the_plans_groups(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - {id: "a", acceptance: [{exists: "x"}]}
            - {id: "b", acceptance: [{exists: "missing"}]}
            - {id: "c", acceptance: [{exists: "x"}]}
          parallel_groups:
            - {id: "pg-1", tasks: ["a", "c"]}
            - {id: "pg-2", tasks: ["b"]}
        """
    )
    (pytester.path / "x").write_text("x")
    run(pytester)
    state = metadata(pytester)["loop_state"]["parallel_state"]
    assert state["parallel_groups_completed"] == ["pg-1"]


def test_held_metadata_lock_is_reported_and_the_file_left(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    pytester.makeini("[pytest]\nconductor_metadata_lock_timeout = 0.3s\n")
    write_plan(CHAIN)
    (pytester.path / "a.txt").write_text("a")
    track_dir = pytester.path / "conductor" / "tracks" / "t"
    (track_dir / "metadata.json").write_text('{"mine": true}')
    (track_dir / ".metadata.lock").mkdir()
    result = run(pytester)
    lock = track_dir / ".metadata.lock"
    result.stdout.fnmatch_lines(
        [f"conductor warning: metadata.json not updated: lock {lock} held for 0.3s"]
    )
    assert (track_dir / "metadata.json").read_text() == '{"mine": true}'
    assert lock.is_dir()
    verdict = verdict_of(result)
    assert verdict["verdict"] == "FAIL"  # a metadata write that failed fails the run
    assert "not written: metadata.json not updated: lock" in verdict["summary"]
    assert json.loads((bus(pytester) / "verdict.json").read_text()) == verdict


def test_unparsable_metadata_is_reported_and_left(passing: pytest.Pytester) -> None:
    path = passing.path / "conductor" / "tracks" / "t" / "metadata.json"
    path.write_text('{"loop_state": ', encoding="utf-8")
    result = run(passing)
    result.stdout.fnmatch_lines(["conductor warning: metadata.json not updated: *not valid JSON*"])
    assert path.read_text(encoding="utf-8") == '{"loop_state": '
    # Every node passed, but the orchestrator's file says nothing of it: the run fails,
    # after the verdict and PARALLEL_COMPLETE were written (they say FAIL in the end).
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    verdict = verdict_of(result)
    assert verdict["verdict"] == "FAIL"
    assert verdict["summary"].startswith("Track t: 5 of 5 nodes passed; not written: metadata")
    assert json.loads((bus(passing) / "verdict.json").read_text()) == verdict
    assert (bus(passing) / "events" / "PARALLEL_COMPLETE_t.event").read_text() == "FAIL"


def test_an_event_that_cannot_be_written_fails_the_run(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    # The node's own check puts a plain file where the events folder was.
    breaker = (
        "import pathlib, shutil; p = pathlib.Path('conductor/tracks/t/.message-bus/events'); "
        "shutil.rmtree(p); p.write_text('not a folder')"
    )
    (pytester.path / "breaker.py").write_text(breaker)
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{run: "python breaker.py"}]
        """
    )
    result = run(pytester)
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["conductor warning: TASK_COMPLETE_1.1.event not written: *"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    verdict = verdict_of(result)
    assert verdict["verdict"] == "FAIL"
    assert "not written: TASK_COMPLETE_1.1.event not written" in verdict["summary"]
    assert json.loads((bus(pytester) / "verdict.json").read_text()) == verdict
    assert metadata(pytester)["loop_state"]["checkpoints"]["PARALLEL_EXECUTE"]["status"] == "FAILED"


def test_deeply_nested_metadata_cannot_stop_the_verdict(passing: pytest.Pytester) -> None:
    path = passing.path / "conductor" / "tracks" / "t" / "metadata.json"
    text = '{"a": ' * 100_000 + "1" + "}" * 100_000
    path.write_text(text, encoding="utf-8")
    result = run(passing)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        ["conductor warning: metadata.json not updated: *nested too deeply*"]
    )
    assert path.read_text(encoding="utf-8") == text
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert json.loads((bus(passing) / "verdict.json").read_text())["verdict"] == "FAIL"
    assert (bus(passing) / "events" / "PARALLEL_COMPLETE_t.event").is_file()


def test_verdict_json_and_last_line_agree(track: pytest.Pytester) -> None:
    result = run(track)
    verdict = verdict_of(result)
    assert verdict == {
        "verdict": "FAIL",
        "summary": "Track t: 2 of 5 nodes passed; 1 failed (1.2), 2 blocked (1.4, 2.1).",
        "files_changed": 0,
    }
    on_disk = json.loads((bus(track) / "verdict.json").read_text(encoding="utf-8"))
    assert on_disk == verdict


@pytest.mark.parametrize("flags", [(), ("-q",), ("-qq",), ("-v",), ("-rA", "--junitxml=r.xml")])
def test_verdict_is_the_last_line(passing: pytest.Pytester, flags: tuple[str, ...]) -> None:
    result = run(passing, *flags)
    assert result.ret == 0
    assert result.outlines[-1] == last_line(result)
    assert verdict_of(result) == {
        "verdict": "PASS",
        "summary": "Track t: 5 of 5 nodes passed.",
        "files_changed": 0,
    }


def test_no_verdict_for_help_or_collect_only(passing: pytest.Pytester) -> None:
    for args in (("--help",), ("--collect-only",)):
        result = run(passing, *args)
        assert '"verdict"' not in result.stdout.str()
    assert not (bus(passing) / "verdict.json").exists()


def test_deselected_everything_is_fail(passing: pytest.Pytester) -> None:
    result = run(passing, "-k", "nothing_matches")
    assert verdict_of(result)["verdict"] == "FAIL"
    assert "no node was selected" in verdict_of(result)["summary"]


def test_terminal_summary(track: pytest.Pytester) -> None:
    result = run(track)
    result.stdout.fnmatch_lines(
        [
            "*- conductor -*",
            "track t: 2 passed, 1 failed, 2 blocked",
            "failed: 1.2",
            "blocked: 1.4 <- 1.2 (failed)",
            "blocked: 2.1 <- 1.4 <- 1.2 (failed)",
            "critical path 1.1 -> 1.2 took * (measured); the nodes took * from first start*",
            "slowest: *",
        ]
    )


def test_quiet_summary_is_two_lines(track: pytest.Pytester) -> None:
    result = run(track, "-q")
    ours = [line for line in result.outlines if line.startswith("conductor ")]
    assert ours == [
        "conductor t: 2 passed, 1 failed (1.2), 2 blocked (1.4, 2.1)",
        ours[1],
    ]
    assert ours[1].startswith("conductor critical path 1.1 -> 1.2 took ")
    result.stdout.no_fnmatch_line("*- conductor -*")


def test_collect_only_prints_order_and_critical_path(passing: pytest.Pytester) -> None:
    result = run(passing, "--collect-only", "--conductor-graph=g.mmd")
    result.stdout.fnmatch_lines(
        [
            "execution order: 1.1, 1.2, 1.3, 1.4, 2.1",
            "critical path 1.1 -> 1.2 -> 1.4 -> 2.1 (4s planned)",
        ]
    )
    graph = (passing.path / "g.mmd").read_text(encoding="utf-8")
    assert "class n0,n1,n3,n4,k1 critical" in graph
    assert "passed" not in graph
    assert not bus(passing).exists(), "--collect-only runs nothing and writes no bus"


@pytest.mark.parametrize(
    ("name", "first"), [("g.mmd", "---"), ("sub/g.md", "```mermaid"), ("g.dot", "digraph")]
)
def test_graph_after_a_run_is_coloured_by_outcome(
    track: pytest.Pytester, name: str, first: str
) -> None:
    result = run(track, f"--conductor-graph={name}")
    text = (track.path / name).read_text(encoding="utf-8")
    assert text.startswith(first)
    for state in ("passed", "failed", "blocked"):
        assert state in text
    result.stdout.fnmatch_lines([f"graph written to {track.path / name}"])
    # One path: the graph marks the measured one the terminal reports, and says so.
    reported = next(x for x in result.outlines if x.startswith("critical path "))
    path = reported.removeprefix("critical path ").split(" took ")[0]
    shown = path.replace(">", "#gt;") if name.endswith(("mmd", "md")) else path
    assert f"thick arrows: critical path (measured) {shown}" in text


def junit_cases(path: Path) -> dict[str, tuple[str, dict[str, str], list[str]]]:
    cases = {}
    for case in ET.parse(path).iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        cases[case.get("name", "")] = (
            case.get("classname", ""),
            props,
            [child.tag for child in case if child.tag != "properties"],
        )
    return cases


def test_junit_names_and_properties(track: pytest.Pytester) -> None:
    track.makepyfile(test_users_own="def test_mine(): pass")
    run(track, "--junitxml=out/report.xml", "test_users_own.py")
    cases = junit_cases(track.path / "out" / "report.xml")
    assert set(cases) == {
        "1.1 Create data store",
        "1.2 Use the store",
        "1.3 Independent",
        "1.4 Join",
        "2.1 Last",
        "test_mine",
    }
    classname, props, children = cases["1.1 Create data store"]
    assert classname == "conductor.t"
    # Empty properties (worker_id in a verify-only run, blocked_by of a node that ran)
    # are left out.
    assert props == {
        "task_id": "1.1",
        "name": "Create data store",
        "type": "code",
        "phase": "1",
        "files": "a.txt",
        "attempts": "1",
    }
    assert children == []
    _, props, children = cases["1.2 Use the store"]
    assert props["files"] == "b.txt, c.txt"
    assert children == ["failure"]
    _, props, children = cases["2.1 Last"]
    assert props["blocked_by"] == "1.2"
    assert props["attempts"] == "0"
    assert children == ["skipped"]
    assert cases["test_mine"][0] == "test_users_own"  # the user's own tests are left alone


def test_junit_prefix_is_kept(passing: pytest.Pytester) -> None:
    run(passing, "--junitxml=r.xml", "--junit-prefix=ci")
    classname, _, _ = junit_cases(passing.path / "r.xml")["1.1 Create data store"]
    assert classname == "ci.conductor.t"


GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_files_changed_and_commit_sha_with_git(
    pytester: pytest.Pytester, write_plan: PlanWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    writer = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('made by ' + sys.argv[1])"
    (pytester.path / "write.py").write_text(writer)
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              files: ["new1.txt"]
              acceptance: [{run: "python write.py new1.txt"}]
            - id: "1.2"
              depends_on: ["1.1"]
              files: ["new2.txt", "declared-but-not-written.txt"]
              acceptance: [{run: "python write.py new2.txt"}]
        """
    )
    (pytester.path / ".gitignore").write_text("__pycache__/\n")
    for args in (("init", "-q"), ("add", "."), ("commit", "-qm", "start")):
        subprocess.run(["git", *args], cwd=pytester.path, check=True, capture_output=True)
    (pytester.path / "dirty-before.txt").write_text("untracked before the run")
    result = run(pytester, "--junitxml=report.xml")
    assert result.ret == 0
    # Written: new1.txt, new2.txt. Not counted: the bus, metadata.json, report.xml,
    # .pytest_cache and the file that was already there before the run.
    assert verdict_of(result)["files_changed"] == 2
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=pytester.path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert (bus(pytester) / "events" / "TASK_COMPLETE_1.1.event").read_text() == sha


def test_files_changed_leaves_out_what_pytest_and_its_plugins_write(
    pytester: pytest.Pytester, write_plan: PlanWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    # What pytest-cov, pytest-html, pytest-json-report and the cache would leave behind,
    # written by the node itself so they exist in the middle of the run.
    writer = (
        "import pathlib\n"
        "for name in ['work.txt', '.coverage', '.coverage.host.1.2', 'cache/v/x']:\n"
        "    path = pathlib.Path(name); path.parent.mkdir(parents=True, exist_ok=True)\n"
        "    path.write_text('x')\n"
    )
    (pytester.path / "write.py").write_text(writer)
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{run: "python write.py"}]
        """
    )
    pytester.makeini("[pytest]\ncache_dir = cache\n")
    (pytester.path / ".gitignore").write_text("__pycache__/\n")
    for args in (("init", "-q"), ("add", "."), ("commit", "-qm", "start")):
        subprocess.run(["git", *args], cwd=pytester.path, check=True, capture_output=True)
    result = pytester.runpytest(
        "-n", "0", "--conductor-track=t", "-p", "no:randomly", "--junitxml=out/report.xml"
    )
    assert result.ret == 0
    assert verdict_of(result)["files_changed"] == 1  # work.txt only


def test_runs_keeps_the_last_conductor_keep_runs(passing: pytest.Pytester) -> None:
    for _ in range(3):
        assert run(passing, "--conductor-keep-runs=1").ret == 0
    assert len(list((bus(passing) / "runs").iterdir())) == 1
    assert run(passing, "--conductor-keep-runs=-1").ret == pytest.ExitCode.USAGE_ERROR


def test_files_changed_without_git_is_what_workers_reported(
    pytester: pytest.Pytester, write_plan: PlanWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(pytester.path.parent))
    post = (
        "import json, pathlib; q = pathlib.Path('conductor/tracks/t/.message-bus/queue.jsonl'); "
        "m = {'id': 'msg-1', 'type': 'TASK_COMPLETE', 'source': 'worker-a-1', "
        "'timestamp': '2026-11-27T12:00:00.000000Z', 'payload': {'task_id': 'a', "
        "'commit_sha': None, 'files_modified': ['x.py', 'y.py'], 'unblocks': []}}; "
        "q.open('a').write(json.dumps(m) + '\\n')"
    )
    (pytester.path / "post.py").write_text(post)
    write_plan(
        """
        dag:
          nodes:
            - id: "a"
              files: ["declared.py"]
              acceptance: [{run: "python post.py"}]
        """
    )
    result = run(pytester)
    assert verdict_of(result)["files_changed"] == 2


def test_ctrl_c_leaves_valid_interrupted_metadata(
    pytester: pytest.Pytester, write_plan: PlanWriter
) -> None:
    write_plan(
        """
        dag:
          nodes:
            - id: "1.1"
              acceptance: [{exists: "a.txt"}]
            - id: "1.2"
              depends_on: ["1.1"]
              acceptance:
                - run: "python -c 'import os,signal; os.kill(os.getppid(), signal.SIGINT)'"
            - id: "1.3"
              depends_on: ["1.2"]
              acceptance: [{exists: "a.txt"}]
        """
    )
    (pytester.path / "a.txt").write_text("a")
    track_dir = pytester.path / "conductor" / "tracks" / "t"
    (track_dir / "metadata.json").write_text(
        json.dumps({"loop_state": {"current_step": "PARALLEL_EXECUTE", "x": 1}, "y": 2})
    )
    result = pytester.runpytest_subprocess("-n", "0", "--conductor-track=t", *FAST)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = metadata(pytester)
    assert data["y"] == 2
    loop = data["loop_state"]
    assert loop["x"] == 1
    assert loop["current_step"] == "PARALLEL_EXECUTE"
    assert loop["step_status"] == "NOT_STARTED"  # dispatch again, skipping completed_tasks
    assert loop["checkpoints"]["PARALLEL_EXECUTE"]["status"] == "NOT_STARTED"
    assert loop["parallel_state"]["interrupted_at"].endswith("Z")
    assert loop["parallel_state"]["completed_workers"] == 1
    assert data["completed_tasks"] == ["1.1"]
    verdict = verdict_of(result)
    assert verdict["verdict"] == "FAIL"
    assert verdict["summary"].startswith("Track t: interrupted after 1 of 3 nodes passed")
    events = bus(pytester) / "events"
    assert (events / "TASK_COMPLETE_1.1.event").is_file()
    assert (events / "PARALLEL_COMPLETE_t.event").read_text() == "FAIL"


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [(), ("-q",)])
def test_verdict_is_the_last_line_under_xdist(
    track: pytest.Pytester, quiet: tuple[str, ...]
) -> None:
    result = track.runpytest_subprocess(
        "-n", "2", "--conductor-track=t", "--junitxml=r.xml", *FAST, *quiet
    )
    assert result.ret == 1
    assert result.outlines[-1] == last_line(result)
    assert verdict_of(result)["summary"] == (
        "Track t: 2 of 5 nodes passed; 1 failed (1.2), 2 blocked (1.4, 2.1)."
    )
    events = sorted(p.name for p in (bus(track) / "events").iterdir())
    assert "TASK_BLOCKED_2.1.event" in events and "TASK_FAILED_1.2.event" in events
    state = metadata(track)["loop_state"]["parallel_state"]
    assert state["blocked_tasks"] == ["1.4", "2.1"]
    # Blocked nodes never reach a worker: the controller's reports get the properties too.
    cases = junit_cases(track.path / "r.xml")
    classname, props, children = cases["2.1 Last"]
    assert classname == "conductor.t"
    assert list(props) == ["task_id", "name", "type", "attempts", "blocked_by"]
    assert (props["blocked_by"], props["attempts"], children) == ("1.2", "0", ["skipped"])
    assert cases["1.1 Create data store"][1]["attempts"] == "1"


def test_nothing_happens_without_a_track(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-n", "0", *FAST)
    assert '"verdict"' not in result.stdout.str()
    assert not (pytester.path / "conductor").exists()


def test_error_text_skips_the_xdist_header_and_is_cut() -> None:
    longrepr = "\n".join(
        [
            "[gw0] linux -- Python 3.11.7 /work/venv/bin/python",
            "task 1.2 (Auth service):",
            "acceptance criterion failed: exists: a.txt",
            *[f"line {i}" for i in range(40)],
        ]
    )
    report = pytest.TestReport(
        "plan.md::1.2", ("plan.md", 0, "1.2"), {}, "failed", longrepr, "call"
    )
    text = error_text(report)
    lines = text.splitlines()
    assert lines[:2] == ["task 1.2 (Auth service):", "acceptance criterion failed: exists: a.txt"]
    assert len(lines) == 20


def test_junit_properties_for_a_blocked_node() -> None:
    node = Node(id="2.1", name="Last", type="test", files=("a", "b"), phase="2")
    assert junit_properties(node, "1.2") == [
        ("task_id", "2.1"),
        ("name", "Last"),
        ("type", "test"),
        ("phase", "2"),
        ("files", "a, b"),
        ("worker_id", ""),
        ("attempts", "0"),
        ("blocked_by", "1.2"),
    ]
    assert dict(junit_properties(node, None))["attempts"] == "1"
    assert [key for key, _ in junit_properties(node, None)] == list(JUNIT_PROPERTY_KEYS)


def test_docs_list_every_file_a_run_writes(passing: pytest.Pytester) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "files.md").read_text("utf-8")
    run(passing, "--junitxml=r.xml", "--conductor-graph=g.mmd")
    track_dir = passing.path / "conductor" / "tracks" / "t"
    names = {p.name for p in track_dir.iterdir()} - {"plan.md"}
    names |= {p.name for p in bus(passing).iterdir()}
    missing = sorted(name for name in names if f"`{name}" not in docs and f" {name}" not in docs)
    # Event names carry ids: the docs name each kind (TASK_COMPLETE_, PARALLEL_COMPLETE_ ...).
    kinds = {p.name.rsplit("_", 1)[0] + "_" for p in (bus(passing) / "events").iterdir()}
    missing += sorted(kind for kind in kinds if kind not in docs)
    assert missing == []
