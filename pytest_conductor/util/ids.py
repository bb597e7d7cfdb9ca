"""Ids that become parts of file names (track ids, task ids): the one rule, pure.

A track id names a folder (``conductor/tracks/<id>``) and an event file
(``PARALLEL_COMPLETE_<id>.event``); a task id names ``TASK_COMPLETE_<id>.event``. An id
that passes :func:`id_problem` can be used for both without escaping anything.
"""

from __future__ import annotations

import re

__all__ = ["MAX_ID_LENGTH", "SAFE_ID", "id_problem"]

SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
# TASK_COMPLETE_<id>.event (and PARALLEL_COMPLETE_<id>.event) must fit a 255-byte file name.
MAX_ID_LENGTH = 128


def id_problem(value: str) -> str:
    """Why ``value`` cannot be used as an id in a file name ("" when it can)."""
    if not value:
        return "it is empty"
    if value in {".", ".."}:
        return f"{value!r} cannot be part of a file name"
    if not SAFE_ID.fullmatch(value):
        return "use only letters, digits, '.', '_' and '-'"
    if len(value) > MAX_ID_LENGTH:
        return f"it is {len(value)} characters long; at most {MAX_ID_LENGTH} fit in a file name"
    return ""
