"""The datastore's public vocabulary: records, events, the Backend protocol and its errors.

Semantics follow etcd's as kine exposes them to kube-apiserver:

* every write gets a new, strictly increasing *revision* (the row id of the log table);
* a key's ``mod_revision`` is the revision of its last write, ``create_revision`` the revision
  of the write that created its current life (a key deleted and created again starts a new life);
* a delete leaves a tombstone row, so watchers see DELETE events with the previous value;
* reads may be made "at" an older revision as long as it has not been compacted.

Exception tree (every error a caller can see)::

    StoreError
    ├── KeyExistsError        create() of a key that is live
    ├── KeyNotFoundError      update()/delete() of a key that is not live (on delete, no tombstone)
    ├── ConflictError         compare-and-swap lost: expected revision is not the key's mod
    │                         revision; carries the current record (or None) for the caller
    ├── CompactedError        asked for a revision older than the compaction floor
    ├── FutureRevisionError   asked for a revision newer than the store's current one
    ├── InvalidRequestError   empty key, key outside the store's prefix, value too large
    ├── StoreUnavailableError the backend could not be reached or failed (I/O, connection lost)
    └── WatchOverflowError    a watcher fell too far behind and was ended; list again, then
                              watch from the list's revision
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "KEY_PREFIX",
    "MAX_VALUE_BYTES",
    "Backend",
    "CompactedError",
    "ConflictError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "InvalidRequestError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "StoreError",
    "StoreUnavailableError",
    "WatchOverflowError",
]

KEY_PREFIX = "/registry/"
"""Every key lives under this prefix (as kube-apiserver's keys do in etcd)."""

MAX_VALUE_BYTES = 1536 * 1024
"""etcd's default request size limit (1.5 MiB): larger values are refused."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For PUT, ``kv`` is the new record; for DELETE, ``kv`` carries the key, an
    empty value and the tombstone's revision as ``mod_revision``. ``prev_kv`` is the record
    before the change (None for a create)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int
    """The revision the list was read at (the store's current revision if none was asked)."""
    more: bool
    """True when ``limit`` cut the result short; continue from the last item's key."""


class StoreError(Exception):
    """Base of every datastore error."""


class KeyExistsError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key already exists: {key}")
        self.key = key


class KeyNotFoundError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class ConflictError(StoreError):
    def __init__(self, key: str, expected_revision: int, current: KeyValue | None) -> None:
        have = current.mod_revision if current else "none"
        super().__init__(
            f"revision mismatch for {key}: expected {expected_revision}, current {have}"
        )
        self.key = key
        self.expected_revision = expected_revision
        self.current = current


class CompactedError(StoreError):
    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {revision} has been compacted (oldest available: {compact_revision + 1})"
        )
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevisionError(StoreError):
    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(f"revision {revision} is newer than the current {current_revision}")
        self.revision = revision
        self.current_revision = current_revision


class InvalidRequestError(StoreError):
    """The request itself is wrong (empty key, key outside the prefix, value too large)."""


class StoreUnavailableError(StoreError):
    """The backend failed or cannot be reached; the message never contains a DSN."""


class WatchOverflowError(StoreError):
    """A watcher did not keep up: its bounded queue overflowed, so its watch was ended rather
    than letting memory grow. The caller relists and watches again (as after CompactedError)."""

    def __init__(self, prefix: str, pending_events: int) -> None:
        super().__init__(
            f"watch on {prefix} ended: more than {pending_events} events were waiting for it"
        )
        self.prefix = prefix
        self.pending_events = pending_events


class Backend(Protocol):
    """What every driver provides. All methods are coroutines safe to call concurrently.

    ``revision=0`` means "the current revision". Ranges are prefixes: ``list("/registry/pods/")``.
    """

    async def start(self) -> None:
        """Open connections, create the schema, start compaction. Idempotent."""

    async def close(self) -> None:
        """Stop background work and close connections; pending watches end."""

    async def current_revision(self) -> int: ...

    async def compact_revision(self) -> int:
        """Revisions at or below this are gone."""

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        """Returns (revision read at, the live record or None)."""

    async def list(
        self, prefix: str, revision: int = 0, limit: int = 0, start_after: str = ""
    ) -> ListResult:
        """Live records under ``prefix`` ordered by key, as of ``revision``; at most ``limit``
        (0 = all); only keys greater than ``start_after`` (for continue tokens)."""

    async def count(self, prefix: str, revision: int = 0) -> tuple[int, int]:
        """Returns (revision read at, number of live keys under prefix)."""

    async def create(self, key: str, value: bytes, lease: int = 0) -> int:
        """Returns the new revision. KeyExistsError if the key is live."""

    async def update(
        self, key: str, value: bytes, expected_revision: int, lease: int = 0
    ) -> KeyValue:
        """Compare-and-swap on ``mod_revision``; returns the new record.
        ConflictError (with the current record) on mismatch; KeyNotFoundError if not live."""

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Writes a tombstone and returns the deleted record (as it was). ``expected_revision``
        0 deletes unconditionally; otherwise ConflictError on mismatch."""

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        """Yields batches of events with revision >= ``start_revision`` under ``prefix``, in
        revision order, each exactly once; history first, then live. Raises CompactedError
        (at the first iteration) if ``start_revision`` <= the compaction floor. Ends when the
        iterator is closed or the backend closes."""
        ...

    async def compact(self, revision: int) -> None:
        """Remove history at or below ``revision`` (superseded rows and tombstones)."""
