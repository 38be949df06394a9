"""``CRDController``: the API server's own loop that turns CustomResourceDefinitions into served
resources, as apiextensions-apiserver's controllers do.

For every CRD (level-triggered: each change to any CRD reconciles them all, oldest first):

* names: the CRD's plural/singular/kind/listKind/short names must not clash with an older
  CRD of the same group (nor with a built-in resource) -> ``NamesAccepted``;
* accepted CRDs get their served versions registered in the ResourceRegistry (discovery and
  the handlers see them at once), their schemas in OpenAPI, and their request-path facts in
  ``CustomResources``; then ``Established``; ``status.acceptedNames`` and
  ``status.storedVersions`` are kept up to date;
* the ``customresourcecleanup.apiextensions.k8s.io`` finalizer is added, so that deleting a
  CRD marks it first; a marked CRD gets ``Terminating``, refuses new objects, has all its
  objects deleted (retried until they are gone: objects may have finalizers of their own),
  and only then loses the finalizer, which lets the store delete it;
* a CRD that no longer exists is unregistered.

Tasks: ``crd-watch`` (turns CRD watch events into a wake-up) and ``crd-reconcile`` (the loop);
both are named, log their failures and are cancelled by ``stop``. ``start`` reconciles once
before returning, so CRDs that already exist are served before the server reports ready.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from sampan.api import times
from sampan.api.errors import Conflict, NotFound, StatusError
from sampan.api.resources import ResourceInfo, ResourceRegistry
from sampan.apiserver.crd.model import (
    CRD_FINALIZER,
    ServedVersion,
    accepted_names,
    crd_names,
    served_versions,
    storage_version_name,
)
from sampan.apiserver.crd.support import CustomResources
from sampan.apiserver.storage import DeleteOptions, Storage
from sampan.datastore import StoreError
from sampan.tasks import log_task_end

__all__ = [
    "CLEANUP_RETRY_S",
    "CRDController",
    "SchemaRegistry",
]

log = logging.getLogger(__name__)

CLEANUP_RETRY_S = 1.0
"""How soon a terminating CRD whose objects are not all gone is looked at again."""
ERROR_BACKOFF_MIN_S = 0.2
ERROR_BACKOFF_MAX_S = 5.0
CRD_GROUP = "apiextensions.k8s.io"

JSONObj = dict[str, Any]


class SchemaRegistry(Protocol):
    """The OpenAPI side (``sampan.apiserver.openapi.OpenAPI``)."""

    def add_crd(
        self, group: str, version: str, kind: str, schema: dict[str, Any] | None
    ) -> None: ...

    def remove_crd(self, group: str, version: str, kind: str) -> None: ...


def _now() -> str:
    return times.now()


def _condition(type_: str, status: str, reason: str, message: str) -> JSONObj:
    return {
        "type": type_,
        "status": status,
        "lastTransitionTime": _now(),
        "reason": reason,
        "message": message,
    }


def _set_condition(conditions: list[JSONObj], new: JSONObj) -> None:
    """Replace the condition of new's type, keeping lastTransitionTime when status is the same."""
    for i, old in enumerate(conditions):
        if old.get("type") == new["type"]:
            if old.get("status") == new["status"]:
                new = {
                    **new,
                    "lastTransitionTime": old.get("lastTransitionTime", new["lastTransitionTime"]),
                }
            conditions[i] = new
            return
    conditions.append(new)


def _names_in_use(crd: Mapping[str, Any]) -> set[str]:
    names = crd_names(crd)
    used = {str(names.get("plural") or ""), str(names.get("singular") or "")}
    used.update(str(s) for s in names.get("shortNames") or ())
    return {u for u in used if u}


def _kinds_in_use(crd: Mapping[str, Any]) -> set[str]:
    names = crd_names(crd)
    return {str(names.get("kind") or ""), str(names.get("listKind") or "")} - {""}


class CRDController:
    """See the module docstring. Build it after the storage started; ``start``/``stop``."""

    def __init__(
        self,
        storage: Storage,
        registry: ResourceRegistry,
        custom: CustomResources,
        schemas: SchemaRegistry | None = None,
    ) -> None:
        self._storage = storage
        self._registry = registry
        self._custom = custom
        self._schemas = schemas
        info = registry.by_resource(CRD_GROUP, "v1", "customresourcedefinitions")
        assert info is not None
        self._crd_store = storage.for_resource(info)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._registered: dict[str, list[ServedVersion]] = {}
        self._builtin_keys = {(i.group, i.plural) for i in registry.all()}

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._storage.wait_ready()
        try:
            await self.reconcile_all()
        except (StatusError, StoreError) as exc:
            log.warning("initial CRD reconcile failed (%s); retrying in the background", exc)
            self._wake.set()
        for name, coro in (("crd-watch", self._watch()), ("crd-reconcile", self._loop())):
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(log_task_end)
            self._tasks.append(task)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- loops ------------------------------------------------------------------------------

    async def _watch(self) -> None:
        backoff_s = ERROR_BACKOFF_MIN_S
        resource_version = ""
        while True:
            try:
                events = self._crd_store.watch(None, resource_version=resource_version)
                async for event in events:
                    backoff_s = ERROR_BACKOFF_MIN_S
                    if event.type != "BOOKMARK":
                        self._wake.set()
                resource_version = ""  # the stream ended: start over from a fresh list
            except (StatusError, StoreError) as exc:
                log.debug("CRD watch ended (%s); watching again", exc)
                resource_version = ""
            self._wake.set()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, ERROR_BACKOFF_MAX_S)

    async def _loop(self) -> None:
        backoff_s = ERROR_BACKOFF_MIN_S
        retry_s: float | None = None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), retry_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                pending = await self.reconcile_all()
                backoff_s = ERROR_BACKOFF_MIN_S
                retry_s = CLEANUP_RETRY_S if pending else None
            except (StatusError, StoreError) as exc:
                log.warning("reconciling CRDs failed: %s; retrying in %.1fs", exc, backoff_s)
                retry_s = backoff_s
                backoff_s = min(backoff_s * 2, ERROR_BACKOFF_MAX_S)

    # --- reconcile --------------------------------------------------------------------------

    async def reconcile_all(self) -> bool:
        """One pass over every CRD; True when some CRD needs another look soon (its objects
        are not all gone yet, or a write failed)."""
        crds = sorted(
            self._crd_store.cached_objects(None),
            key=lambda c: (
                str((c.get("metadata") or {}).get("creationTimestamp") or ""),
                str((c.get("metadata") or {}).get("name") or ""),
            ),
        )
        pending = False
        seen: set[str] = set()
        taken_names: dict[str, set[str]] = {}
        taken_kinds: dict[str, set[str]] = {}
        for crd in crds:
            name = str((crd.get("metadata") or {}).get("name") or "")
            seen.add(name)
            group = str((crd.get("spec") or {}).get("group") or "")
            conflict = self._name_conflict(
                crd, taken_names.setdefault(group, set()), taken_kinds.setdefault(group, set())
            )
            if conflict is None:
                taken_names[group] |= _names_in_use(crd)
                taken_kinds[group] |= _kinds_in_use(crd)
            try:
                if await self._reconcile(crd, name, conflict):
                    pending = True
            except (NotFound, Conflict) as exc:
                log.debug("CRD %s changed while reconciling (%s); again soon", name, exc)
                self._wake.set()
            except (StatusError, StoreError) as exc:
                # One CRD that cannot be reconciled must not hold the others back.
                log.warning("reconciling CRD %s failed: %s; retrying", name, exc)
                pending = True
        for name in list(self._registered):
            if name not in seen:
                self._unregister(name)
        return pending

    def _name_conflict(
        self, crd: Mapping[str, Any], names: set[str], kinds: set[str]
    ) -> str | None:
        spec = crd.get("spec") or {}
        group = str(spec.get("group") or "")
        plural = str(crd_names(crd).get("plural") or "")
        if (group, plural) in self._builtin_keys:
            return f'"{plural}" is already in use'
        for used in sorted(_names_in_use(crd)):
            if used in names:
                return f'"{used}" is already in use'
        for used in sorted(_kinds_in_use(crd)):
            if used in kinds:
                return f'"{used}" is already in use'
        return None

    async def _reconcile(self, crd: JSONObj, name: str, conflict: str | None) -> bool:
        metadata = crd.get("metadata") or {}
        terminating = bool(metadata.get("deletionTimestamp"))
        if conflict is None:
            self._register(name, served_versions(crd))
        self._custom.set_terminating(name, terminating)
        await self._update_status(crd, name, conflict, terminating)
        if terminating:
            if CRD_FINALIZER not in (metadata.get("finalizers") or []):
                return False
            if not await self._delete_objects(name, crd):
                return True
            await self._remove_finalizer(name)
            return False
        if CRD_FINALIZER not in (metadata.get("finalizers") or []):
            await self._add_finalizer(name)
        return False

    # --- registry ---------------------------------------------------------------------------

    def _register(self, name: str, versions: list[ServedVersion]) -> None:
        old = self._registered.get(name, [])
        if name in self._registered and old == versions:
            return
        new_keys = {(v.info.group, v.info.version, v.info.plural) for v in versions}
        for version in old:
            info = version.info
            if (info.group, info.version, info.plural) not in new_keys:
                self._registry.remove(info.group, info.version, info.plural)
                if self._schemas is not None:
                    self._schemas.remove_crd(info.group, info.version, info.kind)
        for version in versions:
            self._registry.add(version.info)
            if self._schemas is not None:
                self._schemas.add_crd(
                    version.info.group, version.info.version, version.info.kind, version.schema
                )
        self._custom.set_crd(name, versions)
        self._registered[name] = versions
        if versions:
            # Make sure the cache of the storage resource exists (and is loading) now.
            self._storage.for_resource(self._storage_info(versions))
        log.info(
            "serving custom resource %s (%s)",
            name,
            ", ".join(v.info.version for v in versions) or "no versions",
        )

    def _unregister(self, name: str) -> None:
        for version in self._registered.pop(name, []):
            info = version.info
            current = self._registry.by_resource(info.group, info.version, info.plural)
            if current == info:
                self._registry.remove(info.group, info.version, info.plural)
            if self._schemas is not None:
                self._schemas.remove_crd(info.group, info.version, info.kind)
        self._custom.remove_crd(name)
        log.info("stopped serving custom resource %s", name)

    def _storage_info(self, versions: list[ServedVersion]) -> ResourceInfo:
        for version in versions:
            if version.info.api_version == version.info.storage_version:
                return version.info
        return versions[0].info

    # --- writes -----------------------------------------------------------------------------

    async def _update_status(
        self, crd: JSONObj, name: str, conflict: str | None, terminating: bool
    ) -> None:
        def mutate(current: JSONObj) -> JSONObj:
            status = current.get("status")
            if not isinstance(status, dict):
                status = current["status"] = {}
            conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
            if conflict is None:
                status["acceptedNames"] = accepted_names(current)
                _set_condition(
                    conditions,
                    _condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                )
                _set_condition(
                    conditions,
                    _condition(
                        "Established",
                        "True",
                        "InitialNamesAccepted",
                        "the initial names have been accepted",
                    ),
                )
            else:
                _set_condition(
                    conditions, _condition("NamesAccepted", "False", "NameConflict", conflict)
                )
                established = any(
                    c.get("type") == "Established" and c.get("status") == "True" for c in conditions
                )
                if not established:
                    _set_condition(
                        conditions,
                        _condition(
                            "Established", "False", "NotAccepted", "not all names are accepted"
                        ),
                    )
            if terminating:
                _set_condition(
                    conditions,
                    _condition(
                        "Terminating",
                        "True",
                        "InstanceDeletionInProgress",
                        "CustomResource deletion is in progress",
                    ),
                )
            status["conditions"] = conditions
            stored = [str(v) for v in status.get("storedVersions") or []]
            storage = storage_version_name(current)
            if storage and storage not in stored:
                stored.append(storage)
            status["storedVersions"] = stored
            return current

        if mutate(copy.deepcopy(crd)) == crd:
            return
        await self._crd_store.guaranteed_update(None, name, mutate, subresource="status")

    async def _add_finalizer(self, name: str) -> None:
        def mutate(current: JSONObj) -> JSONObj:
            meta = current.setdefault("metadata", {})
            finalizers = list(meta.get("finalizers") or [])
            if CRD_FINALIZER not in finalizers and not meta.get("deletionTimestamp"):
                finalizers.append(CRD_FINALIZER)
                meta["finalizers"] = finalizers
            return current

        await self._crd_store.guaranteed_update(None, name, mutate)

    async def _remove_finalizer(self, name: str) -> None:
        def mutate(current: JSONObj) -> JSONObj:
            meta = current.setdefault("metadata", {})
            finalizers = [f for f in meta.get("finalizers") or [] if f != CRD_FINALIZER]
            if finalizers:
                meta["finalizers"] = finalizers
            else:
                meta.pop("finalizers", None)
            return current

        await self._crd_store.guaranteed_update(None, name, mutate)
        log.info("custom resource definition %s: every object deleted", name)

    async def _delete_objects(self, name: str, crd: JSONObj) -> bool:
        """Delete every object of the CRD; True when none is left."""
        versions = self._registered.get(name) or served_versions(crd)
        if not versions:
            return True
        store = self._storage.for_resource(self._storage_info(versions))
        await store.delete_collection(None, options=DeleteOptions())
        page = await store.list(None, limit=1)
        return not page.items
