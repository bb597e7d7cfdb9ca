"""The run's verdict: one JSON object, the last line of the output and ``verdict.json``.

``{"verdict": "PASS" | "FAIL", "summary": "<one sentence>", "files_changed": N}``.
PASS iff at least one node ran and no node failed or was blocked, the run was not
interrupted, and every bus event and metadata.json write succeeded. Orchestrators read
the last output line, so the line must be one JSON object and nothing else.

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
    #: Where changes live outside the controller's work tree (remote xdist workers):
    #: ``{"host", "root", "workers", "files_changed"}`` per copy; absent when none.
    changed_elsewhere: tuple[Mapping[str, object], ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {
            "verdict": self.verdict,
            "summary": self.summary,
            "files_changed": self.files_changed,
        }
        if self.changed_elsewhere:
            result["changed_elsewhere"] = [dict(copy) for copy in self.changed_elsewhere]
        return result

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
    not_written: Sequence[str] = (),
    branch: str | None = None,
) -> Verdict:
    """The verdict of a run of the ``selected`` nodes (plan order).

    ``statuses`` maps a node id to ``passed``, ``failed``, ``blocked`` or ``skipped``; a
    selected node without a status did not run (the run was interrupted or stopped).
    ``branch`` (``conductor/<track> at <sha>``) names where the work is, in worktree
    isolation.
    ``not_written`` says which event or metadata writes failed (each one fails the run:
    the orchestrator reading the files would act on a wrong picture).
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
    if branch is not None:
        details += f"; the work is on {branch}"

    of = f"{len(passed)} of {_plural(len(selected), 'node')} passed"
    if not selected:
        summary = f"Track {track}: no node was selected, so none ran."
    elif interrupted:
        summary = f"Track {track}: interrupted after {of}{details}."
    elif ran == 0:
        summary = f"Track {track}: no node ran{details}."
    else:
        summary = f"Track {track}: {of}{details}."
    if not_written:
        more = f" and {len(not_written) - 1} more" if len(not_written) > 1 else ""
        summary = f"{summary[:-1]}; not written: {not_written[0].rstrip('.')}{more}."
    ok = ran > 0 and not failed and not blocked and not interrupted and not not_written
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
