"""The mark of a nested pytest run started by a ``pytest`` acceptance criterion.

Its own module so that the plugin can read it without importing the acceptance machinery.
"""

from __future__ import annotations

__all__ = ["NESTED_ENV"]

#: Set in the environment of a ``pytest`` criterion's nested run: no track runs there.
NESTED_ENV = "PYTEST_CONDUCTOR_NESTED"
