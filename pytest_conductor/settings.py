"""Options of the plugin: registration, and resolution (CLI > ini > default) into Settings."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

from pytest_conductor.plan.durations import parse_duration
from pytest_conductor.util.nested import NESTED_ENV

if TYPE_CHECKING:  # kept out of the import path of a run without --conductor-track
    from pytest_conductor.plan.reader import Node

__all__ = [
    "ISOLATION_MODES",
    "OPTIONS",
    "Option",
    "Settings",
    "add_options",
    "early_settings",
    "resolve_settings",
]


@dataclass(frozen=True)
class Option:
    """One option; ``ini`` is its ini twin (None when a team would not set it once)."""

    flag: str
    dest: str
    help: str
    ini: str | None = None
    default: str | None = None
    metavar: str | None = None
    is_flag: bool = False
    ini_type: str = "string"  # what `pytest --help` shows: string | bool | int


# The single source of truth for options: docs/options.md is checked against this list.
OPTIONS: tuple[Option, ...] = (
    Option(
        "--conductor-track",
        "conductor_track",
        "run the task DAG of conductor/tracks/ID/plan.md; without it the plugin does nothing",
        metavar="ID",
    ),
    Option(
        "--conductor-root",
        "conductor_root",
        "folder that holds conductor/ (default: pytest's rootdir)",
        ini="conductor_root",
        metavar="DIR",
    ),
    Option(
        "--conductor-max-workers",
        "conductor_max_workers",
        "at most this many nodes run at once (default: 5)",
        ini="conductor_max_workers",
        ini_type="int",
        default="5",
        metavar="N",
    ),
    Option(
        "--conductor-worker",
        "conductor_worker",
        "agent command template run per node, e.g. 'claude -p @{prompt_file}'; placeholders "
        "{prompt_file} {task_id} {track} {worker_id} {bus} {root}; none: verify-only",
        ini="conductor_worker",
        metavar="TEMPLATE",
    ),
    Option(
        "--conductor-timeout",
        "conductor_timeout",
        "a node's time limit: its agent and then its criteria must be done within it, or "
        "what still runs is killed and the node fails (default: 30m; a node's own timeout: "
        "wins; each attempt gets the full limit)",
        ini="conductor_timeout",
        default="30m",
        metavar="DURATION",
    ),
    Option(
        "--conductor-heartbeat",
        "conductor_heartbeat",
        "agents refresh their heartbeat this often; silent for two intervals is stale and "
        "killed (default: 5m)",
        ini="conductor_heartbeat",
        default="5m",
        metavar="DURATION",
    ),
    Option(
        "--conductor-retries",
        "conductor_retries",
        "re-dispatch a failed node's agent up to N more times (default: 0)",
        ini="conductor_retries",
        ini_type="int",
        default="0",
        metavar="N",
    ),
    Option(
        "--conductor-graph",
        "conductor_graph",
        "write the DAG to PATH as Mermaid (.mmd, .md) or Graphviz DOT (.dot)",
        metavar="PATH",
    ),
    Option(
        "--conductor-summary-md",
        "conductor_summary_md",
        "write the run's Markdown summary (verdict, node table, blocked chains, critical "
        "path, Mermaid DAG) to PATH; GITHUB_STEP_SUMMARY gets it appended in any case",
        ini="conductor_summary_md",
        metavar="PATH",
    ),
    Option(
        "--conductor-metadata-lock-timeout",
        "conductor_metadata_lock_timeout",
        "wait this long for the orchestrator's .metadata.lock before leaving metadata.json "
        "alone with a warning (default: 30s)",
        ini="conductor_metadata_lock_timeout",
        default="30s",
        metavar="DURATION",
    ),
    Option(
        "--conductor-keep-runs",
        "conductor_keep_runs",
        "keep the last N earlier runs in the bus folder's runs/; older ones are removed when "
        "a run starts (0: keep every run; default: 20)",
        ini="conductor_keep_runs",
        default="20",
        metavar="N",
    ),
    Option(
        "--conductor-strict-prose",
        "conductor_strict_prose",
        "fail prose acceptance criteria that no machine can check (default: pass them with a note)",
        ini="conductor_strict_prose",
        ini_type="bool",
        default="false",
        is_flag=True,
    ),
    Option(
        "--conductor-checklist-order",
        "conductor_checklist_order",
        "how tasks of a plan without a DAG block depend on each other: 'file' (each after "
        "the one before it) or 'phase' (a phase's tasks are independent; phases stay "
        "barriers) (default: file)",
        ini="conductor_checklist_order",
        default="file",
        metavar="ORDER",
    ),
    Option(
        "--conductor-redo",
        "conductor_redo",
        "dispatch these tasks although plan.md marks them done [x]: ids separated by commas, "
        "or 'all' (default: done tasks are re-checked, not dispatched again)",
        metavar="IDS",
    ),
    Option(
        "--conductor-write-plan",
        "conductor_write_plan",
        "write the marks of dispatched tasks back into plan.md: [~] while running, then "
        "[x] <sha7> or [!] (default: plan.md is never written)",
        ini="conductor_write_plan",
        default="false",
        is_flag=True,
    ),
    Option(
        "--conductor-strict",
        "conductor_strict",
        "fail nodes that nothing machine-checks (no criteria, or prose only) when no agent "
        "runs for them (default: pass them, listed as unchecked)",
        ini="conductor_strict",
        default="false",
        is_flag=True,
    ),
    Option(
        "--conductor-wait-for-run",
        "conductor_wait_for_run",
        "when another run of the track is in progress, wait for it to end instead of "
        "stopping with a usage error (default: false)",
        ini="conductor_wait_for_run",
        default="false",
        is_flag=True,
    ),
    Option(
        "--conductor-command-timeout",
        "conductor_command_timeout",
        "a finer limit for each `run` and `pytest` criterion (default: 5m; a criterion's "
        "own timeout: wins), within the node's --conductor-timeout",
        ini="conductor_command_timeout",
        default="5m",
        metavar="DURATION",
    ),
    Option(
        "--conductor-isolation",
        "conductor_isolation",
        "where dispatched agents work: none (all in the project's work tree) or worktree "
        "(each node in its own git worktree and branch, merged into conductor/<track>) "
        "(default: none)",
        ini="conductor_isolation",
        default="none",
        metavar="MODE",
    ),
    Option(
        "--conductor-strict-scope",
        "conductor_strict_scope",
        "fail nodes whose changes touch paths outside their declared files (default: report them)",
        ini="conductor_strict_scope",
        default="false",
        is_flag=True,
    ),
    Option(
        "--conductor-junit-properties",
        "conductor_junit_properties",
        "where --junitxml gets each node's properties: testcase (under <testcase>, pytest's "
        "record_property form) or none (strict Jenkins xunit schema) (default: testcase)",
        ini="conductor_junit_properties",
        default="testcase",
        metavar="MODE",
    ),
)

#: Values of --conductor-isolation.
ISOLATION_MODES = ("none", "worktree")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    track: str | None
    root: Path
    max_workers: int
    strict_prose: bool
    command_timeout: float
    worker: str | None = None  # agent command template; None: verify-only
    timeout: float = 1800.0
    heartbeat: float = 300.0
    retries: int = 0
    graph: Path | None = None
    summary_md: Path | None = None
    metadata_lock_timeout: float = 30.0
    checklist_order: str = "file"
    # Task ids to dispatch although marked done; "all" stands for every task.
    redo: tuple[str, ...] = ()
    write_plan: bool = False
    strict: bool = False

    def redoes(self, task_id: str) -> bool:
        return "all" in self.redo or task_id in self.redo

    keep_runs: int = 20
    isolation: str = "none"  # one of ISOLATION_MODES
    strict_scope: bool = False
    wait_for_run: bool = False
    junit_properties: str = "testcase"  # testcase | none

    @property
    def active(self) -> bool:
        return self.track is not None

    def uses_worktrees(self, nodes: Iterable[Node]) -> bool:
        """Worktree isolation is asked for and some node is dispatched to an agent."""
        return self.isolation == "worktree" and (
            self.worker is not None or any(n.worker for n in nodes)
        )

    # Cached: asked for once or more per node, and a frozen dataclass never changes
    # (functools.cached_property stores in the instance's __dict__, past __setattr__).
    @functools.cached_property
    def track_dir(self) -> Path:
        return self.root / "conductor" / "tracks" / str(self.track)

    @functools.cached_property
    def plan_path(self) -> Path:
        return self.track_dir / "plan.md"

    @functools.cached_property
    def bus_dir(self) -> Path:
        return self.track_dir / ".message-bus"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("conductor", "run a Conductor track's task DAG")
    for opt in OPTIONS:
        if opt.is_flag:
            group.addoption(
                opt.flag, dest=opt.dest, action="store_true", default=None, help=opt.help
            )
        else:
            group.addoption(
                opt.flag, dest=opt.dest, default=None, metavar=opt.metavar, help=opt.help
            )
        if opt.ini is not None:
            parser.addini(opt.ini, opt.help, type=_ini_type(opt), default=opt.default)


def _ini_type(opt: Option) -> Literal["string", "bool", "int"]:
    """The ini type to declare; pytest before 8.4 knows no ``int`` (it is then text,
    checked by :func:`resolve_settings` all the same)."""
    if opt.ini_type == "int":
        return "int" if _INT_INI else "string"
    return "bool" if opt.ini_type == "bool" else "string"


# pytest 8.4 added the `int` ini type; earlier versions reject it in addini.
_MAJOR, _MINOR = (int(part) for part in pytest.__version__.split(".")[:2])
_INT_INI = (_MAJOR, _MINOR) >= (8, 4)


class _ConfigView(Protocol):
    """What resolving options reads of a config: ``pytest.Config``, or :class:`_EarlyView`."""

    @property
    def rootpath(self) -> Path: ...

    @property
    def invocation_params(self) -> pytest.Config.InvocationParams: ...

    def getoption(self, name: str) -> Any: ...

    def getini(self, name: str) -> Any: ...


class _EarlyView:
    """A config before pytest has parsed the command line into ``config.option``: the
    options come from ``known_args_namespace``, which pytest fills before it calls
    ``pytest_load_initial_conftests``."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    @property
    def rootpath(self) -> Path:
        return self._config.rootpath

    @property
    def invocation_params(self) -> pytest.Config.InvocationParams:
        return self._config.invocation_params

    def getoption(self, name: str) -> Any:
        return getattr(self._config.known_args_namespace, name, None)

    def getini(self, name: str) -> Any:
        return self._config.getini(name)


def _raw(config: _ConfigView, opt: Option) -> tuple[str | None, str]:
    """The value as text and where it came from, for error messages."""
    value = config.getoption(opt.dest)
    if value is not None:
        return (str(value) if not isinstance(value, bool) else str(value).lower()), opt.flag
    if opt.ini is not None:
        try:
            ini_value = config.getini(opt.ini)
        # pytest could not read it as its declared type (pytest >= 9.2 says so in a
        # UsageError that does not name the key).
        except (ValueError, TypeError, pytest.UsageError) as error:
            raise pytest.UsageError(f"ini {opt.ini}: {error}") from None
        if ini_value not in (None, ""):
            return (
                str(ini_value).lower() if isinstance(ini_value, bool) else str(ini_value)
            ), f"ini {opt.ini}"
    return opt.default, opt.flag


def _by_dest(dest: str) -> Option:
    return next(o for o in OPTIONS if o.dest == dest)


def _usage(where: str, value: str, why: str) -> pytest.UsageError:
    return pytest.UsageError(f"{where}={value!r}: {why}")


def resolve_settings(config: _ConfigView) -> Settings:
    """Resolve every option once; a bad value is a UsageError naming option and value."""
    track, _ = _raw(config, _by_dest("conductor_track"))
    if os.environ.get(NESTED_ENV):
        track = None  # the nested run of a `pytest` criterion runs the user's tests only

    root = _root(config)
    max_workers = _whole_number(config, "conductor_max_workers", minimum=1)

    strict = _flag(config, "conductor_strict_prose")
    write_plan = _flag(config, "conductor_write_plan")
    strict_nodes = _flag(config, "conductor_strict")
    strict_scope = _flag(config, "conductor_strict_scope")
    isolation = _choice(config, "conductor_isolation", ISOLATION_MODES)
    wait_for_run = _flag(config, "conductor_wait_for_run")

    command_timeout = _duration(config, "conductor_command_timeout")

    worker, _ = _raw(config, _by_dest("conductor_worker"))
    timeout = _duration(config, "conductor_timeout")
    heartbeat = _duration(config, "conductor_heartbeat")
    if timeout <= 0 or heartbeat <= 0:
        bad = "conductor_timeout" if timeout <= 0 else "conductor_heartbeat"
        value, where = _raw(config, _by_dest(bad))
        raise _usage(where, str(value), "expected a duration above zero")
    retries = _whole_number(config, "conductor_retries", minimum=0)
    metadata_lock_timeout = _duration(config, "conductor_metadata_lock_timeout")
    keep_runs = _whole_number(config, "conductor_keep_runs", minimum=0)
    graph, summary_md = _output_paths(config)

    order_raw, where = _raw(config, _by_dest("conductor_checklist_order"))
    checklist_order = str(order_raw).strip().lower()
    if checklist_order not in ("file", "phase"):
        raise _usage(where, str(order_raw), "expected 'file' or 'phase'")

    redo = _redo(config)
    junit = _choice(config, "conductor_junit_properties", ("testcase", "none"))
    if track is not None:
        track = _track_id(track)
    return Settings(
        track=track,
        root=root,
        max_workers=max_workers,
        strict_prose=strict,
        command_timeout=command_timeout,
        worker=worker.strip() if worker and worker.strip() else None,
        timeout=timeout,
        heartbeat=heartbeat,
        retries=retries,
        graph=graph,
        summary_md=summary_md,
        metadata_lock_timeout=metadata_lock_timeout,
        checklist_order=checklist_order,
        redo=redo,
        write_plan=write_plan,
        strict=strict_nodes,
        keep_runs=keep_runs,
        isolation=isolation,
        strict_scope=strict_scope,
        wait_for_run=wait_for_run,
        junit_properties=junit,
    )


def _root(config: _ConfigView) -> Path:
    root_raw, where = _raw(config, _by_dest("conductor_root"))
    if root_raw is None:
        return Path(config.rootpath).resolve()
    root = Path(root_raw)
    if not root.is_absolute():
        # CLI paths are relative to the invocation dir, ini paths to the ini file's folder.
        base = config.invocation_params.dir if where.startswith("--") else config.rootpath
        root = Path(base) / root
    if not root.is_dir():
        raise _usage(where, root_raw, "not a directory")
    return root.resolve()


def _output_paths(config: _ConfigView) -> tuple[Path | None, Path | None]:
    """``--conductor-graph`` and ``--conductor-summary-md``, made absolute."""
    graph_raw, _ = _raw(config, _by_dest("conductor_graph"))
    graph = None
    if graph_raw is not None:
        graph = Path(config.invocation_params.dir) / graph_raw
        if graph.suffix not in (".mmd", ".md", ".dot"):
            raise _usage("--conductor-graph", graph_raw, "expected a .mmd, .md or .dot file")
    summary_raw, where = _raw(config, _by_dest("conductor_summary_md"))
    summary_md = None
    if summary_raw is not None and summary_raw.strip():
        # CLI paths are relative to the invocation dir, ini paths to the ini file's folder.
        base = config.invocation_params.dir if where.startswith("--") else config.rootpath
        summary_md = Path(base) / summary_raw
    return graph, summary_md


def _redo(config: _ConfigView) -> tuple[str, ...]:
    redo_raw, _ = _raw(config, _by_dest("conductor_redo"))
    redo = tuple(dict.fromkeys(p.strip() for p in str(redo_raw or "").split(",") if p.strip()))
    if redo_raw is not None and not redo:
        raise _usage("--conductor-redo", str(redo_raw), "expected task ids or 'all'")
    return redo


def _choice(config: _ConfigView, dest: str, choices: tuple[str, ...]) -> str:
    raw, where = _raw(config, _by_dest(dest))
    value = str(raw).strip().lower()
    if value not in choices:
        raise _usage(where, str(raw), "expected " + " or ".join(choices))
    return value


def _track_id(raw: str) -> str:
    """The track id as given, less the trailing '/' tab completion adds; refused when it
    cannot name a folder under conductor/tracks and an event file (the node id rule)."""
    from pytest_conductor.util.ids import id_problem

    track = raw.rstrip("/" + os.sep) if raw.strip("/" + os.sep) else raw
    if not track.strip():
        raise _usage("--conductor-track", raw, "a track id is required")
    problem = id_problem(track)
    if problem:
        raise _usage(
            "--conductor-track",
            raw,
            f"not usable as a track id ({problem}); a track id is the name of a folder "
            "under conductor/tracks",
        )
    return track


def _flag(config: _ConfigView, dest: str) -> bool:
    raw, where = _raw(config, _by_dest(dest))
    word = str(raw).strip().lower()
    if word not in _TRUE | _FALSE:
        raise _usage(where, str(raw), "expected true or false")
    return word in _TRUE


def early_settings(config: pytest.Config) -> Settings:
    """The settings as far as the command line and ini files give them, for hooks that run
    before pytest has parsed the command line (``pytest_load_initial_conftests``)."""
    return resolve_settings(_EarlyView(config))


def _duration(config: _ConfigView, dest: str) -> float:
    raw, where = _raw(config, _by_dest(dest))
    try:
        return parse_duration(str(raw))
    except ValueError as exc:
        raise _usage(where, str(raw), str(exc)) from None


def _whole_number(config: _ConfigView, dest: str, *, minimum: int) -> int:
    raw, where = _raw(config, _by_dest(dest))
    try:
        value = int(str(raw))
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise _usage(where, str(raw), f"expected a whole number >= {minimum}")
    return value


def render_options_table() -> str:
    """The options reference table of docs/options.md (a test keeps the two identical)."""
    rows = ["| option | ini | default | what it does |", "|---|---|---|---|"]
    for opt in OPTIONS:
        flag = f"`{opt.flag}`" if opt.is_flag else f"`{opt.flag}={opt.metavar}`"
        ini = f"`{opt.ini}`" if opt.ini else "—"
        default = f"`{opt.default}`" if opt.default not in (None, "") else "—"
        rows.append(f"| {flag} | {ini} | {default} | {opt.help} |")
    return "\n".join(rows)
