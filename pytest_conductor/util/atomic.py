"""Write a file whole: what every file that other processes read goes through.

Pure: no pytest import. Readers (orchestrators, agents, CI viewers) must never see half
a file, so content goes to a temporary file in the same folder and is renamed over the
old one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temporary file in the same folder, fsync, rename.

    ``durable=False`` skips the fsync: readers still never see half a file (the rename
    does that), only a power cut could lose it. For event files, which are signals.

    The temporary name starts with a dot and ends in ``.tmp`` so that nobody polling for
    ``*.event`` or ``*.json`` names ever picks it up.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        # mkstemp creates 0600; the bus is read by other tools of the same team.
        Path(tmp_name).chmod(0o644)
        Path(tmp_name).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp_name).unlink()
        raise
