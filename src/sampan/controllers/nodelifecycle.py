"""Node lifecycle: node health from heartbeats, condition taints, and NoExecute eviction.

This module owns three things upstream splits between the node lifecycle controller and the
taint eviction controller:

**Health.** Every ``node_monitor_period_s`` (5 s) each node's heartbeat is checked: its Lease
``kube-node-lease/<node>`` (``spec.renewTime``) and its Ready condition's
``lastHeartbeatTime``. The controller times silence on its own clock from the moment it last
saw either change (never comparing its clock with the kubelet's timestamps). After
``node_monitor_grace_period_s`` (40 s) of silence the node's Ready, MemoryPressure,
DiskPressure and PIDPressure conditions become ``Unknown`` (reason ``NodeStatusUnknown``,
"Kubelet stopped posting node status."; a condition never posted gets
``NodeStatusNeverUpdated``), a ``NodeNotReady`` event is recorded and the node's pods get
``Ready=False`` so Services stop sending them traffic.

**Taints.** NoSchedule taints follow the conditions (``not-ready``, ``unreachable``,
``memory-pressure``, ``disk-pressure``, ``pid-pressure``, ``network-unavailable``,
``unschedulable``). The NoExecute taints ``node.kubernetes.io/not-ready`` (Ready=False) and
``node.kubernetes.io/unreachable`` (Ready=Unknown) are added at most ``node_eviction_rate``
nodes per second per zone (token bucket, burst 1; upstream's zone states: a partially
disrupted zone uses ``secondary_node_eviction_rate`` when large, else stops; if *every* zone
is fully disrupted the controller assumes its own network is at fault, adds none and removes
those it added). They are removed at once when the node is Ready again. Other taints are kept.

**Eviction.** A pod on a node with NoExecute taints it does not tolerate is deleted at once;
one that tolerates them all with ``tolerationSeconds`` is deleted when the smallest of those
has passed (counted on the controller's clock from when it first saw the pod needing
eviction); a toleration without ``tolerationSeconds`` keeps the pod. Evicted pods get a
``DisruptionTarget`` condition (``DeletionByTaintManager``) and a ``TaintManagerEviction``
event. A pending eviction is cancelled when the taint goes or the pod changes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sampan.api import times
from sampan.client import ClientError, ConflictError, NotFoundError
from sampan.client.api import LEASES, NODES, PODS, PatchType
from sampan.client.events import TYPE_NORMAL
from sampan.controllers.base import ControllerContext, QueueController

__all__ = [
    "NODE_LEASE_NAMESPACE",
    "TAINT_NOT_READY",
    "TAINT_UNREACHABLE",
    "NodeLifecycleController",
    "tolerates",
]

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
# condition type -> (status that taints, taint key), for the NoSchedule pass
CONDITION_TAINTS: tuple[tuple[str, str, str], ...] = (
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
)
CONDITION_TAINT_KEYS = frozenset(key for _, _, key in CONDITION_TAINTS) | {TAINT_UNSCHEDULABLE}
EXECUTE_TAINT_KEYS = frozenset({TAINT_NOT_READY, TAINT_UNREACHABLE})
STATUS_WRITE_ATTEMPTS = 3
INDEX_NODE_NAME = "node-name"

STATE_NORMAL = "Normal"
STATE_PARTIAL = "PartialDisruption"
STATE_FULL = "FullDisruption"


def _now_rfc3339() -> str:
    return times.now()


def _condition(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _ready_status(node: dict[str, Any]) -> str | None:
    condition = _condition(node, "Ready")
    return condition.get("status") if condition else None


def _zone(node: dict[str, Any]) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return f"{labels.get(REGION_LABEL, '')}:\x00:{labels.get(ZONE_LABEL, '')}"


def _index_node_name(pod: dict[str, Any]) -> tuple[str, ...]:
    node = (pod.get("spec") or {}).get("nodeName")
    return (node,) if node else ()


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Whether ``toleration`` matches ``taint`` (upstream's ToleratesTaint)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def eviction_delay_s(pod: dict[str, Any], taints: list[dict[str, Any]]) -> float | None:
    """Seconds until ``pod`` must go because of NoExecute ``taints``: 0 = now, None = never."""
    if not taints:
        return None
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    used: list[dict[str, Any]] = []
    for taint in taints:
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return 0.0
        used.extend(matching)
    seconds = [t["tolerationSeconds"] for t in used if isinstance(t.get("tolerationSeconds"), int)]
    if not seconds:
        return None
    return float(max(0, min(seconds)))


@dataclass
class _Health:
    probe_s: float
    heartbeat: str | None
    renew_time: str | None


class _TokenBucket:
    """Tokens at ``rate`` per second (burst 1), on the controller's clock."""

    def __init__(self, rate: float, now_s: float) -> None:
        self.rate = rate
        self.tokens = 1.0
        self.at_s = now_s

    def take(self, now_s: float) -> bool:
        if self.rate > 0:
            self.tokens = min(1.0, self.tokens + (now_s - self.at_s) * self.rate)
        self.at_s = now_s
        if self.rate > 0 and self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class NodeLifecycleController(QueueController):
    """Node health, condition taints and NoExecute eviction; see the module docstring."""

    name = "nodelifecycle"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.options = ctx.options
        self.recorder = ctx.recorder("node-controller")
        self.eviction_recorder = ctx.recorder("taint-eviction-controller")
        self.nodes = self.watch(ctx.informers.informer(NODES))
        self.leases = self.watch(ctx.informers.informer(LEASES, namespace=NODE_LEASE_NAMESPACE))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.pods.add_indexers({INDEX_NODE_NAME: _index_node_name})
        self.nodes.add_event_handler(
            on_add=self._node_changed,
            on_update=lambda old, new: self._node_updated(old, new),
            on_delete=self._node_deleted,
        )
        self.pods.add_event_handler(
            on_add=self._pod_changed,
            on_update=lambda _old, pod: self._pod_changed(pod),
            on_delete=self._pod_deleted,
        )
        self._health: dict[str, _Health] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._zone_states: dict[str, str] = {}
        # pod uid -> clock time when it must be evicted
        self._eviction_due: dict[str, float] = {}
        self._monitor_task: asyncio.Task[None] | None = None
        self.monitor_passes = 0

    # -- handlers (enqueue only) -------------------------------------------------------------

    def _node_changed(self, node: dict[str, Any]) -> None:
        for pod in self.pods.cache.by_index(INDEX_NODE_NAME, node["metadata"]["name"]):
            self.queue.add(_pod_key(pod))

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if _execute_taints(old) != _execute_taints(new):
            self._node_changed(new)

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self._health.pop(node["metadata"]["name"], None)

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            self.queue.add(_pod_key(pod))

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        self._eviction_due.pop((pod.get("metadata") or {}).get("uid") or "", None)

    # -- running -----------------------------------------------------------------------------

    async def on_synced(self) -> None:
        self._monitor_task = asyncio.get_running_loop().create_task(
            self._monitor_loop(), name="controller-nodelifecycle-monitor"
        )

    async def run(self, workers: int) -> None:
        try:
            await super().run(workers)
        finally:
            if self._monitor_task is not None:
                self._monitor_task.cancel()
                await asyncio.gather(self._monitor_task, return_exceptions=True)

    def healthy(self) -> bool:
        return (
            super().healthy() and self._monitor_task is not None and not self._monitor_task.done()
        )

    async def _monitor_loop(self) -> None:
        while True:
            try:
                await self.monitor_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("nodelifecycle: monitor pass failed")
            await self.ctx.clock.sleep(self.options.node_monitor_period_s)

    # -- monitor pass ------------------------------------------------------------------------

    async def monitor_once(self) -> None:
        """One health + taint pass over every node (tests call it directly)."""
        now = self.ctx.clock.now()
        nodes = self.nodes.cache.list()
        for node in nodes:
            try:
                await self._check_health(node, now)
            except ClientError as exc:
                log.warning("nodelifecycle: %s: health update failed: %s", _name(node), exc)
        nodes = self.nodes.cache.list()
        all_disrupted = self._update_zone_states(nodes, now)
        for node in nodes:
            try:
                await self._sync_taints(node, now, all_disrupted)
            except ClientError as exc:
                log.warning("nodelifecycle: %s: taint update failed: %s", _name(node), exc)
        self.monitor_passes += 1

    async def _check_health(self, node: dict[str, Any], now: float) -> None:
        name = _name(node)
        ready = _condition(node, "Ready")
        heartbeat = (ready or {}).get("lastHeartbeatTime")
        lease = self.leases.cache.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        renew_time = ((lease or {}).get("spec") or {}).get("renewTime")
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = _Health(now, heartbeat, renew_time)
        elif health.heartbeat != heartbeat or health.renew_time != renew_time:
            health.probe_s, health.heartbeat, health.renew_time = now, heartbeat, renew_time
        if now - health.probe_s <= self.options.node_monitor_grace_period_s:
            return
        if ready is not None and ready.get("status") == "Unknown":
            return  # already marked
        await self._mark_unknown(node)

    async def _mark_unknown(self, node: dict[str, Any]) -> None:
        name = _name(node)
        body = copy.deepcopy(node)
        status = body.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        now = _now_rfc3339()
        was_ready = _ready_status(node) == "True"
        for kind in MONITORED_CONDITIONS:
            current = next((c for c in conditions if c.get("type") == kind), None)
            if current is None:
                conditions.append(
                    {
                        "type": kind,
                        "status": "Unknown",
                        "reason": "NodeStatusNeverUpdated",
                        "message": "Kubelet never posted node status.",
                        "lastHeartbeatTime": (node["metadata"].get("creationTimestamp") or now),
                        "lastTransitionTime": now,
                    }
                )
            elif current.get("status") != "Unknown":
                current.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=now,
                )
        await self.client.update_status(NODES, body)
        log.info("nodelifecycle: node %s stopped posting status; marked Unknown", name)
        self.recorder.event(
            node, TYPE_NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady"
        )
        if was_ready or _ready_status(node) is None:
            await self._mark_pods_not_ready(name)

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        for pod in self.pods.cache.by_index(INDEX_NODE_NAME, node_name):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            ready = next(
                (
                    c
                    for c in (pod.get("status") or {}).get("conditions") or []
                    if c.get("type") == "Ready"
                ),
                None,
            )
            if ready is None or ready.get("status") == "False":
                continue

            def not_ready(status: dict[str, Any]) -> bool:
                changed = False
                for condition in status.get("conditions") or []:
                    if condition.get("type") == "Ready" and condition.get("status") != "False":
                        condition["status"] = "False"
                        condition["lastTransitionTime"] = _now_rfc3339()
                        changed = True
                return changed

            if not await self._update_pod_status(pod, not_ready):
                continue
            log.debug("nodelifecycle: pod %s marked not ready", _pod_key(pod))

    def _update_zone_states(self, nodes: list[dict[str, Any]], now: float) -> bool:
        """Recompute zone states and eviction rates; True if every zone is fully disrupted."""
        counts: dict[str, tuple[int, int]] = {}
        for node in nodes:
            ready, not_ready = counts.get(_zone(node), (0, 0))
            if _ready_status(node) == "True":
                ready += 1
            elif _ready_status(node) in ("False", "Unknown"):
                not_ready += 1
            counts[_zone(node)] = (ready, not_ready)
        options = self.options
        for zone, (ready, not_ready) in counts.items():
            if ready == 0 and not_ready > 0:
                state = STATE_FULL
            elif (
                not_ready > 2
                and not_ready / (ready + not_ready) >= options.unhealthy_zone_threshold
            ):
                state = STATE_PARTIAL
            else:
                state = STATE_NORMAL
            if state == STATE_PARTIAL:
                size = ready + not_ready
                rate = (
                    options.secondary_node_eviction_rate
                    if size > options.large_cluster_size_threshold
                    else 0.0
                )
            else:
                rate = options.node_eviction_rate
            bucket = self._buckets.get(zone)
            if bucket is None:
                self._buckets[zone] = _TokenBucket(rate, now)
            else:
                bucket.rate = rate
            if self._zone_states.get(zone) != state:
                log.info("nodelifecycle: zone %r is now %s", zone.replace("\x00", ""), state)
                self._zone_states[zone] = state
        for zone in list(self._zone_states):
            if zone not in counts:
                del self._zone_states[zone]
                self._buckets.pop(zone, None)
        return bool(counts) and all(s == STATE_FULL for s in self._zone_states.values())

    async def _sync_taints(self, node: dict[str, Any], now: float, all_disrupted: bool) -> None:
        taints = list((node.get("spec") or {}).get("taints") or [])
        kept = [t for t in taints if t.get("key") not in CONDITION_TAINT_KEYS]
        wanted: list[dict[str, Any]] = []
        for kind, status, key in CONDITION_TAINTS:
            condition = _condition(node, kind)
            if condition is not None and condition.get("status") == status:
                wanted.append({"key": key, "effect": NO_SCHEDULE})
        if (node.get("spec") or {}).get("unschedulable"):
            wanted.append({"key": TAINT_UNSCHEDULABLE, "effect": NO_SCHEDULE})

        ready = _ready_status(node)
        execute_key = {"False": TAINT_NOT_READY, "Unknown": TAINT_UNREACHABLE}.get(ready or "")
        current_execute = [
            t
            for t in taints
            if t.get("key") in EXECUTE_TAINT_KEYS and t.get("effect") == NO_EXECUTE
        ]
        if execute_key is not None and not all_disrupted:
            if current_execute:
                # Already tainted: a swap between not-ready and unreachable is not rate limited.
                old = current_execute[0]
                wanted.append(
                    {
                        "key": execute_key,
                        "effect": NO_EXECUTE,
                        "timeAdded": old.get("timeAdded")
                        if old.get("key") == execute_key
                        else _now_rfc3339(),
                    }
                )
            elif self._buckets.get(_zone(node), _TokenBucket(0.0, now)).take(now):
                wanted.append(
                    {"key": execute_key, "effect": NO_EXECUTE, "timeAdded": _now_rfc3339()}
                )
                log.info(
                    "nodelifecycle: tainting node %s with %s:NoExecute", _name(node), execute_key
                )
            # else: rate limited; the next pass tries again
        # Same set of (key, effect) as now? Compare without timestamps for the non-execute ones.
        for taint in taints:
            if taint.get("key") in CONDITION_TAINT_KEYS and taint.get("effect") == NO_SCHEDULE:
                for want in wanted:
                    if want["key"] == taint["key"] and want["effect"] == NO_SCHEDULE:
                        want.update(taint)
        new_taints = kept + wanted
        if _taint_set(new_taints) == _taint_set(taints):
            return
        patch = {
            "metadata": {"resourceVersion": node["metadata"].get("resourceVersion")},
            "spec": {"taints": new_taints or None},
        }
        try:
            await self.client.patch(NODES, _name(node), patch, patch_type=PatchType.MERGE)
        except (NotFoundError, ConflictError):
            return  # gone, or changed under us: the next pass sees the new version
        log.debug(
            "nodelifecycle: node %s taints now %s",
            _name(node),
            ", ".join(f"{t['key']}:{t['effect']}" for t in new_taints) or "none",
        )

    async def _update_pod_status(
        self, pod: dict[str, Any], mutate: Callable[[dict[str, Any]], bool]
    ) -> bool:
        """Apply ``mutate`` to a copy of the pod's status and write it; on a conflict read the
        pod again and retry. ``mutate`` returns False when there is nothing to write.
        False if the pod is gone (or is now another pod of the same name)."""
        uid = pod["metadata"].get("uid")
        namespace = pod["metadata"]["namespace"]
        current = pod
        for _ in range(STATUS_WRITE_ATTEMPTS):
            body = copy.deepcopy(current)
            if not mutate(body.setdefault("status", {})):
                return True
            try:
                await self.client.update_status(PODS, body, namespace=namespace)
                return True
            except NotFoundError:
                return False
            except ConflictError:
                try:
                    current = await self.client.get(
                        PODS, pod["metadata"]["name"], namespace=namespace
                    )
                except NotFoundError:
                    return False
                if current["metadata"].get("uid") != uid:
                    return False
        raise RuntimeError(f"pod {_pod_key(pod)} kept changing; status not written")

    # -- eviction (queue of pod keys) --------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        if pod is None:
            return
        uid = pod["metadata"].get("uid") or ""
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self.nodes.cache.get(node_name) if node_name else None
        if node is None or pod["metadata"].get("deletionTimestamp"):
            self._eviction_due.pop(uid, None)
            return
        delay_s = eviction_delay_s(pod, _execute_taints(node))
        if delay_s is None:
            if self._eviction_due.pop(uid, None) is not None:
                log.debug("nodelifecycle: eviction of %s cancelled", key)
            return
        now = self.ctx.clock.now()
        due = self._eviction_due.setdefault(uid, now + delay_s)
        due = min(due, now + delay_s)
        self._eviction_due[uid] = due
        if due > now:
            self.queue.add_after(key, due - now)
            return
        await self._evict(pod, node_name or "")
        self._eviction_due.pop(uid, None)

    async def _evict(self, pod: dict[str, Any], node_name: str) -> None:
        key = _pod_key(pod)

        def disrupted(status: dict[str, Any]) -> bool:
            if status.get("phase") in ("Succeeded", "Failed"):
                return False
            conditions = [
                c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"
            ]
            conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint",
                    "lastTransitionTime": _now_rfc3339(),
                }
            )
            status["conditions"] = conditions
            return True

        if not await self._update_pod_status(pod, disrupted):
            return
        try:
            await self.client.delete(
                PODS,
                pod["metadata"]["name"],
                namespace=pod["metadata"]["namespace"],
                precondition_uid=pod["metadata"].get("uid"),
            )
        except (NotFoundError, ConflictError):
            return
        self.eviction_recorder.event(
            pod, TYPE_NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key}"
        )
        log.info("nodelifecycle: evicted %s from node %s (NoExecute taint)", key, node_name)


def _name(node: dict[str, Any]) -> str:
    return node["metadata"]["name"]


def _pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _execute_taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == NO_EXECUTE
    ]


def _taint_set(taints: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(t.get("key") or "", t.get("value") or "", t.get("effect") or "") for t in taints}
