"""Docs that must not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_conductor.settings import OPTIONS, render_options_table

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_options_table_matches_the_code() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    match = re.search(r"-->\n(.*?)\n<!-- /options-table -->", text, re.DOTALL)
    assert match, "docs/options.md lost its options-table markers"
    assert match.group(1) == render_options_table(), (
        "docs/options.md is out of date; regenerate the table with "
        "python -c 'from pytest_conductor.settings import render_options_table as r; print(r())'"
    )


def test_every_documented_option_exists(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for opt in OPTIONS:
        result.stdout.fnmatch_lines([f"*{opt.flag}*"])
        if opt.ini:
            result.stdout.fnmatch_lines([f"*{opt.ini} *"])
