"""atomic_write: whole files, mode 0644 whatever the umask, nothing left behind."""

from __future__ import annotations

import os
import stat
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
