"""Garbage collector: ownerReferences, cascading deletion, orphaning.

This module owns deleting dependents whose owners are gone and the two GC finalizers the API
server puts on an object deleted with a propagation policy:

* **Background** (the default): the owner goes at once; then each dependent whose owners are
  all gone is deleted (the collector checks absence with a live read, owner uid included, so a
  re-created owner of the same name does not keep an orphan alive).
* **Foreground** (``foregroundDeletion`` finalizer): the owner stays, terminating, while its
  dependents are deleted; dependents that are owners themselves are deleted in the foreground
  too. When no dependent with ``blockOwnerDeletion: true`` is left, the finalizer is removed
  and the API server deletes the owner.
* **Orphan** (``orphan`` finalizer): the owner's uid is removed from every dependent's
  ownerReferences, then the finalizer, so the dependents survive.

A dependent with at least one live owner ("solid") is kept; references to owners that are
gone, or that are being deleted in the foreground, are removed from it so they block nobody.

How it watches: at start, whenever a CustomResourceDefinition changes, and every
``REDISCOVERY_PERIOD_S`` it discovers every resource that can be listed, watched and deleted
(custom resources included; Events excluded, as upstream) and keeps one informer per
resource, indexed by uid and by owner uid. Handlers only
enqueue work items (strings: ``<action>|<group>|<version>|<plural>|<namespace>|<name>|<uid>``);
reconcile reads the caches and writes with preconditions (uid, resourceVersion) so it never
acts on a newer object of the same name.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sampan.client import ClientError, ConflictError, Informer, NotFoundError
from sampan.client.api import PatchType, Resource
from sampan.client.informer import INDEX_OWNER_UID
from sampan.controllers.base import ControllerContext, QueueController

__all__ = [
    "FINALIZER_FOREGROUND",
    "FINALIZER_ORPHAN",
    "GarbageCollector",
]

log = logging.getLogger(__name__)

FINALIZER_ORPHAN = "orphan"
FINALIZER_FOREGROUND = "foregroundDeletion"
REDISCOVERY_PERIOD_S = 30.0
# How soon a dependent whose owner's kind is not (yet) served is checked again.
UNKNOWN_KIND_RETRY_S = 5.0
UNKNOWN_KIND_MAX_RETRY_S = 600.0
CRD_GROUP = "apiextensions.k8s.io"
CRD_PLURAL = "customresourcedefinitions"
INDEX_UID = "uid"
# Resources never collected (as upstream's ignored resources).
IGNORED = frozenset({("", "events"), ("events.k8s.io", "events")})

ACTION_DELETE = "delete"  # delete the item if all its owners are gone
ACTION_ORPHAN = "orphan"  # process the orphan finalizer of the item
ACTION_FOREGROUND = "foreground"  # process the foregroundDeletion finalizer of the item


def _index_uid(obj: dict[str, Any]) -> tuple[str, ...]:
    uid = (obj.get("metadata") or {}).get("uid")
    return (uid,) if uid else ()


@dataclass(frozen=True)
class _Item:
    action: str
    resource: Resource
    namespace: str
    name: str
    uid: str

    def key(self) -> str:
        r = self.resource
        return "|".join(
            (self.action, r.group, r.version, r.plural, self.namespace, self.name, self.uid)
        )


def _has_finalizer(obj: dict[str, Any], finalizer: str) -> bool:
    return finalizer in ((obj.get("metadata") or {}).get("finalizers") or [])


def _deleting(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class GarbageCollector(QueueController):
    """Cascading deletion by ownerReferences; see the module docstring."""

    name = "garbagecollector"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        # (group, version, plural) -> informer; (apiVersion, kind) -> resource
        self._informers: dict[tuple[str, str, str], Informer] = {}
        self._by_kind: dict[tuple[str, str], Resource] = {}
        self._by_group_kind: dict[tuple[str, str], Resource] = {}
        self._discovery_task: asyncio.Task[None] | None = None
        # Set when a CRD changes, so its resource is watched without waiting a full period.
        self._rediscover_soon = asyncio.Event()
        # work item -> how many times its owner's kind could not be resolved
        self._unknown_tries: dict[str, int] = {}

    # -- monitors ----------------------------------------------------------------------------

    async def _discover(self) -> list[Resource]:
        found: list[Resource] = []
        paths = ["/api/v1"]
        groups = await self.client.request("GET", "/apis")
        for group in (groups or {}).get("groups") or []:
            for version in group.get("versions") or []:
                paths.append(f"/apis/{version['groupVersion']}")
        for path in paths:
            try:
                listing = await self.client.request("GET", path)
            except ClientError as exc:
                log.warning("garbagecollector: discovery of %s failed: %s", path, exc)
                continue
            group_version = (listing or {}).get("groupVersion") or "v1"
            group, _, version = group_version.rpartition("/")
            for entry in (listing or {}).get("resources") or []:
                plural = entry.get("name") or ""
                verbs = set(entry.get("verbs") or [])
                if "/" in plural or not {"list", "watch", "delete"} <= verbs:
                    continue
                if (group, plural) in IGNORED:
                    continue
                found.append(
                    Resource(group, version, plural, entry["kind"], bool(entry.get("namespaced")))
                )
        return found

    def _monitor(self, resources: list[Resource]) -> None:
        """Informers for resources not yet watched: one per (group, plural), the first
        version discovery lists (the preferred one) — other versions map to it by kind."""
        preferred: dict[tuple[str, str], Resource] = {}
        for resource in resources:
            preferred.setdefault((resource.group, resource.plural), resource)
            self._by_kind.setdefault((resource.api_version, resource.kind), resource)
        for resource in preferred.values():
            self._by_group_kind.setdefault((resource.group, resource.kind), resource)
            key = (resource.group, resource.version, resource.plural)
            if key in self._informers or any(
                k[0] == resource.group and k[2] == resource.plural for k in self._informers
            ):
                continue
            informer = self.ctx.informers.informer(resource)
            informer.add_indexers({INDEX_UID: _index_uid})
            informer.add_event_handler(
                on_add=lambda obj, r=resource: self._on_add(r, obj),
                on_update=lambda old, new, r=resource: self._on_update(r, old, new),
                on_delete=lambda obj, r=resource: self._on_delete(r, obj),
            )
            self._informers[key] = informer
            self.watch(informer)

    async def run(self, workers: int) -> None:
        while True:
            try:
                self._monitor(await self._discover())
                break
            except ClientError as exc:
                log.warning("garbagecollector: discovery failed (%s); retrying", exc)
                await self.ctx.clock.sleep(1.0)
        self._discovery_task = asyncio.get_running_loop().create_task(
            self._rediscover(), name="controller-garbagecollector-discovery"
        )
        try:
            await super().run(workers)
        finally:
            self._discovery_task.cancel()
            await asyncio.gather(self._discovery_task, return_exceptions=True)

    async def _rediscover(self) -> None:
        while True:
            sleeper = asyncio.ensure_future(self.ctx.clock.sleep(REDISCOVERY_PERIOD_S))
            nudged = asyncio.ensure_future(self._rediscover_soon.wait())
            try:
                await asyncio.wait({sleeper, nudged}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                nudged.cancel()
            self._rediscover_soon.clear()
            try:
                self._monitor(await self._discover())
            except ClientError as exc:
                log.warning("garbagecollector: rediscovery failed: %s", exc)

    # -- handlers (enqueue only) -------------------------------------------------------------

    def _enqueue(self, action: str, resource: Resource, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        item = _Item(
            action, resource, meta.get("namespace") or "", meta.get("name") or "", meta["uid"]
        )
        self.queue.add(item.key())

    def _on_add(self, resource: Resource, obj: dict[str, Any]) -> None:
        if resource.plural == CRD_PLURAL and resource.group == CRD_GROUP:
            self._rediscover_soon.set()
        meta = obj.get("metadata") or {}
        if not meta.get("uid"):
            return
        if meta.get("ownerReferences"):
            self._enqueue(ACTION_DELETE, resource, obj)
        self._check_finalizers(resource, obj)

    def _on_update(self, resource: Resource, old: dict[str, Any], new: dict[str, Any]) -> None:
        if resource.plural == CRD_PLURAL and resource.group == CRD_GROUP:
            self._rediscover_soon.set()  # e.g. it became Established: its resource is served
        meta = new.get("metadata") or {}
        if not meta.get("uid"):
            return
        old_refs = (old.get("metadata") or {}).get("ownerReferences") or []
        new_refs = meta.get("ownerReferences") or []
        if new_refs and (new_refs != old_refs or old is new):
            self._enqueue(ACTION_DELETE, resource, new)
        self._check_finalizers(resource, new)
        if _deleting(new) and not _deleting(old):
            self._owners_changed(old_refs + new_refs)
        elif new_refs != old_refs:
            self._owners_changed(old_refs)

    def _on_delete(self, resource: Resource, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        for dependent_resource, dependent in self._dependents(uid):
            self._enqueue(ACTION_DELETE, dependent_resource, dependent)
        self._owners_changed(meta.get("ownerReferences") or [])

    def _check_finalizers(self, resource: Resource, obj: dict[str, Any]) -> None:
        if not _deleting(obj):
            return
        if _has_finalizer(obj, FINALIZER_ORPHAN):
            self._enqueue(ACTION_ORPHAN, resource, obj)
        if _has_finalizer(obj, FINALIZER_FOREGROUND):
            self._enqueue(ACTION_FOREGROUND, resource, obj)

    def _owners_changed(self, refs: list[dict[str, Any]]) -> None:
        """A dependent went away or changed: owners waiting on it look again."""
        for ref in refs:
            found = self._cached_by_uid(ref.get("uid") or "")
            if found is None:
                continue
            owner_resource, owner = found
            if _deleting(owner) and _has_finalizer(owner, FINALIZER_FOREGROUND):
                self._enqueue(ACTION_FOREGROUND, owner_resource, owner)

    # -- cache lookups -----------------------------------------------------------------------

    def _cached_by_uid(self, uid: str) -> tuple[Resource, dict[str, Any]] | None:
        if not uid:
            return None
        for informer in self._informers.values():
            found = informer.cache.by_index(INDEX_UID, uid)
            if found:
                return informer.resource, found[0]
        return None

    def _dependents(self, uid: str) -> list[tuple[Resource, dict[str, Any]]]:
        out: list[tuple[Resource, dict[str, Any]]] = []
        for informer in self._informers.values():
            for obj in informer.cache.by_index(INDEX_OWNER_UID, uid):
                out.append((informer.resource, obj))
        return out

    def _resource_for(self, ref: dict[str, Any]) -> Resource | None:
        api_version = ref.get("apiVersion") or ""
        kind = ref.get("kind") or ""
        resource = self._by_kind.get((api_version, kind))
        if resource is None:
            group = api_version.rpartition("/")[0]
            resource = self._by_group_kind.get((group, kind))
        return resource

    def _current(self, item: _Item) -> dict[str, Any] | None:
        informer = self._informers.get(
            (item.resource.group, item.resource.version, item.resource.plural)
        )
        if informer is None:
            return None
        key = f"{item.namespace}/{item.name}" if item.namespace else item.name
        obj = informer.cache.get(key)
        if obj is None or (obj.get("metadata") or {}).get("uid") != item.uid:
            return None
        return obj

    async def _owner_state(self, ref: dict[str, Any], namespace: str) -> str:
        """ "solid", "waiting" (being deleted in the foreground) or "dangling" (gone)."""
        uid = ref.get("uid") or ""
        found = self._cached_by_uid(uid)
        owner: dict[str, Any] | None = found[1] if found else None
        owner_namespace = ((owner or {}).get("metadata") or {}).get("namespace")
        if owner_namespace and owner_namespace != namespace:
            owner = None  # an owner is looked up in its dependent's namespace, never elsewhere
        if owner is None:
            resource = self._resource_for(ref)
            if resource is None:
                # A kind nobody serves (yet?): keep the object for now, look for new kinds
                # soon, and check this object again later (as upstream retries).
                self._rediscover_soon.set()
                return "unknown"
            try:
                owner_namespace = namespace if resource.namespaced else None
                live = await self.client.get(
                    resource, ref.get("name") or "", namespace=owner_namespace
                )
            except NotFoundError:
                return "dangling"
            if (live.get("metadata") or {}).get("uid") != uid:
                return "dangling"
            owner = live
        if _deleting(owner) and _has_finalizer(owner, FINALIZER_FOREGROUND):
            return "waiting"
        return "solid"

    # -- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        action, group, version, plural, namespace, name, uid = key.split("|")
        informer = self._informers.get((group, version, plural))
        if informer is None:
            return
        item = _Item(action, informer.resource, namespace, name, uid)
        obj = self._current(item)
        if obj is None:
            self._unknown_tries.pop(key, None)
            return
        if action == ACTION_DELETE:
            await self._attempt_to_delete(item, obj)
        elif action == ACTION_ORPHAN:
            await self._orphan_dependents(item, obj)
        elif action == ACTION_FOREGROUND:
            await self._process_foreground(item, obj)

    async def _attempt_to_delete(self, item: _Item, obj: dict[str, Any]) -> None:
        if _deleting(obj):
            if _has_finalizer(obj, FINALIZER_FOREGROUND):
                self._enqueue(ACTION_FOREGROUND, item.resource, obj)
            return
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        if not refs:
            return
        solid: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        dangling: list[dict[str, Any]] = []
        unknown: list[dict[str, Any]] = []
        for ref in refs:
            state = await self._owner_state(ref, item.namespace)
            groups = {"solid": solid, "waiting": waiting, "dangling": dangling, "unknown": unknown}
            groups[state].append(ref)
        if unknown:
            # Back off per object: a kind that is never served costs little.
            tries = self._unknown_tries.get(item.key(), 0)
            self._unknown_tries[item.key()] = tries + 1
            delay_s = min(UNKNOWN_KIND_RETRY_S * 2**tries, UNKNOWN_KIND_MAX_RETRY_S)
            self.queue.add_after(item.key(), delay_s)
            solid.extend(unknown)
        else:
            self._unknown_tries.pop(item.key(), None)
        if solid:
            if not waiting and not dangling:
                return
            # Keep the object; drop the references that would block or mislead.
            drop = {ref.get("uid") for ref in waiting + dangling}
            await self._patch_owner_refs(item, obj, drop)
            log.debug(
                "garbagecollector: %s %s: removed references to owners %s",
                item.resource.plural,
                _key(item),
                sorted(u for u in drop if u),
            )
            return
        if waiting and self._dependents(item.uid):
            policy = "Foreground"  # its own dependents must go before it, and before its owner
        elif _has_finalizer(obj, FINALIZER_ORPHAN):
            policy = "Orphan"
        elif _has_finalizer(obj, FINALIZER_FOREGROUND):
            policy = "Foreground"
        else:
            policy = "Background"
        try:
            await self.client.delete(
                item.resource,
                item.name,
                namespace=item.namespace or None,
                propagation_policy=policy,
                precondition_uid=item.uid,
            )
        except (NotFoundError, ConflictError):
            return  # gone already, or replaced by a newer object of the same name
        log.debug(
            "garbagecollector: deleted %s %s (owners gone; propagation %s)",
            item.resource.plural,
            _key(item),
            policy,
        )

    async def _orphan_dependents(self, item: _Item, owner: dict[str, Any]) -> None:
        if not (_deleting(owner) and _has_finalizer(owner, FINALIZER_ORPHAN)):
            return
        for dep_resource, dependent in self._dependents(item.uid):
            meta = dependent.get("metadata") or {}
            dep_item = _Item(
                ACTION_DELETE, dep_resource, meta.get("namespace") or "", meta["name"], meta["uid"]
            )
            try:
                await self._patch_owner_refs(dep_item, dependent, {item.uid})
            except NotFoundError:
                continue
            log.debug("garbagecollector: orphaned %s %s", dep_resource.plural, _key(dep_item))
        await self._remove_finalizer(item, owner, FINALIZER_ORPHAN)

    async def _process_foreground(self, item: _Item, owner: dict[str, Any]) -> None:
        if not (_deleting(owner) and _has_finalizer(owner, FINALIZER_FOREGROUND)):
            return
        dependents = self._dependents(item.uid)
        blocking = [
            (resource, dep)
            for resource, dep in dependents
            if any(
                ref.get("uid") == item.uid and ref.get("blockOwnerDeletion")
                for ref in (dep.get("metadata") or {}).get("ownerReferences") or []
            )
        ]
        if not blocking:
            await self._remove_finalizer(item, owner, FINALIZER_FOREGROUND)
            return
        for resource, dep in dependents:
            if not _deleting(dep) or _has_finalizer(dep, FINALIZER_FOREGROUND):
                self._enqueue(ACTION_DELETE, resource, dep)

    # -- writes ------------------------------------------------------------------------------

    async def _patch_owner_refs(self, item: _Item, obj: dict[str, Any], drop: set[Any]) -> None:
        meta = obj.get("metadata") or {}
        refs = [ref for ref in meta.get("ownerReferences") or [] if ref.get("uid") not in drop]
        patch = {
            "metadata": {
                "uid": item.uid,
                "resourceVersion": meta.get("resourceVersion"),
                "ownerReferences": refs or None,
            }
        }
        await self.client.patch(
            item.resource,
            item.name,
            patch,
            namespace=item.namespace or None,
            patch_type=PatchType.MERGE,
        )

    async def _remove_finalizer(self, item: _Item, obj: dict[str, Any], finalizer: str) -> None:
        meta = obj.get("metadata") or {}
        finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
        patch = {
            "metadata": {
                "uid": item.uid,
                "resourceVersion": meta.get("resourceVersion"),
                "finalizers": finalizers or None,
            }
        }
        try:
            await self.client.patch(
                item.resource,
                item.name,
                patch,
                namespace=item.namespace or None,
                patch_type=PatchType.MERGE,
            )
        except NotFoundError:
            return
        log.debug(
            "garbagecollector: removed finalizer %s from %s %s",
            finalizer,
            item.resource.plural,
            _key(item),
        )


def _key(item: _Item) -> str:
    return f"{item.namespace}/{item.name}" if item.namespace else item.name
