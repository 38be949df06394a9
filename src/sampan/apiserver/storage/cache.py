"""The watch cache of one storage resource (``/registry/<storage_resource>/``).

What it owns: the current state of every object under one key prefix, a bounded ring of recent
changes, and the watchers of that prefix. The ``Storage`` factory feeds it from ONE datastore
watch shared by all caches (``apply``), after loading it from a list at a known revision
(``replace``). Everything here runs on the event loop and never awaits, so a state read, a
snapshot or a watcher registration is atomic with respect to incoming events.

Invariants:

* Each object is kept as an ``Entry``: its JSON bytes (storage version, with
  ``metadata.resourceVersion`` set to its mod revision) plus the few parsed values filtering
  needs (namespace, name, labels, field set; their string values interned, so the namespaces,
  node names, phases and label values thousands of entries repeat are one string each). Bytes
  are produced once per change and shared by every list and watch that returns them.
  ``bytes`` is ``entry_bytes`` summed over the current entries.
* ``keys`` is ``objects``' keys in sorted order (lists are in key order).
* Every change with revision > ``ring_floor`` is in ``ring``, oldest first; a watch may resume
  from any revision >= ``ring_floor``, older ones get 410 Gone. The ring holds at most
  ``ring_size`` changes, and drops its oldest while the bytes of the states it holds
  (``ring_bytes``) exceed ``ring_max_bytes`` and it has more than ``RING_MIN_CHANGES``: 10,000
  changes of a 1 MB object would otherwise pin 10 GB.
* ``last_change`` is the revision of the newest change applied (or the newest mod revision at
  load): if it is <= N and the cache is synced at or past N, the cache's content IS the state at
  N (used for consistent paged lists).
* Watchers have bounded queues: a watcher whose queue is full is ended (its stream drains what
  it has, then stops; the client rewatches from its last revision) instead of memory growing.
* A watcher may have a ``direct`` writer (its stream's HTTP response, when events go out as
  stored): while it is ``idle`` — its queue empty and everything its stream took already
  written — a change is written by the fan-out itself, in order, with no task switch; the
  writer declines (and the change is queued) when the connection is backed up or closing.
* While loading, incoming changes are buffered and applied after the load, in order.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from sampan.api import jsonwire
from sampan.api.resources import ResourceInfo
from sampan.apiserver.storage import _api
from sampan.apiserver.storage.types import (
    EVENT_ADDED,
    EVENT_DELETED,
    EVENT_MODIFIED,
    WatchEvent,
)
from sampan.datastore.types import Event, EventType, KeyValue

__all__ = [
    "DEFAULT_RING_MAX_BYTES",
    "DEFAULT_RING_SIZE",
    "DEFAULT_WATCHER_QUEUE_SIZE",
    "CacheEvent",
    "Entry",
    "RevisionTracker",
    "WatchCache",
    "Watcher",
    "dumps",
    "entry_bytes",
    "with_resource_version",
]

log = logging.getLogger(__name__)

DEFAULT_RING_SIZE = 10_000
"""Recent changes kept per storage resource for watch resumption."""

DEFAULT_RING_MAX_BYTES = 128 * 1024 * 1024
"""Bytes of object states the ring of one storage resource may hold (pods at 10,000 changes of
~5 KB stay under it)."""

RING_MIN_CHANGES = 100
"""Changes the ring keeps whatever their size (kube-apiserver's smallest watch cache)."""

DEFAULT_WATCHER_QUEUE_SIZE = 10_000
"""Events a watcher may have pending before it is ended as too slow (references only)."""


def dumps(obj: Any) -> bytes:
    """The one JSON encoding used for stored and served bytes (compact, UTF-8; orjson where
    it writes the same bytes as ``json.dumps``, see ``jsonwire.dumps``)."""
    return jsonwire.dumps(obj)


def with_resource_version(data: bytes, revision: int) -> bytes:
    """``data`` re-serialized with ``metadata.resourceVersion`` = ``revision``."""
    obj = jsonwire.parse(data)
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta["resourceVersion"] = str(revision)
    return dumps(obj)


class Entry:
    """One cached object: served bytes and the parsed values filters use."""

    __slots__ = (
        "_added",
        "data",
        "fields",
        "key",
        "labels",
        "mod_revision",
        "name",
        "namespace",
    )

    def __init__(
        self,
        key: str,
        data: bytes,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        fields: Mapping[str, str],
        mod_revision: int,
    ) -> None:
        self.key = key
        self.data = data
        self.namespace = namespace
        self.name = name
        self.labels = labels
        self.fields = fields
        self.mod_revision = mod_revision
        self._added: WatchEvent | None = None

    def added_event(self) -> WatchEvent:
        """ADDED for this state, built once and shared (initial events, creates, selector
        entries)."""
        if self._added is None:
            self._added = WatchEvent(EVENT_ADDED, self.data)
        return self._added

    def obj(self) -> dict[str, Any]:
        """A fresh parsed copy (callers may mutate it)."""
        return jsonwire.parse(self.data)


def make_entry(info: ResourceInfo, kv: KeyValue) -> Entry:
    """Parse a datastore record once: served bytes with its RV, plus filter values."""
    obj = jsonwire.parse(kv.value)
    if not isinstance(obj, dict):
        raise ValueError("stored value is not a JSON object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta["resourceVersion"] = str(kv.mod_revision)
    labels = meta.get("labels")
    intern = sys.intern
    if isinstance(labels, dict) and labels:
        for name, value in labels.items():
            if type(value) is str:
                labels[name] = intern(value)
    else:
        labels = _NO_LABELS
    fields = _api.field_set(info, obj)
    for name, value in fields.items():
        if type(value) is str:
            fields[name] = intern(value)
    return Entry(
        key=kv.key,
        data=dumps(obj),
        namespace=intern(str(meta.get("namespace") or "")),
        name=str(meta.get("name") or ""),
        labels=labels,
        fields=fields,
        mod_revision=kv.mod_revision,
    )


_NO_LABELS: Mapping[str, str] = MappingProxyType({})
"""The labels of every entry without labels (one shared, read-only empty mapping)."""


def entry_bytes(entry: Entry) -> int:
    """Memory an entry holds on its own: the served bytes, the key, the entry and its labels
    and field-set containers. Label and field values are interned (shared by every entry with
    the same value) and not counted; neither is the parsed name (unique, usually < 80 bytes).
    Deterministic for an entry, so a cache can keep a running total."""
    size = sys.getsizeof
    return (
        size(entry)
        + size(entry.data)
        + size(entry.key)
        + (size(entry.labels) if entry.labels is not _NO_LABELS else 0)
        + size(entry.fields)
    )


class CacheEvent:
    """One change of the cache. ``entry`` is the new state (None for a delete), ``prev`` the
    state before (None for a create). Watch events are built lazily and shared by watchers."""

    __slots__ = ("_deleted", "_events", "entry", "prev", "revision", "type")

    def __init__(self, revision: int, type_: str, entry: Entry | None, prev: Entry | None) -> None:
        self.revision = revision
        self.type = type_
        self.entry = entry
        self.prev = prev
        self._events: dict[str, WatchEvent] = {}

    def watch_event(self, type_: str) -> WatchEvent:
        """The event as a watcher sees it: ``type_`` may differ from ``self.type`` when a
        selector makes a modification look like an add (entered) or delete (left)."""
        ev = self._events.get(type_)
        if ev is None:
            if type_ == EVENT_DELETED:
                # Upstream: the last state seen, with the revision of the change that removed
                # it (from the cache or from the watcher's selector).
                assert self.prev is not None
                ev = WatchEvent(type_, with_resource_version(self.prev.data, self.revision))
            elif type_ == EVENT_ADDED:
                assert self.entry is not None
                ev = self.entry.added_event()
            else:
                assert self.entry is not None
                ev = WatchEvent(type_, self.entry.data)
            self._events[type_] = ev
        return ev


def _change_bytes(change: CacheEvent) -> int:
    """The served bytes a change keeps alive: its new state, or for a delete the last one."""
    entry = change.entry if change.entry is not None else change.prev
    return len(entry.data) if entry is not None else 0


class Watcher:
    """One watch stream's filter and bounded queue."""

    __slots__ = (
        "direct",
        "ended",
        "fields",
        "idle",
        "labels",
        "namespace",
        "overflowed",
        "queue",
        "queue_size",
        "wake",
    )

    def __init__(
        self,
        namespace: str | None,
        labels: _api.Matcher | None,
        fields: _api.Matcher | None,
        queue_size: int,
    ) -> None:
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: deque[WatchEvent] = deque()
        self.queue_size = queue_size
        self.wake = asyncio.Event()
        self.ended = False
        self.overflowed = False
        self.direct: Callable[[WatchEvent], bool] | None = None
        """Writes an event at once, or declines (False); see the module docstring."""
        self.idle = False
        """Set by the stream while it waits on an empty queue with nothing unwritten."""

    def matches(self, entry: Entry) -> bool:
        if self.namespace is not None and entry.namespace != self.namespace:
            return False
        if self.labels is not None and not self.labels.matches(entry.labels):
            return False
        return self.fields is None or self.fields.matches(entry.fields)

    def translate(self, ev: CacheEvent) -> WatchEvent | None:
        """What this watcher should see of ``ev``, if anything (selector enter/leave)."""
        new_ok = ev.entry is not None and self.matches(ev.entry)
        old_ok = ev.prev is not None and self.matches(ev.prev)
        if new_ok:
            return ev.watch_event(EVENT_MODIFIED if old_ok else EVENT_ADDED)
        if old_ok:
            return ev.watch_event(EVENT_DELETED)
        return None

    def offer(self, event: WatchEvent) -> bool:
        """Queue an event; False (and the watcher ended) when the queue is full."""
        if self.ended:
            return False
        if len(self.queue) >= self.queue_size:
            self.overflowed = True
            self.end()
            return False
        self.idle = False  # later events queue behind this one
        self.queue.append(event)
        self.wake.set()
        return True

    def end(self) -> None:
        self.ended = True
        self.idle = False
        self.wake.set()


class RevisionTracker:
    """The revision up to which every datastore change has been applied to every ready cache
    (the shared watch's position), with waiters for "at least revision N"."""

    def __init__(self) -> None:
        self.revision = 0
        self.ready = False
        self.unreachable_revision = -1
        """A datastore revision a consistent read waited for in vain (it produced no event,
        e.g. a PostgreSQL gap-fill row). Later reads at the same revision skip the wait."""
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.revision:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def set_ready(self, revision: int) -> None:
        self.ready = True
        self.revision = revision
        self.advance(revision)

    def set_not_ready(self) -> None:
        self.ready = False

    async def wait_consistent(self, revision: int, timeout_s: float) -> bool:
        """``wait_for`` for a consistent read at the datastore's current ``revision``; a
        revision already known not to arrive returns False at once (the caller then reads
        the datastore), so one silent revision costs one wait, not one per request."""
        if revision == self.unreachable_revision and self.revision < revision:
            return False
        ok = await self.wait_for(revision, timeout_s)
        if not ok and self.ready:
            self.unreachable_revision = revision
        return ok

    async def wait_for(self, revision: int, timeout_s: float) -> bool:
        """True once ready and at least at ``revision``; False after ``timeout_s``."""
        if self.ready and self.revision >= revision:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._seq), fut))
        try:
            await asyncio.wait_for(fut, timeout_s)  # cancels fut on timeout
        except TimeoutError:
            return False
        finally:
            if fut.cancelled():
                self._waiters = [w for w in self._waiters if not w[2].done()]
                heapq.heapify(self._waiters)
        return self.ready and self.revision >= revision


class WatchCache:
    """State, recent history and watchers of one key prefix; see the module docstring."""

    def __init__(
        self,
        prefix: str,
        info: ResourceInfo,
        *,
        ring_size: int = DEFAULT_RING_SIZE,
        ring_max_bytes: int = DEFAULT_RING_MAX_BYTES,
        watcher_queue_size: int = DEFAULT_WATCHER_QUEUE_SIZE,
    ) -> None:
        self.prefix = prefix
        self.info = info
        self.namespaced = info.namespaced
        self.ring_size = ring_size
        self.ring_max_bytes = ring_max_bytes
        self.ring_bytes = 0
        """Served bytes of the states the ring's changes carry (``_change_bytes``)."""
        self.watcher_queue_size = watcher_queue_size
        self.objects: dict[str, Entry] = {}
        self.keys: list[str] = []
        self.bytes = 0
        """``entry_bytes`` summed over ``objects`` (``apiserver_watch_cache_bytes``)."""
        self.ring: deque[CacheEvent] = deque()
        self.ring_floor = 0
        self.last_change = 0
        self.loaded_revision = 0
        self.generation = 0
        self.epoch = 0
        """Bumped at every (re)load start; a load that finds it changed is stale."""
        self.ready = asyncio.Event()
        self.loading = True
        self._pending: list[Event] = []
        self._watchers_all: set[Watcher] = set()
        self._watchers_by_ns: dict[str, set[Watcher]] = {}
        self._parsed: dict[str | None, list[dict[str, Any]]] = {}
        self._parsed_generation = -1

    # --- loading ---------------------------------------------------------------------------

    def begin_load(self) -> int:
        """Forget the current state (a relist follows): end every watcher (they resume from
        their last revision, or get 410), buffer incoming changes. Returns the new epoch."""
        self.epoch += 1
        self.loading = True
        self.ready.clear()
        self._pending = []
        self.end_watchers()
        return self.epoch

    def replace(self, kvs: Iterable[KeyValue], revision: int) -> None:
        """Install the state read at ``revision``, then apply changes buffered since."""
        objects: dict[str, Entry] = {}
        last = 0
        for kv in kvs:
            entry = self.entry_for(kv)
            if entry is None:
                continue
            objects[kv.key] = entry
            last = max(last, kv.mod_revision)
        self.objects = objects
        self.keys = sorted(objects)
        self.bytes = sum(entry_bytes(entry) for entry in objects.values())
        self.ring.clear()
        self.ring_bytes = 0
        self.ring_floor = revision
        self.last_change = last
        self.loaded_revision = revision
        self.loading = False
        pending, self._pending = self._pending, []
        for ev in pending:
            if ev.revision > revision:
                self._apply_one(ev)
        self.generation += 1
        self.ready.set()

    # --- changes ---------------------------------------------------------------------------

    def apply(self, ev: Event) -> None:
        if self.loading:
            self._pending.append(ev)
            return
        self._apply_one(ev)

    def entry_for(self, kv: KeyValue) -> Entry | None:
        try:
            return make_entry(self.info, kv)
        except Exception as e:
            # One object the kind's field functions cannot digest must not break the cache
            # (or every relist after it): it is logged and left out.
            log.error(
                "skipping undecodable object %s at revision %d: %s", kv.key, kv.mod_revision, e
            )
            return None

    def _apply_one(self, ev: Event) -> None:
        key = ev.kv.key
        prev = self.objects.get(key)
        revision = ev.revision
        if ev.type is EventType.DELETE:
            if prev is None:
                return
            del self.objects[key]
            self.bytes -= entry_bytes(prev)
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]
            change = CacheEvent(revision, EVENT_DELETED, None, prev)
        else:
            entry = self.entry_for(ev.kv)
            if entry is None:
                return
            self.objects[key] = entry
            self.bytes += entry_bytes(entry) - (entry_bytes(prev) if prev is not None else 0)
            if prev is None:
                bisect.insort(self.keys, key)
                change = CacheEvent(revision, EVENT_ADDED, entry, None)
            else:
                change = CacheEvent(revision, EVENT_MODIFIED, entry, prev)
        self.last_change = revision
        self.generation += 1
        ring = self.ring
        ring.append(change)
        self.ring_bytes += _change_bytes(change)
        while len(ring) > self.ring_size or (
            self.ring_bytes > self.ring_max_bytes and len(ring) > RING_MIN_CHANGES
        ):
            oldest = ring.popleft()
            self.ring_bytes -= _change_bytes(oldest)
            self.ring_floor = oldest.revision
        self._fan_out(change)

    def _fan_out(self, change: CacheEvent) -> None:
        namespaces = set()
        if change.entry is not None:
            namespaces.add(change.entry.namespace)
        if change.prev is not None:
            namespaces.add(change.prev.namespace)
        targets: list[Iterable[Watcher]] = [self._watchers_all]
        for ns in namespaces:
            watchers = self._watchers_by_ns.get(ns)
            if watchers:
                targets.append(watchers)
        dropped: list[Watcher] = []
        for watchers in targets:
            for w in watchers:
                out = w.translate(change)
                if out is None:
                    continue
                if w.idle and w.direct is not None and w.direct(out):
                    continue
                if not w.offer(out):
                    dropped.append(w)
        for w in dropped:
            log.info("ending a watch of %s: it fell %d events behind", self.prefix, w.queue_size)
            self.unregister(w)

    # --- reads -----------------------------------------------------------------------------

    def range(self, namespace: str | None, start: str = "") -> tuple[list[str], int, int]:
        """(sorted keys, first index, end index) of the objects in ``namespace`` (or all),
        starting at key suffix ``start`` (relative to the list prefix) inclusive."""
        keys = self.keys
        base = self.prefix if not (self.namespaced and namespace) else f"{self.prefix}{namespace}/"
        lo = bisect.bisect_left(keys, base + start if start else base)
        hi = bisect.bisect_left(keys, base[:-1] + "\x30") if base != self.prefix else len(keys)
        # base ends in "/" (0x2f); every key under it sorts below base[:-1] + "0" (0x30).
        return keys, lo, max(lo, hi)

    def entries(self, namespace: str | None = None) -> Iterator[Entry]:
        keys, lo, hi = self.range(namespace)
        objects = self.objects
        for i in range(lo, hi):
            yield objects[keys[i]]

    def parsed(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects (of one namespace, or all) parsed, memoized per generation and
        namespace. Shared between callers: they must not mutate them."""
        if self._parsed_generation != self.generation:
            self._parsed = {}
            self._parsed_generation = self.generation
        objs = self._parsed.get(namespace)
        if objs is None:
            objs = self._parsed[namespace] = [e.obj() for e in self.entries(namespace)]
        return objs

    def changes_since(self, revision: int) -> list[CacheEvent]:
        """Changes with revision > ``revision`` (caller checked ``revision >= ring_floor``)."""
        out: list[CacheEvent] = []
        for change in reversed(self.ring):
            if change.revision <= revision:
                break
            out.append(change)
        out.reverse()
        return out

    # --- watchers --------------------------------------------------------------------------

    def register(self, watcher: Watcher) -> None:
        if watcher.namespace is None:
            self._watchers_all.add(watcher)
        else:
            self._watchers_by_ns.setdefault(watcher.namespace, set()).add(watcher)

    def unregister(self, watcher: Watcher) -> None:
        if watcher.namespace is None:
            self._watchers_all.discard(watcher)
            return
        watchers = self._watchers_by_ns.get(watcher.namespace)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers_by_ns[watcher.namespace]

    def end_watchers(self) -> None:
        for w in list(self._watchers_all):
            w.end()
        for watchers in list(self._watchers_by_ns.values()):
            for w in list(watchers):
                w.end()
        self._watchers_all = set()
        self._watchers_by_ns = {}

    @property
    def watcher_count(self) -> int:
        return len(self._watchers_all) + sum(len(w) for w in self._watchers_by_ns.values())
