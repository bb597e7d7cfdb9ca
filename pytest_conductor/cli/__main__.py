"""``python -m pytest_conductor.cli``: the same as ``conductor-bus``."""

from __future__ import annotations

import sys

from pytest_conductor.cli.main import main

sys.exit(main())
