"""The audit log backend: JSON lines written by one thread, off the request path.

``AuditLogBackend`` takes finished event records from the request coroutines and hands them to
a writer thread that encodes them (``event.encode_event``) and appends them to the log: a file
(rotated as kube-apiserver's lumberjack logger rotates it) or stdout for ``-``.

Queueing: at most ``queue_events`` records wait at once. The event loop counts its free slots;
the thread counts the slots it gave back (under a lock) and wakes the loop only when a request
is waiting for room, so an event costs the loop no wake-up of its own. When every slot is
taken, ``submit`` waits for one: the request being audited is held back, the
event loop and every other request are not. That is the semantics of kube-apiserver's default
``blocking`` mode (an event is never dropped; a writer that cannot keep up slows the requests
it audits down) without its cost of a file write on the request path. Dropping events, as
upstream's ``batch`` mode does when its buffer is full, would make the log useless for the
very bursts one audits for.

The writer takes events in batches (up to 512, gathered for ``BATCH_LINGER_S`` after the first
one): one thread hand-off, encode pass and write per batch.

Rotation (``RotatingFile``), lumberjack's rules: before a write that would take the file past
``max_size_mb`` (0: lumberjack's default of 100 MB) it is renamed to
``<name>-<UTC time as 2006-01-02T15-04-05.000><ext>`` beside it and a new file is opened
(0600); then backups beyond ``max_backups`` (newest kept; 0: all) and older than
``max_age_days`` (by the time in the name; 0: no limit) are removed.

Invariants: records are written in the order they were submitted; ``stop()`` writes everything
submitted before it and closes the file; a failed write is logged (with how many events it
lost) and the writer keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sampan.apiserver.audit.event import encode_event

__all__ = [
    "DEFAULT_MAX_SIZE_MB",
    "DEFAULT_QUEUE_EVENTS",
    "AuditLogBackend",
    "RotatingFile",
    "backup_name",
]

log = logging.getLogger(__name__)

DEFAULT_QUEUE_EVENTS = 10000
"""Records waiting for the writer at most (upstream's batch buffer holds 10000 events too)."""
DEFAULT_MAX_SIZE_MB = 100
"""lumberjack's size when ``--audit-log-maxsize`` is 0."""
MAX_BATCH_EVENTS = 512
BATCH_LINGER_S = 0.02
"""After the first event of a batch the writer waits this long for more: one thread hand-off
(and one write) per batch instead of per event, which is what keeps the GIL hand-offs from
costing the request path; lines reach the file at most this much later."""
BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"
_MB = 1024 * 1024
_DAY_S = 24 * 3600
_STOP = object()


def backup_name(path: Path, when: float) -> Path:
    """``audit.log`` -> ``audit-2026-12-07T03-04-05.000.log`` (UTC), as lumberjack names it."""
    stamp = datetime.fromtimestamp(when, UTC)
    text = stamp.strftime(BACKUP_TIME_FORMAT) + f".{stamp.microsecond // 1000:03d}"
    return path.with_name(f"{path.stem}-{text}{path.suffix}")


def _backup_time(path: Path, name: str) -> float | None:
    prefix, ext = path.stem + "-", path.suffix
    if not (name.startswith(prefix) and name.endswith(ext)) or len(name) <= len(prefix + ext):
        return None
    text = name[len(prefix) : len(name) - len(ext)] if ext else name[len(prefix) :]
    try:
        stamp = datetime.strptime(text, BACKUP_TIME_FORMAT + ".%f").replace(tzinfo=UTC)
    except ValueError:
        return None
    return stamp.timestamp()


class RotatingFile:
    """An append-only file rotated by size; used by one thread only."""

    def __init__(
        self,
        path: Path,
        *,
        max_size_mb: int = 0,
        max_backups: int = 0,
        max_age_days: int = 0,
        clock: Any = time.time,
    ) -> None:
        self.path = path
        self.max_bytes = (max_size_mb or DEFAULT_MAX_SIZE_MB) * _MB
        self.max_backups = max_backups
        self.max_age_days = max_age_days
        self._clock = clock
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._open_existing(len(data))
        elif self._size + len(data) > self.max_bytes:
            self.rotate()
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def rotate(self) -> None:
        self.close()
        if self.path.exists():
            os.replace(self.path, backup_name(self.path, self._clock()))
        self._open_new()
        self._remove_old_backups()

    def _open_existing(self, incoming: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self._open_new()
            self._remove_old_backups()
            return
        if size + incoming > self.max_bytes:
            self.rotate()
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = size

    def _open_new(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = 0

    def backups(self) -> list[tuple[float, Path]]:
        """The rotated files beside the log, newest first."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.path.parent):
                when = _backup_time(self.path, entry.name)
                if when is not None and entry.is_file():
                    found.append((when, Path(entry.path)))
        return sorted(found, reverse=True)

    def _remove_old_backups(self) -> None:
        if not self.max_backups and not self.max_age_days:
            return
        backups = self.backups()
        doomed = []
        if self.max_backups:
            doomed.extend(backups[self.max_backups :])
            backups = backups[: self.max_backups]
        if self.max_age_days:
            cutoff = self._clock() - self.max_age_days * _DAY_S
            doomed.extend(b for b in backups if b[0] < cutoff)
        for _, old in doomed:
            try:
                old.unlink()
            except OSError as exc:
                log.warning("audit log: cannot remove old backup %s: %s", old, exc.strerror)


class _Stdout:
    """``--audit-log-path=-``: the process's standard output, never rotated."""

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def flush(self) -> None:
        sys.stdout.buffer.flush()

    def close(self) -> None:
        self.flush()


class AuditLogBackend:
    """See the module docstring. ``start()`` and ``submit()`` run on the event loop."""

    def __init__(
        self,
        path: str,
        *,
        max_size_mb: int = 0,
        max_backups: int = 0,
        max_age_days: int = 0,
        queue_events: int = DEFAULT_QUEUE_EVENTS,
    ) -> None:
        self.path = path
        self._out: Any = (
            _Stdout()
            if path == "-"
            else RotatingFile(
                Path(path),
                max_size_mb=max_size_mb,
                max_backups=max_backups,
                max_age_days=max_age_days,
            )
        )
        # Unbounded in itself: the slot count below bounds what is in it.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._free = queue_events  # loop side
        self._lock = threading.Lock()
        self._returned = 0  # slots the writer gave back (under the lock)
        self._waiting = False  # a submit waits for room (under the lock)
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed = 0

    async def start(self) -> None:
        if isinstance(self._out, RotatingFile):
            # Create (0600) now: a path that cannot be written stops the start, not a request.
            await asyncio.to_thread(self._out.write, b"")
            await asyncio.to_thread(self._out.flush)
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="audit-log-writer", daemon=True)
        self._thread.start()

    async def submit(self, record: Any) -> None:
        """Queue one event record; waits only while the queue is full."""
        assert self._room is not None, "start() first"
        while self._free <= 0:
            with self._lock:
                self._free += self._returned
                self._returned = 0
                if self._free <= 0:
                    self._waiting = True
                    self._room.clear()
            if self._free <= 0:
                await self._room.wait()
        self._free -= 1
        self._queue.put(record)

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            if batch[0] is not _STOP:
                time.sleep(BATCH_LINGER_S)
            while len(batch) < MAX_BATCH_EVENTS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [r for r in batch if r is not _STOP]
            if batch:
                self._write(batch)
                self._release(len(batch))
        self._out.close()

    def _write(self, batch: list[Any]) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(encode_event(record))
            except (TypeError, ValueError) as exc:
                self.failed += 1
                log.error("Error in audit plugin 'log' affecting 1 audit events: %s", exc)
        try:
            self._out.write(b"".join(lines))
            self._out.flush()
            self.written += len(lines)
        except OSError as exc:
            self.failed += len(lines)
            log.error("Error in audit plugin 'log' affecting %d audit events: %s", len(lines), exc)

    def _release(self, count: int) -> None:
        with self._lock:
            self._returned += count
            wake, self._waiting = self._waiting, False
        loop, room = self._loop, self._room
        if wake and loop is not None and room is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(room.set)
