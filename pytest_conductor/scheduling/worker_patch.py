"""Worker side of the DAG scheduler: run each item as soon as it arrives.

An xdist worker runs its current item only once it has received the next one (or a
shutdown), because pytest's ``runtest_protocol`` wants ``nextitem`` to decide which
fixtures to tear down (``WorkerInteractor.run_one_test`` blocks on ``torun.get()`` first).
The DAG scheduler sends a worker one ready node and waits for its outcome before it can
know the next one, so unchanged workers would deadlock. Here, under ``--conductor-track``
only, the worker's ``run_one_test`` is replaced by one that runs the item at once with
``nextitem=None`` (all fixtures torn down after each node, which DAG nodes need anyway)
and only then waits for the next item.

This touches private xdist names. :func:`check_supported` verifies the installed version
(3.2 <= v < 3.9, each read and tried) and every name used, and raises a UsageError
otherwise: an unsupported xdist must fail loudly, never deadlock.
``tests/test_xdist_internals.py`` fails when a new xdist changes any of them.
"""

from __future__ import annotations

import inspect
import re
import time
import types
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pytest

__all__ = [
    "SUPPORTED_XDIST",
    "check_supported",
    "find_interactor",
    "install",
    "run_one_test_now",
    "xdist_version",
]

# [lowest, highest) xdist versions whose worker internals were read and tried.
SUPPORTED_XDIST = ((3, 2), (3, 9))

# Source fragments of xdist.remote.WorkerInteractor that the replacement relies on: the
# loop calls self.run_one_test() while self.nextitem_index is not the shutdown marker,
# and run_one_test reports "runtest_protocol_complete" for self.item_index.
_REQUIRED_SOURCE = {
    "__init__": ("self.config = config", "self.torun", "self.nextitem_index"),
    "pytest_sessionstart": ("self.session = session",),
    "pytest_runtest_logreport": ("self.item_index",),
    "pytest_runtestloop": ("self.run_one_test()", "self.nextitem_index"),
    "run_one_test": (
        "self.item_index",
        "self.nextitem_index",
        "pytest_runtest_protocol(item=item, nextitem=nextitem)",
        '"runtest_protocol_complete", item_index=self.item_index, duration=duration',
    ),
}
_REQUIRED_ATTRIBUTES = (*_REQUIRED_SOURCE, "sendevent")


def xdist_version() -> tuple[int, ...] | None:
    """The installed pytest-xdist version as numbers (``(3, 8, 0)``), or None if absent."""
    try:
        text = version("pytest-xdist")
    except PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _unsupported(why: str) -> pytest.UsageError:
    low, high = (".".join(map(str, v)) for v in SUPPORTED_XDIST)
    return pytest.UsageError(
        f"pytest-conductor cannot run a track on xdist workers: {why}. "
        f"Supported: pytest-xdist >= {low}, < {high}. "
        "Install a supported pytest-xdist, or run in-process with -n 0."
    )


def check_supported() -> None:
    """Raise a UsageError unless the installed xdist has the worker internals we patch."""
    found = xdist_version()
    if found is None:
        raise _unsupported("pytest-xdist is not installed")
    shown = ".".join(map(str, found))
    if not SUPPORTED_XDIST[0] <= found[:2] < SUPPORTED_XDIST[1]:
        raise _unsupported(f"pytest-xdist {shown} is not supported")
    try:
        from xdist.remote import WorkerInteractor
    except ImportError as exc:
        raise _unsupported(f"pytest-xdist {shown} has no xdist.remote.WorkerInteractor") from exc
    missing = [name for name in _REQUIRED_ATTRIBUTES if not hasattr(WorkerInteractor, name)]
    if missing:
        raise _unsupported(f"pytest-xdist {shown}: WorkerInteractor lacks {', '.join(missing)}")
    for method, fragments in _REQUIRED_SOURCE.items():
        try:
            source = inspect.getsource(getattr(WorkerInteractor, method))
        except (OSError, TypeError):
            continue  # no source shipped (byte-code only install): the names were checked
        absent = [f for f in fragments if f not in source]
        if absent:
            raise _unsupported(
                f"pytest-xdist {shown}: WorkerInteractor.{method} changed (no {absent[0]!r})"
            )


def find_interactor(config: pytest.Config) -> Any | None:
    """The worker's ``WorkerInteractor`` plugin, or None outside an xdist worker.

    The worker runs xdist.remote as execnet's ``__channelexec__`` module, so its class is
    not ``xdist.remote.WorkerInteractor``: find the registered instance by class name.
    """
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor":
            return plugin
    return None


def run_one_test_now(interactor: Any) -> None:
    """Replacement for ``WorkerInteractor.run_one_test``: run the current item at once.

    Same events as xdist's own (the controller cannot tell the difference), but the item
    runs before the next one is awaited, and with ``nextitem=None``.
    """
    index = interactor.nextitem_index
    interactor.item_index = index  # read by the interactor's pytest_runtest_logreport
    item = interactor.session.items[index]
    start = time.perf_counter()
    interactor.config.hook.pytest_runtest_protocol(item=item, nextitem=None)
    duration = time.perf_counter() - start
    interactor.sendevent("runtest_protocol_complete", item_index=index, duration=duration)
    # xdist < 3.7 skips its queue-replaced marker there; later versions read torun directly.
    next_index = getattr(interactor, "_get_next_item_index", None) or interactor.torun.get
    interactor.nextitem_index = next_index()


def install(config: pytest.Config) -> None:
    """On an xdist worker, make it run each item as soon as it arrives.

    Raises a UsageError on an unsupported xdist; does nothing outside a worker.
    """
    if not hasattr(config, "workerinput"):
        return
    check_supported()
    interactor = find_interactor(config)
    if interactor is None or not all(
        hasattr(interactor, name) for name in ("torun", "sendevent", "run_one_test")
    ):
        raise _unsupported("no usable WorkerInteractor registered on this worker")
    # Instance attribute: shadows the class method for this worker only.
    interactor.run_one_test = types.MethodType(run_one_test_now, interactor)
