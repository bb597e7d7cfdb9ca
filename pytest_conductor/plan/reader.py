"""Read a Conductor ``plan.md`` into a :class:`Plan`.

Pure Python: no pytest import. Every problem found in a plan is collected and raised
together as one :class:`PlanError` whose message names plan.md line numbers.

How the DAG block is found is in :mod:`pytest_conductor.plan.blocks`.

YAML scalars are read as text: ``1.10`` stays ``"1.10"``; only ``true``/``false`` (and
the other YAML 1.1 booleans) and ``null`` keep their meaning, and where text is wanted
(ids, names, paths) the text as written is used even for those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.nodes import Node as YamlNode

from pytest_conductor.graph.algorithms import find_cycle, levels, width
from pytest_conductor.plan.blocks import DAG_LINE, CodeBlock, code_blocks, split_lines
from pytest_conductor.plan.durations import parse_duration
from pytest_conductor.plan.marks import Checkpoint, Mark
from pytest_conductor.util.ids import MAX_ID_LENGTH, SAFE_ID

__all__ = [
    "Group",
    "NoDagBlock",
    "Node",
    "Plan",
    "PlanError",
    "PlanProblem",
    "load_plan",
    "parse_plan",
    "read_plan_text",
    "sort_problems",
]


@dataclass(frozen=True)
class PlanProblem:
    """One thing wrong with a plan; ``line`` is 1-based within plan.md, when known."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class PlanError(Exception):
    """A plan that cannot be run; carries every problem found, not only the first.

    ``plan`` is what could be read despite the problems (None when not even the DAG
    block could be): later checks (acceptance criteria) look at it too, so that one
    round reports every problem of the plan.
    """

    def __init__(
        self, path: Path | str, problems: list[PlanProblem], plan: Plan | None = None
    ) -> None:
        self.path = Path(path)
        self.problems = sort_problems(problems)
        self.plan = plan
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"{self.path}: {self.problems[0]}"
        lines = [f"{self.path}: {len(self.problems)} problems"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class NoDagBlock(PlanError):
    """plan.md has no DAG block; it may still be a checklist plan (see plan.checklist)."""


@dataclass(frozen=True)
class Node:
    """One DAG node (task). Values are text as written; durations are seconds."""

    id: str
    name: str
    type: str = "code"
    files: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    estimated_duration: float | None = None
    phase: str | None = None
    # Raw acceptance entries: each a str or a dict with str keys (values as read).
    acceptance: tuple[object, ...] = ()
    worker: str | None = None
    timeout: float | None = None
    line: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    # The task's checkbox in plan.md ([ ] [~] [x] [!] [-]), when it has one.
    mark: Mark | None = None
    # The checkpoint of the phase this task ends, when its heading has one.
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class Group:
    id: str
    tasks: tuple[str, ...]
    conflict_free: bool = True
    shared_resources: tuple[str, ...] = ()
    coordination_strategy: str | None = None
    line: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    path: Path
    nodes: tuple[Node, ...]  # in plan order
    groups: tuple[Group, ...] = ()
    dag_line: int | None = None  # line of the ``dag:`` key in plan.md
    # Things the user should know that do not stop the run (the plugin shows each as a
    # ConductorWarning), e.g. a parallel group naming a task that is not a node.
    warnings: tuple[PlanProblem, ...] = ()
    # "dag" (a YAML DAG block) or "checklist" (a task list read as one, see plan.checklist).
    form: str = "dag"

    # Cached: the scheduler and the reporters ask once per item or report, and a plan
    # never changes once read (cached_property writes the instance dict, so frozen is fine).
    @cached_property
    def by_id(self) -> Mapping[str, Node]:
        """``{id: node}`` in plan order."""
        return MappingProxyType({n.id: n for n in self.nodes})

    def node(self, node_id: str) -> Node:
        return self.by_id[node_id]

    def __getstate__(self) -> dict[str, object]:
        # Pickled for xdist workers: the cached views (MappingProxyType) do not pickle,
        # and are rebuilt on first use anyway.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    @cached_property
    def deps(self) -> Mapping[str, tuple[str, ...]]:
        """``{id: depends_on}`` in plan order, the shape the graph module takes."""
        return MappingProxyType({n.id: n.depends_on for n in self.nodes})

    @cached_property
    def levels(self) -> tuple[tuple[str, ...], ...]:
        """The nodes by level of the DAG (:func:`~pytest_conductor.graph.algorithms.levels`).

        Cached: metadata.json names them as parallel groups on every refresh of a run.
        """
        return tuple(tuple(level) for level in levels(self.deps))

    @cached_property
    def width(self) -> int:
        """The most nodes that can ever run at once
        (:func:`~pytest_conductor.graph.algorithms.width`).

        Cached: the controller caps the worker count by it twice (before pytest parses
        the command line, and after), on the same plan object.
        """
        return width(self.deps)


def load_plan(path: Path) -> Plan:
    """Read and parse ``path`` (UTF-8); a missing or unreadable file is a PlanError too."""
    return parse_plan(read_plan_text(path), path)


def read_plan_text(path: Path) -> str:
    """plan.md as text; a missing or unreadable file is a PlanError."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: editors on Windows add a BOM
    except FileNotFoundError:
        raise PlanError(path, [PlanProblem("plan file not found")]) from None
    except UnicodeDecodeError as exc:
        raise PlanError(path, [PlanProblem(f"not valid UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise PlanError(path, [PlanProblem(f"cannot read plan file: {exc.strerror}")]) from None


def parse_plan(text: str, path: Path | str = "plan.md") -> Plan:
    """Parse plan.md ``text``; ``path`` only names the file in messages and in the Plan."""
    path = Path(path)
    lines = split_lines(text)
    found = [
        dag
        for block in code_blocks(lines)
        if block.lang in _YAML_LANGS
        for dag in [_read_dag_block(block)]
        if dag is not None
    ]
    if not found:
        raise NoDagBlock(path, [PlanProblem(_NO_DAG)])
    if len(found) > 1:
        where = ", ".join(str(dag.block.line) for dag in found[:-1])
        count = "two" if len(found) == 2 else str(len(found))
        message = (
            f"{count} DAG blocks, at lines {where} and {found[-1].block.line}: "
            "keep exactly one fenced block with a top-level `dag:` key"
        )
        for dag in found:
            dag.close()
        raise PlanError(path, [PlanProblem(message)])
    dag = found[0]
    if dag.loader is None or dag.root is None:
        raise PlanError(path, [dag.error or PlanProblem(_NO_DAG)])
    try:
        reader = _Reader(dag.loader, dag.block)
        plan = reader.read(path, dag.root)
    finally:
        dag.close()
    if reader.problems:
        raise PlanError(path, reader.problems, plan)
    return plan


def sort_problems(problems: Sequence[PlanProblem]) -> list[PlanProblem]:
    """In the order a reader fixes them: problems without a line first, then by line."""
    return sorted(problems, key=lambda p: (p.line is not None, p.line or 0))


# --- finding the block ----------------------------------------------------------------

# The line breaks YAML counts, so that YAML's line numbers and ours agree.
_NO_DAG = (
    "no DAG block: expected one fenced ```yaml block whose YAML has a top-level `dag:` key "
    'holding `nodes:`, e.g. `dag: {nodes: [{id: "1.1", depends_on: []}]}`'
)
_YAML_LANGS = frozenset({"yaml", "yml", ""})
# --- YAML ----------------------------------------------------------------------------

if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:
    # The C loader is faster; the pure-Python one gives the same nodes.
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TextLoader(_BaseLoader):
    """Safe loader whose plain scalars are text, except booleans and null.

    Without this, ``id: 1.10`` becomes the float 1.1 and ``phase: 2026-01-01`` a date.
    ``=`` (the ``value`` tag, which the safe constructor cannot build) is text too.

    The composer asks the resolver about every node; with no path resolvers (none are
    registered for this loader) the tag depends on the scalar alone, and a plan repeats
    the same keys and values in every node, so each answer is kept for the document.
    That, and skipping the path resolvers' bookkeeping, took an eighth off reading a
    3,000-node plan.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[tuple[object, object, object], Any] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        key = (kind, value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass  # only path resolvers use it, and this loader has none

    def ascend_resolver(self) -> None:
        pass


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in {_BOOL_TAG, _NULL_TAG, _MERGE_TAG}]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}

# Explicit tags (``!!int x``, ``!!timestamp 2020-99-99``) call constructors that raise
# more than YAMLError; any of these is the plan's problem, never a traceback.
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)


@dataclass
class _DagBlock:
    block: CodeBlock
    loader: _TextLoader | None
    root: MappingNode | None
    error: PlanProblem | None

    def close(self) -> None:
        if self.loader is not None:
            self.loader.dispose()
            self.loader = None


def _read_dag_block(block: CodeBlock) -> _DagBlock | None:
    """The block as the DAG block, or None when it is some other YAML or code."""
    source = "\n".join(block.lines)
    loader = _TextLoader(source)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, RecursionError) as exc:
        loader.dispose()
        if any(DAG_LINE.match(line) for line in block.lines):
            return _DagBlock(block, None, None, _yaml_problem(exc, block, source))
        return None
    if isinstance(root, MappingNode) and any(_is_key(key, "dag") for key, _ in root.value):
        return _DagBlock(block, loader, root, None)
    loader.dispose()
    return None


def _yaml_problem(exc: BaseException, block: CodeBlock, source: str) -> PlanProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        detail = ", ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        mark = exc.problem_mark or exc.context_mark
        if mark is None:
            return PlanProblem(f"invalid YAML: {detail}", block.line)
        column = mark.column + 1 + block.indent
        # An error at the end of the stream is marked one line past the block's last line.
        line = min(block.line + 1 + mark.line, block.line + max(len(block.lines), 1))
        return PlanProblem(f"invalid YAML: {detail} (column {column})", line)
    if isinstance(exc, yaml.reader.ReaderError):
        # The C reader counts bytes and the Python one characters: find the character.
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        before = source.split(char, 1)[0]
        line = block.line + 1 + before.count("\n")
        return PlanProblem(
            f"invalid YAML: character #x{ord(char[:1] or ' '):04x} is not allowed", line
        )
    if isinstance(exc, RecursionError):
        return PlanProblem("invalid YAML: nested too deeply", block.line)
    return PlanProblem(f"invalid YAML: {exc}", block.line)


def _kind(node: YamlNode) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return "scalar"


def _is_key(node: YamlNode, name: str) -> bool:
    return isinstance(node, ScalarNode) and node.value == name


def _is_null(node: YamlNode | None) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


_TRUE = frozenset({"true", "yes", "on", "y"})
_FALSE = frozenset({"false", "no", "off", "n"})
_ID_SEPARATORS = re.compile(r"[,\s]+")

_NODE_KEYS = frozenset(
    {
        "id",
        "name",
        "type",
        "files",
        "depends_on",
        "estimated_duration",
        "phase",
        "acceptance",
        "worker",
        "timeout",
    }
)
_GROUP_KEYS = frozenset(
    {"id", "tasks", "conflict_free", "shared_resources", "coordination_strategy"}
)


@dataclass
class _ReadNode:
    node: Node
    depends_line: int


@dataclass
class _ReadGroup:
    group: Group
    tasks_line: int


class _Reader:
    """Turns the composed YAML of the DAG block into a Plan, collecting problems."""

    def __init__(self, loader: _TextLoader, block: CodeBlock) -> None:
        self.loader = loader
        self.offset = block.line + 1  # plan.md line of YAML line 0
        self.problems: list[PlanProblem] = []
        self.warnings: list[PlanProblem] = []

    # helpers ------------------------------------------------------------------------

    def line(self, node: YamlNode) -> int:
        return self.offset + node.start_mark.line

    def problem(self, message: str, where: YamlNode | int | None) -> None:
        line = self.line(where) if isinstance(where, YamlNode) else where
        self.problems.append(PlanProblem(message, line))

    def fields(self, mapping: MappingNode, owner: str) -> dict[str, YamlNode]:
        """``{key: value node}``; merge keys (``<<: *defaults``) applied, repeats reported."""
        seen: dict[str, int] = {}
        for key, _ in mapping.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                if key.value in seen:
                    self.problem(
                        f"{owner}: key {key.value} appears twice "
                        f"(lines {seen[key.value]} and {self.line(key)})",
                        key,
                    )
                seen.setdefault(key.value, self.line(key))
        try:
            self.loader.flatten_mapping(mapping)
        except yaml.YAMLError as exc:
            self.problem(f"{owner}: {_detail(exc)}", mapping)
        result: dict[str, YamlNode] = {}
        for key, value in mapping.value:
            if isinstance(key, ScalarNode):
                result[key.value] = value  # later wins: own keys override merged ones
            else:
                self.problem(f"{owner}: keys must be text, not a {_kind(key)}", key)
        return result

    def construct(self, node: YamlNode, owner: str) -> object:
        try:
            return self.loader.construct_object(node, deep=True)
        except _CONSTRUCT_ERRORS as exc:
            self.problem(f"{owner}: cannot read value: {_detail(exc)}", node)
            return None

    def text(self, node: YamlNode | None, owner: str, key: str) -> str | None:
        """The scalar as written; None when absent or null."""
        if node is None or _is_null(node):
            return None
        if isinstance(node, ScalarNode):
            return str(node.value)
        self.problem(f"{owner}: {key} must be text, not a {_kind(node)}", node)
        return None

    def texts(self, node: YamlNode | None, owner: str, key: str, what: str) -> tuple[str, ...]:
        """A list of scalars, or one scalar as a one-item list (paths, resources)."""
        if node is None or _is_null(node):
            return ()
        if isinstance(node, ScalarNode):
            return (str(node.value),)
        if isinstance(node, SequenceNode) and all(
            isinstance(item, ScalarNode) and not _is_null(item) for item in node.value
        ):
            return tuple(str(item.value) for item in node.value)
        self.problem(f"{owner}: {key} must be {what}", node)
        return ()

    def ids(self, node: YamlNode | None, owner: str, key: str) -> tuple[str, ...]:
        """Ids as a list or in one scalar; ids cannot hold commas or spaces, so a scalar
        like ``1.1, 1.2`` is split on them unambiguously. Repeats are dropped."""
        if node is None or _is_null(node):
            return ()
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not all(isinstance(item, ScalarNode) and not _is_null(item) for item in items):
            self.problem(f"{owner}: {key} must be a list of ids", node)
            return ()
        split = (part for item in items for part in _ID_SEPARATORS.split(str(item.value)))
        return tuple(dict.fromkeys(part for part in split if part))

    def duration(self, node: YamlNode | None, owner: str, key: str) -> float | None:
        text = self.text(node, owner, key)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.problem(f"{owner}: {key}: {exc}", node)
            return None

    def flag(self, node: YamlNode | None, owner: str, key: str, default: bool) -> bool:
        if node is None or _is_null(node):
            return default
        if isinstance(node, ScalarNode):
            word = str(node.value).strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
        shown = node.value if isinstance(node, ScalarNode) else f"a {_kind(node)}"
        self.problem(f"{owner}: {key} must be true or false, not {shown}", node)
        return default

    def extra(
        self, fields: dict[str, YamlNode], known: frozenset[str], owner: str
    ) -> dict[str, object]:
        return {
            key: self.construct(value, f"{owner}: {key}")
            for key, value in fields.items()
            if key not in known
        }

    # the plan -----------------------------------------------------------------------

    def read(self, path: Path, root: MappingNode) -> Plan:
        top = self.fields(root, "top level")
        dag_key = next(key for key, _ in root.value if _is_key(key, "dag"))
        dag = top["dag"]
        nodes: list[_ReadNode] = []
        groups: list[_ReadGroup] = []
        if not isinstance(dag, MappingNode):
            self.problem("`dag:` must be a mapping holding `nodes:`, a list of tasks", dag)
        else:
            dag_fields = self.fields(dag, "dag")
            nodes = self.read_nodes(dag_fields.get("nodes"), dag_key)
            # Groups belong under dag:, but a sibling of dag: is unambiguous too.
            group_list = dag_fields.get("parallel_groups", top.get("parallel_groups"))
            groups = self.read_groups(group_list)
        self.check_graph(nodes, groups)
        return Plan(
            path=path,
            nodes=tuple(read.node for read in nodes),
            groups=tuple(self.known_tasks(read, nodes) for read in groups),
            dag_line=self.line(dag_key),
            warnings=tuple(self.warnings),
        )

    def known_tasks(self, read: _ReadGroup, nodes: Sequence[_ReadNode]) -> Group:
        """The group without the tasks that are no node: the orchestrator's dispatcher
        skips those, so a plan it runs must run here too (with a warning)."""
        ids = {node.node.id for node in nodes}
        group = read.group
        tasks = tuple(task for task in group.tasks if task in ids)
        for task in group.tasks:
            if task not in ids:
                self.warnings.append(
                    PlanProblem(
                        f"parallel group {group.id} names {task}, which is not a node in the "
                        "plan; it is left out of the group",
                        read.tasks_line,
                    )
                )
        return replace(group, tasks=tasks) if tasks != group.tasks else group

    def read_nodes(self, seq: YamlNode | None, dag_key: YamlNode) -> list[_ReadNode]:
        if seq is None or _is_null(seq):
            self.problem("`dag:` has no `nodes:` list of tasks", dag_key)
            return []
        if not isinstance(seq, SequenceNode):
            self.problem(f"`dag.nodes` must be a list of tasks, not a {_kind(seq)}", seq)
            return []
        if not seq.value:
            self.problem("`dag.nodes` is empty: there is no task to run", seq)
        read = [self.read_node(item, position) for position, item in enumerate(seq.value, 1)]
        return [node for node in read if node is not None]

    def read_node(self, item: YamlNode, position: int) -> _ReadNode | None:
        if not isinstance(item, MappingNode):
            self.problem(
                f"dag.nodes entry #{position} must be a mapping, not a {_kind(item)}", item
            )
            return None
        entry = f"dag.nodes entry #{position}"
        # The id names the node in messages about its other keys, merged ones included.
        written = next((v for k, v in item.value if _is_key(k, "id")), None)
        label = written.value if isinstance(written, ScalarNode) else ""
        owner = f"node {label}" if label.strip() and not _is_null(written) else entry
        fields = self.fields(item, owner)
        id_node = fields.get("id")
        node_id = self.text(id_node, entry, "id")
        if not node_id or not node_id.strip():
            if id_node is None or isinstance(id_node, ScalarNode):  # else: reported as not text
                self.problem(f"{entry} has no id", item)
            return None
        owner = f"node {node_id}"
        if node_id in {".", ".."}:
            self.problem(
                f"node id {node_id!r} cannot be part of a file name (TASK_COMPLETE_<id>.event)",
                fields["id"],
            )
        elif not SAFE_ID.fullmatch(node_id):
            self.problem(
                f"node id {node_id!r} is not safe in a file name (TASK_COMPLETE_<id>.event): "
                "use only letters, digits, '.', '_' and '-'",
                fields["id"],
            )
        elif len(node_id) > MAX_ID_LENGTH:
            self.problem(
                f"node id {node_id[:20]}... is {len(node_id)} characters long; "
                f"at most {MAX_ID_LENGTH} fit in a file name",
                fields["id"],
            )
        depends = fields.get("depends_on")
        node = Node(
            id=node_id,
            name=self.text(fields.get("name"), owner, "name") or node_id,
            type=self.text(fields.get("type"), owner, "type") or "code",
            files=self.texts(fields.get("files"), owner, "files", "a path or a list of paths"),
            depends_on=self.ids(depends, owner, "depends_on"),
            estimated_duration=self.duration(
                fields.get("estimated_duration"), owner, "estimated_duration"
            ),
            phase=self.text(fields.get("phase"), owner, "phase"),
            acceptance=self.acceptance(fields.get("acceptance"), owner),
            worker=self.text(fields.get("worker"), owner, "worker"),
            timeout=self.duration(fields.get("timeout"), owner, "timeout"),
            line=self.line(item),
            extra=self.extra(fields, _NODE_KEYS, owner),
        )
        return _ReadNode(node, self.line(depends) if depends is not None else self.line(item))

    def acceptance(self, node: YamlNode | None, owner: str) -> tuple[object, ...]:
        if node is None or _is_null(node):
            return ()
        entries = node.value if isinstance(node, SequenceNode) else [node]
        result: list[object] = []
        for entry in entries:
            if isinstance(entry, ScalarNode) and not _is_null(entry):
                result.append(str(entry.value))
            elif isinstance(entry, MappingNode):
                fields = self.fields(entry, f"{owner}: acceptance")
                result.append(
                    {
                        key: self.construct(value, f"{owner}: acceptance {key}")
                        for key, value in fields.items()
                    }
                )
            else:
                self.problem(
                    f"{owner}: each acceptance entry must be text or a mapping, "
                    f"not a {'null' if _is_null(entry) else _kind(entry)}",
                    entry,
                )
        return tuple(result)

    def read_groups(self, seq: YamlNode | None) -> list[_ReadGroup]:
        if seq is None or _is_null(seq):
            return []
        if not isinstance(seq, SequenceNode):
            self.problem(f"`parallel_groups` must be a list of groups, not a {_kind(seq)}", seq)
            return []
        groups: list[_ReadGroup] = []
        for position, item in enumerate(seq.value, 1):
            where = f"parallel_groups entry #{position}"
            if not isinstance(item, MappingNode):
                self.problem(f"{where} must be a mapping, not a {_kind(item)}", item)
                continue
            fields = self.fields(item, where)
            group_id = self.text(fields.get("id"), where, "id")
            if not group_id:
                self.problem(f"{where} has no id", item)
                continue
            owner = f"parallel group {group_id}"
            tasks = fields.get("tasks")
            group = Group(
                id=group_id,
                tasks=self.ids(tasks, owner, "tasks"),
                conflict_free=self.flag(fields.get("conflict_free"), owner, "conflict_free", True),
                shared_resources=self.texts(
                    fields.get("shared_resources"),
                    owner,
                    "shared_resources",
                    "a path or a list of paths",
                ),
                coordination_strategy=self.text(
                    fields.get("coordination_strategy"), owner, "coordination_strategy"
                ),
                line=self.line(item),
                extra=self.extra(fields, _GROUP_KEYS, owner),
            )
            groups.append(
                _ReadGroup(group, self.line(tasks) if tasks is not None else self.line(item))
            )
        return groups

    def check_graph(self, nodes: Sequence[_ReadNode], groups: Sequence[_ReadGroup]) -> None:
        first_line: dict[str, int | None] = {}
        for read in nodes:
            node = read.node
            if node.id in first_line:
                self.problem(
                    f"duplicate id {node.id} (lines {first_line[node.id]} and {node.line})",
                    node.line,
                )
            else:
                first_line[node.id] = node.line
        deps: dict[str, tuple[str, ...]] = {}
        for read in nodes:
            node = read.node
            for dep in node.depends_on:
                if dep == node.id:
                    self.problem(f"node {node.id} depends on itself", read.depends_line)
                elif dep not in first_line:
                    self.problem(
                        f"node {node.id} depends on {dep}, which is not a node in the plan",
                        read.depends_line,
                    )
            known = tuple(d for d in node.depends_on if d in first_line and d != node.id)
            deps.setdefault(node.id, known)
        cycle = find_cycle(deps)
        if cycle is not None:
            self.problem(f"cycle: {' -> '.join(cycle)}", first_line[cycle[0]])
        group_line: dict[str, int | None] = {}
        for read_group in groups:
            group = read_group.group
            if group.id in group_line:
                self.problem(
                    f"duplicate parallel group id {group.id} "
                    f"(lines {group_line[group.id]} and {group.line})",
                    group.line,
                )
            group_line.setdefault(group.id, group.line)


def _detail(exc: BaseException) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return ", ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
    return str(exc) or type(exc).__name__
