"""Write a file whole: what every file that other processes read goes through.

Pure: no pytest import. Readers (orchestrators, agents, CI viewers) must never see half
a file, so content goes to a temporary file in the same folder and is renamed over the
old one.
"""

from __future__ import annotations

import contextlib
import errno
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
    # Plain os calls rather than tempfile and a file object: every node's event comes
    # through here. Text paths (os.path), not pathlib: its joins cost more than the write.
    folder, name = os.path.split(os.fspath(path))
    tmp, fd = _create_temporary(folder, name)
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


def _create_temporary(folder: str, name: str) -> tuple[str, int]:
    """A new temporary file for ``name`` in ``folder``, open for writing.

    Named by this process's pid and a counter: unique among the processes alive, so
    without a random part (which cost a system call per file). O_EXCL refuses a name
    that is taken all the same (a file left by a dead process that had this pid): the
    next number is tried.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(folder, f".{name}.{_pid[0]}.{next(_counter)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o644)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_ATTEMPTS} tries", tmp)


def _forked() -> None:
    _pid[0] = os.getpid()


_ATTEMPTS = 100
_counter = itertools.count()
_pid = [os.getpid()]  # read once (a system call each time); a forked child reads its own
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
