"""Five processes on one bus at once: nothing torn, lost, duplicated or granted twice.

Each test starts five real Python processes that wait at a start line (a file appearing)
so that they really do collide, then checks the files they wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pytest_conductor.bus import MessageBus

PROCESSES = 5

# Runs in each child: wait for the start line, then hammer the bus. Kept as source text
# (not a function pickled through multiprocessing) so children import only the bus.
CHILD = r"""
import json, sys, time
from pathlib import Path
from pytest_conductor.bus import MessageBus

bus_dir, mode, me, count, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
bus = MessageBus(bus_dir, source=me)
deadline = time.monotonic() + 20
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("start line never appeared")
    time.sleep(0.001)
results = []
for n in range(count):
    if mode == "post":
        bus.post("PROGRESS_TICK", {"worker": me, "n": n})
    elif mode == "heartbeat":
        bus.heartbeat(me, n, task_id="t-" + me)
    elif mode == "lock":
        result = bus.acquire_lock(f"src/shared_{n}.py", me, "t-" + me)
        results.append([result.path, result.granted, result.holder])
print(json.dumps(results))
"""


def run_children(bus: MessageBus, mode: str, count: int) -> list[list[list[object]]]:
    go = bus.path.parent / f"go-{mode}"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(bus.path), mode, f"w{i}", str(count), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    # Give every child time to import and reach the start line.
    time.sleep(0.5)
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


def new_bus(tmp_path: Path) -> MessageBus:
    bus = MessageBus(tmp_path / ".message-bus")
    bus.init()
    return bus


def test_concurrent_posts_are_all_whole_and_none_lost(tmp_path: Path) -> None:
    bus = new_bus(tmp_path)
    per_process = 300
    run_children(bus, "post", per_process)
    lines = bus.queue_path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    envelopes = [json.loads(line) for line in lines[:-1]]  # every line parses
    assert len(envelopes) == PROCESSES * per_process
    assert len({e["id"] for e in envelopes}) == len(envelopes)
    for i in range(PROCESSES):
        # Each writer's own messages appear once each, in the order it posted them.
        mine = [e["payload"]["n"] for e in envelopes if e["source"] == f"w{i}"]
        assert mine == list(range(per_process))
    assert bus.messages() == envelopes


def test_concurrent_heartbeats_lose_no_worker(tmp_path: Path) -> None:
    bus = new_bus(tmp_path)
    beats = 40
    run_children(bus, "heartbeat", beats)
    status = bus.worker_status()
    assert sorted(status) == [f"w{i}" for i in range(PROCESSES)]
    for worker_id, entry in status.items():
        assert entry["progress_pct"] == beats - 1
        assert entry["task_id"] == f"t-{worker_id}"
    leftovers = [p.name for p in bus.path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_concurrent_lock_attempts_grant_each_path_once(tmp_path: Path) -> None:
    bus = new_bus(tmp_path)
    paths = 30
    outputs = run_children(bus, "lock", paths)
    winners: dict[str, list[str]] = {}
    for i, results in enumerate(outputs):
        for path, granted, holder in results:
            assert isinstance(path, str)
            if granted:
                winners.setdefault(path, []).append(f"w{i}")
            else:
                assert holder != f"w{i}"
    assert sorted(winners) == sorted(f"src/shared_{n}.py" for n in range(paths))
    assert all(len(w) == 1 for w in winners.values()), winners
    held = {info.path: info.worker_id for info in bus.locks()}
    assert held == {path: w[0] for path, w in winners.items()}
    counts = Counter(m["type"] for m in bus.messages())
    assert counts["FILE_LOCK"] == paths
    assert counts["BLOCKED"] == paths * (PROCESSES - 1)
