"""Workers in another filesystem: the controller's bus is the one bus of the run.

A "remote" xdist worker is ``--tx popen//python=<wrapper>//chdir=<copy>``: the worker
runs in a copy of the project, and the wrapper hides the controller's project from it
(its own mount namespace, a tmpfs over the folder). Where the machine refuses that, the
strict variant is skipped with the reason; the chdir-only variant still runs (the worker
could see the controller's folder but writes its own copy, which is what matters).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

AGENT = EXAMPLES / "agents" / "scripted_agent.py"
BUS = Path("conductor", "tracks", "dispatch", ".message-bus")
_WORKER_ID = re.compile(r"worker-([\w.]+)-\d{10,}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z")
_SIZE = re.compile(r"\(\d+ B\)")  # the prompt's size, which holds the project's path


def project(where: Path) -> Path:
    """examples/dispatch, with the agents' progress reports (timed) turned off."""
    shutil.copytree(EXAMPLES / "dispatch", where)
    plan = where / BUS.parent / "plan.md"
    plan.write_text(plan.read_text().replace("progress: true", "progress: false"))
    return where


def run(cwd: Path, *args: str) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "--conductor-track=dispatch",
        f"--conductor-worker={sys.executable} {AGENT} {{prompt_file}}",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CONDUCTOR_"))}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def picture(bus_dir: Path, roots: list[Path]) -> dict[str, object]:
    """What orchestrators read of a bus, ids, timestamps, roots and timed lines aside."""

    def clean(text: str) -> str:
        for root in roots:
            text = text.replace(str(root), "<root>")
        text = _SIZE.sub("(<size>)", _TIMESTAMP.sub("<ts>", text))
        return _WORKER_ID.sub(r"worker-\1", text)

    queue = []
    for line in (bus_dir / "queue.jsonl").read_text().splitlines():
        message = json.loads(line)
        payload = {k: v for k, v in message["payload"].items() if k != "expires_at"}
        queue.append(clean(json.dumps([message["type"], message["source"], payload])))
    status = {
        clean(worker): (entry["task_id"], entry["status"], entry["progress_pct"])
        for worker, entry in json.loads((bus_dir / "worker-status.json").read_text()).items()
    }
    files = {}
    for folder in ("events", "prompts", "logs"):
        for path in sorted((bus_dir / folder).iterdir()):
            lines = path.read_text().splitlines()
            # Heartbeats are timed: how many an agent sent depends on the machine's load.
            kept = [clean(line) for line in lines if " alive at " not in line]
            files[f"{folder}/{path.name}"] = kept
    return {
        "queue": sorted(queue),
        "status": sorted(status.values()),
        "files": files,
        "verdict": json.loads((bus_dir / "verdict.json").read_text()),
    }


def hiding_wrapper(where: Path, hidden: Path) -> Path | str:
    """A python for execnet that cannot see ``hidden``; or why this machine refuses one."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux and unshare(1)"
    wrapper = where / "hidden-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        "exec unshare -m --propagation private -- sh -c "
        '\'mount -t tmpfs tmpfs "$1" || exit 97; shift; exec "$@"\' '
        f'sh "{hidden}" "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    probe = subprocess.run(
        [str(wrapper), "-c", f"import os; print(os.listdir({str(hidden)!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "[]":
        return f"this machine refuses a private mount namespace: {probe.stderr.strip()[:200]}"
    return wrapper


@pytest.fixture
def single_machine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = project(tmp_path_factory.mktemp("one") / "project")
    finish(run(root, "-n", "2"))
    return picture(root / BUS, [root])


@pytest.mark.parametrize("isolation", ["hidden", "chdir"])
def test_two_remote_workers_give_the_controller_the_bus_of_one_machine(
    tmp_path: Path, single_machine: dict[str, object], isolation: str
) -> None:
    controller = project(tmp_path / "controller")
    remote = project(tmp_path / "remote")
    python = sys.executable
    if isolation == "hidden":
        wrapper = hiding_wrapper(tmp_path, controller)
        if isinstance(wrapper, str):
            pytest.skip(wrapper)
        python = str(wrapper)
    tx = f"2*popen//python={python}//chdir={remote}"
    proc = run(controller, "--tx", tx, "--dist", "load")
    # The orchestrator polls the controller's files live: a running agent shows there.
    seen_running = False
    while proc.poll() is None and not seen_running:
        try:
            status = json.loads((controller / BUS / "worker-status.json").read_text())
        except (OSError, ValueError):
            status = {}
        seen_running = any(e.get("status") == "RUNNING" for e in status.values())
        time.sleep(0.05)
    out = finish(proc)
    assert seen_running, out
    assert out.count("does not share this machine's files") == 2, out
    # The work happened in the remote copy, and only there.
    assert (remote / "work" / "app" / "alpha.py").is_file()
    assert not (controller / "work").exists()
    assert picture(controller / BUS, [controller, remote]) == single_machine
    # The controller's verdict counts the files changed on the workers' copy.
    verdict = json.loads(out.strip().splitlines()[-1])
    assert verdict["verdict"] == "PASS" and verdict["files_changed"] > 0


def test_a_worker_sharing_the_controllers_files_forwards_nothing(tmp_path: Path) -> None:
    root = project(tmp_path / "project")
    out = finish(run(root, "-n", "2"))
    assert "does not share" not in out
    bus = root / BUS
    assert not (bus / ".forwarded").exists()
    ids = [json.loads(line)["id"] for line in (bus / "queue.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))


FAULTS = """# Plan

```yaml
dag:
  nodes:
    - id: "k1"
      name: "Kills its xdist worker while it holds a lock"
      files: ["work/shared.txt"]
      script: {lock: ["work/shared.txt"], keep_locks: true, kill_parent: true}
    - id: "t1"
      name: "Hangs past its timeout"
      timeout: "1s"
      script: {hang: true, heartbeat_every: 0.2}
```
"""


def fault_project(where: Path) -> Path:
    track = where / BUS.parent
    track.mkdir(parents=True)
    (track / "plan.md").write_text(FAULTS)
    (where / "pytest.ini").write_text("[pytest]\n")
    return where


def test_the_controller_learns_every_kill_and_frees_a_dead_workers_locks(tmp_path: Path) -> None:
    controller = fault_project(tmp_path / "controller")
    remote = fault_project(tmp_path / "remote")
    tx = f"2*popen//chdir={remote}"
    proc = run(controller, "--tx", tx, "--dist", "load", "--max-worker-restart=2", "-rf")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    bus = controller / BUS
    # The worker that ran t1 killed its agent itself; the controller has the reason.
    assert "agent timed out after 1s" in (bus / "events" / "TASK_FAILED_t1.event").read_text()
    status = {
        e["task_id"]: e["status"]
        for e in json.loads((bus / "worker-status.json").read_text()).values()
    }
    assert status["t1"] == "FAILED"
    # k1's agent may still report before it dies with its worker (as on one machine).
    assert status["k1"] in {"RUNNING", "COMPLETED"}
    # k1's worker died holding a lock in the controller's bus: the controller freed it.
    assert (bus / "events" / "TASK_FAILED_k1.event").is_file()
    assert json.loads((bus / "locks.json").read_text()) == {}
    kinds = [json.loads(line)["type"] for line in (bus / "queue.jsonl").read_text().splitlines()]
    assert kinds.count("FILE_LOCK") == kinds.count("FILE_UNLOCK") == 1
    assert "ended holding locks; released: work/shared.txt" in out


def git_project(where: Path) -> Path:
    project(where)
    (where / ".gitignore").unlink()  # the example ignores work/, where its agents write
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"],
    ):
        subprocess.run(["git", *command], cwd=where, check=True, capture_output=True)
    return where


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_files_changed_are_measured_in_the_workers_copy(tmp_path: Path) -> None:
    controller = git_project(tmp_path / "controller")
    remote = git_project(tmp_path / "remote")
    out = finish(run(controller, "--tx", f"2*popen//chdir={remote}", "--dist", "load"))
    verdict = json.loads(out.strip().splitlines()[-1])
    written = sorted(str(p.relative_to(remote)) for p in (remote / "work").rglob("*.*"))
    assert len(written) == verdict["files_changed"] > 0
    assert verdict["changed_elsewhere"] == [
        {
            "host": verdict["changed_elsewhere"][0]["host"],
            "root": str(remote),
            "workers": ["gw0", "gw1"],
            "files_changed": len(written),
        }
    ]
    assert json.loads((controller / BUS / "verdict.json").read_text()) == verdict
    assert f"file(s) changed in the copy on {verdict['changed_elsewhere'][0]['host']}" in out
