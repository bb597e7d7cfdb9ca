"""Running ``git``: explicit argument lists, never a shell, never killed mid-write.

Pure Python: no pytest import. Every git call of the plugin goes through :func:`run_git`.
Each runs git in a session of its own, so a Ctrl-C at the terminal does not reach it;
when this process is interrupted while git runs, git is left to finish (a git killed
while it writes leaves ``index.lock`` behind, and every later git command in that work
tree fails until a person removes it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GitError", "GitResult", "git", "git_ok", "run_git", "split_z"]

#: How long an interrupted git gets to finish before it is asked (SIGTERM, on which git
#: removes its lock files) to stop.
FINISH_GRACE = 20.0
_TIMEOUT = 600.0


class GitError(RuntimeError):
    """A git command that failed; the message names the command and git's own words."""

    def __init__(self, args: tuple[str, ...], code: int | None, stderr: str) -> None:
        shown = " ".join(args)
        why = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
        super().__init__(f"git {shown}: {why}")
        self.args_used = args
        self.code = code
        self.stderr = stderr


@dataclass(frozen=True)
class GitResult:
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        # A GIT_DIR or GIT_WORK_TREE of an enclosing git hook would point elsewhere.
        if name not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
    }
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password nobody types
    # Reads (status, diff) never take index.lock from under an agent's own commit.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["LC_ALL"] = "C"  # messages parsed below are git's English ones
    if extra:
        env.update(extra)
    return env


def run_git(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = _TIMEOUT
) -> GitResult:
    """``git <args>`` in ``cwd``; returns its status and output, whatever the status."""
    try:
        proc = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_environment(env),
            start_new_session=True,
        )
    except OSError as exc:
        return GitResult(127, "", f"cannot run git: {exc}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _let_finish(proc)
        raise
    return GitResult(
        proc.returncode,
        out.decode("utf-8", errors="surrogateescape"),
        err.decode("utf-8", errors="replace"),
    )


def _let_finish(proc: subprocess.Popen[bytes]) -> None:
    """Wait for an interrupted git; past the grace, SIGTERM (never SIGKILL first)."""
    with contextlib.suppress(BaseException):
        proc.communicate(timeout=FINISH_GRACE)
        return
    with contextlib.suppress(OSError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(BaseException):
        proc.communicate(timeout=FINISH_GRACE)
        return
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(BaseException):
        proc.wait(timeout=FINISH_GRACE)


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Standard output of ``git <args>`` (stripped); raises GitError when git fails."""
    done = run_git(cwd, *args, env=env)
    if not done.ok:
        raise GitError(args, done.code, done.stderr or done.stdout)
    return done.stdout.strip()


def git_ok(cwd: Path, *args: str) -> bool:
    """Whether ``git <args>`` succeeds (a question such as ``merge-base --is-ancestor``)."""
    return run_git(cwd, *args).ok


def split_z(output: str) -> list[str]:
    """The paths of a ``-z`` listing (``status -z``, ``diff --name-only -z``, ``ls-files -z``)."""
    return [part for part in output.split("\0") if part]
