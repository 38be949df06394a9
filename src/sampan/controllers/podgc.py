"""PodGC: deletes pods nobody else will clean up.

Every ``GC_PERIOD_S`` (20 s, as upstream) one pass, ``gc_once()``, deletes:

1. **terminated pods beyond the threshold**: when more than ``terminated_pod_gc_threshold``
   pods are Succeeded/Failed, the oldest (by creation time) beyond the threshold go
   (a threshold of 0 disables this);
2. **orphaned pods**: pods bound to a node that does not exist. A node missing from the
   informer is quarantined for ``ORPHAN_QUARANTINE_S`` (40 s) and then confirmed absent with a
   live read before its pods go, so a node that is just being registered is not mistaken;
3. **unscheduled terminating pods**: a deletionTimestamp and no node — nothing will ever
   finish them;
4. **terminating pods on out-of-service nodes**: the node is not Ready and carries the
   ``node.kubernetes.io/out-of-service`` taint.

Pods that have not finished are first marked ``Failed`` with a ``DisruptionTarget`` condition
(reason ``DeletionByPodGC``), as upstream, and then force-deleted (grace period 0) with a uid
precondition, so a newer pod of the same name is never hit. Time comes from ``ctx.clock``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from sampan.api import times
from sampan.client import ClientError, ConflictError, NotFoundError
from sampan.client.api import NODES, PODS
from sampan.controllers.base import ControllerContext

__all__ = ["GC_PERIOD_S", "ORPHAN_QUARANTINE_S", "PodGCController"]

log = logging.getLogger(__name__)

GC_PERIOD_S = 20.0
ORPHAN_QUARANTINE_S = 40.0
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
TERMINAL_PHASES = ("Succeeded", "Failed")


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def _node_ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


class PodGCController:
    """Periodic pod garbage collection; see the module docstring."""

    name = "podgc"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.pods = ctx.informers.informer(PODS)
        self.nodes = ctx.informers.informer(NODES)
        self.threshold = ctx.options.terminated_pod_gc_threshold
        # node name -> clock time we first saw pods bound to it while it was missing
        self._missing_since: dict[str, float] = {}
        self._synced = False
        self._looping = False
        self.passes = 0

    def healthy(self) -> bool:
        return self._synced and self._looping

    async def run(self, workers: int) -> None:
        await self.pods.wait_synced()
        await self.nodes.wait_synced()
        self._synced = True
        self._looping = True
        try:
            while True:
                try:
                    await self.gc_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("podgc: pass failed")
                await self.ctx.clock.sleep(GC_PERIOD_S)
        finally:
            self._looping = False
            self._synced = False

    async def gc_once(self) -> None:
        pods = self.pods.cache.list()
        await self._gc_terminated(pods)
        await self._gc_orphaned(pods)
        await self._gc_unscheduled_terminating(pods)
        await self._gc_out_of_service(pods)
        self.passes += 1

    async def _gc_terminated(self, pods: list[dict[str, Any]]) -> None:
        if self.threshold <= 0:
            return
        terminated = [
            p for p in pods if _terminal(p) and not p["metadata"].get("deletionTimestamp")
        ]
        excess = len(terminated) - self.threshold
        if excess <= 0:
            return
        terminated.sort(
            key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
        )
        log.info("podgc: %d terminated pods beyond the threshold %d", excess, self.threshold)
        for pod in terminated[:excess]:
            await self._delete(pod, "terminated pod beyond the threshold")

    async def _gc_orphaned(self, pods: list[dict[str, Any]]) -> None:
        now = self.ctx.clock.now()
        bound: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name and self.nodes.cache.get(node_name) is None:
                bound.setdefault(node_name, []).append(pod)
        for node_name in list(self._missing_since):
            if node_name not in bound:
                del self._missing_since[node_name]
        for node_name, orphans in bound.items():
            first = self._missing_since.setdefault(node_name, now)
            if now - first < ORPHAN_QUARANTINE_S:
                continue
            try:
                await self.client.get(NODES, node_name)
            except NotFoundError:
                pass
            else:
                del self._missing_since[node_name]
                continue  # it exists: our informer is behind
            for pod in orphans:
                await self._delete(pod, f"node {node_name} no longer exists", mark_failed=True)

    async def _gc_unscheduled_terminating(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp") and not (pod.get("spec") or {}).get(
                "nodeName"
            ):
                await self._delete(pod, "unscheduled and terminating")

    async def _gc_out_of_service(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not node_name or not pod["metadata"].get("deletionTimestamp"):
                continue
            node = self.nodes.cache.get(node_name)
            if node is None or _node_ready(node):
                continue
            taints = (node.get("spec") or {}).get("taints") or []
            if any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints):
                await self._delete(pod, f"node {node_name} is out of service", mark_failed=True)

    async def _delete(self, pod: dict[str, Any], why: str, *, mark_failed: bool = False) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        try:
            if mark_failed and not _terminal(pod):
                await self._mark_failed(pod, why)
            await self.client.delete(
                PODS,
                meta["name"],
                namespace=meta["namespace"],
                grace_period_s=0,
                precondition_uid=meta.get("uid"),
            )
        except (NotFoundError, ConflictError):
            return
        except ClientError as exc:
            log.warning("podgc: could not delete %s: %s", key, exc)
            return
        log.debug("podgc: deleted %s (%s)", key, why)

    async def _mark_failed(self, pod: dict[str, Any], why: str) -> None:
        body = copy.deepcopy(pod)
        status = body.setdefault("status", {})
        status["phase"] = "Failed"
        now = times.now()
        conditions = [
            c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"
        ]
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": f"PodGC: {why}",
                "lastTransitionTime": now,
            }
        )
        status["conditions"] = conditions
        await self.client.update_status(PODS, body, namespace=pod["metadata"]["namespace"])
