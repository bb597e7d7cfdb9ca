"""Shared state of :class:`MessageBus`: paths, locking, the queue, JSON file repair.

The bus class is put together from this base and two parts (``workers``, ``locks``)
only to keep each file readable in one sitting; nobody uses the parts on their own.
"""

from __future__ import annotations

import contextlib
import json
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_conductor.bus._files import (
    BusLock,
    append_line,
    atomic_write,
    copy_aside,
    refuse_symlinks,
)
from pytest_conductor.bus._model import (
    BusError,
    BusWarning,
    JSONDict,
    check_type,
    payload_problems,
)
from pytest_conductor.util.timestamps import format_iso, utc_now

__all__ = ["EVENTS", "LOCKS", "LOGS", "QUEUE", "RUNS", "VERDICT", "WORKER_STATUS", "BusBase"]

QUEUE = "queue.jsonl"
EVENTS = "events"
WORKER_STATUS = "worker-status.json"
LOCKS = "locks.json"
VERDICT = "verdict.json"
LOGS = "logs"
PROMPTS = "prompts"  # written by the dispatcher, one per node attempt
RUNS = "runs"

_EMPTY_JSON = b"{}\n"


class BusBase:
    """Paths, locks, posting and reading of one bus folder (see :class:`MessageBus`)."""

    def __init__(
        self,
        bus_dir: Path | str,
        *,
        source: str = "controller",
        clock: Callable[[], datetime] | None = None,
        lock_timeout: float = 60.0,
        warn: bool = True,
    ) -> None:
        self._path = Path(bus_dir)
        self.source = source
        self.lock_timeout = lock_timeout
        self.warn = warn
        #: Every damage report seen by this object, oldest first.
        self.warnings: list[str] = []
        self._clock = clock or utc_now
        self._pending: list[str] = []
        self._reported_lines: set[tuple[int, bytes]] = set()
        # Paths as text, built once: pathlib joins were a fifth of the cost of a post.
        self._queue_file = str(self.path / QUEUE)
        self._events_text = str(self.path / EVENTS)
        # name -> (lock file, the bus folder, the file itself), as text (see _locked).
        self._lock_paths: dict[str, tuple[str, str, str]] = {}

    def __repr__(self) -> str:
        return f"MessageBus({str(self.path)!r}, source={self.source!r})"

    # -- paths ---------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The bus folder (read-only: lock and queue paths are derived from it once)."""
        return self._path

    @property
    def queue_path(self) -> Path:
        return self.path / QUEUE

    @property
    def events_dir(self) -> Path:
        return self.path / EVENTS

    @property
    def worker_status_path(self) -> Path:
        return self.path / WORKER_STATUS

    @property
    def locks_path(self) -> Path:
        return self.path / LOCKS

    @property
    def runs_dir(self) -> Path:
        return self.path / RUNS

    # -- queue ---------------------------------------------------------------------

    def post(
        self, type: str, payload: Mapping[str, Any] | None = None, *, source: str | None = None
    ) -> JSONDict:
        """Append one message to ``queue.jsonl`` and return its envelope.

        Known types (DESIGN section 6) have their payload checked; a missing or mistyped
        field is posted anyway but reported as a :class:`BusWarning`.
        """
        check_type(type)
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise BusError(f"payload of {type} must be a JSON object, got {payload!r}")
        envelope: JSONDict = {
            "id": f"msg-{uuid.uuid4()}",
            "type": type,
            "source": self.source if source is None else source,
            "timestamp": self._now_iso(),
            "payload": dict(payload),
        }
        try:
            text = json.dumps(envelope, ensure_ascii=False, allow_nan=False)
            line = (text + "\n").encode("utf-8")
        except UnicodeEncodeError:
            raise BusError(f"payload of {type} is not valid UTF-8 text") from None
        except (TypeError, ValueError) as error:
            raise BusError(f"payload of {type} is not JSON: {error}") from None
        except RecursionError:
            raise BusError(f"payload of {type} is nested too deeply") from None
        # The locked section is one open/write/close: nothing is read or parsed.
        with self._locked(QUEUE):
            append_line(self._queue_file, line)
        problems = payload_problems(type, envelope["payload"])
        if problems:
            self._defer(f"{type} message {envelope['id']}: {'; '.join(problems)}")
        self._emit()
        return envelope

    def messages(self) -> list[JSONDict]:
        """Every message in the queue, oldest first; damaged lines are skipped and reported."""
        try:
            data = self.queue_path.read_bytes()
        except FileNotFoundError:
            return []
        if data and not data.endswith(b"\n"):
            # Most likely a post in flight (reads take no lock): read again once writers
            # are done. A last line still unfinished then was cut short for good.
            with self._locked(QUEUE):
                data = self.queue_path.read_bytes()
        result = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                message = self._parse_line(number, raw)
                if message is not None:
                    result.append(message)
        self._emit()
        return result

    def _parse_line(self, number: int, raw: bytes) -> JSONDict | None:
        message = _loads_message(raw)
        if message is not None:
            return message
        # A writer that died mid-line leaves a fragment that the next post is appended
        # to (two dead writers, two fragments); the message behind them is whole and
        # worth saving.
        salvaged = _whole_message_at_end(raw)
        key = (number, raw)
        if key not in self._reported_lines:
            self._reported_lines.add(key)
            shown = raw[:80].decode("utf-8", "replace")
            kept = ", message after it kept" if salvaged is not None else ""
            self._defer(f"{QUEUE} line {number} is not a whole message{kept}: {shown!r}")
        return salvaged

    # -- internals -----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold the inter-process lock of bus file ``name`` (lock file ``.<name>.lock``)."""
        paths = self._lock_paths.get(name)
        if paths is None:
            folder = str(self.path)
            paths = self._lock_paths[name] = (
                f"{folder}/.{name}.lock",
                folder,
                f"{folder}/{name}",
            )
        lock_file, folder, target = paths
        # Every write holds one of these locks: checked here, a folder or file swapped
        # for a link mid-run is never written through (the queue and the lock files are
        # also opened with O_NOFOLLOW; JSON and event files are renamed over, not opened).
        refuse_symlinks(folder, target)
        lock = BusLock(lock_file, self.lock_timeout)
        try:
            lock.acquire()
        except FileNotFoundError:
            self._require_folder()
            raise
        try:
            yield
        finally:
            lock.release()

    def _require_folder(self) -> None:
        if not self.path.is_dir():
            raise BusError(f"bus folder {self.path} does not exist; initialise it first")

    def _now_iso(self) -> str:
        return format_iso(self._clock())

    def _stamp(self) -> str:
        return self._clock().strftime("%Y%m%dT%H%M%S%fZ")

    def _load(
        self, name: str, clean: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]]
    ) -> dict[str, Any]:
        """Read a JSON object file under its lock; repair it when damaged."""
        target = self.path / name
        try:
            raw = target.read_bytes()
        except FileNotFoundError:
            return {}
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as error:
            data: dict[str, Any] = {}
            problems = [f"not JSON ({error or 'nested too deeply'})"]
        else:
            if isinstance(value, dict):
                data, problems = clean(value)
            else:
                data, problems = {}, [f"a JSON object was expected, found {type(value).__name__}"]
        if problems:
            aside = copy_aside(target, self._stamp())
            self._store(name, data)
            self._defer(
                f"{name} was damaged ({'; '.join(problems)}); "
                f"copied to {aside.name} and rewritten with what could be saved"
            )
        return data

    def _store(self, name: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
        atomic_write(self.path / name, (text + "\n").encode("utf-8"))

    def _defer(self, message: str) -> None:
        # Warnings are raised only once locks are released: under filterwarnings=error a
        # warning is an exception, and it must not leave a half-finished repair behind.
        self.warnings.append(message)
        self._pending.append(message)

    def _emit(self) -> None:
        pending, self._pending = self._pending, []
        if not self.warn:
            return
        for message in pending:
            warnings.warn(BusWarning(message), stacklevel=3)


def _loads_message(raw: bytes) -> JSONDict | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
        return None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    return None


_DECODER = json.JSONDecoder()
# A damaged line is searched from each '{' for a message running to the line's end; the
# number of starts tried is bounded so that a long line of garbage stays cheap.
_MAX_STARTS = 256


def _whole_message_at_end(raw: bytes) -> JSONDict | None:
    """The whole message that ends ``raw`` after any amount of damage before it, or None."""
    text = raw.decode("utf-8", "replace").rstrip()
    start = text.find("{", 1)
    for _ in range(_MAX_STARTS):
        if start < 0:
            return None
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            value, end = None, -1
        if end == len(text) and isinstance(value, dict) and _is_envelope(value):
            return value
        start = text.find("{", start + 1)
    return None


def _is_envelope(value: JSONDict) -> bool:
    """A whole message, not a dict nested in a torn one's payload (``{"type": ...}``)."""
    return (
        isinstance(value.get("id"), str)
        and isinstance(value.get("type"), str)
        and "payload" in value
    )
