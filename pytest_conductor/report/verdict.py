"""The run's verdict: one JSON object, the last line of the output and ``verdict.json``.

``{"verdict": "PASS" | "FAIL", "summary": "<one sentence>", "files_changed": N}``.
PASS iff at least one node ran and no node failed or was blocked, and the run was not
interrupted. Orchestrators read the last output line, so the line must be one JSON
object and nothing else.

Pure Python: no pytest import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["FAIL", "PASS", "Verdict", "decide", "exit_status"]

PASS = "PASS"
FAIL = "FAIL"

# pytest's exit statuses (pytest.ExitCode), the contract docs/running.md states.
_OK = 0
_TESTS_FAILED = 1
_NO_TESTS_COLLECTED = 5

_SHOWN_IDS = 5  # a summary is one sentence: long id lists are cut


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PASS | FAIL
    summary: str
    files_changed: int

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "files_changed": self.files_changed,
        }

    def line(self) -> str:
        """The verdict as one line of JSON (no newline inside, whatever the summary says)."""
        return json.dumps(self.as_dict(), ensure_ascii=False)


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    more = len(ids) - _SHOWN_IDS
    return f"{shown} and {more} more" if more > 0 else shown


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def decide(
    selected: Sequence[str],
    statuses: Mapping[str, str],
    *,
    track: str,
    files_changed: int,
    interrupted: bool = False,
) -> Verdict:
    """The verdict of a run of the ``selected`` nodes (plan order).

    ``statuses`` maps a node id to ``passed``, ``failed``, ``blocked`` or ``skipped``; a
    selected node without a status did not run (the run was interrupted or stopped).
    """
    by_status: dict[str, list[str]] = {}
    for task in selected:
        by_status.setdefault(statuses.get(task, "not run"), []).append(task)
    passed = by_status.get("passed", [])
    failed = by_status.get("failed", [])
    blocked = by_status.get("blocked", [])
    not_run = by_status.get("skipped", []) + by_status.get("not run", [])
    ran = len(passed) + len(failed)

    parts: list[str] = []
    if failed:
        parts.append(f"{len(failed)} failed ({_ids(failed)})")
    if blocked:
        parts.append(f"{len(blocked)} blocked ({_ids(blocked)})")
    if not_run:
        parts.append(f"{len(not_run)} not run ({_ids(not_run)})")
    details = f"; {', '.join(parts)}" if parts else ""

    of = f"{len(passed)} of {_plural(len(selected), 'node')} passed"
    if not selected:
        summary = f"Track {track}: no node was selected, so none ran."
    elif interrupted:
        summary = f"Track {track}: interrupted after {of}{details}."
    elif ran == 0:
        summary = f"Track {track}: no node ran{details}."
    else:
        summary = f"Track {track}: {of}{details}."
    ok = ran > 0 and not failed and not blocked and not interrupted
    return Verdict(PASS if ok else FAIL, summary, files_changed)


def exit_status(verdict: Verdict, *, nodes_selected: int, pytest_status: int) -> int:
    """The run's exit status, made to agree with its verdict.

    pytest counts a blocked node as skipped and would exit 0; a FAIL verdict exits 1 (or
    5 when no node was selected at all). A status pytest already set that is not 0
    (failed, interrupted, usage or internal error) is kept: it says more.
    """
    if pytest_status != _OK or verdict.passed:
        return pytest_status
    return _NO_TESTS_COLLECTED if nodes_selected == 0 else _TESTS_FAILED
