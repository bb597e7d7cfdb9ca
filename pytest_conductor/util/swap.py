"""Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

Pure: no pytest import. The bus archives a run's ``events/`` folder by swapping a new,
empty folder into its place, so that readers never see the folder missing. Why a new
folder at all: a directory never shrinks on ext4 and similar file systems, and one that
has held many thousands of entries makes every later file creation in it slower (on the
machine of docs/performance.md, 0.3 ms instead of 0.04 ms per event after some twenty
runs of 1,000 nodes), so reusing one folder forever made each run's per-node cost grow.

Python has no binding for ``renameat2``; it is called through ctypes. Where it is missing
(another OS, an old C library, a file system that refuses the flag) :func:`exchange`
returns False and the caller does without.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

__all__ = ["exchange"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# The file system or kernel does not do it: fall back, it is not a failure of the swap.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def exchange(first: Path, second: Path) -> bool:
    """Swap the entries ``first`` and ``second`` (both must exist) at once.

    Returns False, having changed nothing, where the system cannot; raises OSError for
    any other failure.
    """
    call = _renameat2()
    if call is None:
        return False
    result = call(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@lru_cache(maxsize=1)
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only when a run has events to archive: ~2 ms to import

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2  # glibc >= 2.28, musl >= 1.2.5
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function
