"""The docs site: Mermaid renders, and each example's DAG picture is what
``--conductor-graph`` writes for it today."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
TRACKS = ["quickstart", "failing", "dispatch"]
REGENERATE = (
    "cd examples/{track} && pytest --conductor-track={track} --collect-only -q "
    "-p no:cacheprovider --conductor-graph=/tmp/{track}.md, then paste the file between "
    "the graph markers of docs/quickstart.md"
)


def documented_graph(track: str) -> str:
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- graph: {track} \(generated;[^\n]*-->\n(.*?)<!-- /graph -->", text, re.DOTALL
    )
    assert match, f"docs/quickstart.md lost the graph markers of {track}"
    return match.group(1)


@pytest.mark.parametrize("track", TRACKS)
def test_each_examples_dag_picture_is_in_sync(pytester: pytest.Pytester, track: str) -> None:
    shutil.copytree(EXAMPLES / track, pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest(
        f"--conductor-track={track}",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "--conductor-graph=dag.md",
    )
    assert result.ret == 0
    generated = (pytester.path / "dag.md").read_text(encoding="utf-8")
    assert generated.startswith("```mermaid\n")
    assert documented_graph(track) == generated, REGENERATE.format(track=track)


def test_mermaid_fences_render_on_the_site() -> None:
    """mkdocs-material draws ```mermaid fences only with its superfences setup."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(
        r"- pymdownx\.superfences:\n\s+custom_fences:\n\s+- name: mermaid\n\s+class: mermaid\n"
        r"\s+format: !!python/name:pymdownx\.superfences\.fence_code_format",
        config,
    )


def test_every_page_is_on_the_site() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.MULTILINE))
    assert listed == {page.name for page in DOCS.glob("*.md")}
    assert "  - Quickstart: quickstart.md" in config
