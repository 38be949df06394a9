"""Resource usage of the node, its pods and their containers: the Summary API and
``/metrics/resource``, as the kubelet serves them to metrics-server and Prometheus.

Sources: node CPU and memory from ``/proc``; a pod's CPU and memory from its pod cgroup
(``<cgroup-root>/[burstable|besteffort/]pod<uid>``, cgroup v1 ``cpuacct``/``memory``
hierarchies or the v2 unified tree); a container's from CRI ``ListContainerStats`` (which
reads the container's own cgroup), with its writable layer as ``rootfs``; network from
``/proc/<pid>/net/dev`` of the sandbox process (its pid asked of CRI once per sandbox) and of
the node. A pod whose cgroup
is not found (run straight through CRI) is the sum of its containers.

``usageNanoCores`` is a rate: the provider keeps, per object, the samples of its cumulative
CPU counter and divides the difference between the newest sample and one taken at least
``MIN_RATE_WINDOW_NS`` earlier by the time between them. ``sample()`` is called by the
housekeeping loop (every ``housekeeping_interval``) and by each request, so the first answer
after a start or for a new container lacks ``usageNanoCores`` (as cAdvisor's does) and every
later one has it.

Invariants: a counter is never reported as a rate before two samples exist; samples of objects
that have gone are dropped at the next sample; all file-system reads run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sampan.api import times
from sampan.kubelet.cgroups import CGROUP_FS
from sampan.kubelet.runtime import cri, pb

__all__ = [
    "DEFAULT_HOUSEKEEPING_INTERVAL_S",
    "MIN_RATE_WINDOW_NS",
    "CgroupUsage",
    "StatsProvider",
    "read_cgroup_usage",
    "read_net_dev",
]

log = logging.getLogger("sampan.kubelet.stats")

DEFAULT_HOUSEKEEPING_INTERVAL_S = 10.0
MIN_RATE_WINDOW_NS = 500_000_000
_KEEP_SAMPLES = 4
_TIERS = ("", "burstable", "besteffort")


@dataclass(frozen=True)
class CgroupUsage:
    """One reading of a cgroup (or of the node)."""

    cpu_ns: int | None = None
    memory_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_kv(path: Path) -> dict[str, int]:
    result: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                result[key] = int(value)
    return result


def read_cgroup_usage(cgroup: str, *, fs: Path = CGROUP_FS) -> CgroupUsage | None:
    """Usage of ``cgroup`` (a path below the hierarchy roots) on v1 or v2; None if absent.

    Working set as upstream: usage minus inactive file pages (never below zero)."""
    rel = cgroup.lstrip("/")
    if (fs / "cgroup.controllers").exists():  # pure v2
        directory = fs / rel
        if not directory.is_dir():
            return None
        cpu = _read_kv(directory / "cpu.stat")
        mem = _read_kv(directory / "memory.stat")
        usage = _read_int(directory / "memory.current")
        inactive = mem.get("inactive_file", 0)
        return CgroupUsage(
            cpu_ns=cpu["usage_usec"] * 1000 if "usage_usec" in cpu else None,
            memory_usage=usage,
            working_set=max(0, usage - inactive) if usage is not None else None,
            rss=mem.get("anon"),
            page_faults=mem.get("pgfault"),
            major_page_faults=mem.get("pgmajfault"),
        )
    memory = fs / "memory" / rel
    cpuacct = fs / "cpuacct" / rel
    if not cpuacct.is_dir():
        cpuacct = fs / "cpu,cpuacct" / rel
    if not memory.is_dir() and not cpuacct.is_dir():
        return None
    mem = _read_kv(memory / "memory.stat")
    usage = _read_int(memory / "memory.usage_in_bytes")
    inactive = mem.get("total_inactive_file", 0)
    return CgroupUsage(
        cpu_ns=_read_int(cpuacct / "cpuacct.usage"),
        memory_usage=usage,
        working_set=max(0, usage - inactive) if usage is not None else None,
        rss=mem.get("total_rss"),
        page_faults=mem.get("total_pgfault"),
        major_page_faults=mem.get("total_pgmajfault"),
    )


def _node_usage() -> tuple[CgroupUsage, int | None]:
    """Node CPU time (all CPUs, busy ticks) and memory from /proc; and MemAvailable."""
    cpu_ns = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        ticks = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        # guest time is already counted in user/nice
        busy = sum(ticks[:8]) - idle
        cpu_ns = busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    info: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    total = info.get("MemTotal")
    available = info.get("MemAvailable")
    usage = total - info["MemFree"] if total is not None and "MemFree" in info else None
    working = total - available if total is not None and available is not None else None
    return (
        CgroupUsage(cpu_ns=cpu_ns, memory_usage=usage, working_set=working, rss=None),
        available,
    )


def read_net_dev(path: Path) -> list[dict[str, Any]]:
    """Interfaces of a network namespace (``/proc/<pid>/net/dev``) but ``lo``, as the Summary
    API's ``InterfaceStats``; empty when unreadable."""
    result: list[dict[str, Any]] = []
    try:
        lines = path.read_text().splitlines()[2:]
    except OSError:
        return result
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        fields = rest.split()
        if name == "lo" or len(fields) < 11:
            continue
        with contextlib.suppress(ValueError):
            result.append(
                {
                    "name": name,
                    "rxBytes": int(fields[0]),
                    "rxErrors": int(fields[2]),
                    "txBytes": int(fields[8]),
                    "txErrors": int(fields[10]),
                }
            )
    return result


def _network(interfaces: list[dict[str, Any]], at: str, default: str = "eth0") -> dict[str, Any]:
    """``NetworkStats``: the default interface's figures inline, every interface listed."""
    result: dict[str, Any] = {"time": at}
    if not interfaces:
        return result
    main = next((i for i in interfaces if i["name"] == default), None)
    if main is None:
        main = max(interfaces, key=lambda i: i["rxBytes"] + i["txBytes"])
    result.update(main)
    result["interfaces"] = interfaces
    return result


def _rfc3339(ns: int) -> str:
    return times.rfc3339(times.from_unix(ns / 1e9))


@dataclass
class _Series:
    """Samples (time ns, cumulative CPU ns) of one object, oldest first."""

    samples: list[tuple[int, int]] = field(default_factory=list)

    def add(self, at: int, value: int) -> None:
        if self.samples and at <= self.samples[-1][0]:
            return
        if self.samples and value < self.samples[-1][1]:  # counter reset: a new object
            self.samples.clear()
        self.samples.append((at, value))
        del self.samples[:-_KEEP_SAMPLES]

    def rate(self) -> int | None:
        if len(self.samples) < 2:
            return None
        at, value = self.samples[-1]
        for earlier_at, earlier in reversed(self.samples[:-1]):
            if at - earlier_at >= MIN_RATE_WINDOW_NS:
                return (value - earlier) * 1_000_000_000 // (at - earlier_at)
        earlier_at, earlier = self.samples[0]
        return (value - earlier) * 1_000_000_000 // (at - earlier_at)


@dataclass
class _ContainerReading:
    name: str
    container_id: str
    started_ns: int
    at: int
    cpu_ns: int | None
    working_set: int | None
    usage: int | None
    rss: int | None
    rootfs_used: int | None
    image: str = ""


@dataclass
class _PodReading:
    name: str
    namespace: str
    uid: str
    started_ns: int
    at: int
    cgroup: CgroupUsage | None
    containers: list[_ContainerReading]
    network: list[dict[str, Any]] = field(default_factory=list)
    cgroup_path: str = ""


@dataclass
class _Snapshot:
    at: int
    node: CgroupUsage
    available: int | None
    pods: list[_PodReading]
    network: list[dict[str, Any]] = field(default_factory=list)


class StatsProvider:
    """Reads usage and keeps CPU rate samples. ``clock`` returns wall time in ns (tests)."""

    def __init__(
        self,
        runtime: cri.RuntimeClient,
        *,
        node_name: str,
        cgroup_root: str = "/kubepods",
        fs: Path = CGROUP_FS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.cgroup_root = cgroup_root.rstrip("/")
        self.fs = fs
        self.clock = clock
        self.started_ns = clock()
        self._series: dict[str, _Series] = {}
        self._sandbox_pids: dict[str, int] = {}
        self._lock = asyncio.Lock()

    # --- sampling ------------------------------------------------------------------------

    def _pod_cgroup(self, uid: str) -> str | None:
        v2 = (self.fs / "cgroup.controllers").exists()
        hierarchy = self.fs if v2 else self.fs / "memory"
        for tier in _TIERS:
            cgroup = "/".join(p for p in (self.cgroup_root, tier, f"pod{uid}") if p)
            if (hierarchy / cgroup.lstrip("/")).is_dir():
                return cgroup
        return None

    def _read_pods(
        self, sandboxes: list[pb.PodSandbox]
    ) -> dict[str, tuple[str, CgroupUsage | None]]:
        result: dict[str, tuple[str, CgroupUsage | None]] = {}
        for sandbox in sandboxes:
            cgroup = self._pod_cgroup(sandbox.metadata.uid)
            if cgroup is None:
                result[sandbox.id] = ("", None)
            else:
                result[sandbox.id] = (cgroup, read_cgroup_usage(cgroup, fs=self.fs))
        return result

    async def _pids(self, sandboxes: list[pb.PodSandbox]) -> dict[str, int]:
        """The sandbox (pause) process of each sandbox, asked of the runtime once."""
        live = {s.id for s in sandboxes}
        for gone in set(self._sandbox_pids) - live:
            del self._sandbox_pids[gone]
        for sandbox in sandboxes:
            if sandbox.id in self._sandbox_pids:
                continue
            try:
                status = await self.runtime.pod_sandbox_status(sandbox.id, verbose=True)
                pid = int(json.loads(status.info.get("info", "{}")).get("pid") or 0)
            except (cri.CRIError, ValueError, TypeError):
                continue
            if pid > 0:
                self._sandbox_pids[sandbox.id] = pid
        return dict(self._sandbox_pids)

    def _read_networks(self, pids: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        return {sid: read_net_dev(Path(f"/proc/{pid}/net/dev")) for sid, pid in pids.items()}

    async def sample(self) -> _Snapshot:
        """Read everything once and record the CPU counters."""
        sandboxes = [
            s
            for s in await self.runtime.list_pod_sandbox()
            if s.state == pb.PodSandboxState.SANDBOX_READY
        ]
        containers = {c.id: c for c in await self.runtime.list_containers()}
        stats = await self.runtime.list_container_stats()
        node, available = await asyncio.to_thread(_node_usage)
        pod_cgroups = await asyncio.to_thread(self._read_pods, sandboxes)
        networks = await asyncio.to_thread(self._read_networks, await self._pids(sandboxes))
        node_network = await asyncio.to_thread(read_net_dev, Path("/proc/net/dev"))
        at = self.clock()
        by_sandbox: dict[str, list[_ContainerReading]] = {}
        for stat in stats:
            container = containers.get(stat.attributes.id)
            if container is None or container.state != pb.ContainerState.CONTAINER_RUNNING:
                continue
            cpu = stat.cpu
            memory = stat.memory
            by_sandbox.setdefault(container.pod_sandbox_id, []).append(
                _ContainerReading(
                    name=container.metadata.name,
                    container_id=container.id,
                    image=container.image.image or container.image_ref,
                    started_ns=container.created_at,
                    at=cpu.timestamp or at,
                    cpu_ns=cpu.usage_core_nano_seconds.value
                    if cpu.HasField("usage_core_nano_seconds")
                    else None,
                    working_set=memory.working_set_bytes.value
                    if memory.HasField("working_set_bytes")
                    else None,
                    usage=memory.usage_bytes.value if memory.HasField("usage_bytes") else None,
                    rss=memory.rss_bytes.value if memory.HasField("rss_bytes") else None,
                    rootfs_used=stat.writable_layer.used_bytes.value
                    if stat.HasField("writable_layer")
                    else None,
                )
            )
        pods = [
            _PodReading(
                name=s.metadata.name,
                namespace=s.metadata.namespace,
                uid=s.metadata.uid,
                started_ns=s.created_at,
                at=at,
                cgroup=pod_cgroups.get(s.id, ("", None))[1],
                cgroup_path=pod_cgroups.get(s.id, ("", None))[0],
                containers=sorted(by_sandbox.get(s.id, []), key=lambda c: c.name),
                network=networks.get(s.id, []),
            )
            for s in sandboxes
        ]
        snapshot = _Snapshot(at=at, node=node, available=available, pods=pods, network=node_network)
        self._record(snapshot)
        return snapshot

    def _record(self, snapshot: _Snapshot) -> None:
        seen: set[str] = set()

        def add(key: str, at: int, value: int | None) -> None:
            if value is None:
                return
            seen.add(key)
            self._series.setdefault(key, _Series()).add(at, value)

        add("node", snapshot.at, snapshot.node.cpu_ns)
        for pod in snapshot.pods:
            add(f"pod/{pod.uid}", pod.at, _pod_cpu(pod))
            for c in pod.containers:
                add(f"container/{c.container_id}", c.at, c.cpu_ns)
        for key in set(self._series) - seen:
            del self._series[key]

    def _rate(self, key: str) -> int | None:
        series = self._series.get(key)
        return series.rate() if series is not None else None

    async def run_housekeeping(self, interval_s: float = DEFAULT_HOUSEKEEPING_INTERVAL_S) -> None:
        """Sample forever (a task the kubelet server owns): keeps rates fresh between
        scrapes. A failing runtime is logged and retried at the next tick."""
        while True:
            try:
                async with self._lock:
                    await self.sample()
            except cri.CRIError as exc:
                log.debug("stats housekeeping: %s", exc)
            except Exception:
                log.exception("stats housekeeping failed")
            await asyncio.sleep(interval_s)

    async def _fresh(self) -> _Snapshot:
        async with self._lock:
            return await self.sample()

    # --- Summary API ---------------------------------------------------------------------

    async def summary(self) -> dict[str, Any]:
        """``/stats/summary`` (the shape of upstream's ``stats/v1alpha1.Summary``)."""
        snap = await self._fresh()
        node_time = _rfc3339(snap.at)
        node_memory: dict[str, Any] = {"time": node_time}
        _put(node_memory, "availableBytes", snap.available)
        _put(node_memory, "usageBytes", snap.node.memory_usage)
        _put(node_memory, "workingSetBytes", snap.node.working_set)
        node_cpu: dict[str, Any] = {"time": node_time}
        _put(node_cpu, "usageNanoCores", self._rate("node"))
        _put(node_cpu, "usageCoreNanoSeconds", snap.node.cpu_ns)
        fs = await asyncio.to_thread(_fs_stats, "/")
        node = {
            "nodeName": self.node_name,
            "startTime": _rfc3339(self.started_ns),
            "cpu": node_cpu,
            "memory": node_memory,
            "network": _network(snap.network, node_time),
            "fs": dict(fs, time=node_time),
            "systemContainers": [],
        }
        return {"node": node, "pods": [self._pod_summary(p) for p in snap.pods]}

    def _pod_summary(self, pod: _PodReading) -> dict[str, Any]:
        containers = []
        for c in pod.containers:
            at = _rfc3339(c.at)
            cpu: dict[str, Any] = {"time": at}
            _put(cpu, "usageNanoCores", self._rate(f"container/{c.container_id}"))
            _put(cpu, "usageCoreNanoSeconds", c.cpu_ns)
            memory: dict[str, Any] = {"time": at}
            _put(memory, "usageBytes", c.usage)
            _put(memory, "workingSetBytes", c.working_set)
            _put(memory, "rssBytes", c.rss)
            entry: dict[str, Any] = {
                "name": c.name,
                "startTime": _rfc3339(c.started_ns),
                "cpu": cpu,
                "memory": memory,
            }
            if c.rootfs_used is not None:
                entry["rootfs"] = {"time": at, "usedBytes": c.rootfs_used}
            containers.append(entry)
        at = _rfc3339(pod.at)
        cpu = {"time": at}
        memory = {"time": at}
        _put(cpu, "usageNanoCores", self._rate(f"pod/{pod.uid}"))
        _put(cpu, "usageCoreNanoSeconds", _pod_cpu(pod))
        if pod.cgroup is not None:
            _put(memory, "usageBytes", pod.cgroup.memory_usage)
            _put(memory, "workingSetBytes", pod.cgroup.working_set)
            _put(memory, "rssBytes", pod.cgroup.rss)
            _put(memory, "pageFaults", pod.cgroup.page_faults)
            _put(memory, "majorPageFaults", pod.cgroup.major_page_faults)
        else:
            _put(memory, "usageBytes", _total(c.usage for c in pod.containers))
            _put(memory, "workingSetBytes", _total(c.working_set for c in pod.containers))
            _put(memory, "rssBytes", _total(c.rss for c in pod.containers))
        result: dict[str, Any] = {
            "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "startTime": _rfc3339(pod.started_ns),
            "containers": containers,
            "cpu": cpu,
            "memory": memory,
            "network": _network(pod.network, at),
        }
        used = _total(c.rootfs_used for c in pod.containers)
        if used is not None:
            result["ephemeral-storage"] = {"time": at, "usedBytes": used}
        return result

    async def cadvisor_metrics(self) -> bytes:
        """``/metrics/cadvisor``: the container series kube-prometheus' dashboards read."""
        snap = await self._fresh()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_CadvisorCollector(snap))
        return generate_latest(registry)

    async def kubelet_metrics(self, shared: CollectorRegistry | None = None) -> bytes:
        """``/metrics``: the kubelet's own gauges (``kubelet_running_pods``,
        ``kubelet_running_containers``) with the names upstream uses, then every series of
        ``shared`` (the node registry: ``kubelet_pod_start_duration_seconds``, the proxy's
        and DNS server's series)."""
        snap = await self._fresh()
        registry = CollectorRegistry(auto_describe=False)
        if shared is not None:
            registry.register(_Forward(shared))
        pods = GaugeMetricFamily(
            "kubelet_running_pods", "[ALPHA] Number of pods that have a running pod sandbox"
        )
        pods.add_metric([], len(snap.pods))
        containers = GaugeMetricFamily(
            "kubelet_running_containers",
            "[ALPHA] Number of containers currently running",
            labels=["container_state"],
        )
        containers.add_metric(["running"], sum(len(p.containers) for p in snap.pods))
        registry.register(_Fixed([pods, containers]))
        return generate_latest(registry)

    # --- /metrics/resource ---------------------------------------------------------------

    async def resource_metrics(self) -> bytes:
        """``/metrics/resource`` in the Prometheus text format (names and labels as upstream)."""
        snap = await self._fresh()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ResourceCollector(snap))
        return generate_latest(registry)


def _pod_cpu(pod: _PodReading) -> int | None:
    if pod.cgroup is not None and pod.cgroup.cpu_ns is not None:
        return pod.cgroup.cpu_ns
    return _total(c.cpu_ns for c in pod.containers)


def _total(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _put(target: dict[str, Any], key: str, value: int | None) -> None:
    if value is not None:
        target[key] = value


def _fs_stats(path: str) -> dict[str, int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return {}
    return {
        "availableBytes": st.f_bavail * st.f_frsize,
        "capacityBytes": st.f_blocks * st.f_frsize,
        "usedBytes": (st.f_blocks - st.f_bfree) * st.f_frsize,
        "inodesFree": st.f_ffree,
        "inodes": st.f_files,
        "inodesUsed": st.f_files - st.f_ffree,
    }


class _ResourceCollector(Collector):
    """One scrape's families, each sample stamped with the time it was read."""

    def __init__(self, snap: _Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterable[Any]:
        snap = self.snap
        node_ts = snap.at / 1e9
        node_cpu = CounterMetricFamily(
            "node_cpu_usage_seconds",
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        )
        node_memory = GaugeMetricFamily(
            "node_memory_working_set_bytes",
            "[STABLE] Current working set of the node in bytes",
        )
        if snap.node.cpu_ns is not None:
            node_cpu.add_metric([], snap.node.cpu_ns / 1e9, timestamp=node_ts)
        if snap.node.working_set is not None:
            node_memory.add_metric([], snap.node.working_set, timestamp=node_ts)
        pod_labels = ["namespace", "pod"]
        container_labels = ["container", "namespace", "pod"]
        pod_cpu = CounterMetricFamily(
            "pod_cpu_usage_seconds",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            labels=pod_labels,
        )
        pod_memory = GaugeMetricFamily(
            "pod_memory_working_set_bytes",
            "[STABLE] Current working set of the pod in bytes",
            labels=pod_labels,
        )
        container_cpu = CounterMetricFamily(
            "container_cpu_usage_seconds",
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            labels=container_labels,
        )
        container_memory = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "[STABLE] Current working set of the container in bytes",
            labels=container_labels,
        )
        container_start = GaugeMetricFamily(
            "container_start_time_seconds",
            "[STABLE] Start time of the container since unix epoch in seconds",
            labels=container_labels,
        )
        for pod in snap.pods:
            labels = [pod.namespace, pod.name]
            ts = pod.at / 1e9
            cpu = _pod_cpu(pod)
            if cpu is not None:
                pod_cpu.add_metric(labels, cpu / 1e9, timestamp=ts)
            working = (
                pod.cgroup.working_set
                if pod.cgroup is not None
                else _total(c.working_set for c in pod.containers)
            )
            if working is not None:
                pod_memory.add_metric(labels, working, timestamp=ts)
            for c in pod.containers:
                clabels = [c.name, pod.namespace, pod.name]
                cts = c.at / 1e9
                if c.cpu_ns is not None:
                    container_cpu.add_metric(clabels, c.cpu_ns / 1e9, timestamp=cts)
                if c.working_set is not None:
                    container_memory.add_metric(clabels, c.working_set, timestamp=cts)
                container_start.add_metric(clabels, c.started_ns / 1e9, timestamp=cts)
        scrape_error = GaugeMetricFamily(
            "resource_scrape_error",
            "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        )
        scrape_error.add_metric([], 0)
        yield from (
            container_cpu,
            container_memory,
            container_start,
            node_cpu,
            node_memory,
            pod_cpu,
            pod_memory,
            scrape_error,
        )


_CADVISOR_LABELS = ["container", "id", "image", "name", "namespace", "pod"]


class _CadvisorCollector(Collector):
    """cAdvisor's names and labels: one series per container (``id`` its cgroup, ``name`` its
    runtime id) and one per pod (``container=""``, ``id`` the pod cgroup)."""

    def __init__(self, snap: _Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterable[Any]:
        cpu = CounterMetricFamily(
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed in seconds.",
            labels=[*_CADVISOR_LABELS, "cpu"],
        )
        working = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            labels=_CADVISOR_LABELS,
        )
        usage = GaugeMetricFamily(
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was "
            "accessed",
            labels=_CADVISOR_LABELS,
        )
        rss = GaugeMetricFamily(
            "container_memory_rss", "Size of RSS in bytes.", labels=_CADVISOR_LABELS
        )
        rx = CounterMetricFamily(
            "container_network_receive_bytes",
            "Cumulative count of bytes received",
            labels=[*_CADVISOR_LABELS, "interface"],
        )
        tx = CounterMetricFamily(
            "container_network_transmit_bytes",
            "Cumulative count of bytes transmitted",
            labels=[*_CADVISOR_LABELS, "interface"],
        )
        rx_errors = CounterMetricFamily(
            "container_network_receive_errors",
            "Cumulative count of errors encountered while receiving",
            labels=[*_CADVISOR_LABELS, "interface"],
        )
        tx_errors = CounterMetricFamily(
            "container_network_transmit_errors",
            "Cumulative count of errors encountered while transmitting",
            labels=[*_CADVISOR_LABELS, "interface"],
        )
        for pod in self.snap.pods:
            ts = pod.at / 1e9
            pod_id = pod.cgroup_path
            base = ["", pod_id, "", "", pod.namespace, pod.name]
            pod_cpu = _pod_cpu(pod)
            if pod_cpu is not None:
                cpu.add_metric([*base, "total"], pod_cpu / 1e9, timestamp=ts)
            if pod.cgroup is not None:
                for family, value in (
                    (working, pod.cgroup.working_set),
                    (usage, pod.cgroup.memory_usage),
                    (rss, pod.cgroup.rss),
                ):
                    if value is not None:
                        family.add_metric(base, value, timestamp=ts)
            for iface in pod.network:
                labels = [*base, iface["name"]]
                rx.add_metric(labels, iface["rxBytes"], timestamp=ts)
                tx.add_metric(labels, iface["txBytes"], timestamp=ts)
                rx_errors.add_metric(labels, iface["rxErrors"], timestamp=ts)
                tx_errors.add_metric(labels, iface["txErrors"], timestamp=ts)
            for c in pod.containers:
                cts = c.at / 1e9
                cid = f"{pod_id}/{c.container_id}" if pod_id else c.container_id
                labels = [c.name, cid, c.image, c.container_id, pod.namespace, pod.name]
                if c.cpu_ns is not None:
                    cpu.add_metric([*labels, "total"], c.cpu_ns / 1e9, timestamp=cts)
                for family, value in ((working, c.working_set), (usage, c.usage), (rss, c.rss)):
                    if value is not None:
                        family.add_metric(labels, value, timestamp=cts)
        yield from (cpu, working, usage, rss, rx, tx, rx_errors, tx_errors)


class _Forward(Collector):
    """Every family of another registry (scraped together with this one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        yield from self.registry.collect()


class _Fixed(Collector):
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        yield from self.families
