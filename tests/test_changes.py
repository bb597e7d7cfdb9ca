"""files_changed is measured in the work tree (git), not taken from what the plan declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_conductor.report.changes import (
    HeadWatch,
    changed_files,
    git_toplevel,
    head_sha,
    reported_files,
    take_snapshot,
)
from tests.conftest import git, needs_git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "clean.txt").write_text("clean\n")
    (root / "dirty.txt").write_text("v1\n")
    (root / "keep.txt").write_text("v1\n")
    (root / ".gitignore").write_text("ignored/\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "start")
    return root


@needs_git
def test_outside_a_repository_there_is_no_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    # Even if the temporary folder lies inside some repository, look no higher.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_toplevel(plain) is None
    assert take_snapshot(plain) is None
    assert head_sha(plain) is None


@needs_git
def test_nothing_changed(repo: Path) -> None:
    snap = take_snapshot(repo)
    assert snap is not None
    assert snap.toplevel == repo.resolve()
    assert changed_files(snap) == []


@needs_git
def test_edits_new_files_and_deletions_count(repo: Path) -> None:
    snap = take_snapshot(repo)
    assert snap is not None
    (repo / "clean.txt").write_text("changed\n")
    (repo / "new.txt").write_text("new\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "deep.txt").write_text("x")
    (repo / "keep.txt").unlink()
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x.txt").write_text("ignored by .gitignore")
    assert changed_files(snap) == ["clean.txt", "keep.txt", "new.txt", "sub/deep.txt"]


@needs_git
def test_files_dirty_before_the_run_count_only_if_they_change(repo: Path) -> None:
    (repo / "dirty.txt").write_text("v2, edited before the run\n")
    (repo / "untouched-untracked.txt").write_text("was here before\n")
    (repo / "edited-untracked.txt").write_text("before\n")
    snap = take_snapshot(repo)
    assert snap is not None
    assert changed_files(snap) == []
    (repo / "edited-untracked.txt").write_text("after\n")
    assert changed_files(snap) == ["edited-untracked.txt"]
    (repo / "dirty.txt").write_text("v1\n")  # reverted to HEAD: still a change of this run
    assert changed_files(snap) == ["dirty.txt", "edited-untracked.txt"]


@needs_git
def test_commits_made_during_the_run_count(repo: Path) -> None:
    snap = take_snapshot(repo)
    assert snap is not None
    start = head_sha(repo)
    (repo / "clean.txt").write_text("committed by an agent\n")
    (repo / "added.txt").write_text("new and committed\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "agent work")
    assert head_sha(repo) != start
    assert changed_files(snap) == ["added.txt", "clean.txt"]


@needs_git
def test_head_watch_follows_commits_checkouts_packing_and_worktrees(repo: Path) -> None:
    watch = HeadWatch(repo)
    first = watch.sha()
    assert first == head_sha(repo)
    assert watch.sha() == first  # unchanged files: the cached answer
    for step in range(3):  # commits in quick succession (same mtime tick at times)
        (repo / "clean.txt").write_text(f"commit {step}\n")
        git(repo, "commit", "-qam", f"step {step}")
        assert watch.sha() == head_sha(repo)
    git(repo, "pack-refs", "--all")
    assert watch.sha() == head_sha(repo)
    git(repo, "checkout", "-q", "--detach", "HEAD~2")
    assert watch.sha() == head_sha(repo)
    git(repo, "checkout", "-q", "-")
    assert watch.sha() == head_sha(repo)
    other = repo.parent / "other"
    git(repo, "worktree", "add", "-q", "-b", "side", str(other))
    side = HeadWatch(other)
    assert side.sha() == head_sha(other)
    (other / "clean.txt").write_text("on the side\n")
    git(other, "commit", "-qam", "side")
    assert side.sha() == head_sha(other) != watch.sha()
    assert HeadWatch(repo.parent).sha() is None  # not a repository


@needs_git
def test_bus_folder_pytest_cache_and_excluded_paths_do_not_count(repo: Path) -> None:
    bus = repo / "conductor" / "tracks" / "t" / ".message-bus"
    snap = take_snapshot(repo, [bus])
    assert snap is not None
    bus.mkdir(parents=True)
    (bus / "queue.jsonl").write_text("{}\n")
    (repo / ".pytest_cache" / "v").mkdir(parents=True)
    (repo / ".pytest_cache" / "v" / "x").write_text("1")
    (repo / "report.xml").write_text("<x/>")
    (repo / "real.txt").write_text("work")
    assert changed_files(snap, [bus, repo / "report.xml"]) == ["real.txt"]


@needs_git
def test_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q")
    (root / "before.txt").write_text("x")
    snap = take_snapshot(root)
    assert snap is not None
    assert snap.head is None
    (root / "after.txt").write_text("y")
    assert changed_files(snap) == ["after.txt"]


@needs_git
def test_paths_with_spaces_and_unicode(repo: Path) -> None:
    snap = take_snapshot(repo)
    assert snap is not None
    (repo / "a file ü.txt").write_text("x")
    assert changed_files(snap) == ["a file ü.txt"]


@needs_git
def test_head_sha_short_and_long(repo: Path) -> None:
    full = git(repo, "rev-parse", "HEAD").strip()
    assert head_sha(repo, short=False) == full
    short = head_sha(repo)
    assert short is not None and full.startswith(short) and len(short) < len(full)


def test_reported_files_take_only_workers_task_complete() -> None:
    messages: list[dict[str, Any]] = [
        {
            "type": "TASK_COMPLETE",
            "source": "worker-1.1-1",
            "payload": {"files_modified": ["a", "b"]},
        },
        {
            "type": "TASK_COMPLETE",
            "source": "worker-1.2-2",
            "payload": {"files_modified": ["b", "c"]},
        },
        {
            "type": "TASK_COMPLETE",
            "source": "controller",
            "payload": {"files_modified": ["declared"]},
        },
        {"type": "PROGRESS", "source": "worker-1.1-1", "payload": {"files_modified": ["p"]}},
        {
            "type": "TASK_COMPLETE",
            "source": "worker-x",
            "payload": {"files_modified": "not-a-list"},
        },
        {"type": "TASK_COMPLETE", "source": "worker-y", "payload": None},
    ]
    assert reported_files(messages, ignore_source="controller") == ["a", "b", "c"]
