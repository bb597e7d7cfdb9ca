"""metadata.json: merged under the orchestrator's lock, never clobbered, never half-written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_conductor.report.metadata import (
    LOCK_NAME,
    STEP_STATUSES,
    ExecutionRecord,
    MetadataError,
    MetadataLockTimeout,
    completed_groups,
    merge_execution,
    metadata_lock,
    metadata_shape,
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
    assert merged["version"] == 3  # a new file: the orchestrator must not migrate it
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
        "last_updated": "2026-11-27T12:05:00.000000Z",
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


def test_interrupted_run_is_dispatched_again_and_says_so_in_our_key() -> None:
    record = ExecutionRecord("INTERRUPTED", RECORD.started_at, updated_at=RECORD.completed_at)
    merged = merge_execution(ORCHESTRATOR_FILE, record)
    loop = merged["loop_state"]
    assert loop["current_step"] == "PARALLEL_EXECUTE"
    # Not IN_PROGRESS (nobody runs it) and no word of our own: the orchestrator starts
    # the step again, skipping completed_tasks.
    assert loop["step_status"] == "NOT_STARTED"
    assert loop["checkpoints"]["PARALLEL_EXECUTE"]["status"] == "NOT_STARTED"
    assert loop["parallel_state"]["interrupted_at"] == RECORD.completed_at
    assert "completed_at" not in loop["checkpoints"]["PARALLEL_EXECUTE"]
    fresh = merge_execution({}, record)
    assert fresh["loop_state"]["current_step"] == "PARALLEL_EXECUTE"


@pytest.mark.parametrize("status", ["RUNNING", "PASSED", "FAILED", "INTERRUPTED"])
def test_step_status_stays_in_the_orchestrators_vocabulary(status: str) -> None:
    record = ExecutionRecord(status, RECORD.started_at, updated_at=RECORD.completed_at)
    loop = merge_execution(ORCHESTRATOR_FILE, record)["loop_state"]
    assert loop["step_status"] in STEP_STATUSES
    assert loop["checkpoints"]["PARALLEL_EXECUTE"]["status"] in STEP_STATUSES


def test_a_running_record_says_in_progress_and_clears_the_last_interruption() -> None:
    interrupted = ExecutionRecord(
        "INTERRUPTED", RECORD.started_at, updated_at="2026-11-27T12:01:00Z"
    )
    before = merge_execution(ORCHESTRATOR_FILE, interrupted)
    running = ExecutionRecord(
        "RUNNING", "2026-11-27T13:00:00.000000Z", updated_at="2026-11-27T13:00:02.000000Z"
    )
    loop = merge_execution(before, running)["loop_state"]
    assert (loop["current_step"], loop["step_status"]) == ("PARALLEL_EXECUTE", "IN_PROGRESS")
    checkpoint = loop["checkpoints"]["PARALLEL_EXECUTE"]
    assert checkpoint["status"] == "IN_PROGRESS"
    assert checkpoint["started_at"] == "2026-11-27T13:00:00.000000Z"
    assert checkpoint["last_updated"] == "2026-11-27T13:00:02.000000Z"
    assert checkpoint["agent"] == "pytest-conductor"
    assert checkpoint["notes"] == "kept"
    assert "interrupted_at" not in loop["parallel_state"]


def test_parallel_groups_completed_is_appended_to() -> None:
    first = merge_execution({}, RECORD)
    second = ExecutionRecord(
        "PASSED", RECORD.started_at, parallel_groups_completed=["pg-2", "pg-1"]
    )
    state = merge_execution(first, second)["loop_state"]["parallel_state"]
    assert state["parallel_groups_completed"] == ["pg-1", "pg-2"]


def test_completed_tasks_adds_what_passed_and_drops_what_failed_or_was_blocked() -> None:
    data = {"version": 3, "completed_tasks": ["0.9", "1.2", "1.1"], "loop_state": {}}
    record = ExecutionRecord(
        "FAILED",
        RECORD.started_at,
        done_tasks=["1.1", "1.3"],
        undone_tasks=["1.2", "1.4"],
        plan_ids=["1.1", "1.2", "1.3", "1.4"],
    )
    merged = merge_execution(data, record)
    # The plan's nodes in plan order, then entries the plan does not know, kept.
    assert merged["completed_tasks"] == ["1.1", "1.3", "0.9"]
    assert merged["version"] == 3


GOOGLE_FILE: dict[str, Any] = {
    "track_id": "auth_20261127",
    "type": "feature",
    "status": "new",
    "created_at": "2026-11-27T09:00:00Z",
    "updated_at": "2026-11-27T09:00:00Z",
    "description": "Sign in with a password",
}


def test_google_conductor_file_is_answered_in_its_own_vocabulary() -> None:
    assert metadata_shape(GOOGLE_FILE) == "google"
    running = ExecutionRecord(
        "RUNNING", RECORD.started_at, updated_at="2026-11-27T12:00:02.500000Z", plan_ids=["1.1"]
    )
    during = merge_execution(GOOGLE_FILE, running)
    assert during["status"] == "in_progress"
    assert during["updated_at"] == "2026-11-27T12:00:02Z"
    assert "loop_state" not in during and "completed_tasks" not in during
    assert "version" not in during
    done = ExecutionRecord(
        "PASSED",
        RECORD.started_at,
        completed_at="2026-11-27T12:05:00.000000Z",
        updated_at="2026-11-27T12:05:00.000000Z",
        total_workers_spawned=1,
        completed_workers=1,
        done_tasks=["1.1"],
        plan_ids=["1.1"],
    )
    after = merge_execution(during, done)
    assert after["status"] == "completed"
    assert after["description"] == "Sign in with a password"
    assert set(after) == set(GOOGLE_FILE) | {"pytest_conductor"}
    own = after["pytest_conductor"]
    assert own["status"] == "PASSED"
    assert own["completed_tasks"] == ["1.1"]
    assert own["completed_workers"] == 1


def test_google_status_stays_in_progress_until_every_node_is_done() -> None:
    failed = ExecutionRecord(
        "FAILED", RECORD.started_at, done_tasks=["1.1"], plan_ids=["1.1", "1.2"]
    )
    assert merge_execution(GOOGLE_FILE, failed)["status"] == "in_progress"
    cancelled = {**GOOGLE_FILE, "status": "cancelled"}
    assert merge_execution(cancelled, failed)["status"] == "cancelled"


def test_shape_is_decided_by_the_keys_present() -> None:
    assert metadata_shape({}) == "orchestrator"
    assert metadata_shape({**GOOGLE_FILE, "loop_state": {}}) == "orchestrator"
    assert metadata_shape({**GOOGLE_FILE, "version": 3}) == "orchestrator"
    assert metadata_shape({"status": "new"}) == "orchestrator"


def test_deeply_nested_file_is_reported_and_left(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    text = '{"a": ' * 100_000 + "1" + "}" * 100_000
    path.write_text(text)
    with pytest.raises(MetadataError, match="nested too deeply"):
        update_metadata(tmp_path, RECORD)
    assert path.read_text() == text
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_file_nested_deep_but_readable_is_merged_without_walking_it(tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(600):  # json reads it; a deep copy of it would pass the recursion limit
        deep = {"a": deep}
    merged = merge_execution({"orchestrator_data": deep, "loop_state": {}}, RECORD)
    assert merged["orchestrator_data"] is deep


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


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    other=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5),
    loop=st.none() | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    status=st.sampled_from(["RUNNING", "PASSED", "FAILED", "INTERRUPTED"]),
)
def test_merge_keeps_every_other_key_or_refuses_cleanly(
    other: dict[str, Any], loop: dict[str, Any] | None, status: str
) -> None:
    data = dict(other)
    if loop is not None:
        data["loop_state"] = loop
    record = ExecutionRecord(
        status, RECORD.started_at, updated_at=RECORD.completed_at, plan_ids=["1.1"]
    )
    try:
        merged = merge_execution(data, record)
    except MetadataError:
        return  # a key we must write into is not an object: reported, file left alone
    ours = {"loop_state", "completed_tasks", "version", "status", "updated_at", "pytest_conductor"}
    for key, value in data.items():
        if key not in ours:
            assert merged[key] == value
    if metadata_shape(data) == "orchestrator":
        assert merged["loop_state"]["step_status"] in STEP_STATUSES
        for key, value in (loop or {}).items():
            if key not in {"current_step", "step_status", "checkpoints", "parallel_state"}:
                assert merged["loop_state"][key] == value
    else:
        assert merged["status"] in {"in_progress", "cancelled"}  # none done: not completed
