"""Leave the interpreter without collecting, one last time, everything it still holds.

Pure: no pytest import.

When a process exits, CPython clears every module and runs the cyclic garbage collector
over all that is left: every item, node and report of the run, every class and function
of every module imported. In a run's processes that is the largest part of their exit:
about 20 ms for this package's modules alone, 60-70 ms for an xdist worker holding
1,000 nodes, and the controller waits for all of its workers to exit before it writes
its summary. Measured in docs/performance.md ("Cost per node").

Nothing a run writes depends on it. Files, locks and processes are closed, released and
ended explicitly (``finally`` blocks, ``atexit`` handlers, pytest's own cleanup, all of
which still run); objects that are not in a cycle are still freed as modules are
cleared. Only objects caught in reference cycles keep their memory until the process is
gone, and their ``__del__`` does not run, which CPython never promises at exit anyway.
"""

from __future__ import annotations

import atexit
import functools
import gc

__all__ = ["skip_final_collection"]


@functools.cache  # once per process, however many runs (pytester) ask for it
def skip_final_collection() -> None:
    """Freeze every object at exit, so that the interpreter's last collections skip them.

    ``gc.freeze`` moves every object there is to the permanent generation, which the
    collections during finalization never look at. ``atexit`` runs the last registered
    handler first, so the handlers registered before this call (logging's, weakref
    finalizers', coverage's) run after it; they are explicit calls and unaffected.
    """
    atexit.register(gc.freeze)
