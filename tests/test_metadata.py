"""metadata.json: merged under the orchestrator's lock, never clobbered, never half-written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_conductor.report.metadata import (
    LOCK_NAME,
    ExecutionRecord,
    MetadataError,
    MetadataLockTimeout,
    completed_groups,
    merge_execution,
    metadata_lock,
    update_metadata,
)
from pytest_conductor.util.timestamps import parse_iso

RECORD = ExecutionRecord(
    status="FAILED",
    started_at="2026-11-27T12:00:00.000000Z",
    completed_at="2026-11-27T12:05:00.000000Z",
    total_workers_spawned=3,
    completed_workers=2,
    failed_workers=1,
    blocked_tasks=["1.4"],
    parallel_groups_completed=["pg-1"],
    failed_tasks={"1.2": "acceptance criterion failed: exists: a.txt"},
)

ORCHESTRATOR_FILE: dict[str, Any] = {
    "track_id": "auth_20261127",
    "status": "in_progress",
    "board_sessions": [{"id": "b-1"}],
    "loop_state": {
        "current_step": "PARALLEL_EXECUTE",
        "step_status": "IN_PROGRESS",
        "iteration": 4,
        "board_sessions": {"b-2": {"verdict": "GO"}},
        "parallel_state": {"custom_counter": 7, "failed_workers": 99},
        "checkpoints": {
            "PLAN": {"status": "PASSED", "agent": "planner"},
            "PARALLEL_EXECUTE": {"status": "IN_PROGRESS", "notes": "kept"},
        },
    },
    "future_field": {"nested": [1, 2, 3]},
}


def test_merge_sets_the_step_state_and_checkpoint() -> None:
    merged = merge_execution({}, RECORD)
    loop = merged["loop_state"]
    assert loop["current_step"] == "EVALUATE_EXECUTION"
    assert loop["step_status"] == "NOT_STARTED"
    assert loop["parallel_state"] == {
        "total_workers_spawned": 3,
        "completed_workers": 2,
        "failed_workers": 1,
        "blocked_tasks": ["1.4"],
        "parallel_groups_completed": ["pg-1"],
        "failed_tasks": {"1.2": "acceptance criterion failed: exists: a.txt"},
    }
    assert loop["checkpoints"]["PARALLEL_EXECUTE"] == {
        "status": "FAILED",
        "started_at": "2026-11-27T12:00:00.000000Z",
        "completed_at": "2026-11-27T12:05:00.000000Z",
        "agent": "pytest-conductor",
    }


def test_merge_keeps_unknown_keys_and_both_board_sessions() -> None:
    original = json.loads(json.dumps(ORCHESTRATOR_FILE))
    merged = merge_execution(ORCHESTRATOR_FILE, RECORD)
    assert original == ORCHESTRATOR_FILE, "the input must not be changed"
    assert merged["board_sessions"] == [{"id": "b-1"}]
    assert merged["loop_state"]["board_sessions"] == {"b-2": {"verdict": "GO"}}
    assert merged["future_field"] == {"nested": [1, 2, 3]}
    assert merged["track_id"] == "auth_20261127"
    assert merged["loop_state"]["iteration"] == 4
    state = merged["loop_state"]["parallel_state"]
    assert state["custom_counter"] == 7  # merged key by key
    assert state["failed_workers"] == 1  # ours replaced
    checkpoints = merged["loop_state"]["checkpoints"]
    assert checkpoints["PLAN"] == {"status": "PASSED", "agent": "planner"}
    assert checkpoints["PARALLEL_EXECUTE"]["notes"] == "kept"
    assert checkpoints["PARALLEL_EXECUTE"]["status"] == "FAILED"


def test_interrupted_run_keeps_the_current_step() -> None:
    record = ExecutionRecord("INTERRUPTED", RECORD.started_at, RECORD.completed_at)
    merged = merge_execution(ORCHESTRATOR_FILE, record)
    assert merged["loop_state"]["current_step"] == "PARALLEL_EXECUTE"
    assert merged["loop_state"]["step_status"] == "INTERRUPTED"
    assert merged["loop_state"]["checkpoints"]["PARALLEL_EXECUTE"]["status"] == "INTERRUPTED"
    fresh = merge_execution({}, record)
    assert fresh["loop_state"]["current_step"] != "EVALUATE_EXECUTION"


def test_loop_state_that_is_not_an_object_is_not_merged_into() -> None:
    with pytest.raises(MetadataError, match="loop_state is a str"):
        merge_execution({"loop_state": "weird"}, RECORD)


def test_update_creates_a_missing_file(tmp_path: Path) -> None:
    path = update_metadata(tmp_path, RECORD)
    assert path == tmp_path / "metadata.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["loop_state"]["checkpoints"]["PARALLEL_EXECUTE"]["status"] == "FAILED"
    assert not (tmp_path / LOCK_NAME).exists(), "the lock must be released"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"], "no temp file left"


def test_update_merges_into_the_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(ORCHESTRATOR_FILE), encoding="utf-8")
    update_metadata(tmp_path, RECORD)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["board_sessions"] == ORCHESTRATOR_FILE["board_sessions"]
    assert data["loop_state"]["board_sessions"] == {"b-2": {"verdict": "GO"}}
    assert data["future_field"] == {"nested": [1, 2, 3]}
    assert data["loop_state"]["current_step"] == "EVALUATE_EXECUTION"


@pytest.mark.parametrize("content", ['{"loop_state": {', "[1, 2]", ""])
def test_a_file_that_does_not_parse_is_left_as_it_is(tmp_path: Path, content: str) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MetadataError, match=r"metadata\.json not updated"):
        update_metadata(tmp_path, RECORD)
    assert path.read_text(encoding="utf-8") == content
    assert not (tmp_path / LOCK_NAME).exists()


def test_held_lock_times_out_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text('{"a": 1}', encoding="utf-8")
    (tmp_path / LOCK_NAME).mkdir()
    started = time.monotonic()
    with pytest.raises(MetadataLockTimeout) as info:
        update_metadata(tmp_path, RECORD, lock_timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert str(info.value) == (
        f"metadata.json not updated: lock {tmp_path / LOCK_NAME} held for 0.2s"
    )
    assert path.read_text(encoding="utf-8") == '{"a": 1}'
    assert (tmp_path / LOCK_NAME).is_dir(), "someone else's lock is not ours to remove"


def test_waits_for_a_lock_that_is_released(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_NAME
    lock.mkdir()
    releaser = threading.Timer(0.2, lock.rmdir)
    releaser.start()
    try:
        update_metadata(tmp_path, RECORD, lock_timeout=5)
    finally:
        releaser.join()
    assert (tmp_path / "metadata.json").is_file()


def test_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    with (
        metadata_lock(tmp_path, timeout=1),
        pytest.raises(MetadataLockTimeout),
        metadata_lock(tmp_path, timeout=0.1),
    ):
        pass  # pragma: no cover - must not be reached
    with metadata_lock(tmp_path, timeout=0.1):
        pass  # released after the first block


def test_missing_track_folder_is_a_metadata_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot create"):
        update_metadata(tmp_path / "nope", RECORD)


def test_concurrent_updates_do_not_lose_keys(tmp_path: Path) -> None:
    """Writers holding the lock serialise: each one's key survives the others."""
    path = tmp_path / "metadata.json"
    path.write_text("{}", encoding="utf-8")

    def orchestrator_write(key: str) -> None:
        with metadata_lock(tmp_path, timeout=10):
            data = json.loads(path.read_text(encoding="utf-8"))
            data[key] = True
            time.sleep(0.01)  # widen the race window a real reader-writer would have
            path.write_text(json.dumps(data), encoding="utf-8")

    threads = [threading.Thread(target=orchestrator_write, args=(f"k{i}",)) for i in range(4)]
    threads.append(threading.Thread(target=update_metadata, args=(tmp_path, RECORD)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data = json.loads(path.read_text(encoding="utf-8"))
    assert {f"k{i}" for i in range(4)} <= set(data)
    assert "loop_state" in data


def test_timestamps_are_utc_with_z() -> None:
    merged = merge_execution({}, RECORD)
    checkpoint = merged["loop_state"]["checkpoints"]["PARALLEL_EXECUTE"]
    for key in ("started_at", "completed_at"):
        assert checkpoint[key].endswith("Z")
        parse_iso(checkpoint[key])


def test_completed_groups_need_every_task_passed() -> None:
    groups = {"pg-1": ["a", "b"], "pg-2": ["c"], "pg-3": ["d"], "empty": []}
    statuses = {"a": "passed", "b": "passed", "c": "failed"}
    assert completed_groups(groups, statuses) == ["pg-1"]
