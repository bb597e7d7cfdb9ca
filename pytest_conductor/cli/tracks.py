"""``conductor-bus tracks``: which tracks a project has, and which ones a change touched.

For CI: one job per track (a GitHub Actions matrix fed by ``--json``), or one job that
loops over ``--ids``. With ``--changed-since REV`` only the tracks whose folder, or whose
nodes' ``files``, changed since REV (by git) are listed, so a pull request runs the
tracks it can affect.

What a track is: a folder ``conductor/tracks/<id>/`` holding ``plan.md``. The plugin's own
output there (``.message-bus/``, ``metadata.json``, ``.metadata.lock``) is not a change.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from pytest_conductor.cli.context import EXIT_OK, Context, UsageError
from pytest_conductor.cli.tables import table
from pytest_conductor.plan.blocks import DAG_LINE, code_blocks
from pytest_conductor.plan.reader import PlanError, load_plan
from pytest_conductor.util.git import run_git, split_z

__all__ = [
    "TrackInfo",
    "changed_paths",
    "cmd_tracks",
    "find_tracks",
    "touched_tracks",
]

TRACKS_DIR = PurePosixPath("conductor", "tracks")
# Written by runs of the plugin, never by the work a track describes.
_OWN_OUTPUT = frozenset({".message-bus", "metadata.json", ".metadata.lock"})
_GIT_TIMEOUT = 60.0
# A task line of a checklist plan: ``- [ ] …``, ``* [x] …``, ``1. [~] …``.
_CHECKBOX = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+\[[ xX~!\-]\]", re.MULTILINE)
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class TrackInfo:
    """One track, as listed: ``nodes`` is None when the plan does not read, and then
    ``problem`` says why (its first line)."""

    id: str
    shape: str  # dag | checklist | none
    nodes: int | None
    verdict: str | None  # PASS | FAIL from the last run's verdict.json, None if none
    problem: str | None
    files: tuple[str, ...]  # every node's files, for --changed-since; not printed

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["files"]
        return data


def _shape(text: str) -> str:
    """``dag`` when plan.md has a DAG block, ``checklist`` when it has task checkboxes."""
    lines = text.splitlines()
    for block in code_blocks(lines):
        if any(DAG_LINE.match(line) for line in block.lines):
            return "dag"
    return "checklist" if _CHECKBOX.search(text) else "none"


def _last_verdict(track_dir: Path) -> str | None:
    try:
        data = json.loads((track_dir / ".message-bus" / "verdict.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    verdict = data.get("verdict") if isinstance(data, dict) else None
    return verdict if isinstance(verdict, str) else None


def _track(track_dir: Path) -> TrackInfo:
    plan_path = track_dir / "plan.md"
    try:
        text = plan_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        return TrackInfo(track_dir.name, "none", None, None, f"cannot read plan.md: {error}", ())
    shape = _shape(text)
    nodes: int | None = None
    problem: str | None = None
    files: tuple[str, ...] = ()
    try:
        plan = load_plan(plan_path)
    except PlanError as error:
        more = len(error.problems) - 1
        problem = str(error.problems[0]) + (f" (and {more} more)" if more > 0 else "")
    else:
        nodes = len(plan.nodes)
        files = tuple(path for node in plan.nodes for path in node.files)
    return TrackInfo(track_dir.name, shape, nodes, _last_verdict(track_dir), problem, files)


def find_tracks(root: Path) -> list[TrackInfo]:
    """Every ``conductor/tracks/<id>/plan.md`` under ``root``, sorted by id."""
    folder = root.joinpath(*TRACKS_DIR.parts)
    if not folder.is_dir():
        return []
    return [
        _track(child)
        for child in sorted(folder.iterdir(), key=lambda p: p.name)
        if child.is_dir() and (child / "plan.md").is_file()
    ]


def _git(root: Path, *args: str) -> str:
    """Run git in ``root`` (argument list, no shell); its complaint becomes a UsageError."""
    try:
        done = run_git(root, *args, timeout=_GIT_TIMEOUT)
    except subprocess.SubprocessError as error:
        raise UsageError(f"git {args[0]} failed: {error}") from None
    if done.code == 127 and done.stderr.startswith("cannot run git"):
        raise UsageError("--changed-since needs git, and git was not found")
    if not done.ok:
        detail = done.stderr.strip().splitlines()
        raise UsageError(f"git {args[0]} failed: {detail[0] if detail else done.code}")
    return done.stdout


def changed_paths(root: Path, rev: str) -> list[str]:
    """Paths under ``root`` (relative to it, ``/``-separated) that differ between ``rev``
    and the work tree, plus untracked files (a new track not yet committed counts).

    ``rev`` is anything ``git diff`` takes as one argument: ``origin/main``,
    ``HEAD~3``, ``origin/main...HEAD`` (since the merge base).
    """
    if not rev or rev.startswith("-"):
        raise UsageError(f"--changed-since={rev!r}: expected a git revision")
    diff = _git(root, "diff", "--name-only", "-z", "--relative", "--no-renames", rev, "--")
    untracked = _git(root, "ls-files", "-z", "--others", "--exclude-standard")
    return sorted(set(split_z(diff)) | set(split_z(untracked)))


def _under(path: PurePosixPath, prefix: PurePosixPath) -> bool:
    return path == prefix or prefix in path.parents


def _names_file(pattern: str, path: PurePosixPath) -> bool:
    """Whether a node's ``files`` entry names ``path``: the file itself, a folder above it,
    or a glob that matches it."""
    # Paths in a plan are relative to the project root; a leading "/" means that root too.
    cleaned = pattern.strip().removeprefix("./").strip("/")
    if not cleaned:
        return False
    if _GLOB.search(cleaned):
        return fnmatch.fnmatchcase(path.as_posix(), cleaned)
    return _under(path, PurePosixPath(cleaned))


def _is_own_output(rel: PurePosixPath) -> bool:
    return bool(rel.parts) and rel.parts[0] in _OWN_OUTPUT


def touched_tracks(tracks: Sequence[TrackInfo], changed: Iterable[str]) -> list[TrackInfo]:
    """The tracks a change set touched: a file in the track's folder (not the plugin's own
    output), or a file one of its nodes names."""
    paths = [PurePosixPath(p) for p in changed]
    chosen = []
    for track in tracks:
        folder = TRACKS_DIR / track.id
        in_folder = any(
            _under(p, folder) and not _is_own_output(p.relative_to(folder)) for p in paths
        )
        if in_folder or any(_names_file(f, p) for f in track.files for p in paths):
            chosen.append(track)
    return chosen


def cmd_tracks(ctx: Context) -> int:
    root = (ctx.root or Path.cwd()).resolve()
    if not root.is_dir():
        raise UsageError(f"--root {root}: not a directory")
    tracks = find_tracks(root)
    if ctx.args.changed_since is not None:
        tracks = touched_tracks(tracks, changed_paths(root, ctx.args.changed_since))
    if ctx.args.json:
        # One line: it goes into $GITHUB_OUTPUT as is, and fromJSON() reads it.
        print(json.dumps([t.as_dict() for t in tracks], separators=(",", ":")))
    elif ctx.args.ids:
        for track in tracks:
            print(track.id)
    elif not tracks:
        where = root.joinpath(*TRACKS_DIR.parts)
        print("no track changed" if ctx.args.changed_since is not None else f"no track in {where}")
    else:
        rows = [
            [
                t.id,
                t.shape,
                "-" if t.nodes is None else str(t.nodes),
                t.verdict or "-",
                t.problem or "",
            ]
            for t in tracks
        ]
        print(table(["TRACK", "SHAPE", "NODES", "LAST VERDICT", "PROBLEM"], rows))
    return EXIT_OK
