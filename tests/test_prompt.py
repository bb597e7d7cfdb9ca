"""The prompt file of an agent worker."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pytest_conductor.acceptance import parse_criteria
from pytest_conductor.agents.prompt import (
    DependencyResult,
    PreviousFailure,
    PromptInput,
    dependency_results,
    describe_criterion,
    render_prompt,
)
from pytest_conductor.plan.reader import Node, Plan

ROOT = Path("/project")
BUS = ROOT / "conductor/tracks/auth/.message-bus"
NODE = Node(
    id="1.3",
    name="Login form",
    type="ui",
    files=("src/login.tsx", "src/login.css"),
    depends_on=("1.1", "1.2"),
    phase="1",
)
PLAN = Plan(
    path=ROOT / "conductor/tracks/auth/plan.md",
    nodes=(Node(id="1.1", name="Data store"), Node(id="1.2", name="API client"), NODE),
)


BASE = PromptInput(
    track="auth",
    node=NODE,
    worker_id="worker-1.3-1795780800123",
    root=ROOT,
    bus_dir=BUS,
    plan_path=PLAN.path,
    criteria=parse_criteria(
        [
            "The form looks right",
            {"exists": "src/login.tsx"},
            {"contains": "src/login.tsx", "pattern": "export function Login"},
            {"run": "npm test -- login"},
            {"pytest": "tests/test_login.py -k form"},
            {"event": "TASK_COMPLETE", "task": "1.2"},
        ]
    ),
    dependencies=[
        DependencyResult("1.1", "Data store", "passed; commit a1b2c3d"),
        DependencyResult("1.2", "API client", "passed; files: src/api.ts"),
    ],
    parallel_group="pg-2",
    heartbeat=300.0,
    timeout=1800.0,
)


def _input(**changes: Any) -> PromptInput:
    return dataclasses.replace(BASE, **changes)


def test_the_prompt_names_the_task_its_files_and_the_worker() -> None:
    text = render_prompt(_input())
    assert text.startswith("# Task 1.3: Login form\n")
    for expected in (
        "- type: ui",
        "- phase: 1",
        "- files: `src/login.tsx`, `src/login.css`",
        "- parallel group: pg-2",
        f"- project root: `{ROOT}`",
        "- plan: `conductor/tracks/auth/plan.md`",
        "worker-1.3-1795780800123",
        f"Message bus: `{BUS}`",
    ):
        assert expected in text


def test_the_prompt_describes_each_acceptance_criterion() -> None:
    text = render_prompt(_input())
    assert "1. The form looks right (no machine checks this one" in text
    assert "2. these paths exist: `src/login.tsx`" in text
    assert "3. the file `src/login.tsx` matches the regular expression `export function Login`" in (
        text
    )
    assert "4. the command `npm test -- login` exits with status 0" in text
    assert "5. `pytest tests/test_login.py -k form` passes" in text
    assert "6. the bus event TASK_COMPLETE exists for task 1.2" in text


def test_the_prompt_gives_the_exact_bus_commands() -> None:
    text = render_prompt(_input())
    for command in (
        "`conductor-bus heartbeat --progress 40`",
        '`conductor-bus progress 60 --note "writing the tests"`',
        "`conductor-bus lock src/login.tsx`",
        "`conductor-bus unlock src/login.tsx`",
        "`conductor-bus complete --files src/login.tsx src/login.css`",
        '`conductor-bus fail --error "what went wrong"`',
    ):
        assert command in text
    assert "at least every 5m" in text
    assert "Silent for 10m" in text
    assert "longer than 30m" in text
    assert f"`--bus {BUS} --task 1.3 --worker worker-1.3-1795780800123`" in text


def test_the_bus_command_can_be_a_python_module() -> None:
    text = render_prompt(_input(bus_command="/venv/bin/python -m pytest_conductor.cli"))
    assert "`/venv/bin/python -m pytest_conductor.cli heartbeat --progress 40`" in text
    assert "`conductor-bus " not in text


def test_the_prompt_lists_dependencies_and_their_results() -> None:
    text = render_prompt(_input())
    assert "- 1.1 Data store: passed; commit a1b2c3d" in text
    assert "- 1.2 API client: passed; files: src/api.ts" in text
    assert "None: this task starts" in render_prompt(_input(dependencies=[]))


def test_a_retry_prompt_holds_the_previous_failure() -> None:
    first = render_prompt(_input(attempts=3))
    assert "This is attempt 1 of 3." in first
    assert "failed" not in first.split("## Reporting")[0].lower()
    previous = PreviousFailure(
        attempt=1,
        reason="agent exited with status 2",
        failed_criteria=("exists: src/login.tsx: expected ...; seen missing: src/login.tsx",),
        output_tail="npm ERR! missing script: build",
    )
    text = render_prompt(_input(attempt=2, attempts=3, previous=previous))
    assert "This is attempt 2 of 3." in text
    assert "## Attempt 1 failed" in text
    assert "Reason: agent exited with status 2" in text
    assert "- exists: src/login.tsx: expected ...; seen missing: src/login.tsx" in text
    assert "```text\nnpm ERR! missing script: build\n```" in text


def test_no_criteria_and_no_files_still_read_well() -> None:
    bare = Node(id="9", name="Free task")
    text = render_prompt(_input(node=bare, criteria=[], dependencies=[]))
    assert "- files: (none named)" in text
    assert "None are written" in text
    assert "`conductor-bus complete --files PATH ...`" in text


def test_describe_criterion_of_an_extension_kind() -> None:
    (criterion,) = parse_criteria({"http": "GET /health"}, extra_kinds=["http"])
    assert describe_criterion(criterion) == "http: GET /health (checked by an extension)"


def _message(kind: str, **payload: object) -> dict[str, object]:
    return {"type": kind, "payload": payload, "source": "x", "timestamp": "t", "id": "m"}


def test_dependency_results_come_from_the_bus() -> None:
    messages = [
        _message("TASK_FAILED", task_id="1.1", error="first try failed"),
        _message("TASK_COMPLETE", task_id="1.1", commit_sha="a1b2c3d", files_modified=["s.py"]),
        _message("TASK_COMPLETE", task_id="9.9", commit_sha="zzz", files_modified=[]),
        _message("PROGRESS", task_id="1.2", progress_pct=50),
    ]
    results = dependency_results(NODE, PLAN, messages, {"1.1", "1.2", "1.3"}, {})
    assert results == [
        DependencyResult("1.1", "Data store", "passed; commit a1b2c3d; files: s.py"),
        DependencyResult("1.2", "API client", "passed (nothing reported on the bus)"),
    ]


def test_a_deselected_dependency_shows_its_last_recorded_outcome() -> None:
    results = dependency_results(NODE, PLAN, [], {"1.3"}, {"1.1": "passed"})
    assert [r.result for r in results] == [
        "not run now; last recorded outcome: passed",
        "not run now; last recorded outcome: unknown",
    ]
