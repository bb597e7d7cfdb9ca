"""Is the commit a plan names real? ``[x] … abc1234`` and ``[checkpoint: abc1234]`` checked.

Pure Python: no pytest import. Runs ``git`` (no shell) in the project root: the commit
must exist and be an ancestor of HEAD, otherwise the work it stands for is not in the
branch being verified.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_conductor.util.git import GitResult, run_git

__all__ = ["CommitCheck", "check_commit", "git_available"]

_TIMEOUT = 30.0


@dataclass(frozen=True)
class CommitCheck:
    """``ok`` when the commit is an ancestor of HEAD; ``seen`` says what was found."""

    sha: str
    ok: bool
    seen: str


def _git(root: Path, *args: str) -> GitResult | None:
    try:
        return run_git(root, *args, timeout=_TIMEOUT)
    except subprocess.SubprocessError:  # timed out
        return None


def git_available(root: Path) -> str | None:
    """None when ``root`` is in a git work tree with a HEAD, else why SHAs cannot be checked."""
    done = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if done is None:
        return "git is not installed (or did not answer)"
    if done.code != 0:
        inside = _git(root, "rev-parse", "--git-dir")
        if inside is None or inside.code != 0:
            return f"{root} is not in a git repository"
        return "the git repository has no commit yet"
    return None


def check_commit(root: Path, sha: str) -> CommitCheck:
    """Whether ``sha`` names a commit that is an ancestor of (or is) HEAD."""
    found = _git(root, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
    if found is None:
        return CommitCheck(sha, False, "git did not answer")
    if found.code != 0:
        ambiguous = "ambiguous" in found.stderr
        why = "more than one commit starts with it" if ambiguous else "ghost commit"
        return CommitCheck(sha, False, f"no commit {sha} in the repository ({why})")
    full = found.stdout.strip()
    ancestor = _git(root, "merge-base", "--is-ancestor", full, "HEAD")
    if ancestor is None:
        return CommitCheck(sha, False, "git did not answer")
    if ancestor.code == 0:
        return CommitCheck(sha, True, f"commit {full[:12]} is in HEAD's history")
    return CommitCheck(
        sha, False, f"commit {full[:12]} exists but is not an ancestor of HEAD (another branch?)"
    )
