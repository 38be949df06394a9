"""containerd dies under a running kubelet: the Node says NotReady (with an Event), the kubelet
keeps going, and once containerd is back the pod is still the same running container."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from sampan.client.api import EVENTS, NODES
from tests.support.cluster import BUSYBOX, NodeHarness, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def _condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == ctype:
            return condition
    return {}


async def test_containerd_down_marks_the_node_not_ready(node_image_cache: Path) -> None:
    harness = NodeHarness(node_image_cache)
    harness.kubelet_overrides["kubelet_args"] = {
        "cgroup-root": harness.names.cgroup_root,
        "node-status-update-frequency": "200ms",
    }
    try:
        await harness.start()
        assert harness.client is not None and harness.kubelet is not None
        client = harness.client
        ns = await harness.namespace()
        await harness.create_pod(
            ns,
            {
                "metadata": {"name": "steady"},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}
                    ],
                },
            },
        )

        async def pod_ready() -> dict[str, Any] | None:
            pod = await harness.get_pod(ns, "steady")
            return pod if _condition(pod, "Ready").get("status") == "True" else None

        before = await wait_for(pod_ready, what="pod Ready")

        async def node_ready() -> bool:
            node = await client.get(NODES, harness.node_name)
            return _condition(node, "Ready").get("status") == "True"

        await wait_for(node_ready, what="node Ready")
        containerd = harness.kubelet.runtime_component.containerd
        assert containerd is not None and containerd.pid is not None
        os.kill(containerd.pid, signal.SIGKILL)

        async def node_not_ready() -> dict[str, Any] | None:
            node = await client.get(NODES, harness.node_name)
            ready = _condition(node, "Ready")
            return ready if ready.get("status") == "False" else None

        ready = await wait_for(node_not_ready, what="node NotReady")
        assert ready["reason"] == "KubeletNotReady"
        assert "container runtime" in ready["message"]
        await wait_for(node_ready, what="node Ready again")

        async def not_ready_event() -> bool:
            events = await client.list(EVENTS, namespace="default")
            return any(e.get("reason") == "NodeNotReady" for e in events.get("items") or [])

        await wait_for(not_ready_event, what="NodeNotReady event")
        after = await wait_for(pod_ready, what="pod Ready after the outage")
        old = before["status"]["containerStatuses"][0]
        new = after["status"]["containerStatuses"][0]
        assert (new["containerID"], new["restartCount"]) == (old["containerID"], 0)
    finally:
        await harness.stop()
