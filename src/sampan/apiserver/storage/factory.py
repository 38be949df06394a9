"""``Storage``: the storage layer of one API server — watch caches fed by one datastore watch,
and a ``ResourceStore`` per served resource.

What it owns: ONE datastore watch over the whole key space (``/registry/``) whose events are
routed, in revision order, to the watch cache of their storage resource; the caches themselves
(created per storage resource, lazily or all at start); and the relist when that watch breaks
(compaction, overflow, datastore failure).

Invariants:

* The ``RevisionTracker``'s revision R means: every datastore change <= R has been applied to
  every ready cache. Since one watch feeds all caches, R advances with any write anywhere, so a
  quiet resource is still known to be fresh up to R.
* A cache created while the watch runs is listed at the current R; changes > R that arrive
  during its list are buffered and applied after it (see WatchCache.replace).
* After the watch breaks, every cache is reloaded at one new revision and every watcher is
  ended (clients resume from their last revision or get 410 and relist).
* One background task (named ``storage-watch``) does all this; its failures are logged and
  followed by a relist with backoff; it is cancelled by ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sampan.api.resources import REGISTRY_PREFIX, ResourceInfo, ResourceRegistry, storage_key
from sampan.apiserver.storage.cache import RevisionTracker, WatchCache
from sampan.apiserver.storage.store import ResourceStore
from sampan.apiserver.storage.types import StorageSettings
from sampan.datastore.types import Backend, CompactedError, Event, KeyValue, StoreError
from sampan.tasks import log_task_end

__all__ = ["RELIST_BACKOFF_MAX_S", "RELIST_BACKOFF_MIN_S", "Storage"]

log = logging.getLogger(__name__)

RELIST_BACKOFF_MIN_S = 0.1
RELIST_BACKOFF_MAX_S = 5.0
READY_POLL_S = 0.05


class Storage:
    """The storage layer's factory: one per API server (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        registry: ResourceRegistry,
        *,
        settings: StorageSettings | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self.settings = settings or StorageSettings()
        self._clock = clock
        self._tracker = RevisionTracker()
        self._caches: dict[str, WatchCache] = {}
        self._stores: dict[tuple[str, str, str], ResourceStore] = {}
        self._task: asyncio.Task[None] | None = None
        self._load_tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._started = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the shared watch and load a cache for every stored resource of the registry.
        Returns at once; ``wait_ready`` waits for the caches."""
        if self._running:
            return
        self._running = True
        for info in self._registry.all():
            if info.stored:
                self._cache_for(info)
        self._task = asyncio.create_task(self._run(), name="storage-watch")
        self._task.add_done_callback(log_task_end)

    async def stop(self) -> None:
        """Stop the shared watch; every watch stream ends."""
        self._running = False
        tasks = [t for t in (self._task, *self._load_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._tracker.set_not_ready()
        for cache in self._caches.values():
            cache.begin_load()  # ends its watchers; reads no longer trust it

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until the shared watch runs and every cache created so far is loaded.
        Raises TimeoutError after ``timeout_s``."""

        async def ready() -> None:
            while not self.ready:
                await self._started.wait()
                waits = [c.ready.wait() for c in self._caches.values() if not c.ready.is_set()]
                if waits:
                    await asyncio.gather(*waits)
                else:
                    await asyncio.sleep(READY_POLL_S)  # the shared watch is relisting

        await asyncio.wait_for(ready(), timeout_s)

    @property
    def ready(self) -> bool:
        return self._tracker.ready and all(c.ready.is_set() for c in self._caches.values())

    @property
    def revision(self) -> int:
        """The revision every ready cache has reached."""
        return self._tracker.revision

    # --- stores ----------------------------------------------------------------------------

    def for_resource(self, info: ResourceInfo) -> ResourceStore:
        """The store of ``info`` (any served version; objects come out in the storage
        version). ValueError for virtual resources that are never stored."""
        key = (info.group, info.version, info.plural)
        store = self._stores.get(key)
        if store is not None and store.info is info:
            return store
        if not info.stored:
            raise ValueError(f"{info.group_resource} is not stored")
        cache = self._cache_for(info)
        store = ResourceStore(
            info,
            cache.info if cache.info.kind == info.kind else info,
            cache,
            self._backend,
            self._tracker,
            self.settings,
            registry=self._registry,
            clock=self._clock,
        )
        self._stores[key] = store
        return store

    def object_counts(self) -> dict[str, int]:
        """Objects held per stored resource (``deployments.apps``, ``pods``), from the
        watch caches: what ``apiserver_storage_objects`` reports."""
        counts: dict[str, int] = {}
        for cache in self._caches.values():
            info = cache.info
            name = f"{info.plural}.{info.group}" if info.group else info.plural
            counts[name] = counts.get(name, 0) + len(cache.objects)
        return counts

    def object_bytes(self) -> dict[str, int]:
        """Bytes the watch caches hold for their current objects per stored resource
        (``cache.entry_bytes`` summed): what ``apiserver_watch_cache_bytes`` reports."""
        sizes: dict[str, int] = {}
        for cache in self._caches.values():
            info = cache.info
            name = f"{info.plural}.{info.group}" if info.group else info.plural
            sizes[name] = sizes.get(name, 0) + cache.bytes
        return sizes

    def _storage_info(self, info: ResourceInfo) -> ResourceInfo:
        if info.api_version == info.storage_version:
            return info
        found = self._registry.by_kind(info.storage_version, info.kind)
        return found if found is not None else info

    def _cache_for(self, info: ResourceInfo) -> WatchCache:
        prefix = storage_key(info, None, None)
        cache = self._caches.get(prefix)
        if cache is not None:
            return cache
        cache = WatchCache(
            prefix,
            self._storage_info(info),
            ring_size=self.settings.ring_size,
            ring_max_bytes=self.settings.ring_max_bytes,
            watcher_queue_size=self.settings.watcher_queue_size,
        )
        cache.begin_load()
        self._caches[prefix] = cache
        if self._tracker.ready:
            # The shared watch runs: list at its position; changes after it are buffered.
            self._spawn_load(cache, self._tracker.revision)
        # Otherwise the (re)list in _run loads it.
        return cache

    # --- the shared watch ------------------------------------------------------------------

    def _spawn_load(self, cache: WatchCache, revision: int) -> None:
        task = asyncio.create_task(
            self._load_late(cache, revision, cache.epoch), name=f"storage-load {cache.prefix}"
        )
        self._load_tasks.add(task)
        task.add_done_callback(self._load_tasks.discard)
        task.add_done_callback(log_task_end)

    async def _load_late(self, cache: WatchCache, revision: int, epoch: int) -> None:
        backoff_s = RELIST_BACKOFF_MIN_S
        while cache.epoch == epoch:
            try:
                kvs = await self._list_all(cache.prefix, revision)
            except CompactedError:
                log.warning("cache %s: revision %d compacted; relisting", cache.prefix, revision)
                self._restart_watch()
                return
            except StoreError as e:
                log.warning("loading cache %s failed: %s; retrying", cache.prefix, e)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RELIST_BACKOFF_MAX_S)
                continue
            if cache.epoch == epoch:
                cache.replace(kvs, revision)
            return

    def _restart_watch(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._running:
            self._task = asyncio.create_task(self._run(), name="storage-watch")
            self._task.add_done_callback(log_task_end)

    async def _list_all(self, prefix: str, revision: int) -> list[KeyValue]:
        if revision == 0:
            return []  # nothing was ever written
        result = await self._backend.list(prefix, revision=revision)
        return list(result.items)

    async def _load_all(self, revision: int) -> None:
        loaded: set[str] = set()
        while True:
            todo = [c for p, c in self._caches.items() if p not in loaded]
            if not todo:
                return
            results = await asyncio.gather(*(self._list_all(c.prefix, revision) for c in todo))
            for cache, kvs in zip(todo, results, strict=True):
                cache.replace(kvs, revision)
                loaded.add(cache.prefix)

    async def _run(self) -> None:
        backoff_s = RELIST_BACKOFF_MIN_S
        while self._running:
            self._tracker.set_not_ready()
            for cache in self._caches.values():
                cache.begin_load()  # ends its watchers; a late load in flight is discarded
            try:
                revision = await self._backend.current_revision()
                await self._load_all(revision)
                self._tracker.set_ready(revision)
                self._started.set()
                backoff_s = RELIST_BACKOFF_MIN_S
                async for batch in self._backend.watch(REGISTRY_PREFIX, revision + 1):
                    self._dispatch(batch)
                if self._running:
                    log.warning("datastore watch ended; relisting every cache")
            except StoreError as e:
                log.warning("datastore watch failed (%s); relisting every cache", e)
            except Exception:
                # A bug here must not leave the caches silently stale: log it and relist.
                log.exception("storage watch crashed; relisting every cache")
            if self._running:
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RELIST_BACKOFF_MAX_S)

    def _route(self, key: str) -> WatchCache | None:
        """The cache owning ``key``: ``<prefix><name>`` for cluster-scoped resources,
        ``<prefix><namespace>/<name>`` for namespaced ones."""
        caches = self._caches
        cut = key.rfind("/")
        cluster = caches.get(key[: cut + 1])
        if cluster is not None and not cluster.namespaced:
            return cluster
        cut2 = key.rfind("/", 0, cut)
        namespaced = caches.get(key[: cut2 + 1]) if cut2 > 0 else None
        if namespaced is not None and namespaced.namespaced:
            return namespaced
        return None

    def _dispatch(self, batch: list[Event]) -> None:
        route = self._route
        for ev in batch:
            cache = route(ev.kv.key)
            if cache is not None:
                cache.apply(ev)
        if batch:
            self._tracker.advance(batch[-1].revision)
