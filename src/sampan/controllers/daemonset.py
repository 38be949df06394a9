"""The DaemonSet controller: one pod on every eligible node.

This module owns the reconcile of ``apps/v1`` DaemonSets. Per set key:

* **Eligibility** of a node (``node_should_run``): the template's ``nodeSelector`` and
  required node affinity match the node, and every NoSchedule/NoExecute taint of the node is
  tolerated by the template's tolerations plus the tolerations every daemon pod gets
  (``DAEMON_TOLERATIONS``: not-ready/unreachable NoExecute, disk/memory/pid pressure and
  unschedulable NoSchedule, network-unavailable for host-network pods). A pod already on a
  node with a new NoSchedule taint may stay (``should_continue``); an untolerated NoExecute
  taint evicts it.
* **Placement**: a missing pod is created with a required node affinity on
  ``metadata.name`` of its node (the scheduler binds it), labelled with
  ``controller-revision-hash``. Extra pods on a node (all but the oldest), failed pods and pods
  on nodes that should not run one are deleted. Creations are guarded by expectations.
* **Revisions** (``history``): as for StatefulSets; ``updatedNumberScheduled`` counts pods at
  the current template's hash.
* **RollingUpdate**: old-revision pods are deleted (and recreated at the new revision) while
  at most ``maxUnavailable`` (int or percent of desired, rounded up; at least 1) daemon pods
  are unavailable; unavailable old pods go first. With ``maxSurge`` > 0 (then
  ``maxUnavailable`` is 0) a new pod starts beside the old one on up to ``maxSurge`` nodes at
  a time, and the old pod is deleted once the new one is available; an unavailable old pod is
  replaced at once. **OnDelete**: only user deletions.
* **Status**: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled,
  numberReady, updatedNumberScheduled, numberAvailable, numberUnavailable,
  observedGeneration, collisionCount.

Events: SuccessfulCreate, SuccessfulDelete, FailedCreate, FailedDaemonPod.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sampan.api.labels import SelectorError, selector_from_label_selector, selector_from_set
from sampan.client.api import (
    CONTROLLERREVISIONS,
    DAEMONSETS,
    NODES,
    PODS,
    NotFoundError,
)
from sampan.client.events import TYPE_WARNING
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
    Expectations,
    PodControl,
    SlowStartError,
    claim,
    claim_candidates,
    controller_of,
    index_controller,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    pod_from_template,
    scaled_value,
    slow_start,
    wall_now,
)

__all__ = [
    "DAEMON_TOLERATIONS",
    "DaemonSetController",
    "node_should_run",
    "should_continue",
    "tolerates",
]

log = logging.getLogger(__name__)

DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
NETWORK_UNAVAILABLE_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}
FAILED_POD_BACKOFF_S = 1.0

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Node eligibility (pure)


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key")
        operator = toleration.get("operator") or "Equal"
        if not key:
            if operator == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(expr: Mapping[str, Any], values_of: Mapping[str, str]) -> bool:
    key = expr.get("key") or ""
    operator = expr.get("operator")
    values = list(expr.get("values") or ())
    present = key in values_of
    value = values_of.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        try:
            have, want = int(value or ""), int(values[0])
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def _affinity_matches(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": (node.get("metadata") or {}).get("name") or ""}
    for term in terms:
        exprs = term.get("matchExpressions") or []
        field_exprs = term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue
        if all(_expression_matches(e, labels) for e in exprs) and all(
            _expression_matches(e, fields) for e in field_exprs
        ):
            return True
    return False


def _tolerations_for(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tolerations: list[Mapping[str, Any]] = list(pod_spec.get("tolerations") or ())
    tolerations.extend(DAEMON_TOLERATIONS)
    if pod_spec.get("hostNetwork"):
        tolerations.append(NETWORK_UNAVAILABLE_TOLERATION)
    return tolerations


def node_should_run(template: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether a daemon pod of ``template`` should be placed on ``node`` now."""
    pod_spec = template.get("spec") or {}
    selector = pod_spec.get("nodeSelector") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if selector and not selector_from_set(selector).matches(labels):
        return False
    if not _affinity_matches(pod_spec, node):
        return False
    tolerations = _tolerations_for(pod_spec)
    for taint in (node.get("spec") or {}).get("taints") or ():
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


def should_continue(template: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether an existing daemon pod may stay on ``node`` (NoSchedule taints do not evict)."""
    pod_spec = template.get("spec") or {}
    selector = pod_spec.get("nodeSelector") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if selector and not selector_from_set(selector).matches(labels):
        return False
    if not _affinity_matches(pod_spec, node):
        return False
    tolerations = _tolerations_for(pod_spec)
    for taint in (node.get("spec") or {}).get("taints") or ():
        if taint.get("effect") == "NoExecute" and not tolerates(tolerations, taint):
            return False
    return True


def _node_of(pod: Mapping[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or ():
        for field in term.get("matchFields") or ():
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                values = field.get("values") or []
                if len(values) == 1:
                    return values[0]
    return None


def _with_node_affinity(pod_spec: Obj, node_name: str) -> None:
    affinity = pod_spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }


def _revision_of(pod: Mapping[str, Any]) -> str:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(CONTROLLER_REVISION_HASH_LABEL, "")


# ---------------------------------------------------------------------------------------------
# Controller


class DaemonSetController(QueueController):
    """See the module docstring."""

    name = "daemonset"
    component = "daemonset-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = self.watch(ctx.informers.informer(DAEMONSETS))
        self.nodes = self.watch(ctx.informers.informer(NODES))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.pods.add_indexers({INDEX_CONTROLLER: index_controller})
        self.revisions = self.watch(ctx.informers.informer(CONTROLLERREVISIONS))
        self.expectations = Expectations(ctx.clock)
        self.recorder = ctx.recorder(self.component)
        self.pod_control = PodControl(ctx.client, self.recorder)
        self.sets.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._set_deleted,
        )
        self.nodes.add_event_handler(
            on_add=lambda node: self._enqueue_all(),
            on_update=self._node_updated,
            on_delete=lambda node: self._enqueue_all(),
        )
        self.pods.add_event_handler(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )

    # -- handlers ---------------------------------------------------------------------------

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _enqueue_all(self) -> None:
        for key in self.sets.cache.keys():
            self.queue.add(key)

    def _set_deleted(self, obj: Mapping[str, Any]) -> None:
        key = object_key(obj)
        self.expectations.forget(key)
        self.queue.add(key)

    def _node_updated(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        def shape(node: Mapping[str, Any]) -> tuple[Any, ...]:
            return (
                (node.get("metadata") or {}).get("labels"),
                (node.get("spec") or {}).get("taints"),
                (node.get("spec") or {}).get("unschedulable"),
            )

        if shape(old) != shape(new):
            self._enqueue_all()

    def _set_key(self, pod: Mapping[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "DaemonSet":
            return None
        return f"{(pod.get('metadata') or {}).get('namespace')}/{ref.get('name')}"

    def _pod_added(self, pod: Obj) -> None:
        key = self._set_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = self._set_key(new)
        if key is None:
            return
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
            "deletionTimestamp"
        ):
            self.expectations.deletion_observed(key, object_key(new))
        self.queue.add(key)
        if is_pod_ready(new) and not is_pod_ready(old):
            owner = self.sets.cache.get(key) or {}
            min_ready_s = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
            if min_ready_s:
                self.queue.add_after(key, min_ready_s + 0.5)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._set_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, object_key(pod))
            self.queue.add(key)

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.sets.cache.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        ds = copy.deepcopy(cached)
        meta = ds["metadata"]
        namespace = meta["namespace"]
        spec = ds.get("spec") or {}
        try:
            selector = selector_from_label_selector(spec.get("selector"))
        except SelectorError as exc:
            log.warning("daemonset %s: invalid selector: %s", key, exc)
            return
        pods = await claim(
            self.ctx.client,
            PODS,
            ds,
            DAEMONSETS.api_version,
            "DaemonSet",
            selector,
            claim_candidates(self.pods.cache, ds),
        )
        revisions = await claim(
            self.ctx.client,
            CONTROLLERREVISIONS,
            ds,
            DAEMONSETS.api_version,
            "DaemonSet",
            selector,
            self.revisions.cache.by_index(INDEX_NAMESPACE, namespace),
        )
        status = copy.deepcopy(ds.get("status") or {})
        update_rev, revisions = await self._revision(ds, status, revisions)
        update_hash = update_rev["metadata"]["labels"].get(CONTROLLER_REVISION_HASH_LABEL, "")
        now = wall_now(self.ctx.clock)
        template = spec.get("template") or {}
        nodes = {n["metadata"]["name"]: n for n in self.nodes.cache.list()}
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            node_name = _node_of(pod)
            if node_name is not None:
                by_node.setdefault(node_name, []).append(pod)

        if not meta.get("deletionTimestamp") and self.expectations.satisfied(key):
            await self._manage(key, ds, nodes, by_node, update_rev, update_hash, now)
            pods = [
                p
                for p in self.pods.cache.by_index(INDEX_OWNER_UID, meta["uid"])
                if (controller_of(p) or {}).get("uid") == meta["uid"]
            ]
            by_node = {}
            for pod in pods:
                node_name = _node_of(pod)
                if node_name is not None:
                    by_node.setdefault(node_name, []).append(pod)

        self._fill_status(ds, status, nodes, by_node, template, update_hash, now)
        if status != (ds.get("status") or {}):
            body = copy.deepcopy(ds)
            body["status"] = status
            try:
                await self.ctx.client.update_status(DAEMONSETS, body, namespace=namespace)
            except NotFoundError:
                return
        in_use = {update_rev["metadata"]["name"]}
        in_use |= {f"{meta['name']}-{_revision_of(p)}" for p in pods if _revision_of(p)}
        await truncate_history(
            self.ctx.client, revisions, in_use, int(spec.get("revisionHistoryLimit") or 10)
        )

    async def _revision(self, ds: Obj, status: Obj, revisions: list[Obj]) -> tuple[Obj, list[Obj]]:
        spec = ds.get("spec") or {}
        data = revision_data(spec.get("template") or {})
        update = find_equal(revisions, data)
        if update is None:
            update, collisions = await ensure_revision(
                self.ctx.client,
                ds,
                "DaemonSet",
                data,
                next_revision_number(revisions),
                int(status.get("collisionCount") or 0),
                dict((spec.get("selector") or {}).get("matchLabels") or {}),
            )
            if collisions:
                status["collisionCount"] = collisions
            return update, [*revisions, update]
        newest = max(int(r.get("revision") or 0) for r in revisions)
        if int(update.get("revision") or 0) < newest:
            update = await bump_revision(self.ctx.client, update, newest + 1)
            revisions = [r for r in revisions if r["metadata"]["uid"] != update["metadata"]["uid"]]
            revisions.append(update)
        return update, revisions

    async def _manage(
        self,
        key: str,
        ds: Obj,
        nodes: Mapping[str, Obj],
        by_node: Mapping[str, list[Obj]],
        update_rev: Obj,
        update_hash: str,
        now: datetime,
    ) -> None:
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        to_create: list[str] = []
        to_delete: list[Obj] = []
        failed_seen = False
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        min_ready_s = int(spec.get("minReadySeconds") or 0)
        surge = 0
        if rolling:
            desired = sum(1 for n in nodes.values() if node_should_run(template, n))
            surge = scaled_value(
                (strategy.get("rollingUpdate") or {}).get("maxSurge", 0), desired, round_up=True
            )
        surging = 0  # nodes running an old and a new pod side by side
        surge_wanted: list[tuple[bool, str]] = []  # (old pod available, node)
        for node_name, node in nodes.items():
            pods = [
                p for p in by_node.get(node_name, ()) if not p["metadata"].get("deletionTimestamp")
            ]
            run = node_should_run(template, node)
            stay = should_continue(template, node)
            if run and not pods:
                to_create.append(node_name)
                continue
            if not stay:
                to_delete.extend(pods)
                continue
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            if failed:
                failed_seen = True
                to_delete.extend(failed)
                self.recorder.event(
                    ds,
                    TYPE_WARNING,
                    "FailedDaemonPod",
                    f"Found failed daemon pod {ds['metadata']['namespace']}/"
                    f"{failed[0]['metadata']['name']} on node {node_name}, will try to kill it",
                )
            alive = [p for p in pods if p not in failed and is_pod_active(p)]
            alive.sort(
                key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
            )
            if surge > 0 and run:
                # maxSurge: a new pod starts beside the old one; the old goes once it is available
                new = [p for p in alive if _revision_of(p) == update_hash]
                old = [p for p in alive if _revision_of(p) != update_hash]
                to_delete.extend(new[1:])
                if new and old:
                    if is_pod_available(new[0], min_ready_s, now):
                        to_delete.extend(old)
                    else:
                        surging += 1
                        to_delete.extend(old[1:])
                elif old:
                    to_delete.extend(old[1:])
                    surge_wanted.append((is_pod_available(old[0], min_ready_s, now), node_name))
            elif len(alive) > 1:
                to_delete.extend(alive[1:])
        for node_name, pods in by_node.items():
            if node_name not in nodes:
                to_delete.extend(p for p in pods if not p["metadata"].get("deletionTimestamp"))

        # rolling update
        if rolling and surge > 0:
            budget = surge - surging
            for old_available, node_name in sorted(surge_wanted):
                # an unavailable old pod is replaced at once; available ones within the budget
                if not old_available:
                    to_create.append(node_name)
                elif budget > 0:
                    to_create.append(node_name)
                    budget -= 1
        elif rolling:
            to_delete.extend(self._rolling_victims(ds, nodes, by_node, update_hash, to_delete, now))

        namespace = ds["metadata"]["namespace"]
        self.expectations.expect(
            key, adds=len(to_create), deletes=[object_key(p) for p in to_delete]
        )
        seen: set[str] = set()
        unique_delete = []
        for pod in to_delete:
            if pod["metadata"]["uid"] not in seen:
                seen.add(pod["metadata"]["uid"])
                unique_delete.append(pod)

        async def delete(pod: Obj) -> None:
            try:
                await self.pod_control.delete(namespace, pod["metadata"]["name"], ds)
            except BaseException:
                self.expectations.deletion_observed(key, object_key(pod))
                raise

        results = await asyncio.gather(*(delete(p) for p in unique_delete), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]

        template_with_hash = copy.deepcopy(_template_from_revision(update_rev) or template)

        async def create(i: int) -> None:
            node_name = to_create[i]
            body = pod_from_template(
                template_with_hash,
                ds,
                DAEMONSETS.api_version,
                "DaemonSet",
                extra_labels={CONTROLLER_REVISION_HASH_LABEL: update_hash},
            )
            body["metadata"]["labels"]["pod-template-generation"] = str(
                ds["metadata"].get("generation", 1)
            )
            pod_spec = body["spec"]
            _with_node_affinity(pod_spec, node_name)
            tolerations = list(pod_spec.get("tolerations") or ())
            for toleration in DAEMON_TOLERATIONS:
                if toleration not in tolerations:
                    tolerations.append(dict(toleration))
            if pod_spec.get("hostNetwork") and NETWORK_UNAVAILABLE_TOLERATION not in tolerations:
                tolerations.append(dict(NETWORK_UNAVAILABLE_TOLERATION))
            pod_spec["tolerations"] = tolerations
            try:
                await self.pod_control.create(namespace, body, ds)
            except BaseException:
                self.expectations.creations_failed(key, 1)
                raise

        if to_create:
            log.debug("daemonset %s: creating pods on %s", key, ", ".join(to_create))
            try:
                await slow_start(len(to_create), create)
            except SlowStartError as exc:
                if len(to_create) - exc.attempted > 0:
                    self.expectations.creations_failed(key, len(to_create) - exc.attempted)
                errors.append(exc)
        if failed_seen:
            self.queue.add_after(key, FAILED_POD_BACKOFF_S)
        for error in errors:
            if isinstance(error, asyncio.CancelledError):
                raise error
        if errors:
            raise errors[0]

    def _rolling_victims(
        self,
        ds: Obj,
        nodes: Mapping[str, Obj],
        by_node: Mapping[str, list[Obj]],
        update_hash: str,
        already: list[Obj],
        now: datetime,
    ) -> list[Obj]:
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        min_ready_s = int(spec.get("minReadySeconds") or 0)
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        desired = sum(1 for n in nodes.values() if node_should_run(template, n))
        max_unavailable = scaled_value(rolling.get("maxUnavailable", 1), desired, round_up=True)
        max_unavailable = max(1, max_unavailable)
        gone = {p["metadata"]["uid"] for p in already}
        unavailable = 0
        old_unavailable: list[Obj] = []
        old_available: list[Obj] = []
        for node_name, node in nodes.items():
            if not node_should_run(template, node):
                continue
            pods = [
                p
                for p in by_node.get(node_name, ())
                if is_pod_active(p) and p["metadata"]["uid"] not in gone
            ]
            if not pods:
                unavailable += 1
                continue
            pod = pods[0]
            available = is_pod_available(pod, min_ready_s, now)
            if not available:
                unavailable += 1
            if _revision_of(pod) != update_hash:
                (old_available if available else old_unavailable).append(pod)
        victims = list(old_unavailable)
        budget = max_unavailable - unavailable
        for pod in sorted(old_available, key=lambda p: p["metadata"]["name"]):
            if budget <= 0:
                break
            victims.append(pod)
            budget -= 1
        return victims

    def _fill_status(
        self,
        ds: Obj,
        status: Obj,
        nodes: Mapping[str, Obj],
        by_node: Mapping[str, list[Obj]],
        template: Mapping[str, Any],
        update_hash: str,
        now: datetime,
    ) -> None:
        min_ready_s = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        desired = current = misscheduled = ready = updated = available = 0
        for node_name, node in nodes.items():
            run = node_should_run(template, node)
            pods = [p for p in by_node.get(node_name, ()) if is_pod_active(p)]
            if run:
                desired += 1
                if pods:
                    current += 1
                    if any(is_pod_ready(p) for p in pods):
                        ready += 1
                    if any(is_pod_available(p, min_ready_s, now) for p in pods):
                        available += 1
                    if any(_revision_of(p) == update_hash for p in pods):
                        updated += 1
            elif pods:
                misscheduled += 1
        status.update(
            {
                "desiredNumberScheduled": desired,
                "currentNumberScheduled": current,
                "numberMisscheduled": misscheduled,
                "numberReady": ready,
                "updatedNumberScheduled": updated,
                "numberAvailable": available,
                "numberUnavailable": desired - available,
                "observedGeneration": ds["metadata"].get("generation", 0),
            }
        )
        for field in ("updatedNumberScheduled", "numberAvailable", "numberUnavailable"):
            if not status[field]:
                del status[field]


def _template_from_revision(revision: Mapping[str, Any]) -> Obj | None:
    template = ((revision.get("data") or {}).get("spec") or {}).get("template")
    if not isinstance(template, dict):
        return None
    copied = copy.deepcopy(template)
    copied.pop("$patch", None)
    return copied
