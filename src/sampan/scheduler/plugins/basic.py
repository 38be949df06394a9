"""Small default plugins: PrioritySort, SchedulingGates, NodeName, NodeUnschedulable,
NodePorts, DefaultBinder, and the volume plugins Sampan does not need yet.

Each mirrors the upstream plugin of the same name (kube-scheduler 1.32): same extension
points, same rejection reasons, same status codes.
"""

from __future__ import annotations

from typing import Any

from sampan.client.api import PODS, ApiError, ClientError
from sampan.scheduler.framework import (
    ERROR,
    EV_ASSIGNED_POD_DELETE,
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    SKIP,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    CycleState,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    pod_tolerates_taint,
)

__all__ = [
    "DefaultBinder",
    "NodeName",
    "NodePorts",
    "NodeUnschedulable",
    "NodeVolumeLimits",
    "PrioritySort",
    "SchedulingGates",
    "VolumeRestrictions",
    "VolumeZone",
]

ERR_NODE_NAME = "node(s) didn't match the requested node name"
ERR_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_PORTS = "node(s) didn't have free ports for the requested pod ports"
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


class PrioritySort(Plugin):
    """QueueSort: higher ``spec.priority`` first, then the earlier queue timestamp."""

    name = "PrioritySort"

    @staticmethod
    def sort_key(q: Any) -> tuple[int, float]:
        return (-q.pod.priority, q.timestamp_s)


class SchedulingGates(Plugin):
    """PreEnqueue: a pod with ``spec.schedulingGates`` waits until they are all removed."""

    name = "SchedulingGates"

    def pre_enqueue(self, pod: PodInfo) -> Status | None:
        gates = pod.spec.get("schedulingGates") or ()
        if not gates:
            return None
        names = " ".join(g.get("name", "") for g in gates)
        return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, f"waiting for scheduling gates: [{names}]")


class NodeName(Plugin):
    """Filter: ``spec.nodeName`` set by the user (a pod still pending) pins the node."""

    name = "NodeName"
    events = frozenset({EV_NODE_ADD})

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        wanted = pod.spec.get("nodeName")
        if not wanted:
            return nodes
        out = []
        for n in nodes:
            if n.name == wanted:
                out.append(n)
            else:
                failed[n.name] = Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_NODE_NAME, plugin=self.name
                )
        return out


class NodeUnschedulable(Plugin):
    """Filter: ``spec.unschedulable`` nodes are skipped unless the pod tolerates the
    ``node.kubernetes.io/unschedulable:NoSchedule`` taint."""

    name = "NodeUnschedulable"
    events = frozenset({EV_NODE_ADD, EV_NODE_UPDATE})

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        if not self.handle.cache.unschedulable_nodes or not any(n.unschedulable for n in nodes):
            return nodes
        if pod_tolerates_taint(pod.tolerations, UNSCHEDULABLE_TAINT):
            return nodes
        out = []
        for n in nodes:
            if n.unschedulable:
                failed[n.name] = Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_UNSCHEDULABLE, plugin=self.name
                )
            else:
                out.append(n)
        return out


def _ports_conflict(node: NodeInfo, wanted: tuple[tuple[str, int, str], ...]) -> bool:
    used = node.used_ports
    for protocol, port, ip in wanted:
        ips = used.get((protocol, port))
        if not ips:
            continue
        if ip == "0.0.0.0" or "0.0.0.0" in ips or ip in ips:
            return True
    return False


class NodePorts(Plugin):
    """PreFilter + Filter: the pod's host ports (protocol, port, hostIP) must be free."""

    name = "NodePorts"
    events = frozenset({EV_NODE_ADD, EV_ASSIGNED_POD_DELETE})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        if not pod.host_ports:
            return Status(SKIP)
        return None

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        wanted = pod.host_ports
        out = []
        for n in nodes:
            if n.used_ports and _ports_conflict(n, wanted):
                failed[n.name] = Status(UNSCHEDULABLE, ERR_PORTS, plugin=self.name)
            else:
                out.append(n)
        return out


class DefaultBinder(Plugin):
    """Bind: POST ``pods/<name>/binding`` with the chosen node."""

    name = "DefaultBinder"

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        try:
            await self.handle.client.create_subresource(
                PODS, pod.name, "binding", body, namespace=pod.namespace
            )
        except ApiError as e:
            return Status(ERROR, e.message or str(e))
        except ClientError as e:
            return Status(ERROR, str(e))
        return None


class VolumeRestrictions(Plugin):
    """Accepted in configurations; Sampan's volumes (hostPath, emptyDir, local-path) have no
    attach restrictions, so it allows everything."""

    name = "VolumeRestrictions"


class NodeVolumeLimits(Plugin):
    """Accepted in configurations; no CSI attach limits exist in Sampan yet."""

    name = "NodeVolumeLimits"


class VolumeZone(Plugin):
    """Accepted in configurations; zonal PersistentVolumes are covered by VolumeBinding's
    node affinity check."""

    name = "VolumeZone"
