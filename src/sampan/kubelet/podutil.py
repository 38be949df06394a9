"""Pure helpers over Pod dicts: QoS class, resource arithmetic, names and keys.

Nothing here does I/O; every function takes the pod (or a container) as the API returns it.
Upstream's rules are followed: QoS from requests/limits of all containers (init included);
CPU shares = milliCPU * 1024 / 1000 (at least 2); CFS quota = milliCPU * period / 1000.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from sampan.api.quantity import milli_value
from sampan.api.quantity import quantity_or_none as quantity

__all__ = [
    "CFS_PERIOD_US",
    "MIN_CPU_SHARES",
    "all_containers",
    "container_limits",
    "cpu_quota_us",
    "cpu_shares",
    "is_mirror_pod",
    "is_static_pod",
    "milli_cpu",
    "pod_full_name",
    "pod_log_dir",
    "pod_resource_totals",
    "qos_class",
    "quantity",
]

CFS_PERIOD_US = 100_000
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144
MIN_QUOTA_US = 1000
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
SOURCE_ANNOTATION = "kubernetes.io/config.source"
HASH_ANNOTATION = "kubernetes.io/config.hash"
_COMPUTE = ("cpu", "memory")


def milli_cpu(value: Any) -> int | None:
    q = quantity(value)
    return None if q is None else milli_value(q)


def all_containers(pod: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod.get("spec") or {}
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def container_limits(container: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = container.get("resources") or {}
    return dict(resources.get("requests") or {}), dict(resources.get("limits") or {})


def qos_class(pod: Mapping[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, as upstream computes it."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in all_containers(pod):
        reqs, lims = container_limits(container)
        for name in _COMPUTE:
            req = quantity(reqs.get(name))
            lim = quantity(lims.get(name))
            if req is not None and req != 0:
                requests[name] = requests.get(name, Decimal(0)) + req
            if lim is not None and lim != 0:
                limits[name] = limits.get(name, Decimal(0)) + lim
        if not all(quantity(lims.get(name)) for name in _COMPUTE):
            guaranteed = False
        elif any(
            quantity(reqs.get(name)) is not None
            and quantity(reqs.get(name)) != quantity(lims.get(name))
            for name in _COMPUTE
        ):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and set(limits) == set(_COMPUTE):
        return "Guaranteed"
    return "Burstable"


def cpu_shares(milli: int | None) -> int:
    if not milli:
        return MIN_CPU_SHARES
    return max(MIN_CPU_SHARES, min(MAX_CPU_SHARES, milli * 1024 // 1000))


def cpu_quota_us(milli: int | None, period_us: int = CFS_PERIOD_US) -> int:
    """0 means "no quota"."""
    if not milli:
        return 0
    return max(MIN_QUOTA_US, milli * period_us // 1000)


def pod_resource_totals(pod: Mapping[str, Any]) -> tuple[int, int | None, int | None]:
    """(request milliCPU, limit milliCPU or None, memory limit bytes or None) for the pod
    cgroup: requests are summed over app containers (max with any init container); limits
    exist only if every container has one."""
    spec = pod.get("spec") or {}
    req_cpu = 0
    lim_cpu: int | None = 0
    lim_mem: int | None = 0
    for container in spec.get("containers") or []:
        reqs, lims = container_limits(container)
        req_cpu += milli_cpu(reqs.get("cpu")) or milli_cpu(lims.get("cpu")) or 0
        c = milli_cpu(lims.get("cpu"))
        lim_cpu = None if c is None or lim_cpu is None else lim_cpu + c
        m = quantity(lims.get("memory"))
        lim_mem = None if m is None or lim_mem is None else lim_mem + int(m)
    for container in spec.get("initContainers") or []:
        reqs, lims = container_limits(container)
        req_cpu = max(req_cpu, milli_cpu(reqs.get("cpu")) or 0)
        c = milli_cpu(lims.get("cpu"))
        if c is None:
            lim_cpu = None
        elif lim_cpu is not None:
            lim_cpu = max(lim_cpu, c)
        m = quantity(lims.get("memory"))
        if m is None:
            lim_mem = None
        elif lim_mem is not None:
            lim_mem = max(lim_mem, int(m))
    return req_cpu, lim_cpu or None, lim_mem or None


def pod_full_name(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def is_mirror_pod(pod: Mapping[str, Any]) -> bool:
    return MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def is_static_pod(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return annotations.get(SOURCE_ANNOTATION) == "file"


def pod_log_dir(pod_logs_dir: Path, pod: Mapping[str, Any]) -> Path:
    """Where the runtime writes the pod's container logs (upstream's layout:
    ``<pod_logs_dir>/<namespace>_<name>_<uid>``)."""
    meta = pod.get("metadata") or {}
    return pod_logs_dir / f"{meta.get('namespace')}_{meta.get('name')}_{meta.get('uid')}"
