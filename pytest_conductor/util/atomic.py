"""Write a file whole: what every file that other processes read goes through.

Pure: no pytest import. Readers (orchestrators, agents, CI viewers) must never see half
a file, so content goes to a temporary file in the same folder and is renamed over the
old one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path | str, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temporary file in the same folder, fsync, rename.

    ``durable=False`` skips the fsync: readers still never see half a file (the rename
    does that), only a power cut could lose it. For event files, which are signals.

    The temporary name starts with a dot and ends in ``.tmp`` so that nobody polling for
    ``*.event`` or ``*.json`` names ever picks it up.
    """
    # Plain os calls rather than tempfile and a file object: the controller writes one
    # event per node. The name is unique per process (pid, counter) and random enough
    # for a process forked with the same counter; O_EXCL refuses any clash.
    # Text paths (os.path), not pathlib: its joins cost more than the write here.
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{next(_counter)}.{os.urandom(3).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o644)  # whatever the umask: other tools of the team read the bus
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if not hasattr(os, "fchmod"):
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_counter = itertools.count()
