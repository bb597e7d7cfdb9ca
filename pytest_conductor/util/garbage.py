"""A run's long-lived objects and the cyclic garbage collector.

Pure: no pytest import.

CPython's collector walks every tracked object in each full collection: the plan, the
run's state, every item, class and function of every module imported. In a run's
processes those are most of what there is, and none of it becomes garbage before the
process ends. Two calls keep the collector off them (figures in docs/performance.md,
"Cost per node"):

- :func:`freeze_long_lived` once the run is set up, so that the full collections
  during the run only walk what was made since (the controller of a 3,000-node run
  spent 270 ms in them, plain pytest's 84 ms);
- :func:`skip_final_collection`, so that the process exits without collecting all
  that once more: 60-70 ms for an xdist worker holding 1,000 nodes, and the controller
  waits for its workers to exit before its summary.

Nothing a run writes depends on a collection. Files, locks and processes are closed,
released and ended explicitly (``finally`` blocks, ``atexit`` handlers, pytest's own
cleanup, all of which still run), and objects that are not in a reference cycle are
still freed when their last reference goes. A frozen object caught in a cycle keeps its
memory until the process ends, and its ``__del__`` does not run at exit, which CPython
never promises anyway.
"""

from __future__ import annotations

import atexit
import functools
import gc

__all__ = ["freeze_long_lived", "skip_final_collection"]


def freeze_long_lived() -> None:
    """Move every object there is now to the permanent generation (``gc.freeze``).

    Collections after this walk only objects made later; objects made later are
    collected as before.
    """
    gc.freeze()


@functools.cache  # once per process, however many runs (pytester) ask for it
def skip_final_collection() -> None:
    """Freeze every object at exit, so that the interpreter's last collections skip them.

    ``atexit`` runs the last registered handler first, so the handlers registered before
    this call (logging's, weakref finalizers', coverage's) run after it; they are
    explicit calls and unaffected.
    """
    atexit.register(gc.freeze)
