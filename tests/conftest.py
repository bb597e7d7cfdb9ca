from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# Loaded here, before any in-process pytester run: pytester drops the modules a run
# imported, and a re-imported PyYAML would build its nodes with the classes of the first
# import (its C extension cannot be re-imported), which the plan reader then misreads.
import yaml  # noqa: F401

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

PlanWriter = Callable[..., Path]


def render_plan(yaml_text: str, *, preamble: str = "# Plan\n\n") -> str:
    return f"{preamble}```yaml\n{textwrap.dedent(yaml_text).strip()}\n```\n"


@pytest.fixture
def write_plan(pytester: pytest.Pytester) -> PlanWriter:
    """Write ``conductor/tracks/<track>/plan.md`` into the pytester folder from a YAML dag."""

    def write(yaml_text: str, track: str = "t", *, raw: bool = False) -> Path:
        folder = pytester.path / "conductor" / "tracks" / track
        folder.mkdir(parents=True, exist_ok=True)
        plan = folder / "plan.md"
        plan.write_text(yaml_text if raw else render_plan(yaml_text), encoding="utf-8")
        return plan

    return write


@pytest.fixture
def example(pytester: pytest.Pytester) -> Callable[[str], Path]:
    """Copy one of examples/<name> into the pytester folder."""

    def copy(name: str) -> Path:
        shutil.copytree(EXAMPLES / name, pytester.path, dirs_exist_ok=True)
        return pytester.path

    return copy
