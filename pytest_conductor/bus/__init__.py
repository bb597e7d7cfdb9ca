"""The message bus: how the controller, the workers and their agents talk.

``from pytest_conductor.bus import MessageBus`` is the whole entry point; see
``docs/bus.md`` for the files, the message types and the agent-side protocol.
"""

from __future__ import annotations

from pytest_conductor.bus._files import (
    BusLockTimeout,
    SymlinkRefused,
    atomic_write,
    refuse_symlinks,
)
from pytest_conductor.bus._model import (
    MESSAGE_TYPES,
    WORKER_STATES,
    BusError,
    BusWarning,
    LockInfo,
    LockResult,
    normalize_lock_path,
)
from pytest_conductor.bus.core import ROTATED_NAMES, RUN_EVENT_KINDS, MessageBus
from pytest_conductor.bus.locks import unlock_event_name

__all__ = [
    "MESSAGE_TYPES",
    "ROTATED_NAMES",
    "RUN_EVENT_KINDS",
    "WORKER_STATES",
    "BusError",
    "BusLockTimeout",
    "BusWarning",
    "LockInfo",
    "LockResult",
    "MessageBus",
    "SymlinkRefused",
    "atomic_write",
    "normalize_lock_path",
    "refuse_symlinks",
    "unlock_event_name",
]
