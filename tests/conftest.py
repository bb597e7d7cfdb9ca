from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# Imported here, before any test, on purpose: pytester's in-process runs drop the modules
# a run imported, and PyYAML's C parser keeps the first yaml.nodes classes it saw, so a
# yaml imported for the first time inside one run parses wrongly in every later run
# (a plan then reads as "no DAG block"). Holding it from the start keeps it one module.
import yaml  # noqa: F401

# Imported here, before any in-process pytester run, on purpose: pytester restores
# sys.modules after each run, so a module first imported inside a run is imported afresh
# by the next. PyYAML's C extension is not: the next run's fresh ``yaml.nodes`` classes are
# not the ones libyaml builds, and every plan reads as "no DAG block". (The plugin imports
# the plan reader lazily, so nothing else imports it before the first run.)
import pytest_conductor.plan.reader  # noqa: F401

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
# Commits that work on any machine, whatever its git configuration.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with :data:`GIT_ENV` (and ``repo`` as HOME); its stdout."""
    env = {**os.environ, **GIT_ENV, "HOME": str(repo)}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


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
