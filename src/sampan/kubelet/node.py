"""The Node object of this kubelet: registration, status, and the heartbeat Lease.

``NodeAgent`` registers the Node (labels, taints, addresses, capacity and allocatable from
/proc minus the reserved resources, nodeInfo, conditions, images), then keeps two loops:

* status every ``node-status-update-frequency`` (10 s): recompute; write ``nodes/status``
  (a merge patch of the changed fields) only if something changed, or at least every
  ``NODE_STATUS_REPORT_S`` so the heartbeat times stay meaningful;
* the Lease ``kube-node-lease/<node>`` renewed every 10 s (holder = the node).

Ready is False, with upstream's reason and message, while the container runtime does not
answer or reports its network not ready (no CNI configuration yet, i.e. no pod CIDR).
Machine facts (and the node IP when none is given) are read in threads by ``discover()``,
which runs before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sampan.api import times
from sampan.api.quantity import BINARY_SI, DECIMAL_SI, format_canonical
from sampan.client import AlreadyExistsError, Client, ConflictError, NotFoundError
from sampan.client.api import LEASES, NODES, PatchType
from sampan.kubelet.options import KubeletOptions, parse_taint
from sampan.kubelet.runtime import cri
from sampan.version import KUBERNETES_VERSION, __version__

__all__ = [
    "LEASE_DURATION_S",
    "LEASE_NAMESPACE",
    "LEASE_RENEW_S",
    "MachineInfo",
    "NodeAgent",
    "detect_node_ip",
    "read_machine_info",
]

log = logging.getLogger("sampan.kubelet.node")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
NODE_STATUS_REPORT_S = 300.0
MAX_IMAGES_IN_STATUS = 50
DISK_PRESSURE_FREE_FRACTION = 0.10
PID_PRESSURE_USED_FRACTION = 0.90
MEMORY_PRESSURE_AVAILABLE_BYTES = 100 * 1024 * 1024
RUNTIME_STATUS_TIMEOUT_S = 5.0
KUBELET_VERSION = f"{KUBERNETES_VERSION}+sampan{__version__}"


@dataclass(frozen=True)
class MachineInfo:
    cpu_count: int
    memory_bytes: int
    ephemeral_storage_bytes: int
    hugepages: Mapping[str, int]
    machine_id: str
    system_uuid: str
    boot_id: str
    kernel_version: str
    os_image: str
    architecture: str


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return ""


def _meminfo() -> dict[str, int]:
    result = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            value = int(fields[0])
            result[key] = value * 1024 if len(fields) > 1 and fields[1] == "kB" else value
    return result


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
}


def read_machine_info(data_dir: Path) -> MachineInfo:
    """Blocking: /proc, /sys, statvfs."""
    meminfo = _meminfo()
    data_dir.mkdir(parents=True, exist_ok=True)
    vfs = os.statvfs(data_dir)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    hugepages: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/sys/kernel/mm/hugepages").iterdir():
            size_kb = int(entry.name.split("-")[1].rstrip("kB"))
            label = (
                f"hugepages-{size_kb // 1024}Mi"
                if size_kb < 1024 * 1024
                else (f"hugepages-{size_kb // (1024 * 1024)}Gi")
            )
            hugepages[label] = 0
    return MachineInfo(
        cpu_count=cpus or 1,
        memory_bytes=meminfo.get("MemTotal", 0),
        ephemeral_storage_bytes=vfs.f_blocks * vfs.f_frsize,
        hugepages=hugepages,
        machine_id=_read("/etc/machine-id"),
        system_uuid=_read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        kernel_version=platform.release(),
        os_image=_os_image(),
        architecture=_ARCH.get(platform.machine(), platform.machine()),
    )


def detect_node_ip() -> str:
    """The source address of the default route (no packet is sent). Blocking."""
    for family, probe in ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
    return "127.0.0.1"


def _pressure() -> tuple[bool, int]:
    """(memory pressure, available bytes) from /proc/meminfo. Blocking."""
    available = _meminfo().get("MemAvailable", 0)
    return available < MEMORY_PRESSURE_AVAILABLE_BYTES, available


def _disk_pressure(path: Path) -> bool:
    with contextlib.suppress(OSError):
        vfs = os.statvfs(path)
        return vfs.f_bavail < vfs.f_blocks * DISK_PRESSURE_FREE_FRACTION
    return False


def _pid_pressure() -> bool:
    try:
        pid_max = int(_read("/proc/sys/kernel/pid_max") or "32768")
        procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
    except (OSError, ValueError):
        return False
    return procs > pid_max * PID_PRESSURE_USED_FRACTION


def _format_quantity(value: Decimal, *, binary: bool = False) -> str:
    return format_canonical(value, BINARY_SI if binary else DECIMAL_SI)


def _micro_time() -> str:
    return times.micro()


def _now() -> str:
    return times.now()


class NodeAgent:
    """Registers and keeps this kubelet's Node and Lease (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        options: KubeletOptions,
        runtime: Any,  # () -> cri.RuntimeClient | None, images client for the image list
    ) -> None:
        self.client = client
        self.options = options
        self._runtime = runtime
        self.node_ips: tuple[str, ...] = tuple(options.node_ips)
        self._machine: MachineInfo | None = None
        self.node: dict[str, Any] | None = None
        self.runtime_ok = False
        self.runtime_message = ""
        self.network_ok = False
        self.runtime_version = ""
        self._last_write = 0.0
        self._lease: dict[str, Any] | None = None
        self.last_ready: bool | None = None
        self.on_ready_change: Any = None

    async def discover(self) -> None:
        """Read the machine facts and, unless given, the node IP (in threads). Before
        anything else: capacity, labels and the Node's status need them."""
        if not self.node_ips:
            self.node_ips = (await asyncio.to_thread(detect_node_ip),)
        self._machine = await asyncio.to_thread(read_machine_info, self.options.data_dir)

    @property
    def machine(self) -> MachineInfo:
        if self._machine is None:
            raise RuntimeError("NodeAgent.discover() has not run yet")
        return self._machine

    @property
    def name(self) -> str:
        return self.options.node_name

    def capacity(self) -> dict[str, Decimal]:
        return {
            "cpu": Decimal(self.machine.cpu_count),
            "memory": Decimal(self.machine.memory_bytes),
            "ephemeral-storage": Decimal(self.machine.ephemeral_storage_bytes),
            "pods": Decimal(self.options.args.max_pods),
            **{k: Decimal(v) for k, v in self.machine.hugepages.items()},
        }

    def allocatable(self) -> dict[str, Decimal]:
        result = {}
        reserved: dict[str, Decimal] = {}
        for source in (self.options.kube_reserved_q, self.options.system_reserved_q):
            for key, value in source.items():
                reserved[key] = reserved.get(key, Decimal(0)) + value
        for key, value in self.capacity().items():
            left = value - reserved.get(key, Decimal(0))
            if key == "memory":
                left -= MEMORY_PRESSURE_AVAILABLE_BYTES  # the hard eviction threshold
            result[key] = max(Decimal(0), left)
        return result

    def labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self.machine.architecture,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": self.machine.architecture,
        }
        # No node-role label even on a server: NodeRestriction refuses it from a kubelet; the
        # server labels its own Node (sampan.supervisor.server).
        labels.update(self.options.labels)
        return labels

    def _addresses(self) -> list[dict[str, str]]:
        addresses = [{"type": "InternalIP", "address": ip} for ip in self.node_ips]
        addresses += [
            {"type": "ExternalIP", "address": ip} for ip in self.options.node_external_ips
        ]
        addresses.append({"type": "Hostname", "address": self.name})
        return addresses

    async def _images(self) -> list[dict[str, Any]]:
        images_client: cri.ImageClient | None = self._runtime("images")
        if images_client is None:
            return []
        try:
            images = await images_client.list_images()
        except cri.CRIError:
            return []
        result = []
        for image in sorted(images, key=lambda i: i.size, reverse=True)[:MAX_IMAGES_IN_STATUS]:
            names = [*image.repo_digests, *image.repo_tags]
            if names:
                result.append({"names": names, "sizeBytes": int(image.size)})
        return result

    async def probe_runtime(self) -> None:
        runtime: cri.RuntimeClient | None = self._runtime("runtime")
        if runtime is None:
            self.runtime_ok, self.runtime_message = False, "container runtime is not started"
            return
        try:
            async with asyncio.timeout(RUNTIME_STATUS_TIMEOUT_S):
                version = await runtime.version(timeout_s=RUNTIME_STATUS_TIMEOUT_S)
                status = await runtime.status()
        except (cri.CRIError, TimeoutError) as exc:
            self.runtime_ok = False
            self.network_ok = False
            self.runtime_message = f"container runtime is down: {exc}"
            return
        self.runtime_version = f"{version.runtime_name}://{version.runtime_version}"
        conditions = {c.type: c for c in status.status.conditions}
        runtime_ready = conditions.get("RuntimeReady")
        network_ready = conditions.get("NetworkReady")
        self.runtime_ok = bool(runtime_ready and runtime_ready.status)
        self.network_ok = bool(network_ready and network_ready.status)
        if not self.runtime_ok:
            self.runtime_message = (
                "container runtime status check may not have completed yet: "
                f"RuntimeReady=false reason:{runtime_ready.reason if runtime_ready else ''}"
            )
        elif not self.network_ok:
            self.runtime_message = (
                "container runtime network not ready: NetworkReady=false "
                f"reason:{network_ready.reason if network_ready else ''} "
                f"message:{network_ready.message if network_ready else ''}"
            )
        else:
            self.runtime_message = ""

    async def desired_status(self) -> dict[str, Any]:
        await self.probe_runtime()
        memory_pressure, _available = await asyncio.to_thread(_pressure)
        disk_pressure = await asyncio.to_thread(_disk_pressure, self.options.data_dir)
        pid_pressure = await asyncio.to_thread(_pid_pressure)
        ready = self.runtime_ok and self.network_ok
        m = self.machine
        conditions_wanted = [
            (
                "MemoryPressure",
                memory_pressure,
                "KubeletHasInsufficientMemory" if memory_pressure else "KubeletHasSufficientMemory",
                "kubelet has insufficient memory available"
                if memory_pressure
                else "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                disk_pressure,
                "KubeletHasDiskPressure" if disk_pressure else "KubeletHasNoDiskPressure",
                "kubelet has disk pressure" if disk_pressure else "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                pid_pressure,
                "KubeletHasInsufficientPID" if pid_pressure else "KubeletHasSufficientPID",
                "kubelet has insufficient PID available"
                if pid_pressure
                else "kubelet has sufficient PID available",
            ),
            (
                "Ready",
                ready,
                "KubeletReady" if ready else "KubeletNotReady",
                "kubelet is posting ready status" if ready else self.runtime_message,
            ),
        ]
        old_conditions = {
            c.get("type"): c
            for c in ((self.node or {}).get("status") or {}).get("conditions") or []
        }
        now = _now()
        conditions = []
        for ctype, value, reason, message in conditions_wanted:
            status_text = "True" if value else "False"
            previous = old_conditions.get(ctype)
            same = (
                previous is not None
                and previous.get("status") == status_text
                and (previous.get("reason") == reason)
            )
            conditions.append(
                {
                    "type": ctype,
                    "status": status_text,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": (previous or {}).get("lastHeartbeatTime") or now,
                    "lastTransitionTime": (previous or {}).get("lastTransitionTime", now)
                    if same
                    else now,
                }
            )
        for ctype, condition in old_conditions.items():
            if ctype not in {c["type"] for c in conditions}:
                conditions.append(condition)
        if self.last_ready is not None and ready != self.last_ready and self.on_ready_change:
            self.on_ready_change(ready, self.runtime_message)
        self.last_ready = ready
        return {
            "capacity": {
                k: _format_quantity(v, binary=k in ("memory", "ephemeral-storage"))
                for k, v in self.capacity().items()
            },
            "allocatable": {
                k: _format_quantity(v, binary=k in ("memory", "ephemeral-storage"))
                for k, v in self.allocatable().items()
            },
            "conditions": conditions,
            "addresses": self._addresses(),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.options.args.port}},
            "nodeInfo": {
                "machineID": m.machine_id,
                "systemUUID": m.system_uuid,
                "bootID": m.boot_id,
                "kernelVersion": m.kernel_version,
                "osImage": m.os_image,
                "containerRuntimeVersion": self.runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": m.architecture,
            },
            "images": await self._images(),
        }

    async def register(self) -> dict[str, Any]:
        """Create the Node (or adopt the existing one) and write its first status."""
        taints = [parse_taint(t) for t in self.options.taints]
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.labels(),
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": {"taints": taints} if taints else {},
        }
        try:
            node = await self.client.create(NODES, body)
            log.info("registered node %s", self.name)
        except AlreadyExistsError:
            # Taints are the kubelet's only at registration (NodeRestriction refuses a kubelet
            # changing them later), as upstream's --register-with-taints.
            patch: dict[str, Any] = {"metadata": {"labels": self.labels()}}
            node = await self.client.patch(NODES, self.name, patch)
            log.info("node %s already registered; labels updated", self.name)
        self.node = node
        await self.update_status(force=True)
        return self.node

    async def update_status(self, *, force: bool = False) -> None:
        desired = await self.desired_status()
        current = (self.node or {}).get("status") or {}
        loop = asyncio.get_running_loop()
        changed = {k: v for k, v in desired.items() if current.get(k) != v}
        heartbeat_due = loop.time() - self._last_write >= NODE_STATUS_REPORT_S

        # Heartbeat times alone do not count as a change.
        def _strip(conds: Any) -> Any:
            return [{k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in conds or []]

        if "conditions" in changed and _strip(changed["conditions"]) == _strip(
            current.get("conditions")
        ):
            del changed["conditions"]
        if not changed and not heartbeat_due and not force:
            return
        now = _now()
        for condition in desired["conditions"]:
            condition["lastHeartbeatTime"] = now
        changed["conditions"] = desired["conditions"]
        try:
            self.node = await self.client.patch(
                NODES,
                self.name,
                {"status": changed},
                subresource="status",
                patch_type=PatchType.MERGE,
            )
        except NotFoundError:
            log.warning("node %s was deleted; registering again", self.name)
            self.node = None
            await self.register()
            return
        self._last_write = loop.time()

    def observe(self, node: Mapping[str, Any]) -> None:
        """The informer saw our Node (others edit spec, e.g. the pod CIDR)."""
        rv_new = int((node.get("metadata") or {}).get("resourceVersion") or 0)
        rv_old = int(((self.node or {}).get("metadata") or {}).get("resourceVersion") or 0)
        if rv_new >= rv_old:
            self.node = dict(node)

    async def renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": _micro_time(),
            },
        }
        node_uid = ((self.node or {}).get("metadata") or {}).get("uid")
        if node_uid:
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node_uid}
            ]
        if self._lease is not None:
            lease = dict(self._lease)
            lease["spec"] = {**(lease.get("spec") or {}), **body["spec"]}
            try:
                self._lease = await self.client.update(LEASES, lease, namespace=LEASE_NAMESPACE)
                return
            except (ConflictError, NotFoundError):
                self._lease = None
        try:
            current = await self.client.get(LEASES, self.name, namespace=LEASE_NAMESPACE)
        except NotFoundError:
            self._lease = await self.client.create(LEASES, body, namespace=LEASE_NAMESPACE)
            return
        current["spec"] = {**(current.get("spec") or {}), **body["spec"]}
        self._lease = await self.client.update(LEASES, current, namespace=LEASE_NAMESPACE)
