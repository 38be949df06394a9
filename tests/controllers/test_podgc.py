"""PodGC against a real API server, time from a FakeClock, passes run explicitly."""

from __future__ import annotations

from typing import Any

from sampan.client import Client, NotFoundError
from sampan.client.api import NODES, PODS
from sampan.client.workqueue import FakeClock
from sampan.controllers.base import ControllerManagerOptions
from sampan.controllers.podgc import ORPHAN_QUARANTINE_S, PodGCController

from .conftest import eventually

NS = "default"


def _pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec}


async def _set_phase(client: Client, name: str, phase: str) -> None:
    pod = await client.get(PODS, name, namespace=NS)
    pod["status"] = {"phase": phase}
    await client.update_status(PODS, pod, namespace=NS)


async def _names(client: Client) -> set[str]:
    return {p["metadata"]["name"] for p in (await client.list(PODS, namespace=NS))["items"]}


async def _cache_shows(controller: PodGCController, check) -> bool:
    return controller.healthy() and check(controller.pods.cache.list())


async def test_terminated_pods_beyond_threshold(client: Client, run_controller) -> None:
    await client.create(NODES, {"metadata": {"name": "n1"}})
    for index in range(4):
        await client.create(PODS, _pod(f"done-{index}", "n1"), namespace=NS)
        await _set_phase(client, f"done-{index}", "Succeeded")
    await client.create(PODS, _pod("running", "n1"), namespace=NS)
    options = ControllerManagerOptions(terminated_pod_gc_threshold=2)
    await run_controller(PodGCController, options=options, clock=FakeClock())

    async def collected() -> bool:
        return await _names(client) == {"done-2", "done-3", "running"}

    await eventually(collected)  # the first pass runs as soon as the informers synced


async def test_orphaned_pods_after_quarantine(client: Client, run_controller) -> None:
    await client.create(NODES, {"metadata": {"name": "alive"}})
    await client.create(PODS, _pod("on-alive", "alive"), namespace=NS)
    await client.create(PODS, _pod("on-ghost", "ghost"), namespace=NS)
    clock = FakeClock()
    controller = await run_controller(PodGCController, clock=clock)
    await eventually(lambda: _cache_shows(controller, lambda pods: len(pods) == 2))
    await controller.gc_once()
    assert await _names(client) == {"on-alive", "on-ghost"}  # quarantined, not yet deleted
    clock.advance(ORPHAN_QUARANTINE_S)
    await controller.gc_once()

    async def orphan_gone() -> bool:
        # Advancing the clock also wakes the controller's own loop, whose pass may be the
        # one deleting the pod while ours returns: wait for the deletion, not for our pass.
        return await _names(client) == {"on-alive"}

    await eventually(orphan_gone)


async def test_out_of_service_node_frees_terminating_pods(client: Client, run_controller) -> None:
    await client.create(
        NODES,
        {
            "metadata": {"name": "broken"},
            "spec": {
                "taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]
            },
        },
    )
    await client.create(PODS, _pod("stuck", "broken"), namespace=NS)
    await client.delete(PODS, "stuck", namespace=NS)  # graceful: waits for a kubelet
    controller = await run_controller(PodGCController, clock=FakeClock())

    async def gone() -> bool:
        await controller.gc_once()
        try:
            await client.get(PODS, "stuck", namespace=NS)
        except NotFoundError:
            return True
        return False

    await eventually(gone)
