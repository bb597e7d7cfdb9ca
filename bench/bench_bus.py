"""Message bus throughput: ``MessageBus.post`` against plain unlocked appends.

Not a test. Run ``python bench/bench_bus.py`` (``--help`` for the knobs). Five processes
post 2,000 messages each through the bus, then five processes append the same kind of
line 2,000 times each with ``open(path, "a").write`` and no lock at all; the two are
alternated ``--repeat`` times and the medians compared. Both sides build the same
envelope (uuid4, timestamp, json.dumps), so the ratio is the price of the bus's safety:
the inter-process lock and the single ``os.write`` on an ``O_APPEND`` descriptor.
Target: ratio >= 0.25. Afterwards every line must parse and every id be unique.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import filelock

from pytest_conductor.bus import MessageBus, _files
from pytest_conductor.util.timestamps import utc_now_iso

TARGET_RATIO = 0.25


def bus_writer(
    bus_dir: str, me: str, count: int, go: Event, times: mp.Queue[tuple[float, float]]
) -> None:
    if os.environ.get("BENCH_BUS_FILELOCK_OBJECTS"):
        # What the bus does on filelock < 3.30: a FileLock object per acquisition.
        _files._lock_descriptor = None
    bus = MessageBus(bus_dir, source=me)
    go.wait()
    start = time.perf_counter()
    for n in range(count):
        bus.post("PROGRESS", {"task_id": me, "progress_pct": n % 100, "current_subtask": "bench"})
    times.put((start, time.perf_counter()))


def plain_writer(
    path: str, me: str, count: int, go: Event, times: mp.Queue[tuple[float, float]]
) -> None:
    go.wait()
    start = time.perf_counter()
    for n in range(count):
        envelope = {
            "id": f"msg-{uuid.uuid4()}",
            "type": "PROGRESS",
            "source": me,
            "timestamp": utc_now_iso(),
            "payload": {"task_id": me, "progress_pct": n % 100, "current_subtask": "bench"},
        }
        with open(path, "a", encoding="utf-8") as handle:  # noqa: PTH123 - the baseline
            handle.write(json.dumps(envelope, ensure_ascii=False) + "\n")
    times.put((start, time.perf_counter()))


def timed_run(target: Any, path: str, processes: int, count: int) -> float:
    """Seconds from the first writer's start to the last writer's end."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    times: mp.Queue[tuple[float, float]] = ctx.Queue()
    workers = [
        ctx.Process(target=target, args=(path, f"w{i}", count, go, times)) for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let every process import and wait at the start line
    go.set()
    spans = [times.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise SystemExit(f"a writer failed with exit code {worker.exitcode}")
    # perf_counter is system-wide (CLOCK_MONOTONIC) on Linux, so spans compare across processes.
    return max(end for _, end in spans) - min(start for start, _ in spans)


def check(path: Path, expected: int) -> tuple[int, int, int]:
    """(lines, unparsable lines, duplicate ids) of a queue file."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    bad = 0
    ids = []
    for line in lines:
        try:
            ids.append(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            bad += 1
    duplicates = len(ids) - len(set(ids))
    if len(lines) != expected:
        print(f"  !! {path.name}: {len(lines)} lines, {expected} expected")
    return len(lines), bad, duplicates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000, help="per process")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument(
        "--filelock-objects",
        action="store_true",
        help="lock with filelock.FileLock objects (the fallback for filelock < 3.30)",
    )
    args = parser.parse_args()
    if args.filelock_objects:
        # Spawned writers read this; they do not share the parent's module state.
        os.environ["BENCH_BUS_FILELOCK_OBJECTS"] = "1"
        _files._lock_descriptor = None
    total = args.processes * args.messages

    primitive = "filelock.lock_descriptor" if _files._lock_descriptor else "filelock.FileLock"
    print("machine")
    print(f"  cpus: {os.cpu_count()}  platform: {platform.platform()}")
    print(f"  python: {sys.version.split()[0]} ({platform.python_implementation()})")
    print(f"  filelock: {filelock.__version__}  bus lock primitive: {primitive}")
    print(f"workload: {args.processes} processes x {args.messages} messages, {args.repeat} rounds")

    bus_rates: list[float] = []
    plain_rates: list[float] = []
    totals = {"bus": [0, 0, 0], "plain": [0, 0, 0]}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            bus = MessageBus(Path(tmp) / f"bus-{round_}")
            bus.init()
            bus_seconds = timed_run(bus_writer, str(bus.path), args.processes, args.messages)
            plain = Path(tmp) / f"plain-{round_}.jsonl"
            plain_seconds = timed_run(plain_writer, str(plain), args.processes, args.messages)
            bus_rates.append(total / bus_seconds)
            plain_rates.append(total / plain_seconds)
            for name, path in (("bus", bus.queue_path), ("plain", plain)):
                for i, value in enumerate(check(path, total)):
                    totals[name][i] += value
            print(
                f"  round {round_ + 1}: bus {total / bus_seconds:9,.0f} msg/s   "
                f"plain {total / plain_seconds:9,.0f} msg/s   "
                f"ratio {plain_seconds / bus_seconds:.2f}"
            )

    bus_rate = statistics.median(bus_rates)
    plain_rate = statistics.median(plain_rates)
    ratio = bus_rate / plain_rate
    print("result (medians)")
    print(f"  MessageBus.post:          {bus_rate:9,.0f} msg/s")
    print(f"  plain unlocked append:    {plain_rate:9,.0f} msg/s")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"  ratio bus/plain:          {ratio:9.2f}  ({verdict} the {TARGET_RATIO} target)")
    for name, (lines, bad, duplicates) in totals.items():
        expected = total * args.repeat
        print(
            f"  {name:5} lines {lines}/{expected}, lost {expected - lines}, "
            f"unparsable {bad}, duplicate ids {duplicates}"
        )
    lost = total * args.repeat - totals["bus"][0] + totals["bus"][1] + totals["bus"][2]
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
