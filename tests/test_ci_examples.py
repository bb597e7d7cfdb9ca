"""The CI configurations of ``examples/ci/``: identical to what docs/ci.md shows, and their
shell scripts run for real, as the CI system would run them, in a throwaway git
repository with a passing and a failing track.

The real CI tools (check-jsonschema, shellcheck, actionlint) check the same files in
``tests/integration/test_ci_tools.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import GIT_ENV, git, needs_git, render_plan

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"
DOC = ROOT / "docs" / "ci.md"
GITHUB_MATRIX = CI / "github" / "conductor.yml"
GITHUB_SINGLE = CI / "github" / "conductor-single-job.yml"
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
GENERIC = CI / "run-tracks.sh"
EXAMPLES = (GITHUB_MATRIX, GITHUB_SINGLE, GITLAB, GENERIC)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def github_step(path: Path, job: str, name: str | None = None, *, step_id: str = "") -> str:
    """The ``run:`` script of a step of a workflow, by name or id."""
    for step in load(path)["jobs"][job]["steps"]:
        chosen = step.get("id") == step_id if step_id else step.get("name") == name
        if "run" in step and chosen:
            return str(step["run"])
    raise AssertionError(f"no step {name or step_id} in {path.name}")


def gitlab_script(path: Path) -> str:
    return "\n".join(load(path)["conductor"]["script"])


# -- the docs show the files as they are -------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_docs_show_each_example_file_whole(path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    rel = path.relative_to(ROOT).as_posix()
    assert f"`{rel}`:" in text
    assert path.read_text(encoding="utf-8").rstrip() + "\n```" in text


def test_scripts_take_no_expressions_inline() -> None:
    """Inputs reach scripts through env: an inline ``${{ }}`` is an injection risk (and
    would keep these scripts from running as they are in the tests below)."""
    for path in (GITHUB_MATRIX, GITHUB_SINGLE):
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), (path.name, step)


def test_every_example_keeps_the_run_files_and_publishes_junit() -> None:
    for path in (GITHUB_MATRIX, GITHUB_SINGLE):
        steps = [s for job in load(path)["jobs"].values() for s in job["steps"]]
        upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
        kept = upload["with"]["path"]
        assert "reports/" in kept and "metadata.json" in kept and ".message-bus/" in kept
        assert upload["with"]["include-hidden-files"] is True  # .message-bus starts with a dot
        assert "!cancelled()" in upload["if"]  # kept when the run step failed too
        report = next(s for s in steps if s.get("uses", "").startswith("dorny/test-reporter"))
        assert report["with"]["path"] == "reports/*.xml"
    job = load(GITLAB)["conductor"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "reports/*.xml"
    assert "conductor/tracks/*/.message-bus/" in job["artifacts"]["paths"]


# -- the scripts, run for real --------------------------------------------------------------


def _track(root: Path, track: str, source: str, pattern: str) -> None:
    folder = root / "conductor" / "tracks" / track
    folder.mkdir(parents=True)
    plan = f"""
dag:
  nodes:
    - id: "1.1"
      name: "Write {source}"
      files: ["{source}"]
      acceptance:
        - contains: "{source}"
          pattern: "{pattern}"
"""
    (folder / "plan.md").write_text(render_plan(plan), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A project with three tracks, ``good`` and ``idle`` passing, ``bad`` failing, on a
    branch ``feature`` of ``origin/main`` (a remote-tracking ref, as actions/checkout
    leaves it)."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    for name in ("good", "bad", "idle"):
        (root / "src" / f"{name}.py").write_text("def done(): ...\n", encoding="utf-8")
    _track(root, "good", "src/good.py", "def done")
    _track(root, "bad", "src/bad.py", "def never")
    _track(root, "idle", "src/idle.py", "def done")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    git(root, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(root, "checkout", "-qb", "feature")
    yield root


def change(repo: Path, *rels: str) -> None:
    for rel in rels:
        with (repo / rel).open("a", encoding="utf-8") as file:
            file.write("# changed\n")
    git(repo, "commit", "-qam", "change " + " ".join(rels))


def run_script(repo: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as GitHub Actions runs a ``run:`` step (``bash -eo pipefail``), with
    this interpreter's ``python`` and ``conductor-bus`` first on the PATH."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "GITHUB_"))}
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=repo,
        env={**base, **GIT_ENV, "HOME": str(repo), "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def reports(repo: Path) -> list[str]:
    folder = repo / "reports"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


LOOPS = [
    pytest.param(lambda: github_step(GITHUB_SINGLE, "gate", "Run the tracks"), "BASE_REF", "main"),
    pytest.param(lambda: gitlab_script(GITLAB), "CI_MERGE_REQUEST_DIFF_BASE_SHA", "origin/main"),
    pytest.param(lambda: GENERIC.read_text(encoding="utf-8"), "BASE", "origin/main"),
]
LOOP_IDS = ["github-single-job", "gitlab", "generic"]


@needs_git
@pytest.mark.slow
@pytest.mark.parametrize(("script", "variable", "base"), LOOPS, ids=LOOP_IDS)
def test_loop_runs_the_tracks_a_change_touched(
    repo: Path, script: Any, variable: str, base: str
) -> None:
    text = script()
    change(repo, "src/good.py")
    done = run_script(repo, text, **{variable: base})
    assert done.returncode == 0, done.stdout + done.stderr
    assert reports(repo) == ["good.md", "good.xml"]
    assert '"verdict": "PASS"' in done.stdout

    change(repo, "src/bad.py")
    shutil.rmtree(repo / "reports")
    done = run_script(repo, text, **{variable: base})
    assert done.returncode == 1, done.stdout + done.stderr
    # Both ran: the failing track does not stop the others.
    assert reports(repo) == ["bad.md", "bad.xml", "good.md", "good.xml"]


@needs_git
@pytest.mark.slow
@pytest.mark.parametrize(("script", "variable", "base"), LOOPS, ids=LOOP_IDS)
def test_loop_without_a_base_runs_every_track(
    repo: Path, script: Any, variable: str, base: str
) -> None:
    done = run_script(repo, script(), **{variable: ""})
    assert done.returncode == 1, done.stdout + done.stderr
    assert reports(repo) == [f"{t}.{ext}" for t in ("bad", "good", "idle") for ext in ("md", "xml")]


@needs_git
@pytest.mark.slow
def test_loop_stops_with_2_when_tracks_cannot_be_listed(repo: Path) -> None:
    done = run_script(repo, GENERIC.read_text(encoding="utf-8"), BASE="no-such-revision")
    assert done.returncode == 2
    assert "conductor-bus tracks: error: git diff failed" in done.stderr
    assert reports(repo) == []


@needs_git
@pytest.mark.slow
def test_github_matrix_one_job_per_changed_track(repo: Path) -> None:
    change(repo, "src/good.py", "src/bad.py")
    output = repo.parent / "github_output"
    listing = run_script(
        repo,
        github_step(GITHUB_MATRIX, "tracks", step_id="tracks"),
        BASE_REF="main",
        GITHUB_OUTPUT=str(output),
    )
    assert listing.returncode == 0, listing.stderr
    key, _, value = output.read_text(encoding="utf-8").strip().partition("=")
    assert key == "tracks"
    include = json.loads(value)  # what fromJSON() gives the matrix
    assert [entry["id"] for entry in include] == ["bad", "good"]

    gate = github_step(GITHUB_MATRIX, "gate", "Run the track")
    summary = repo.parent / "step_summary.md"
    statuses = {}
    for entry in include:
        done = run_script(repo, gate, TRACK=entry["id"], GITHUB_STEP_SUMMARY=str(summary))
        statuses[entry["id"]] = done.returncode
    assert statuses == {"bad": 1, "good": 0}
    assert reports(repo) == ["bad.md", "bad.xml", "good.md", "good.xml"]
    page = summary.read_text(encoding="utf-8")
    assert "## ❌ Conductor track `bad`: FAIL" in page
    assert "## ✅ Conductor track `good`: PASS" in page


@needs_git
@pytest.mark.slow
def test_github_matrix_is_empty_when_no_track_changed(repo: Path) -> None:
    (repo / "README.md").write_text("docs only\n", encoding="utf-8")
    output = repo.parent / "github_output"
    script = github_step(GITHUB_MATRIX, "tracks", step_id="tracks")
    done = run_script(repo, script, BASE_REF="main", GITHUB_OUTPUT=str(output))
    assert done.returncode == 0, done.stderr
    # The gate job's `if:` compares with exactly this, so no empty matrix is started.
    assert output.read_text(encoding="utf-8") == "tracks=[]\n"
    assert load(GITHUB_MATRIX)["jobs"]["gate"]["if"] == "needs.tracks.outputs.tracks != '[]'"
