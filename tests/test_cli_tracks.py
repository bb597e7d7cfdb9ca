"""``conductor-bus tracks``: the tracks of a project, and those a change touched, in a real
git repository, through the real command (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_conductor.cli.main import main
from pytest_conductor.cli.tracks import TrackInfo, touched_tracks
from tests.conftest import git, needs_git, render_plan


def conductor_bus(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_conductor.cli", "tracks", *args],
        cwd=root,
        env={**env, "HOME": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def listed(root: Path, *args: str) -> list[str]:
    done = conductor_bus(root, "--ids", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def dag(*nodes: tuple[str, list[str]]) -> str:
    lines = ["dag:", "  nodes:"]
    for node_id, files in nodes:
        lines += [f'    - id: "{node_id}"', f"      files: {json.dumps(files)}"]
        lines.append('      acceptance: [{exists: "README.md"}]')
    return render_plan("\n".join(lines))


def add_track(root: Path, track: str, plan: str) -> Path:
    folder = root / "conductor" / "tracks" / track
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.md").write_text(plan, encoding="utf-8")
    return folder


def write(root: Path, rel: str, text: str = "x\n") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


CHECKLIST = "# Plan\n\n## Phase 1: Setup\n\n- [ ] Task: Write tests\n- [x] Task: Scaffold abc1234\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Four tracks: ``api`` names a file, ``store`` a folder, ``docs`` a glob, ``notes``
    is a checklist plan that names none."""
    root = tmp_path / "project"
    add_track(root, "api", dag(("1.1", ["src/api.py"]), ("1.2", ["./src/routes.py"])))
    add_track(root, "store", dag(("1.1", ["src/store/"])))
    add_track(root, "docs", dag(("1.1", ["docs/*.md"])))
    add_track(root, "notes", CHECKLIST)
    for rel in ("README.md", "src/api.py", "src/routes.py", "src/store/db.py", "docs/a.md"):
        write(root, rel)
    return root


@pytest.fixture
def repo(project: Path) -> Path:
    git(project, "init", "-q")
    write(project, ".gitignore", "build/\n")
    git(project, "add", ".")
    git(project, "commit", "-qm", "base")
    git(project, "tag", "base")
    return project


def test_lists_every_track_with_shape_nodes_and_last_verdict(project: Path) -> None:
    (project / "conductor" / "tracks" / "empty").mkdir()  # no plan.md: not a track
    bus = project / "conductor" / "tracks" / "api" / ".message-bus"
    bus.mkdir()
    (bus / "verdict.json").write_text('{"verdict": "FAIL", "summary": "s", "files_changed": 0}')
    done = conductor_bus(project)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TRACK", "SHAPE", "NODES", "LAST", "VERDICT", "PROBLEM"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["api", "dag", "2", "FAIL"],
        ["docs", "dag", "1", "-"],
        ["notes", "checklist", "-", "-"],
        ["store", "dag", "1", "-"],
    ]
    data = json.loads(conductor_bus(project, "--json").stdout)
    assert data[0] == {"id": "api", "shape": "dag", "nodes": 2, "verdict": "FAIL", "problem": None}
    assert data[2]["id"] == "notes" and data[2]["nodes"] is None
    assert data[2]["problem"].startswith("no DAG block")


def test_json_is_one_line_for_github_outputs(project: Path) -> None:
    done = conductor_bus(project, "--json")
    assert done.stdout.count("\n") == 1
    assert [t["id"] for t in json.loads(done.stdout)] == ["api", "docs", "notes", "store"]


def test_root_flag_and_no_tracks(tmp_path: Path, project: Path) -> None:
    assert listed(tmp_path, "--root", str(project)) == ["api", "docs", "notes", "store"]
    done = conductor_bus(tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"no track in {tmp_path.resolve() / 'conductor' / 'tracks'}"
    assert conductor_bus(tmp_path, "--json").stdout.strip() == "[]"


def test_broken_plan_is_listed_with_its_problem(project: Path) -> None:
    add_track(project, "broken", "```yaml\ndag:\n  nodes: [\n```\n")
    entry = json.loads(conductor_bus(project, "--json").stdout)[1]
    assert entry["id"] == "broken" and entry["shape"] == "dag" and entry["nodes"] is None
    assert "invalid YAML" in entry["problem"]


@needs_git
def test_nothing_changed_lists_nothing(repo: Path) -> None:
    assert listed(repo, "--changed-since", "HEAD") == []
    assert conductor_bus(repo, "--changed-since", "HEAD").stdout.strip() == "no track changed"


@needs_git
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (["src/api.py"], ["api"]),
        (["src/routes.py"], ["api"]),  # named as ./src/routes.py
        (["src/store/db.py"], ["store"]),  # a file in the folder a node names
        (["src/store/new.py"], ["store"]),  # untracked, still a change
        (["docs/b.md"], ["docs"]),  # matched by the glob docs/*.md
        (["docs/sub/c.txt"], []),
        (["conductor/tracks/notes/plan.md"], ["notes"]),  # the plan itself
        (["conductor/tracks/notes/spec.md"], ["notes"]),  # anything in the folder
        (["README.md", "build/out.txt"], []),  # named by no node; build/ is ignored
        (["src/api.py", "docs/a.md"], ["api", "docs"]),
    ],
)
def test_changed_since_picks_the_tracks_a_change_touched(
    repo: Path, changes: list[str], expected: list[str]
) -> None:
    for rel in changes:
        write(repo, rel, "changed\n")
    assert listed(repo, "--changed-since", "base") == expected


@needs_git
def test_the_plugins_own_output_is_not_a_change(repo: Path) -> None:
    folder = repo / "conductor" / "tracks" / "api"
    write(repo, "conductor/tracks/api/.message-bus/verdict.json", '{"verdict": "PASS"}')
    write(repo, "conductor/tracks/api/metadata.json", "{}")
    git(repo, "add", "-f", ".")
    git(repo, "commit", "-qm", "a run's output, committed")
    assert listed(repo, "--changed-since", "base") == []
    (folder / "spec.md").write_text("new")
    assert listed(repo, "--changed-since", "base") == ["api"]


@needs_git
def test_committed_changes_and_a_merge_base_range(repo: Path) -> None:
    git(repo, "checkout", "-qb", "feature")
    write(repo, "src/store/db.py", "changed\n")
    git(repo, "commit", "-qam", "store work")
    git(repo, "checkout", "-q", "-")
    git(repo, "checkout", "-qb", "other")
    write(repo, "src/api.py", "changed\n")
    git(repo, "commit", "-qam", "api work on another branch")
    git(repo, "checkout", "-q", "feature")
    # The feature branch against the other branch: only what the feature did.
    assert listed(repo, "--changed-since", "other...HEAD") == ["store"]
    # Against the other branch's tip itself the api change shows too (it is undone here).
    assert listed(repo, "--changed-since", "other") == ["api", "store"]
    assert listed(repo, "--changed-since", "HEAD~1") == ["store"]


@needs_git
def test_a_track_added_since_rev_is_listed(repo: Path) -> None:
    add_track(repo, "fresh", dag(("1.1", [])))
    assert listed(repo, "--changed-since", "base") == ["fresh"]
    data = json.loads(conductor_bus(repo, "--json", "--changed-since", "base").stdout)
    assert data == [{"id": "fresh", "shape": "dag", "nodes": 1, "verdict": None, "problem": None}]


@needs_git
def test_project_below_the_repository_top(tmp_path: Path, project: Path) -> None:
    top = project.parent
    git(top, "init", "-q")
    write(top, "outside/src/api.py")  # same relative path, outside the project: no match
    git(top, "add", ".")
    git(top, "commit", "-qm", "base")
    write(top, "outside/src/api.py", "changed\n")
    assert listed(project, "--changed-since", "HEAD") == []
    write(project, "src/api.py", "changed\n")
    assert listed(project, "--changed-since", "HEAD") == ["api"]


@needs_git
@pytest.mark.parametrize(
    ("rev", "message"),
    [
        ("no-such-rev", "git diff failed: "),
        ("--output=/tmp/x", "--changed-since='--output=/tmp/x': expected a git revision"),
    ],
)
def test_bad_revision_is_one_line_and_exit_2(repo: Path, rev: str, message: str) -> None:
    done = conductor_bus(repo, f"--changed-since={rev}")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"conductor-bus tracks: error: {message}")
    assert done.stderr.count("\n") == 1


@needs_git
def test_not_a_git_repository_is_a_usage_error(project: Path) -> None:
    env_ceiling = {"GIT_CEILING_DIRECTORIES": str(project.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_conductor.cli", "tracks", "--changed-since", "HEAD"],
        cwd=project,
        env={**os.environ, **env_ceiling},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("conductor-bus tracks: error: git diff failed: ")
    assert "Traceback" not in done.stderr


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tracks", "--help"]) == 0
    out = capsys.readouterr().out
    assert "conductor-bus tracks --json --changed-since" in out


def test_json_and_ids_exclude_each_other(project: Path) -> None:
    done = conductor_bus(project, "--json", "--ids")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr


# -- the matching rule, on plain data --------------------------------------------------------


def _info(track: str, *files: str) -> TrackInfo:
    return TrackInfo(track, "dag", 1, None, None, files)


def test_touched_tracks_rule() -> None:
    tracks = [_info("a", "src/a.py"), _info("b", "lib/"), _info("c", "docs/**/*.md", "")]
    assert touched_tracks(tracks, []) == []
    assert [t.id for t in touched_tracks(tracks, ["src/a.py"])] == ["a"]
    assert [t.id for t in touched_tracks(tracks, ["src/a.py.bak", "src/a"])] == []
    assert [t.id for t in touched_tracks(tracks, ["lib/x/y.py"])] == ["b"]
    assert [t.id for t in touched_tracks(tracks, ["library/y.py"])] == []
    assert [t.id for t in touched_tracks(tracks, ["docs/x/y.md"])] == ["c"]
    assert [t.id for t in touched_tracks(tracks, ["conductor/tracks/c/notes.txt"])] == ["c"]
    own = ["conductor/tracks/a/.message-bus/queue.jsonl", "conductor/tracks/b/metadata.json"]
    assert touched_tracks(tracks, own) == []
    # A track id that prefixes another's is not the other's folder.
    assert touched_tracks([_info("a")], ["conductor/tracks/ab/plan.md"]) == []


@given(st.lists(st.text("abc/._", min_size=1, max_size=12), min_size=1, max_size=4))
def test_a_node_file_always_touches_its_track(paths: list[str]) -> None:
    clean = [p for p in paths if p.strip("/") and ".." not in p]
    track = _info("t", *clean)
    for path in clean:
        normal = PurePosixPath(path.strip("/")).as_posix()
        if normal in (".", ""):
            continue
        assert touched_tracks([track], [normal]) == [track], (path, normal)
