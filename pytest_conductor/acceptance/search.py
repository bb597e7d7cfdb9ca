"""A ``contains:`` pattern search that a time limit can stop.

Pure logic: nothing here knows about pytest. Python's ``re`` cannot be interrupted once a
match has started, and a pattern like ``(a+)+$`` backtracks for longer than any run
lasts; so the search runs in a child process, through the same runner as ``run:``
criteria (its own process group, killed at the limit, recorded in the registry).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_conductor.acceptance.commands import command_env, run_command
from pytest_conductor.plan.durations import format_duration
from pytest_conductor.util.processes import GroupRegistry

__all__ = ["Search", "search_file"]

# Reads the file, searches it, prints the line of the first match (0: none). The pattern
# travels as JSON so any character (a NUL byte included) survives the command line.
_SEARCH = """\
import json, re, sys
text = open(sys.argv[2], encoding="utf-8", errors="replace").read()
match = re.search(json.loads(sys.argv[1]), text, re.MULTILINE)
print(text.count("\\n", 0, match.start()) + 1 if match else 0)
print(len(text.splitlines()))
"""


@dataclass(frozen=True)
class Search:
    """The first matching line (0: no match), the file's line count, or why neither."""

    line: int = 0
    lines: int = 0
    problem: str = ""


def search_file(
    path: Path,
    pattern: str,
    timeout: float,
    *,
    registry: GroupRegistry | None = None,
    label: str = "search",
) -> Search:
    """Search ``path`` for ``pattern`` (multiline), giving up after ``timeout`` seconds."""
    argv = [sys.executable, "-I", "-c", _SEARCH, json.dumps(pattern), str(path)]
    run = run_command(
        argv, path.parent, command_env(None, None), timeout, registry=registry, label=label
    )
    if run.start_error:
        return Search(problem=run.start_error)
    if run.timed_out:
        return Search(problem=f"the search did not finish within {format_duration(timeout)}")
    words = run.output.split()
    if run.returncode != 0 or len(words) != 2 or not all(w.isdigit() for w in words):
        last = run.output.strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
        return Search(problem=f"the search failed: {last[0][:200]}")
    return Search(line=int(words[0]), lines=int(words[1]))
