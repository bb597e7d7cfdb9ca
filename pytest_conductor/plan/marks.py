"""Status marks of plan.md task lines: ``- [x] Task 1.1: … abc1234``.

Pure Python. Conductor tools keep a task's status in its checkbox: ``[ ]`` to do, ``[~]``
in progress, ``[x]`` done (often followed by the short SHA of the commit that did it),
``[!]`` blocked, ``[-]`` skipped. This module reads one line into a :class:`Mark` and
writes a new mark into a line, changing nothing else on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BLOCKED",
    "DONE",
    "IN_PROGRESS",
    "SKIPPED",
    "TODO",
    "Checkbox",
    "Checkpoint",
    "Mark",
    "read_checkbox",
    "rewrite_mark",
    "sha_style",
]

TODO, IN_PROGRESS, DONE, BLOCKED, SKIPPED = " ", "~", "x", "!", "-"
_NAMES = {
    TODO: "not done",
    IN_PROGRESS: "in progress",
    DONE: "done",
    BLOCKED: "blocked",
    SKIPPED: "skipped",
}

_CHECKBOX = re.compile(
    r"^(?P<head>[ \t]*(?:[-*+]|\d+[.)])[ \t]+)\[(?P<mark>[ xX~!\-])\](?P<rest>.*)$"
)
_COMMENT = re.compile(r"<!--.*?-->")
_TRAILING_COMMENTS = re.compile(r"(?P<comments>(?:[ \t]*<!--.*?-->)+[ \t]*)$")
# A short SHA at the end of a done line: bare, or in [..], (..) or backticks. A bare word
# must hold a digit, so that a title ending in "defaced" is not taken for a commit.
_SHA = re.compile(
    r"(?P<space>[ \t]+)(?P<open>[\[(`]?)(?P<sha>[0-9a-fA-F]{7,40})(?P<close>[\])`]?)[ \t]*$"
)
_PAIRS = {"": "", "[": "]", "(": ")", "`": "`"}


@dataclass(frozen=True)
class Mark:
    """A task's checkbox as written: ``state`` is one of ``" ~x!-"``; ``line`` is 1-based."""

    state: str
    line: int
    sha: str | None = None
    text: str = ""  # the whole line, so write-back can find it again

    @property
    def name(self) -> str:
        return _NAMES[self.state]

    def shown(self) -> str:
        """``[x] abc1234`` or ``[ ]``: the mark as a person reads it."""
        return f"[{self.state}]" + (f" {self.sha}" if self.sha else "")


@dataclass(frozen=True)
class Checkpoint:
    """A phase heading's ``[checkpoint: <sha>]``."""

    sha: str
    line: int
    phase: str


@dataclass(frozen=True)
class Checkbox:
    """One checklist line taken apart: ``head`` (indent and bullet), mark, the rest."""

    head: str
    state: str
    rest: str
    sha: str | None

    @property
    def indent(self) -> int:
        return len(self.head) - len(self.head.lstrip(" \t"))

    @property
    def body(self) -> str:
        """The text after the mark without comments and without the trailing SHA."""
        text = _COMMENT.sub("", self.rest).rstrip()
        if self.sha is not None:
            match = _sha_match(text)
            if match is not None:
                text = text[: match.start()]
        return text.strip()


def _sha_match(text: str) -> re.Match[str] | None:
    match = _SHA.search(text)
    if match is None or _PAIRS[match["open"]] != match["close"]:
        return None
    if not match["open"] and not any(c.isdigit() for c in match["sha"]):
        return None
    return match


def read_checkbox(line: str) -> Checkbox | None:
    """The checkbox of a list line, or None when the line is not one."""
    match = _CHECKBOX.match(line)
    if match is None:
        return None
    state = match["mark"].lower()
    sha_match = _sha_match(_COMMENT.sub("", match["rest"]).rstrip())
    sha = sha_match["sha"].lower() if sha_match is not None else None
    return Checkbox(match["head"], state, match["rest"], sha)


def sha_style(lines: list[str]) -> tuple[str, str]:
    """How the plan writes a done task's SHA: the brackets of its first one (default bare)."""
    for line in lines:
        box = read_checkbox(line)
        if box is None or box.sha is None:
            continue
        match = _sha_match(_COMMENT.sub("", box.rest).rstrip())
        if match is not None:
            return match["open"], match["close"]
    return "", ""


def rewrite_mark(
    line: str, state: str, sha: str | None = None, style: tuple[str, str] = ("", "")
) -> str:
    """``line`` with its checkbox set to ``state``; a done line gets ``sha`` at its end
    (before trailing comments), in ``style``. Everything else on the line stays as it was.
    A SHA already on the line is replaced (or dropped when the new state is not done)."""
    match = _CHECKBOX.match(line)
    if match is None:
        raise ValueError(f"not a checklist line: {line!r}")
    rest = match["rest"]
    comments_match = _TRAILING_COMMENTS.search(rest)
    comments = comments_match["comments"] if comments_match else ""
    text = rest[: len(rest) - len(comments)] if comments else rest
    old = _sha_match(text)
    if old is not None:
        text = text[: old.start()]
    if state == DONE and sha:
        text = f"{text.rstrip()} {style[0]}{sha}{style[1]}"
    elif old is not None:
        text = text.rstrip()
    return f"{match['head']}[{state}]{text}{comments}"
