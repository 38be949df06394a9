"""The generic registry store: create/get/list/watch/update/delete of one resource with
kube-apiserver's semantics, over the datastore (writes) and the watch cache (reads).

What it owns: system metadata (name generation, uid, creationTimestamp, generation,
resourceVersion), the strategy calls (defaulting, preparation, validation) as upstream's
registry store makes them, compare-and-swap loops, the status/main-resource split, graceful and
finalizer-driven deletion, and the choice between cache and datastore for each read.

Invariants:

* ``metadata.resourceVersion`` is never stored: it is the datastore mod revision, set on every
  object served (so it can never go stale).
* Every write is a compare-and-swap on the mod revision the decision was based on; a lost race
  re-reads and decides again (or is a 409 when the caller pinned a resourceVersion).
* Reads are answered from the watch cache whenever it can give the requested consistency; the
  datastore is read only for exact-revision lists the cache cannot reproduce, or when the cache
  is not ready or does not catch up in time.
* Objects go in and come out in the storage version of their kind (``info.storage_version``);
  version conversion for other served versions is the HTTP layer's job, except that an object
  handed to create/update in a non-storage version is converted on the way in.
* Datastore errors never escape: each becomes the matching ``StatusError`` (see translate.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from sampan.api import jsonwire, times
from sampan.api.errors import (
    AlreadyExists,
    BadRequest,
    Cause,
    Conflict,
    InternalError,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
    StatusError,
    qualified_resource,
)
from sampan.api.jsonwire import copy_json
from sampan.api.resources import ResourceInfo, ResourceRegistry, storage_key
from sampan.apiserver.storage import _api
from sampan.apiserver.storage.cache import (
    Entry,
    RevisionTracker,
    WatchCache,
    dumps,
)
from sampan.apiserver.storage.encryption import is_stale, is_unreadable
from sampan.apiserver.storage.tokens import (
    decode_continue,
    encode_continue,
    parse_resource_version,
)
from sampan.apiserver.storage.translate import (
    REQUEST_TOO_LARGE_MESSAGE,
    translate_store_error,
)
from sampan.apiserver.storage.types import (
    PROPAGATION_BACKGROUND,
    PROPAGATION_FOREGROUND,
    PROPAGATION_ORPHAN,
    DeleteOptions,
    ListPage,
    StorageSettings,
)
from sampan.apiserver.storage.watch import WatchStream, too_large_resource_version, watch_stream
from sampan.datastore.types import (
    MAX_VALUE_BYTES,
    Backend,
    CompactedError,
    ConflictError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    StoreError,
)

__all__ = [
    "DEFAULT_POD_GRACE_PERIOD_S",
    "FINALIZER_FOREGROUND",
    "FINALIZER_ORPHAN",
    "GENERATE_NAME_ALPHABET",
    "GENERATE_NAME_SUFFIX_LENGTH",
    "CacheCursor",
    "CacheDelta",
    "ResourceStore",
    "rfc3339",
]

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""Upstream's alphabet for generated name suffixes (no vowels, no look-alike digits)."""
GENERATE_NAME_SUFFIX_LENGTH = 5
MAX_GENERATED_NAME_BASE = 63 - GENERATE_NAME_SUFFIX_LENGTH

DEFAULT_POD_GRACE_PERIOD_S = 30
FINALIZER_ORPHAN = "orphan"
FINALIZER_FOREGROUND = "foregroundDeletion"

DATASTORE_PAGE_MIN = 100
"""Rows fetched per datastore round trip when a selector filters a paged list."""

DELETE_COLLECTION_WORKERS = 16
"""Deletes a delete_collection runs at once (upstream's default is 16 as well)."""

_SYSTEM_META_KEPT_ON_UPDATE = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

JSONObj = dict[str, Any]


rfc3339 = times.rfc3339


def _generate_name(base: str) -> str:
    suffix = "".join(
        secrets.choice(GENERATE_NAME_ALPHABET) for _ in range(GENERATE_NAME_SUFFIX_LENGTH)
    )
    return base[:MAX_GENERATED_NAME_BASE] + suffix


def _meta(obj: JSONObj) -> JSONObj:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    elif not isinstance(meta, dict):
        raise BadRequest("metadata must be an object")
    return meta


def _parse_kv(kv: KeyValue) -> JSONObj:
    obj = jsonwire.parse(kv.value)
    _meta(obj)["resourceVersion"] = str(kv.mod_revision)
    return obj


def _without_rv(obj: JSONObj) -> JSONObj:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


def _with_propagation(finalizers: list[str], policy: str | None) -> list[str]:
    """metadata.finalizers after a delete with ``policy`` (upstream's GC finalizers)."""
    out = list(finalizers)
    add: str | None = None
    remove: tuple[str, ...] = ()
    if policy == PROPAGATION_ORPHAN:
        add, remove = FINALIZER_ORPHAN, (FINALIZER_FOREGROUND,)
    elif policy == PROPAGATION_FOREGROUND:
        add, remove = FINALIZER_FOREGROUND, (FINALIZER_ORPHAN,)
    elif policy == PROPAGATION_BACKGROUND:
        remove = (FINALIZER_ORPHAN, FINALIZER_FOREGROUND)
    out = [f for f in out if f not in remove]
    if add is not None and add not in out:
        out.append(add)
    return out


def _set_or_drop(mapping: JSONObj, key: str, value: Any) -> None:
    if value is None or value == [] or value == {}:
        mapping.pop(key, None)
    else:
        mapping[key] = value


@dataclass(frozen=True, slots=True)
class CacheCursor:
    """Where a follower of one watch cache is (``ResourceStore.cached_changes``)."""

    epoch: int
    revision: int
    generation: int


@dataclass(frozen=True, slots=True)
class CacheDelta:
    cursor: CacheCursor
    full: bool
    changes: list[tuple[str, str, JSONObj | None]]


class ResourceStore:
    """One resource's store (see the module docstring). Built by ``Storage.for_resource``."""

    def __init__(
        self,
        info: ResourceInfo,
        storage_info: ResourceInfo,
        cache: WatchCache,
        backend: Backend,
        tracker: RevisionTracker,
        settings: StorageSettings,
        *,
        registry: ResourceRegistry | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.info = info
        self._registry = registry
        self.storage_info = storage_info
        self._cache = cache
        self._backend = backend
        self._tracker = tracker
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))

    # --- helpers ---------------------------------------------------------------------------

    def _key(self, namespace: str | None, name: str) -> str:
        return storage_key(self.info, namespace, name)

    def _prefix(self, namespace: str | None) -> str:
        return storage_key(self.info, namespace, None)

    def _error(self, err: StoreError, name: str = "", *, continuing: bool = False) -> StatusError:
        return translate_store_error(err, self.info, name, continuing=continuing)

    def _not_found(self, name: str) -> NotFound:
        return NotFound.for_object(self.info.plural, self.info.group, name)

    def _conflict(self, name: str, detail: str) -> Conflict:
        qr = qualified_resource(self.info.plural, self.info.group)
        return Conflict(
            f'Operation cannot be fulfilled on {qr} "{name}": {detail}',
            name=name,
            group=self.info.group,
            kind=self.info.plural,
        )

    def _invalid(self, name: str, causes: list[Cause]) -> Invalid:
        return Invalid.for_object(self.storage_info.kind, self.info.group, name, causes)

    def _is(self, group: str, kind: str) -> bool:
        return self.storage_info.group == group and self.storage_info.kind == kind

    async def _current_revision(self) -> int:
        try:
            return await self._backend.current_revision()
        except StoreError as e:
            raise self._error(e) from e

    async def _fetch(self, key: str, name: str) -> tuple[JSONObj, int] | None:
        """The live object from the datastore (not the cache)."""
        try:
            _, kv = await self._backend.get(key)
        except StoreError as e:
            raise self._error(e, name) from e
        if kv is None:
            return None
        return _parse_kv(kv), kv.mod_revision

    def _cached(self, key: str) -> tuple[JSONObj, int] | None:
        entry = self._cache.objects.get(key)
        if entry is None:
            return None
        return entry.obj(), entry.mod_revision

    def _encode(self, obj: JSONObj) -> bytes:
        data = dumps(_without_rv(obj))
        if len(data) > MAX_VALUE_BYTES:
            raise RequestEntityTooLarge(REQUEST_TOO_LARGE_MESSAGE)
        return data

    def _to_storage_version(self, obj: JSONObj) -> JSONObj:
        if not isinstance(obj, dict):
            raise BadRequest("the object must be a JSON object")
        sinfo = self.storage_info
        api_version = obj.get("apiVersion")
        if api_version and api_version != sinfo.api_version:
            # Another served version of the same stored kind: convert it.
            source: ResourceInfo | None = None
            if api_version == self.info.api_version:
                source = self.info
            elif self._registry is not None:
                source = self._registry.by_kind(api_version, str(obj.get("kind") or sinfo.kind))
            if source is not None and source.storage_resource == sinfo.storage_resource:
                obj = _api.convert(source, obj, sinfo)
        if obj.get("apiVersion") == sinfo.api_version and obj.get("kind") == sinfo.kind:
            return obj
        # apiVersion and kind first, as Kubernetes serializes them.
        rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return {"apiVersion": sinfo.api_version, "kind": sinfo.kind, **rest}

    # --- freshness -------------------------------------------------------------------------

    async def _cache_ready(self) -> bool:
        if self._cache.ready.is_set():
            return True
        try:
            await asyncio.wait_for(self._cache.ready.wait(), self._settings.ready_wait_s)
        except TimeoutError:
            return False
        return True

    async def _cache_fresh(self, resource_version: str, revision: int) -> bool:
        """Whether the cache may answer a read at ``resource_version`` (waiting as needed):
        "" = consistent (at least the datastore's current revision), "0" = any, N = not
        older than N (504 when the cache does not get there in time)."""
        if not await self._cache_ready():
            return False
        if resource_version == "":
            target = await self._current_revision()
            ok = await self._tracker.wait_consistent(target, self._settings.consistent_read_wait_s)
        elif revision == 0:
            ok = True
        else:
            ok = await self._tracker.wait_for(revision, self._settings.freshness_wait_s)
            if not ok and self._cache.ready.is_set():
                raise too_large_resource_version(revision, self._tracker.revision)
        return ok and self._cache.ready.is_set()

    # --- reads -----------------------------------------------------------------------------

    async def get(self, namespace: str | None, name: str, *, resource_version: str = "") -> JSONObj:
        revision = parse_resource_version(resource_version)
        key = self._key(namespace, name)
        if await self._cache_fresh(resource_version, revision):
            entry = self._cache.objects.get(key)
            if entry is not None:
                return entry.obj()
            if not is_unreadable(self._backend, key):
                raise self._not_found(name)
        found = await self._fetch(key, name)
        if found is None:
            raise self._not_found(name)
        return found[0]

    async def get_bytes(
        self, namespace: str | None, name: str, *, resource_version: str = ""
    ) -> bytes:
        """``get``'s object as the JSON bytes it is served as (``dumps`` of ``get``'s answer):
        from the watch cache, its stored bytes as they are, without a parse and an encode."""
        revision = parse_resource_version(resource_version)
        key = self._key(namespace, name)
        if await self._cache_fresh(resource_version, revision):
            entry = self._cache.objects.get(key)
            if entry is not None:
                return entry.data
            if not is_unreadable(self._backend, key):
                raise self._not_found(name)
        found = await self._fetch(key, name)
        if found is None:
            raise self._not_found(name)
        return dumps(found[0])

    async def list(
        self,
        namespace: str | None,
        *,
        label_selector: object = None,
        field_selector: object = None,
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
        resource_version_match: str = "",
    ) -> ListPage:
        labels = _api.label_matcher(label_selector)
        fields = _api.field_matcher(field_selector, self.storage_info)
        limit = max(0, int(limit or 0))
        if continue_token:
            if resource_version not in ("", "0"):
                raise BadRequest("specifying resource version is not allowed when using continue")
            token = decode_continue(continue_token)
            return await self._list_exact(
                namespace, token.revision, token.start, limit, labels, fields, continuing=True
            )
        revision = parse_resource_version(resource_version)
        match = resource_version_match
        if match not in ("", "Exact", "NotOlderThan"):
            raise _invalid_list_options(
                "FieldValueNotSupported",
                f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan", ""',
            )
        if match and resource_version == "":
            raise _invalid_list_options(
                "FieldValueForbidden",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            )
        if match == "Exact" and revision == 0:
            raise _invalid_list_options(
                "FieldValueForbidden",
                'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
            )
        if match == "Exact" or (match == "" and revision > 0 and limit > 0):
            # Upstream: a non-zero RV with a limit and no match means "exactly at RV".
            return await self._list_exact(namespace, revision, "", limit, labels, fields)
        if await self._cache_fresh(resource_version, revision):
            return self._list_cache(namespace, self._tracker.revision, "", limit, labels, fields)
        return await self._list_store(namespace, 0, "", limit, labels, fields)

    async def _list_exact(
        self,
        namespace: str | None,
        revision: int,
        start: str,
        limit: int,
        labels: _api.Matcher | None,
        fields: _api.Matcher | None,
        *,
        continuing: bool = False,
    ) -> ListPage:
        cache = self._cache
        if await self._cache_ready():
            if self._tracker.revision < revision:
                await self._tracker.wait_for(revision, self._settings.freshness_wait_s)
            # The cache holds the state at `revision` when nothing under its prefix changed
            # after `revision` and it was loaded at or before `revision`.
            if (
                cache.ready.is_set()
                and cache.loaded_revision <= revision <= self._tracker.revision
                and cache.last_change <= revision
            ):
                return self._list_cache(namespace, revision, start, limit, labels, fields)
        return await self._list_store(
            namespace, revision, start, limit, labels, fields, continuing=continuing
        )

    def _list_cache(
        self,
        namespace: str | None,
        revision: int,
        start: str,
        limit: int,
        labels: _api.Matcher | None,
        fields: _api.Matcher | None,
    ) -> ListPage:
        keys, lo, hi = self._cache.range(namespace, start)
        objects = self._cache.objects
        prefix = self._prefix(namespace)
        if labels is None and fields is None:
            end = hi if limit <= 0 else min(hi, lo + limit)
            items = [objects[keys[i]].data for i in range(lo, end)]
            if end < hi:
                token = encode_continue(keys[end - 1], prefix, revision)
                return ListPage(items, str(revision), token, hi - end)
            return ListPage(items, str(revision), None, None)
        selected: list[Entry] = []
        token: str | None = None
        for i in range(lo, hi):
            entry = objects[keys[i]]
            if labels is not None and not labels.matches(entry.labels):
                continue
            if fields is not None and not fields.matches(entry.fields):
                continue
            if limit and len(selected) == limit:
                token = encode_continue(selected[-1].key, prefix, revision)
                break
            selected.append(entry)
        return ListPage([e.data for e in selected], str(revision), token, None)

    async def _list_store(
        self,
        namespace: str | None,
        revision: int,
        start: str,
        limit: int,
        labels: _api.Matcher | None,
        fields: _api.Matcher | None,
        *,
        continuing: bool = False,
    ) -> ListPage:
        """A list read from the datastore at ``revision`` (0 = current)."""
        prefix = self._prefix(namespace)
        start_after = prefix + start if start else ""
        filtered = labels is not None or fields is not None
        selected: list[Entry] = []
        more = False
        read_at = revision
        try:
            while True:
                if limit:
                    want = limit + 1 - len(selected)
                    page = max(want, DATASTORE_PAGE_MIN) if filtered else want
                else:
                    page = 0
                result = await self._backend.list(
                    prefix, revision=read_at, limit=page, start_after=start_after
                )
                read_at = result.revision
                for kv in result.items:
                    start_after = kv.key
                    entry = self._cache.entry_for(kv)
                    if entry is None:
                        continue
                    if labels is not None and not labels.matches(entry.labels):
                        continue
                    if fields is not None and not fields.matches(entry.fields):
                        continue
                    selected.append(entry)
                    if limit and len(selected) > limit:
                        break
                if (limit and len(selected) > limit) or not result.more or not result.items:
                    break
            remaining: int | None = None
            if limit and len(selected) > limit:
                selected.pop()
                more = True
                if not filtered and not start:
                    _, total = await self._backend.count(prefix, read_at)
                    remaining = max(0, total - limit)
        except CompactedError as e:
            raise self._error(e, continuing=continuing) from e
        except FutureRevisionError as e:
            raise too_large_resource_version(e.revision, e.current_revision) from e
        except StoreError as e:
            raise self._error(e) from e
        token = encode_continue(selected[-1].key, prefix, read_at) if more else None
        return ListPage([e.data for e in selected], str(read_at), token, remaining)

    def watch(
        self,
        namespace: str | None,
        *,
        label_selector: object = None,
        field_selector: object = None,
        resource_version: str = "",
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
    ) -> WatchStream:
        """A watch stream (see watch.py). Bad parameters raise here, before any event."""
        revision = parse_resource_version(resource_version)
        labels = _api.label_matcher(label_selector)
        fields = _api.field_matcher(field_selector, self.storage_info)
        return watch_stream(
            self._cache,
            self._tracker,
            self.storage_info,
            self._settings,
            self._current_revision,
            namespace=namespace if self.info.namespaced else None,
            labels=labels,
            fields=fields,
            resource_version=resource_version,
            revision=revision,
            allow_bookmarks=allow_bookmarks,
            send_initial_events=send_initial_events,
        )

    def cached_objects(self, namespace: str | None = None) -> Iterable[JSONObj]:
        """The cache's current objects, parsed once per cache generation and shared between
        callers: do not mutate them."""
        if not self.info.namespaced:
            namespace = None
        return list(self._cache.parsed(namespace))

    @property
    def generation(self) -> int:
        return self._cache.generation

    def cached_changes(self, cursor: CacheCursor | None) -> CacheDelta | None:
        """What changed in the cache since ``cursor`` (a previous delta's ``cursor``), for
        in-process indexes that follow the cache synchronously (the Node authorizer's graph).

        None: nothing changed, or the cache is (re)loading (keep the current view). A delta
        with ``full=True`` lists every current object (the cache reloaded, or the changes fell
        off its ring): the caller rebuilds from it. Otherwise ``changes`` are the changes in
        order, each ``(namespace, name, object or None when deleted)``."""
        cache = self._cache
        if cache.loading:
            return None
        if cursor is not None and cursor.generation == cache.generation:
            return None
        new_cursor = CacheCursor(
            cache.epoch, max(cache.last_change, cache.ring_floor), cache.generation
        )
        if cursor is None or cursor.epoch != cache.epoch or cursor.revision < cache.ring_floor:
            everything = [(e.namespace, e.name, e.obj()) for e in cache.entries(None)]
            return CacheDelta(new_cursor, True, everything)
        changes: list[tuple[str, str, JSONObj | None]] = []
        for change in cache.changes_since(cursor.revision):
            if change.entry is None:
                assert change.prev is not None
                changes.append((change.prev.namespace, change.prev.name, None))
            else:
                changes.append((change.entry.namespace, change.entry.name, change.entry.obj()))
        return CacheDelta(new_cursor, False, changes)

    # --- create ----------------------------------------------------------------------------

    async def create(
        self, obj: JSONObj, *, dry_run: bool = False, requester: Mapping[str, Any] | None = None
    ) -> JSONObj:
        """``requester`` (``{"username", "uid", "groups", "extra"}``): the authenticated
        user, which a CertificateSigningRequest records in its spec (none: recorded empty)."""
        obj = self._to_storage_version(copy_json(obj))
        sinfo = self.storage_info
        meta = _meta(obj)
        if _parses_as_revision(meta.get("resourceVersion")):
            # Upstream's etcd store refuses it with a plain (500) error; a value its versioner
            # cannot parse (not a decimal uint64) skips that check and is dropped below.
            raise InternalError(
                "Internal error occurred: resourceVersion should not be set on objects to be "
                "created"
            )
        meta.pop("resourceVersion", None)
        meta.pop("selfLink", None)
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        if not self.info.namespaced:
            meta.pop("namespace", None)
        _api.strategy_default(sinfo, obj)
        # System fields first: some strategies derive from them (a Job's selector from its
        # uid, its labels from its name), as upstream's run after FillObjectMetaSystemFields.
        meta["uid"] = str(uuid4())
        meta["creationTimestamp"] = rfc3339(self._clock())
        given_name = str(meta.get("name") or "")
        generate = str(meta.get("generateName") or "")
        attempts = self._settings.generate_name_retries if not given_name and generate else 1
        template = obj
        for attempt in range(attempts):
            obj = copy_json(template) if attempts > 1 else template
            meta = _meta(obj)
            if not given_name and generate:
                meta["name"] = _generate_name(generate)
            _api.strategy_prepare_for_create(sinfo, obj, requester)
            meta = _meta(obj)
            if sinfo.tracks_generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            name = str(meta.get("name") or "")
            namespace = meta.get("namespace") if self.info.namespaced else None
            self._check_create(obj, name, namespace)
            key = self._key(namespace, name)
            data = self._encode(obj)
            try:
                if dry_run:
                    _, existing = await self._backend.get(key)
                    if existing is not None:
                        raise KeyExistsError(key)
                    return obj
                revision = await self._backend.create(key, data)
            except KeyExistsError as e:
                if attempt + 1 < attempts:
                    continue
                raise AlreadyExists.for_object(self.info.plural, self.info.group, name) from e
            except StoreError as e:
                raise self._error(e, name) from e
            meta["resourceVersion"] = str(revision)
            return obj
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_create(self, obj: JSONObj, name: str, namespace: str | None) -> None:
        causes = _api.strategy_validate(self.storage_info, obj)
        if not name and not any(c.field == "metadata.name" for c in causes):
            causes.append(
                Cause("FieldValueRequired", "name or generateName is required", "metadata.name")
            )
        if self.info.namespaced and not namespace:
            if not any(c.field == "metadata.namespace" for c in causes):
                causes.append(Cause("FieldValueRequired", "Required value", "metadata.namespace"))
        if (
            name
            and ("/" in name or name in (".", ".."))
            and not any(c.field == "metadata.name" for c in causes)
        ):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: \"{name}\": may not contain '/'",
                    "metadata.name",
                )
            )
        if causes:
            raise self._invalid(name, causes)

    # --- update ----------------------------------------------------------------------------

    async def update(
        self,
        namespace: str | None,
        name: str,
        obj: JSONObj,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> JSONObj:
        """Replace the object; compare-and-swap on ``obj.metadata.resourceVersion`` when set,
        unconditional otherwise. Status changes go through ``subresource="status"``."""
        obj = self._to_storage_version(copy_json(obj))
        body_name = _meta(obj).get("name")
        if body_name and body_name != name:
            raise BadRequest(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )

        def replace(_current: JSONObj) -> JSONObj:
            return copy_json(obj)

        return await self.guaranteed_update(
            namespace, name, replace, subresource=subresource, dry_run=dry_run
        )

    async def guaranteed_update(
        self,
        namespace: str | None,
        name: str,
        mutate: Callable[[JSONObj], JSONObj],
        *,
        subresource: str = "",
        dry_run: bool = False,
        mutate_reads_only: bool = False,
        known: JSONObj | None = None,
    ) -> JSONObj:
        """Get, ``mutate`` (a copy), compare-and-swap; retried when another writer won.

        ``mutate`` receives the current object (storage version, with its resourceVersion)
        and returns the desired one; if that carries a resourceVersion different from the
        current one, the update is a 409 Conflict (the caller's precondition). It may raise
        ``StatusError`` to refuse. ``mutate_reads_only``: the caller promises ``mutate``
        neither modifies its argument nor returns it (or part of it), so it gets the current
        object itself instead of a copy. ``known``: the object as the caller just read it
        (with its resourceVersion, not modified since); with ``mutate_reads_only`` it stands
        for the cached object while the cache holds that same revision (no second parse)."""
        namespace = namespace if self.info.namespaced else None
        key = self._key(namespace, name)
        current = None
        if await self._cache_ready():
            entry = self._cache.objects.get(key)
            if entry is not None:
                known_meta = (known or {}).get("metadata")
                known_rv = known_meta.get("resourceVersion") if isinstance(known_meta, dict) else ""
                if mutate_reads_only and str(known_rv or "") == str(entry.mod_revision):
                    assert known is not None
                    current = known, entry.mod_revision
                else:
                    current = entry.obj(), entry.mod_revision
        fresh = False
        if current is None:
            current = await self._fetch(key, name)
            fresh = True
        conflicts = 0
        while True:
            if current is None:
                raise self._not_found(name)
            old, old_rev = current
            new = mutate(old if mutate_reads_only else copy_json(old))
            if not isinstance(new, dict):
                raise InternalError("update produced no object")
            new = self._to_storage_version(new)
            wanted_rv = str(_meta(new).get("resourceVersion") or "")
            if wanted_rv and wanted_rv != str(old_rev):
                if not fresh:
                    current, fresh = await self._fetch(key, name), True
                    continue
                raise Conflict.stale(self.info.plural, self.info.group, name)
            result = self._prepare_update(name, old, new, subresource)
            if result == _without_rv(old) and not is_stale(self._backend, key):
                return old
            if dry_run:
                _meta(result)["resourceVersion"] = str(old_rev)
                return result
            data = self._encode(result)
            try:
                kv = await self._backend.update(key, data, old_rev)
            except ConflictError as e:
                conflicts += 1
                if conflicts > self._settings.conflict_retries:
                    raise Conflict.stale(self.info.plural, self.info.group, name) from e
                current = (_parse_kv(e.current), e.current.mod_revision) if e.current else None
                fresh = True
                continue
            except KeyNotFoundError as e:
                raise self._not_found(name) from e
            except StoreError as e:
                raise self._error(e, name) from e
            _meta(result)["resourceVersion"] = str(kv.mod_revision)
            if self._should_delete_after_update(old, result):
                try:
                    await self._backend.delete(key, kv.mod_revision)
                except (ConflictError, KeyNotFoundError):
                    pass  # someone else changed or removed it since; their write decides
                except StoreError as e:
                    raise self._error(e, name) from e
            return result

    def _prepare_update(self, name: str, old: JSONObj, new: JSONObj, subresource: str) -> JSONObj:
        """The object to store for an update of ``old`` to ``new`` (no resourceVersion).

        System metadata (uid, creationTimestamp, deletion fields, name, namespace) is the
        store's; the strategy decides the rest (defaults, status kept on main updates, spec
        kept on status updates, generation)."""
        sinfo = self.storage_info
        old_meta = old.get("metadata") or {}
        if subresource == "finalize" and self._is("", "Namespace"):
            result = copy_json(old)
            finalizers = (new.get("spec") or {}).get("finalizers") or []
            spec = result.setdefault("spec", {})
            _set_or_drop(spec, "finalizers", list(finalizers))
            return _without_rv(result)
        result = new
        meta = _meta(result)
        for field in _SYSTEM_META_KEPT_ON_UPDATE:
            if field == "uid" and meta.get("uid"):
                continue
            _set_or_drop(meta, field, old_meta.get(field))
        if not meta.get("name"):
            meta["name"] = old_meta.get("name")
        if not self.info.namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            meta["namespace"] = old_meta.get("namespace")
        if subresource == "binding":
            # pods/binding: spec.nodeName, annotations and the PodScheduled condition are
            # written as the binding set them; no strategy (upstream's BindingREST).
            return _without_rv(result)
        if subresource in ("ephemeralcontainers", "approval") and (
            _api.strategy_prepare_for_subresource_update(sinfo, subresource, result, old)
        ):
            causes = _api.strategy_validate_subresource_update(sinfo, subresource, result, old)
        elif subresource == "status":
            _api.strategy_prepare_for_status_update(sinfo, result, old)
            causes = _api.strategy_validate_status_update(sinfo, result, old)
        else:
            _api.strategy_default(sinfo, result)
            _api.strategy_prepare_for_update(sinfo, result, old)
            causes = _api.strategy_validate_update(sinfo, result, old)
        meta = _meta(result)
        for field in ("uid", "name", "namespace"):
            if meta.get(field) != old_meta.get(field) and not any(
                c.field == f"metadata.{field}" for c in causes
            ):
                causes.append(
                    Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {json.dumps(meta.get(field))}: field is immutable",
                        f"metadata.{field}",
                    )
                )
        if causes:
            raise self._invalid(name, causes)
        return _without_rv(result)

    def _should_delete_after_update(self, old: JSONObj, new: JSONObj) -> bool:
        """Upstream: an object being deleted whose last finalizer went away (and whose grace
        period is over, i.e. 0) is deleted by the update that removed it; a namespace also
        needs its spec.finalizers empty (the finalize subresource empties them)."""
        old_meta = old.get("metadata") or {}
        new_meta = new.get("metadata") or {}
        if self._is("", "Namespace") and (new.get("spec") or {}).get("finalizers"):
            return False
        return (
            bool(old_meta.get("deletionTimestamp"))
            and old_meta.get("deletionGracePeriodSeconds") == 0
            and not new_meta.get("finalizers")
        )

    # --- delete ----------------------------------------------------------------------------

    async def delete(
        self, namespace: str | None, name: str, options: DeleteOptions
    ) -> tuple[JSONObj, bool]:
        """Delete now, or mark for deletion (graceful pods, finalizers, namespaces).
        Returns (the object, True when it is gone now)."""
        namespace = namespace if self.info.namespaced else None
        key = self._key(namespace, name)
        current = self._cached(key) if await self._cache_ready() else None
        fresh = False
        if current is None:
            current = await self._fetch(key, name)
            fresh = True
        conflicts = 0
        while True:
            if current is None:
                raise self._not_found(name)
            obj, rev = current
            meta = obj.get("metadata") or {}
            failed = self._precondition_failure(meta, options)
            if failed:
                if not fresh:
                    current, fresh = await self._fetch(key, name), True
                    continue
                raise self._conflict(name, failed)
            marked = self._mark_for_deletion(obj, options)
            try:
                if marked is None:
                    if options.dry_run:
                        return obj, True
                    await self._backend.delete(key, rev)
                    return obj, True
                if marked is obj:
                    if not fresh:  # confirm "nothing to do" against the datastore
                        current, fresh = await self._fetch(key, name), True
                        continue
                    return obj, False
                if options.dry_run:
                    return marked, False
                kv = await self._backend.update(key, self._encode(marked), rev)
                _meta(marked)["resourceVersion"] = str(kv.mod_revision)
                return marked, False
            except ConflictError as e:
                conflicts += 1
                if conflicts > self._settings.conflict_retries:
                    raise Conflict.stale(self.info.plural, self.info.group, name) from e
                current = (_parse_kv(e.current), e.current.mod_revision) if e.current else None
                fresh = True
            except KeyNotFoundError as e:
                raise self._not_found(name) from e
            except StoreError as e:
                raise self._error(e, name) from e

    @staticmethod
    def _precondition_failure(meta: JSONObj, options: DeleteOptions) -> str:
        if options.precondition_uid and options.precondition_uid != meta.get("uid"):
            return (
                f"Precondition failed: UID in precondition: {options.precondition_uid}, "
                f"UID in object meta: {meta.get('uid', '')}"
            )
        if options.precondition_rv and options.precondition_rv != meta.get("resourceVersion"):
            return (
                f"Precondition failed: ResourceVersion in precondition: "
                f"{options.precondition_rv}, ResourceVersion in object meta: "
                f"{meta.get('resourceVersion', '')}"
            )
        return ""

    def _grace_period_s(self, obj: JSONObj, options: DeleteOptions) -> int:
        """Seconds a delete leaves the object for its owner to clean up (pods only)."""
        if not self._is("", "Pod"):
            return 0
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        if options.grace_period_s is not None:
            grace = options.grace_period_s
            if grace < 0:
                grace = 1  # upstream: negative means "as soon as possible", i.e. 1 s
        else:
            grace = spec.get("terminationGracePeriodSeconds")
            if not isinstance(grace, int) or grace < 0:
                grace = DEFAULT_POD_GRACE_PERIOD_S
        if not spec.get("nodeName") or status.get("phase") in ("Failed", "Succeeded"):
            return 0  # nobody runs it: nothing to wait for
        return grace

    def _mark_for_deletion(self, obj: JSONObj, options: DeleteOptions) -> JSONObj | None:
        """Decide a delete: None = delete now; ``obj`` itself = nothing to change (already
        terminating); another dict = write it (marked with a deletionTimestamp)."""
        meta = obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        new_finalizers = _with_propagation(finalizers, options.propagation_policy)
        now = self._clock()
        terminating = bool(meta.get("deletionTimestamp"))

        if self._is("", "Namespace"):
            spec_finalizers = (obj.get("spec") or {}).get("finalizers") or []
            if not terminating:
                if not spec_finalizers and not new_finalizers:
                    return None
                marked = copy_json(obj)
                mmeta = _meta(marked)
                mmeta["deletionTimestamp"] = rfc3339(now)
                mmeta["deletionGracePeriodSeconds"] = 0
                _set_or_drop(mmeta, "finalizers", new_finalizers)
                marked.setdefault("status", {})["phase"] = "Terminating"
                return marked
            if spec_finalizers:
                return obj  # the namespace controller is still emptying it
            # spec.finalizers done: fall through to the generic rules (metadata finalizers).

        grace = self._grace_period_s(obj, options)
        if terminating:
            current_grace = meta.get("deletionGracePeriodSeconds")
            remaining_grace = current_grace if isinstance(current_grace, int) else 0
            marked = copy_json(obj)
            mmeta = _meta(marked)
            changed = False
            if grace < remaining_grace:
                # A shorter grace period wins (the kubelet's final delete uses 0).
                deadline = rfc3339(now + timedelta(seconds=grace))
                if deadline < str(meta["deletionTimestamp"]):
                    mmeta["deletionTimestamp"] = deadline
                mmeta["deletionGracePeriodSeconds"] = grace
                remaining_grace = grace
                changed = True
            if new_finalizers != finalizers:
                _set_or_drop(mmeta, "finalizers", new_finalizers)
                changed = True
            if remaining_grace == 0 and not new_finalizers:
                return None  # nothing left to wait for
            return marked if changed else obj
        if grace == 0 and not new_finalizers:
            return None
        marked = copy_json(obj)
        mmeta = _meta(marked)
        mmeta["deletionTimestamp"] = rfc3339(now + timedelta(seconds=grace))
        mmeta["deletionGracePeriodSeconds"] = grace
        _set_or_drop(mmeta, "finalizers", new_finalizers)
        if isinstance(mmeta.get("generation"), int) and mmeta["generation"] > 0:
            mmeta["generation"] += 1
        return marked

    async def delete_collection(
        self,
        namespace: str | None,
        *,
        label_selector: object = None,
        field_selector: object = None,
        options: DeleteOptions,
    ) -> list[JSONObj]:
        """Delete (or mark) every matching object, as ``delete`` would one by one. Objects
        that vanish meanwhile are skipped. Returns what was deleted or marked, in key order."""
        page = await self.list(
            namespace if self.info.namespaced else None,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        per_item = DeleteOptions(
            grace_period_s=options.grace_period_s,
            propagation_policy=options.propagation_policy,
            dry_run=options.dry_run,
        )
        limiter = asyncio.Semaphore(DELETE_COLLECTION_WORKERS)

        async def one(data: bytes) -> JSONObj | None:
            meta = json.loads(data).get("metadata") or {}
            async with limiter:
                try:
                    obj, _ = await self.delete(
                        meta.get("namespace"), meta.get("name", ""), per_item
                    )
                except NotFound:
                    return None
            return obj

        results = await asyncio.gather(*(one(d) for d in page.items))
        return [r for r in results if r is not None]


def _parses_as_revision(value: Any) -> bool:
    """Whether upstream's versioner reads ``value`` as a non-zero revision (uint64)."""
    return isinstance(value, str) and value.isascii() and value.isdigit() and 0 < int(value) < 2**64


def _invalid_list_options(reason: str, message: str) -> Invalid:
    """kube-apiserver's answer to list options that fail validation: 422 Invalid for the
    kind ``ListOptions.meta.k8s.io`` with no name, one cause on ``resourceVersionMatch``."""
    field = "resourceVersionMatch"
    return Invalid(
        f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}',
        group="meta.k8s.io",
        kind="ListOptions",
        causes=[Cause(reason, message, field)],
    )
