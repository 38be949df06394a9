"""Informers: a local, indexed, eventually consistent copy of one resource, kept by list+watch.

This module owns the client-side cache every controller, the scheduler, the kubelet, the proxy
and DNS read from, and the events that drive their work queues. Shape (as client-go's)::

    reflector: list (paginated) -> watch from the list's resourceVersion (bookmarks on)
        -> cache (by key, with indexes) -> event handlers (on_add / on_update / on_delete)

Contract:

* **Eventually consistent, ordered per object.** The cache reflects the server as of some
  resourceVersion; handlers see each object's changes in the order the server made them. A
  handler may be told about a state that is already outdated; reconcile from the cache (level
  triggered), never from the event alone.
* **The cache is updated before handlers run**, so a handler that reads the cache sees at least
  the state it was told about.
* **Handlers must be quick and must only enqueue** (typically a key into a ``WorkQueue``). They
  run on the reflector's task: a slow handler delays every other handler and the watch. They
  **must not mutate** the objects they receive, nor objects read from the cache: those dicts
  are shared by every consumer. ``copy.deepcopy`` before editing. A handler that raises is
  logged and otherwise ignored.
* ``on_delete`` receives the last state known: the object of the DELETED event, or, when the
  deletion was noticed by a relist (the watch missed it), the last cached copy.
* **Restarts.** A watch that ends normally (server timeout) is resumed from the last
  resourceVersion seen (bookmarks keep it fresh). 410 Gone / Expired -> list again, and the
  relist is diffed against the cache so handlers see adds, updates (changed resourceVersion
  only) and deletes. Other failures -> jittered exponential back-off, 0.8 s doubling to 30 s,
  reset by a healthy watch.
* **Resync** (per handler, optional): every ``resync_period_s`` the handler gets
  ``on_update(obj, obj)`` for every cached object, so level-triggered work is redone.

Keys are ``"<namespace>/<name>"`` for namespaced objects and ``"<name>"`` for cluster-scoped
ones (client-go's MetaNamespaceKeyFunc). Built-in indexes: ``INDEX_NAMESPACE`` and
``INDEX_OWNER_UID`` (uids of ``metadata.ownerReferences``); add more with ``IndexFunc``s.

A ``transform`` (client-go's TransformFunc) may shrink each object before it is cached and
handed to handlers (a simulator of thousands of nodes keeps only the fields it reads); it must
keep ``metadata.name``, ``namespace`` and ``resourceVersion``.
``compact`` is the transform of the controller manager's and the scheduler's factories: no
``managedFields`` (upstream's components trim it too) and short strings interned, so a cached
pod costs about a third of its parsed size, and one dict per object state shared by both
components' informers (cached objects are never mutated, so sharing them is safe).

``SharedInformerFactory`` hands out one informer per (resource, namespace, selectors), so every
component in a process shares one watch per resource. Every task is named
(``informer-<resource>...``) and its failure is logged. Everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sampan.client.api import (
    DEFAULT_PAGE_SIZE,
    Client,
    ClientError,
    Resource,
    ResourceExpired,
)

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "INDEX_NAMESPACE",
    "INDEX_OWNER_UID",
    "Cache",
    "HandlerRegistration",
    "IndexFunc",
    "Informer",
    "SharedInformerFactory",
    "compact",
    "object_key",
    "split_key",
]

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.8
BACKOFF_MAX_S = 30.0
BACKOFF_FACTOR = 2.0
BACKOFF_JITTER = 1.0
"""Each delay is stretched by up to this fraction at random (client-go's jitter 1.0)."""
WATCH_TIMEOUT_MIN_S = 300
"""Watches ask the server to end them after a random 5-10 minutes (client-go's habit), which
spreads reconnects out and proves the connection is alive."""
HEALTHY_WATCH_S = 5.0
"""A watch that ran at least this long, or delivered an event, counts as healthy."""

INDEX_NAMESPACE = "namespace"
INDEX_OWNER_UID = "owner-uid"

IndexFunc = Callable[[Mapping[str, Any]], Iterable[str]]
"""Maps an object to the index values it is filed under (none, one or several)."""

AddHandler = Callable[[dict[str, Any]], None]
UpdateHandler = Callable[[dict[str, Any], dict[str, Any]], None]
DeleteHandler = Callable[[dict[str, Any]], None]


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or ""
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str | None, str]:
    """``(namespace, name)`` from a key made by ``object_key`` (namespace None if cluster)."""
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, key)


def _index_namespace(obj: Mapping[str, Any]) -> Iterable[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return (namespace,) if namespace else ()


def _index_owner_uid(obj: Mapping[str, Any]) -> Iterable[str]:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return tuple(ref["uid"] for ref in owners if isinstance(ref, dict) and ref.get("uid"))


INTERN_MAX_CHARS = 64
"""String values up to this length are interned by ``compact``: names, namespaces, label
values, images, timestamps, node names and owner uids repeat across thousands of objects."""


def _intern_strings(value: Any) -> None:
    """Replace, in place, every short string value inside ``value`` (dicts and lists) by the
    interned copy, so equal values in different objects are one string."""
    stack = [value]
    intern = sys.intern
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if type(item) is str:
                    if len(item) <= INTERN_MAX_CHARS:
                        node[key] = intern(item)
                elif isinstance(item, (dict, list)):
                    stack.append(item)
        else:
            for i, item in enumerate(node):
                if type(item) is str:
                    if len(item) <= INTERN_MAX_CHARS:
                        node[i] = intern(item)
                elif isinstance(item, (dict, list)):
                    stack.append(item)


SHARED_STATES = 4096
"""Most recent object states ``compact`` remembers to hand the same dict to every informer of
the process that receives that state (they see a change within moments of each other)."""


class _SharedStates:
    """(apiVersion, kind, uid, resourceVersion) -> the compacted dict first made for that
    state, for the newest ``capacity`` states. A resourceVersion names one stored state of an
    object, so two informers given that state hold equal objects; as cached objects are never
    mutated, one dict serves both.

    The caches of informers that compact (``register``) are looked in too: when two
    informers list the same resource at once (a restart), the second finds the first one's
    object by key however many there are, so the process parses each but keeps one copy."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[str, str, str, str], dict[str, Any]] = OrderedDict()
        self._caches: dict[tuple[str, str], weakref.WeakSet[Cache]] = {}

    def register(self, api_version: str, kind: str, cache: Cache) -> None:
        """``cache`` holds compacted objects of this apiVersion and kind."""
        self._caches.setdefault((api_version, kind), weakref.WeakSet()).add(cache)

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str, str, str] | None:
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            return None
        uid, rv = metadata.get("uid"), metadata.get("resourceVersion")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not (uid and rv and api_version and kind):
            return None
        return (api_version, kind, uid, rv)

    def get(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        key = self._key(obj)
        if key is None:
            return None
        found = self._states.get(key)
        if found is not None:
            return found
        caches = self._caches.get((key[0], key[1]))
        if caches:
            name = object_key(obj)
            for cache in list(caches):
                held = cache.get(name)
                if held is not None and self._key(held) == key:
                    return held
        return None

    def add(self, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        if key is None:
            return
        self._states[key] = obj
        if len(self._states) > self.capacity:
            self._states.popitem(last=False)


_SHARED = _SharedStates(SHARED_STATES)


def compact(obj: dict[str, Any]) -> dict[str, Any]:
    """A ``transform`` for the caches of components that never read ``managedFields`` (the
    controller manager, the scheduler): drops ``metadata.managedFields`` — kube-controller-
    manager and kube-scheduler trim it from their informers the same way, since a write
    without ``managedFields`` keeps the stored entries — and interns short string values.
    About 24 KB of a parsed 4.7 KB pod goes down to ~9 KB. A state another informer of the
    process already compacted (same apiVersion, kind, uid and resourceVersion, among the
    newest ``SHARED_STATES``) is answered with that informer's dict, so the controller
    manager and the scheduler hold one copy of each pod. Otherwise mutates and returns
    ``obj`` (fresh from the wire, not yet shared); idempotent."""
    shared = _SHARED.get(obj)
    if shared is not None:
        return shared
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    _intern_strings(obj)
    _SHARED.add(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Cache


class Cache:
    """Objects by key, plus indexes (name -> value -> keys). Read-only for users.

    Returned dicts are shared: never mutate them.
    """

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = {
            INDEX_NAMESPACE: _index_namespace,
            INDEX_OWNER_UID: _index_owner_uid,
        }
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        if indexers:
            self.add_indexers(indexers)

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        return self._items.get(key)

    def get_by_name(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self) -> builtins.list[dict[str, Any]]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_index(self, index_name: str, value: str) -> builtins.list[dict[str, Any]]:
        """Objects filed under ``value`` in the index ``index_name`` (``KeyError`` if no such
        index)."""
        keys = self._indexes[index_name].get(value, ())
        return [self._items[key] for key in keys]

    # -- indexes -----------------------------------------------------------------------------

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Add indexes (built from the objects already cached). A name must be new, or name
        the very function it already has (two controllers sharing an informer may both add
        the index they need)."""
        for name, func in indexers.items():
            if self._indexers.get(name) is func:
                continue
            if name in self._indexers:
                raise ValueError(f"index {name!r} exists")
            self._indexers[name] = func
            self._indexes[name] = {}
            for key, obj in self._items.items():
                self._file(name, func, key, obj)

    def _file(self, name: str, func: IndexFunc, key: str, obj: Mapping[str, Any]) -> None:
        index = self._indexes[name]
        for value in func(obj):
            index.setdefault(value, set()).add(key)

    def _unfile(self, key: str, obj: Mapping[str, Any]) -> None:
        for name, func in self._indexers.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    # -- writing (the informer only) ---------------------------------------------------------

    def _upsert(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unfile(key, old)
        self._items[key] = obj
        for name, func in self._indexers.items():
            self._file(name, func, key, obj)
        return old

    def _delete(self, key: str) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unfile(key, old)
        return old


# ---------------------------------------------------------------------------------------------
# Handlers


@dataclass(eq=False)
class HandlerRegistration:
    """One set of handlers on an informer; pass it to ``remove_event_handler``."""

    on_add: AddHandler | None
    on_update: UpdateHandler | None
    on_delete: DeleteHandler | None
    resync_period_s: float | None
    resync_task: asyncio.Task[None] | None = None


class _Backoff:
    """Jittered exponential back-off between ``initial_s`` and ``max_s``."""

    def __init__(self, initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next_s = initial_s

    def next_delay_s(self) -> float:
        base_s = self._next_s
        self._next_s = min(self._next_s * BACKOFF_FACTOR, self.max_s)
        return min(base_s * (1 + BACKOFF_JITTER * random.random()), self.max_s)

    def reset(self) -> None:
        self._next_s = self.initial_s


# ---------------------------------------------------------------------------------------------
# Informer


class Informer:
    """List+watch one resource into a ``Cache`` and tell handlers what changed.

    ``namespace=None`` watches all namespaces. ``start()`` spawns the reflector task; use
    ``wait_synced()`` before trusting the cache. See the module docstring for the contract.
    """

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self._transform = transform
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.cache = Cache(indexers)
        if transform is compact:
            _SHARED.register(resource.api_version, resource.kind, self.cache)
        self.name = _informer_name(resource, namespace, label_selector, field_selector)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._handlers: list[HandlerRegistration] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.last_sync_resource_version: str | None = None
        self.list_count = 0
        """How many times the reflector listed (1 + relists); for diagnostics and tests."""

    # -- handlers ----------------------------------------------------------------------------

    def add_event_handler(
        self,
        *,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
        resync_period_s: float | None = None,
    ) -> HandlerRegistration:
        """Register handlers. Objects already cached are replayed to ``on_add`` at once, so a
        late subscriber sees the same world as an early one."""
        registration = HandlerRegistration(on_add, on_update, on_delete, resync_period_s)
        self._handlers.append(registration)
        if on_add is not None:
            for obj in self.cache.list():
                self._call(on_add, obj)
        if self._task is not None and not self._stopped:
            self._start_resync(registration)
        return registration

    def remove_event_handler(self, registration: HandlerRegistration) -> None:
        if registration in self._handlers:
            self._handlers.remove(registration)
        if registration.resync_task is not None:
            registration.resync_task.cancel()
            registration.resync_task = None

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Add cache indexes (may be called at any time; existing objects are indexed)."""
        self.cache.add_indexers(indexers)

    # -- state -------------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the cache (and ever after)."""
        return self._synced.is_set()

    async def wait_synced(self, timeout_s: float | None = None) -> bool:
        """Wait for the first list; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the reflector (idempotent). Needs a running event loop."""
        if self._task is not None or self._stopped:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"informer-{self.name}"
        )
        self._task.add_done_callback(self._log_task_end)
        for registration in self._handlers:
            self._start_resync(registration)

    async def stop(self) -> None:
        """Cancel the reflector and resync tasks and wait for them to end."""
        self._stopped = True
        tasks = [t for t in [self._task, *(h.resync_task for h in self._handlers)] if t]
        for task in tasks:
            task.cancel()
        for registration in self._handlers:
            registration.resync_task = None
        if tasks:
            await asyncio.wait(tasks)

    def _log_task_end(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("informer %s died", self.name, exc_info=task.exception())

    # -- reflector ---------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _Backoff(self._backoff_initial_s, self._backoff_max_s)
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list_and_replace()
                resource_version, healthy = await self._watch(resource_version)
                if healthy:
                    backoff.reset()
                    continue
                delay_s = backoff.next_delay_s()
                log.debug("informer %s: watch ended at once; retry in %.1fs", self.name, delay_s)
            except ResourceExpired:
                log.info("informer %s: resourceVersion expired; listing again", self.name)
                resource_version = None
                continue
            except ClientError as exc:
                delay_s = backoff.next_delay_s()
                log.warning("informer %s: %s; retry in %.1fs", self.name, exc, delay_s)
            except Exception:
                # A bug (ours or an unexpected answer): keep the informer alive, loudly.
                delay_s = backoff.next_delay_s()
                log.exception("informer %s: unexpected failure; retry in %.1fs", self.name, delay_s)
                resource_version = None
            await asyncio.sleep(delay_s)

    async def _list_and_replace(self) -> str:
        listing = await self.client.list_all(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self.page_size,
        )
        self.list_count += 1
        resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        if not resource_version:
            raise ClientError(f"list of {self.resource.plural} has no resourceVersion")
        self._replace(listing.get("items") or [])
        self.last_sync_resource_version = resource_version
        self._synced.set()
        return resource_version

    def _replace(self, items: list[dict[str, Any]]) -> None:
        """Make the cache equal ``items``, telling handlers the difference."""
        seen: set[str] = set()
        for obj in items:
            # List items have no kind/apiVersion on the wire; give them one, as watch events do.
            obj.setdefault("kind", self.resource.kind)
            obj.setdefault("apiVersion", self.resource.api_version)
            if self._transform is not None:
                obj = self._transform(obj)
            key = object_key(obj)
            seen.add(key)
            old = self.cache._upsert(obj)
            if old is None:
                self._dispatch_add(obj)
            elif _rv(old) != _rv(obj):
                self._dispatch_update(old, obj)
        for key in [k for k in self.cache.keys() if k not in seen]:
            old = self.cache._delete(key)
            if old is not None:
                self._dispatch_delete(old)

    async def _watch(self, resource_version: str) -> tuple[str, bool]:
        """Watch from ``resource_version`` until the server ends it; return the newest
        resourceVersion and whether the watch was healthy."""
        loop = asyncio.get_running_loop()
        started_s = loop.time()
        got_event = False
        timeout_s = random.randint(WATCH_TIMEOUT_MIN_S, 2 * WATCH_TIMEOUT_MIN_S)
        async with self.client.watch(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=resource_version,
            allow_bookmarks=True,
            timeout_s=timeout_s,
        ) as stream:
            async for event_type, obj in stream:
                got_event = True
                self._apply(event_type, obj)
                resource_version = stream.resource_version or resource_version
                self.last_sync_resource_version = resource_version
        healthy = got_event or loop.time() - started_s >= HEALTHY_WATCH_S
        return resource_version, healthy

    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        if self._transform is not None and event_type != "BOOKMARK" and obj.get("metadata"):
            obj = self._transform(obj)
        if event_type in ("ADDED", "MODIFIED"):
            old = self.cache._upsert(obj)
            if old is None:
                self._dispatch_add(obj)
            else:
                self._dispatch_update(old, obj)
        elif event_type == "DELETED":
            old = self.cache._delete(object_key(obj))
            self._dispatch_delete(obj if obj.get("metadata") else (old or obj))
        elif event_type != "BOOKMARK":
            log.warning("informer %s: unknown watch event type %r", self.name, event_type)

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch_add(self, obj: dict[str, Any]) -> None:
        for registration in list(self._handlers):
            if registration.on_add is not None:
                self._call(registration.on_add, obj)

    def _dispatch_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for registration in list(self._handlers):
            if registration.on_update is not None:
                self._call(registration.on_update, old, new)

    def _dispatch_delete(self, obj: dict[str, Any]) -> None:
        for registration in list(self._handlers):
            if registration.on_delete is not None:
                self._call(registration.on_delete, obj)

    def _call(self, handler: Callable[..., None], *args: dict[str, Any]) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("informer %s: event handler %r failed", self.name, handler)

    # -- resync ------------------------------------------------------------------------------

    def _start_resync(self, registration: HandlerRegistration) -> None:
        if not registration.resync_period_s or registration.on_update is None:
            return
        if registration.resync_task is not None:
            return
        index = self._handlers.index(registration)
        registration.resync_task = asyncio.get_running_loop().create_task(
            self._resync(registration), name=f"informer-{self.name}-resync-{index}"
        )
        registration.resync_task.add_done_callback(self._log_task_end)

    async def _resync(self, registration: HandlerRegistration) -> None:
        assert registration.resync_period_s and registration.on_update is not None
        while True:
            await asyncio.sleep(registration.resync_period_s)
            if not self.has_synced:
                continue
            for obj in self.cache.list():
                self._call(registration.on_update, obj, obj)


def _rv(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


def _informer_name(
    resource: Resource,
    namespace: str | None,
    label_selector: str | None,
    field_selector: str | None,
) -> str:
    name = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    if namespace:
        name += f"@{namespace}"
    if label_selector:
        name += f"[{label_selector}]"
    if field_selector:
        name += f"{{{field_selector}}}"
    return name


# ---------------------------------------------------------------------------------------------
# Factory


class SharedInformerFactory:
    """One informer per (resource, namespace, label selector, field selector) for a process.

    ``informer(...)`` returns the shared instance, creating it on first use; informers created
    after ``start()`` start at once. ``stop()`` stops them all.
    """

    def __init__(
        self,
        client: Client,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.transform = transform
        """Applied by every informer made here (client-go's ``WithTransform``)."""
        self._informers: dict[tuple[Resource, str | None, str | None, str | None], Informer] = {}
        self._started = False

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        key = (resource, namespace or None, label_selector or None, field_selector or None)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.client,
                resource,
                namespace=key[1],
                label_selector=key[2],
                field_selector=key[3],
                page_size=self.page_size,
                transform=self.transform,
            )
            self._informers[key] = informer
            if self._started:
                informer.start()
        return informer

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        """Start every informer made so far, and every one made from now on."""
        self._started = True
        for informer in self._informers.values():
            informer.start()

    async def wait_synced(self, timeout_s: float | None = None) -> bool:
        """Wait until every informer has synced; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                for informer in list(self._informers.values()):
                    await informer._synced.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(informer.stop() for informer in self._informers.values()))
