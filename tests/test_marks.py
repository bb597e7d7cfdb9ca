"""Status marks are facts about the work: SHAs checked against git, what each mark means in
a verify-only run of a checklist plan, marks as notes in a DAG plan, resume and redo in a
dispatch run."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_conductor.acceptance.commits import check_commit, git_available
from pytest_conductor.acceptance.status import DISPATCH, FAIL, RESUME, SKIP, VERIFY, decide
from pytest_conductor.plan.marks import Mark
from tests.conftest import EXAMPLES

AGENT = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(EXAMPLES / 'agents' / 'scripted_agent.py'))}"
)
WORKER = f"--conductor-worker={AGENT} {{prompt_file}}"


@pytest.fixture
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }.items():
        monkeypatch.setenv(key, value)


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(root: Path, name: str, text: str = "x") -> str:
    (root / name).write_text(text, encoding="utf-8")
    git(root, "add", name)
    git(root, "commit", "-q", "-m", name)
    return git(root, "rev-parse", "HEAD")


def lit(pattern: str) -> str:
    """An fnmatch pattern that takes ``[x]`` literally."""
    return pattern.replace("[", "[[]")


def write_checklist(pytester: pytest.Pytester, text: str, track: str = "t") -> Path:
    folder = pytester.path / "conductor" / "tracks" / track
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "plan.md"
    plan.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return plan


# --------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("state", "form", "dispatching", "redo", "action"),
    [
        (" ", "checklist", False, False, FAIL),
        ("~", "checklist", False, False, FAIL),
        ("!", "checklist", False, False, FAIL),
        ("-", "checklist", False, False, SKIP),
        ("x", "checklist", False, False, VERIFY),
        (" ", "dag", False, False, VERIFY),
        ("!", "dag", False, False, VERIFY),
        ("x", "checklist", True, False, RESUME),
        ("x", "dag", True, False, RESUME),
        ("x", "checklist", True, True, DISPATCH),
        ("!", "checklist", True, False, DISPATCH),
        ("-", "checklist", True, False, SKIP),
    ],
)
def test_what_a_mark_means(
    state: str, form: str, dispatching: bool, redo: bool, action: str
) -> None:
    mark = Mark(state, 3, "abc1234" if state == "x" else None)
    assert decide(mark, form, dispatching=dispatching, redo=redo).action == action


def test_without_a_mark_criteria_decide() -> None:
    assert decide(None, "checklist", dispatching=False, redo=False).action == VERIFY
    assert decide(None, "checklist", dispatching=True, redo=False).action == DISPATCH


def test_commit_checks_against_a_real_repository(tmp_path: Path, git_env: None) -> None:
    git(tmp_path, "init", "-q")
    assert git_available(tmp_path) == "the git repository has no commit yet"
    first = commit(tmp_path, "a.txt")
    assert git_available(tmp_path) is None
    assert check_commit(tmp_path, first[:7]).ok
    ghost = check_commit(tmp_path, "0badf00d")
    assert not ghost.ok and ghost.seen == "no commit 0badf00d in the repository (ghost commit)"
    git(tmp_path, "checkout", "-q", "-b", "side")
    side = commit(tmp_path, "b.txt")
    git(tmp_path, "checkout", "-q", "-")
    elsewhere = check_commit(tmp_path, side[:7])
    assert not elsewhere.ok and "not an ancestor of HEAD" in elsewhere.seen
    assert git_available(tmp_path / "nowhere") is not None


# --------------------------------------------------------------------------- verify-only


GOOGLE = """
# Plan

## Phase 1: Store [checkpoint: {checkpoint}]

- [x] Task: Real work {real}
- [x] Task: Ghost work 0badf00d <!-- deps: none -->
- [x] Task: Phase end <!-- deps: none -->

## Phase 2: Rest

- [~] Task: Half done <!-- deps: none -->
- [ ] Task: Not started <!-- deps: none -->
- [!] Task: Stuck <!-- deps: none -->
- [-] Task: Dropped <!-- deps: none -->
"""


@pytest.mark.slow
def test_verify_only_checklist_marks_and_shas(pytester: pytest.Pytester, git_env: None) -> None:
    root = pytester.path
    git(root, "init", "-q")
    real = commit(root, "a.txt")
    write_checklist(pytester, GOOGLE.format(real=real[:7], checkpoint="feedf00d"))
    result = pytester.runpytest("--conductor-track=t", "-n", "0", "-rA")
    result.assert_outcomes(passed=1, failed=5, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*1.2: commit: 0badf00d: no commit 0badf00d in the repository (ghost commit)*",
            "*acceptance criterion failed: commit: 0badf00d*",
            "*seen:     no commit 0badf00d in the repository (ghost commit)*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*phase 1 checkpoint (plan.md line 3)*", "*no commit feedf00d*(ghost commit)*"]
    )
    result.stdout.fnmatch_lines(
        [
            "*2.1: not done: marked*",
            lit("*not done: marked [~], in progress (plan.md line 11)*"),
        ]
    )
    result.stdout.fnmatch_lines([lit("*not done: marked [ ], not done (plan.md line 12)*")])
    result.stdout.fnmatch_lines([lit("*marked blocked [!] (plan.md line 13)*")])
    result.stdout.fnmatch_lines([lit("SKIPPED*plan.md: marked skipped [-] (plan.md line 14)*")])
    assert "PASSED conductor/tracks/t/plan.md::1.1" in result.stdout.str()


@pytest.mark.slow
def test_a_done_plan_with_real_commits_passes(pytester: pytest.Pytester, git_env: None) -> None:
    root = pytester.path
    git(root, "init", "-q")
    first = commit(root, "a.txt")
    second = commit(root, "b.txt")
    write_checklist(
        pytester,
        f"""
        ## Phase 1: A [checkpoint: {second[:7]}]
        - [x] Task: one {first[:7]}
        - [x] Task: two ({second[:7]})
        """,
    )
    result = pytester.runpytest("--conductor-track=t", "-n", "0")
    result.assert_outcomes(passed=2)


def test_without_git_the_shas_are_not_checked_and_that_is_said_once(
    pytester: pytest.Pytester,
) -> None:
    write_checklist(pytester, "- [x] Task: one abc1234\n- [x] Task: two def5678\n")
    result = pytester.runpytest(
        "--conductor-track=t", "-n", "0", "-W", "default::pytest.PytestWarning"
    )
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert out.count("the commits plan.md names are not checked") == 1
    assert "is not in a git repository" in out


@pytest.mark.slow
def test_a_dag_plans_marks_are_notes_and_its_criteria_decide(
    pytester: pytest.Pytester, git_env: None
) -> None:
    git(pytester.path, "init", "-q")
    commit(pytester.path, "a.txt")
    write_checklist(
        pytester,
        """
        - [ ] Task 1.1: Nobody updated this mark
        - [x] Task 1.2: Done, with a ghost commit 0badf00d

        ```yaml
        dag:
          nodes:
            - {id: "1.1", acceptance: [{exists: a.txt}]}
            - {id: "1.2", acceptance: [{exists: a.txt}]}
        ```
        """,
    )
    result = pytester.runpytest("--conductor-track=t", "-n", "0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*conductor: acceptance notes*", lit("1.1: plan.md marks it [ ] (not done, line 1)")]
    )
    result.stdout.fnmatch_lines(["*no commit 0badf00d in the repository (ghost commit)*"])


# --------------------------------------------------------------------------- resume


HALF_DONE = """
## Phase 1: Build

- [x] Task: Made earlier
    - **Acceptance**: it is there
- [ ] Task: Still to do
- [!] Task: Blocked last time
"""


def _dispatched(record: Path) -> list[str]:
    tasks = []
    for file in sorted(record.glob("*.jsonl")):
        for line in file.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "start":
                tasks.append(event["task"])
    return sorted(tasks)


@pytest.mark.slow
def test_a_dispatch_run_resumes_done_tasks_are_rechecked_not_dispatched(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checklist(pytester, HALF_DONE)
    record = pytester.path / "record"
    record.mkdir()
    monkeypatch.setenv("SCRIPTED_AGENT_RECORD", str(record))
    result = pytester.runpytest("--conductor-track=t", WORKER, "-n", "0")
    result.assert_outcomes(passed=3)
    assert _dispatched(record) == ["1.2", "1.3"]
    result.stdout.fnmatch_lines(["1.1: done earlier (no commit named)"])

    for file in record.glob("*"):
        file.unlink()
    result = pytester.runpytest("--conductor-track=t", WORKER, "-n", "0", "--conductor-redo=1.1")
    result.assert_outcomes(passed=3)
    assert _dispatched(record) == ["1.1", "1.2", "1.3"]


@pytest.mark.slow
def test_a_done_task_whose_work_is_gone_fails_on_resume(pytester: pytest.Pytester) -> None:
    write_checklist(
        pytester,
        """
        ### Task 1: Make it

        **Files:**
        - Create: `made.txt`

        - [x] **Step 1: Write made.txt**
        """,
    )
    result = pytester.runpytest("--conductor-track=t", WORKER, "-n", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*plan.md marks it done [x] (line 1), but the work is not there:*"),
            "*acceptance criterion failed: exists: made.txt*",
        ]
    )


def test_redo_naming_no_task_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_checklist(pytester, "- [x] Task: one\n")
    result = pytester.runpytest("--conductor-track=t", WORKER, "--conductor-redo=9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--conductor-redo names 9, which is not a task of the plan*"])


# --------------------------------------------------------------------------- no vacuous passes


def test_a_node_without_criteria_gets_the_check_its_files_imply(
    pytester: pytest.Pytester,
) -> None:
    write_checklist(
        pytester,
        """
        ```yaml
        dag:
          nodes:
            - {id: made, files: [made.txt]}
            - {id: missing, files: [missing.txt]}
            - {id: nothing}
            - {id: prose, acceptance: "reads well"}
        ```
        """,
    )
    (pytester.path / "made.txt").write_text("x")
    result = pytester.runpytest("--conductor-track=t", "-n", "0", "--junitxml=out.xml")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*missing: exists: missing.txt: missing: missing.txt*",
            "*acceptance criterion failed: exists: missing.txt*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*conductor: acceptance notes*",
            "made: exists: made.txt: implicit check: no acceptance criteria, so the node's "
            "files must exist",
            "unchecked (nothing machine-checkable; --conductor-strict fails them): nothing, prose",
        ]
    )
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count('<property name="unchecked" value="true" />') == 2

    result = pytester.runpytest("--conductor-track=t", "-n", "0", "--conductor-strict")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*task nothing: nothing*",
            "unchecked: no acceptance criteria and no files, so nothing a machine can check "
            "(--conductor-strict)*",
        ]
    )
    result.stdout.fnmatch_lines(["unchecked: only prose criteria, so nothing*"])


def test_completed_tasks_are_those_passed_now_or_marked_done_and_not_run() -> None:
    from pytest_conductor.plan.checklist import parse_checklist
    from pytest_conductor.report.record import done_tasks

    plan = parse_checklist("- [x] Task: a\n- [x] Task: b\n- [ ] Task: c\n- [ ] Task: d\n")
    statuses = {"2": "failed", "3": "passed"}
    assert done_tasks(plan, ["2", "3"], statuses, {}) == ["1", "3"]
    assert done_tasks(plan, ["2", "3"], statuses, {"4": "passed"}) == ["1", "3", "4"]
