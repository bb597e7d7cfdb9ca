"""Reports of nodes that no process runs: blocked, or left when the run stopped.

The controller makes them itself so that every node of the track shows in the terminal
and in ``--junitxml``, whichever way the run ended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import pytest

__all__ = ["report_not_run", "stopped_reason"]


def report_not_run(
    config: pytest.Config,
    nodeid: str,
    location: tuple[str, int | None, str],
    reason: str,
    user_properties: Sequence[tuple[str, object]] = (),
) -> None:
    """Report an item nobody will run: a skipped setup and a passed teardown.

    Built like a worker's reports but without ``rep.node`` (no worker ran it). The skip
    ``longrepr`` must be a (path, line, reason) tuple: junitxml rejects a string.
    """
    path, line, _ = location
    name = nodeid.rpartition("::")[2]
    keywords: dict[str, Literal[1]] = {name or nodeid: 1}
    now = time.time()
    props = list(user_properties)
    setup = pytest.TestReport(
        nodeid=nodeid,
        location=location,
        keywords=keywords,
        outcome="skipped",
        longrepr=(path, (line or 0) + 1, reason),
        when="setup",
        start=now,
        stop=now,
        user_properties=props,
    )
    teardown = pytest.TestReport(
        nodeid=nodeid,
        location=location,
        keywords=keywords,
        outcome="passed",
        longrepr=None,
        when="teardown",
        start=now,
        stop=now,
        user_properties=props,
    )
    hook = config.hook
    hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
    hook.pytest_runtest_logreport(report=setup)
    hook.pytest_runtest_logreport(report=teardown)
    hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)


def stopped_reason(maxfail: int, shouldfail: object, shouldstop: object) -> str | None:
    """The skip reason of the nodes a stopped run leaves (``-x``, ``--maxfail``, a plugin)."""
    if maxfail > 0 and shouldfail:
        if maxfail == 1:  # -x is --maxfail=1: pytest keeps no trace of which was given
            return "not run: stopped after the first failure (-x/--maxfail=1)"
        return f"not run: stopped after {maxfail} failures (--maxfail={maxfail})"
    for flag in (shouldfail, shouldstop):
        if flag:
            return f"not run: {flag}"
    return None
