"""The message bus in one process: formats, events, worker status, locks, rotation, damage."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import filelock
import pytest

from pytest_conductor.bus import BusError, BusLockTimeout, BusWarning, LockInfo, MessageBus, _files
from pytest_conductor.util.timestamps import format_iso, parse_iso, utc_now_iso

START = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    """A settable clock so that lock expiry is tested without sleeping."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus(tmp_path: Path, clock: Clock) -> MessageBus:
    b = MessageBus(tmp_path / ".message-bus", clock=clock)
    b.init()
    return b


def queue_lines(bus: MessageBus) -> list[str]:
    return bus.queue_path.read_text("utf-8").splitlines()


def of_type(bus: MessageBus, kind: str) -> list[dict[str, Any]]:
    return [m for m in bus.messages() if m["type"] == kind]


# -- timestamps and envelopes ----------------------------------------------------------


def test_utc_now_iso_is_the_bus_form_and_parses_as_readers_do() -> None:
    ts = utc_now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ts)
    # The exact call existing readers make.
    naive = datetime.fromisoformat(ts.replace("Z", ""))
    assert parse_iso(ts) == naive.replace(tzinfo=timezone.utc)


def test_parse_iso_accepts_offsets_and_naive_and_refuses_garbage() -> None:
    assert parse_iso("2026-11-27T14:00:00+02:00") == START
    assert parse_iso("2026-11-27T12:00:00") == START
    assert parse_iso("2026-11-27T12:00:00.000000Z") == START
    assert format_iso(START.astimezone(timezone(timedelta(hours=-5)))) == (
        "2026-11-27T12:00:00.000000Z"
    )
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        parse_iso("yesterday")


def test_init_creates_the_layout_and_keeps_what_is_there(tmp_path: Path) -> None:
    bus = MessageBus(tmp_path / "bus")
    bus.init()
    assert bus.queue_path.read_text() == ""
    assert bus.events_dir.is_dir()
    assert json.loads(bus.worker_status_path.read_text()) == {}
    assert json.loads(bus.locks_path.read_text()) == {}
    bus.post("PING", {})
    bus.register_worker("w1", "1.1")
    bus.init()
    assert len(queue_lines(bus)) == 1
    assert "w1" in bus.worker_status()


def test_post_writes_one_envelope_per_line(bus: MessageBus) -> None:
    first = bus.post("TASK_FAILED", {"task_id": "1.1", "error": "boom"})
    second = bus.post("CUSTOM", {"x": [1, "ü"]}, source="worker-1.2-1")
    lines = queue_lines(bus)
    assert [json.loads(line) for line in lines] == [first, second]
    assert set(first) == {"id", "type", "source", "timestamp", "payload"}
    assert first["source"] == "controller"
    assert second["source"] == "worker-1.2-1"
    assert first["id"].startswith("msg-")
    assert uuid.UUID(first["id"][4:]).version == 4
    assert first["id"] != second["id"]
    assert first["timestamp"] == "2026-11-27T12:00:00.000000Z"
    assert datetime.fromisoformat(first["timestamp"].replace("Z", "")) == START.replace(tzinfo=None)
    assert bus.messages() == [first, second]


def test_post_refuses_bad_types_and_payloads(bus: MessageBus) -> None:
    with pytest.raises(BusError, match="message type"):
        bus.post("../EVIL", {})
    with pytest.raises(BusError, match="JSON object"):
        bus.post("X", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(BusError, match="not JSON"):
        bus.post("X", {"when": datetime.now()})
    with pytest.raises(BusError, match="not JSON"):
        bus.post("X", {"pct": float("nan")})
    assert queue_lines(bus) == []


def test_post_of_a_mistyped_known_payload_warns_and_still_posts(bus: MessageBus) -> None:
    with pytest.warns(BusWarning, match=r"progress_pct should be a number or null, got 'abc'"):
        message = bus.post("PROGRESS", {"task_id": "1.1", "progress_pct": "abc"})
    assert bus.messages() == [message]
    assert any("progress_pct" in w for w in bus.warnings)


def test_post_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    bus = MessageBus(tmp_path / "nowhere")
    with pytest.raises(BusError, match="does not exist"):
        bus.post("PING", {})
    assert bus.messages() == []
    assert bus.worker_status() == {}
    assert bus.locks() == []


# -- events and convenience posts ------------------------------------------------------


def test_events_are_written_whole_and_read_back(bus: MessageBus) -> None:
    path = bus.write_event("TASK_COMPLETE", "1.10", "abc123")
    assert path == bus.events_dir / "TASK_COMPLETE_1.10.event"
    assert bus.read_event("TASK_COMPLETE", "1.10") == "abc123"
    assert bus.has_event("TASK_COMPLETE", "1.10")
    assert not bus.has_event("TASK_FAILED", "1.10")
    assert bus.read_event("TASK_FAILED", "1.10") is None
    bus.write_event("TASK_COMPLETE", "1.10", "def456")
    assert bus.read_event("TASK_COMPLETE", "1.10") == "def456"
    # No temporary file is left where pollers look.
    assert sorted(p.name for p in bus.events_dir.iterdir()) == ["TASK_COMPLETE_1.10.event"]
    assert bus.events() == ["TASK_COMPLETE_1.10.event"]


def test_an_events_folder_removed_by_hand_is_made_again(bus: MessageBus) -> None:
    bus.write_event("TASK_COMPLETE", "a")
    shutil.rmtree(bus.events_dir)
    bus.write_event("TASK_FAILED", "b", "boom")
    assert bus.events() == ["TASK_FAILED_b.event"]


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "1 1", "/etc/passwd"])
def test_unsafe_task_ids_are_refused(bus: MessageBus, bad: str) -> None:
    with pytest.raises(BusError, match="not usable on the bus"):
        bus.write_event("TASK_COMPLETE", bad)
    with pytest.raises(BusError):
        bus.complete(bad, "abc")
    assert bus.events() == []
    assert queue_lines(bus) == []


def test_complete_posts_and_writes_the_sha_event(bus: MessageBus) -> None:
    bus.register_worker("worker-1.1-1", "1.1")
    message = bus.complete("1.1", "abc123", ["src/a.py"], ["1.3"], worker_id="worker-1.1-1")
    assert message["type"] == "TASK_COMPLETE"
    assert message["payload"] == {
        "task_id": "1.1",
        "commit_sha": "abc123",
        "files_modified": ["src/a.py"],
        "unblocks": ["1.3"],
    }
    assert bus.read_event("TASK_COMPLETE", "1.1") == "abc123"
    entry = bus.worker_status()["worker-1.1-1"]
    assert entry["status"] == "COMPLETED"
    assert entry["progress_pct"] == 100
    bus.complete("1.2")
    assert bus.read_event("TASK_COMPLETE", "1.2") == ""


def test_fail_blocked_dispatched_and_parallel_complete(bus: MessageBus) -> None:
    bus.dispatched("worker-1.1-1", "1.1", "pg-1")
    bus.fail("1.1", "tests failed: 3 of 12")
    bus.blocked("1.3", "1.1", "dependency 1.1 failed")
    bus.parallel_complete("auth_20261127", passed=False)
    bus.parallel_complete("other", passed=True)
    types = [m["type"] for m in bus.messages()]
    assert types == [
        "WORKER_DISPATCHED",
        "TASK_FAILED",
        "TASK_BLOCKED",
        "PARALLEL_COMPLETE",
        "PARALLEL_COMPLETE",
    ]
    assert of_type(bus, "WORKER_DISPATCHED")[0]["payload"] == {
        "worker_id": "worker-1.1-1",
        "task_id": "1.1",
        "parallel_group": "pg-1",
    }
    assert of_type(bus, "TASK_BLOCKED")[0]["payload"] == {
        "task_id": "1.3",
        "blocked_by": "1.1",
        "reason": "dependency 1.1 failed",
    }
    assert bus.read_event("TASK_FAILED", "1.1") == "tests failed: 3 of 12"
    assert bus.read_event("TASK_BLOCKED", "1.3") == "dependency 1.1 failed"
    assert bus.read_event("PARALLEL_COMPLETE", "auth_20261127") == "FAIL"
    assert bus.read_event("PARALLEL_COMPLETE", "other") == "PASS"
    assert bus.events() == [
        "PARALLEL_COMPLETE_auth_20261127.event",
        "PARALLEL_COMPLETE_other.event",
        "TASK_BLOCKED_1.3.event",
        "TASK_FAILED_1.1.event",
    ]


def test_progress_posts_and_records_the_worker(bus: MessageBus) -> None:
    bus.register_worker("w1", "1.1")
    bus.progress("1.1", 45, "writing tests", worker_id="w1")
    assert of_type(bus, "PROGRESS")[0]["payload"] == {
        "task_id": "1.1",
        "progress_pct": 45,
        "current_subtask": "writing tests",
    }
    entry = bus.worker_status()["w1"]
    assert (entry["progress_pct"], entry["note"]) == (45, "writing tests")


# -- worker status ---------------------------------------------------------------------


def test_worker_lifecycle(bus: MessageBus, clock: Clock) -> None:
    bus.register_worker("worker-1.1-1", "1.1")
    entry = bus.worker_status()["worker-1.1-1"]
    assert entry == {
        "worker_id": "worker-1.1-1",
        "task_id": "1.1",
        "status": "RUNNING",
        "started_at": "2026-11-27T12:00:00.000000Z",
        "last_heartbeat": "2026-11-27T12:00:00.000000Z",
        "progress_pct": 0,
    }
    clock.advance(300)
    bus.heartbeat("worker-1.1-1")
    bus.heartbeat("worker-1.1-1", 30.5)
    entry = bus.worker_status()["worker-1.1-1"]
    assert entry["last_heartbeat"] == "2026-11-27T12:05:00.000000Z"
    assert entry["progress_pct"] == 30.5
    bus.set_progress("worker-1.1-1", 70, "refactoring")
    bus.set_worker_status("worker-1.1-1", "FAILED")
    entry = bus.worker_status()["worker-1.1-1"]
    assert (entry["progress_pct"], entry["note"], entry["status"]) == (70, "refactoring", "FAILED")
    assert entry["finished_at"] == "2026-11-27T12:05:00.000000Z"
    with pytest.raises(BusError, match="RUNNING, COMPLETED, FAILED, BLOCKED"):
        bus.set_worker_status("worker-1.1-1", "DONE")


def test_heartbeat_of_an_unknown_worker_adds_it(bus: MessageBus) -> None:
    bus.heartbeat("w9", task_id="2.1")
    assert bus.worker_status()["w9"]["task_id"] == "2.1"
    assert bus.worker_status()["w9"]["status"] == "RUNNING"


def test_bad_progress_values_warn_and_the_heartbeat_still_counts(
    bus: MessageBus, clock: Clock
) -> None:
    bus.register_worker("w1", "1.1")
    bus.heartbeat("w1", 20)
    clock.advance(60)
    with pytest.warns(BusWarning, match=r"progress_pct 'abc' of w1 is not a number; ignored"):
        bus.heartbeat("w1", "abc")
    entry = bus.worker_status()["w1"]
    assert entry["progress_pct"] == 20
    assert entry["last_heartbeat"] == "2026-11-27T12:01:00.000000Z"
    bus.heartbeat("w1", "55")
    assert bus.worker_status()["w1"]["progress_pct"] == 55
    with pytest.warns(BusWarning, match="outside 0..100; clamped"):
        bus.heartbeat("w1", 140)
    assert bus.worker_status()["w1"]["progress_pct"] == 100


# -- locks -----------------------------------------------------------------------------


def test_lock_grant_reacquire_and_release(bus: MessageBus, clock: Clock) -> None:
    first = bus.acquire_lock("./src//stores/../a.py", "w1", "1.1", ttl=600)
    assert first.granted and first
    assert first.path == "src/a.py"
    assert first.expires_at == "2026-11-27T12:10:00.000000Z"
    clock.advance(300)
    again = bus.acquire_lock("src/a.py", "w1", "1.1", ttl=600)
    assert again.granted
    assert again.expires_at == "2026-11-27T12:15:00.000000Z"
    (info,) = bus.locks()
    assert info == LockInfo(
        path="src/a.py",
        worker_id="w1",
        task_id="1.1",
        acquired_at="2026-11-27T12:00:00.000000Z",
        expires_at="2026-11-27T12:15:00.000000Z",
        active=True,
    )
    assert json.loads(bus.locks_path.read_text())["src/a.py"]["worker_id"] == "w1"
    # A renewal is not a new FILE_LOCK.
    assert [m["payload"]["filepath"] for m in of_type(bus, "FILE_LOCK")] == ["src/a.py"]
    assert bus.release_lock("src/a.py", "w1")
    assert bus.locks() == []
    assert of_type(bus, "FILE_UNLOCK")[0]["payload"]["filepath"] == "src/a.py"
    assert not bus.release_lock("src/a.py", "w1")


def test_contention_is_refused_with_the_holder_and_a_blocked_message(bus: MessageBus) -> None:
    assert bus.acquire_lock("src/a.py", "w1", "1.1")
    result = bus.acquire_lock("src/a.py", "w2", "1.2")
    assert not result.granted
    assert not result
    assert (result.holder, result.holder_task) == ("w1", "1.1")
    (blocked,) = of_type(bus, "BLOCKED")
    assert blocked["payload"]["task_id"] == "1.2"
    assert blocked["payload"]["waiting_for"] == "w1"
    assert blocked["payload"]["resource"] == "src/a.py"
    assert bus.locks()[0].worker_id == "w1"


def test_release_by_a_non_holder_is_refused(bus: MessageBus) -> None:
    bus.acquire_lock("src/a.py", "w1", "1.1")
    assert bus.release_lock("src/a.py", "w2") is False
    assert bus.locks()[0].worker_id == "w1"
    assert of_type(bus, "FILE_UNLOCK") == []


def test_an_expired_lock_is_taken_over(bus: MessageBus, clock: Clock) -> None:
    bus.acquire_lock("src/a.py", "w1", "1.1", ttl=60)
    clock.advance(61)
    assert [i.active for i in bus.locks()] == [False]
    assert bus.locks(include_expired=False) == []
    result = bus.acquire_lock("src/a.py", "w2", "1.2", ttl=60)
    assert result.granted
    assert result.took_over_from == "w1"
    assert bus.locks()[0].worker_id == "w2"
    assert of_type(bus, "FILE_LOCK")[-1]["payload"]["took_over_from"] == "w1"


def test_release_worker_locks_frees_all_of_one_worker(bus: MessageBus) -> None:
    bus.acquire_lock("src/a.py", "w1", "1.1")
    bus.acquire_lock("src/b.py", "w1", "1.1")
    bus.acquire_lock("src/c.py", "w2", "1.2")
    assert bus.release_worker_locks("w1") == ["src/a.py", "src/b.py"]
    assert [i.path for i in bus.locks()] == ["src/c.py"]
    assert bus.release_worker_locks("w1") == []
    assert len(of_type(bus, "FILE_UNLOCK")) == 2


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.py", "src/../../x", ".", "", "C:/x"])
def test_lock_paths_outside_the_project_are_refused(bus: MessageBus, bad: str) -> None:
    with pytest.raises(BusError, match="lock path"):
        bus.acquire_lock(bad, "w1", "1.1")
    assert bus.locks() == []


def test_lock_ttl_must_be_positive(bus: MessageBus) -> None:
    with pytest.raises(BusError, match="ttl"):
        bus.acquire_lock("a.py", "w1", "1.1", ttl=0)


# -- deadlock --------------------------------------------------------------------------


def test_two_tasks_waiting_for_each_other_are_a_deadlock(bus: MessageBus) -> None:
    assert bus.find_deadlock() is None
    bus.acquire_lock("a.py", "w1", "1.1")
    bus.acquire_lock("b.py", "w2", "1.2")
    bus.acquire_lock("b.py", "w1", "1.1")
    assert bus.find_deadlock() is None
    bus.acquire_lock("a.py", "w2", "1.2")
    assert bus.find_deadlock() == ["1.1", "1.2", "1.1"]


def test_a_three_task_cycle_is_found(bus: MessageBus) -> None:
    for n in (1, 2, 3):
        bus.acquire_lock(f"f{n}.py", f"w{n}", f"t{n}")
    bus.acquire_lock("f2.py", "w1", "t1")
    bus.acquire_lock("f3.py", "w2", "t2")
    assert bus.find_deadlock() is None
    bus.acquire_lock("f1.py", "w3", "t3")
    assert bus.find_deadlock() == ["t1", "t2", "t3", "t1"]


def test_waits_that_ended_do_not_count(bus: MessageBus, clock: Clock) -> None:
    bus.acquire_lock("a.py", "w1", "1.1", ttl=100)
    bus.acquire_lock("b.py", "w2", "1.2", ttl=1000)
    bus.acquire_lock("b.py", "w1", "1.1")
    bus.acquire_lock("a.py", "w2", "1.2")
    assert bus.find_deadlock() is not None
    # The holder released: the wait on a.py is over.
    bus.release_lock("a.py", "w1")
    assert bus.find_deadlock() is None
    # Held again by the same worker, but the waiter is now someone else's business only
    # if it waits again; an expired lock is no wait either.
    bus.acquire_lock("a.py", "w1", "1.1", ttl=100)
    bus.acquire_lock("a.py", "w2", "1.2")
    assert bus.find_deadlock() == ["1.1", "1.2", "1.1"]
    clock.advance(200)
    assert bus.find_deadlock() is None


def test_a_finished_waiter_is_not_waiting(bus: MessageBus) -> None:
    bus.acquire_lock("a.py", "w1", "1.1")
    bus.acquire_lock("b.py", "w2", "1.2")
    bus.acquire_lock("b.py", "w1", "1.1")
    bus.acquire_lock("a.py", "w2", "1.2")
    bus.fail("1.2", "gave up")
    assert bus.find_deadlock() is None


# -- rotation --------------------------------------------------------------------------


def fill(bus: MessageBus) -> None:
    bus.post("PING", {})
    bus.complete("1.1", "abc")
    bus.register_worker("w1", "1.1")
    bus.acquire_lock("a.py", "w1", "1.1")
    bus.write_json("verdict.json", {"verdict": "PASS"})
    (bus.path / "logs").mkdir()
    (bus.path / "logs" / "1.1.log").write_text("agent output\n")


def test_rotate_moves_the_previous_run_aside_and_starts_clean(bus: MessageBus) -> None:
    fill(bus)
    before = bus.queue_path.read_bytes()
    archive = bus.rotate()
    assert archive == bus.path / "runs" / "20261127T120000Z"
    assert (archive / "queue.jsonl").read_bytes() == before
    assert (archive / "events" / "TASK_COMPLETE_1.1.event").read_text() == "abc"
    assert "w1" in json.loads((archive / "worker-status.json").read_text())
    assert "a.py" in json.loads((archive / "locks.json").read_text())
    assert json.loads((archive / "verdict.json").read_text()) == {"verdict": "PASS"}
    assert (archive / "logs" / "1.1.log").read_text() == "agent output\n"
    assert bus.messages() == []
    assert bus.events() == []
    assert bus.worker_status() == {}
    assert bus.locks() == []
    assert bus.read_json("verdict.json") is None
    assert not bus.has_event("TASK_COMPLETE", "1.1")


def test_two_rotations_in_one_second_get_two_folders(bus: MessageBus) -> None:
    fill(bus)
    first = bus.rotate()
    bus.post("PING", {})
    second = bus.rotate()
    assert first is not None and second is not None
    assert first != second
    assert second.name == "20261127T120000Z-2"
    assert len((second / "queue.jsonl").read_text().splitlines()) == 1
    assert len((first / "queue.jsonl").read_text().splitlines()) == 3


def test_rotate_with_nothing_to_keep_returns_none(bus: MessageBus, tmp_path: Path) -> None:
    assert bus.rotate() is None
    assert not bus.runs_dir.exists()
    fresh = MessageBus(tmp_path / "never-made")
    assert fresh.rotate() is None
    assert fresh.queue_path.exists()


# -- damaged files ---------------------------------------------------------------------


def corrupt_copies(bus: MessageBus, name: str) -> list[Path]:
    return sorted(bus.path.glob(f"{name}.corrupt-*"))


@pytest.mark.parametrize(
    ("name", "garbage"),
    [
        ("worker-status.json", b'{"w1": {"worker_id": "w1", "sta'),
        ("worker-status.json", b"[1, 2, 3]"),
        ("worker-status.json", b"\xff\xfe not utf-8"),
        ("locks.json", b"not json at all"),
        ("locks.json", b'"a string"'),
    ],
)
def test_damaged_json_files_are_copied_aside_and_rewritten(
    bus: MessageBus, name: str, garbage: bytes
) -> None:
    (bus.path / name).write_bytes(garbage)
    with pytest.warns(BusWarning, match=rf"{re.escape(name)} was damaged .* copied to"):
        if name == "locks.json":
            assert bus.locks() == []
        else:
            assert bus.worker_status() == {}
    (copy,) = corrupt_copies(bus, name)
    assert copy.read_bytes() == garbage
    assert json.loads((bus.path / name).read_text()) == {}
    # The run goes on, with no further warning.
    bus.register_worker("w2", "1.2")
    assert bus.acquire_lock("x.py", "w2", "1.2")
    assert len(bus.warnings) == 1


def test_damaged_entries_are_dropped_and_the_rest_kept(bus: MessageBus) -> None:
    bus.register_worker("good", "1.1")
    status = json.loads(bus.worker_status_path.read_text())
    status["bad"] = "not an object"
    status["odd"] = {"task_id": "1.3", "progress_pct": "abc"}
    bus.worker_status_path.write_text(json.dumps(status))
    with pytest.warns(BusWarning) as record:
        data = bus.worker_status()
    text = str(record[0].message)
    assert "entry 'bad' is not an object" in text
    assert "progress_pct 'abc' of 'odd' is not a number" in text
    assert sorted(data) == ["good", "odd"]
    assert data["odd"]["progress_pct"] is None
    assert data["odd"]["worker_id"] == "odd"
    assert json.loads(bus.worker_status_path.read_text()) == data


def test_lock_entries_without_holder_or_expiry_are_dropped(bus: MessageBus) -> None:
    bus.acquire_lock("a.py", "w1", "1.1")
    locks = json.loads(bus.locks_path.read_text())
    locks["b.py"] = {"worker_id": "w2", "expires_at": "soon"}
    locks["c.py"] = ["w3"]
    bus.locks_path.write_text(json.dumps(locks))
    with pytest.warns(BusWarning, match="lock 'b.py' has no holder or expiry"):
        assert [i.path for i in bus.locks()] == ["a.py"]


def test_a_truncated_queue_line_is_skipped_with_a_warning(bus: MessageBus) -> None:
    good = bus.post("PING", {"n": 1})
    with bus.queue_path.open("ab") as handle:
        handle.write(b'{"id": "msg-x", "type": "PI')
    with pytest.warns(BusWarning, match=r"queue.jsonl line 2 is not a whole message"):
        assert bus.messages() == [good]
    # The next post lands behind the fragment; the message is saved, not lost.
    later = bus.post("PING", {"n": 2})
    with pytest.warns(BusWarning, match="message after it kept"):
        assert bus.messages() == [good, later]
    # Each damaged line is reported once per bus object.
    assert bus.messages() == [good, later]


def test_warn_false_only_collects(bus: MessageBus) -> None:
    quiet = MessageBus(bus.path, warn=False)
    bus.worker_status_path.write_text("[]")
    assert quiet.worker_status() == {}  # no BusWarning raised (filterwarnings=error)
    assert len(quiet.warnings) == 1
    assert "worker-status.json was damaged" in quiet.warnings[0]


def test_garbage_queue_lines_are_skipped(bus: MessageBus) -> None:
    bus.queue_path.write_bytes(b'not json\n[1, 2]\n{"no": "type"}\n\n')
    good = bus.post("PING", {})
    with pytest.warns(BusWarning) as record:
        assert bus.messages() == [good]
    assert len(record) == 3


def test_write_json_and_read_json(bus: MessageBus) -> None:
    verdict = {"verdict": "PASS", "summary": "all 4 nodes passed", "files_changed": 3}
    path = bus.write_json("verdict.json", verdict)
    assert path == bus.path / "verdict.json"
    assert bus.read_json("verdict.json") == verdict
    assert bus.read_json("missing.json", default={}) == {}
    with pytest.raises(BusError, match="plain name"):
        bus.write_json("../verdict.json", {})
    with pytest.raises(BusError, match="not JSON"):
        bus.write_json("x.json", {"a": object()})


def test_a_damaged_json_file_is_moved_aside_on_read(bus: MessageBus) -> None:
    (bus.path / "verdict.json").write_text('{"verdict": ')
    with pytest.warns(BusWarning, match="verdict.json is not JSON"):
        assert bus.read_json("verdict.json", default={}) == {}
    (copy,) = corrupt_copies(bus, "verdict.json")
    assert copy.read_text() == '{"verdict": '
    assert bus.read_json("verdict.json") is None


# -- the inter-process lock ------------------------------------------------------------


def test_a_filelock_holder_excludes_the_bus(bus: MessageBus, tmp_path: Path) -> None:
    # Other tools may lock bus files with filelock.FileLock; the bus must respect them.
    impatient = MessageBus(bus.path, lock_timeout=0.05)
    holder = filelock.FileLock(str(bus.path / ".queue.jsonl.lock"))
    with holder, pytest.raises(BusLockTimeout, match=r"\.queue\.jsonl\.lock"):
        impatient.post("PING", {})
    impatient.post("PING", {})
    assert len(bus.messages()) == 1


def test_without_the_descriptor_primitive_filelock_objects_are_used(
    bus: MessageBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # filelock < 3.30 has no lock_descriptor; the bus must still lock and work.
    monkeypatch.setattr(_files, "_lock_descriptor", None)
    bus.post("PING", {})
    bus.heartbeat("w1", 10, task_id="1.1")
    assert bus.acquire_lock("a.py", "w1", "1.1")
    impatient = MessageBus(bus.path, lock_timeout=0.05)
    holder = filelock.FileLock(str(bus.path / ".locks.json.lock"))
    with holder, pytest.raises(BusLockTimeout):
        impatient.locks()
    assert [m["type"] for m in bus.messages()] == ["PING", "FILE_LOCK"]


# -- the upstream worker template's shapes -----------------------------------------------


def write_locks(bus: MessageBus, locks: dict[str, Any]) -> None:
    bus.locks_path.write_text(json.dumps(locks, indent=2))


def register(bus: MessageBus, worker: str, status: str, beat: datetime = START) -> None:
    data = json.loads(bus.worker_status_path.read_text() or "{}")
    data[worker] = {"task_id": "up", "status": status, "last_heartbeat": format_iso(beat)}
    bus.worker_status_path.write_text(json.dumps(data))


def test_a_string_lock_is_a_lock_and_is_never_granted_to_another(
    bus: MessageBus, clock: Clock
) -> None:
    write_locks(bus, {"src/shared.py": "worker-up-1"})
    register(bus, "worker-up-1", "RUNNING")
    result = bus.acquire_lock("src/shared.py", "worker-1.1-1", "1.1")
    assert not result
    assert result.holder == "worker-up-1"
    assert result.holder_task == "up"
    # Read, never moved aside or rewritten into our shape.
    assert json.loads(bus.locks_path.read_text()) == {"src/shared.py": "worker-up-1"}
    assert list(bus.path.glob("*.corrupt-*")) == []
    assert bus.warnings == []
    [info] = bus.locks()
    assert (info.worker_id, info.active, info.expires_at) == ("worker-up-1", True, "")
    clock.advance(10 * 3600)  # no expiry: it lasts while its holder's heartbeat does
    register(bus, "worker-up-1", "RUNNING", beat=clock.now)
    assert not bus.acquire_lock("src/shared.py", "worker-1.1-1", "1.1")


def test_both_lock_shapes_live_in_one_file(bus: MessageBus) -> None:
    write_locks(bus, {"src/shared.py": "worker-up-1"})
    assert bus.acquire_lock("src/mine.py", "worker-1.1-1", "1.1")
    data = json.loads(bus.locks_path.read_text())
    assert data["src/shared.py"] == "worker-up-1"  # kept as its writer wrote it
    assert data["src/mine.py"]["worker_id"] == "worker-1.1-1"
    assert bus.release_worker_locks("worker-up-1") == ["src/shared.py"]
    assert set(json.loads(bus.locks_path.read_text())) == {"src/mine.py"}


@pytest.mark.parametrize("status", ["COMPLETE", "COMPLETED", "FAILED"])
def test_a_string_lock_ends_with_its_holders_worker(bus: MessageBus, status: str) -> None:
    write_locks(bus, {"src/shared.py": "worker-up-1"})
    register(bus, "worker-up-1", status)
    result = bus.acquire_lock("src/shared.py", "worker-1.1-1", "1.1")
    assert result.granted and result.took_over_from == "worker-up-1"


def test_a_string_lock_of_a_dead_worker_ends(bus: MessageBus, clock: Clock) -> None:
    write_locks(bus, {"src/shared.py": "worker-up-1"})
    register(bus, "worker-up-1", "RUNNING")
    clock.advance(bus.stale_after + 1)
    assert bus.expire_locks() == ["src/shared.py"]
    [message] = of_type(bus, "FILE_UNLOCK")
    assert message["payload"]["reason"] == "holder ended"
    assert bus.locks() == []


def test_unlock_event_is_named_for_the_templates_glob(bus: MessageBus) -> None:
    bus.acquire_lock("src/stores/data-store.ts", "w1", "1.1")
    assert not list(bus.events_dir.glob("FILE_UNLOCK_*.event"))
    bus.release_lock("src/stores/data-store.ts", "w1")
    [event] = bus.events_dir.glob("FILE_UNLOCK_*.event")  # the template's own pattern
    assert event.name == "FILE_UNLOCK_src%2Fstores%2Fdata-store.ts.event"
    assert event.read_text() == "src/stores/data-store.ts"
    # Taken again: the path is not free any more, so its event goes.
    bus.acquire_lock("src/stores/data-store.ts", "w2", "1.2")
    assert not event.exists()
    assert bus.release_worker_locks("w2") == ["src/stores/data-store.ts"]
    assert event.is_file()


def test_an_expired_lock_gets_its_unlock_event(bus: MessageBus, clock: Clock) -> None:
    bus.acquire_lock("src/a.py", "w1", "1.1", ttl=60)
    assert bus.expire_locks() == []
    clock.advance(61)
    assert bus.expire_locks() == ["src/a.py"]
    assert (bus.events_dir / "FILE_UNLOCK_src%2Fa.py.event").is_file()
    assert of_type(bus, "FILE_UNLOCK")[-1]["payload"]["reason"] == "expired"
    # Someone asking for another lock releases expired ones on the way too.
    bus.acquire_lock("src/b.py", "w1", "1.1", ttl=60)
    clock.advance(61)
    bus.acquire_lock("src/c.py", "w2", "1.2")
    assert (bus.events_dir / "FILE_UNLOCK_src%2Fb.py.event").is_file()


def test_worker_status_complete_is_read_as_completed(bus: MessageBus) -> None:
    entry = bus.set_worker_status("w1", "COMPLETE", task_id="1.1")
    assert entry["status"] == "COMPLETED"


def test_commit_sha_is_always_text_and_failures_carry_a_stack_trace(bus: MessageBus) -> None:
    bus.complete("1.1")
    assert of_type(bus, "TASK_COMPLETE")[0]["payload"]["commit_sha"] == ""
    bus.fail("1.2", "boom", stack_trace="line 1\nline 2")
    bus.fail("1.3", "boom")
    failed = [m["payload"] for m in of_type(bus, "TASK_FAILED")]
    assert failed[0]["stack_trace"] == "line 1\nline 2"
    assert "stack_trace" not in failed[1]


def test_rotation_keeps_event_files_and_folders_it_did_not_write(bus: MessageBus) -> None:
    fill(bus)
    (bus.events_dir / "PLAN_EVAL_COMPLETE_t.event").write_text("PASS")
    (bus.events_dir / "BOARD_RESOLVE.event").write_text("")
    (bus.path / "board").mkdir()
    (bus.path / "board" / "votes.json").write_text("{}")
    bus.release_lock("a.py", "w1")  # a FILE_UNLOCK event of the run
    archive = bus.rotate()
    assert archive is not None
    assert sorted(p.name for p in (archive / "events").iterdir()) == [
        "FILE_UNLOCK_a.py.event",
        "TASK_COMPLETE_1.1.event",
    ]
    assert bus.events() == ["BOARD_RESOLVE.event", "PLAN_EVAL_COMPLETE_t.event"]
    assert (bus.path / "board" / "votes.json").read_text() == "{}"


def test_rotation_keeps_the_last_runs(bus: MessageBus, clock: Clock) -> None:
    (bus.runs_dir).mkdir()
    (bus.runs_dir / "notes.txt").write_text("not ours")
    names = []
    for _ in range(4):
        bus.post("PING", {})
        archive = bus.rotate(keep=2)
        assert archive is not None
        names.append(archive.name)
        clock.advance(1)
    assert sorted(p.name for p in bus.runs_dir.iterdir()) == sorted([*names[2:], "notes.txt"])
    bus.post("PING", {})
    bus.rotate(keep=0)  # 0 keeps them all
    assert len([p for p in bus.runs_dir.iterdir() if p.is_dir()]) == 3
