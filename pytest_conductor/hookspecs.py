"""Hooks that extensions implement to teach pytest-conductor new acceptance kinds.

Registered in ``pytest_addhooks``; implement them in a conftest.py or a plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_conductor.acceptance import CheckContext, CheckResult, Criterion


@pytest.hookspec
def pytest_conductor_criterion_kinds() -> list[str]:
    """Names of the acceptance kinds (mapping keys such as ``http``) this plugin checks."""
    raise NotImplementedError  # a spec: pluggy never calls this body


@pytest.hookspec(firstresult=True)
def pytest_conductor_check_criterion(
    criterion: Criterion, context: CheckContext
) -> CheckResult | None:
    """Check one acceptance criterion of an extension kind; None when the kind is not yours."""
    raise NotImplementedError  # a spec: pluggy never calls this body
