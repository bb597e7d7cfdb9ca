"""SIGTERM and SIGHUP as Ctrl-C: the signals CI runners and ``timeout`` send, turned into
an exception so that ``finally`` blocks (killing agents, undoing a half-done merge) run.

Pure: no pytest import.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "signal_name", "termination_as_interrupt", "termination_signals"]


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: end like Ctrl-C, agents and commands included."""


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; the number itself for one this platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def termination_signals() -> list[signal.Signals]:
    """The signals that end a run as Ctrl-C does: SIGTERM, and SIGHUP where it exists."""
    return [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM/SIGHUP raise :class:`Terminated` (a KeyboardInterrupt).

    Their default action would end the process at once, skipping the block's clean-up.
    Only in the main thread (signals are handled nowhere else) and only where nobody
    installed a handler of their own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"terminated by {signal_name(signum)}")

    replaced: dict[int, Any] = {}
    for sig in termination_signals():
        if signal.getsignal(sig) == signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, previous in replaced.items():
            signal.signal(number, previous)
