"""The fault matrix: each class of bad input or signal, through the real command line.

Every case runs ``pytest`` (or ``conductor-bus``) as a subprocess in a project folder with
a sibling folder ``outside/``, and asserts what docs/reliability.md promises: the exit
status, one clear line naming the problem, no ``Traceback`` or ``INTERNALERROR``, no
process left behind, nothing outside the project changed, and a metadata.json that is
valid JSON and still holds the keys it had.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_conductor.acceptance import CheckContext, Criterion, check
from pytest_conductor.bus import MessageBus
from pytest_conductor.cli import main as cli_main
from pytest_conductor.plan.reader import PlanError
from pytest_conductor.settings import Settings
from pytest_conductor.track.loading import TrackError, load_state
from tests.conftest import EXAMPLES, render_plan

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="process checks read /proc"
)

BUS = [sys.executable, "-m", "pytest_conductor.cli"]
UNKNOWN = {"orchestrator_note": "kept", "loop_state": {"custom": 1}}


@dataclass
class Run:
    returncode: int
    output: str

    def lines(self, text: str) -> list[str]:
        return [line for line in self.output.splitlines() if text in line]


class Project:
    """A project folder with one track ``t``, and a folder outside it that must not change."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "project"
        self.outside = base / "outside"
        self.track = self.root / "conductor" / "tracks" / "t"
        self.track.mkdir(parents=True)
        self.outside.mkdir()
        (self.outside / "precious.txt").write_text("untouched\n")
        (self.root / "pytest.ini").write_text("[pytest]\n")
        self.metadata.write_text(json.dumps(UNKNOWN))
        self.pid_dir = base / "pids"
        self.pid_dir.mkdir()
        self._outside_before = self.snapshot()

    @property
    def metadata(self) -> Path:
        return self.track / "metadata.json"

    @property
    def bus(self) -> Path:
        return self.track / ".message-bus"

    def plan(self, yaml_text: str) -> None:
        (self.track / "plan.md").write_text(render_plan(yaml_text), encoding="utf-8")

    def spawner(self, name: str, seconds: float = 60) -> str:
        """A ``run:`` command that records its pid and a background child's, then waits."""
        record = self.pid_dir / name
        return f"sh -c 'echo $$ >> {record}; sleep {seconds} & echo $! >> {record}; wait'"

    def recorded_pids(self) -> list[int]:
        return [
            int(line)
            for path in self.pid_dir.iterdir()
            for line in path.read_text().split()
            if line.strip().isdigit()
        ]

    def rebaseline(self) -> None:
        """Take what is outside now as what must not change (after a test's own setup)."""
        self._outside_before = self.snapshot()

    def snapshot(self) -> dict[str, str]:
        found = {}
        for path in sorted(self.base.rglob("*")):
            if self.root in path.parents or path == self.root or self.pid_dir in path.parents:
                continue
            if path.is_file() and not path.is_symlink():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[str(path)] = "dir" if path.is_dir() else "other"
        return found

    def pytest(self, *args: str, timeout: float = 120) -> Run:
        return self._run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], timeout)

    def conductor_bus(self, *args: str, stdin: bytes | None = None) -> Run:
        return self._run([*BUS, *args], 60, stdin=stdin)

    def _run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> Run:
        proc = subprocess.run(
            argv,
            cwd=self.root,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env=_clean_env(),
            check=False,
        )
        return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"))

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """pytest in its own process group, as a CI runner starts it."""
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,
        )

    def assert_clean(self, run: Run) -> None:
        """No traceback, nothing outside changed, no recorded process alive, metadata kept."""
        assert "Traceback" not in run.output, run.output
        assert "INTERNALERROR" not in run.output, run.output
        assert self.snapshot() == self._outside_before
        assert_gone(self.recorded_pids())
        data = json.loads(self.metadata.read_text())
        assert data["orchestrator_note"] == "kept"
        assert data["loop_state"]["custom"] == 1


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CONDUCTOR_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def assert_gone(pids: list[int], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = {p: _cmdline(p) for p in pids if alive(p)}
    for pid in survivors:  # leave nothing to the next test either
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes left behind: {survivors}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    yield Project(tmp_path)


def one_error_line(run: Run, text: str) -> None:
    """The problem is named on one line that holds ``text``."""
    assert run.lines(text), run.output


# --------------------------------------------------------------------------- track ids


@pytest.mark.parametrize(
    "track", ["../../../outside", "/abs/track", "a b", "caf\u00e9", "a/b", ".", ".."]
)
def test_an_unusable_track_id_is_a_usage_error(project: Project, track: str) -> None:
    project.plan('dag: {nodes: [{id: "1", acceptance: [{run: "true"}]}]}')
    run = project.pytest(f"--conductor-track={track}", "-n", "0")
    assert run.returncode == 4, run.output
    one_error_line(run, "not usable as a track id")
    project.assert_clean(run)
    assert not (project.base / "conductor").exists()


def test_a_trailing_slash_is_dropped_and_the_run_completes(project: Project) -> None:
    project.plan('dag: {nodes: [{id: "1", acceptance: [{run: "true"}]}]}')
    run = project.pytest("--conductor-track=t/", "-n", "0")
    assert run.returncode == 0, run.output
    assert (project.bus / "events" / "PARALLEL_COMPLETE_t.event").read_text().strip() == "PASS"
    project.assert_clean(run)


# --------------------------------------------------------------------------- plan values


def test_values_that_would_crash_later_are_plan_problems(project: Project) -> None:
    long_name = "a" * 300
    project.plan(
        f"""
        dag:
          nodes:
            - id: "a"
              files: ["../outside/precious.txt"]
              acceptance:
                - run: "echo a\\0b"
                - run: ["true", "x\\0"]
                - run: "true"
                  env: {{A: "x\\0y"}}
                - exists: "a\\0b"
                - contains: "{long_name}/f"
                  pattern: "x"
                - event: TASK_COMPLETE
                  task: "../../x"
                - event: {"A" * 200}
          parallel_groups:
            - id: g
              tasks: [a]
              shared_resources: ["/etc/passwd"]
        """
    )
    run = project.pytest("--conductor-track=t", "-n", "0")
    assert run.returncode == 4, run.output
    for text in (
        "acceptance #1: run: 'echo a\\x00b' contains a NUL byte",
        "acceptance #2: run: 'x\\x00' contains a NUL byte",
        "acceptance #3: run: env 'x\\x00y' contains a NUL byte",
        "acceptance #4: exists: 'a\\x00b' contains a NUL byte",
        "acceptance #5: contains: aaaaaaaaaaaaaaaaaaaa... is longer than a file name can be",
        "acceptance #6: event: task '../../x' cannot name a bus event file",
        "acceptance #7: event: the event type is 200 characters long",
        "node a: files: '../outside/precious.txt' leaves the project root",
        "parallel group g: shared_resources: '/etc/passwd' is absolute",
    ):
        one_error_line(run, text)
    project.assert_clean(run)


@pytest.mark.parametrize(
    "criterion",
    [
        Criterion("exists", {"exists": "a\0b"}),
        Criterion("contains", {"contains": "a\0b", "pattern": "x"}),
        Criterion("run", {"run": ["tr\0ue"]}),
        Criterion("run", {"run": ["true"], "env": {"A": "x\0"}}),
        Criterion("event", {"event": "TASK_COMPLETE", "task": "x" * 300}),
    ],
    ids=["exists", "contains", "run", "env", "event"],
)
def test_a_check_that_fails_at_run_time_fails_in_one_line(
    tmp_path: Path, criterion: Criterion
) -> None:
    # Built by hand, past the plan reader's checks: what the OS refuses at run time fails
    # the criterion with one line instead of raising.
    bus = MessageBus(tmp_path / "bus", warn=False)
    ctx = CheckContext(root=tmp_path, task_id="a", has_event=bus.has_event)
    result = check(criterion, ctx)
    assert not result.passed
    assert "\n" not in result.seen and result.seen


# --------------------------------------------------------------------------- signals


def spawning_plan(project: Project) -> str:
    """Two independent nodes whose criteria (each with a background child) outlast the test,
    and a dependent that never gets to run."""
    return f"""
    dag:
      nodes:
        - id: "a"
          acceptance:
            - run: "{project.spawner("a")}"
            - run: "{project.spawner("a2")}"
        - id: "b"
          acceptance:
            - run: "{project.spawner("b")}"
        - id: "c"
          depends_on: [a]
    """


def wait_for_records(project: Project, names: list[str], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = [project.pid_dir / n for n in names]
        if all(f.exists() and len(f.read_text().split()) == 2 for f in files):
            return
        assert proc.poll() is None, proc.communicate()[0].decode()
        time.sleep(0.05)
    raise AssertionError("the criteria never started")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "xdist", "whole_group"),
    [
        (signal.SIGTERM, "2", False),
        (signal.SIGTERM, "2", True),  # as `timeout` and many CI runners send it
        (signal.SIGHUP, "2", False),
        (signal.SIGTERM, "0", False),
        (signal.SIGHUP, "0", False),
        (signal.SIGINT, "2", True),  # Ctrl-C at a terminal: the whole foreground group
        (signal.SIGINT, "2", False),  # a runner that interrupts pytest alone
    ],
    ids=[
        "term-xdist",
        "term-group-xdist",
        "hup-xdist",
        "term-inprocess",
        "hup-inprocess",
        "ctrl-c-xdist",
        "int-xdist",
    ],
)
def test_a_termination_signal_ends_the_run_like_ctrl_c(
    project: Project, sig: signal.Signals, xdist: str, whole_group: bool
) -> None:
    project.plan(spawning_plan(project))
    proc = project.start("--conductor-track=t", "-n", xdist)
    wait_for_records(project, ["a", "b"] if xdist != "0" else ["a"], proc)
    signalled = time.monotonic()
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    output = proc.communicate(timeout=60)[0].decode()
    run = Run(proc.returncode, output)
    # The criteria outlast the test: the run stopped them rather than waiting (issue 14
    # asks for 2 s under xdist; measured by hand in docs/performance.md, well under; the
    # bound here only leaves room for a loaded machine).
    assert time.monotonic() - signalled < 15, output
    # Every process the run started, its xdist workers included, is gone within 2 s.
    assert_gone(group_members(proc.pid))
    assert run.returncode == 2, output  # pytest's "interrupted"
    one_error_line(
        run, "KeyboardInterrupt" if sig == signal.SIGINT else f"terminated by {sig.name}"
    )
    verdict = json.loads(output.strip().splitlines()[-1])
    assert verdict["verdict"] == "FAIL"
    assert "interrupted" in verdict["summary"]
    assert json.loads((project.bus / "verdict.json").read_text()) == verdict
    # In the orchestrator's vocabulary: dispatch again (NOT_STARTED), the interruption in
    # our own key.
    loop = json.loads(project.metadata.read_text())["loop_state"]
    assert (loop["current_step"], loop["step_status"]) == ("PARALLEL_EXECUTE", "NOT_STARTED")
    assert loop["parallel_state"]["interrupted_at"].endswith("Z")
    assert (project.bus / "events" / "PARALLEL_COMPLETE_t.event").read_text().strip() == "FAIL"
    project.assert_clean(run)


@pytest.mark.slow
def test_a_killed_xdist_worker_leaves_no_criterion_process(project: Project) -> None:
    record = project.pid_dir / "killer"
    # The criterion starts a background child, then at once kills the xdist worker
    # running it (maybe before the worker recorded its group: the mark still finds it).
    # A second one leaves its group first (setsid), out of reach of any group kill.
    killer = (
        f"sh -c 'sleep 60 & echo $! >> {record}; setsid sleep 61 & echo $! >> {record}; "
        "kill -9 $PPID; wait'"
    )
    project.plan(
        f"""
        dag:
          nodes:
            - id: "a"
              acceptance:
                - run: "{killer}"
            - id: "b"
              acceptance:
                - run: "true"
        """
    )
    start = time.monotonic()
    run = project.pytest("--conductor-track=t", "-n", "2", "-rA")
    assert run.returncode == 1, run.output
    assert "crashed" in run.output, run.output
    assert time.monotonic() - start < 50, "the orphaned child was waited for"
    project.assert_clean(run)


# --------------------------------------------------------------------------- one run per track


@pytest.mark.slow
def test_a_second_run_of_a_live_track_is_refused_or_waits(project: Project) -> None:
    flag = project.pid_dir / "release"  # the test's own file, not the run's
    # The first run's only node waits for a file we write when we are done with it.
    waiter = (
        f"sh -c 'echo $$ >> {project.pid_dir / 'w'}; while [ ! -e {flag} ]; do sleep 0.05; done'"
    )
    project.plan(f'dag: {{nodes: [{{id: "1", acceptance: [{{run: "{waiter}"}}]}}]}}')
    first = project.start("--conductor-track=t", "-n", "0")
    wait_for_file(project.pid_dir / "w", first)
    holder = json.loads((project.bus / "run.json").read_text())
    assert holder["pid"] == first.pid

    refused = project.pytest("--conductor-track=t", "-n", "0")
    assert refused.returncode == 4, refused.output
    one_error_line(refused, f"another run of this track is in progress (pid {first.pid}, started")
    one_error_line(refused, "--conductor-wait-for-run")

    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--conductor-track=t",
            "-n",
            "0",
            "--conductor-wait-for-run",
        ],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
    )
    time.sleep(1.5)
    assert second.poll() is None, "the second run did not wait"
    flag.write_text("go")
    first_output = first.communicate(timeout=60)[0].decode()
    assert first.returncode == 0, first_output
    output = second.communicate(timeout=60)[0].decode()
    assert second.returncode == 0, output
    assert f"waiting for the run of track t in progress (pid {first.pid}" in output
    assert not (project.bus / "run.json").exists()
    project.assert_clean(Run(second.returncode, output))


def wait_for_file(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_run_lock_left_by_a_dead_run_is_taken_over(project: Project) -> None:
    project.plan('dag: {nodes: [{id: "1", acceptance: [{run: "true"}]}]}')
    dead = subprocess.run(["true"], check=True)  # a pid that has just ended
    del dead
    project.bus.mkdir()
    stale = {"pid": 2**22 + 17, "start": 1, "started_at": "2026-01-01T00:00:00Z"}
    (project.bus / "run.json").write_text(json.dumps(stale))
    run = project.pytest("--conductor-track=t", "-n", "0")
    assert run.returncode == 0, run.output
    one_error_line(run, f"took over the run lock of track t from pid {stale['pid']}")
    project.assert_clean(run)


# --------------------------------------------------------------------------- bounded checks


@pytest.mark.slow
def test_a_catastrophic_pattern_is_stopped_at_the_node_time_limit(project: Project) -> None:
    (project.root / "text.txt").write_text("a" * 40 + "!\n")
    project.plan(
        """
        dag:
          nodes:
            - id: "1"
              acceptance:
                - contains: "text.txt"
                  pattern: "(a+)+$"
            - id: "2"
              acceptance:
                - contains: "text.txt"
                  pattern: "^a+!$"
        """
    )
    start = time.monotonic()
    run = project.pytest("--conductor-track=t", "-n", "0", "--conductor-timeout=2s")
    assert time.monotonic() - start < 30
    assert run.returncode == 1, run.output
    one_error_line(run, "the search did not finish within")
    assert "1 failed, 1 passed" in run.output
    project.assert_clean(run)


@pytest.mark.slow
@pytest.mark.parametrize("xdist", ["0", "1"])
def test_the_node_time_limit_bounds_its_criteria(project: Project, xdist: str) -> None:
    project.plan(
        """
        dag:
          nodes:
            - id: "slow"
              acceptance:
                - run: "sleep 1.5"
                - run: "sleep 1.5"
                - run: "sleep 1.5"
        """
    )
    start = time.monotonic()
    run = project.pytest("--conductor-track=t", "-n", xdist, "--conductor-timeout=2s")
    assert time.monotonic() - start < 30
    assert run.returncode == 1, run.output
    assert run.lines("(the node's time limit)") or run.lines("the node's time was up"), run.output
    project.assert_clean(run)


# --------------------------------------------------------------------------- bus readers


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(
        st.tuples(
            st.sampled_from(["whole", "torn", "garbage"]),
            st.text(max_size=30),
            st.integers(min_value=1, max_value=200),
        ),
        max_size=12,
    )
)
def test_readers_recover_every_whole_message_after_any_damage(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[tuple[str, str, int]]
) -> None:
    """Writers killed mid-line (torn prefixes, no newline), garbage: every whole line that
    follows is read back, in order."""
    bus = MessageBus(tmp_path_factory.mktemp("bus"), warn=False)
    bus.init()
    expected = []
    data = b""
    for i, (kind, text, cut) in enumerate(pieces):
        envelope = {
            "id": f"msg-{i}",
            "type": "PING",
            "source": "w",
            "timestamp": "2026-11-28T00:00:00Z",
            "payload": {"text": text, "nested": {"id": "msg-x", "type": "X"}},
        }
        line = json.dumps(envelope, ensure_ascii=False).encode()
        if kind == "whole":
            data += line + b"\n"
            expected.append(envelope)
        elif kind == "torn":
            data += line[: min(cut, len(line) - 1)]
        else:
            # Without '"' and '}' garbage cannot complete a torn line into a real message.
            junk = text.replace('"', "").replace("}", "")
            data += junk.encode("utf-8", "surrogatepass")[:cut] + b"\n"
    bus.queue_path.write_bytes(data + b"\n")
    assert bus.messages() == expected


def test_a_deeply_nested_queue_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    bus = MessageBus(tmp_path / "bus", warn=False)
    bus.init()
    deep = b"[" * 100_000 + b"]" * 100_000
    with bus.queue_path.open("ab") as handle:
        handle.write(deep + b"\n")
    good = bus.post("PING", {})
    assert bus.messages() == [good]
    bus.worker_status_path.write_bytes(b'{"w": ' + deep + b"}")
    assert bus.worker_status() == {}


# --------------------------------------------------------------------------- conductor-bus


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lock", "a.py", "--ttl", "inf"], "--ttl must be a number of seconds above 0"),
        (["lock", "a.py", "--ttl", "1e12"], "--ttl must be a number of seconds above 0"),
        (["lock", "a.py", "--ttl", "nan"], "--ttl must be a number of seconds above 0"),
        (["tail", "-f", "--interval", "-1"], "--interval must be a number of seconds"),
        (["tail", "-f", "--interval", "nan"], "--interval must be a number of seconds"),
        (["watch", "--interval", "-1"], "--interval must be a number of seconds"),
        (["watch", "--interval", "nan"], "--interval must be a number of seconds"),
        (["status", "--stale-after", "nan"], "--stale-after must be a number of seconds"),
        (["progress", "nan"], "progress must be between 0 and 100"),
        (["heartbeat", "--progress", "inf"], "progress must be between 0 and 100"),
        (["tail", "-n", "-3"], "expected a whole number >= 0"),
        (["fail", "--error", "bad\udcff"], "--error (or the error argument) is not valid UTF-8"),
        (["lock", "p\udcff"], "is not valid UTF-8 text"),
        (["post", "PING", "--payload", '{"a": "\\ud800"}'], "not valid UTF-8 text"),
        (["post", "PING", "--payload", "[" * 50_000], "nested too deeply"),
        (["post", "PING", "--payload-file", "/no/such/file"], "No such file or directory"),
    ],
)
def test_conductor_bus_bad_values_exit_2_in_one_line(
    project: Project, args: list[str], message: str
) -> None:
    bus = str(project.bus)
    assert project.conductor_bus("--bus", bus, "init").returncode == 0
    queue_before = (project.bus / "queue.jsonl").read_bytes()
    run = project.conductor_bus(
        "--bus",
        bus,
        "--worker",
        "w1",
        "--task",
        "1",
        *args,  # "\udcff" reaches it as the byte 0xff
    )
    assert run.returncode == 2, run.output
    assert len(run.output.strip().splitlines()) == 1, run.output
    one_error_line(run, message)
    assert "Traceback" not in run.output
    assert (project.bus / "queue.jsonl").read_bytes() == queue_before


def test_a_post_that_cannot_complete_writes_nothing(project: Project) -> None:
    bus = str(project.bus)
    project.conductor_bus("--bus", bus, "init")
    run = project.conductor_bus("--bus", bus, "--task", "x" * 250, "complete")
    assert run.returncode == 2, run.output
    one_error_line(run, "is longer than 255 bytes")
    assert (project.bus / "queue.jsonl").read_bytes().strip() == b""
    assert list((project.bus / "events").iterdir()) == []


def test_payload_file_and_stdin(project: Project) -> None:
    bus = str(project.bus)
    project.conductor_bus("--bus", bus, "init")
    big = {"task_id": "1", "blob": "x" * 300_000}  # larger than one argument may be
    (project.base / "pids" / "payload.json").write_text(json.dumps(big))
    from_file = project.conductor_bus(
        "--bus", bus, "post", "NOTE", "--payload-file", str(project.pid_dir / "payload.json")
    )
    assert from_file.returncode == 0, from_file.output
    from_stdin = project.conductor_bus(
        "--bus", bus, "post", "NOTE", "--payload-file", "-", stdin=b'{"n": 2}'
    )
    assert from_stdin.returncode == 0, from_stdin.output
    payloads = [m["payload"] for m in MessageBus(project.bus).messages()]
    assert payloads == [big, {"n": 2}]


# --------------------------------------------------------------------------- symlinks


def test_a_bus_folder_that_is_a_link_out_of_the_project_is_refused(project: Project) -> None:
    project.plan('dag: {nodes: [{id: "1", acceptance: [{run: "true"}]}]}')
    (project.outside / "bus").mkdir()
    project.bus.symlink_to(project.outside / "bus")
    project.rebaseline()
    run = project.pytest("--conductor-track=t", "-n", "0")
    assert run.returncode == 4, run.output
    one_error_line(run, ".message-bus: is a symbolic link; the bus does not write through links")
    project.assert_clean(run)
    assert list((project.outside / "bus").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("xdist", ["0", "2"])
def test_bus_parts_swapped_for_links_mid_run_are_not_written_through(
    project: Project, xdist: str
) -> None:
    # Node 1 (as an agent could) replaces the bus's folders and queue with links to a
    # folder outside the project; node 2 runs after it.
    target = project.outside / "target"
    swap = " && ".join(
        [f"mkdir -p {target}/{name}" for name in ("events", "prompts", "logs", "commands")]
        + [f"touch {target}/queue.jsonl"]
        + [
            f"rm -rf {project.bus}/{name} && ln -s {target}/{name} {project.bus}/{name}"
            for name in ("events", "prompts", "logs", "commands", "queue.jsonl")
        ]
    )
    project.plan(
        f"""
        dag:
          nodes:
            - id: "1"
              acceptance: [{{run: "sh -c '{swap}'"}}]
            - id: "2"
              depends_on: ["1"]
              acceptance: [{{run: "true"}}, {{contains: "pytest.ini", pattern: "pytest"}}]
        """
    )
    before = sorted(p.relative_to(project.outside) for p in project.outside.rglob("*"))
    run = project.pytest("--conductor-track=t", "-n", xdist)
    assert "Traceback" not in run.output and "INTERNALERROR" not in run.output, run.output
    one_error_line(run, "is a symbolic link; the bus does not write through links")
    after = sorted(p.relative_to(project.outside) for p in project.outside.rglob("*"))
    assert set(after) >= set(before)
    for path in target.rglob("*"):
        assert path.is_dir() or path.stat().st_size == 0, f"written through a link: {path}"
    assert json.loads(project.metadata.read_text())["orchestrator_note"] == "kept"


# --------------------------------------------------------------------------- fuzz

QUICKSTART_PLAN = (
    EXAMPLES / "quickstart" / "conductor" / "tracks" / "quickstart" / "plan.md"
).read_text(encoding="utf-8")
NASTY = [
    "\x00",
    "\ud800",
    "../",
    "/",
    "{",
    "[",
    "]",
    ":",
    "- ",
    '"',
    "'",
    "\n",
    "*",
    "\\",
    "&a",
    "!!int",
]


@st.composite
def mutated_plans(draw: st.DrawFn) -> str:
    """The quickstart plan with a few random cuts, insertions and nasty characters."""
    text = QUICKSTART_PLAN
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["cut", "insert", "nasty", "repeat"]))
        if action == "cut":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=40)) :]
        elif action == "insert":
            text = text[:at] + draw(st.text(max_size=12)) + text[at:]
        elif action == "nasty":
            text = text[:at] + draw(st.sampled_from(NASTY)) + text[at:]
        else:
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            line = text[line_start : line_end if line_end >= 0 else len(text)]
            text = text[:line_start] + line + "\n" + text[line_start:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=mutated_plans())
def test_fuzzed_plans_are_read_or_refused_never_crash(
    tmp_path_factory: pytest.TempPathFactory, plan: str
) -> None:
    """Reading and checking a plan (what happens before any node runs) either works or
    raises the errors the plugin turns into one usage error, exit 4."""
    root = tmp_path_factory.mktemp("fuzz")
    track = root / "conductor" / "tracks" / "t"
    track.mkdir(parents=True)
    (track / "plan.md").write_bytes(plan.encode("utf-8", "surrogatepass"))
    settings_ = Settings(track="t", root=root, max_workers=5, strict_prose=False, command_timeout=1)
    try:
        state = load_state(settings_, [])
    except PlanError as error:
        assert str(error).strip()
        event("refused")
        return
    except TrackError:
        return
    event("read")
    assert [n.id for n in state.plan.nodes] == list(state.criteria)


def bus_argv() -> st.SearchStrategy[list[str]]:
    word = st.one_of(
        st.sampled_from(["1.1", "a.py", "PING", "-5", "nan", "inf", "1e400", "0", "{}", "[]"]),
        st.text(max_size=12),
        st.sampled_from(NASTY),
    )
    command = st.sampled_from(
        [
            "post",
            "heartbeat",
            "progress",
            "complete",
            "fail",
            "blocked",
            "lock",
            "unlock",
            "locks",
            "status",
            "tail",
            "init",
        ]
    )
    flag = st.sampled_from(
        [
            "--payload",
            "--progress",
            "--note",
            "--commit",
            "--files",
            "--unblocks",
            "--error",
            "--by",
            "--reason",
            "--ttl",
            "--active",
            "--json",
            "--stale-after",
            "-n",
            "--task",
            "--worker",
            "--root",
            "--track",
        ]
    )
    return st.tuples(command, st.lists(st.one_of(word, flag), max_size=6)).map(
        lambda t: [t[0], *t[1]]
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=bus_argv())
def test_fuzzed_conductor_bus_arguments_never_crash(
    tmp_path_factory: pytest.TempPathFactory, argv: list[str]
) -> None:
    bus = tmp_path_factory.mktemp("bus") / "bus"
    MessageBus(bus).init()
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = cli_main(["--bus", str(bus), "--worker", "w", "--task", "1", *argv])
    event(f"exit {status}")
    assert status in (0, 1, 2, 3), (argv, status, err.getvalue())
    assert "internal error" not in err.getvalue(), (argv, err.getvalue())
    assert "Traceback" not in err.getvalue()


# --------------------------------------------------------------------------- pytest-timeout


@pytest.mark.slow
@pytest.mark.parametrize("xdist", ["0", "2"])
@pytest.mark.parametrize("method", ["thread", "signal"])
def test_pytest_timeout_limits_a_node_without_killing_the_run(
    project: Project, xdist: str, method: str
) -> None:
    pytest.importorskip("pytest_timeout")
    project.plan(spawning_plan(project))
    start = time.monotonic()
    run = project.pytest(
        "--conductor-track=t", "-n", xdist, "--timeout=2", f"--timeout-method={method}"
    )
    assert time.monotonic() - start < 40
    assert run.returncode == 1, run.output
    one_error_line(run, "(the node's time limit)")
    verdict = json.loads(run.output.strip().splitlines()[-1])
    assert verdict["summary"].startswith("Track t: 0 of 3 nodes passed; 2 failed")
    project.assert_clean(run)


def test_conductor_bus_track_ids_follow_the_same_rule(project: Project) -> None:
    run = project.conductor_bus("--root", str(project.root), "--track", "../../x", "status")
    assert run.returncode == 2, run.output
    one_error_line(run, "track id '../../x' is not usable")
