"""The ReplicaSet and ReplicationController controllers: keep ``spec.replicas`` pods running.

This module owns the reconcile of ``apps/v1`` ReplicaSets and ``v1`` ReplicationControllers
(one implementation, two kinds; they differ only in their selector's shape). Per owner key:

1. Claim pods (``podcontrol.claim``): adopt active orphans the selector matches, release owned
   pods that no longer match.
2. If the owner's expectations are met (its informer saw the previous batch) and the owner is
   not being deleted: create the missing pods (slow start; at most ``BURST_REPLICAS`` per
   sync) or delete the surplus, chosen by ``podcontrol.deletion_rank`` (unassigned, then
   pending, then not ready, then the newest).
3. Write the status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas
   (ready for ``minReadySeconds``), observedGeneration, and the ReplicaFailure condition when
   a create or delete failed. A pod that is ready but not yet available requeues the owner for
   when it will be.

Events (on the owner): SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete.
Informer handlers only enqueue; cached objects are never mutated.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

from sampan.api.labels import (
    Selector,
    SelectorError,
    selector_from_label_selector,
    selector_from_set,
)
from sampan.client.api import (
    PODS,
    REPLICASETS,
    REPLICATIONCONTROLLERS,
    ConflictError,
    NotFoundError,
    Resource,
)
from sampan.client.informer import INDEX_NAMESPACE, object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import (
    INDEX_CONTROLLER,
    Expectations,
    PodControl,
    SlowStartError,
    claim,
    claim_candidates,
    controller_of,
    deletion_rank,
    index_controller,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    pod_from_template,
    ready_since,
    set_condition,
    siblings_per_node,
    slow_start,
    wall_now,
)

__all__ = [
    "BURST_REPLICAS",
    "ReplicaSetController",
    "ReplicationControllerController",
    "replicaset_status",
]

log = logging.getLogger(__name__)

BURST_REPLICAS = 500
"""At most this many pods are created or deleted in one sync (upstream's burstReplicas)."""

Obj = dict[str, Any]


def replicaset_status(
    owner: Mapping[str, Any], pods: list[Obj], now: Any, error: tuple[str, str] | None = None
) -> Obj:
    """The status an owner should have for its (claimed, active) ``pods``."""
    spec = owner.get("spec") or {}
    min_ready_s = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    status = copy.deepcopy(owner.get("status") or {})
    status["replicas"] = len(pods)
    status["fullyLabeledReplicas"] = sum(
        1
        for p in pods
        if all(
            ((p.get("metadata") or {}).get("labels") or {}).get(k) == v
            for k, v in template_labels.items()
        )
    )
    status["readyReplicas"] = sum(1 for p in pods if is_pod_ready(p))
    status["availableReplicas"] = sum(1 for p in pods if is_pod_available(p, min_ready_s, now))
    status["observedGeneration"] = (owner.get("metadata") or {}).get("generation", 0)
    if error is not None:
        set_condition(status, "ReplicaFailure", "True", error[0], error[1], now)
    elif status.get("conditions"):
        status["conditions"] = [
            c for c in status["conditions"] if c.get("type") != "ReplicaFailure"
        ]
        if not status["conditions"]:
            del status["conditions"]
    return status


class _ReplicaController(QueueController):
    """The shared reconcile of ReplicaSets and ReplicationControllers."""

    resource: Resource = REPLICASETS
    component = "replicaset-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.owners = self.watch(ctx.informers.informer(self.resource))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.pods.add_indexers({INDEX_CONTROLLER: index_controller})
        self.expectations = Expectations(ctx.clock)
        self.recorder = ctx.recorder(self.component)
        self.pod_control = PodControl(ctx.client, self.recorder)
        self.owners.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._owner_deleted,
        )
        self.pods.add_event_handler(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )

    # -- selectors ------------------------------------------------------------------------

    def selector(self, owner: Mapping[str, Any]) -> Selector:
        return selector_from_label_selector((owner.get("spec") or {}).get("selector"))

    # -- handlers (enqueue only) ----------------------------------------------------------

    def _enqueue(self, owner: Mapping[str, Any]) -> None:
        self.queue.add(object_key(owner))

    def _owner_deleted(self, owner: Mapping[str, Any]) -> None:
        key = object_key(owner)
        self.expectations.forget(key)
        self.queue.add(key)

    def _owner_key_of(self, pod: Mapping[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != self.resource.kind:
            return None
        namespace = (pod.get("metadata") or {}).get("namespace")
        owner = self.owners.cache.get_by_name(ref.get("name") or "", namespace)
        if owner is None or (owner.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None
        return object_key(owner)

    def _enqueue_matching_owners(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        for owner in self.owners.cache.by_index(INDEX_NAMESPACE, meta.get("namespace") or ""):
            try:
                if self.selector(owner).matches(labels):
                    self._enqueue(owner)
            except SelectorError:
                continue

    def _pod_added(self, pod: Obj) -> None:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        key = self._owner_key_of(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)
        elif controller_of(pod) is None:
            self._enqueue_matching_owners(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
        if old_meta.get("resourceVersion") == new_meta.get("resourceVersion"):
            return
        if new_meta.get("deletionTimestamp") and not old_meta.get("deletionTimestamp"):
            self._pod_deleted(new)
            return
        old_ref, new_ref = controller_of(old), controller_of(new)
        if old_ref != new_ref and old_ref is not None:
            old_key = self._owner_key_of(old)
            if old_key is not None:
                self.queue.add(old_key)
        key = self._owner_key_of(new)
        if key is not None:
            self.queue.add(key)
            owner = self.owners.cache.get(key) or {}
            min_ready_s = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
            if min_ready_s > 0 and is_pod_ready(new) and not is_pod_ready(old):
                self.queue.add_after(key, float(min_ready_s) + 1.0)
        elif new_ref is None and (
            old_meta.get("labels") != new_meta.get("labels") or old_ref is not None
        ):
            self._enqueue_matching_owners(new)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key_of(pod)
        if key is None:
            ref = controller_of(pod)
            if ref is None or ref.get("kind") != self.resource.kind:
                return
            namespace = (pod.get("metadata") or {}).get("namespace")
            key = f"{namespace}/{ref.get('name')}"
        self.expectations.deletion_observed(key, object_key(pod))
        self.queue.add(key)

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.owners.cache.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        try:
            selector = self.selector(cached)
        except SelectorError as exc:
            log.warning("%s %s: invalid selector: %s", self.resource.kind, key, exc)
            return
        namespace = cached["metadata"]["namespace"]
        satisfied = self.expectations.satisfied(key)
        candidates = [p for p in claim_candidates(self.pods.cache, cached) if is_pod_active(p)]
        pods = await claim(
            self.ctx.client,
            PODS,
            cached,
            self.resource.api_version,
            self.resource.kind,
            selector,
            candidates,
            can_adopt=lambda: self._fresh_owner_alive(cached),
        )
        error: tuple[str, str] | None = None
        failure: BaseException | None = None
        if satisfied and not cached["metadata"].get("deletionTimestamp"):
            try:
                await self._manage(key, cached, pods)
            except (SlowStartError, Exception) as exc:
                failure = exc
                reason = "FailedCreate" if isinstance(exc, SlowStartError) else "FailedDelete"
                error = (reason, str(exc))
        now = wall_now(self.ctx.clock)
        status = replicaset_status(cached, pods, now, error)
        if status != (cached.get("status") or {}):
            body = copy.deepcopy(cached)
            body["status"] = status
            try:
                await self.ctx.client.update_status(self.resource, body, namespace=namespace)
            except NotFoundError:
                return
            except ConflictError:
                log.debug("%s %s: status conflict; retrying", self.resource.kind, key)
                raise
        if failure is not None:
            raise failure
        min_ready_s = int((cached.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready_s > 0 and status.get("readyReplicas") != status.get("availableReplicas"):
            self.queue.add_after(key, self._next_available_s(pods, min_ready_s, now))

    @staticmethod
    def _next_available_s(pods: list[Obj], min_ready_s: int, now: Any) -> float:
        waits = []
        for pod in pods:
            since = ready_since(pod)
            if since is not None and not is_pod_available(pod, min_ready_s, now):
                waits.append(min_ready_s - (now - since).total_seconds())
        return max(0.5, min(waits) if waits else float(min_ready_s))

    async def _fresh_owner_alive(self, cached: Mapping[str, Any]) -> bool:
        meta = cached["metadata"]
        try:
            fresh = await self.ctx.client.get(
                self.resource, meta["name"], namespace=meta["namespace"]
            )
        except NotFoundError:
            return False
        fmeta = fresh.get("metadata") or {}
        return fmeta.get("uid") == meta.get("uid") and not fmeta.get("deletionTimestamp")

    async def _manage(self, key: str, owner: Obj, pods: list[Obj]) -> None:
        namespace = owner["metadata"]["namespace"]
        wanted = int((owner.get("spec") or {}).get("replicas") or 0)
        diff = len(pods) - wanted
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            template = (owner.get("spec") or {}).get("template") or {}
            self.expectations.expect(key, adds=count)
            log.debug("%s %s: creating %d pods", self.resource.kind, key, count)

            async def create(_: int) -> None:
                body = pod_from_template(
                    template, owner, self.resource.api_version, self.resource.kind
                )
                try:
                    await self.pod_control.create(namespace, body, owner)
                except BaseException:
                    self.expectations.creations_failed(key, 1)
                    raise

            try:
                await slow_start(count, create)
            except SlowStartError as exc:
                skipped = count - exc.attempted
                if skipped > 0:
                    self.expectations.creations_failed(key, skipped)
                raise
        elif diff > 0:
            count = min(diff, BURST_REPLICAS)
            ranks = siblings_per_node(pods)
            victims = sorted(pods, key=lambda p: deletion_rank(p, ranks))[:count]
            victim_keys = [object_key(p) for p in victims]
            self.expectations.expect(key, deletes=victim_keys)
            log.debug("%s %s: deleting %d pods", self.resource.kind, key, count)

            async def delete(pod: Obj) -> None:
                try:
                    await self.pod_control.delete(namespace, pod["metadata"]["name"], owner)
                except BaseException:
                    self.expectations.deletion_observed(key, object_key(pod))
                    raise

            results = await asyncio.gather(*(delete(p) for p in victims), return_exceptions=True)
            for result in results:
                if isinstance(result, asyncio.CancelledError):
                    raise result
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise errors[0]


class ReplicaSetController(_ReplicaController):
    """``apps/v1`` ReplicaSets (see the module docstring)."""

    name = "replicaset"
    resource = REPLICASETS
    component = "replicaset-controller"


class ReplicationControllerController(_ReplicaController):
    """``v1`` ReplicationControllers: a ReplicaSet whose selector is a plain label map."""

    name = "replicationcontroller"
    resource = REPLICATIONCONTROLLERS
    component = "replication-controller"

    def selector(self, owner: Mapping[str, Any]) -> Selector:
        labels = (owner.get("spec") or {}).get("selector")
        if not labels:
            return Selector.nothing()
        return selector_from_set(labels)
