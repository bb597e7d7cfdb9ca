"""conftest.py of the projects that ``bench/bench_scheduler.py`` generates (copied there).

Adds the acceptance kind ``sleep`` (``{sleep: 0.3}``): the check sleeps that many seconds in
the worker process itself, so no process is spawned per node and the benchmark measures the
scheduler rather than ``fork``/``exec``. Each node leaves a JSON file of timestamps in
``$BENCH_STAMPS``: when pytest's run protocol of its item began and ended on the worker, and
when its check began and ended (items without a sleep criterion, e.g. plain test functions,
get the protocol stamps only). Each process keeps its stamps in memory and writes them once,
at session end, so that stamping costs no file I/O per item: ``<worker>.json`` (a list of
records), and ``controller.json`` from the controller: when it received each item's teardown
report, i.e. when it learnt the item's outcome.

Timestamps are ``time.perf_counter()``: CLOCK_MONOTONIC on Linux, one clock for every
process of the machine, so stamps of different workers compare.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from pytest_conductor.acceptance import CheckContext, CheckResult, Criterion

# One process runs one item at a time, so the stamps of the item in progress fit in a dict.
_current: dict[str, float] = {}
_records: list[dict[str, object]] = []
_received: dict[str, float] = {}


def _stamps_dir() -> Path:
    return Path(os.environ["BENCH_STAMPS"])


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_conductor_criterion_kinds() -> list[str]:
    return ["sleep"]


def pytest_conductor_check_criterion(
    criterion: Criterion, context: CheckContext
) -> CheckResult | None:
    if criterion.kind != "sleep":
        return None
    seconds = float(str(criterion.spec["sleep"]))
    _current["check_start"] = time.perf_counter()
    time.sleep(seconds)
    _current["check_end"] = time.perf_counter()
    return CheckResult(criterion, True, expected=f"a {seconds}s sleep", seen="slept")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    _current.clear()
    _current["protocol_start"] = time.perf_counter()
    try:
        return (yield)
    finally:
        _current["protocol_end"] = time.perf_counter()
        _records.append({"task": item.name, "worker": _worker(), **_current})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # On the controller the teardown report is the node's last word before xdist's
    # runtest_protocol_complete, which lets the scheduler dispatch its dependents.
    if report.when == "teardown" and "PYTEST_XDIST_WORKER" not in os.environ:
        _received[report.nodeid.rpartition("::")[2]] = time.perf_counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Written whole, then renamed: the benchmark never reads a half-written file.
    for name, data in ((f"{_worker()}.json", _records), ("controller.json", _received)):
        if data:
            path = _stamps_dir() / name
            path.with_suffix(".tmp").write_text(json.dumps(data), encoding="utf-8")
            path.with_suffix(".tmp").replace(path)
