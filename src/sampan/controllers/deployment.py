"""The Deployment controller: roll pod templates out through ReplicaSets.

This module owns the reconcile of ``apps/v1`` Deployments. A Deployment never touches pods: it
creates one ReplicaSet per distinct pod template (named ``<deployment>-<pod-template-hash>``,
the hash also added to the ReplicaSet's selector and template labels) and scales ReplicaSets.

Per Deployment key (level-triggered, idempotent):

* Claim ReplicaSets (adopt matching orphans, release non-matching ones).
* Revisions: the new ReplicaSet (template equal to the Deployment's, ignoring the hash label)
  gets ``deployment.kubernetes.io/revision`` = 1 + the highest old revision; a ReplicaSet that
  becomes new again (``kubectl rollout undo``) gives up its old number, kept in
  ``deployment.kubernetes.io/revision-history``. The Deployment carries the new revision too.
  ``desired-replicas`` and ``max-replicas`` annotations record the size each ReplicaSet was
  scaled for (proportional scaling reads them).
* Paused: only scaling and history cleanup; the Progressing condition says DeploymentPaused.
* A change of ``spec.replicas`` while several ReplicaSets are active scales them
  proportionally (leftovers to the largest), as upstream.
* RollingUpdate: scale the new ReplicaSet up to ``replicas + maxSurge`` total pods (surge
  rounded up, unavailability rounded down, both 0 -> maxUnavailable 1); scale old ones down,
  unhealthy replicas first, never below ``replicas - maxUnavailable`` available pods.
* Recreate: scale every old ReplicaSet to 0, wait until their pods are gone, then create and
  scale up the new one.
* Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
  observedGeneration, collisionCount; conditions Available (MinimumReplicasAvailable /
  MinimumReplicasUnavailable) and Progressing (NewReplicaSetCreated, FoundNewReplicaSet,
  ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded, DeploymentPaused,
  DeploymentResumed). A rollout in progress requeues itself for its progress deadline.
* Old ReplicaSets scaled to zero beyond ``revisionHistoryLimit`` are deleted, oldest first.

Events: ScalingReplicaSet ("Scaled up replica set X from 0 to 3"), SelectingAll.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.client.api import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
)
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import INDEX_NAMESPACE, INDEX_OWNER_UID, object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import (
    claim,
    condition,
    controller_of,
    format_time,
    is_terminal,
    owner_reference,
    parse_time,
    scaled_value,
    template_hash,
    wall_now,
)

__all__ = [
    "ANNOTATION_DESIRED_REPLICAS",
    "ANNOTATION_MAX_REPLICAS",
    "ANNOTATION_REVISION",
    "ANNOTATION_REVISION_HISTORY",
    "POD_TEMPLATE_HASH_LABEL",
    "DeploymentController",
    "max_unavailable",
    "new_rs_replicas",
    "resolve_fenceposts",
]

log = logging.getLogger(__name__)

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
ANNOTATION_REVISION = "deployment.kubernetes.io/revision"
ANNOTATION_REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
ANNOTATION_DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
ANNOTATION_MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        ANNOTATION_REVISION,
        ANNOTATION_REVISION_HISTORY,
        ANNOTATION_DESIRED_REPLICAS,
        ANNOTATION_MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)

PROGRESSING = "Progressing"
AVAILABLE = "Available"
REASON_NEW_RS_CREATED = "NewReplicaSetCreated"
REASON_FOUND_NEW_RS = "FoundNewReplicaSet"
REASON_RS_UPDATED = "ReplicaSetUpdated"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_TIMED_OUT = "ProgressDeadlineExceeded"
REASON_PAUSED = "DeploymentPaused"
REASON_RESUMED = "DeploymentResumed"
REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Pure arithmetic (upstream's deployment util)


def _replicas(obj: Mapping[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("replicas") or 0)


def _status(obj: Mapping[str, Any], field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def _annotation_int(obj: Mapping[str, Any], name: str) -> int | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _revision(rs: Mapping[str, Any]) -> int:
    return _annotation_int(rs, ANNOTATION_REVISION) or 0


def resolve_fenceposts(deployment: Mapping[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts: surge rounded up, unavailable down; if both
    are zero, maxUnavailable is 1 (a rollout must be able to move)."""
    spec = deployment.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    desired = _replicas(deployment)
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(deployment: Mapping[str, Any]) -> int:
    """Pods that may be unavailable during a rolling update (never more than replicas)."""
    spec = deployment.get("spec") or {}
    if (spec.get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    desired = _replicas(deployment)
    if desired == 0:
        return 0
    return min(resolve_fenceposts(deployment)[1], desired)


def max_surge(deployment: Mapping[str, Any]) -> int:
    return resolve_fenceposts(deployment)[0]


def new_rs_replicas(deployment: Mapping[str, Any], all_rss: list[Obj], new_rs: Obj) -> int:
    """The size the new ReplicaSet should be scaled to now (upstream's NewRSNewReplicas)."""
    strategy = ((deployment.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
    desired = _replicas(deployment)
    if strategy != "RollingUpdate":
        return desired
    current_pods = sum(_replicas(rs) for rs in all_rss)
    max_total = desired + max_surge(deployment)
    if current_pods >= max_total:
        return _replicas(new_rs)
    scale_up = min(max_total - current_pods, desired - _replicas(new_rs))
    return _replicas(new_rs) + max(0, scale_up)


def _template_without_hash(template: Mapping[str, Any]) -> Obj:
    copied = copy.deepcopy(dict(template))
    labels = (copied.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return copied


def _created(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("name") or "")


def _set_dcond(
    status: Obj,
    cond_type: str,
    cond_status: str,
    reason: str,
    message: str,
    now: datetime,
    *,
    force: bool = False,
) -> None:
    """Set a Deployment condition (both timestamps, as upstream). Same status and reason ->
    unchanged unless ``force`` (then lastUpdateTime moves, lastTransitionTime stays)."""
    stamp = format_time(now)
    conditions: list[Obj] = status.setdefault("conditions", [])
    for index, cond in enumerate(conditions):
        if cond.get("type") != cond_type:
            continue
        if cond.get("status") == cond_status and cond.get("reason") == reason and not force:
            return
        transition = cond.get("lastTransitionTime") if cond.get("status") == cond_status else stamp
        conditions[index] = {
            "type": cond_type,
            "status": cond_status,
            "lastUpdateTime": stamp,
            "lastTransitionTime": transition or stamp,
            "reason": reason,
            "message": message,
        }
        return
    conditions.append(
        {
            "type": cond_type,
            "status": cond_status,
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }
    )


# ---------------------------------------------------------------------------------------------
# Controller


class DeploymentController(QueueController):
    """See the module docstring."""

    name = "deployment"
    component = "deployment-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.deployments = self.watch(ctx.informers.informer(DEPLOYMENTS))
        self.replicasets = self.watch(ctx.informers.informer(REPLICASETS))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.recorder = ctx.recorder(self.component)
        self.deployments.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue,
        )
        self.replicasets.add_event_handler(
            on_add=self._rs_changed,
            on_update=self._rs_updated,
            on_delete=self._rs_changed,
        )
        self.pods.add_event_handler(on_delete=self._pod_deleted)

    # -- handlers ---------------------------------------------------------------------------

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _owner_key(self, rs: Mapping[str, Any]) -> str | None:
        ref = controller_of(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        return f"{(rs.get('metadata') or {}).get('namespace')}/{ref.get('name')}"

    def _rs_changed(self, rs: Mapping[str, Any]) -> None:
        key = self._owner_key(rs)
        if key is not None:
            self.queue.add(key)
            return
        if controller_of(rs) is not None:
            return
        meta = rs.get("metadata") or {}
        labels = meta.get("labels") or {}
        for deployment in self.deployments.cache.by_index(
            INDEX_NAMESPACE, meta.get("namespace") or ""
        ):
            try:
                selector = selector_from_label_selector(
                    (deployment.get("spec") or {}).get("selector")
                )
            except SelectorError:
                continue
            if not selector.empty and selector.matches(labels):
                self._enqueue(deployment)

    def _rs_updated(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if controller_of(old) != controller_of(new):
            self._rs_changed(old)
        self._rs_changed(new)

    def _pod_deleted(self, pod: Mapping[str, Any]) -> None:
        # Recreate waits for old pods to be gone: a deleted pod may unblock its Deployment.
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        namespace = (pod.get("metadata") or {}).get("namespace")
        rs = self.replicasets.cache.get_by_name(ref.get("name") or "", namespace)
        if rs is not None:
            key = self._owner_key(rs)
            if key is not None:
                self.queue.add(key)

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.deployments.cache.get(key)
        if cached is None:
            log.debug("deployment %s deleted", key)
            return
        d = copy.deepcopy(cached)
        namespace = d["metadata"]["namespace"]
        now = wall_now(self.ctx.clock)
        try:
            selector = selector_from_label_selector((d.get("spec") or {}).get("selector"))
        except SelectorError as exc:
            log.warning("deployment %s: invalid selector: %s", key, exc)
            return
        if selector.empty:
            self.recorder.event(
                d,
                TYPE_WARNING,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            if _status(d, "observedGeneration") < d["metadata"].get("generation", 0):
                status = dict(d.get("status") or {})
                status["observedGeneration"] = d["metadata"].get("generation", 0)
                await self._write_status(d, status)
            return
        candidates = self.replicasets.cache.by_index(INDEX_NAMESPACE, namespace)
        rss = await claim(
            self.ctx.client,
            REPLICASETS,
            d,
            DEPLOYMENTS.api_version,
            "Deployment",
            selector,
            candidates,
            can_adopt=lambda: self._fresh_alive(d),
        )
        if d["metadata"].get("deletionTimestamp"):
            await self._sync_status(d, rss, now)
            return
        await self._check_paused(d, now)
        spec = d.get("spec") or {}
        if spec.get("paused") or self._is_scaling_event(d, rss):
            await self._sync(d, rss, now)
            return
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            await self._rollout_recreate(d, rss, now)
        else:
            await self._rollout_rolling(d, rss, now)

    async def _fresh_alive(self, d: Mapping[str, Any]) -> bool:
        meta = d["metadata"]
        try:
            fresh = await self.ctx.client.get(
                DEPLOYMENTS, meta["name"], namespace=meta["namespace"]
            )
        except NotFoundError:
            return False
        fmeta = fresh.get("metadata") or {}
        return fmeta.get("uid") == meta.get("uid") and not fmeta.get("deletionTimestamp")

    # -- new / old replica sets -------------------------------------------------------------

    def _split(self, d: Obj, rss: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        template = _template_without_hash((d.get("spec") or {}).get("template") or {})
        new_rs: Obj | None = None
        for rs in sorted(rss, key=_created):
            if _template_without_hash((rs.get("spec") or {}).get("template") or {}) == template:
                new_rs = rs
                break
        olds = [rs for rs in rss if rs is not new_rs]
        return new_rs, olds

    async def _new_and_old(
        self, d: Obj, rss: list[Obj], now: datetime, *, create: bool
    ) -> tuple[Obj | None, list[Obj]]:
        """Find (or create) the new ReplicaSet and sync revision annotations."""
        new_rs, olds = self._split(d, rss)
        max_old = max((_revision(rs) for rs in olds), default=0)
        new_revision = max_old + 1
        namespace = d["metadata"]["namespace"]
        if new_rs is not None:
            updated = copy.deepcopy(new_rs)
            changed = self._set_rs_annotations(d, updated, new_revision)
            min_ready = (d.get("spec") or {}).get("minReadySeconds") or 0
            if (updated.get("spec") or {}).get("minReadySeconds", 0) != min_ready:
                updated["spec"]["minReadySeconds"] = min_ready
                changed = True
            if changed:
                new_rs = await self.ctx.client.update(REPLICASETS, updated, namespace=namespace)
            status = copy.deepcopy(d.get("status") or {})
            if condition(d, PROGRESSING) is None and self._has_deadline(d):
                _set_dcond(
                    status,
                    PROGRESSING,
                    "True",
                    REASON_FOUND_NEW_RS,
                    f'Found new replica set "{new_rs["metadata"]["name"]}"',
                    now,
                )
                await self._write_status(d, status)
            await self._sync_revision_annotation(d, _revision(new_rs))
            return new_rs, olds
        if not create:
            return None, olds
        new_rs = await self._create_new_rs(d, rss, olds, new_revision, now)
        return new_rs, olds

    def _set_rs_annotations(
        self, d: Obj, rs: Obj, new_revision: int, *, sizes: bool = False
    ) -> bool:
        meta = rs.setdefault("metadata", {})
        annotations = meta.setdefault("annotations", {})
        before = dict(annotations)
        for k, v in ((d.get("metadata") or {}).get("annotations") or {}).items():
            if k not in _NOT_COPIED_ANNOTATIONS:
                annotations[k] = v
        old_revision = _annotation_int(rs, ANNOTATION_REVISION)
        if old_revision is None or old_revision < new_revision:
            annotations[ANNOTATION_REVISION] = str(new_revision)
            if old_revision is not None:
                history = [
                    h for h in annotations.get(ANNOTATION_REVISION_HISTORY, "").split(",") if h
                ]
                history.append(str(old_revision))
                annotations[ANNOTATION_REVISION_HISTORY] = ",".join(history)
        if sizes:
            annotations[ANNOTATION_DESIRED_REPLICAS] = str(_replicas(d))
            annotations[ANNOTATION_MAX_REPLICAS] = str(_replicas(d) + max_surge(d))
        return annotations != before

    async def _create_new_rs(
        self, d: Obj, rss: list[Obj], olds: list[Obj], revision: int, now: datetime
    ) -> Obj:
        spec = d.get("spec") or {}
        namespace = d["metadata"]["namespace"]
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        template = copy.deepcopy(spec.get("template") or {})
        hash_value = template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH_LABEL] = (
            hash_value
        )
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH_LABEL] = hash_value
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{d['metadata']['name']}-{hash_value}",
                "namespace": namespace,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [owner_reference(d, DEPLOYMENTS.api_version, "Deployment")],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": spec.get("minReadySeconds") or 0,
                "selector": selector,
                "template": template,
            },
        }
        rs["spec"]["replicas"] = new_rs_replicas(d, rss, rs)
        self._set_rs_annotations(d, rs, revision, sizes=True)
        try:
            created = await self.ctx.client.create(REPLICASETS, rs, namespace=namespace)
        except AlreadyExistsError:
            existing = await self.ctx.client.get(
                REPLICASETS, rs["metadata"]["name"], namespace=namespace
            )
            ref = controller_of(existing)
            same = _template_without_hash((existing.get("spec") or {}).get("template") or {}) == (
                _template_without_hash(spec.get("template") or {})
            )
            if ref is not None and ref.get("uid") == d["metadata"]["uid"] and same:
                return existing
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = collisions + 1
            await self._write_status(d, status)
            log.debug("deployment %s: hash collision on %s", object_key(d), rs["metadata"]["name"])
            raise
        name = created["metadata"]["name"]
        log.debug("deployment %s: created replica set %s", object_key(d), name)
        replicas = _replicas(created)
        if replicas > 0:
            self.recorder.event(
                d,
                TYPE_NORMAL,
                "ScalingReplicaSet",
                f"Scaled up replica set {name} from 0 to {replicas}",
            )
        if self._has_deadline(d):
            status = copy.deepcopy(d.get("status") or {})
            _set_dcond(
                status,
                PROGRESSING,
                "True",
                REASON_NEW_RS_CREATED,
                f'Created new replica set "{name}"',
                now,
            )
            await self._write_status(d, status)
        await self._sync_revision_annotation(d, revision)
        return created

    async def _sync_revision_annotation(self, d: Obj, revision: int) -> None:
        current = _annotation_int(d, ANNOTATION_REVISION)
        if current == revision:
            return
        meta = d["metadata"]
        patched = await self.ctx.client.patch(
            DEPLOYMENTS,
            meta["name"],
            {
                "metadata": {
                    "annotations": {ANNOTATION_REVISION: str(revision)},
                    "resourceVersion": meta.get("resourceVersion"),
                }
            },
            namespace=meta["namespace"],
        )
        meta["resourceVersion"] = patched["metadata"]["resourceVersion"]
        meta.setdefault("annotations", {})[ANNOTATION_REVISION] = str(revision)

    # -- scaling ----------------------------------------------------------------------------

    async def _scale_rs(self, d: Obj, rs: Obj, size: int) -> tuple[bool, Obj]:
        current = _replicas(rs)
        updated = copy.deepcopy(rs)
        annotations = updated.setdefault("metadata", {}).setdefault("annotations", {})
        before = dict(annotations)
        annotations[ANNOTATION_DESIRED_REPLICAS] = str(_replicas(d))
        annotations[ANNOTATION_MAX_REPLICAS] = str(_replicas(d) + max_surge(d))
        if current == size and annotations == before:
            return False, rs
        updated["spec"]["replicas"] = size
        result = await self.ctx.client.update(
            REPLICASETS, updated, namespace=rs["metadata"]["namespace"]
        )
        if current != size:
            direction = "up" if size > current else "down"
            name = rs["metadata"]["name"]
            log.debug(
                "deployment %s: scaled %s %s %d -> %d",
                object_key(d),
                direction,
                name,
                current,
                size,
            )
            self.recorder.event(
                d,
                TYPE_NORMAL,
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {name} from {current} to {size}",
            )
        return current != size, result

    def _is_scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        for rs in rss:
            if _replicas(rs) <= 0:
                continue
            desired = _annotation_int(rs, ANNOTATION_DESIRED_REPLICAS)
            if desired is not None and desired != _replicas(d):
                return True
        return False

    async def _scale(self, d: Obj, new_rs: Obj | None, olds: list[Obj]) -> None:
        active = [rs for rs in ([new_rs] if new_rs else []) + olds if _replicas(rs) > 0]
        target: Obj | None = None
        if len(active) == 1:
            target = active[0]
        elif not active:
            target = new_rs or (max(olds, key=_created) if olds else None)
        if len(active) <= 1:
            if target is not None and _replicas(target) != _replicas(d):
                await self._scale_rs(d, target, _replicas(d))
            return
        if new_rs is not None and self._saturated(d, new_rs):
            for rs in olds:
                if _replicas(rs) != 0:
                    await self._scale_rs(d, rs, 0)
            return
        strategy = ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
        if strategy != "RollingUpdate":
            return
        desired = _replicas(d)
        allowed = desired + max_surge(d) if desired > 0 else 0
        total = sum(_replicas(rs) for rs in active)
        to_add = allowed - total
        # scaling up: larger first, newer first among equals; down: larger first, older first
        ordered = sorted(active, key=_created, reverse=to_add > 0)
        ordered.sort(key=lambda rs: -_replicas(rs))
        sizes: dict[str, int] = {}
        added = 0
        for rs in ordered:
            proportion = self._proportion(d, rs, to_add, added)
            sizes[rs["metadata"]["name"]] = _replicas(rs) + proportion
            added += proportion
        if ordered and to_add - added != 0:
            first = ordered[0]["metadata"]["name"]
            sizes[first] = max(0, sizes[first] + to_add - added)
        for rs in ordered:
            await self._scale_rs(d, rs, max(0, sizes[rs["metadata"]["name"]]))

    def _proportion(self, d: Obj, rs: Obj, to_add: int, added: int) -> int:
        if to_add == 0 or to_add == added:
            return 0
        desired = _replicas(d)
        if desired == 0:
            fraction = -_replicas(rs)
        else:
            deployment_total = desired + max_surge(d)
            annotated = _annotation_int(rs, ANNOTATION_MAX_REPLICAS) or _status(d, "replicas")
            if annotated <= 0:
                fraction = 0
            else:
                fraction = round(_replicas(rs) * deployment_total / annotated) - _replicas(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def _saturated(self, d: Obj, rs: Obj) -> bool:
        desired = _annotation_int(rs, ANNOTATION_DESIRED_REPLICAS)
        return (
            _replicas(rs) == _replicas(d)
            and desired == _replicas(d)
            and _status(rs, "availableReplicas") == _replicas(d)
        )

    # -- strategies -------------------------------------------------------------------------

    async def _sync(self, d: Obj, rss: list[Obj], now: datetime) -> None:
        """Scaling only (paused deployments and scaling events)."""
        new_rs, olds = await self._new_and_old(d, rss, now, create=False)
        await self._scale(d, new_rs, olds)
        rss = self._current(d)
        new_rs, olds = self._split(d, rss)
        if (d.get("spec") or {}).get("paused"):
            await self._cleanup(d, olds)
        await self._sync_status(d, rss, now, new_rs=new_rs)

    def _current(self, d: Obj) -> list[Obj]:
        """The Deployment's ReplicaSets from the cache (after writes, the cache may lag; the
        next event requeues the key)."""
        return [
            rs
            for rs in self.replicasets.cache.by_index(INDEX_OWNER_UID, d["metadata"]["uid"])
            if (controller_of(rs) or {}).get("uid") == d["metadata"]["uid"]
        ]

    async def _rollout_rolling(self, d: Obj, rss: list[Obj], now: datetime) -> None:
        new_rs, olds = await self._new_and_old(d, rss, now, create=True)
        assert new_rs is not None
        all_rss = [new_rs, *olds]
        desired = _replicas(d)
        scaled = False
        if _replicas(new_rs) > desired:
            scaled, new_rs = await self._scale_rs(d, new_rs, desired)
        elif _replicas(new_rs) < desired:
            size = new_rs_replicas(d, all_rss, new_rs)
            scaled, new_rs = await self._scale_rs(d, new_rs, size)
        if scaled:
            await self._sync_rollout_status(d, [new_rs, *olds], new_rs, now)
            return
        scaled_down = await self._reconcile_olds(d, new_rs, olds)
        if scaled_down:
            await self._sync_rollout_status(d, self._current(d) or [new_rs, *olds], new_rs, now)
            return
        if self._complete(d, self._calculate_status(d, [new_rs, *olds], new_rs, now)):
            await self._cleanup(d, olds)
        await self._sync_rollout_status(d, [new_rs, *olds], new_rs, now)

    async def _reconcile_olds(self, d: Obj, new_rs: Obj, olds: list[Obj]) -> bool:
        old_pods = sum(_replicas(rs) for rs in olds)
        if old_pods == 0:
            return False
        all_pods = old_pods + _replicas(new_rs)
        min_available = _replicas(d) - max_unavailable(d)
        new_unavailable = _replicas(new_rs) - _status(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        olds = sorted(olds, key=_created)
        # 1. unhealthy replicas of old sets first
        cleaned = 0
        remaining_olds: list[Obj] = []
        for rs in olds:
            if cleaned >= max_scaled_down or _replicas(rs) == 0:
                remaining_olds.append(rs)
                continue
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            if unhealthy <= 0:
                remaining_olds.append(rs)
                continue
            down = min(unhealthy, max_scaled_down - cleaned)
            _, rs = await self._scale_rs(d, rs, _replicas(rs) - down)
            cleaned += down
            remaining_olds.append(rs)
        # 2. then available ones, keeping minAvailable
        available = sum(_status(rs, "availableReplicas") for rs in [new_rs, *remaining_olds])
        scaled = 0
        if available > min_available:
            total_down = available - min_available
            for rs in sorted(remaining_olds, key=_created):
                if scaled >= total_down:
                    break
                if _replicas(rs) == 0:
                    continue
                down = min(_replicas(rs), total_down - scaled)
                await self._scale_rs(d, rs, _replicas(rs) - down)
                scaled += down
        return cleaned + scaled > 0

    async def _rollout_recreate(self, d: Obj, rss: list[Obj], now: datetime) -> None:
        new_rs, olds = await self._new_and_old(d, rss, now, create=False)
        scaled_down = False
        for rs in olds:
            if _replicas(rs) != 0:
                changed, _ = await self._scale_rs(d, rs, 0)
                scaled_down = scaled_down or changed
        if scaled_down:
            await self._sync_rollout_status(d, self._current(d) or rss, new_rs, now)
            return
        if self._old_pods_running(olds):
            await self._sync_rollout_status(d, rss, new_rs, now)
            return
        if new_rs is None:
            new_rs, olds = await self._new_and_old(d, rss, now, create=True)
            assert new_rs is not None
        if _replicas(new_rs) != _replicas(d):
            _, new_rs = await self._scale_rs(d, new_rs, _replicas(d))
        all_rss = [new_rs, *olds]
        if self._complete(d, self._calculate_status(d, all_rss, new_rs, now)):
            await self._cleanup(d, olds)
        await self._sync_rollout_status(d, all_rss, new_rs, now)

    def _old_pods_running(self, olds: list[Obj]) -> bool:
        for rs in olds:
            if _status(rs, "replicas") > 0:
                return True
            for pod in self.pods.cache.by_index(INDEX_OWNER_UID, rs["metadata"]["uid"]):
                if not is_terminal(pod):
                    return True
        return False

    async def _cleanup(self, d: Obj, olds: list[Obj]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in olds if not rs["metadata"].get("deletionTimestamp")]
        extra = len(alive) - int(limit)
        if extra <= 0:
            return
        for rs in sorted(alive, key=lambda r: (_revision(r), _created(r)))[:extra]:
            meta = rs["metadata"]
            if (
                _status(rs, "replicas") != 0
                or _replicas(rs) != 0
                or meta.get("generation", 0) > _status(rs, "observedGeneration")
            ):
                continue
            log.debug("deployment %s: deleting old replica set %s", object_key(d), meta["name"])
            try:
                await self.ctx.client.delete(
                    REPLICASETS,
                    meta["name"],
                    namespace=meta["namespace"],
                    precondition_uid=meta["uid"],
                )
            except NotFoundError:
                pass

    # -- status -----------------------------------------------------------------------------

    def _has_deadline(self, d: Obj) -> bool:
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        return deadline is not None and int(deadline) < 2**31 - 1

    def _calculate_status(self, d: Obj, rss: list[Obj], new_rs: Obj | None, now: datetime) -> Obj:
        available = sum(_status(rs, "availableReplicas") for rs in rss)
        total = sum(_replicas(rs) for rs in rss)
        status = copy.deepcopy(d.get("status") or {})
        status.update(
            {
                "observedGeneration": d["metadata"].get("generation", 0),
                "replicas": sum(_status(rs, "replicas") for rs in rss),
                "updatedReplicas": _status(new_rs, "replicas") if new_rs else 0,
                "readyReplicas": sum(_status(rs, "readyReplicas") for rs in rss),
                "availableReplicas": available,
                "unavailableReplicas": max(0, total - available),
            }
        )
        for name in (
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ):
            if not status[name]:
                del status[name]
        # a ReplicaSet that cannot create or delete pods explains it on the Deployment too
        failure = next(
            (
                c
                for rs in ([new_rs] if new_rs else []) + [r for r in rss if r is not new_rs]
                for c in (rs.get("status") or {}).get("conditions") or ()
                if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
            ),
            None,
        )
        if failure is not None:
            _set_dcond(
                status,
                "ReplicaFailure",
                "True",
                failure.get("reason") or "",
                failure.get("message") or "",
                now,
            )
        elif status.get("conditions"):
            status["conditions"] = [
                c for c in status["conditions"] if c.get("type") != "ReplicaFailure"
            ]
        if available >= _replicas(d) - max_unavailable(d):
            _set_dcond(
                status,
                AVAILABLE,
                "True",
                REASON_MIN_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            )
        else:
            _set_dcond(
                status,
                AVAILABLE,
                "False",
                REASON_MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            )
        return status

    def _complete(self, d: Obj, status: Obj) -> bool:
        desired = _replicas(d)
        return (
            int(status.get("updatedReplicas") or 0) == desired
            and int(status.get("replicas") or 0) == desired
            and int(status.get("availableReplicas") or 0) == desired
            and int(status.get("observedGeneration") or 0) >= d["metadata"].get("generation", 0)
        )

    def _progressing(self, d: Obj, new: Obj) -> bool:
        old = d.get("status") or {}

        def n(s: Mapping[str, Any], k: str) -> int:
            return int(s.get(k) or 0)

        return (
            n(new, "updatedReplicas") > n(old, "updatedReplicas")
            or n(new, "replicas") - n(new, "updatedReplicas")
            < n(old, "replicas") - n(old, "updatedReplicas")
            or n(new, "readyReplicas") > n(old, "readyReplicas")
            or n(new, "availableReplicas") > n(old, "availableReplicas")
        )

    async def _sync_status(
        self, d: Obj, rss: list[Obj], now: datetime, *, new_rs: Obj | None = None
    ) -> None:
        if new_rs is None:
            new_rs, _ = self._split(d, rss)
        status = self._calculate_status(d, rss, new_rs, now)
        if status != (d.get("status") or {}):
            await self._write_status(d, status)

    async def _sync_rollout_status(
        self, d: Obj, rss: list[Obj], new_rs: Obj | None, now: datetime
    ) -> None:
        status = self._calculate_status(d, rss, new_rs, now)
        deadline_s = (d.get("spec") or {}).get("progressDeadlineSeconds")
        current = condition(d, PROGRESSING)
        if not self._has_deadline(d):
            status["conditions"] = [
                c for c in status.get("conditions") or () if c.get("type") != PROGRESSING
            ]
        elif (current or {}).get("reason") != REASON_TIMED_OUT:
            rs_name = new_rs["metadata"]["name"] if new_rs else ""
            if self._complete(d, status) and new_rs is not None:
                _set_dcond(
                    status,
                    PROGRESSING,
                    "True",
                    REASON_NEW_RS_AVAILABLE,
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                    now,
                )
            elif self._progressing(d, status):
                _set_dcond(
                    status,
                    PROGRESSING,
                    "True",
                    REASON_RS_UPDATED,
                    f'ReplicaSet "{rs_name}" is progressing.',
                    now,
                    force=True,
                )
            elif self._timed_out(d, now):
                _set_dcond(
                    status,
                    PROGRESSING,
                    "False",
                    REASON_TIMED_OUT,
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                    now,
                )
                self.recorder.event(
                    d,
                    TYPE_WARNING,
                    REASON_TIMED_OUT,
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                )
        if status != (d.get("status") or {}):
            await self._write_status(d, status)
        # requeue a rollout in progress for when its deadline would pass
        cond = next(
            (c for c in status.get("conditions") or () if c.get("type") == PROGRESSING), None
        )
        if (
            deadline_s is not None
            and self._has_deadline(d)
            and cond is not None
            and cond.get("reason") not in (REASON_TIMED_OUT, REASON_NEW_RS_AVAILABLE)
            and not self._complete(d, status)
        ):
            since = parse_time(cond.get("lastUpdateTime")) or now
            after_s = int(deadline_s) - (now - since).total_seconds()
            self.queue.add_after(object_key(d), max(after_s, 0.0) + 0.5)

    def _timed_out(self, d: Obj, now: datetime) -> bool:
        cond = condition(d, PROGRESSING)
        if cond is None:
            return False
        if cond.get("reason") == REASON_TIMED_OUT:
            return True
        if cond.get("reason") == REASON_NEW_RS_AVAILABLE:
            return False
        since = parse_time(cond.get("lastUpdateTime"))
        deadline_s = int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0)
        return since is not None and (now - since).total_seconds() > deadline_s

    async def _check_paused(self, d: Obj, now: datetime) -> None:
        if not self._has_deadline(d):
            return
        cond = condition(d, PROGRESSING)
        paused = bool((d.get("spec") or {}).get("paused"))
        reason = (cond or {}).get("reason")
        status = copy.deepcopy(d.get("status") or {})
        if paused and reason != REASON_PAUSED:
            _set_dcond(status, PROGRESSING, "Unknown", REASON_PAUSED, "Deployment is paused", now)
        elif not paused and reason == REASON_PAUSED:
            _set_dcond(status, PROGRESSING, "Unknown", REASON_RESUMED, "Deployment is resumed", now)
        else:
            return
        await self._write_status(d, status)

    async def _write_status(self, d: Obj, status: Obj) -> None:
        body = copy.deepcopy(d)
        body["status"] = status
        try:
            written = await self.ctx.client.update_status(
                DEPLOYMENTS, body, namespace=d["metadata"]["namespace"]
            )
        except ConflictError:
            log.debug("deployment %s: status conflict; retrying", object_key(d))
            raise
        d["status"] = written.get("status") or status
        d["metadata"]["resourceVersion"] = written["metadata"]["resourceVersion"]
