"""Tests for pytest_conductor.acceptance: parsing the criteria and checking each kind."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from pytest_conductor.acceptance import (
    BUILTIN_KINDS,
    CheckContext,
    CheckResult,
    Criterion,
    CriterionError,
    check,
    format_failure,
    parse_criteria,
)
from pytest_conductor.acceptance.checks import failure_headline
from pytest_conductor.acceptance.paths import exists_inside

KNOWN = "known kinds: contains, event, exists, pytest, run, (plus prose strings)"


def ctx_for(
    root: Path,
    *,
    events: Iterable[tuple[str, str]] = (),
    agent_ran: bool = False,
    strict_prose: bool = False,
    env: dict[str, str] | None = None,
) -> CheckContext:
    posted = set(events)
    return CheckContext(
        root=root,
        task_id="1.1",
        has_event=lambda kind, task: (kind, task) in posted,
        agent_ran=agent_ran,
        strict_prose=strict_prose,
        default_timeout=20.0,
        env=env,
    )


def one(raw: object, extra_kinds: tuple[str, ...] = ()) -> Criterion:
    criteria = parse_criteria(raw, extra_kinds=extra_kinds)
    assert len(criteria) == 1
    return criteria[0]


def run_check(
    raw: object,
    root: Path,
    *,
    events: Iterable[tuple[str, str]] = (),
    agent_ran: bool = False,
    strict_prose: bool = False,
    env: dict[str, str] | None = None,
) -> CheckResult:
    ctx = ctx_for(root, events=events, agent_ran=agent_ran, strict_prose=strict_prose, env=env)
    return check(one(raw), ctx)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


# --------------------------------------------------------------------------- parsing


def test_parse_shapes() -> None:
    assert parse_criteria(None) == []
    assert parse_criteria("Login works") == [Criterion("prose", {"text": "Login works"})]
    criteria = parse_criteria(
        [
            "Login works",
            {"run": "make test", "timeout": "5m"},
            {"pytest": "tests/test_auth.py -k login"},
            {"exists": ["src/a.py", "src/*.py"]},
            {"contains": "src/auth.py", "pattern": "def login"},
            {"event": "TASK_COMPLETE", "task": "1.2"},
        ]
    )
    assert [c.kind for c in criteria] == ["prose", *BUILTIN_KINDS]
    assert criteria[1].spec == {"run": "make test", "timeout": "5m"}
    # A single mapping and a tuple (as the plan reader stores entries) are accepted too.
    assert one({"run": ["make", "test"]}).kind == "run"
    assert [c.kind for c in parse_criteria(("a", {"exists": "x"}))] == ["prose", "exists"]


def test_criteria_hash_and_pickle() -> None:
    criterion = one({"run": "make test", "env": {"A": "1"}})
    assert pickle.loads(pickle.dumps(criterion)) == criterion
    assert len({criterion, one({"run": "make test", "env": {"A": "1"}})}) == 1


def test_describe() -> None:
    assert one({"run": "make test"}).describe() == "run: make test"
    assert one({"run": ["sh", "-c", "exit 1"]}).describe() == "run: sh -c 'exit 1'"
    assert one({"pytest": "tests -k x"}).describe() == "pytest: tests -k x"
    assert one({"exists": "src/a.py"}).describe() == "exists: src/a.py"
    assert one({"exists": ["a", "b"]}).describe() == "exists: a, b"
    assert one({"contains": "a.py", "pattern": "def x"}).describe() == "contains: a.py /def x/"
    assert one({"event": "TASK_COMPLETE"}).describe() == "event: TASK_COMPLETE"
    assert one({"event": "X", "task": "2"}).describe() == "event: X (task 2)"
    assert one("Login  works\n ok").describe() == "prose: 'Login works ok'"
    long = one("x" * 200).describe()
    assert long.endswith("...'") and len(long) < 90


def test_unknown_kind_lists_known_kinds() -> None:
    with pytest.raises(CriterionError) as info:
        parse_criteria([{"http": "https://x"}])
    assert str(info.value) == f"unknown acceptance kind(s) 'http'; {KNOWN}"
    assert info.value.index == 0
    with pytest.raises(
        CriterionError,
        match=r"'http', 'url'; known kinds: contains, event, exists, pytest, run, zz, \(plus",
    ):
        parse_criteria({"http": "x", "url": "y"}, extra_kinds=["zz"])


def test_extra_kinds_accepted_and_not_validated() -> None:
    criterion = one({"http": {"url": "/health"}, "status": "200"}, extra_kinds=("http",))
    assert criterion.kind == "http"
    assert criterion.spec == {"http": {"url": "/health"}, "status": "200"}
    with pytest.raises(CriterionError, match="two kinds, 'run' and 'http'"):
        parse_criteria({"run": "x", "http": "y"}, extra_kinds=("http",))
    with pytest.raises(LookupError, match="'http'"):
        check(criterion, ctx_for(Path()))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (7, "acceptance must be a string or a list"),
        ([["nested"]], "entry must be a string or a mapping, not list"),
        (["  "], "empty prose acceptance criterion"),
        ({}, "empty acceptance mapping; known kinds"),
        ({"run": "a", "exists": "b"}, "two kinds, 'run' and 'exists'"),
        ({"run": ""}, "run: the command is empty"),
        ({"pytest": "  "}, "pytest: the command is empty"),
        ({"run": "echo 'open"}, "run: cannot split"),
        ({"run": []}, "run: an argument list must be a non-empty list of strings"),
        ({"run": ["ls", 3]}, "run: an argument list must be a non-empty list of strings"),
        ({"run": {"cmd": "x"}}, "run: expected a command string or a list of arguments, not dict"),
        ({"run": "x", "timeout": "soon"}, "run: timeout 'soon' is not a duration"),
        ({"run": "x", "timeout": "0"}, "run: timeout '0' must be more than zero"),
        ({"run": "x", "timeout": True}, "run: timeout must be a duration"),
        ({"run": "x", "timout": "5m"}, "run: unexpected key(s) 'timout'; keys besides 'run': env"),
        ({"run": "x", "env": "A=1"}, "run: env must be a mapping"),
        ({"run": "x", "env": {"A": ["1"]}}, "run: env A must be a string"),
        ({"exists": []}, "exists: expected a path or glob, or a non-empty list"),
        ({"exists": ["a", 1]}, "exists: expected a path or glob"),
        ({"exists": ""}, "exists: a path is empty"),
        ({"contains": "a.py"}, "contains: a.py: missing 'pattern'"),
        ({"contains": "a.py", "pattern": "def ("}, r"contains: pattern /def (/ does not compile"),
        ({"contains": ["a.py"], "pattern": "x"}, "contains: needs a file path"),
        ({"event": "task_complete"}, "event: 'task_complete' is not an event type"),
        ({"event": "TASK_COMPLETE", "task": ""}, "event: 'task' must be a task id"),
        ({"exists": "../x"}, "exists: '../x' leaves the project root"),
        ({"exists": ["ok", "a/../../x"]}, "exists: 'a/../../x' leaves the project root"),
        ({"exists": "/etc/passwd"}, "exists: '/etc/passwd' is absolute"),
        ({"contains": "../x", "pattern": "y"}, "contains: '../x' leaves the project root"),
    ],
)
def test_parse_errors(raw: object, message: str) -> None:
    with pytest.raises(CriterionError) as info:
        parse_criteria(raw)
    assert message in str(info.value)


def test_parse_error_carries_index() -> None:
    with pytest.raises(CriterionError) as info:
        parse_criteria(["fine", {"exists": "ok"}, {"run": ""}])
    assert info.value.index == 2


def test_parse_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(CriterionError, match="'link/passwd' resolves outside the project root"):
        parse_criteria({"exists": "link/passwd"}, root=tmp_path)
    # Without a root the same text is fine lexically; the check refuses it later.
    assert parse_criteria({"exists": "link/passwd"})


# --------------------------------------------------------------------------- prose


def test_prose_dispatch_mode(tmp_path: Path) -> None:
    done = run_check("Login works", tmp_path, agent_ran=True, events=[("TASK_COMPLETE", "1.1")])
    assert done.passed
    other = run_check("Login works", tmp_path, agent_ran=True, events=[("TASK_COMPLETE", "1.2")])
    assert not other.passed
    assert other.seen == "no TASK_COMPLETE for task 1.1"


def test_prose_verify_only(tmp_path: Path) -> None:
    result = run_check("Login works", tmp_path)
    assert result.passed
    assert result.note == "prose criterion not machine-checked (verify-only run)"
    strict = run_check("Login works", tmp_path, strict_prose=True)
    assert not strict.passed
    assert "cannot be machine-checked" in strict.seen
    assert "{run: ...}" in strict.note


# --------------------------------------------------------------------------- run


def test_run_passes_in_root(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("")
    result = run_check({"run": "sh -c 'test -f marker && echo found'"}, tmp_path)
    assert result.passed, result
    assert result.seen == "exit status 0"
    assert result.output == "found"
    assert result.duration > 0


def test_run_fails_with_status_and_tail(tmp_path: Path) -> None:
    script = "for i in $(seq 1 100); do echo line$i; done; echo oops >&2; exit 3"
    result = run_check({"run": ["sh", "-c", script]}, tmp_path)
    assert not result.passed
    assert result.seen == "exit status 3"
    lines = result.output.splitlines()
    assert len(lines) == 40
    assert lines[-1] == "oops"
    assert lines[-2] == "line100"


def test_run_command_not_found(tmp_path: Path) -> None:
    result = run_check({"run": "no-such-program-xyz --flag"}, tmp_path)
    assert not result.passed
    assert result.seen == "command not found: no-such-program-xyz"


def test_run_env_merged_and_pytest_vars_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "outer.py::t (call)")
    monkeypatch.setenv("KEPT_FROM_OS", "yes")
    raw = {"run": "env", "env": {"FROM_SPEC": "2", "BOTH": "spec"}}
    result = run_check(raw, tmp_path, env={"FROM_CTX": "1", "BOTH": "ctx"})
    assert result.passed
    seen = set(result.output.splitlines())
    assert {"FROM_SPEC=2", "FROM_CTX=1", "BOTH=spec", "KEPT_FROM_OS=yes"} <= seen
    assert not [line for line in seen if line.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT"))]


def test_run_timeout_kills_process_group(tmp_path: Path) -> None:
    script = "sleep 30 & echo $! > child.pid; sleep 30"
    start = time.monotonic()
    result = run_check({"run": ["sh", "-c", script], "timeout": "500ms"}, tmp_path)
    elapsed = time.monotonic() - start
    assert not result.passed
    assert result.seen == "timed out after 0.5s"
    assert elapsed < 5
    child = int((tmp_path / "child.pid").read_text())
    assert not alive(child)


def test_run_leftover_background_process_is_killed(tmp_path: Path) -> None:
    # The child keeps the output pipe open; the check must not wait 30 s for it.
    script = "sleep 30 & echo $! > child.pid; echo done"
    start = time.monotonic()
    result = run_check({"run": ["sh", "-c", script]}, tmp_path)
    assert result.passed
    assert time.monotonic() - start < 5
    assert not alive(int((tmp_path / "child.pid").read_text()))


def test_run_interrupted_kills_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_wait = subprocess.Popen.wait

    def interrupted_wait(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        if timeout is not None:  # the check's own wait, not the reaping after the kill
            while not (tmp_path / "child.pid").exists():
                time.sleep(0.01)
            raise KeyboardInterrupt
        return real_wait(self)

    monkeypatch.setattr(subprocess.Popen, "wait", interrupted_wait)
    script = "sleep 30 & echo $! > child.pid; sleep 30"
    with pytest.raises(KeyboardInterrupt):
        run_check({"run": ["sh", "-c", script]}, tmp_path)
    assert not alive(int((tmp_path / "child.pid").read_text()))


def test_run_killed_by_signal(tmp_path: Path) -> None:
    result = run_check({"run": ["sh", "-c", "kill -SEGV $$"]}, tmp_path)
    assert not result.passed
    assert result.seen == "killed by signal SIGSEGV"


# --------------------------------------------------------------------------- pytest


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    (tmp_path / "test_nested.py").write_text(
        "def test_good():\n    assert True\n\ndef test_bad():\n    assert 1 == 2\n"
    )
    return tmp_path


# The nested run must not load installed plugins (this one included): faster and isolated.
NO_AUTOLOAD = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_pytest_passes(nested: Path) -> None:
    result = run_check(
        {"pytest": "test_nested.py -k good -p no:cacheprovider"}, nested, env=NO_AUTOLOAD
    )
    assert result.passed, result.output
    assert result.seen == "exit status 0"


def test_pytest_fails_with_summary(nested: Path) -> None:
    result = run_check({"pytest": "test_nested.py -p no:cacheprovider"}, nested, env=NO_AUTOLOAD)
    assert not result.passed
    assert result.seen.startswith("tests failed (exit status 1): 1 failed, 1 passed in ")
    assert "short test summary info" in result.output.splitlines()[0]
    assert "FAILED test_nested.py::test_bad" in result.output


def test_pytest_no_tests_fails(nested: Path) -> None:
    raw = {"pytest": ["test_nested.py", "-k", "nothing_matches", "-p", "no:cacheprovider"]}
    result = run_check(raw, nested, env=NO_AUTOLOAD)
    assert not result.passed
    assert result.seen.startswith("no tests ran (exit status 5)")


# --------------------------------------------------------------------------- exists


def test_exists(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("")
    assert run_check({"exists": "src/a.py"}, tmp_path).passed
    assert run_check({"exists": ["src", "src/*.py", "**/a.py"]}, tmp_path).passed
    result = run_check({"exists": ["src/a.py", "src/b.py", "dist/*.whl"]}, tmp_path)
    assert not result.passed
    assert result.seen == "missing: src/b.py, dist/*.whl (no match)"


def test_exists_refuses_symlink_outside(tmp_path: Path) -> None:
    (tmp_path / "etc").symlink_to("/etc")
    (tmp_path / "inner").symlink_to(tmp_path / "etc" / "..")  # resolves to /, outside too
    (tmp_path / "real.txt").write_text("")
    (tmp_path / "alias.txt").symlink_to(tmp_path / "real.txt")
    assert run_check({"exists": "alias.txt"}, tmp_path).passed
    for raw in ({"exists": "etc/passwd"}, {"exists": "etc/pass*"}, {"exists": "inner"}):
        result = run_check(raw, tmp_path)
        assert not result.passed
        assert result.seen.startswith("outside the project root: ")


def test_exists_inside_answers_where_and_whether_in_one_walk(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("")
    (tmp_path / "etc").symlink_to("/etc")
    (tmp_path / "alias").symlink_to(tmp_path / "src")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    cases = {
        "src/a.py": True,
        "src": True,
        "src/b.py": False,
        "nosuch/a.py": False,
        "src/a.py/below": False,  # a file on the way
        "alias/a.py": True,  # a link that stays inside
        "alias/b.py": False,
        "dangling": False,
        "etc/passwd": None,  # a link out of the root
        "etc/nosuch": None,
    }
    assert {path: exists_inside(tmp_path, path) for path in cases} == cases


# --------------------------------------------------------------------------- contains


def test_contains(tmp_path: Path) -> None:
    (tmp_path / "auth.py").write_text("import os\n\ndef login(user):\n    return user\n")
    ok = run_check({"contains": "auth.py", "pattern": r"^def login\("}, tmp_path)
    assert ok.passed
    assert ok.seen == "match at auth.py:3"
    miss = run_check({"contains": "auth.py", "pattern": "def logout"}, tmp_path)
    assert not miss.passed
    assert miss.seen == "no match for /def logout/ in auth.py (4 lines)"
    gone = run_check({"contains": "nope.py", "pattern": "x"}, tmp_path)
    assert not gone.passed
    assert gone.seen == "file missing"


def test_contains_refuses_symlink_outside(tmp_path: Path) -> None:
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    result = run_check({"contains": "passwd", "pattern": "root"}, tmp_path)
    assert not result.passed
    assert result.seen == "file outside the project root"


# --------------------------------------------------------------------------- event


def test_event(tmp_path: Path) -> None:
    events = [("TASK_COMPLETE", "1.1"), ("TASK_COMPLETE", "0.9")]
    assert run_check({"event": "TASK_COMPLETE"}, tmp_path, events=events).passed
    assert run_check({"event": "TASK_COMPLETE", "task": "0.9"}, tmp_path, events=events).passed
    result = run_check({"event": "TASK_FAILED"}, tmp_path, events=events)
    assert not result.passed
    assert result.seen == "no TASK_FAILED event for task 1.1"


# --------------------------------------------------------------------------- report


def test_format_failure() -> None:
    passed = CheckResult(one({"exists": "a"}), True, "a exists", "all present")
    failed = CheckResult(
        one({"run": "make test"}), False, "exit status 0", "exit status 2", "error: x\nstop"
    )
    prose = CheckResult(one("Works"), True, "done", "verify-only", note="not checked")
    text = format_failure([passed, failed, prose])
    assert text.splitlines() == [
        "acceptance criterion failed: run: make test",
        "  expected: exit status 0",
        "  seen:     exit status 2",
        "  output (tail):",
        "    error: x",
        "    stop",
        "",
        "1 of 3 acceptance criteria failed",
    ]
    assert format_failure([passed]) == "0 of 1 acceptance criteria failed"


def test_failure_headline_is_the_first_failed_criterion_in_one_line() -> None:
    passed = CheckResult(one({"exists": "a"}), True, "a exists", "all present")
    run = CheckResult(one({"run": "make test"}), False, "exit status 0", "exit status 2", "x")
    missing = CheckResult(one({"exists": "b"}), False, "b exists", "missing: b\nmore")
    assert failure_headline([passed, run]) == "run: make test: exit status 2"
    assert failure_headline([missing]) == "exists: b: missing: b"
    assert failure_headline([passed, run, missing]) == "run: make test: exit status 2 (and 1 more)"


@pytest.mark.parametrize(
    "path",
    ["", ".", "a", "a/b", "a/b/missing", "missing/deeper", "out", "out/x", "a/up", "a/up/passwd",
     "a/in", "a/in/b", "loop", "loop/x", "a/../a/b", "a/../../x", "/etc"],
)  # fmt: skip
def test_inside_root_agrees_with_resolving_everything(tmp_path: Path, path: str) -> None:
    from pytest_conductor.acceptance.paths import inside_root

    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "out").symlink_to("/etc")
    (root / "a" / "up").symlink_to("../..")  # leaves the root
    (root / "a" / "in").symlink_to(root / "a")  # stays inside
    (root / "loop").symlink_to(root / "loop")
    try:
        real_root = root.resolve()
        real = (real_root / path).resolve()
        expected = real == real_root or real.is_relative_to(real_root)
    except (OSError, RuntimeError):
        expected = False
    assert inside_root(root, path) is expected
