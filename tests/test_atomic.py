"""atomic_write: whole files, mode 0644 whatever the umask, nothing left behind."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pytest

from pytest_conductor.util.atomic import atomic_write


@pytest.mark.parametrize("durable", [True, False])
def test_writes_whole_and_replaces(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "x.json"
    atomic_write(target, b"first", durable=durable)
    atomic_write(target, b"second" * 100_000, durable=durable)
    assert target.read_bytes() == b"second" * 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_mode_is_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "e.event", b"")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "e.event").stat().st_mode) == 0o644


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()  # replacing a folder by a file fails
    with pytest.raises(OSError):
        atomic_write(tmp_path / "dir.json", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.json"]
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "x.json", b"x")


def test_a_temporary_name_left_by_a_dead_process_is_passed_over(tmp_path: Path) -> None:
    from pytest_conductor.util import atomic

    # What a process that had this pid left behind, at the names this one tries next.
    start = next(atomic._counter) + 1
    for n in range(start, start + 3):
        (tmp_path / f".e.event.{os.getpid()}.{n}.tmp").write_bytes(b"stale")
    atomic_write(tmp_path / "e.event", b"new")
    assert (tmp_path / "e.event").read_bytes() == b"new"
    assert len(list(tmp_path.glob(".e.event.*.tmp"))) == 3  # theirs, untouched


def test_a_forked_child_names_its_files_after_its_own_pid(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (an xdist worker's);
        # the child only writes a file and leaves.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: write, then leave without running the parent's cleanups
        code = 0
        try:
            from pytest_conductor.util import atomic

            code = 0 if atomic._pid[0] == os.getpid() else 1
            atomic_write(tmp_path / "child.event", b"child")
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / "child.event").read_bytes() == b"child"
