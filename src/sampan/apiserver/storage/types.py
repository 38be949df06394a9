"""The storage layer's value types: what a list page, a watch event and delete options are.

These are the contract between the storage layer (``sampan.apiserver.storage``) and the HTTP
layer. Objects travel as JSON bytes in the storage version of their kind: the bytes of one
object are serialized once (when the watch cache ingests it) and shared by every list and watch
that returns it; the HTTP layer converts versions and assembles the wire envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EVENT_ADDED",
    "EVENT_BOOKMARK",
    "EVENT_DELETED",
    "EVENT_ERROR",
    "EVENT_MODIFIED",
    "PROPAGATION_BACKGROUND",
    "PROPAGATION_FOREGROUND",
    "PROPAGATION_ORPHAN",
    "DeleteOptions",
    "ListPage",
    "StorageSettings",
    "WatchEvent",
]

EVENT_ADDED = "ADDED"
EVENT_MODIFIED = "MODIFIED"
EVENT_DELETED = "DELETED"
EVENT_BOOKMARK = "BOOKMARK"
EVENT_ERROR = "ERROR"

PROPAGATION_ORPHAN = "Orphan"
PROPAGATION_BACKGROUND = "Background"
PROPAGATION_FOREGROUND = "Foreground"


@dataclass(frozen=True, slots=True)
class ListPage:
    items: list[bytes]
    """Each item's JSON (storage apiVersion, ``metadata.resourceVersion`` set), in key order."""
    resource_version: str
    """The revision the list reflects."""
    continue_token: str | None
    """Opaque token for the next page; None when the list is complete."""
    remaining: int | None
    """remainingItemCount: items after this page, when a limit cut the list and no selector
    filtered it (as upstream, which cannot count selector matches cheaply)."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str
    """ADDED | MODIFIED | DELETED | BOOKMARK | ERROR."""
    object: bytes
    """JSON of the object; for ERROR a ``meta.k8s.io/v1`` Status."""


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    grace_period_s: int | None = None
    propagation_policy: str | None = None
    """Orphan | Background | Foreground, or None for the kind's default (Background)."""
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Tunables of the storage layer; the defaults are what a server runs with (tests shrink
    them to exercise limits quickly)."""

    ring_size: int = 10_000
    """Recent changes kept per storage resource for watch resumption."""
    ring_max_bytes: int = 128 * 1024 * 1024
    """Bytes of object states those changes may hold per storage resource (the oldest go
    first, down to 100 changes whatever their size)."""
    watcher_queue_size: int = 10_000
    """Pending events after which a slow watcher is ended."""
    bookmark_interval_s: float = 60.0
    """Idle time after which a watch that allows bookmarks gets one."""
    consistent_read_wait_s: float = 3.0
    """How long a consistent read waits for the cache to reach the datastore's revision
    before it reads the datastore directly."""
    freshness_wait_s: float = 3.0
    """How long a read at "not older than N" waits for the cache before a 504."""
    ready_wait_s: float = 10.0
    """How long a read waits for a (re)loading cache before it reads the datastore."""
    conflict_retries: int = 5
    """Compare-and-swap retries of an unconditional update before giving up with 409."""
    generate_name_retries: int = 8
    """Attempts at a free generated name before AlreadyExists."""
