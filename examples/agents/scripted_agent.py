#!/usr/bin/env python3
"""A scripted agent worker for pytest-conductor: does what its node's ``script:`` says.

Run by the dispatcher like any agent::

    pytest --conductor-track=dispatch \
        --conductor-worker='python ../agents/scripted_agent.py {prompt_file}'

It reads the ``CONDUCTOR_*`` environment, finds its node in
``$CONDUCTOR_ROOT/conductor/tracks/$CONDUCTOR_TRACK/plan.md`` and follows the node's
``script:`` mapping (a key the plan reader keeps and ignores). Like a real agent that is
not a Python program, it talks to the bus only through the ``conductor-bus`` command.

Script keys, all optional, in the order they happen::

    spawn_child: true        start a child process that sleeps (it must not outlive us)
    corrupt_status: true     overwrite worker-status.json with garbage
    lock: [src/a.py]         take these locks (waiting while another worker holds one)
    progress: true           post PROGRESS messages while working
    sleep: 0.5               work this long (seconds), heartbeating ...
    heartbeat_every: 0.2     ... this often (default 1; never with no_heartbeat: true)
    write: {path: text}      write these files (relative to the project root)
    commit: "message"        git-commit what it wrote, as an agent in a worktree would
    kill_self: SIGKILL       die by this signal
    kill_parent: true        kill the process that started us (a crashing xdist worker)
    hang: true               never finish (heartbeats go on unless no_heartbeat)
    keep_locks: true         exit without unlocking (the dispatcher releases them)
    commit: true             commit the written files with git and report the commit
    post_failed: "reason"    report TASK_FAILED with this error instead of TASK_COMPLETE
    complete: false          report nothing at all
    exit: 0                  exit status

With ``SCRIPTED_AGENT_RECORD=<folder>`` in the environment it appends what it did to
``<folder>/<worker id>.jsonl`` (start and end times, its pid and its child's pid), which
is how the tests check overlap, order and that no process is left behind.

Standard library only, plus PyYAML when it is installed (a tiny reader otherwise is not
worth it: the dispatcher's own environment has PyYAML).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HELD = 3  # conductor-bus lock: held by another worker


def main() -> int:
    env = os.environ
    try:
        root = Path(env["CONDUCTOR_ROOT"])
        track = env["CONDUCTOR_TRACK"]
        task = env["CONDUCTOR_TASK_ID"]
        worker = env["CONDUCTOR_WORKER_ID"]
    except KeyError as missing:
        print(f"scripted_agent: {missing.args[0]} is not set: run me from pytest-conductor")
        return 2
    prompt = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(env["CONDUCTOR_PROMPT_FILE"])
    print(f"{worker}: task {task} of track {track}; prompt {prompt} ({prompt.stat().st_size} B)")
    # The plan beside the bus: in a worktree (--conductor-isolation=worktree) the root is
    # the worktree's, which holds the plan only if it was committed.
    plan = Path(env.get("CONDUCTOR_BUS", root / "conductor" / "tracks" / track / ".x")).parent
    script = find_script(plan / "plan.md", task)
    agent = Agent(root, task, worker, script)
    return agent.run()


def find_script(plan: Path, task: str) -> dict[str, Any]:
    """The ``script:`` mapping of node ``task`` in the plan's DAG block.

    A checklist plan (no DAG block) has nowhere to put one: its scripts are read from
    ``scripts.json`` beside plan.md (``{task id: script}``), and a task without one just
    reports itself complete.
    """
    text = plan.read_text(encoding="utf-8")
    if not any("dag:" in block for block in text.split("```")[1::2]):
        scripts = plan.parent / "scripts.json"
        found = json.loads(scripts.read_text(encoding="utf-8")) if scripts.is_file() else {}
        return dict(found.get(task) or {})
    for block in text.split("```")[1::2]:
        body = block.split("\n", 1)[1] if "\n" in block else ""
        if "dag:" not in body:
            continue
        data = yaml.safe_load(body)
        for node in data["dag"]["nodes"]:
            if str(node["id"]) == task:
                script = node.get("script") or {}
                return dict(script)
    raise SystemExit(f"scripted_agent: no node {task} in {plan}")


class Agent:
    def __init__(self, root: Path, task: str, worker: str, script: dict[str, Any]) -> None:
        self.root = root
        self.task = task
        self.worker = worker
        self.script = script
        self.beat_every = float(script.get("heartbeat_every", 1.0))
        self.silent = bool(script.get("no_heartbeat", False))
        self.last_beat = 0.0
        self.child: subprocess.Popen[bytes] | None = None
        record_dir = os.environ.get("SCRIPTED_AGENT_RECORD")
        self.record_file = Path(record_dir) / f"{worker}.jsonl" if record_dir else None

    def run(self) -> int:
        s = self.script
        self.record(event="start", pid=os.getpid(), task=self.task)
        if s.get("spawn_child"):
            self.child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(3600)"],
                stdin=subprocess.DEVNULL,
            )
            self.record(event="child", pid=self.child.pid, task=self.task)
            print(f"started child {self.child.pid}")
        if s.get("corrupt_status"):
            status = Path(os.environ["CONDUCTOR_BUS"]) / "worker-status.json"
            status.write_text("{ this is not JSON", encoding="utf-8")
            print("wrote garbage into worker-status.json")
        locks = [str(p) for p in s.get("lock") or []]
        for path in locks:
            self.take_lock(path)
        if s.get("progress"):
            self.bus("progress", "10", "--note", "started")
        self.work(float(s.get("sleep", 0)), progress=bool(s.get("progress")))
        written = []
        for rel, content in (s.get("write") or {}).items():
            target = self.root / str(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(content), encoding="utf-8")
            written.append(str(rel))
            print(f"wrote {rel}")
        if s.get("commit") and written:
            subprocess.run(["git", "add", "--", *written], cwd=self.root, check=True)
            subprocess.run(
                ["git", "commit", "--quiet", "-m", str(s["commit"])], cwd=self.root, check=True
            )
            print(f"committed {', '.join(written)}")
        if s.get("kill_self"):
            name = str(s["kill_self"])
            self.record(event="kill_self", signal=name)
            sys.stdout.flush()
            os.kill(os.getpid(), getattr(signal, name if name.startswith("SIG") else "SIG" + name))
            time.sleep(5)  # the signal is on its way
        if s.get("kill_parent"):
            self.record(event="kill_parent", pid=os.getppid())
            os.kill(os.getppid(), signal.SIGKILL)
        while s.get("hang"):
            self.work(3600.0, progress=False)
        if not s.get("keep_locks"):
            for path in locks:
                self.bus("unlock", path)
        code = int(s.get("exit", 0))
        if s.get("post_failed"):
            self.bus("fail", "--error", str(s["post_failed"]))
        elif s.get("complete", True) and code == 0:
            sha = self.commit(written) if s.get("commit") else None
            self.bus(
                "complete",
                *(["--files", *written] if written else []),
                *(["--commit", sha] if sha else []),
            )
        self.record(event="end", code=code)
        print(f"done, exit status {code}")
        return code

    def work(self, seconds: float, *, progress: bool) -> None:
        """Sleep ``seconds``, heartbeating on time (unless told to stay silent)."""
        start = time.monotonic()
        last_progress = start
        while (left := start + seconds - time.monotonic()) > 0:
            self.beat()
            time.sleep(min(left, 0.05))
            if progress and time.monotonic() - last_progress >= 1.0:
                last_progress = time.monotonic()
                done = 10 + 80 * (last_progress - start) / seconds
                self.bus("progress", f"{min(done, 90):.0f}", "--note", "working")

    def commit(self, paths: list[str]) -> str | None:
        """Commit ``paths`` in the project's git repository; the new commit's SHA."""

        def git(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["git", "-C", str(self.root), *args],
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )

        git("add", "--", *paths)
        done = git("commit", "-q", "--allow-empty", "-m", f"task {self.task}")
        if done.returncode != 0:
            print(f"git commit failed: {done.stderr.strip()}")
            return None
        sha = git("rev-parse", "HEAD").stdout.strip()
        print(f"committed {sha}")
        return sha

    def beat(self) -> None:
        if self.silent or time.monotonic() - self.last_beat < self.beat_every:
            return
        self.last_beat = time.monotonic()
        self.bus("heartbeat")

    def take_lock(self, path: str) -> None:
        while self.bus("lock", path, check=False) == HELD:
            self.beat()
            time.sleep(0.2)

    def bus(self, *args: str, check: bool = True) -> int:
        """Run ``conductor-bus ARGS`` (the environment says which bus, task and worker)."""
        tool = shutil.which("conductor-bus")
        command = [tool] if tool else [sys.executable, "-m", "pytest_conductor.cli"]
        done = subprocess.run([*command, *args], check=False, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            print(f"conductor-bus {' '.join(args)}: exit status {done.returncode}")
        return done.returncode

    def record(self, **fields: Any) -> None:
        if self.record_file is None:
            return
        fields["time"] = time.time()
        with self.record_file.open("a", encoding="utf-8") as out:
            out.write(json.dumps(fields) + "\n")


if __name__ == "__main__":
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # the log shows progress as it happens
    raise SystemExit(main())
