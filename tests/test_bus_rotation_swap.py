"""Rotation archives ``events/`` by swapping a new folder into its place (bus/core.py,
util/swap.py): the run's events leave at once, other tools' files never go missing, and
every run starts with a small folder. Where the swap cannot be done, file by file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_conductor.bus import MessageBus
from pytest_conductor.bus import core as bus_core
from pytest_conductor.util.swap import exchange


def swap_works(where: Path) -> bool:
    (where / "x").mkdir()
    (where / "y").mkdir()
    return exchange(where / "x", where / "y")


@pytest.fixture
def bus(tmp_path: Path) -> MessageBus:
    bus = MessageBus(tmp_path / ".message-bus", warn=False)
    bus.init()
    return bus


def fill(bus: MessageBus, count: int = 3) -> None:
    for i in range(count):
        bus.complete(f"t{i}", "abc")
    (bus.events_dir / "PLAN_EVAL_COMPLETE_t.event").write_text("PASS")


def test_exchange_swaps_two_folders_or_says_it_cannot(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in-a").write_text("")
    (tmp_path / "b").mkdir()
    if not exchange(tmp_path / "a", tmp_path / "b"):
        assert (tmp_path / "a" / "in-a").exists()  # nothing changed
        pytest.skip("this system cannot swap two folders at once")
    assert (tmp_path / "b" / "in-a").exists()
    assert not (tmp_path / "a" / "in-a").exists()


def test_exchange_of_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    if not swap_works(tmp_path):
        pytest.skip("this system cannot swap two folders at once")
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "a", tmp_path / "missing")


def test_rotation_puts_a_new_events_folder_in_place(bus: MessageBus, tmp_path: Path) -> None:
    if not swap_works(tmp_path):
        pytest.skip("this system cannot swap two folders at once")
    fill(bus)
    old = bus.events_dir.stat().st_ino
    archive = bus.rotate()
    assert archive is not None
    assert bus.events_dir.stat().st_ino != old
    assert sorted(p.name for p in (archive / "events").iterdir()) == [
        f"TASK_COMPLETE_t{i}.event" for i in range(3)
    ]
    assert (archive / "events" / "TASK_COMPLETE_t0.event").read_text() == "abc"
    assert bus.events() == ["PLAN_EVAL_COMPLETE_t.event"]
    assert (bus.events_dir / "PLAN_EVAL_COMPLETE_t.event").read_text() == "PASS"
    assert not [p for p in bus.path.iterdir() if p.name.endswith(".new")]


@pytest.mark.parametrize("why", ["no swap", "a folder inside"])
def test_rotation_moves_file_by_file_otherwise(
    bus: MessageBus, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    fill(bus)
    if why == "no swap":
        monkeypatch.setattr(bus_core, "exchange", lambda first, second: False)
    else:
        (bus.events_dir / "board").mkdir()  # cannot be hard-linked into a new folder
    old = bus.events_dir.stat().st_ino
    archive = bus.rotate()
    assert archive is not None
    assert bus.events_dir.stat().st_ino == old
    assert len(list((archive / "events").iterdir())) == 3
    assert bus.events() == ["PLAN_EVAL_COMPLETE_t.event"]
    assert not [p for p in bus.path.iterdir() if p.name.endswith(".new")]


def test_a_killed_writers_temporary_file_goes_with_the_archive(bus: MessageBus) -> None:
    fill(bus)
    (bus.events_dir / ".TASK_COMPLETE_t9.event.123.0.abcdef.tmp").write_text("")
    bus.rotate()
    assert not [p for p in bus.events_dir.iterdir() if p.name.endswith(".tmp")]
    assert bus.events() == ["PLAN_EVAL_COMPLETE_t.event"]


READER = """
import os, sys, time
events, other = sys.argv[1], sys.argv[2]
misses = looks = 0
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    looks += 1
    # By path, as pollers look for a file: a listing begun in the old folder just before
    # the swap may not show it (it is in the new one by then).
    if not os.path.isdir(events) or not os.path.isfile(os.path.join(events, other)):
        misses += 1
print(looks, misses)
"""


@pytest.mark.slow
def test_a_reader_never_sees_the_folder_or_another_tools_file_missing(
    bus: MessageBus, tmp_path: Path
) -> None:
    """Another process looks for ``events/`` and a file of another tool in it, in a loop,
    while runs rotate one after another."""
    fill(bus)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(READER),
            str(bus.events_dir),
            "PLAN_EVAL_COMPLETE_t.event",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # the reader is looking
    rotations = 0
    while reader.poll() is None:
        for i in range(20):
            bus.complete(f"r{rotations}-{i}", "")
        bus.rotate()
        rotations += 1
    looks, misses = map(int, reader.communicate()[0].split())
    assert rotations > 10 and looks > 1000
    assert misses == 0
    assert (bus.events_dir / "PLAN_EVAL_COMPLETE_t.event").exists()
