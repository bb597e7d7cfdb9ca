"""The package's layering, checked from the source: imports go one way.

docs/architecture.md draws the layers; this test keeps the code honest to the drawing.
Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import pytest_conductor

PACKAGE = Path(pytest_conductor.__file__).parent

#: Subpackages from the bottom up. A module may import from its own subpackage and from
#: any subpackage of a lower rank, never from a higher or equal one.
RANKS = {
    "util": 0,
    "graph": 1,
    "bus": 1,
    "plan": 2,
    "acceptance": 3,
    "agents": 4,
    "isolation": 4,
    "scheduling": 4,
    "report": 5,
    "track": 6,
    "cli": 6,
}
#: Top-level modules besides the entry point: configuration and the run's state, read by
#: the pytest glue of every subpackage.
TOP_LEVEL = {"settings", "state", "hookspecs", "warnings"}
PYTEST_NAMES = ("pytest", "_pytest", "xdist", "execnet", "pluggy")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, anywhere in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:  # ``from pytest_conductor.x import submodule``
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}"


def _ours(module: str) -> list[str]:
    return sorted({m for m in _imports(MODULES[module]) if m in MODULES and m != module})


def _is_glue(module: str) -> bool:
    return any(m.split(".")[0] in PYTEST_NAMES for m in _imports(MODULES[module]))


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's own __init__
    return parts[1] if len(parts) > 2 or parts[1] in RANKS else None


def test_every_subpackage_has_a_rank() -> None:
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found == set(RANKS)


def test_the_top_level_holds_only_the_entry_point_and_the_run_configuration() -> None:
    top = {m.split(".")[1] for m in MODULES if m.count(".") == 1 and _subpackage(m) is None}
    assert top == {*TOP_LEVEL, "plugin"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    own = _subpackage(module)
    for imported in _ours(module):
        assert imported != "pytest_conductor.plugin", f"{module} imports the entry point"
        other = _subpackage(imported)
        if other is None or other == own or module == "pytest_conductor.plugin":
            continue  # the entry point registers every concern's plugin
        if own is None:  # top-level configuration may read any pure subpackage module
            assert not _is_glue(imported), f"{module} imports pytest glue {imported}"
            continue
        assert RANKS[other] < RANKS[own], f"{module} ({own}) imports {imported} ({other})"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_glue(m)))
def test_pure_logic_never_imports_pytest_glue(module: str) -> None:
    glue = [m for m in _ours(module) if _is_glue(m) and m != "pytest_conductor"]
    assert glue == [], f"{module} has no pytest import but reaches pytest through {glue}"
