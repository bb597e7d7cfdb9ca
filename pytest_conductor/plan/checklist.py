"""Checklist plans: plan.md without a DAG block, read from its task list.

Pure Python: no pytest import. Most plans Conductor tools write have no YAML DAG, only a
task list; three shapes are read (see docs/plan-format.md):

- Google's Conductor: ``## Phase 1: Name [checkpoint: abc1234]`` headings and task lines
  ``- [ ] Task: Write tests for X`` (indented sub-tasks belong to the task; a done task
  ends with its commit's short SHA);
- wshobson/agents' conductor: ``## Phase 1: Name`` with ``### Tasks`` (``- [ ] **1.1
  Title**``), ``### Verification`` checklists and ``**Dependencies:** Phase 1 complete``;
- superpowers' writing-plans: ``### Task N: Name`` headings with a ``**Files:**`` list
  and steps whose ``Run: `cmd``` is followed by ``Expected: PASS``.

Ids: the one written on the line (``1.1``, ``Task 3`` -> ``3``), else ``<phase>.<n>``
(``<n>`` when the plan has no phase headings). Order: file order, each task after the one
before it in its phase and a phase's first task after every task of the phase before;
``<!-- deps: … -->`` and ``Dependencies:`` lines override that. With ``order="phase"`` the
tasks of one phase are independent of each other (phases stay barriers).

Criteria come from the text where it is machine-checkable: ``Run:`` + ``Expected: PASS``
is a ``run`` criterion, ``Create: path`` an ``exists`` one, ``**Acceptance**:`` lines are
prose. Unknown markdown is ignored.

The marks of a DAG plan's checklist lines (``- [x] Task 1.1: …``) are read here too:
:func:`apply_marks`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pytest_conductor.graph.algorithms import find_cycle
from pytest_conductor.plan.blocks import Fence, fence_line, split_lines
from pytest_conductor.plan.marks import (
    BLOCKED,
    DONE,
    IN_PROGRESS,
    TODO,
    Checkbox,
    Checkpoint,
    Mark,
    read_checkbox,
)
from pytest_conductor.plan.reader import (
    NoDagBlock,
    Node,
    Plan,
    PlanError,
    PlanProblem,
    parse_plan,
    read_plan_text,
)
from pytest_conductor.util.ids import MAX_ID_LENGTH, SAFE_ID

__all__ = [
    "ORDERS",
    "apply_marks",
    "load_track_plan",
    "parse_checklist",
    "parse_track_plan",
]

ORDERS = ("file", "phase")

_HEADING = re.compile(r"^[ \t]{0,3}(?P<level>#{1,6})[ \t]+(?P<text>.*?)[ \t#]*$")
_PHASE = re.compile(
    r"^phase\b[ \t]*(?:(?P<num>\d+(?:\.\d+)*)[ \t]*[:.)\-\u2013\u2014]?|[:\-\u2013\u2014])"
    r"[ \t]*(?P<name>.*)$",
    re.IGNORECASE,
)
_CHECKPOINT = re.compile(r"\[checkpoint:[ \t]*`?(?P<sha>[0-9a-fA-F]{7,40})`?[ \t]*\]", re.I)
_TASK_HEADING = re.compile(
    r"^task\b[ \t]*(?:(?P<id>\d+(?:\.\d+)*)[ \t]*[:.)\-\u2013\u2014]?|[:\-\u2013\u2014])"
    r"[ \t]*(?P<name>.*)$",
    re.IGNORECASE,
)
# The id written on a task line: "Task 1.1: …", "Task 3 …", "**1.1 Title**", "1.1: …".
_LINE_ID = re.compile(
    r"^(?:task[ \t]+(?P<task>\d+(?:\.\d+)*)\b|(?P<dotted>\d+(?:\.\d+)+)\b)[ \t]*[:.)\-]?",
    re.IGNORECASE,
)
_NAMED_TASK = re.compile(r"^(?:\*\*|__)?task[ \t]+([A-Za-z0-9._-]+?)(?:\*\*|__)?:", re.I)
_TASK_WORD = re.compile(r"^task\b[ \t]*[:.\-]?[ \t]*", re.IGNORECASE)
_COMMENT_BODY = re.compile(r"<!--(?P<body>.*?)-->")
_DEPS_KEY = re.compile(r"\bdeps?[ \t]*:", re.IGNORECASE)
_NEXT_KEY = re.compile(r",?[ \t]*[A-Za-z_]+[ \t]*:")
_DEPENDENCIES = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(?:\*\*|__)?(?:dependencies|depends[ \t]+on)[ \t]*:?[ \t]*"
    r"(?:\*\*|__)?[ \t]*:?[ \t]*(?P<value>.*)$",
    re.IGNORECASE,
)
_NONE = re.compile(r"^(?:none|n/?a|-|—|nothing)\.?$", re.IGNORECASE)
_PHASE_REF = re.compile(r"\bphases?[ \t]+(?P<nums>\d+(?:[ \t]*(?:,|and|&)[ \t]*\d+)*)", re.I)
_TASK_REF = re.compile(r"\btasks?[ \t]+(\d+(?:\.\d+)*)", re.IGNORECASE)
_DOTTED_ID = re.compile(r"(?<![\w.])\d+(?:\.\d+)+(?![\w.])")
_RUN = re.compile(r"^[ \t]*(?:[-*+][ \t]+)?(?:\*\*)?run(?:\*\*)?:[ \t]*`(?P<cmd>[^`]+)`", re.I)
_EXPECTED = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(?:\*\*)?expected(?:\*\*)?:[ \t]*(?P<what>.*)", re.I
)
_FILE_ITEM = re.compile(
    r"^[ \t]*[-*+][ \t]+(?:\*\*)?(?P<kind>create|modify|test|update|delete)(?:\*\*)?[ \t]*:"
    r"(?:\*\*)?[ \t]*(?P<path>.+)$",
    re.IGNORECASE,
)
_FILES_LINE = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(?:\*\*|__)?files(?::\*\*|\*\*:|__:|:__|:)[ \t]*(?P<value>.*)$", re.I
)
_ACCEPTANCE = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(?:\*\*|__)acceptance(?:[ \t]+criteria)?(?::\*\*|\*\*:|__:|:__)"
    r"[ \t]*(?P<value>.*)$",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+(?:\[[ xX~!\-]\][ \t]*)?(?P<text>.*)$")
_VERIFICATION = re.compile(r"^(?:verification|verify)\b", re.IGNORECASE)
_MANUAL_VERIFICATION = re.compile(r"user manual verification", re.IGNORECASE)
_SHELL_CHARS = frozenset("();<>|&")
_LINE_RANGE = re.compile(r":\d+(?:-\d+)?$")


def load_track_plan(path: Path, order: str = "file") -> Plan:
    """Read plan.md at ``path`` in whichever form it has: a DAG block, else a checklist."""
    return parse_track_plan(read_plan_text(path), path, order)


def parse_track_plan(text: str, path: Path | str = "plan.md", order: str = "file") -> Plan:
    """A DAG plan (with its checklist marks), else a checklist plan; see the module doc."""
    try:
        plan = parse_plan(text, path)
    except NoDagBlock:
        return parse_checklist(text, path, order)
    return apply_marks(plan, split_lines(text))


# --------------------------------------------------------------------------- scanning


def _prose_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the lines outside fenced code and multi-line comments."""
    opener: Fence | None = None
    in_comment = False
    for number, line in enumerate(lines, 1):
        fence = fence_line(line)
        if opener is not None:
            if fence is not None and fence.closes(opener):
                opener = None
            continue
        if in_comment:
            in_comment = "-->" not in line
            continue
        if fence is not None:
            opener = fence
            continue
        start = line.lstrip()
        if start.startswith("<!--") and "-->" not in start[4:]:
            in_comment = True
            continue
        yield number, line


def _written_id(body: str) -> tuple[str | None, str]:
    """The id written at the start of a task's text, and the text without it."""
    text = body.strip()
    bold = text.startswith(("**", "__"))
    if bold:
        text = text[2:]
    match = _LINE_ID.match(text)
    rest = _TASK_WORD.sub("", text, count=1) if match is None else text[match.end() :]
    if bold:
        rest = rest.replace("**", "", 1) if "**" in rest else rest.replace("__", "", 1)
    rest = rest.strip().strip("*_").strip().lstrip(":").strip()
    if match is None:
        return None, rest
    return match["task"] or match["dotted"], rest


def _deps_comment(line: str) -> tuple[str, ...] | None:
    """The ids of a ``<!-- deps: 1.1, 1.2, parallel: pg-1 -->`` comment; None without one."""
    for comment in _COMMENT_BODY.finditer(line):
        key = _DEPS_KEY.search(comment["body"])
        if key is None:
            continue
        value = comment["body"][key.end() :]
        following = _NEXT_KEY.search(value)
        return _dep_ids(value[: following.start()] if following else value)
    return None


def _dep_ids(value: str) -> tuple[str, ...] | None:
    """Ids in a ``deps:`` comment; ``()`` for none; None when nothing is readable."""
    value = value.strip()
    if not value or _NONE.match(value):
        return ()
    parts = [p.strip().strip("`*") for p in re.split(r"[,\s]+", value) if p.strip()]
    ids = tuple(dict.fromkeys(p for p in parts if SAFE_ID.fullmatch(p) and len(p) <= MAX_ID_LENGTH))
    return ids or None


# --------------------------------------------------------------------------- the model


@dataclass
class _Task:
    line: int
    written_id: str | None
    name: str
    mark: Mark | None
    heading_level: int | None = None  # a "### Task N:" heading task (superpowers)
    type: str = "code"
    body: list[tuple[int, str]] = field(default_factory=list)
    deps: tuple[str, ...] | None = None  # written in a deps comment or Dependencies line
    deps_line: int | None = None
    steps: list[str] = field(default_factory=list)  # the marks of checkbox steps
    id: str = ""


@dataclass
class _Phase:
    number: str | None
    name: str
    line: int
    level: int
    checkpoint: Checkpoint | None = None
    tasks: list[_Task] = field(default_factory=list)
    verification: list[tuple[int, Checkbox]] = field(default_factory=list)
    deps: list[str] | None = None  # Dependencies: phase numbers or task ids
    deps_line: int | None = None
    section: str = ""
    id: str = ""


class _Scan:
    """One pass over plan.md's prose lines, sorting them into phases and tasks."""

    def __init__(self) -> None:
        self.loose = _Phase(None, "", 0, 0)  # tasks outside any phase heading
        self.phases: list[_Phase] = [self.loose]
        self.has_phases = False
        self.phase = self.loose
        self.task: _Task | None = None

    def run(self, lines: list[str]) -> _Scan:
        for number, line in _prose_lines(lines):
            heading = _HEADING.match(line)
            if heading is not None:
                self.heading(number, len(heading["level"]), heading["text"].strip())
            else:
                self.line(number, line)
        return self

    def heading(self, number: int, level: int, text: str) -> None:
        phase_match = _PHASE.match(text)
        if phase_match is not None:
            name = _CHECKPOINT.sub("", phase_match["name"]).strip()
            self.phase = _Phase(phase_match["num"], name, number, level)
            checkpoint = _CHECKPOINT.search(text)
            if checkpoint is not None:
                self.phase.checkpoint = Checkpoint(checkpoint["sha"].lower(), number, "")
            self.phases.append(self.phase)
            self.has_phases = True
            self.task = None
            return
        task_match = _TASK_HEADING.match(text)
        if task_match is not None:
            name = task_match["name"].strip() or text
            self.task = _Task(number, task_match["id"], name, None, heading_level=level)
            self.phase.tasks.append(self.task)
            return
        task = self.task
        if task is not None and task.heading_level is not None and level > task.heading_level:
            return  # a sub-heading of a heading task ("#### Step 1") is part of its body
        self.task = None
        if level <= self.phase.level and self.phase is not self.loose:
            # A heading like "## Notes" ends the phase: its checklists are no tasks.
            self.phase = _Phase(None, "", 0, 0)
            self.phase.section = "outside"
            return
        self.phase.section = "verification" if _VERIFICATION.match(text) else text.lower()

    def line(self, number: int, line: str) -> None:
        box = read_checkbox(line)
        task = self.task
        in_heading_task = task is not None and task.heading_level is not None
        if box is not None and not in_heading_task and box.indent <= 1:
            self.checkbox(number, line, box)
            return
        # A checklist task's body is what is indented under it: a line at the margin
        # (a paragraph, "**Dependencies:** …") belongs to the phase again.
        at_margin = len(line) - len(line.lstrip(" \t")) < 2
        if task is not None and not in_heading_task and line.strip() and at_margin:
            task = self.task = None
        if task is not None:
            if box is not None and in_heading_task:
                task.steps.append(box.state)
            task.body.append((number, line))
            return
        dependencies = _DEPENDENCIES.match(line)
        if dependencies is not None and self.phase is not self.loose:
            self.phase.deps = _phase_refs(dependencies["value"])
            self.phase.deps_line = number

    def checkbox(self, number: int, line: str, box: Checkbox) -> None:
        phase = self.phase
        self.task = None
        if phase.section == "outside" or (self.has_phases and phase is self.loose):
            return
        if phase.section == "verification":
            phase.verification.append((number, box))
            return
        written, name = _written_id(box.body)
        mark = Mark(box.state, number, box.sha if box.state == DONE else None, line)
        task = _Task(number, written, name or box.body or f"line {number}", mark)
        if _MANUAL_VERIFICATION.search(name):
            task.type = "verification"
        deps = _deps_comment(line)
        if deps is not None:
            task.deps, task.deps_line = deps, number
        phase.tasks.append(task)
        self.task = task


def _phase_refs(value: str) -> list[str] | None:
    """``Dependencies:`` of a phase: ``phase:<n>`` entries and task ids; [] for none."""
    value = value.strip().strip("*_").strip()
    if _NONE.match(value) or value.lower().startswith("none"):
        return []
    refs = [
        f"phase:{num}"
        for match in _PHASE_REF.finditer(value)
        for num in re.findall(r"\d+", match["nums"])
    ]
    without_phases = _PHASE_REF.sub("", value)
    refs += _TASK_REF.findall(without_phases)
    refs += _DOTTED_ID.findall(_TASK_REF.sub("", without_phases))
    return refs or None


# --------------------------------------------------------------------------- criteria


def _path_text(raw: str) -> str | None:
    """A path as a plan writes it (in backticks, maybe with ``:12-40``); None if unusable."""
    text = raw.strip()
    quoted = re.match(r"`([^`]+)`", text)
    text = quoted[1] if quoted else text.split()[0] if text.split() else ""
    text = _LINE_RANGE.sub("", text.strip().rstrip(",;."))
    if not text or text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return None
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return None
    return text


def _command(cmd: str) -> dict[str, object] | None:
    """A ``Run:`` command as a criterion: ``pytest`` for a pytest run (``pytest …``,
    ``python -m pytest …``: run with the Python running pytest-conductor, whatever PATH
    says), else ``run``, split like a shell would, or through ``sh -c`` when the plan wrote
    shell syntax (pipes, ``&&``); None when it cannot be split."""
    cmd = cmd.strip()
    if not cmd:
        return None
    try:
        lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return None
    if not tokens:
        return None
    if any(set(token) <= _SHELL_CHARS for token in tokens) or "$(" in cmd or "`" in cmd:
        return {"run": ["sh", "-c", cmd]}
    for prefix in _PYTEST_COMMANDS:
        if tokens[: len(prefix)] == list(prefix):
            # A bare `pytest` runs the whole suite: the pytest kind needs one argument.
            return {"pytest": tokens[len(prefix) :] or ["."]}
    return {"run": cmd}


_PYTEST_COMMANDS = (("pytest",), ("python", "-m", "pytest"), ("python3", "-m", "pytest"))


@dataclass
class _Criteria:
    """What a task's body says about it: criteria, files, its own dependencies."""

    files: list[str] = field(default_factory=list)
    runs: list[dict[str, object]] = field(default_factory=list)
    exists: list[str] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)
    deps: tuple[str, ...] | None = None
    deps_line: int | None = None
    # Reading state: a Run: waiting for its Expected:, a list under Acceptance:/Files:.
    pending_run: dict[str, object] | None = None
    list_of: str = ""

    @property
    def acceptance(self) -> list[object]:
        found: list[object] = list(self.runs)
        if self.exists:
            found.append({"exists": self.exists if len(self.exists) > 1 else self.exists[0]})
        return found + list(self.prose)

    def add_file(self, raw: str, *, create: bool = False) -> None:
        path = _path_text(raw) if raw.strip() else None
        if path is None:
            return
        if path not in self.files:
            self.files.append(path)
        if create and path not in self.exists:
            self.exists.append(path)

    def read(self, task: _Task) -> _Criteria:
        for number, line in task.body:
            if not self.read_line(task, number, line):
                self.list_of = ""  # a list under "Files:" ends at anything else
        return self

    def read_line(self, task: _Task, number: int, line: str) -> bool:
        """Take one body line in; False when it ends a list under Acceptance:/Files:."""
        if (run := _RUN.match(line)) is not None:
            self.pending_run = _command(run["cmd"])
        elif (expected := _EXPECTED.match(line)) is not None:
            passes = expected["what"].strip().upper().startswith("PASS")
            if passes and self.pending_run is not None and self.pending_run not in self.runs:
                self.runs.append(self.pending_run)
            self.pending_run = None
        elif (item := _FILE_ITEM.match(line)) is not None:
            self.add_file(item["path"], create=item["kind"].lower() == "create")
        elif (files := _FILES_LINE.match(line)) is not None:
            self.list_of = "" if files["value"].strip() else "files"
            for part in files["value"].split(","):
                self.add_file(part)
        elif (acceptance := _ACCEPTANCE.match(line)) is not None:
            value = acceptance["value"].strip()
            self.list_of = "" if value else "acceptance"
            self.prose += [value] if value else []
        elif (dependencies := _DEPENDENCIES.match(line)) is not None and task.deps is None:
            refs = _phase_refs(dependencies["value"])
            if refs is None:
                return False
            self.deps, self.deps_line = tuple(refs), number
        elif (listed := _LIST_ITEM.match(line)) is not None and self.list_of:
            text = listed["text"].strip()
            if self.list_of == "files":
                self.add_file(text)
            elif text:
                self.prose.append(text)
        else:
            return False
        return True


def _criteria(task: _Task) -> _Criteria:
    return _Criteria().read(task)


# --------------------------------------------------------------------------- the plan


def parse_checklist(text: str, path: Path | str = "plan.md", order: str = "file") -> Plan:
    """Read a plan without a DAG block from its task list; see the module doc.

    Raises PlanError when it holds no task at all, or its ids or deps do not add up.
    """
    path = Path(path)
    scan = _Scan().run(split_lines(text))
    phases = [
        p
        for p in scan.phases
        if (p.tasks or p.verification) and not (p is scan.loose and scan.has_phases)
    ]
    if not phases:
        raise PlanError(path, [PlanProblem(_NO_TASKS)])
    for position, phase in enumerate(scan.phases[1:], 1):
        phase.id = phase.number or str(position)
    builder = _Builder(phases, order)
    for phase in phases:
        builder.add_phase(phase)
    builder.check_deps()
    if builder.problems:
        raise PlanError(path, sorted(builder.problems, key=lambda p: p.line or 0))
    return Plan(path=path, nodes=tuple(builder.nodes), form="checklist")


class _Builder:
    """Turns scanned phases into nodes with ids and dependencies, collecting problems."""

    def __init__(self, phases: list[_Phase], order: str) -> None:
        self.order = order
        # First every task's id, so that deps may name any task or phase.
        self.tasks_of: dict[str, list[_Task]] = {}
        for phase in phases:
            tasks = list(phase.tasks)
            for n, task in enumerate(tasks, 1):
                task.id = task.written_id or (f"{phase.id}.{n}" if phase.id else str(n))
            if phase.verification:
                tasks.append(_verification_task(phase))
            self.tasks_of.setdefault(phase.id, []).extend(tasks)
        self.phase_ids = {key: [t.id for t in tasks] for key, tasks in self.tasks_of.items()}
        self.problems: list[PlanProblem] = []
        self.nodes: list[Node] = []
        self.first_line: dict[str, int] = {}
        self.deps_lines: dict[str, int] = {}
        self.previous: list[str] = []

    def add_phase(self, phase: _Phase) -> None:
        own: list[str] = []
        entry = self.previous
        if phase.deps is not None:
            entry = self.resolve(phase.deps, phase.deps_line)
        for task in self.tasks_of.pop(phase.id, []):
            node = self.node(task, phase, own, entry)
            if node is not None:
                self.nodes.append(node)
                own.append(task.id)
        if phase.checkpoint is not None and own:
            checkpoint = replace(phase.checkpoint, phase=phase.id)
            self.nodes[-1] = replace(self.nodes[-1], checkpoint=checkpoint)
        if own:
            self.previous = own

    def node(self, task: _Task, phase: _Phase, own: list[str], entry: list[str]) -> Node | None:
        found = _criteria(task)
        written = task.deps if task.deps is not None else found.deps
        line = (task.deps_line if task.deps is not None else found.deps_line) or task.line
        if written is not None:
            deps = self.resolve(written, line)
        elif task.type == "verification" and task.heading_level == -1:
            deps = [*own] or list(entry)  # a phase's checklist checks all of the phase
        elif own and self.order == "file":
            deps = [own[-1]]
        else:
            deps = list(entry)
        if task.id in self.first_line:
            self.problems.append(
                PlanProblem(
                    f"duplicate id {task.id} (lines {self.first_line[task.id]} and {task.line})",
                    task.line,
                )
            )
            return None
        self.first_line[task.id] = task.line
        self.deps_lines[task.id] = line
        return Node(
            id=task.id,
            name=task.name,
            type=task.type,
            files=tuple(found.files),
            depends_on=tuple(d for d in dict.fromkeys(deps) if d != task.id),
            phase=phase.id or None,
            acceptance=tuple(found.acceptance),
            line=task.line,
            mark=task.mark or _step_mark(task),
        )

    def resolve(self, refs: tuple[str, ...] | list[str], line: int | None) -> list[str]:
        """Task ids from dependency references: ids stay, ``phase:<n>`` is all of it."""
        deps: list[str] = []
        for ref in refs:
            if not ref.startswith("phase:"):
                deps.append(ref)
                continue
            number = ref.removeprefix("phase:")
            if number not in self.phase_ids:
                self.problems.append(
                    PlanProblem(
                        f"depends on phase {number}, which is not a phase of the plan", line
                    )
                )
                continue
            deps += self.phase_ids[number]
        return deps

    def check_deps(self) -> None:
        known = self.first_line
        for node in self.nodes:
            for dep in node.depends_on:
                if dep not in known:
                    self.problems.append(
                        PlanProblem(
                            f"task {node.id} depends on {dep}, which is not a task in the plan",
                            self.deps_lines.get(node.id, node.line),
                        )
                    )
        deps = {n.id: tuple(d for d in n.depends_on if d in known) for n in self.nodes}
        cycle = find_cycle(deps)
        if cycle is not None:
            self.problems.append(PlanProblem(f"cycle: {' -> '.join(cycle)}", known.get(cycle[0])))


_NO_TASKS = (
    "no DAG block and no task list: expected one fenced ```yaml block whose YAML has a "
    "top-level `dag:` key, or checklist tasks such as `- [ ] Task: …` under "
    "`## Phase 1: …` headings, or `### Task 1: …` headings"
)


def _verification_task(phase: _Phase) -> _Task:
    """A phase's ``### Verification`` checklist as one node, ``<phase>.verify``, whose
    items are its prose criteria and whose mark sums up theirs."""
    first_line = phase.verification[0][0]
    states = [box.state for _, box in phase.verification]
    task = _Task(
        first_line,
        None,
        f"Phase {phase.id} verification" if phase.id else "Verification",
        None,
        heading_level=-1,  # marks the node made from a section, not from a line
        type="verification",
    )
    task.id = f"{phase.id}.verify" if phase.id else "verify"
    task.steps = states
    task.body = [(n, f"**Acceptance**: {box.body}") for n, box in phase.verification if box.body]
    return task


def _step_mark(task: _Task) -> Mark | None:
    """The status of a task whose line has no mark, from its checkbox steps: done when all
    are, blocked when one is, in progress when one is done or under way."""
    if not task.steps:
        return None
    states = set(task.steps) - {"-"}
    if not states or states == {DONE}:
        state = DONE
    elif BLOCKED in states:
        state = BLOCKED
    elif DONE in states or IN_PROGRESS in states:
        state = IN_PROGRESS
    else:
        state = TODO
    return Mark(state, task.line, None, "")


# --------------------------------------------------------------------------- DAG plans


def apply_marks(plan: Plan, lines: list[str]) -> Plan:
    """A DAG plan with the marks of its checklist lines (``- [x] Task 1.1: …``) on its
    nodes, and a warning for each ``<!-- deps: … -->`` that disagrees with the DAG block."""
    nodes = {node.id: node for node in plan.nodes}
    warnings = list(plan.warnings)
    seen: set[str] = set()
    for number, line in _prose_lines(lines):
        box = read_checkbox(line)
        if box is None:
            continue
        written, _ = _written_id(box.body)
        if written is None:  # a DAG's ids need not be numbers: "Task store-1: …"
            named = _NAMED_TASK.match(box.body)
            written = named[1] if named else None
        if written is None or written not in nodes or written in seen:
            continue
        seen.add(written)
        node = nodes[written]
        mark = Mark(box.state, number, box.sha if box.state == DONE else None, line)
        nodes[written] = replace(node, mark=mark)
        written_deps = _deps_comment(line)
        if written_deps is not None and set(written_deps) != set(node.depends_on):
            in_dag = ", ".join(node.depends_on) or "none"
            in_line = ", ".join(written_deps) or "none"
            warnings.append(
                PlanProblem(
                    f"task {written}: the checklist line says deps: {in_line}, the DAG block "
                    f"says depends_on: [{in_dag}] (line {node.line}); the DAG block is followed",
                    number,
                )
            )
    if not seen and len(warnings) == len(plan.warnings):
        return plan
    return replace(plan, nodes=tuple(nodes[n.id] for n in plan.nodes), warnings=tuple(warnings))
