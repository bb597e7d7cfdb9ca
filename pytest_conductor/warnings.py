"""The warning category of pytest-conductor, so users can filter it."""

from __future__ import annotations

import pytest

__all__ = ["ConductorWarning"]


class ConductorWarning(pytest.PytestWarning):
    """Something the user should know about a conductor run (e.g. ``-n`` above the cap)."""
