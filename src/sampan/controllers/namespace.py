"""Namespace controller: empties a terminating namespace, then finalizes it.

This module owns the ``kubernetes`` finalizer in ``Namespace.spec.finalizers``. When a
namespace has a deletionTimestamp and still carries that finalizer, the controller:

1. discovers every namespaced resource the API server serves (core, groups, custom
   resources) that can be listed and deleted — preferred version of each group only;
2. deletes the namespace's pods first (workloads stop before what they use), then every other
   kind: ``deletecollection`` where served, else list and delete one by one (Background
   propagation, as upstream);
3. lists again: what is left (objects still terminating, held by finalizers, or created
   meanwhile) is counted, and the namespace's conditions say so — the five upstream types
   ``NamespaceDeletionDiscoveryFailure``, ``NamespaceDeletionGroupVersionParsingFailure``,
   ``NamespaceDeletionContentFailure``, ``NamespaceContentRemaining``,
   ``NamespaceFinalizersRemaining`` with upstream's reasons and messages;
4. if anything is left, tries again after half the longest remaining pod grace period plus
   one second (as upstream's estimate); otherwise removes ``kubernetes`` from
   ``spec.finalizers`` through the ``namespaces/<name>/finalize`` subresource. The API server
   then deletes the namespace once no finalizer remains.

Invariants: only terminating namespaces are touched; the controller never removes another
finalizer; objects from the informer cache are never modified (fresh reads are used).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sampan.api import times
from sampan.client import ClientError, NotFoundError
from sampan.client.api import NAMESPACES, PODS, ConflictError, Resource
from sampan.controllers.base import ControllerContext, QueueController

__all__ = [
    "FINALIZER_KUBERNETES",
    "NamespaceController",
    "NamespacedResource",
    "discover_namespaced_resources",
]

log = logging.getLogger(__name__)

FINALIZER_KUBERNETES = "kubernetes"
# Retry when content is left and no pod grace period says how long it will take.
MIN_RETRY_S = 1.0
# Retry when discovery or a delete failed.
ERROR_RETRY_S = 5.0
PROPAGATION = "Background"

COND_DISCOVERY = "NamespaceDeletionDiscoveryFailure"
COND_PARSING = "NamespaceDeletionGroupVersionParsingFailure"
COND_CONTENT_FAILURE = "NamespaceDeletionContentFailure"
COND_CONTENT_REMAINING = "NamespaceContentRemaining"
COND_FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"
CONDITION_ORDER = (
    COND_DISCOVERY,
    COND_PARSING,
    COND_CONTENT_FAILURE,
    COND_CONTENT_REMAINING,
    COND_FINALIZERS_REMAINING,
)
# (status, reason, message) when all is well, per condition type.
_OK: dict[str, tuple[str, str]] = {
    COND_DISCOVERY: ("ResourcesDiscovered", "All resources successfully discovered"),
    COND_PARSING: ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    COND_CONTENT_FAILURE: (
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    COND_CONTENT_REMAINING: ("ContentRemoved", "All content successfully removed"),
    COND_FINALIZERS_REMAINING: (
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
}


@dataclass(frozen=True)
class NamespacedResource:
    """One namespaced resource found by discovery."""

    resource: Resource
    can_delete_collection: bool


async def discover_namespaced_resources(
    client: Any,
) -> tuple[list[NamespacedResource], list[str]]:
    """Every namespaced, listable, deletable resource (preferred version per group), and the
    group versions whose discovery failed."""
    found: list[NamespacedResource] = []
    failed: list[str] = []
    group_versions: list[tuple[str, str]] = []
    core = await client.request("GET", "/api")
    for version in (core or {}).get("versions") or ["v1"]:
        group_versions.append(("", version))
        break  # the core group has one version
    groups = await client.request("GET", "/apis")
    for group in (groups or {}).get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("version")
        if not preferred:
            versions = group.get("versions") or []
            preferred = versions[0]["version"] if versions else None
        if preferred:
            group_versions.append((group.get("name") or "", preferred))

    async def one(group: str, version: str) -> None:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await client.request("GET", path)
        except ClientError as exc:
            failed.append(f"{group or 'core'}/{version}: {exc}")
            return
        for entry in (listing or {}).get("resources") or []:
            name = entry.get("name") or ""
            verbs = set(entry.get("verbs") or [])
            if "/" in name or not entry.get("namespaced"):
                continue
            if "list" not in verbs or not verbs & {"delete", "deletecollection"}:
                continue
            found.append(
                NamespacedResource(
                    Resource(group, version, name, entry.get("kind") or "", True),
                    "deletecollection" in verbs,
                )
            )

    await asyncio.gather(*(one(g, v) for g, v in group_versions))
    found.sort(key=lambda r: (r.resource.plural != "pods", r.resource.group, r.resource.plural))
    return found, sorted(failed)


@dataclass
class _Remaining:
    """What a deletion pass left behind."""

    counts: dict[str, int] = field(default_factory=dict)  # "pods." / "widgets.example.com"
    finalizers: dict[str, int] = field(default_factory=dict)  # finalizer -> objects
    delete_failures: list[str] = field(default_factory=list)
    estimate_s: float = 0.0


class NamespaceController(QueueController):
    """Deletes what a terminating namespace holds, then removes the ``kubernetes`` finalizer."""

    name = "namespace"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.namespaces = self.watch(ctx.informers.informer(NAMESPACES))
        self.namespaces.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda _old, new: self._enqueue(new),
        )

    def _enqueue(self, namespace: dict[str, Any]) -> None:
        meta = namespace.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            self.queue.add(meta["name"])

    async def reconcile(self, key: str) -> None:
        cached = self.namespaces.cache.get(key)
        if cached is None or not (cached.get("metadata") or {}).get("deletionTimestamp"):
            return
        try:
            namespace = await self.client.get(NAMESPACES, key)
        except NotFoundError:
            return
        if not (namespace.get("metadata") or {}).get("deletionTimestamp"):
            return
        if FINALIZER_KUBERNETES not in ((namespace.get("spec") or {}).get("finalizers") or []):
            return
        namespace = await self._ensure_terminating(namespace)

        resources, discovery_failures = await discover_namespaced_resources(self.client)
        remaining = await self._delete_content(key, resources)
        conditions = _conditions(discovery_failures, remaining)
        namespace = await self._set_conditions(namespace, conditions)

        if discovery_failures or remaining.delete_failures:
            log.debug("namespace %s: deletion incomplete; retrying", key)
            self.queue.add_after(key, ERROR_RETRY_S)
            return
        if remaining.counts:
            delay_s = max(MIN_RETRY_S, remaining.estimate_s / 2 + 1)
            log.debug(
                "namespace %s: content remaining %s; retry in %.0fs", key, remaining.counts, delay_s
            )
            self.queue.add_after(key, delay_s)
            return
        await self._finalize(namespace)

    async def _ensure_terminating(self, namespace: dict[str, Any]) -> dict[str, Any]:
        if (namespace.get("status") or {}).get("phase") == "Terminating":
            return namespace
        body = copy.deepcopy(namespace)
        body.setdefault("status", {})["phase"] = "Terminating"
        return await self.client.update_status(NAMESPACES, body)

    async def _delete_content(
        self, namespace: str, resources: Iterable[NamespacedResource]
    ) -> _Remaining:
        remaining = _Remaining()
        for entry in resources:
            resource = entry.resource
            label = f"{resource.plural}.{resource.group}"
            try:
                await self._delete_all(namespace, entry)
                listing = await self.client.list(resource, namespace=namespace)
            except NotFoundError:
                continue  # the resource went away (a CRD deleted meanwhile)
            except ClientError as exc:
                remaining.delete_failures.append(f"{label}: {exc}")
                continue
            items = listing.get("items") or []
            if not items:
                continue
            remaining.counts[label] = len(items)
            for item in items:
                meta = item.get("metadata") or {}
                for finalizer in meta.get("finalizers") or []:
                    remaining.finalizers[finalizer] = remaining.finalizers.get(finalizer, 0) + 1
                if resource == PODS:
                    remaining.estimate_s = max(remaining.estimate_s, _grace_left_s(meta))
        return remaining

    async def _delete_all(self, namespace: str, entry: NamespacedResource) -> None:
        resource = entry.resource
        if entry.can_delete_collection:
            await self.client.delete_collection(
                resource, namespace=namespace, propagation_policy=PROPAGATION
            )
            log.debug("namespace %s: deletecollection %s", namespace, resource.plural)
            return
        listing = await self.client.list(resource, namespace=namespace)
        for item in listing.get("items") or []:
            meta = item.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            try:
                await self.client.delete(
                    resource, meta["name"], namespace=namespace, propagation_policy=PROPAGATION
                )
            except NotFoundError:
                pass
            log.debug("namespace %s: deleted %s/%s", namespace, resource.plural, meta["name"])

    async def _set_conditions(
        self, namespace: dict[str, Any], wanted: dict[str, tuple[str, str, str]]
    ) -> dict[str, Any]:
        status = namespace.get("status") or {}
        current = {c.get("type"): c for c in status.get("conditions") or []}
        now = times.now()
        merged: list[dict[str, Any]] = []
        changed = False
        for kind in CONDITION_ORDER:
            cond_status, reason, message = wanted[kind]
            old = current.pop(kind, None)
            if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
                cond_status,
                reason,
                message,
            ):
                merged.append(old)
                continue
            changed = True
            transition = now
            if old is not None and old.get("status") == cond_status:
                transition = old.get("lastTransitionTime") or now
            merged.append(
                {
                    "type": kind,
                    "status": cond_status,
                    "lastTransitionTime": transition,
                    "reason": reason,
                    "message": message,
                }
            )
        merged.extend(current.values())
        if not changed:
            return namespace
        body = copy.deepcopy(namespace)
        body.setdefault("status", {})["conditions"] = merged
        try:
            return await self.client.update_status(NAMESPACES, body)
        except ConflictError:
            # Someone wrote it meanwhile: read again; the next pass writes the conditions.
            return await self.client.get(NAMESPACES, namespace["metadata"]["name"])

    async def _finalize(self, namespace: dict[str, Any]) -> None:
        name = namespace["metadata"]["name"]
        spec_finalizers = (namespace.get("spec") or {}).get("finalizers") or []
        body = copy.deepcopy(namespace)
        body.setdefault("spec", {})["finalizers"] = [
            f for f in spec_finalizers if f != FINALIZER_KUBERNETES
        ]
        try:
            await self.client.request(
                "PUT", NAMESPACES.path(name=name, subresource="finalize"), body=body
            )
        except NotFoundError:
            return
        log.debug("namespace %s: content removed; finalized", name)


def _grace_left_s(meta: dict[str, Any]) -> float:
    grace = meta.get("deletionGracePeriodSeconds")
    return float(grace) if isinstance(grace, int | float) and grace > 0 else 0.0


def _conditions(
    discovery_failures: list[str], remaining: _Remaining
) -> dict[str, tuple[str, str, str]]:
    """The five conditions as (status, reason, message) from one deletion pass."""
    result = {kind: ("False", *_OK[kind]) for kind in CONDITION_ORDER}
    if discovery_failures:
        result[COND_DISCOVERY] = (
            "True",
            "DiscoveryFailed",
            f"Discovery failed for some groups, {len(discovery_failures)} failing: "
            + ", ".join(discovery_failures),
        )
    if remaining.delete_failures:
        result[COND_CONTENT_FAILURE] = (
            "True",
            "ContentDeletionFailed",
            f"Failed to delete all resource types, {len(remaining.delete_failures)} remaining: "
            + ", ".join(remaining.delete_failures),
        )
    if remaining.counts:
        result[COND_CONTENT_REMAINING] = (
            "True",
            "SomeResourcesRemain",
            "Some resources are remaining: "
            + ", ".join(
                f"{label} has {count} resource instances"
                for label, count in sorted(remaining.counts.items())
            ),
        )
    if remaining.finalizers:
        result[COND_FINALIZERS_REMAINING] = (
            "True",
            "SomeFinalizersRemain",
            "Some content in the namespace has finalizers remaining: "
            + ", ".join(
                f"{name} in {count} resource instances"
                for name, count in sorted(remaining.finalizers.items())
            ),
        )
    return result
