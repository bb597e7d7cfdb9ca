"""Acceptance criteria of a DAG node: parse them from the plan, check them at run time.

Pure logic: nothing here knows about pytest. The plugin parses each node's ``acceptance``
at collection time (so a bad shape is a collection error, not a late surprise) and calls
:func:`check` for each criterion when the node runs.

This module is the public face; the work is done in :mod:`pytest_conductor.acceptance.criteria`
(the model and parsing) and :mod:`pytest_conductor.acceptance.checks` (checking and the failure
report), which run commands through :mod:`pytest_conductor.acceptance.commands`.
"""

from __future__ import annotations

from pytest_conductor.acceptance.checks import (
    NESTED_ENV,
    CheckContext,
    CheckResult,
    check,
    format_failure,
)
from pytest_conductor.acceptance.criteria import (
    BUILTIN_KINDS,
    PROSE,
    Criterion,
    CriterionError,
    parse_criteria,
)

__all__ = [
    "BUILTIN_KINDS",
    "NESTED_ENV",
    "PROSE",
    "CheckContext",
    "CheckResult",
    "Criterion",
    "CriterionError",
    "check",
    "format_failure",
    "parse_criteria",
]
