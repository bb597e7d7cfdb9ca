"""File primitives of the bus: an inter-process lock, whole-line appends, atomic replaces.

Every file in the bus folder is written by several processes at once (the controller, up
to five workers and their agents). The rules that keep readers safe:

* a queue line goes out in one ``os.write`` on an ``O_APPEND`` descriptor while the
  queue lock is held, so lines never interleave and the offset is never raced;
* a JSON or event file is written whole to a temporary file in the same folder, flushed
  to disk and renamed over the old one, so a reader sees the old file or the new one,
  never half of either.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from pathlib import Path
from types import TracebackType

import filelock

from pytest_conductor.util.atomic import atomic_write

__all__ = [
    "BusLock",
    "BusLockTimeout",
    "SymlinkRefused",
    "append_line",
    "atomic_write",
    "copy_aside",
    "refuse_symlinks",
]

# filelock >= 3.30 exposes the bare lock primitive on a descriptor we own. A FileLock
# object costs ~0.2 ms per acquire in filelock 4.x (frame bookkeeping, registries),
# which alone would cap the bus near 5,000 posts/s; the primitive costs ~2 us and is the
# very same flock()/LockFileEx() call, so both kinds of holder exclude each other.
_lock_descriptor = getattr(filelock, "lock_descriptor", None)
_unlock_descriptor = getattr(filelock, "unlock_descriptor", None)

_FIRST_WAIT = 0.0005
_LONGEST_WAIT = 0.01


class BusLockTimeout(TimeoutError):
    """Another process held a bus lock for longer than the bus is willing to wait."""


class SymlinkRefused(OSError):
    """A bus folder or file is a symbolic link: nothing is written through it.

    Everything the bus writes is its own; a link there (an agent can make one mid-run)
    could point anywhere, outside the project too.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def refuse_symlinks(*paths: str | Path) -> None:
    """Raise :class:`SymlinkRefused` when one of ``paths`` is a symbolic link.

    Only the paths themselves are looked at (``lstat``), not the folders above them: a
    project that lives under a linked folder is fine.
    """
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(mode):
            raise SymlinkRefused(
                errno.ELOOP, "is a symbolic link; the bus does not write through links", str(path)
            )


class BusLock:
    """Exclusive inter-process lock on one lock file; not re-entrant.

    Each acquisition opens its own descriptor: a descriptor inherited through ``fork`` or
    shared between threads would share the lock too, and exclude nobody.
    """

    def __init__(self, path: str | Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._fallback: filelock.BaseFileLock | None = None

    def __enter__(self) -> BusLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        if _lock_descriptor is None:
            self._acquire_with_filelock()
            return
        fd = _open_own(self.path, os.O_RDWR | os.O_CREAT)
        try:
            deadline = time.monotonic() + self.timeout
            wait = _FIRST_WAIT
            # Polling (as filelock itself does) but starting at 0.5 ms: the queue lock is
            # held for a few microseconds, a 50 ms poll would waste most of the wait.
            while not _lock_descriptor(fd, blocking=False):
                if time.monotonic() >= deadline:
                    raise BusLockTimeout(f"gave up after {self.timeout:g}s waiting for {self.path}")
                time.sleep(wait)
                wait = min(wait * 2, _LONGEST_WAIT)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _acquire_with_filelock(self) -> None:
        # Same short poll as above; filelock's default 50 ms stalls every contended post.
        lock = filelock.FileLock(str(self.path), timeout=self.timeout, poll_interval=0.001)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise BusLockTimeout(
                f"gave up after {self.timeout:g}s waiting for {self.path}"
            ) from None
        self._fallback = lock

    def release(self) -> None:
        if self._fallback is not None:
            lock, self._fallback = self._fallback, None
            lock.release()
            return
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _unlock_descriptor is not None:
                _unlock_descriptor(fd)
        finally:
            # Closing drops the lock as well; the explicit unlock only makes it prompt
            # when the descriptor leaked into a child process.
            os.close(fd)


def append_line(path: str | Path, data: bytes) -> None:
    """Append ``data`` (one whole line) with a single write on an ``O_APPEND`` descriptor.

    The caller holds the file's lock. A short write (disk full, signal) is finished under
    that same lock so the line still ends up whole and unbroken.
    """
    fd = _open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        written = os.write(fd, data)
        while written < len(data):
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def _open_own(path: str | Path, flags: int) -> int:
    """Open a file of the bus itself, never through a symbolic link."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SymlinkRefused(
                errno.ELOOP, "is a symbolic link; the bus does not write through links", str(path)
            ) from None
        raise


def copy_aside(path: Path, stamp: str) -> Path:
    """Copy a damaged file to ``<name>.corrupt-<stamp>`` (never overwriting) and return it."""
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    shutil.copy2(path, target)
    return target
