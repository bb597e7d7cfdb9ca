"""Worktree isolation and the scope check, in real temporary git repositories, with the
scripted agent (examples/agents/scripted_agent.py) doing the work and committing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_conductor.isolation.scope import in_scope, out_of_scope
from pytest_conductor.isolation.worktrees import IsolationError, MergeConflict, TrackRepo
from tests.conftest import EXAMPLES, render_plan

AGENT = EXAMPLES / "agents" / "scripted_agent.py"
WORKER = (
    f"--conductor-worker={shlex.quote(sys.executable)} {shlex.quote(str(AGENT))} {{prompt_file}}"
)
WORKTREE = "--conductor-isolation=worktree"

DIAMOND = """
dag:
  nodes:
    - id: "a"
      name: "Base"
      files: ["src/a.py"]
      acceptance: [{exists: "src/a.py"}]
      script: {write: {src/a.py: "A = 1\\n"}, commit: "a: the base module"}
    - id: "b"
      name: "Left"
      files: ["src/b.py"]
      depends_on: ["a"]
      acceptance: [{exists: ["src/a.py", "src/b.py"]}]
      script: {sleep: 0.5, write: {src/b.py: "B = 2\\n"}}
    - id: "c"
      name: "Right"
      files: ["src/c*.py"]
      depends_on: ["a"]
      acceptance: [{exists: ["src/a.py", "src/c.py"]}]
      script: {sleep: 0.5, write: {src/c.py: "C = 3\\n", README.md: "c was here\\n"}, commit: "c"}
    - id: "d"
      name: "Join"
      files: ["src/d.py"]
      depends_on: ["b", "c"]
      acceptance: [{exists: ["src/a.py", "src/b.py", "src/c.py", "src/d.py"]}]
      script: {write: {src/d.py: "D = 4\\n"}}
"""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(path: Path, plan_yaml: str) -> Path:
    """A git repository at ``path`` whose first commit holds the plan of track ``t``."""
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    plan = path / "conductor" / "tracks" / "t" / "plan.md"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(render_plan(plan_yaml), encoding="utf-8")
    (path / ".gitignore").write_text(".message-bus/\nmetadata.json\n*.xml\n", encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "plan")
    return plan


def verdict(result: pytest.RunResult) -> dict[str, object]:
    return dict(json.loads(result.outlines[-1]))


def registered_worktrees(repo: Path) -> list[str]:
    out = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def properties(xml: Path) -> dict[str, dict[str, str]]:
    found = {}
    for case in ET.parse(xml).iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        found[props["task_id"]] = props
    return found


# --------------------------------------------------------------------------- the scope


@pytest.mark.parametrize(
    ("path", "declared", "inside"),
    [
        ("src/a.py", ["src/a.py"], True),
        ("src/a.py", ["./src/a.py"], True),
        ("src/pkg/x.py", ["src/pkg"], True),  # a folder holds what is below it
        ("src/pkg/x.py", ["src/pkg/"], True),
        ("src/pkg/x.py", ["src/*.py"], True),  # * crosses folders, as in `files` globs
        ("src/pkg/x.py", ["src/**/*.py"], True),
        ("src/x.py", ["src/**/*.py"], True),
        ("src/pkgx/a.py", ["src/pkg"], False),
        ("README.md", ["src/*"], False),
    ],
)
def test_in_scope(path: str, declared: list[str], inside: bool) -> None:
    assert in_scope(path, declared) is inside


def test_out_of_scope_ignores_python_byproducts_and_undeclared_nodes() -> None:
    paths = ["src/a.py", "README.md", "src/__pycache__/a.pyc", ".pytest_cache/v/x"]
    assert out_of_scope(paths, ["src/a.py"]) == ["README.md"]
    assert out_of_scope(paths, []) == []  # no `files`: no claim to check


_PATHS = st.lists(st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,2}\.py", fullmatch=True))


@given(_PATHS, _PATHS)
def test_exactly_the_undeclared_paths_are_out_of_scope(
    declared: list[str], other: list[str]
) -> None:
    # Another top folder: never inside a declared path, folder or glob of the first.
    undeclared = [f"zz/{p}" for p in other]
    found = out_of_scope(declared + undeclared, [*declared, "src/x.py"])
    assert found == sorted(set(undeclared))


# --------------------------------------------------------------------------- the git layer


def test_find_needs_a_repository_with_a_commit(tmp_path: Path) -> None:
    with pytest.raises(IsolationError, match="not inside a git work tree"):
        TrackRepo.find(tmp_path, "t")
    git(tmp_path, "init", "-q")
    with pytest.raises(IsolationError, match="no commit yet"):
        TrackRepo.find(tmp_path, "t")


def test_prepare_commit_integrate_and_a_conflict(tmp_path: Path) -> None:
    make_repo(tmp_path, 'dag: {nodes: [{id: "x"}]}')
    (tmp_path / "shared.txt").write_text("base\n")
    git(tmp_path, "add", "shared.txt")
    git(tmp_path, "commit", "-q", "-m", "shared")
    repo = TrackRepo.find(tmp_path, "t")
    one = repo.prepare("one", [], fresh=True)
    two = repo.prepare("two", [], fresh=True)
    assert one.root == tmp_path / ".conductor" / "worktrees" / "t" / "one"
    (one.root / "shared.txt").write_text("one\n")
    (two.root / "shared.txt").write_text("two\n")
    assert repo.commit_leftovers(one, "left by one") is not None
    assert repo.commit_leftovers(two, "left by two") is not None
    assert repo.commit_leftovers(two, "nothing left") is None
    assert repo.node_changes(one) == ["shared.txt"]
    merge = repo.integrate("one", "One")
    with pytest.raises(MergeConflict) as conflict:
        repo.integrate("two", "Two")
    assert conflict.value.paths == ("shared.txt",)
    assert repo.head() == merge  # the failed merge was undone
    assert repo.merged_sha("one") == merge and repo.merged_sha("two") is None
    assert repo.changed_files() == ["shared.txt"]
    assert git(tmp_path, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert not list((tmp_path / ".conductor" / "worktrees" / "t").glob(".merge-*"))
    assert git(tmp_path, "status", "--porcelain") == ""  # .conductor/ is ignored


def test_a_fresh_start_sets_the_earlier_work_aside_uncommitted_work_included(
    tmp_path: Path,
) -> None:
    make_repo(tmp_path, 'dag: {nodes: [{id: "x"}]}')
    repo = TrackRepo.find(tmp_path, "t")
    first = repo.prepare("n", [], fresh=True)
    (first.root / "half.txt").write_text("half done\n")  # never committed: Ctrl-C
    again = repo.prepare("n", [], fresh=True)
    assert not (again.root / "half.txt").exists()
    (kept,) = git(
        tmp_path, "branch", "--list", "--format=%(refname:short)", "conductor/t--n--*"
    ).splitlines()
    assert kept.startswith("conductor/t--n--")  # the earlier branch, renamed, not deleted
    assert git(tmp_path, "show", f"{kept}:half.txt") == "half done"
    assert any("uncommitted work is kept as" in note for note in again.notes)


# --------------------------------------------------------------------------- whole runs


def test_worktrees_outside_git_are_a_usage_error(pytester: pytest.Pytester) -> None:
    plan = pytester.path / "conductor" / "tracks" / "t" / "plan.md"
    plan.parent.mkdir(parents=True)
    plan.write_text(render_plan('dag: {nodes: [{id: "a"}]}'))
    result = pytester.runpytest("--conductor-track=t", WORKTREE, WORKER, "-n", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--conductor-isolation=worktree: * is not inside a git work tree*"]
    )


def test_a_verify_only_run_makes_no_branch(pytester: pytest.Pytester) -> None:
    make_repo(pytester.path, 'dag: {nodes: [{id: "a", acceptance: [{exists: "conductor"}]}]}')
    result = pytester.runpytest("--conductor-track=t", WORKTREE, "-n", "0")
    assert result.ret == 0
    result.stdout.no_fnmatch_line("*track branch*")
    assert git(pytester.path, "branch", "--list", "conductor/*") == ""


@pytest.mark.slow
def test_a_diamond_ends_on_the_track_branch(pytester: pytest.Pytester) -> None:
    repo = pytester.path
    make_repo(repo, DIAMOND)
    (repo / "local.txt").write_text("not committed\n")  # the user's own local change
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    result = pytester.runpytest(
        "--conductor-track=t", WORKTREE, WORKER, "-n", "2", "--junitxml=report.xml"
    )
    assert result.ret == 0, result.stdout.str()
    # Every node's work is on the track branch.
    tree = git(repo, "ls-tree", "-r", "--name-only", "conductor/t").splitlines()
    assert {"src/a.py", "src/b.py", "src/c.py", "src/d.py", "README.md"} <= set(tree)
    # Each dependent started from its dependencies' work.
    for dep, node in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]:
        git(repo, "merge-base", "--is-ancestor", f"conductor/t--{dep}", f"conductor/t--{node}")
    # The user's checkout is untouched: same commit, same branch, same local changes.
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == status
    assert not (repo / "src").exists()
    # No worktree is left for passed nodes.
    assert registered_worktrees(repo) == [str(repo)]
    track_head = git(repo, "rev-parse", "--short=7", "conductor/t")
    result.stdout.fnmatch_lines(
        [
            f"track branch: conductor/t at {track_head} (your checkout and branch are unchanged)",
            "scope: node c changed files outside its declared files: README.md",
        ]
    )
    found = verdict(result)
    assert found["verdict"] == "PASS" and found["files_changed"] == 5
    assert f"the work is on conductor/t at {track_head}" in str(found["summary"])
    # Reported per node: JUnit property, bus message; leftovers committed by the controller.
    props = properties(repo / "report.xml")
    assert props["c"]["scope_violation"] == "README.md"
    assert "scope_violation" not in props["b"]
    assert props["b"]["merge_sha"] == git(repo, "rev-parse", "conductor/t^{/merge node b}")
    assert "auto_commit" in props["b"] and "auto_commit" not in props["c"]
    log = git(repo, "log", "--format=%s", "conductor/t--b")
    assert "conductor: work the agent of node b (Left) left uncommitted" in log
    prompt = (repo / "conductor/tracks/t/.message-bus/prompts/d-1.md").read_text()
    assert "on the branch `conductor/t--d`" in prompt
    assert "with the work of its dependencies (b, c) merged in" in prompt
    assert f"- project root: `{repo / '.conductor/worktrees/t/d'}`" in prompt
    queue = repo / "conductor/tracks/t/.message-bus/queue.jsonl"
    scope = [
        m for m in map(json.loads, queue.read_text().splitlines()) if m["type"] == "SCOPE_VIOLATION"
    ]
    assert [(m["payload"]["task_id"], m["payload"]["paths"]) for m in scope] == [
        ("c", ["README.md"])
    ]


CONFLICT = """
dag:
  nodes:
    - id: "b"
      name: "Left"
      files: ["shared.py"]
      acceptance: [{exists: "shared.py"}]
      script: {write: {shared.py: "LEFT = 1\\n"}}
    - id: "c"
      name: "Right"
      files: ["shared.py"]
      acceptance: [{exists: "shared.py"}]
      script: {write: {shared.py: "RIGHT = 1\\n"}}
    - id: "d"
      name: "Join"
      depends_on: ["b", "c"]
      script: {}
"""


@pytest.mark.slow
def test_a_conflicting_pair_fails_the_second_and_keeps_its_worktree(
    pytester: pytest.Pytester,
) -> None:
    repo = pytester.path
    make_repo(repo, CONFLICT)
    result = pytester.runpytest("--conductor-track=t", WORKTREE, WORKER, "-n", "0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*merge into conductor/t conflicts: shared.py",
            "*the worktree is kept for you: *.conductor/worktrees/t/c",
        ]
    )
    kept = repo / ".conductor" / "worktrees" / "t" / "c"
    assert str(kept) in registered_worktrees(repo)
    assert (kept / "shared.py").read_text() == "RIGHT = 1\n"
    assert git(repo, "show", "conductor/t:shared.py") == "LEFT = 1"
    result.stdout.fnmatch_lines(["worktrees kept for inspection: c: *"])
    # The next run says what it found, and does not dispatch b again.
    again = pytester.runpytest("--conductor-track=t", WORKTREE, WORKER, "-n", "0", "-rA")
    again.stdout.fnmatch_lines(
        [
            "*merged by an earlier run as *; not dispatched",
            "earlier run: reusing conductor/t at * (base *); nodes merged by earlier runs, "
            "not dispatched again: b",
            "earlier run: worktree of node c kept by an earlier run: *",
        ]
    )


@pytest.mark.slow
def test_strict_scope_fails_the_node_and_blocks_its_dependents(pytester: pytest.Pytester) -> None:
    make_repo(pytester.path, DIAMOND)
    result = pytester.runpytest(
        "--conductor-track=t", WORKTREE, WORKER, "-n", "0", "--conductor-strict-scope"
    )
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*changed files outside its declared files (--conductor-strict-scope): README.md",
            "*declared: src/c*.py",
        ]
    )
    assert "README.md" not in git(pytester.path, "ls-tree", "-r", "--name-only", "conductor/t")


@pytest.mark.slow
def test_the_scope_check_without_worktrees(pytester: pytest.Pytester) -> None:
    make_repo(pytester.path, DIAMOND)
    result = pytester.runpytest("--conductor-track=t", WORKER, "-n", "0")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["scope: node c changed files outside its declared files: README.md"]
    )
    result.stdout.no_fnmatch_line("*track branch*")


SHARED_TREE = """
dag:
  nodes:
    - id: "x"
      name: "X"
      files: ["x.py"]
      script: {sleep: 1.5, write: {x.py: "X = 1\\n", stray.txt: "x\\n"}, complete: false}
    - id: "y"
      name: "Y"
      files: ["y.py"]
      script: {sleep: 1.5, write: {y.py: "Y = 1\\n"}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_without_worktrees_unreported_changes_count_only_when_the_agent_ran_alone(
    pytester: pytest.Pytester, workers: str
) -> None:
    make_repo(pytester.path, SHARED_TREE)
    result = pytester.runpytest("--conductor-track=t", WORKER, "-n", workers)
    assert result.ret == 0, result.stdout.str()
    # Never y: stray.txt appeared while y's agent ran, but y did not write it.
    result.stdout.no_fnmatch_line("scope: node y*")
    if workers == "0":  # x ran alone: the tree's changes are its own
        result.stdout.fnmatch_lines(["scope: node x changed files outside * stray.txt"])
    else:  # x and y ran at once: only what x reported counts, and it reported nothing
        result.stdout.no_fnmatch_line("scope: node x*")


CRASH = DIAMOND.replace(
    'script: {sleep: 0.5, write: {src/b.py: "B = 2\\n"}}',
    'script: {write: {src/b.py: "B = 2\\n"}, kill_self: SIGKILL}',
)


@pytest.mark.slow
def test_a_crashed_agent_keeps_its_work_and_a_second_run_resumes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = pytester.path
    plan = make_repo(repo, CRASH)
    result = pytester.runpytest("--conductor-track=t", WORKTREE, WORKER, "-n", "0")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*agent killed by signal SIGKILL*"])
    # Nothing the agent wrote before it died is lost: committed on its branch, kept.
    assert git(repo, "show", "conductor/t--b:src/b.py") == "B = 2"
    assert str(repo / ".conductor/worktrees/t/b") in registered_worktrees(repo)
    # Fixed (in the user's checkout, where the run reads the plan): only b and d run now.
    plan.write_text(render_plan(DIAMOND), encoding="utf-8")
    record = repo / "record"
    record.mkdir()
    monkeypatch.setenv("SCRIPTED_AGENT_RECORD", str(record))
    again = pytester.runpytest("--conductor-track=t", WORKTREE, WORKER, "-n", "0")
    assert again.ret == 0, again.stdout.str()
    again.stdout.fnmatch_lines(["earlier run: worktree of node b kept by an earlier run: *"])
    started = sorted(
        json.loads(line)["task"]
        for f in record.iterdir()
        for line in f.read_text().splitlines()
        if json.loads(line)["event"] == "start"
    )
    assert started == ["b", "d"]
    assert registered_worktrees(repo) == [str(repo)]
    assert git(repo, "show", "conductor/t:src/d.py") == "D = 4"
    # The branch of the crashed attempt is kept under another name.
    assert "conductor/t--b--" in git(repo, "branch", "--list", "conductor/t--b--*")


SLOW_MERGE = """
dag:
  nodes:
    - id: "b"
      name: "Left"
      script: {write: {merge.txt: "left\\n2\\n3\\n4\\n5\\n"}}
    - id: "c"
      name: "Right"
      script: {write: {merge.txt: "1\\n2\\n3\\n4\\nright\\n"}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_during_a_merge_leaves_git_consistent(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT to the process group) or SIGTERM (to pytest) while git merges into
    the track branch: git finishes, the scratch worktree goes, no index.lock stays, and
    the next run completes the track."""
    make_repo(tmp_path, SLOW_MERGE)
    (tmp_path / "merge.txt").write_text("1\n2\n3\n4\n5\n")
    marker = tmp_path / "merging"
    # A merge driver that takes its time (and says when it started): both nodes change
    # merge.txt, so the second merge into the track branch runs it.
    driver = f"touch {shlex.quote(str(marker))}; sleep 3; git merge-file %A %O %B"
    git(tmp_path, "config", "merge.slow.driver", driver)
    (tmp_path / ".gitattributes").write_text("merge.txt merge=slow\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "slow merges")
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0"]
    args += ["--conductor-track=t", WORKTREE, WORKER]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the merge driver never ran"
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # as the terminal does
    else:
        os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out.decode()
    git_dir = tmp_path / ".git"
    assert not list(git_dir.rglob("*.lock")), "a lock file was left behind"
    assert not [w for w in registered_worktrees(tmp_path) if ".merge-" in w]
    git(tmp_path, "fsck", "--no-progress")
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout
    assert git(tmp_path, "show", "conductor/t:merge.txt") == "left\n2\n3\n4\nright"


@pytest.mark.slow
def test_the_worktree_example(pytester: pytest.Pytester, example: Callable[[str], Path]) -> None:
    """examples/worktree as its README runs it: copied into a repository of its own."""
    repo = example("worktree")
    shutil.copy(AGENT, repo / "scripted_agent.py")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")  # the agent of 2.1 commits
    git(repo, "config", "user.name", "Dev")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "plan")
    worker = f"--conductor-worker={shlex.quote(sys.executable)} scripted_agent.py {{prompt_file}}"
    result = pytester.runpytest("--conductor-track=worktree", worker)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "track branch: conductor/worktree at *",
            "scope: node 2.2 changed files outside its declared files: README.md",
        ]
    )
    assert registered_worktrees(repo) == [str(repo)]
    assert "app/together.py" in git(repo, "ls-tree", "-r", "--name-only", "conductor/worktree")
    again = pytester.runpytest("--conductor-track=worktree", worker)
    assert again.ret == 0
    again.stdout.fnmatch_lines(["*not dispatched again: 1.1, 2.1, 2.2, 3.1"])
