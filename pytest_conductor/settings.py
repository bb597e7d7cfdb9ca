"""Options of the plugin: registration, and resolution (CLI > ini > default) into Settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest

from pytest_conductor.plan.durations import parse_duration
from pytest_conductor.util.nested import NESTED_ENV

__all__ = [
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
        "an agent still running after this long is killed and its node fails (default: 30m)",
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
        "--conductor-metadata-lock-timeout",
        "conductor_metadata_lock_timeout",
        "wait this long for the orchestrator's .metadata.lock before leaving metadata.json "
        "alone with a warning (default: 30s)",
        ini="conductor_metadata_lock_timeout",
        default="30s",
        metavar="DURATION",
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
        "--conductor-command-timeout",
        "conductor_command_timeout",
        "default timeout of `run` and `pytest` criteria (default: 5m)",
        ini="conductor_command_timeout",
        default="5m",
        metavar="DURATION",
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
    metadata_lock_timeout: float = 30.0
    junit_properties: str = "testcase"  # testcase | none

    @property
    def active(self) -> bool:
        return self.track is not None

    @property
    def track_dir(self) -> Path:
        return self.root / "conductor" / "tracks" / str(self.track)

    @property
    def plan_path(self) -> Path:
        return self.track_dir / "plan.md"

    @property
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

    root_raw, where = _raw(config, _by_dest("conductor_root"))
    if root_raw is None:
        root = Path(config.rootpath)
    else:
        root = Path(root_raw)
        if not root.is_absolute():
            # CLI paths are relative to the invocation dir, ini paths to the ini file's folder.
            base = config.invocation_params.dir if where.startswith("--") else config.rootpath
            root = Path(base) / root
        if not root.is_dir():
            raise _usage(where, root_raw, "not a directory")
    root = root.resolve()

    max_workers = _whole_number(config, "conductor_max_workers", minimum=1)

    strict_raw, where = _raw(config, _by_dest("conductor_strict_prose"))
    strict = str(strict_raw).strip().lower()
    if strict not in _TRUE | _FALSE:
        raise _usage(where, str(strict_raw), "expected true or false")

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
    graph_raw, _ = _raw(config, _by_dest("conductor_graph"))
    graph = None
    if graph_raw is not None:
        graph = Path(config.invocation_params.dir) / graph_raw
        if graph.suffix not in (".mmd", ".md", ".dot"):
            raise _usage("--conductor-graph", graph_raw, "expected a .mmd, .md or .dot file")

    junit_raw, where = _raw(config, _by_dest("conductor_junit_properties"))
    junit = str(junit_raw).strip().lower()
    if junit not in ("testcase", "none"):
        raise _usage(where, str(junit_raw), "expected testcase or none")

    if track is not None and not track.strip():
        raise _usage("--conductor-track", track, "a track id is required")
    return Settings(
        track=track,
        root=root,
        max_workers=max_workers,
        strict_prose=strict in _TRUE,
        command_timeout=command_timeout,
        worker=worker.strip() if worker and worker.strip() else None,
        timeout=timeout,
        heartbeat=heartbeat,
        retries=retries,
        graph=graph,
        metadata_lock_timeout=metadata_lock_timeout,
        junit_properties=junit,
    )


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
