"""Name -> CRI id resolution: CRIPodLookup (labels) and PodManagerLookup (a pod manager)."""

from __future__ import annotations

import pytest

from sampan.kubelet.runtime import cri, pb
from sampan.kubelet.server import CRIPodLookup, NotFoundError, PodManagerLookup
from tests.kubelet.server.conftest import NodeEnv, restart_container, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")


class UidSource:
    """A pod manager in miniature: it knows which uid a name means now, as the kubelet does."""

    def __init__(self, env: NodeEnv) -> None:
        self.env = env

    @property
    def runtime(self) -> cri.RuntimeClient:
        return self.env.runtime_env.runtime.runtime

    def _uid(self, pod: str) -> str | None:
        return next((p.uid for p in reversed(self.env.pods) if p.name == pod), None)

    async def pod_sandbox_id(self, namespace: str, pod: str) -> str | None:
        uid = self._uid(pod)
        if uid is None:
            return None
        items = await self.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": uid})
        )
        return items[-1].id if items else None

    async def pod_container_id(
        self, namespace: str, pod: str, container: str, *, previous: bool = False
    ) -> str | None:
        uid = self._uid(pod)
        if uid is None:
            return None
        runs = await self.runtime.list_containers(
            pb.ContainerFilter(
                label_selector={
                    "io.kubernetes.pod.uid": uid,
                    "io.kubernetes.container.name": container,
                }
            )
        )
        runs.sort(key=lambda c: c.metadata.attempt)
        index = -2 if previous else -1
        return runs[index].id if len(runs) >= abs(index) else None


@pytest.mark.parametrize("kind", ["cri", "pod-manager"])
async def test_lookup_current_previous_and_missing(node_env: NodeEnv, kind: str) -> None:
    lookup = (
        CRIPodLookup(node_env.runtime_env.runtime.runtime)
        if kind == "cri"
        else PodManagerLookup(UidSource(node_env))
    )
    name = unique("l")
    pod = await node_env.run_pod(name, {"c": ["sleep", "3600"]})
    sandbox = await lookup.sandbox("default", name)
    assert (sandbox.sandbox_id, sandbox.uid) == (pod.sandbox_id, pod.uid)
    first = await lookup.container("default", name, "c")
    assert first.container_id == pod.container_ids["c"] and first.running
    assert first.log_path.endswith("/c/0.log")
    with pytest.raises(NotFoundError, match="previous terminated container"):
        await lookup.container("default", name, "c", previous=True)
    second_id = await restart_container(node_env, pod, "c", ["sleep", "3600"])
    assert (await lookup.container("default", name, "c")).container_id == second_id
    previous = await lookup.container("default", name, "c", previous=True)
    assert previous.container_id == first.container_id and previous.log_path.endswith("/c/0.log")
    assert await lookup.is_running(second_id)
    with pytest.raises(NotFoundError):
        await lookup.container("default", name, "nope")
    with pytest.raises(NotFoundError):
        await lookup.sandbox("default", unique("absent"))
