"""``conductor-bus``: the message bus from a shell, for agents and for the people watching.

Agents are not Python programs; they report through this tool. It reads the environment
the dispatcher gives every worker (``CONDUCTOR_BUS``, ``CONDUCTOR_TASK_ID``,
``CONDUCTOR_WORKER_ID``, ``CONDUCTOR_TRACK``, ``CONDUCTOR_ROOT``); ``--bus``, ``--task``,
``--worker``, ``--track`` and ``--root`` override it.

Exit status: 0 done, 1 the operation did not happen (e.g. unlocking a lock one does not
hold), 2 usage error (missing variable, bad JSON), 3 lock held by another worker,
130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from pytest_conductor.bus import BusError, BusLockTimeout
from pytest_conductor.cli.commands import (
    cmd_blocked,
    cmd_complete,
    cmd_fail,
    cmd_heartbeat,
    cmd_init,
    cmd_lock,
    cmd_locks,
    cmd_post,
    cmd_progress,
    cmd_status,
    cmd_tail,
    cmd_unlock,
)
from pytest_conductor.cli.context import (
    DEFAULT_STALE_AFTER,
    EXIT_FAILED,
    EXIT_HELD,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Context,
    UsageError,
    print_warnings,
    project_path,
)
from pytest_conductor.cli.tracks import cmd_tracks
from pytest_conductor.cli.watch import cmd_watch, render_frame

__all__ = [
    "EXIT_FAILED",
    "EXIT_HELD",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "project_path",
    "render_frame",
]

Command = Callable[[Context], int]

#: Set to show the traceback of an internal error instead of one line.
DEBUG_ENV = "CONDUCTOR_BUS_DEBUG"

# The longest lock lifetime and the longest interval a person would mean (ten years, one
# day): larger numbers overflow the timestamps they are added to.
_MAX_TTL = 10 * 365 * 86400.0
_MAX_INTERVAL = 86400.0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage block is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seconds(limit: float, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds above zero and at most ``limit``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a number of seconds, not {text!r}"
            ) from None
        if not math.isfinite(value) or value <= 0 or value > limit:
            raise argparse.ArgumentTypeError(
                f"{what} must be a number of seconds above 0 and at most {limit:g}, not {text!r}"
            )
        return value

    return parse


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"progress must be a number, not {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"progress must be between 0 and 100, not {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return value


_COMMON_HELP = {
    "bus": "bus folder (default: $CONDUCTOR_BUS)",
    "task": "task id (default: $CONDUCTOR_TASK_ID)",
    "worker": "worker id (default: $CONDUCTOR_WORKER_ID)",
    "track": "track id (default: $CONDUCTOR_TRACK)",
    "root": "project root (default: $CONDUCTOR_ROOT, else the nearest folder holding "
    "conductor/ from here up)",
}


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("where and who (flags override the environment)")
    for name, text in _COMMON_HELP.items():
        group.add_argument(f"--{name}", default=default, metavar=name.upper(), help=text)


#: ``command(name, func, summary, example)`` in :func:`build_parser`: adds one subcommand.
AddCommand = Callable[[str, Command, str, str], argparse.ArgumentParser]


def _add_agent_commands(command: AddCommand) -> None:
    """The commands an agent runs to report: init, post, heartbeat, …, lock, unlock."""
    command(
        "init",
        cmd_init,
        "create the bus folder and its files (keeps existing ones)",
        "conductor-bus init --bus conductor/tracks/auth_20261127/.message-bus",
    )

    p = command(
        "post",
        cmd_post,
        "append one message of any type to queue.jsonl",
        """conductor-bus post PROGRESS --payload '{"task_id": "1.1", "progress_pct": 50}'""",
    )
    p.add_argument("type", metavar="TYPE", help="message type, e.g. PROGRESS")
    payload = p.add_mutually_exclusive_group()
    payload.add_argument("--payload", default="{}", metavar="JSON", help="payload, a JSON object")
    payload.add_argument(
        "--payload-file",
        metavar="PATH",
        help="read the payload from a file ('-': standard input), for payloads larger than "
        "one argument can hold",
    )

    p = command(
        "heartbeat",
        cmd_heartbeat,
        "tell the dispatcher this worker is alive",
        "conductor-bus heartbeat --progress 40",
    )
    p.add_argument("--progress", type=_percent, metavar="N", help="progress in percent (0-100)")

    p = command(
        "progress",
        cmd_progress,
        "record progress and post a PROGRESS message",
        'conductor-bus progress 60 --note "writing tests"',
    )
    p.add_argument("pct", type=_percent, metavar="N", help="progress in percent (0-100)")
    p.add_argument("--note", default="", help="what the worker is doing now")

    p = command(
        "complete",
        cmd_complete,
        "report the task done (TASK_COMPLETE + event)",
        "conductor-bus complete --commit $(git rev-parse HEAD) --files src/auth.py",
    )
    p.add_argument("--commit", metavar="SHA", help="commit holding the work")
    p.add_argument("--files", nargs="*", action="extend", metavar="PATH", help="files modified")
    p.add_argument(
        "--unblocks",
        nargs="*",
        action="extend",
        metavar="ID",
        help="tasks unblocked (default: the task's direct dependents in the track's plan)",
    )

    p = command(
        "fail",
        cmd_fail,
        "report the task failed (TASK_FAILED + event)",
        'conductor-bus fail --error "tests in tests/test_auth.py fail: 3 of 12"',
    )
    p.add_argument("--error", required=True, help="what went wrong, for the report")
    p.add_argument(
        "--stack-trace", dest="stack_trace", metavar="TEXT", help="a traceback or log tail"
    )

    p = command(
        "blocked",
        cmd_blocked,
        "report the task cannot go on (TASK_BLOCKED + event)",
        'conductor-bus blocked --by 1.2 --reason "needs the schema from 1.2"',
    )
    p.add_argument("--by", nargs="+", required=True, metavar="ID", help="blocking task id(s)")
    p.add_argument("--reason", required=True, help="why the task cannot go on")

    p = command(
        "lock",
        cmd_lock,
        "lock a project file before editing it (exit 0 granted, 3 held by another worker)",
        "conductor-bus lock src/stores/data-store.ts --ttl 900",
    )
    p.add_argument("path", metavar="PATH", help="file path relative to the project root")
    p.add_argument(
        "--ttl",
        type=_seconds(_MAX_TTL, "--ttl"),
        default=1800.0,
        metavar="S",
        help="seconds until the lock expires (default 1800)",
    )

    p = command(
        "unlock",
        cmd_unlock,
        "release a lock this worker holds",
        "conductor-bus unlock src/stores/data-store.ts",
    )
    p.add_argument("path", metavar="PATH", help="file path relative to the project root")


def _add_reader_commands(command: AddCommand) -> None:
    """The commands a person or an orchestrator runs to read the bus."""
    p = command(
        "locks", cmd_locks, "list file locks, active and expired", "conductor-bus locks --active"
    )
    p.add_argument("--active", action="store_true", help="only locks not yet expired")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "status", cmd_status, "show worker-status.json as a table", "conductor-bus status --json"
    )
    p.add_argument("--json", action="store_true", help="print the JSON itself")
    p.add_argument(
        "--stale-after",
        type=_seconds(_MAX_TTL, "--stale-after"),
        default=DEFAULT_STALE_AFTER,
        metavar="S",
        help="flag RUNNING workers silent this long (default 600)",
    )

    p = command(
        "tail",
        cmd_tail,
        "print the last queue lines; -f follows new ones",
        "conductor-bus tail -n 20 -f",
    )
    p.add_argument(
        "-n",
        "--lines",
        type=_count,
        default=10,
        metavar="N",
        help="how many lines to print first (default 10)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument(
        "--interval",
        type=_seconds(_MAX_INTERVAL, "--interval"),
        default=0.2,
        metavar="S",
        help=argparse.SUPPRESS,
    )

    p = command(
        "watch",
        cmd_watch,
        "live view of workers, locks and the last messages",
        "conductor-bus watch --interval 2 --stale-after 600",
    )
    p.add_argument(
        "--interval",
        type=_seconds(_MAX_INTERVAL, "--interval"),
        default=2.0,
        metavar="S",
        help="seconds between frames (default 2)",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--stale-after",
        type=_seconds(_MAX_TTL, "--stale-after"),
        default=DEFAULT_STALE_AFTER,
        metavar="S",
        help="flag RUNNING workers silent this long (default 600)",
    )
    p.add_argument(
        "--messages",
        type=_count,
        default=10,
        metavar="N",
        help="how many recent messages to show (default 10)",
    )
    p = command(
        "tracks",
        cmd_tracks,
        "list the tracks under the root (id, plan shape, nodes, last verdict); "
        "--changed-since: only those a change touched",
        "conductor-bus tracks --json --changed-since origin/main...HEAD",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one line of JSON (a list)")
    form.add_argument("--ids", action="store_true", help="print only the ids, one a line")
    p.add_argument(
        "--changed-since",
        metavar="REV",
        help="only tracks whose folder, or whose nodes' files, changed since REV (git)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Talk to a pytest-conductor message bus: report progress, take file "
        "locks, watch a run.",
        epilog="examples:\n"
        "  conductor-bus heartbeat --progress 40\n"
        "  conductor-bus lock src/stores/data-store.ts\n"
        "  conductor-bus complete --commit $(git rev-parse HEAD)\n"
        "  conductor-bus watch\n\n"
        "exit status: 0 done, 1 not done, 2 usage error, 3 lock held by another worker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Command, summary: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS: a flag given before the command must survive the subparser's defaults.
        _add_common(p, argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    _add_agent_commands(command)
    _add_reader_commands(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``conductor-bus`` with ``argv`` (default: the command line); returns the status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    ctx = Context(args, args.command)
    func: Command = args.func
    try:
        _check_text(args)
        status = func(ctx)
    except (UsageError, BusError) as error:
        print(f"{PROG} {ctx.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except RecursionError:
        print(f"{PROG} {ctx.command}: error: data nested too deeply", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``conductor-bus tail -f | head``): stop quietly, and
        # keep Python from complaining about the unflushed rest at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except (BusLockTimeout, OSError) as error:
        print(f"{PROG} {ctx.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:  # the last line of defence: one line, never a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"{PROG} {ctx.command}: internal error: {type(error).__name__}: {_one_line(error)} "
            f"(set {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        if ctx.opened is not None:
            print_warnings(ctx.opened)
    return status


def _check_text(args: argparse.Namespace) -> None:
    """Every text argument and CONDUCTOR_* variable can be written as UTF-8 JSON.

    The shell hands over bytes; invalid UTF-8 arrives as lone surrogates, which no bus
    file can hold. Refused here, before anything is written.
    """
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and not _encodable(item):
                flag = name.replace("_", "-")
                raise UsageError(f"--{flag} (or the {flag} argument) is not valid UTF-8 text")
    for name, value in os.environ.items():
        if name.startswith("CONDUCTOR_") and not _encodable(value):
            raise UsageError(f"environment variable {name} is not valid UTF-8 text")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:500]


if __name__ == "__main__":
    raise SystemExit(main())
