"""The StatefulSet controller: pods with stable names, ordinals and storage.

This module owns the reconcile of ``apps/v1`` StatefulSets. Per set key:

* **Identity**: pod ``<set>-<ordinal>`` for ordinals ``start .. start+replicas-1``
  (``spec.ordinals.start``, default 0), hostname = pod name, subdomain = ``serviceName``,
  labels ``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index`` and
  ``controller-revision-hash``.
* **Storage**: for every ``volumeClaimTemplates`` entry, the claim ``<claim>-<set>-<ordinal>``
  is created before its pod and mounted in place of a same-named volume. Claims are kept when
  pods go (``persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`` makes the set own them
  so the garbage collector removes them with the set; ``whenScaled: Delete`` makes a pod
  removed by a scale-down own its claims, so they go with it).
* **Revisions** (``history``): the pod template is recorded as ControllerRevisions;
  ``status.updateRevision`` is the current template's, ``status.currentRevision`` the one the
  set fully ran before. A pod's revision is its ``controller-revision-hash`` label.
* **OrderedReady** (default): create pods in ordinal order, each after the previous one is
  Running and Ready; remove surplus pods from the highest ordinal, one at a time, only while
  the others are healthy. **Parallel**: create and delete without waiting.
* **RollingUpdate**: pods with ordinal >= ``partition`` whose revision is not the update
  revision are deleted from the highest ordinal down, one at a time, each after the set is
  healthy again; they are recreated at the update revision. **OnDelete**: pods are replaced
  only when a user deletes them. Failed pods are deleted and recreated.
* **Status**: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
  currentRevision, updateRevision, observedGeneration, collisionCount.

Events: SuccessfulCreate / SuccessfulDelete ("create Pod web-0 in StatefulSet web successful"),
FailedCreate. Pod names are deterministic, so a stale cache can only make a create fail with
AlreadyExists (treated as "wait"), never produce a second pod.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.client.api import (
    CONTROLLERREVISIONS,
    PODS,
    PVCS,
    STATEFULSETS,
    AlreadyExistsError,
    NotFoundError,
)
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import INDEX_NAMESPACE, INDEX_OWNER_UID, object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.history import (
    CONTROLLER_REVISION_HASH_LABEL,
    bump_revision,
    ensure_revision,
    find_equal,
    next_revision_number,
    revision_data,
    truncate_history,
)
from sampan.controllers.podcontrol import (
    INDEX_CONTROLLER,
    claim,
    claim_candidates,
    controller_of,
    index_controller,
    is_pod_available,
    is_pod_ready,
    owner_reference,
    pod_from_template,
    wall_now,
)

__all__ = [
    "POD_INDEX_LABEL",
    "POD_NAME_LABEL",
    "StatefulSetController",
    "ordinal_of",
]

log = logging.getLogger(__name__)

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"

Obj = dict[str, Any]


def ordinal_of(set_name: str, pod_name: str) -> int | None:
    """The ordinal of ``<set_name>-<n>`` (None for any other name)."""
    match = re.fullmatch(re.escape(set_name) + r"-(\d+)", pod_name)
    return int(match.group(1)) if match else None


def _running_ready(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and is_pod_ready(pod)


def _revision_of(pod: Mapping[str, Any]) -> str:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(CONTROLLER_REVISION_HASH_LABEL, "")


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _failed(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def _template_of(revision: Mapping[str, Any]) -> Obj:
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


class StatefulSetController(QueueController):
    """See the module docstring."""

    name = "statefulset"
    component = "statefulset-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = self.watch(ctx.informers.informer(STATEFULSETS))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.pods.add_indexers({INDEX_CONTROLLER: index_controller})
        self.revisions = self.watch(ctx.informers.informer(CONTROLLERREVISIONS))
        self.claims = self.watch(ctx.informers.informer(PVCS))
        self.recorder = ctx.recorder(self.component)
        self.sets.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue,
        )
        self.pods.add_event_handler(
            on_add=self._pod_event,
            on_update=self._pod_updated,
            on_delete=self._pod_event,
        )
        self.revisions.add_event_handler(on_delete=self._pod_event)

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _pod_event(self, pod: Mapping[str, Any]) -> None:
        ref = controller_of(pod)
        meta = pod.get("metadata") or {}
        if ref is not None:
            if ref.get("kind") == "StatefulSet":
                self.queue.add(f"{meta.get('namespace')}/{ref.get('name')}")
            return
        labels = meta.get("labels") or {}
        for owner in self.sets.cache.by_index(INDEX_NAMESPACE, meta.get("namespace") or ""):
            try:
                selector = selector_from_label_selector((owner.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if selector.matches(labels):
                self._enqueue(owner)

    def _pod_updated(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if controller_of(old) != controller_of(new):
            self._pod_event(old)
        self._pod_event(new)
        if is_pod_ready(new) and not is_pod_ready(old):
            ref = controller_of(new)
            if ref is not None and ref.get("kind") == "StatefulSet":
                key = f"{new['metadata'].get('namespace')}/{ref.get('name')}"
                owner = self.sets.cache.get(key) or {}
                min_ready_s = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
                if min_ready_s:
                    self.queue.add_after(key, min_ready_s + 0.5)

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.sets.cache.get(key)
        if cached is None:
            return
        sts = copy.deepcopy(cached)
        meta = sts["metadata"]
        namespace = meta["namespace"]
        name = meta["name"]
        spec = sts.get("spec") or {}
        try:
            selector = selector_from_label_selector(spec.get("selector"))
        except SelectorError as exc:
            log.warning("statefulset %s: invalid selector: %s", key, exc)
            return
        pods = await claim(
            self.ctx.client,
            PODS,
            sts,
            STATEFULSETS.api_version,
            "StatefulSet",
            selector,
            claim_candidates(self.pods.cache, sts),
            match=lambda p: (
                ordinal_of(name, (p.get("metadata") or {}).get("name") or "") is not None
            ),
        )
        revisions = await claim(
            self.ctx.client,
            CONTROLLERREVISIONS,
            sts,
            STATEFULSETS.api_version,
            "StatefulSet",
            selector,
            self.revisions.cache.by_index(INDEX_NAMESPACE, namespace),
        )
        status = copy.deepcopy(sts.get("status") or {})
        current_rev, update_rev, revisions = await self._revisions(sts, status, revisions)
        now = wall_now(self.ctx.clock)
        if not meta.get("deletionTimestamp"):
            await self._update_pods(sts, pods, current_rev, update_rev, now)
            pods = [
                p
                for p in self.pods.cache.by_index(INDEX_OWNER_UID, meta["uid"])
                if (controller_of(p) or {}).get("uid") == meta["uid"]
            ]
        self._fill_status(sts, status, pods, current_rev, update_rev, now)
        if status != (sts.get("status") or {}):
            body = copy.deepcopy(sts)
            body["status"] = status
            try:
                await self.ctx.client.update_status(STATEFULSETS, body, namespace=namespace)
            except NotFoundError:
                return
        in_use = {current_rev["metadata"]["name"], update_rev["metadata"]["name"]}
        in_use |= {f"{name}-{_revision_of(p)}" for p in pods if _revision_of(p)}
        await truncate_history(
            self.ctx.client, revisions, in_use, int(spec.get("revisionHistoryLimit") or 10)
        )

    async def _revisions(
        self, sts: Obj, status: Obj, revisions: list[Obj]
    ) -> tuple[Obj, Obj, list[Obj]]:
        spec = sts.get("spec") or {}
        data = revision_data(spec.get("template") or {})
        number = next_revision_number(revisions)
        update = find_equal(revisions, data)
        if update is None:
            labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
            update, collisions = await ensure_revision(
                self.ctx.client,
                sts,
                "StatefulSet",
                data,
                number,
                int(status.get("collisionCount") or 0),
                labels,
            )
            status["collisionCount"] = collisions
            revisions = [*revisions, update]
        else:
            newest = max(int(r.get("revision") or 0) for r in revisions)
            if int(update.get("revision") or 0) < newest:
                # the template went back to an old revision (rollback): it becomes the newest
                update = await bump_revision(self.ctx.client, update, newest + 1)
                revisions = [
                    r for r in revisions if r["metadata"]["uid"] != update["metadata"]["uid"]
                ]
                revisions.append(update)
        current_name = status.get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), None)
        return current or update, update, revisions

    def _new_pod(self, sts: Obj, ordinal: int, revision: Obj) -> Obj:
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        pod_name = f"{name}-{ordinal}"
        hash_value = revision["metadata"]["labels"].get(CONTROLLER_REVISION_HASH_LABEL) or revision[
            "metadata"
        ]["name"].removeprefix(f"{name}-")
        pod = pod_from_template(
            _template_of(revision),
            sts,
            STATEFULSETS.api_version,
            "StatefulSet",
            name=pod_name,
            extra_labels={
                POD_NAME_LABEL: pod_name,
                POD_INDEX_LABEL: str(ordinal),
                CONTROLLER_REVISION_HASH_LABEL: hash_value,
            },
        )
        pod_spec = pod["spec"]
        pod_spec["hostname"] = pod_name
        if spec.get("serviceName"):
            pod_spec["subdomain"] = spec["serviceName"]
        volumes = [v for v in pod_spec.get("volumes") or ()]
        for claim_template in spec.get("volumeClaimTemplates") or ():
            claim_name = (claim_template.get("metadata") or {}).get("name")
            volumes = [v for v in volumes if v.get("name") != claim_name]
            volumes.append(
                {
                    "name": claim_name,
                    "persistentVolumeClaim": {"claimName": f"{claim_name}-{pod_name}"},
                }
            )
        if volumes:
            pod_spec["volumes"] = volumes
        return pod

    async def _ensure_claims(self, sts: Obj, ordinal: int) -> None:
        spec = sts.get("spec") or {}
        namespace = sts["metadata"]["namespace"]
        pod_name = f"{sts['metadata']['name']}-{ordinal}"
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        for claim_template in spec.get("volumeClaimTemplates") or ():
            cmeta = claim_template.get("metadata") or {}
            claim_name = f"{cmeta.get('name')}-{pod_name}"
            if self.claims.cache.get_by_name(claim_name, namespace) is not None:
                continue
            body: Obj = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim_name,
                    "namespace": namespace,
                    "labels": {
                        **(cmeta.get("labels") or {}),
                        **((spec.get("selector") or {}).get("matchLabels") or {}),
                    },
                },
                "spec": copy.deepcopy(claim_template.get("spec") or {}),
            }
            if cmeta.get("annotations"):
                body["metadata"]["annotations"] = dict(cmeta["annotations"])
            if retention.get("whenDeleted") == "Delete":
                ref = owner_reference(sts, STATEFULSETS.api_version, "StatefulSet")
                ref["controller"] = False
                body["metadata"]["ownerReferences"] = [ref]
            try:
                await self.ctx.client.create(PVCS, body, namespace=namespace)
            except AlreadyExistsError:
                continue
            except Exception as exc:
                self.recorder.event(
                    sts,
                    TYPE_WARNING,
                    "FailedCreate",
                    f"create Claim {claim_name} for Pod {pod_name} in StatefulSet "
                    f"{sts['metadata']['name']} failed error: {exc}",
                )
                raise
            self.recorder.event(
                sts,
                TYPE_NORMAL,
                "SuccessfulCreate",
                f"create Claim {claim_name} Pod {pod_name} in StatefulSet "
                f"{sts['metadata']['name']} success",
            )

    async def _claims_follow_pod(self, sts: Obj, pod: Obj) -> None:
        """``whenScaled: Delete``: a condemned pod owns its claims, so they go with it."""
        spec = sts.get("spec") or {}
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        if retention.get("whenScaled") != "Delete" or _terminating(pod):
            return
        namespace = sts["metadata"]["namespace"]
        pod_uid = pod["metadata"]["uid"]
        for claim_template in spec.get("volumeClaimTemplates") or ():
            claim_name = (
                f"{(claim_template.get('metadata') or {}).get('name')}-{pod['metadata']['name']}"
            )
            claim = self.claims.cache.get_by_name(claim_name, namespace)
            if claim is None:
                continue
            refs = [dict(r) for r in claim["metadata"].get("ownerReferences") or ()]
            if any(r.get("uid") == pod_uid for r in refs):
                continue
            refs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod_uid,
                }
            )
            patch = {
                "metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": claim["metadata"]["resourceVersion"],
                }
            }
            try:
                await self.ctx.client.patch(PVCS, claim_name, patch, namespace=namespace)
            except NotFoundError:
                continue
            log.debug("statefulset %s: claim %s now owned by its pod", object_key(sts), claim_name)

    async def _create_pod(self, sts: Obj, ordinal: int, revision: Obj) -> bool:
        """Create the pod of ``ordinal``; False if it already exists (the cache lags)."""
        await self._ensure_claims(sts, ordinal)
        pod = self._new_pod(sts, ordinal, revision)
        namespace = sts["metadata"]["namespace"]
        set_name = sts["metadata"]["name"]
        try:
            await self.ctx.client.create(PODS, pod, namespace=namespace)
        except AlreadyExistsError:
            return False
        except Exception as exc:
            self.recorder.event(
                sts,
                TYPE_WARNING,
                "FailedCreate",
                f"create Pod {pod['metadata']['name']} in StatefulSet {set_name} "
                f"failed error: {exc}",
            )
            raise
        log.debug("statefulset %s/%s: created pod %s", namespace, set_name, pod["metadata"]["name"])
        self.recorder.event(
            sts,
            TYPE_NORMAL,
            "SuccessfulCreate",
            f"create Pod {pod['metadata']['name']} in StatefulSet {set_name} successful",
        )
        return True

    async def _delete_pod(self, sts: Obj, pod: Obj) -> None:
        namespace = sts["metadata"]["namespace"]
        pod_name = pod["metadata"]["name"]
        try:
            await self.ctx.client.delete(
                PODS, pod_name, namespace=namespace, precondition_uid=pod["metadata"]["uid"]
            )
        except NotFoundError:
            return
        log.debug("statefulset %s: deleted pod %s", object_key(sts), pod_name)
        self.recorder.event(
            sts,
            TYPE_NORMAL,
            "SuccessfulDelete",
            f"delete Pod {pod_name} in StatefulSet {sts['metadata']['name']} successful",
        )

    async def _update_pods(
        self, sts: Obj, pods: list[Obj], current_rev: Obj, update_rev: Obj, now: datetime
    ) -> None:
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        replicas = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
        start = int((spec.get("ordinals") or {}).get("start") or 0)
        parallel = spec.get("podManagementPolicy") == "Parallel"
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        min_ready_s = int(spec.get("minReadySeconds") or 0)
        update_hash = update_rev["metadata"]["labels"].get(CONTROLLER_REVISION_HASH_LABEL, "")
        current_hash = current_rev["metadata"]["labels"].get(CONTROLLER_REVISION_HASH_LABEL, "")
        by_ordinal: dict[int, Obj] = {}
        for pod in pods:
            ordinal = ordinal_of(name, pod["metadata"]["name"])
            if ordinal is not None:
                by_ordinal[ordinal] = pod
        wanted = range(start, start + replicas)
        condemned = sorted((o for o in by_ordinal if o not in wanted), reverse=True)

        # 1. create missing pods and replace failed ones, in order
        for ordinal in wanted:
            pod = by_ordinal.get(ordinal)
            if pod is not None and _failed(pod) and not _terminating(pod):
                await self._delete_pod(sts, pod)
                if not parallel:
                    return
                continue
            if pod is None:
                use_current = (rolling and ordinal - start < partition) or (
                    not rolling
                    and ordinal - start < int((sts.get("status") or {}).get("currentReplicas") or 0)
                )
                revision = current_rev if use_current and current_hash else update_rev
                await self._create_pod(sts, ordinal, revision)
                if not parallel:
                    return
                continue
            if not parallel and (
                _terminating(pod)
                or not _running_ready(pod)
                or not is_pod_available(pod, min_ready_s, now)
            ):
                return  # OrderedReady: wait for this one

        # 2. scale down from the highest ordinal
        if condemned:
            for ordinal in condemned:
                await self._claims_follow_pod(sts, by_ordinal[ordinal])
            if parallel:
                await asyncio.gather(
                    *(
                        self._delete_pod(sts, by_ordinal[o])
                        for o in condemned
                        if not _terminating(by_ordinal[o])
                    )
                )
                return
            healthy = all(
                _running_ready(p) and not _terminating(p)
                for o, p in by_ordinal.items()
                if o in wanted
            )
            target = by_ordinal[condemned[0]]
            if _terminating(target) or not healthy:
                return
            await self._delete_pod(sts, target)
            return

        # 3. rolling update: highest ordinal first, one at a time, from a healthy set
        if not rolling:
            return
        for ordinal in wanted:
            pod = by_ordinal.get(ordinal)
            if pod is None or _terminating(pod) or not _running_ready(pod):
                return
        for ordinal in sorted(wanted, reverse=True):
            if ordinal - start < partition:
                break
            pod = by_ordinal[ordinal]
            if _revision_of(pod) != update_hash:
                await self._delete_pod(sts, pod)
                return

    def _fill_status(
        self,
        sts: Obj,
        status: Obj,
        pods: list[Obj],
        current_rev: Obj,
        update_rev: Obj,
        now: datetime,
    ) -> None:
        spec = sts.get("spec") or {}
        min_ready_s = int(spec.get("minReadySeconds") or 0)
        update_hash = update_rev["metadata"]["labels"].get(CONTROLLER_REVISION_HASH_LABEL, "")
        current_hash = current_rev["metadata"]["labels"].get(CONTROLLER_REVISION_HASH_LABEL, "")
        live = [p for p in pods if not _terminating(p)]
        replicas = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
        status["observedGeneration"] = sts["metadata"].get("generation", 0)
        status["replicas"] = len(live)
        status["readyReplicas"] = sum(1 for p in live if _running_ready(p))
        status["availableReplicas"] = sum(
            1 for p in live if _running_ready(p) and is_pod_available(p, min_ready_s, now)
        )
        status["updatedReplicas"] = sum(1 for p in live if _revision_of(p) == update_hash)
        status["currentReplicas"] = sum(1 for p in live if _revision_of(p) == current_hash)
        status["updateRevision"] = update_rev["metadata"]["name"]
        status["currentRevision"] = current_rev["metadata"]["name"]
        if (
            status["updatedReplicas"] == replicas
            and status["readyReplicas"] == replicas
            and len(live) == replicas
        ):
            status["currentRevision"] = status["updateRevision"]
            status["currentReplicas"] = status["updatedReplicas"]
        status.setdefault("collisionCount", 0)
        for field in ("readyReplicas", "availableReplicas", "updatedReplicas", "currentReplicas"):
            if not status[field]:
                del status[field]
