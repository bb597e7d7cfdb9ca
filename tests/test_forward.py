"""The pure part of remote workers: a worker bus's changes, applied to the controller's."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_conductor.agents.dispatch import set_aside_events
from pytest_conductor.bus import BusError, MessageBus
from pytest_conductor.bus.forward import (
    LOCK_REQUESTS,
    BusMirror,
    BusTail,
    LockBroker,
    forwarded_to,
    lock_answer,
    lock_result,
    prepare_local_bus,
    request_lock,
    shares_bus,
    write_token,
)


def bus_at(path: Path, source: str = "controller") -> MessageBus:
    bus = MessageBus(path, source=source, warn=False)
    bus.init()
    return bus


def pump(tails: list[BusTail], mirror: BusMirror) -> None:
    for tail in tails:
        for change in tail.poll():
            mirror.apply(change)


def picture(bus_dir: Path) -> dict[str, object]:
    """What an orchestrator reads of a bus: queue, events, worker status, prompts, logs."""
    files = {}
    for folder in ("prompts", "logs"):
        for path in sorted((bus_dir / folder).glob("*")):
            files[f"{folder}/{path.name}"] = path.read_bytes()
    return {
        "queue": (bus_dir / "queue.jsonl").read_bytes(),
        "events": {p.name: p.read_bytes() for p in sorted((bus_dir / "events").glob("*"))},
        "status": json.loads((bus_dir / "worker-status.json").read_text()),
        "files": files,
    }


def test_a_worker_bus_ends_identical_on_the_controller(tmp_path: Path) -> None:
    worker = bus_at(tmp_path / "worker")
    agent = MessageBus(worker.path, source="worker-1.1-1", warn=False)
    controller = bus_at(tmp_path / "controller")
    tail, mirror = BusTail(worker.path), BusMirror(controller)

    worker.register_worker("worker-1.1-1", "1.1")
    worker.dispatched("worker-1.1-1", "1.1", "pg-1")
    (worker.path / "prompts").mkdir()
    (worker.path / "prompts" / "1.1-1.md").write_text("do it\n")
    log = worker.path / "logs" / "1.1-1.log"
    log.parent.mkdir()
    log.write_text("$ agent\n")
    pump([tail], mirror)
    agent.heartbeat("worker-1.1-1", 10)
    agent.progress("1.1", 50, "half", worker_id="worker-1.1-1")
    with log.open("a") as out:
        out.write("working\n")
    pump([tail], mirror)
    agent.complete("1.1", worker_id="worker-1.1-1")
    pump([tail], mirror)
    # A retry moves the event next to the log: the controller's copy moves too.
    set_aside_events(worker.path, "1.1", 1)
    pump([tail], mirror)
    assert picture(controller.path) == picture(worker.path)
    assert not (controller.path / "events" / "TASK_COMPLETE_1.1.event").exists()
    assert (controller.path / "logs" / "1.1-1.TASK_COMPLETE.event").exists()
    assert pump([tail], mirror) is None and tail.poll() == []


def test_two_workers_of_one_machine_send_each_line_once(tmp_path: Path) -> None:
    worker = bus_at(tmp_path / "worker")
    controller = bus_at(tmp_path / "controller")
    mirror = BusMirror(controller)
    first, second = BusTail(worker.path), BusTail(worker.path)
    worker.dispatched("w-1", "1.1")
    pump([first, second], mirror)
    worker.dispatched("w-2", "1.2")
    pump([second], mirror)
    worker.fail("1.3", "no")
    pump([first, second], mirror)
    assert picture(controller.path) == picture(worker.path)
    assert len(controller.messages()) == 3


def test_a_line_in_flight_waits_for_its_end(tmp_path: Path) -> None:
    worker = bus_at(tmp_path / "worker")
    controller = bus_at(tmp_path / "controller")
    tail, mirror = BusTail(worker.path), BusMirror(controller)
    line = worker.post("PROGRESS", {"task_id": "1.1", "progress_pct": 5, "current_subtask": ""})
    text = (worker.path / "queue.jsonl").read_bytes()
    (worker.path / "queue.jsonl").write_bytes(text[:-20])
    pump([tail], mirror)
    assert controller.messages() == []
    (worker.path / "queue.jsonl").write_bytes(text)
    pump([tail], mirror)
    assert controller.messages() == [line]


def test_a_replaced_log_is_sent_again_from_its_start(tmp_path: Path) -> None:
    worker = bus_at(tmp_path / "worker")
    controller = bus_at(tmp_path / "controller")
    tail, mirror = BusTail(worker.path), BusMirror(controller)
    log = worker.path / "logs" / "1.1-1.log"
    log.parent.mkdir()
    log.write_bytes(b"x" * 300_000)  # more than one poll sends
    pump([tail], mirror)
    assert (controller.path / "logs" / "1.1-1.log").stat().st_size < 300_000
    pump([tail], mirror)
    assert (controller.path / "logs" / "1.1-1.log").read_bytes() == log.read_bytes()
    log.unlink()
    log.write_bytes(b"new\n")
    pump([tail], mirror)
    assert (controller.path / "logs" / "1.1-1.log").read_bytes() == b"new\n"


@pytest.mark.parametrize(
    "change",
    [
        ("file", "../outside", 0, b"x"),
        ("file", "logs/../../x", 0, b"x"),
        ("file", "queue.jsonl", 0, b"x"),
        ("event", "../x.event", b""),
        ("event", "notes.txt", b""),
        ("status", "../w", {}),
        ("nonsense",),
    ],
)
def test_the_controller_refuses_changes_outside_the_bus(tmp_path: Path, change: tuple) -> None:
    mirror = BusMirror(bus_at(tmp_path / "controller"))
    with pytest.raises(BusError):
        mirror.apply(change)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "x").exists()


def test_sharing_is_told_by_the_controllers_token(tmp_path: Path) -> None:
    shared = tmp_path / "bus"
    token = write_token(shared)
    assert shares_bus(shared, token)
    assert not shares_bus(tmp_path / "copy", token)
    assert not shares_bus(shared, "another run")


def test_a_worker_bus_is_rotated_once_per_run(tmp_path: Path) -> None:
    bus = bus_at(tmp_path / "worker")
    bus.complete("1.1")  # an earlier run's event, copied along with the checkout
    assert prepare_local_bus(bus.path, "run-1", "/ctl/bus") is not None
    assert bus.events() == []
    assert forwarded_to(bus.path) == "/ctl/bus"
    bus.dispatched("w", "1.1")
    assert prepare_local_bus(bus.path, "run-1", "/ctl/bus") is None  # a second worker
    assert len(bus.messages()) == 1


@given(
    st.lists(
        st.one_of(st.just("poll"), st.sampled_from(["1.1", "1.2", "2.1"])),
        max_size=30,
    )
)
@settings(max_examples=30, deadline=None)
def test_any_interleaving_of_posts_and_polls_ends_in_the_same_queue(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    root = tmp_path_factory.mktemp("run")
    worker, controller = bus_at(root / "w"), bus_at(root / "c")
    tails, mirror = [BusTail(worker.path), BusTail(worker.path)], BusMirror(controller)
    for number, step in enumerate(steps):
        if step == "poll":
            pump(tails[number % 2 :], mirror)
        else:
            worker.progress(step, number % 100, "x", worker_id=f"w-{step}")
    pump(tails, mirror)
    assert picture(controller.path) == picture(worker.path)


class Forwarder:
    """A worker's forwarding loop without xdist: requests go to the controller's broker."""

    def __init__(self, worker_bus: Path, broker: LockBroker) -> None:
        self.tail = BusTail(worker_bus)
        self.worker_bus = worker_bus
        self.broker = broker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            for change in self.tail.poll():
                if change[0] == "lock":
                    lock_answer(self.worker_bus, change[1], self.broker.answer(change[2]))


def test_locks_of_two_machines_exclude_each_other_and_die_with_a_worker(tmp_path: Path) -> None:
    controller = bus_at(tmp_path / "controller")
    machines = []
    for name in ("a", "b"):
        prepare_local_bus(tmp_path / name, "run", str(controller.path))
        machines.append(Forwarder(tmp_path / name, LockBroker(controller.path)))
    a, b = machines
    try:
        ask = {"op": "lock", "path": "src/x.py", "task_id": "1.1", "ttl": 60}
        first = lock_result(request_lock(a.worker_bus, {**ask, "worker_id": "wa"}, timeout=10))
        second = lock_result(request_lock(b.worker_bus, {**ask, "worker_id": "wb"}, timeout=10))
        assert first.granted and not second.granted and second.holder == "wa"
        # The locks live in the controller's bus only.
        assert [info.worker_id for info in controller.locks()] == ["wa"]
        assert MessageBus(a.worker_bus, warn=False).locks() == []
        assert list((a.worker_bus / LOCK_REQUESTS).iterdir()) == []
        # Worker a's connection ends: the controller releases what its agents held.
        assert a.broker.release_all() == ["src/x.py"]
        third = lock_result(request_lock(b.worker_bus, {**ask, "worker_id": "wb"}, timeout=10))
        assert third.granted
        kinds = [m["type"] for m in controller.messages()]
        assert kinds == ["FILE_LOCK", "BLOCKED", "FILE_UNLOCK", "FILE_LOCK"]
    finally:
        for machine in machines:
            machine.stop.set()


def test_no_answer_is_an_error_naming_the_bus(tmp_path: Path) -> None:
    prepare_local_bus(tmp_path / "w", "run", "/ctl")
    with pytest.raises(BusError, match="no answer from the controller"):
        request_lock(tmp_path / "w", {"op": "lock"}, timeout=0.1)


def test_a_lock_request_is_carried_once_and_by_the_agents_own_worker(tmp_path: Path) -> None:
    worker = tmp_path / "w"
    prepare_local_bus(worker, "run", "/ctl")
    mine, sibling = BusTail(worker, pid=1), BusTail(worker, pid=2)
    answers: list[dict[str, object]] = []

    def ask(carrier: int | None) -> None:
        with pytest.raises(BusError, match="no answer"):
            request_lock(worker, {"op": "lock"}, timeout=0.3, carrier_pid=carrier)

    for carrier in (None, 1):
        thread = threading.Thread(target=ask, args=(carrier,))
        thread.start()
        while not list((worker / LOCK_REQUESTS).glob("*.request")):
            pass
        sent = [c for tail in (sibling, mine, sibling) for c in tail.poll() if c[0] == "lock"]
        answers += [change[2] for change in sent]
        thread.join()
    assert [a["carrier_pid"] for a in answers] == [None, 1]
    assert list((worker / LOCK_REQUESTS).iterdir()) == []
