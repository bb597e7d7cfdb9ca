"""Git worktrees for dispatched nodes and the track branch they are merged into.

Pure Python: no pytest import. The picture (docs/dispatch.md draws it)::

    base (HEAD when the track branch was made)
     ├── conductor/<track>--<id>   one branch per node, in .conductor/worktrees/<track>/<id>,
     │                             made from the base with its direct dependencies'
     │                             branches merged in
     └── conductor/<track>         the track branch: each passed node's branch merged in
                                   (``--no-ff``), in dependency order, as nodes pass

Why ``--`` and not ``conductor/<track>/<id>``: git keeps branches as files under
``refs/heads``, so a branch ``conductor/<track>`` cannot coexist with branches below
``conductor/<track>/``.

The user's checkout and branch are never changed: merges into the track branch happen in
a temporary worktree of that branch, under a file lock (xdist workers merge from several
processes; git's own ``index.lock`` fails a second writer instead of queueing it). Every
change to the set of worktrees and branches takes the same lock, because git refuses
rather than waits when two processes update refs at once.

``track.json`` beside the worktrees records the base and each node's merge commit; a
second run reads it and does not dispatch the nodes already merged.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from pytest_conductor.isolation.scope import IGNORED_PARTS
from pytest_conductor.util.atomic import atomic_write
from pytest_conductor.util.git import (
    GitError,
    git,
    git_ok,
    run_git,
)
from pytest_conductor.util.signals import termination_as_interrupt

__all__ = [
    "WORKTREES_DIR",
    "IsolationError",
    "KeptWorktree",
    "MergeConflict",
    "NodeWorktree",
    "TrackRepo",
    "TrackState",
]

#: Folder (below the repository's top) that holds every worktree; ignored by git.
WORKTREES_DIR = Path(".conductor") / "worktrees"
_LOCK_TIMEOUT = 600.0
_MERGE_PREFIX = ".merge-"
# Commits the controller makes carry this identity when the repository has none set.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "pytest-conductor",
    "GIT_AUTHOR_EMAIL": "pytest-conductor@localhost",
    "GIT_COMMITTER_NAME": "pytest-conductor",
    "GIT_COMMITTER_EMAIL": "pytest-conductor@localhost",
}
# Hooks and signing are the author's tools for their own commits, not for these: a
# pre-commit hook that fails or a key that asks for a passphrase would hang the run.
# No automatic gc either: it can go on in the background after git returns, holding
# locks while the next merge starts.
_COMMIT_CONFIG = (
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "gc.auto=0",
)


class IsolationError(RuntimeError):
    """Something about the repository that keeps a node from its worktree, or a run from
    its track branch; the message says what and what to do."""


class MergeConflict(IsolationError):
    """A merge that stopped on conflicts; ``paths`` are the conflicting files."""

    def __init__(self, message: str, paths: Sequence[str]) -> None:
        super().__init__(message)
        self.paths = tuple(paths)


@dataclass
class TrackState:
    """``track.json``: the base commit and each merged node's merge commit."""

    base: str
    merged: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> bytes:
        return (json.dumps({"base": self.base, "merged": self.merged}, indent=2) + "\n").encode()


@dataclass(frozen=True)
class NodeWorktree:
    """A node's worktree: ``root`` is the project root inside it, ``start`` the commit the
    agent started from (the base with the dependencies merged in)."""

    task_id: str
    path: Path
    root: Path
    branch: str
    start: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeptWorktree:
    task_id: str
    path: Path
    branch: str
    head: str


def _short(sha: str) -> str:
    return sha[:7]


@dataclass(frozen=True)
class TrackRepo:
    """The repository holding the project ``root``, seen from one ``track``."""

    toplevel: Path
    root: Path
    track: str

    # -- finding and naming --------------------------------------------------------------

    @classmethod
    def find(cls, root: Path, track: str) -> TrackRepo:
        """The repository of ``root``; IsolationError when there is none (or no commit)."""
        done = run_git(root, "rev-parse", "--show-toplevel")
        if not done.ok or not done.stdout.strip():
            raise IsolationError(f"{root} is not inside a git work tree")
        toplevel = Path(done.stdout.strip()).resolve()
        if not git_ok(toplevel, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"):
            raise IsolationError(f"the repository {toplevel} has no commit yet to start from")
        repo = cls(toplevel, root.resolve(), track)
        for name in (repo.branch, repo.node_branch("x")):
            if not git_ok(toplevel, "check-ref-format", "--branch", name):
                raise IsolationError(f"track id {track!r} cannot be part of a branch name")
        return repo

    @property
    def branch(self) -> str:
        return f"conductor/{self.track}"

    def node_branch(self, task_id: str) -> str:
        return f"conductor/{self.track}--{task_id}"

    @property
    def folder(self) -> Path:
        return self.toplevel / WORKTREES_DIR / self.track

    def worktree_path(self, task_id: str) -> Path:
        return self.folder / task_id

    def root_in(self, worktree: Path) -> Path:
        """The project root inside a worktree (it may lie below the repository's top)."""
        return worktree / self.root.relative_to(self.toplevel)

    def _relative(self, path_from_top: str) -> str:
        """A path from the repository's top, made relative to the project root."""
        prefix = self.root.relative_to(self.toplevel).as_posix()
        if prefix in ("", "."):
            return path_from_top
        if path_from_top.startswith(prefix + "/"):
            return path_from_top[len(prefix) + 1 :]
        return "/" + path_from_top  # outside the project root: shown from the top

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        ignore = self.toplevel / ".conductor" / ".gitignore"
        if not ignore.exists():
            # Everything below .conductor/ is the run's: never the user's untracked files.
            atomic_write(ignore, b"# pytest-conductor's worktrees; never committed\n*\n")
        with FileLock(str(self.folder / ".lock"), timeout=_LOCK_TIMEOUT):
            yield

    # -- the track branch ----------------------------------------------------------------

    def _state_file(self) -> Path:
        return self.folder / "track.json"

    def read_state(self) -> TrackState | None:
        try:
            data = json.loads(self._state_file().read_text(encoding="utf-8"))
            merged = data.get("merged") or {}
            return TrackState(str(data["base"]), {str(k): str(v) for k, v in merged.items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _write_state(self, state: TrackState) -> None:
        atomic_write(self._state_file(), state.as_json())

    def _branch_exists(self, name: str) -> bool:
        return git_ok(self.toplevel, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}")

    def ensure_track(self) -> tuple[TrackState, bool]:
        """The track branch, made at HEAD when missing; returns its state and whether an
        earlier run's branch was found (and is reused)."""
        with self.locked():
            return self._ensure_track()

    def _ensure_track(self) -> tuple[TrackState, bool]:
        state = self.read_state()
        if self._branch_exists(self.branch):
            head = git(self.toplevel, "rev-parse", f"refs/heads/{self.branch}")
            if state is None or not git_ok(
                self.toplevel, "merge-base", "--is-ancestor", state.base, head
            ):
                base = git(self.toplevel, "merge-base", "HEAD", head)
                state = TrackState(base)
            # A merge recorded on a branch that was reset since no longer counts.
            state.merged = {
                t: sha
                for t, sha in state.merged.items()
                if git_ok(self.toplevel, "merge-base", "--is-ancestor", sha, head)
            }
            self._write_state(state)
            return state, True
        base = git(self.toplevel, "rev-parse", "HEAD")
        git(self.toplevel, "branch", self.branch, base)
        state = TrackState(base)
        self._write_state(state)
        return state, False

    def head(self) -> str | None:
        done = run_git(
            self.toplevel, "rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}"
        )
        return done.stdout.strip() if done.ok else None

    def merged_sha(self, task_id: str) -> str | None:
        """The merge commit of ``task_id`` when it is (still) in the track branch."""
        state = self.read_state()
        head = self.head()
        if state is None or head is None or task_id not in state.merged:
            return None
        sha = state.merged[task_id]
        return sha if git_ok(self.toplevel, "merge-base", "--is-ancestor", sha, head) else None

    def changed_files(self) -> list[str] | None:
        """Files the track branch changes against its base (project-root relative)."""
        state, head = self.read_state(), self.head()
        if state is None or head is None:
            return None
        out = git(self.toplevel, "diff", "--name-only", "-z", "--no-renames", state.base, head)
        return sorted(self._relative(p) for p in out.split("\0") if p)

    # -- a node's worktree -----------------------------------------------------------------

    def prepare(self, task_id: str, depends_on: Sequence[str], *, fresh: bool) -> NodeWorktree:
        """The node's worktree, ready for its agent.

        ``fresh`` (a first attempt): a worktree or branch an earlier run left for the node
        is set aside (the branch renamed, nothing deleted) and a new one made from the
        base with the direct dependencies' branches merged in. Otherwise (a retry) the
        worktree is reused as the last attempt left it.
        """
        path = self.worktree_path(task_id)
        branch = self.node_branch(task_id)
        start_file = self.folder / f"{task_id}.start"
        notes: list[str] = []
        with self.locked():
            state, _ = self._ensure_track()
            registered = path.resolve() in self._registered()
            if not fresh and registered and start_file.is_file():
                start = start_file.read_text(encoding="utf-8").strip()
                return NodeWorktree(task_id, path, self.root_in(path), branch, start)
            if registered:
                # An agent interrupted (Ctrl-C) before its leftovers were committed: keep
                # its work on the branch that is set aside below.
                with contextlib.suppress(GitError, OSError):
                    left = NodeWorktree(task_id, path, self.root_in(path), branch, "")
                    sha = self.commit_leftovers(
                        left, f"conductor: work an earlier run left uncommitted (node {task_id})"
                    )
                    if sha is not None:
                        notes.append(f"the earlier run's uncommitted work is kept as {sha[:7]}")
            if registered or path.exists():
                self._remove(path)
            if self._branch_exists(branch):
                old = f"{branch}--{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                git(self.toplevel, "branch", "-m", branch, old)
                notes.append(f"the branch an earlier run left is kept as {old}")
            git(self.toplevel, "worktree", "add", "--quiet", "-b", branch, str(path), state.base)
        for dep in depends_on:
            dep_branch = self.node_branch(dep)
            if not self._branch_exists(dep_branch):
                notes.append(f"dependency {dep} has no branch (it ran without an agent)")
                continue
            self._merge(
                path, dep_branch, f"conductor: node {task_id} starts from node {dep}", ff=True
            )
        start = git(path, "rev-parse", "HEAD")
        atomic_write(start_file, f"{start}\n".encode())
        return NodeWorktree(task_id, path, self.root_in(path), branch, start, tuple(notes))

    def commit_leftovers(self, worktree: NodeWorktree, message: str) -> str | None:
        """Commit what the agent left uncommitted; the new commit's SHA, or None."""
        excludes = [f":(exclude,glob)**/{part}/**" for part in sorted(IGNORED_PARTS)]
        git(worktree.path, "add", "--all", "--", ".", *excludes)
        if git_ok(worktree.path, "diff", "--cached", "--quiet"):
            return None
        git(
            worktree.path,
            *_COMMIT_CONFIG,
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            message,
            env=self._identity(),
        )
        return git(worktree.path, "rev-parse", "HEAD")

    def node_changes(self, worktree: NodeWorktree) -> list[str]:
        """Files the node's own commits change (its dependencies' work left out)."""
        out = git(
            worktree.path, "diff", "--name-only", "-z", "--no-renames", worktree.start, "HEAD"
        )
        return sorted(self._relative(p) for p in out.split("\0") if p)

    # -- integration -----------------------------------------------------------------------

    def integrate(self, task_id: str, name: str) -> str:
        """Merge the node's branch into the track branch; the merge commit's SHA.

        Raises MergeConflict (the merge undone, the track branch as it was) naming the
        conflicting paths.
        """
        with termination_as_interrupt(), self.locked():
            state, _ = self._ensure_track()
            # Under the lock, any scratch worktree is one a dead process left (an xdist
            # worker killed mid-merge): it still holds the branch, so it goes first.
            for stale in self.folder.glob(f"{_MERGE_PREFIX}*"):
                self._remove(stale)
            tmp = self.folder / f"{_MERGE_PREFIX}{os.getpid()}"
            git(self.toplevel, "worktree", "add", "--quiet", str(tmp), self.branch)
            try:
                self._merge(
                    tmp, self.node_branch(task_id), f"conductor: merge node {task_id} ({name})"
                )
                sha = git(tmp, "rev-parse", "HEAD")
            finally:
                self._remove(tmp)
            state.merged[task_id] = sha
            self._write_state(state)
            return sha

    def _merge(self, where: Path, branch: str, message: str, *, ff: bool = False) -> None:
        # Into the track branch always a merge commit (one per node: its merge SHA); a
        # node's start from a single dependency may fast-forward.
        done = run_git(
            where,
            *_COMMIT_CONFIG,
            "merge",
            "--ff" if ff else "--no-ff",
            "--no-edit",
            "-m",
            message,
            branch,
            env=self._identity(),
        )
        if done.ok:
            return
        conflicts = run_git(where, "diff", "--name-only", "-z", "--diff-filter=U").stdout
        paths = sorted(self._relative(p) for p in conflicts.split("\0") if p)
        run_git(where, "merge", "--abort")
        if paths:
            raise MergeConflict(f"merging {branch} conflicts in " + ", ".join(paths), paths)
        raise GitError(("merge", branch), done.code, done.stderr or done.stdout)

    def _identity(self) -> dict[str, str]:
        if run_git(self.toplevel, "config", "user.email").stdout.strip():
            return {}
        return dict(_IDENTITY)

    # -- clean-up and what an earlier run left ----------------------------------------------

    def _registered(self) -> set[Path]:
        out = run_git(self.toplevel, "worktree", "list", "--porcelain").stdout
        return {
            Path(line[len("worktree ") :]).resolve()
            for line in out.splitlines()
            if line.startswith("worktree ")
        }

    def _remove(self, path: Path) -> None:
        # Ours alone (the work is committed on its branch, or it is a merge's scratch
        # copy): what is left in it is by-products, hence --force.
        run_git(self.toplevel, "worktree", "remove", "--force", "--force", str(path))
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        run_git(self.toplevel, "worktree", "prune")

    def kept(self) -> list[KeptWorktree]:
        """The node worktrees present now (an earlier run's failed nodes, at the start)."""
        if not self.folder.is_dir():
            return []
        registered = self._registered()
        found = []
        for path in sorted(self.folder.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            if path.resolve() not in registered:
                continue
            head = run_git(path, "rev-parse", "HEAD").stdout.strip()
            found.append(KeptWorktree(path.name, path, self.node_branch(path.name), head))
        return found

    def clean_stale(self) -> list[str]:
        """Remove what an interrupted run left half-done: merge scratch worktrees,
        worktrees registered but gone; returns what was removed."""
        removed: list[str] = []
        if not self.folder.is_dir():
            return removed
        with self.locked():
            for path in sorted(self.folder.glob(f"{_MERGE_PREFIX}*")):
                self._remove(path)
                removed.append(path.name)
            run_git(self.toplevel, "worktree", "prune")
        return removed

    def remove_worktrees(self, task_ids: Sequence[str]) -> list[str]:
        """Remove the worktrees of ``task_ids`` (their branches stay); the ids removed."""
        removed = []
        with self.locked():
            registered = self._registered()
            for task_id in task_ids:
                path = self.worktree_path(task_id)
                if path.resolve() in registered or path.exists():
                    self._remove(path)
                    with contextlib.suppress(OSError):
                        (self.folder / f"{task_id}.start").unlink()
                    removed.append(task_id)
            run_git(self.toplevel, "worktree", "prune")
        return removed

    def describe_head(self) -> str:
        head = self.head()
        return f"{self.branch} at {_short(head)}" if head else self.branch
