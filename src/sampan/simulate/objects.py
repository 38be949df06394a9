"""What a simulated node and its pods look like: plain dicts, no I/O.

This module owns the shapes the simulator writes (KWOK's model): a fake Node with capacity,
``type=kwok`` and hostname labels and, optionally, the ``kwok.x-k8s.io/node=fake:NoSchedule``
taint; its four kubelet conditions with upstream's reasons and messages; its heartbeat Lease;
and the ``pods/status`` of a pod the node "runs" (Running, every condition True, container
statuses running and ready, an IP from the node's pod CIDR).

``IpPool`` hands out pod IPs per node: from the node's ``spec.podCIDR`` when the node IPAM
controller gave one, else from the node's slice of the simulator's fallback range. An IP is
never given to two live pods of one node; a pod keeps the IP it was given.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from sampan.api import times
from sampan.version import KUBERNETES_VERSION, __version__

__all__ = [
    "FAKE_TAINT",
    "LEASE_DURATION_S",
    "LEASE_NAMESPACE",
    "IpPool",
    "lease_body",
    "node_body",
    "node_conditions",
    "pod_status",
    "slim_pod",
]

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
KUBELET_VERSION = f"{KUBERNETES_VERSION}+sampan{__version__}-kwok"

_CONDITIONS = (
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def node_conditions(transition_time: str, heartbeat_time: str) -> list[dict[str, Any]]:
    return [
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": heartbeat_time,
            "lastTransitionTime": transition_time,
        }
        for ctype, status, reason, message in _CONDITIONS
    ]


def node_body(
    name: str, node_ip: str, capacity: Mapping[str, str], *, taint: bool
) -> dict[str, Any]:
    now = times.now()
    spec: dict[str, Any] = {"taints": [dict(FAKE_TAINT)]} if taint else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        },
        "spec": spec,
        "status": node_status(node_ip, capacity, now),
    }


def node_status(node_ip: str, capacity: Mapping[str, str], now: str) -> dict[str, Any]:
    return {
        "capacity": dict(capacity),
        "allocatable": dict(capacity),
        "conditions": node_conditions(now, now),
        "addresses": [{"type": "InternalIP", "address": node_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "",
            "containerRuntimeVersion": "kwok",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "phase": "Running",
    }


def lease_body(name: str, node_uid: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
        ]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": times.micro(),
        },
    }


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The fields the simulator reads (an informer transform: 150,000 full pods would cost
    gigabytes)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    slim_meta = {
        k: metadata[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")
        if k in metadata
    }
    return {
        "metadata": slim_meta,
        "spec": {
            "nodeName": spec.get("nodeName"),
            "hostNetwork": bool(spec.get("hostNetwork")),
            "containers": [_slim_container(c) for c in spec.get("containers") or []],
            "initContainers": [_slim_container(c) for c in spec.get("initContainers") or []],
        },
        "status": {
            "phase": status.get("phase"),
            "podIP": status.get("podIP"),
            "ready": any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            ),
        },
    }


def _slim_container(container: Mapping[str, Any]) -> dict[str, str]:
    return {"name": container.get("name") or "", "image": container.get("image") or ""}


def pod_status(pod: Mapping[str, Any], host_ip: str, pod_ip: str) -> dict[str, Any]:
    """The ``status`` of ``pod`` (a ``slim_pod``) running on a fake node."""
    now = times.now()
    uid = (pod.get("metadata") or {}).get("uid") or ""

    def container_id(name: str) -> str:
        return "kwok://" + hashlib.sha256(f"{uid}/{name}".encode()).hexdigest()

    spec = pod.get("spec") or {}
    conditions = [
        {"type": ctype, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        for ctype in (
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        )
    ]
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "containerID": container_id(c["name"]),
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            }
            for c in spec.get("containers") or []
        ],
    }
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "containerID": container_id(c["name"]),
                "ready": True,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": now,
                        "finishedAt": now,
                        "containerID": container_id(c["name"]),
                    }
                },
                "lastState": {},
            }
            for c in spec["initContainers"]
        ]
    return status


class IpPool:
    """Pod IPs for one node: host addresses of its pod CIDR, lowest free first (``.1`` is
    skipped: the bridge has it on a real node)."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        self._next = 2
        self._free: list[int] = []
        self._used: set[int] = set()

    def reserve(self, ip: str) -> None:
        """Mark ``ip`` (a pod that already has it) as taken."""
        offset = int(ipaddress.ip_address(ip)) - int(self.network.network_address)
        if 0 <= offset < self.network.num_addresses:
            self._used.add(offset)

    def allocate(self) -> str:
        while self._free:
            offset = self._free.pop()
            if offset not in self._used:
                self._used.add(offset)
                return str(self.network.network_address + offset)
        while self._next in self._used:
            self._next += 1
        if self._next >= self.network.num_addresses - 1:
            raise RuntimeError(f"pod CIDR {self.network} is exhausted")
        offset = self._next
        self._next += 1
        self._used.add(offset)
        return str(self.network.network_address + offset)

    def release(self, ip: str) -> None:
        offset = int(ipaddress.ip_address(ip)) - int(self.network.network_address)
        if offset in self._used:
            self._used.discard(offset)
            self._free.append(offset)
