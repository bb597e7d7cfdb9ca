"""``--conductor-write-plan``: marks written back into plan.md, and nothing else."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from pytest_conductor.plan.checklist import parse_track_plan
from pytest_conductor.plan.writeback import MarkWriter
from tests.test_marks import WORKER, commit, git, git_env, lit  # noqa: F401 (fixture)

# CRLF line breaks, a BOM, trailing spaces and a comment: all must survive byte for byte.
PLAN = (
    "\ufeff# Plan  \r\n"
    "\r\n"
    "## Phase 1: Build\r\n"
    "- [x] Task: First abc1234\r\n"
    "- [ ] Task: Second   \r\n"
    "    - [ ] sub-task stays as it is\r\n"
    "- [ ] Task: Third <!-- deps: 1.1 -->\r\n"
)


def _writer(tmp_path: Path, text: str = PLAN) -> tuple[MarkWriter, Path]:
    plan = tmp_path / "plan.md"
    plan.write_bytes(text.encode("utf-8"))
    return MarkWriter(plan, tmp_path / "plan.md.lock"), plan


def _line(plan: Path, task: str) -> tuple[int, str]:
    mark = parse_track_plan(plan.read_text(encoding="utf-8-sig")).node(task).mark
    assert mark is not None
    return mark.line, mark.text


def test_only_the_mark_changes_byte_for_byte(tmp_path: Path) -> None:
    writer, plan = _writer(tmp_path)
    line, text = _line(plan, "1.2")
    assert writer.write("1.2", line, text, "~") is None
    assert plan.read_bytes() == PLAN.replace("- [ ] Task: Second", "- [~] Task: Second").encode()
    assert writer.write("1.2", line, text, "x", "def5678") is None
    # The plan's SHAs are bare: the new one is too, at the end of the line.
    expected = PLAN.replace("- [ ] Task: Second   ", "- [x] Task: Second def5678")
    assert plan.read_bytes() == expected.encode()
    line, text = _line(plan, "1.3")
    assert writer.write("1.3", line, text, "!") is None
    expected = expected.replace("- [ ] Task: Third", "- [!] Task: Third")
    assert plan.read_bytes() == expected.encode()


def test_an_edit_elsewhere_is_kept_and_a_moved_line_is_found(tmp_path: Path) -> None:
    writer, plan = _writer(tmp_path)
    line, text = _line(plan, "1.2")
    edited = PLAN.replace("# Plan  \r\n", "# Plan  \r\nA note someone added.\r\n")
    plan.write_bytes(edited.encode("utf-8"))
    assert writer.write("1.2", line, text, "~") is None
    assert plan.read_bytes() == edited.replace("- [ ] Task: Second", "- [~] Task: Second").encode()


def test_a_line_someone_else_changed_is_left_alone(tmp_path: Path) -> None:
    writer, plan = _writer(tmp_path)
    line, text = _line(plan, "1.2")
    theirs = PLAN.replace("- [ ] Task: Second", "- [x] Task: Second 1234abc")
    plan.write_bytes(theirs.encode("utf-8"))
    problem = writer.write("1.2", line, text, "!")
    assert problem == (
        "task 1.2: its line in plan.md (line 5) changed during the run; its mark was not written"
    )
    assert plan.read_bytes() == theirs.encode("utf-8")


def test_writes_from_many_threads_are_serialised(tmp_path: Path) -> None:
    text = "".join(f"- [ ] Task 1.{n}: t{n}\n" for n in range(1, 21))
    writer, plan = _writer(tmp_path, text)
    lines = {f"1.{n}": _line(plan, f"1.{n}") for n in range(1, 21)}

    def mark(task: str) -> None:
        assert writer.write(task, *lines[task], "x") is None

    threads = [threading.Thread(target=mark, args=(task,)) for task in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert plan.read_text() == text.replace("[ ]", "[x]")


# --------------------------------------------------------------------------- a real run

HALF_DONE = """\
# Plan

## Phase 1: Build [checkpoint: {first}]

- [x] Task: Made earlier {first}
    - Keep this sub-task as it is
- [ ] Task: Write b.txt

## Phase 2: Finish

- [~] Task: Write c.txt
- [ ] Task: Fails
- [ ] Task: After the failure
"""


@pytest.mark.slow
@pytest.mark.usefixtures("git_env")
@pytest.mark.parametrize("workers", ["0", "2"])
def test_dispatch_with_write_back_round_trip(pytester: pytest.Pytester, workers: str) -> None:
    root = pytester.path
    git(root, "init", "-q")
    first = commit(root, "a.txt")[:7]
    folder = root / "conductor" / "tracks" / "t"
    folder.mkdir(parents=True)
    original = HALF_DONE.format(first=first)
    (folder / "plan.md").write_text(original, encoding="utf-8")
    scripts = {
        "1.2": {"write": {"b.txt": "b"}, "commit": True},
        "2.1": {"write": {"c.txt": "c"}, "commit": True},
        "2.2": {"exit": 3},
    }
    (folder / "scripts.json").write_text(json.dumps(scripts), encoding="utf-8")
    git(root, "add", "conductor")
    git(root, "commit", "-q", "-m", "plan")

    result = pytester.runpytest(
        "--conductor-track=t", WORKER, "-n", workers, "--conductor-write-plan"
    )
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    log = git(root, "log", "--format=%h %s", "--abbrev=7").splitlines()
    sha = {subject.split()[-1]: line.split()[0] for line in log for subject in [line]}
    expected = (
        original.replace("- [ ] Task: Write b.txt", f"- [x] Task: Write b.txt {sha['1.2']}")
        .replace("- [~] Task: Write c.txt", f"- [x] Task: Write c.txt {sha['2.1']}")
        .replace("- [ ] Task: Fails", "- [!] Task: Fails")
        .replace("- [ ] Task: After the failure", "- [!] Task: After the failure")
    )
    assert (folder / "plan.md").read_text(encoding="utf-8") == expected
    result.stdout.fnmatch_lines(["*conductor: plan.md marks*", lit("1.2: [x]")])

    # The next run resumes: the done tasks are re-checked (their commits too), and only
    # the failed and blocked ones are dispatched again.
    scripts["2.2"] = {}
    (folder / "scripts.json").write_text(json.dumps(scripts), encoding="utf-8")
    result = pytester.runpytest(
        "--conductor-track=t", WORKER, "-n", workers, "--conductor-write-plan"
    )
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["1.2: done earlier (*)"])
    final = (folder / "plan.md").read_text(encoding="utf-8")
    assert final == expected.replace("[!]", "[x]")


@pytest.mark.slow
def test_without_the_option_plan_md_is_never_written(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "conductor" / "tracks" / "t"
    folder.mkdir(parents=True)
    text = textwrap.dedent("- [ ] Task: one\n")
    (folder / "plan.md").write_text(text, encoding="utf-8")
    result = pytester.runpytest("--conductor-track=t", WORKER, "-n", "0")
    result.assert_outcomes(passed=1)
    assert (folder / "plan.md").read_text(encoding="utf-8") == text
