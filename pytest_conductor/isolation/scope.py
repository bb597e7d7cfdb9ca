"""The scope check: which changed paths lie outside a node's declared ``files``.

Pure Python: no pytest import. A declared entry is a path, a folder (everything below
it) or a glob (``*`` and ``?`` match across ``/`` as well, ``**`` is accepted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

__all__ = ["IGNORED_PARTS", "in_scope", "out_of_scope"]

#: Byproducts of running Python and pytest (a criterion, an agent's own test run): never
#: the work itself, never a violation.
IGNORED_PARTS = frozenset({"__pycache__", ".pytest_cache"})


def _clean(pattern: str) -> str:
    text = pattern.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def in_scope(path: str, declared: Sequence[str]) -> bool:
    """Whether ``path`` (``/``-separated, relative to the project root) is declared."""
    path = _clean(path)
    for raw in declared:
        pattern = _clean(raw)
        if not pattern:
            continue
        folder = pattern.rstrip("/")
        if path == folder or path.startswith(folder + "/"):
            return True
        if fnmatchcase(path, pattern) or fnmatchcase(path, pattern.replace("**/", "")):
            return True
    return False


def out_of_scope(paths: Iterable[str], declared: Sequence[str]) -> list[str]:
    """The ``paths`` outside ``declared``, sorted; none when nothing is declared (a node
    without ``files`` makes no claim to check)."""
    if not [d for d in declared if d.strip()]:
        return []
    return sorted(
        {
            p
            for p in paths
            if not IGNORED_PARTS.intersection(PurePosixPath(p).parts) and not in_scope(p, declared)
        }
    )
