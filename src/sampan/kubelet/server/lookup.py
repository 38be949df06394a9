"""Finding a pod's sandbox and containers in the runtime by the names an API request uses.

The kubelet API addresses containers as ``<namespace>/<pod>/<container>``; CRI addresses them
by id. ``PodLookup`` is the seam: ``CRIPodLookup`` answers from the runtime alone, through the
labels every kubelet puts on sandboxes and containers (``io.kubernetes.pod.namespace``,
``io.kubernetes.pod.name``, ``io.kubernetes.container.name``), so it needs no pod manager and
also finds containers a previous kubelet process started. ``PodManagerLookup`` asks the
kubelet's pod manager instead (``sampan.kubelet.Kubelet`` fits ``PodSource``): it resolves a
name to the uid of the pod the kubelet runs now, so a pod deleted and created again under the
same name never shows the old one's containers.

When a name has several sandboxes (a pod deleted and created again with the same name, or a
sandbox being replaced), the ready one created last wins; within it, the container with the
highest attempt is the current one and the one before it is "previous".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sampan.kubelet.runtime import cri, pb

__all__ = [
    "LABEL_CONTAINER_NAME",
    "LABEL_POD_NAME",
    "LABEL_POD_NAMESPACE",
    "LABEL_POD_UID",
    "CRIPodLookup",
    "ContainerRef",
    "NotFoundError",
    "PodLookup",
    "PodManagerLookup",
    "PodSource",
    "SandboxRef",
]

LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"


class NotFoundError(LookupError):
    """No such pod or container on this node (the message says which)."""


@dataclass(frozen=True)
class SandboxRef:
    sandbox_id: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class ContainerRef:
    container_id: str
    sandbox_id: str
    log_path: str
    running: bool


class PodLookup(Protocol):
    async def sandbox(self, namespace: str, pod: str) -> SandboxRef: ...

    async def container(
        self, namespace: str, pod: str, container: str, *, previous: bool = False
    ) -> ContainerRef: ...

    async def is_running(self, container_id: str) -> bool: ...


class CRIPodLookup:
    """``PodLookup`` over a CRI runtime client (see the module docstring)."""

    def __init__(self, runtime: cri.RuntimeClient) -> None:
        self.runtime = runtime

    async def sandbox(self, namespace: str, pod: str) -> SandboxRef:
        sandboxes = await self.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(
                label_selector={LABEL_POD_NAMESPACE: namespace, LABEL_POD_NAME: pod}
            )
        )
        if not sandboxes:
            raise NotFoundError(f'pod "{pod}" in namespace "{namespace}" is not on this node')
        best = max(
            sandboxes,
            key=lambda s: (s.state == pb.PodSandboxState.SANDBOX_READY, s.created_at),
        )
        return SandboxRef(
            sandbox_id=best.id,
            namespace=namespace,
            name=pod,
            uid=best.labels.get(LABEL_POD_UID, best.metadata.uid),
        )

    async def container(
        self, namespace: str, pod: str, container: str, *, previous: bool = False
    ) -> ContainerRef:
        sandbox = await self.sandbox(namespace, pod)
        containers = await self.runtime.list_containers(
            pb.ContainerFilter(
                pod_sandbox_id=sandbox.sandbox_id,
                label_selector={LABEL_CONTAINER_NAME: container},
            )
        )
        containers.sort(key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)
        index = 1 if previous else 0
        if len(containers) <= index:
            if previous:
                raise NotFoundError(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            raise NotFoundError(f'container "{container}" in pod "{pod}" is not available')
        chosen = containers[index]
        try:
            status = (await self.runtime.container_status(chosen.id)).status
        except cri.NotFoundError as exc:
            raise NotFoundError(f'container "{container}" in pod "{pod}" is gone') from exc
        return ContainerRef(
            container_id=chosen.id,
            sandbox_id=sandbox.sandbox_id,
            log_path=status.log_path,
            running=status.state == pb.ContainerState.CONTAINER_RUNNING,
        )

    async def is_running(self, container_id: str) -> bool:
        try:
            status = (await self.runtime.container_status(container_id)).status
        except cri.NotFoundError:
            return False
        return status.state == pb.ContainerState.CONTAINER_RUNNING


class PodSource(Protocol):
    """What ``PodManagerLookup`` needs from the kubelet (``sampan.kubelet.Kubelet`` has it)."""

    @property
    def runtime(self) -> cri.RuntimeClient: ...

    async def pod_sandbox_id(self, namespace: str, pod: str) -> str | None: ...

    async def pod_container_id(
        self, namespace: str, pod: str, container: str, *, previous: bool = False
    ) -> str | None: ...


class PodManagerLookup:
    """``PodLookup`` through the kubelet's own pod manager (see the module docstring)."""

    def __init__(self, source: PodSource) -> None:
        self.source = source

    async def sandbox(self, namespace: str, pod: str) -> SandboxRef:
        sandbox_id = await self.source.pod_sandbox_id(namespace, pod)
        if sandbox_id is None:
            raise NotFoundError(f'pod "{pod}" in namespace "{namespace}" is not on this node')
        try:
            status = (await self.source.runtime.pod_sandbox_status(sandbox_id)).status
        except cri.NotFoundError as exc:
            raise NotFoundError(f'pod "{pod}" in namespace "{namespace}" is gone') from exc
        return SandboxRef(
            sandbox_id=sandbox_id, namespace=namespace, name=pod, uid=status.metadata.uid
        )

    async def container(
        self, namespace: str, pod: str, container: str, *, previous: bool = False
    ) -> ContainerRef:
        container_id = await self.source.pod_container_id(
            namespace, pod, container, previous=previous
        )
        if container_id is None:
            if previous:
                raise NotFoundError(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            raise NotFoundError(f'container "{container}" in pod "{pod}" is not available')
        try:
            status = (await self.source.runtime.container_status(container_id)).status
        except cri.NotFoundError as exc:
            raise NotFoundError(f'container "{container}" in pod "{pod}" is gone') from exc
        return ContainerRef(
            container_id=container_id,
            sandbox_id="",
            log_path=status.log_path,
            running=status.state == pb.ContainerState.CONTAINER_RUNNING,
        )

    async def is_running(self, container_id: str) -> bool:
        try:
            status = (await self.source.runtime.container_status(container_id)).status
        except cri.NotFoundError:
            return False
        return status.state == pb.ContainerState.CONTAINER_RUNNING
