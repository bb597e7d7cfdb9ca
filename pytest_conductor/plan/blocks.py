"""Fenced code blocks of a markdown document, as plan.md holds them.

Pure Python. How the DAG block is found: plan.md is scanned for fenced code blocks (backticks or
tildes, any indentation). A ```` ```markdown ```` / ```` ```md ```` fence is a container,
not a code block: the fences inside it count. Inside a container, a bare fence line
closes the container (as CommonMark says) unless the lines after it hold a ``dag:`` key,
in which case it opens an unlabelled block; that is how planners write a bare DAG block
inside a ```` ```markdown ```` fence. Fences inside multi-line HTML comments are ignored
(a commented-out old DAG is not a second DAG). Among the ``yaml``/``yml``/unlabelled
blocks, the DAG block is the one whose YAML has a top-level ``dag:`` key (or, when the
YAML does not parse, that has a ``dag:`` line, so its syntax error is reported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DAG_LINE", "CodeBlock", "Fence", "code_blocks", "fence_line", "split_lines"]

_LINE_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_CONTAINER_LANGS = frozenset({"markdown", "md"})
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DAG_KEY = r"""["']?dag["']?[ \t]*:(?:[ \t]|$)"""
DAG_LINE = re.compile(_DAG_KEY)
_INDENTED_DAG_LINE = re.compile(r"[ \t]*" + _DAG_KEY)


@dataclass(frozen=True)
class Fence:
    char: str
    length: int
    info: str
    indent: int

    @property
    def lang(self) -> str:
        words = self.info.split()
        return words[0].strip("{}.").lower() if words else ""

    def closes(self, opener: Fence) -> bool:
        return not self.info and self.char == opener.char and self.length >= opener.length


@dataclass(frozen=True)
class CodeBlock:
    lang: str
    line: int  # 1-based plan.md line of the opening fence
    indent: int  # columns removed from each content line
    lines: tuple[str, ...]


def split_lines(text: str) -> list[str]:
    """plan.md's lines, split where YAML (and so the DAG reader) counts a line break."""
    return _LINE_BREAKS.split(text)


def fence_line(line: str) -> Fence | None:
    """The code fence ``line`` opens or closes, or None when it is no fence line."""
    match = _FENCE.match(line)
    if match is None:
        return None
    fence, info = match["fence"], match["info"].strip()
    if fence[0] == "`" and "`" in info:  # ```inline code``` is not a fence (CommonMark)
        return None
    return Fence(fence[0], len(fence), info, len(match["indent"]))


def _dag_follows(lines: list[str], start: int, opener: Fence) -> bool:
    """Whether the lines from ``start`` up to the next fence line hold a ``dag:`` key."""
    for line in lines[start:]:
        fence = fence_line(line)
        if fence is not None and fence.char == opener.char:
            return False
        if _INDENTED_DAG_LINE.match(line):
            return True
    return False


def _dedent(line: str, indent: int) -> str:
    stripped = line.lstrip(" \t")
    removed = min(indent, len(line) - len(stripped))
    return line[removed:]


def code_blocks(lines: list[str]) -> list[CodeBlock]:
    """Every fenced code block, with ``markdown`` fences seen through (see module doc)."""
    blocks: list[CodeBlock] = []
    containers: list[Fence] = []
    in_comment = False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if in_comment:
            in_comment = "-->" not in line
            continue
        fence = fence_line(line)
        if fence is None:
            start = line.lstrip()
            in_comment = start.startswith("<!--") and "-->" not in start[4:]
            continue
        if containers and fence.closes(containers[-1]) and not _dag_follows(lines, i, fence):
            containers.pop()
            continue
        if fence.lang in _CONTAINER_LANGS:
            containers.append(fence)
            continue
        end = i
        while end < len(lines):
            closing = fence_line(lines[end])
            if closing is not None and closing.closes(fence):
                break
            end += 1
        content = tuple(_dedent(text, fence.indent) for text in lines[i:end])
        blocks.append(CodeBlock(fence.lang, i, fence.indent, content))
        i = end + 1  # an unclosed block runs to the end of the document, as in CommonMark
    return blocks
