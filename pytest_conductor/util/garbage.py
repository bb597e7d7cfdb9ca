"""A run's long-lived objects and the cyclic garbage collector.

Pure: no pytest import.

CPython's collector walks every tracked object in each full collection, and collects
more often the more objects are made: while a run sets up (reading the plan, building
its state and items), it walks what is being built again and again, though none of it
is garbage; that was 40 % of reading a 3,000-node plan. After set-up, the plan, the
state, the items and every module's classes and functions are most of what the process
holds, and they live as long as it does. So (figures in docs/performance.md, "Cost per
node"):

- :class:`CollectorHold` keeps the collector off during set-up, then freezes what set-up
  built (``gc.freeze``: later collections skip it) and turns it back on for the run;
  at the end of the run it unfreezes, so a process that goes on (pytest run in-process
  by another program, pytester) is left as it was;
- :func:`skip_final_collection`, so that the process exits without collecting all it
  holds once more: 60-70 ms for an xdist worker holding 1,000 nodes, and the controller
  waits for its workers to exit before its summary.

Nothing a run writes depends on a collection. Files, locks and processes are closed,
released and ended explicitly (``finally`` blocks, ``atexit`` handlers, pytest's own
cleanup, all of which still run), and objects that are not in a reference cycle are
freed when their last reference goes, collector or not. Cycles made during set-up wait
for the end of the run to be collected; a cycle still alive at exit keeps its memory
until the process is gone, and its ``__del__`` does not run, which CPython never
promises at exit anyway.
"""

from __future__ import annotations

import atexit
import functools
import gc

__all__ = ["CollectorHold", "skip_final_collection"]


class CollectorHold:
    """The collector held off a run's set-up, then kept off what set-up built.

    :meth:`set_up` when set-up is done, :meth:`release` when the run is over (both may
    come in any order, more than once, or not at all: a run that fails to set up still
    releases). A collector the program had turned off stays off; objects the program had
    frozen itself (a server that forks after ``gc.freeze()``) are left frozen, and then
    nothing is frozen here, since unfreezing ours would unfreeze theirs.
    """

    def __init__(self) -> None:
        self._enabled = gc.isenabled()
        self._may_freeze = gc.get_freeze_count() == 0
        self._set_up = False
        self._released = False
        gc.disable()

    def set_up(self) -> None:
        """Freeze what exists now and turn the collector back on (once)."""
        if self._set_up or self._released:
            return
        self._set_up = True
        if self._may_freeze:
            gc.freeze()
        if self._enabled:
            gc.enable()

    def release(self) -> None:
        """Unfreeze what :meth:`set_up` froze and restore the collector (once)."""
        if self._released:
            return
        self._released = True
        if self._set_up and self._may_freeze:  # what set_up froze
            gc.unfreeze()
        if self._enabled:
            gc.enable()


@functools.cache  # once per process, however many runs (pytester) ask for it
def skip_final_collection() -> None:
    """Freeze every object at exit, so that the interpreter's last collections skip them.

    ``atexit`` runs the last registered handler first, so the handlers registered before
    this call (logging's, weakref finalizers', coverage's) run after it; they are
    explicit calls and unaffected.
    """
    atexit.register(gc.freeze)
