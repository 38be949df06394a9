"""Ephemeral containers on a real node: added through pods/ephemeralcontainers, started once
by the kubelet in the running pod's sandbox, sharing the target container's PID namespace, and
reported in status.ephemeralContainerStatuses."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.client.api import PODS, PatchType
from tests.support.cluster import BUSYBOX, NodeHarness, container_log_path, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _ephemeral_status(pod: dict[str, Any] | None, name: str) -> dict[str, Any]:
    for status in ((pod or {}).get("status") or {}).get("ephemeralContainerStatuses") or []:
        if status.get("name") == name:
            return status
    return {}


async def test_debug_container_sees_the_target_processes(node: NodeHarness, ns: str) -> None:
    assert node.client is not None and node.kubelet is not None
    await node.create_pod(
        ns,
        {
            "metadata": {"name": "x"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "c", "image": BUSYBOX, "command": ["sh", "-c", "exec sleep 3601"]}
                ],
            },
        },
    )

    async def running() -> bool:
        pod = await node.get_pod(ns, "x")
        return ((pod or {}).get("status") or {}).get("phase") == "Running"

    await wait_for(running, what="pod Running")
    # What `kubectl debug pod/x --image=busybox:1.36 --target=c -- ps` sends.
    await node.client.patch(
        PODS,
        "x",
        {
            "spec": {
                "ephemeralContainers": [
                    {
                        "name": "debugger",
                        "image": BUSYBOX,
                        "command": ["ps"],
                        "targetContainerName": "c",
                        "terminationMessagePolicy": "File",
                    }
                ]
            }
        },
        namespace=ns,
        patch_type=PatchType.STRATEGIC,
        subresource="ephemeralcontainers",
    )

    async def finished() -> dict[str, Any] | None:
        status = _ephemeral_status(await node.get_pod(ns, "x"), "debugger")
        return status if "terminated" in (status.get("state") or {}) else None

    status = await wait_for(finished, what="debugger terminated")
    assert status["state"]["terminated"]["exitCode"] == 0
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert status["ready"] is False and status["restartCount"] == 0 and "started" not in status
    assert status["containerID"].startswith("containerd://")
    log_path = await container_log_path(node.kubelet, ns, "x", "debugger")
    assert log_path is not None
    output = log_path.read_text()
    assert "sleep 3601" in output  # the target's process: one PID namespace
    # The pod itself is unaffected and the debugger is not started again.
    pod = await node.get_pod(ns, "x")
    assert pod is not None and pod["status"]["phase"] == "Running"
    [main] = pod["status"]["containerStatuses"]
    assert main["ready"] is True and main["restartCount"] == 0
