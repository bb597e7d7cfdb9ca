"""A failed node is annotated at its line in plan.md by the real
``pytest-github-actions-annotate-failures`` plugin; blocked nodes are not annotated."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PlanWriter

pytestmark = pytest.mark.integration

pytest.importorskip(
    "pytest_github_actions_annotate_failures",
    reason="pytest-github-actions-annotate-failures is not installed "
    "(pip install -e '.[integration]')",
)

PLAN = """
dag:
  nodes:
    - id: "1.1"
      name: "Create the store"
      acceptance: [{exists: "store.py"}]
    - id: "1.2"
      name: "Add save()"
      depends_on: ["1.1"]
      acceptance:
        - contains: "store.py"
          pattern: "def save"
    - id: "1.3"
      name: "Wire it in"
      depends_on: ["1.2"]
      acceptance: [{exists: "store.py"}]
    - id: "2.1"
      name: "Independent"
      acceptance: [{exists: "missing.txt"}]
"""
ERROR = re.compile(r"::error file=(?P<file>[^,]+),line=(?P<line>\d+)::(?P<message>.*)")


def _plan_line(text: str, node_id: str) -> int:
    lines = text.splitlines()
    return next(i for i, line in enumerate(lines, 1) if f'id: "{node_id}"' in line)


@pytest.mark.parametrize(
    "workers", [pytest.param("0", id="in-process"), pytest.param("2", marks=pytest.mark.slow)]
)
def test_failed_nodes_are_annotated_at_their_plan_line(
    pytester: pytest.Pytester,
    write_plan: PlanWriter,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
) -> None:
    plan = write_plan(PLAN)
    (pytester.path / "store.py").write_text("class Store: ...\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    result = pytester.runpytest_subprocess("--conductor-track=t", "-n", workers)
    result.assert_outcomes(passed=1, failed=2, skipped=1)
    errors = [m for line in result.errlines if (m := ERROR.match(line))]
    text = plan.read_text(encoding="utf-8")
    # One annotation per failed node, at the node's own line; none for the blocked 1.3.
    assert sorted((m["file"], int(m["line"])) for m in errors) == [
        ("conductor/tracks/t/plan.md", _plan_line(text, "1.2")),
        ("conductor/tracks/t/plan.md", _plan_line(text, "2.1")),
    ]
    by_line = {int(m["line"]): m["message"] for m in errors}
    message = by_line[_plan_line(text, "1.2")]
    assert message.startswith("task 1.2: Add save()%0A")
    assert "def save" in message  # the failure itself, not only where
    assert not any("1.3" in m["message"] for m in errors)
