"""Paths relative to the project root, and whether they stay inside it.

Pure logic: nothing here knows about pytest. Parsing refuses a criterion path that leaves
the root; checking asks again at run time, since the tree may have changed in between.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path

__all__ = ["GLOB_CHARS", "exists_inside", "glob_inside", "inside_root", "lexical_escape"]

GLOB_CHARS = re.compile(r"[*?\[]")


@functools.lru_cache(maxsize=4096)  # pure, and asked again for the same paths each node
def lexical_escape(path: str) -> str:
    """Why ``path`` leaves the root on its face (``""`` when it does not)."""
    if Path(path).is_absolute():
        return f"{path!r} is absolute; paths are relative to the project root"
    normal = os.path.normpath(path)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return f"{path!r} leaves the project root"
    return ""


def inside_root(root: Path, path: str | Path) -> bool:
    """Whether ``root/path`` resolves (following symlinks) inside ``root``."""
    try:
        real_root = _real_root(root)
        parts = _plain_parts(os.fspath(path))
        # Checked once per node: lstat only the path's own components. Without a symlink
        # among them, root/path stays inside whether it exists or not.
        if parts is not None and _walk(real_root, parts) != _LINK:
            return True
        real = (real_root / path).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return False
    return real == real_root or real.is_relative_to(real_root)


def exists_inside(root: Path, path: str) -> bool | None:
    """Whether ``root/path`` exists, or None when it resolves outside ``root``.

    What :func:`inside_root` and an ``exists()`` would say together, with one ``lstat``
    per component of ``path`` and no more (the ``exists`` check of every node).
    """
    parts = _plain_parts(path)
    if parts is not None:
        try:
            seen = _walk(_real_root(root), parts)
        except (OSError, RuntimeError):
            return None
        if seen == _PLAIN:
            return True
        if seen == _MISSING:
            return False  # no link on the way: inside, and not there
    if not inside_root(root, path):
        return None
    return (root / path).exists()


# What _walk saw.
_PLAIN, _MISSING, _LINK, _UNREADABLE = "plain", "missing", "link", "unreadable"


def _walk(real_root: Path, parts: tuple[str, ...]) -> str:
    """``real_root/<parts>`` component by component, one ``lstat`` each: every one there
    and none a link (``_PLAIN``), one not there with no link before it (``_MISSING``),
    a link on the way (``_LINK``: only resolving says where it leads), or a component
    that cannot be looked at (``_UNREADABLE``)."""
    current = os.fspath(real_root)
    for part in parts:
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return _MISSING
        except OSError:
            return _UNREADABLE
        if stat.S_ISLNK(mode):
            return _LINK
    return _PLAIN


@functools.lru_cache(maxsize=4096)
def _plain_parts(path: str) -> tuple[str, ...] | None:
    """The components of a relative path without ``..``; None for any other path."""
    relative = Path(path)
    if relative.is_absolute() or os.pardir in relative.parts:
        return None
    return relative.parts


@functools.lru_cache(maxsize=16)
def _real_root(root: Path) -> Path:
    # The project root of a run does not move while it runs; its own path is resolved
    # once (each call would lstat every component from /).
    return root.resolve()


def glob_inside(root: Path, pattern: str) -> bool | None:
    """True if ``pattern`` matches a path inside ``root``, False if only outside, None if none."""
    matched = False
    for match in root.glob(pattern):
        if inside_root(root, match):
            return True
        matched = True
    return False if matched else None
