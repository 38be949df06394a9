"""What a pod worker may use of the kubelet: ``PodWorkerHost`` and its narrow parts.

A ``PodWorker`` (``sampan.kubelet.pods``) sees the kubelet only through ``PodWorkerHost``, a
structural ``Protocol`` that ``Kubelet`` satisfies: the CRI runtime and image services, the
volume, probe, cgroup and ConfigMap/Secret managers, the status manager, the event recorder,
a clock, the node's options and facts, and a few questions about the pods the kubelet is
asked to run. Each part is its own small protocol naming only the calls a worker makes, so a
unit test can drive a worker with fakes (``tests/kubelet/test_podworker.py``) and a change to
the kubelet cannot reach into a worker unnoticed.

``Clock`` is the one source of time a worker reads (back-off windows, the grace period left
after a preStop hook, ``activeDeadlineSeconds``, condition transition times);
``SystemClock`` is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sampan.kubelet.env import Sources
from sampan.kubelet.options import KubeletOptions
from sampan.kubelet.probes import ExecRuntime, ProbeTarget
from sampan.kubelet.runtime import pb
from sampan.kubelet.specs import DNSSettings

if TYPE_CHECKING:
    from sampan.kubelet.cgroups import PodCgroupLimits
    from sampan.kubelet.metrics import KubeletMetrics
    from sampan.kubelet.pods import PodWorker
    from sampan.kubelet.volumes import MountedVolume

__all__ = [
    "Clock",
    "EventSink",
    "ImageService",
    "PodCgroups",
    "PodProbes",
    "PodSources",
    "PodStatusWriter",
    "PodVolumes",
    "PodWorkerHost",
    "RuntimeService",
    "SystemClock",
]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware (timestamps written to the API)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class RuntimeService(ExecRuntime, Protocol):
    """The CRI RuntimeService calls a worker makes (``cri.RuntimeClient`` fits)."""

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> list[pb.PodSandbox]: ...

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, *, verbose: bool = False
    ) -> pb.PodSandboxStatusResponse: ...

    async def run_pod_sandbox(
        self, config: pb.PodSandboxConfig, *, runtime_handler: str = ""
    ) -> str: ...

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None: ...

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None: ...

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> list[pb.Container]: ...

    async def container_status(
        self, container_id: str, *, verbose: bool = False
    ) -> pb.ContainerStatusResponse: ...

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: pb.ContainerConfig,
        sandbox_config: pb.PodSandboxConfig,
    ) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, *, grace_period_s: int) -> None:
        """The stop signal, then SIGKILL once ``grace_period_s`` has passed."""
        ...

    async def remove_container(self, container_id: str) -> None: ...


class ImageService(Protocol):
    """The CRI ImageService calls a worker makes (``cri.ImageClient`` fits)."""

    async def image_status(self, image: str) -> pb.Image | None: ...

    async def pull_image(
        self,
        image: str,
        *,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
        timeout_s: float | None = None,
    ) -> str: ...


class PodVolumes(Protocol):
    """``VolumeManager``: a pod's directory and volumes."""

    def pod_dir(self, uid: str) -> Path: ...

    async def setup(
        self, pod: Mapping[str, Any], allocatable: Mapping[str, Decimal]
    ) -> Mapping[str, MountedVolume]: ...

    async def teardown(self, uid: str) -> None: ...


class PodProbes(Protocol):
    """``ProbeManager``: probes of running containers and their latest verdicts."""

    def started(self, cid: str) -> bool: ...

    def ready(self, cid: str) -> bool: ...

    def liveness_failed(self, cid: str) -> str | None: ...

    def tracked(self, cid: str) -> bool: ...

    def ensure(
        self,
        pod_uid: str,
        container: Mapping[str, Any],
        target: ProbeTarget,
        *,
        pod_ref: Mapping[str, Any],
    ) -> None: ...

    async def forget(self, cid: str) -> None: ...

    def containers_of(self, pod_uid: str) -> list[str]: ...


class PodCgroups(Protocol):
    """``CgroupManager``: pod-level cgroups (blocking calls; workers run them in threads)."""

    def ensure(self, cgroup: str, limits: PodCgroupLimits) -> None: ...

    def remove(self, cgroup: str) -> bool: ...


class PodSources(Sources, Protocol):
    """``PodObjects``: the Secrets, ConfigMaps and Services a pod reads."""

    async def prepare(self, uid: str, pod: Mapping[str, Any]) -> None: ...


class PodStatusWriter(Protocol):
    """``StatusManager``: writes a pod's status, deletes its object once it is gone."""

    async def set_pod_status(self, pod: Mapping[str, Any], status: Mapping[str, Any]) -> bool: ...

    async def delete_pod_object(self, pod: Mapping[str, Any]) -> None: ...


class EventSink(Protocol):
    """``EventRecorder``: never blocks."""

    def event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        action: str | None = None,
    ) -> None: ...


class PodWorkerHost(Protocol):
    """Everything a ``PodWorker`` uses of the kubelet (``Kubelet`` fits)."""

    @property
    def options(self) -> KubeletOptions: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def runtime(self) -> RuntimeService: ...

    @property
    def images(self) -> ImageService: ...

    @property
    def volumes(self) -> PodVolumes: ...

    @property
    def probes(self) -> PodProbes: ...

    @property
    def cgroups(self) -> PodCgroups: ...

    @property
    def sources(self) -> PodSources: ...

    @property
    def status_manager(self) -> PodStatusWriter: ...

    @property
    def recorder(self) -> EventSink: ...

    @property
    def metrics(self) -> KubeletMetrics: ...

    # -- the node -------------------------------------------------------------------------

    @property
    def node_ips(self) -> Sequence[str]: ...

    @property
    def allocatable(self) -> Mapping[str, Decimal]: ...

    @property
    def memory_capacity_bytes(self) -> int: ...

    @property
    def dns_settings(self) -> DNSSettings: ...

    @property
    def sandbox_slots(self) -> asyncio.Semaphore:
        """Bounds the sandboxes created at once across workers."""
        ...

    # -- the pods the kubelet runs ------------------------------------------------------------

    def desired_pod(self, uid: str) -> dict[str, Any] | None:
        """The pod as the kubelet should run it now (None: gone from this node)."""
        ...

    def network_ready(self) -> bool: ...

    def master_services(self) -> list[dict[str, Any]]:
        """The ``default/kubernetes`` Service, for the service environment variables."""
        ...

    def wake(self, uid: str) -> None:
        """Have the worker of ``uid`` sync again soon."""
        ...

    def worker_done(self, worker: PodWorker) -> None:
        """Called when a worker's task has ended."""
        ...
