"""Write a task's new status mark into plan.md, changing nothing else.

Pure Python: no pytest import. Used by ``--conductor-write-plan``. Each write:

- takes a lock (``filelock``), so the run's own writes never interleave;
- reads plan.md afresh and changes one line: the task's line, found where it was and
  still holding the text the run last saw there (or, when lines moved, the one line
  anywhere that holds it) — a line someone else changed is left alone, and the caller
  is told why;
- replaces the file atomically (temporary file, rename), only if its bytes are still the
  ones just read, so an edit made meanwhile by someone else is never overwritten with a
  stale copy;
- keeps every other byte as it was: line breaks, a BOM, trailing whitespace, the file's
  permissions.
"""

from __future__ import annotations

import contextlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_conductor.plan.marks import rewrite_mark, sha_style
from pytest_conductor.util.atomic import atomic_write

__all__ = ["MarkWriter"]

_SPLIT = re.compile("(\r\n|[\r\n\x85\u2028\u2029])")
_BOM = "\ufeff"
_ATTEMPTS = 5


@dataclass
class MarkWriter:
    """Writes marks into ``path``; ``lines`` remembers each task line as last written."""

    path: Path
    lock_path: Path
    lock_timeout: float = 30.0
    lines: dict[str, tuple[int, str]] = field(default_factory=dict)

    def write(
        self, task_id: str, line: int, text: str, state: str, sha: str | None = None
    ) -> str | None:
        """Set task ``task_id``'s mark (its line ``line`` read as ``text``) to ``state``.

        Returns None when written (or already so), else why it was not.
        """
        line, text = self.lines.get(task_id, (line, text))
        try:
            with FileLock(str(self.lock_path), timeout=self.lock_timeout):
                for _ in range(_ATTEMPTS):
                    outcome = self._attempt(task_id, line, text, state, sha)
                    if outcome != "retry":
                        return outcome
        except Timeout:
            return f"plan.md is locked by another writer ({self.lock_path})"
        except OSError as exc:
            return f"cannot write plan.md: {exc.strerror or exc}"
        return "plan.md kept changing while the mark was written; left alone"

    def _attempt(
        self, task_id: str, line: int, text: str, state: str, sha: str | None
    ) -> str | None:
        before = self.path.read_bytes()
        try:
            decoded = before.decode("utf-8")
        except UnicodeDecodeError:
            return "plan.md is no longer valid UTF-8; left alone"
        bom = _BOM if decoded.startswith(_BOM) else ""
        parts = _SPLIT.split(decoded[len(bom) :])
        content = parts[0::2]  # the lines; parts[1::2] are their line breaks
        index = self._find(content, line, text)
        if index is None:
            return (
                f"task {task_id}: its line in plan.md (line {line}) changed during the run; "
                "its mark was not written"
            )
        new_line = rewrite_mark(content[index], state, sha, sha_style(content))
        self.lines[task_id] = (index + 1, new_line)
        if new_line == content[index]:
            return None
        parts[index * 2] = new_line
        after = (bom + "".join(parts)).encode("utf-8")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if self.path.read_bytes() != before:
            return "retry"  # someone wrote plan.md meanwhile: start again from theirs
        atomic_write(self.path, after)
        with contextlib.suppress(OSError):
            self.path.chmod(mode)
        return None

    @staticmethod
    def _find(content: list[str], line: int, text: str) -> int | None:
        if 0 < line <= len(content) and content[line - 1] == text:
            return line - 1
        found = [i for i, candidate in enumerate(content) if candidate == text]
        return found[0] if len(found) == 1 else None
