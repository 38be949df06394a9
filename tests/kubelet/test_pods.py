"""Pod lifecycle on a real node: start, status, logs, restarts, OOM, probes, volumes, delete."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.cluster import BUSYBOX, NodeHarness, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": BUSYBOX, "command": command}
    container.update(spec.pop("container", {}))
    return {
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec},
    }


def _condition(pod: dict[str, Any] | None, ctype: str) -> str | None:
    for condition in ((pod or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == ctype:
            return condition.get("status")
    return None


async def test_pod_runs_and_becomes_ready(node: NodeHarness, ns: str) -> None:
    await node.create_pod(ns, _pod("hello", ["sh", "-c", "echo hello from $HOSTNAME; sleep 3600"]))

    async def ready() -> dict[str, Any] | None:
        pod = await node.get_pod(ns, "hello")
        return pod if _condition(pod, "Ready") == "True" else None

    pod = await wait_for(ready, what="pod Ready")
    status = pod["status"]
    assert status["phase"] == "Running"
    assert status["podIP"].startswith(node.names.pod_subnet.rsplit(".", 1)[0])
    assert status["qosClass"] == "BestEffort"
    [cs] = status["containerStatuses"]
    assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]
    assert cs["containerID"].startswith("containerd://")
    assert node.kubelet is not None
    log_path = await node.kubelet.container_log_path(ns, "hello", "main")
    assert log_path is not None

    async def logged() -> bool:
        return log_path.exists() and "hello from hello" in log_path.read_text()

    await wait_for(logged, what="log line")
