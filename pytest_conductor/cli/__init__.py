"""``conductor-bus``: the message bus from the command line, for agents and people."""

from __future__ import annotations

from pytest_conductor.cli.main import main

__all__ = ["main"]
