"""Which files changed in the work tree during a run: measured, never taken from the plan.

With git (the project root lies inside a work tree), :func:`take_snapshot` records at the
start of the run the ``HEAD`` commit and a content hash of every file that is already
dirty or untracked; :func:`changed_files` then compares the end state with it:

* ``git diff --name-only <start HEAD>`` (tracked files, commits made during the run
  included) united with the untracked files now present,
* plus files that were dirty at the start and have changed since, even if they are clean
  now (reverted, or committed with other content),
* minus files whose content is the same as in the snapshot (dirty before the run and not
  touched by it), minus excluded folders (the message bus) and ``.pytest_cache``.

Without git, :func:`reported_files` gives the union of ``files_modified`` that workers
reported in ``TASK_COMPLETE`` messages.

Pure Python: no pytest import. Every git call is read-only and runs with
``GIT_OPTIONAL_LOCKS=0``, so it never takes ``index.lock`` from under an agent's commit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pytest_conductor.util.git import run_git, split_z

__all__ = [
    "HeadWatch",
    "TreeSnapshot",
    "changed_files",
    "git_toplevel",
    "head_sha",
    "reported_files",
    "take_snapshot",
]

_GIT_TIMEOUT = 60.0
_SKIPPED_PARTS = frozenset({".pytest_cache"})
# A path that exists but has no content of its own (a submodule, a directory).
_NOT_A_FILE = "<not a file>"


@dataclass(frozen=True)
class TreeSnapshot:
    """The work tree at the start of a run.

    ``dirty`` maps each file that was modified, staged or untracked (path relative to
    ``toplevel``, ``/``-separated) to its content hash, or None when it was deleted.
    ``head`` is None in a repository without commits.
    """

    toplevel: Path
    head: str | None
    dirty: Mapping[str, str | None]


def _git(cwd: Path, *args: str) -> str | None:
    """Output of ``git <args>`` run in ``cwd``, or None when git is missing or fails."""
    try:
        done = run_git(cwd, *args, timeout=_GIT_TIMEOUT)
    except subprocess.SubprocessError:  # timed out
        return None
    return done.stdout if done.ok else None


def git_toplevel(path: Path) -> Path | None:
    """The top folder of the git work tree holding ``path``, or None (no git, no repo)."""
    out = _git(path, "rev-parse", "--show-toplevel")
    if out is None:
        return None
    text = out.strip()
    return Path(text) if text else None


def head_sha(path: Path, *, short: bool = True) -> str | None:
    """The commit ``HEAD`` points at in the repository holding ``path``; None without one."""
    args = ["rev-parse", "--short", "HEAD"] if short else ["rev-parse", "HEAD"]
    out = _git(path, *args)
    if out is None:
        return None
    return out.strip() or None


class HeadWatch:
    """``HEAD``'s short commit, asked of git again only when git's files for it changed.

    Every TASK_COMPLETE carries it, and one ``git rev-parse`` per node cost more than the
    rest of the node's bookkeeping. What decides HEAD lives in ``<git dir>/HEAD``, the
    loose ref it names, ``packed-refs`` and (reftable repositories) ``reftable/tables.list``;
    git replaces each of them by a rename, so their inode, mtime and size change whenever
    HEAD may have moved (an agent committing mid-run included).
    """

    def __init__(self, toplevel: Path) -> None:
        self.toplevel = toplevel
        self._dirs: tuple[Path, Path] | None = None
        self._key: tuple[object, ...] | None = None
        self._sha: str | None = None

    def sha(self) -> str | None:
        if self._dirs is None:
            out = _git(self.toplevel, "rev-parse", "--absolute-git-dir", "--git-common-dir")
            lines = out.splitlines() if out is not None else []
            if len(lines) < 2:
                return head_sha(self.toplevel)
            # --git-common-dir may be relative to the directory git ran in.
            self._dirs = (Path(lines[0]), self.toplevel / lines[1])
        key = self._signature(*self._dirs)
        if key is None:
            return head_sha(self.toplevel)
        if key != self._key:
            self._sha = head_sha(self.toplevel)
            self._key = key
        return self._sha

    @staticmethod
    def _signature(git_dir: Path, common: Path) -> tuple[object, ...] | None:
        try:
            head = (git_dir / "HEAD").read_bytes()
        except OSError:
            return None
        files = [git_dir / "HEAD", common / "packed-refs", common / "reftable" / "tables.list"]
        if head.startswith(b"ref:"):
            ref = os.fsdecode(head[4:].strip())
            files += [git_dir / ref, common / ref]  # per-worktree ref, shared ref
        return (head, *(_stat_key(f) for f in files))


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _content_hash(path: Path) -> str | None:
    """SHA-256 of the file's bytes (of the link text for a symlink); None when missing."""
    try:
        if path.is_symlink():
            return "link:" + hashlib.sha256(os.fsencode(path.readlink())).hexdigest()
        if not path.exists():
            return None
        if not path.is_file():
            return _NOT_A_FILE
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def _excluded(rel: str, excluded_dirs: tuple[str, ...]) -> bool:
    parts = PurePosixPath(rel).parts
    if _SKIPPED_PARTS.intersection(parts):
        return True
    return any(rel == ex or rel.startswith(ex + "/") for ex in excluded_dirs)


def _relative_excludes(toplevel: Path, exclude: Iterable[Path]) -> tuple[str, ...]:
    result: list[str] = []
    top = toplevel.resolve()
    for path in exclude:
        try:
            rel = Path(path).resolve().relative_to(top)
        except ValueError:
            continue  # outside the work tree: nothing of it can show up
        if rel.parts:
            result.append(rel.as_posix())
    return tuple(result)


def _dirty_paths(toplevel: Path) -> list[str] | None:
    out = _git(toplevel, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    if out is None:
        return None
    # Each entry is "XY <path>"; --no-renames keeps it one path per entry.
    return [entry[3:] for entry in split_z(out) if len(entry) > 3]


def take_snapshot(
    root: Path, exclude: Iterable[Path] = (), *, toplevel: Path | None = None
) -> TreeSnapshot | None:
    """The work tree's state now, or None when ``root`` is not inside a git work tree.

    ``toplevel``: the work tree's top, when the caller found it already (one git call).
    """
    toplevel = toplevel or git_toplevel(root)
    if toplevel is None:
        return None
    dirty_paths = _dirty_paths(toplevel)
    if dirty_paths is None:
        return None
    skip = _relative_excludes(toplevel, exclude)
    dirty = {rel: _content_hash(toplevel / rel) for rel in dirty_paths if not _excluded(rel, skip)}
    return TreeSnapshot(toplevel=toplevel, head=head_sha(toplevel, short=False), dirty=dirty)


def _empty_tree(toplevel: Path) -> str | None:
    # The empty tree's id depends on the repository's hash function (SHA-1 or SHA-256).
    out = _git(toplevel, "hash-object", "-t", "tree", "--stdin")
    return out.strip() if out else None


def changed_files(snapshot: TreeSnapshot, exclude: Iterable[Path] = ()) -> list[str]:
    """Files (relative to the work tree's top, sorted) whose content changed since
    ``snapshot`` was taken. ``exclude`` names folders or files that never count."""
    toplevel = snapshot.toplevel
    base = snapshot.head or _empty_tree(toplevel)
    candidates: set[str] = set(snapshot.dirty)
    if base is not None:
        diff = _git(toplevel, "diff", "--name-only", "-z", "--no-renames", base, "--")
        candidates.update(split_z(diff or ""))
    untracked = _git(toplevel, "ls-files", "--others", "--exclude-standard", "-z")
    candidates.update(split_z(untracked or ""))
    skip = _relative_excludes(toplevel, exclude)
    changed: list[str] = []
    for rel in sorted(candidates):
        if _excluded(rel, skip):
            continue
        if rel in snapshot.dirty and snapshot.dirty[rel] == _content_hash(toplevel / rel):
            continue  # dirty before the run and untouched by it
        changed.append(rel)
    return changed


def reported_files(messages: Iterable[Mapping[str, Any]], *, ignore_source: str) -> list[str]:
    """Union of ``files_modified`` in ``TASK_COMPLETE`` messages, sorted.

    Messages from ``ignore_source`` (the controller itself, which posts each node's
    *declared* files) are left out: only what workers say they changed counts.
    """
    files: set[str] = set()
    for message in messages:
        if message.get("type") != "TASK_COMPLETE" or message.get("source") == ignore_source:
            continue
        payload = message.get("payload")
        listed = payload.get("files_modified") if isinstance(payload, Mapping) else None
        if isinstance(listed, list):
            files.update(str(item) for item in listed if isinstance(item, str) and item)
    return sorted(files)
