"""The Node and the kubelet's life: registration, Lease, graceful delete, restart adoption,
cleanup of pods deleted while the kubelet was down, static pods with mirror pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sampan.client.api import LEASES, NODES, PODS
from sampan.kubelet.logrotate import LogRotator
from sampan.kubelet.runtime import pb
from tests.support.cluster import BUSYBOX, NodeHarness, container_log_path, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _ready(obj: dict[str, Any] | None) -> bool:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


async def _running(node: NodeHarness, ns: str, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        pod = await node.get_pod(ns, name)
        return pod if _ready(pod) else None

    return await wait_for(check, what=f"{name} ready")


async def _gone(node: NodeHarness, ns: str, name: str) -> None:
    async def check() -> bool:
        return await node.get_pod(ns, name) is None

    await wait_for(check, what=f"{name} deleted")


def _sleeper(name: str, command: list[str], grace_s: int = 30) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": grace_s,
            "containers": [{"name": "main", "image": BUSYBOX, "command": command}],
        },
    }


async def test_node_is_registered_ready_with_lease(node: NodeHarness) -> None:
    assert node.client is not None

    async def ready() -> dict[str, Any] | None:
        obj = await node.client.get(NODES, node.node_name)  # type: ignore[union-attr]
        return obj if _ready(obj) else None

    obj = await wait_for(ready, what="node Ready")
    labels = obj["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == node.node_name
    assert labels["kubernetes.io/os"] == "linux"
    status = obj["status"]
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {
        "Ready": "True",
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
    }
    assert int(status["capacity"]["pods"]) == 110
    assert status["allocatable"]["cpu"]
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert any("docker.io/library/busybox:1.36" in i["names"] for i in status["images"])
    lease = await node.client.get(LEASES, node.node_name, namespace="kube-node-lease")
    assert lease["spec"]["holderIdentity"] == node.node_name


async def test_graceful_delete_sends_sigterm_then_deletes(node: NodeHarness, ns: str) -> None:
    assert node.client is not None and node.kubelet is not None
    # Exits on SIGTERM, leaving a mark on the host: proof the signal came before the end.
    out_dir = node.root / f"graceful-{ns}"
    out_dir.mkdir()
    polite = _sleeper(
        "polite",
        [
            "sh",
            "-c",
            "trap 'echo got TERM > /out/mark; exit 0' TERM; while true; do sleep 0.2; done",
        ],
    )
    polite["spec"]["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/out"}]
    polite["spec"]["volumes"] = [
        {"name": "out", "hostPath": {"path": str(out_dir), "type": "Directory"}}
    ]
    await node.create_pod(ns, polite)
    await node.create_pod(
        ns,
        _sleeper("stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"], 2),
    )
    await _running(node, ns, "polite")
    await _running(node, ns, "stubborn")
    await node.client.delete(PODS, "polite", namespace=ns)
    await node.client.delete(PODS, "stubborn", namespace=ns)
    # The stubborn one waits out its grace period (2 s) before SIGKILL; it still goes.
    await _gone(node, ns, "polite")
    await _gone(node, ns, "stubborn")
    assert (out_dir / "mark").read_text() == "got TERM\n"
    sandboxes = await node.kubelet.runtime.list_pod_sandbox(
        pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.namespace": ns})
    )
    assert sandboxes == []


async def test_restart_adopts_containers_and_cleans_up_pods_deleted_while_down(
    node: NodeHarness, ns: str
) -> None:
    assert node.client is not None
    await node.create_pod(ns, _sleeper("survivor", ["sleep", "3600"], 1))
    await node.create_pod(ns, _sleeper("doomed", ["sleep", "3600"], 1))
    before = await _running(node, ns, "survivor")
    doomed = await _running(node, ns, "doomed")
    await node.stop_kubelet()
    # While the agent is down: the pod object goes away for good (forced, as a user would).
    await node.client.delete(PODS, "doomed", namespace=ns, grace_period_s=0)
    await node.start_kubelet()
    kubelet = node.kubelet
    assert kubelet is not None
    doomed_uid = doomed["metadata"]["uid"]

    async def doomed_cleaned() -> bool:
        items = await kubelet.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": doomed_uid})
        )
        return not items

    await wait_for(doomed_cleaned, what="sandbox of the pod deleted while down removed")
    after = await _running(node, ns, "survivor")
    old = before["status"]["containerStatuses"][0]
    new = after["status"]["containerStatuses"][0]
    assert new["containerID"] == old["containerID"]
    assert new["restartCount"] == 0
    containers = await kubelet.runtime.list_containers(
        pb.ContainerFilter(label_selector={"io.kubernetes.pod.uid": before["metadata"]["uid"]})
    )
    assert len(containers) == 1


async def test_static_pod_runs_with_a_mirror_pod(node: NodeHarness) -> None:
    assert node.kubelet is not None and node.client is not None
    manifests = node.kubelet.options.pod_manifests_dir
    manifests.mkdir(parents=True, exist_ok=True)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "static-web", "namespace": "kube-system"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}],
        },
    }
    path = manifests / "static-web.json"
    path.write_text(json.dumps(manifest))
    name = f"static-web-{node.node_name}"
    try:
        mirror = await _running(node, "kube-system", name)
        annotations = mirror["metadata"]["annotations"]
        assert (
            annotations["kubernetes.io/config.mirror"] == annotations["kubernetes.io/config.hash"]
        )
        assert mirror["metadata"]["ownerReferences"][0]["kind"] == "Node"
    finally:
        path.unlink()
    await _gone(node, "kube-system", name)


async def test_lookups_for_the_kubelet_server(node: NodeHarness, ns: str) -> None:
    kubelet = node.kubelet
    assert kubelet is not None
    await node.create_pod(ns, _sleeper("looked-up", ["sh", "-c", "echo line; sleep 3600"], 1))
    await _running(node, ns, "looked-up")
    sandbox_id = await kubelet.pod_sandbox_id(ns, "looked-up")
    cid = await kubelet.pod_container_id(ns, "looked-up", "main")
    assert sandbox_id and cid
    status = await kubelet.runtime.container_status(cid)
    assert status.status.metadata.name == "main"
    assert await kubelet.pod_container_id(ns, "looked-up", "main", previous=True) is None
    assert await kubelet.pod_container_id(ns, "no-such-pod", "main") is None
    path = await container_log_path(kubelet, ns, "looked-up", "main")
    assert path is not None and path.parent.parent == kubelet.pod_log_dir(
        (await node.get_pod(ns, "looked-up")) or {}
    )


async def test_container_logs_rotate(node: NodeHarness, ns: str) -> None:
    kubelet = node.kubelet
    assert kubelet is not None
    script = "yes x | head -c 4000; echo; while true; do echo tick; sleep 0.2; done"
    await node.create_pod(ns, _sleeper("chatty", ["sh", "-c", script], 1))
    await _running(node, ns, "chatty")
    path = await container_log_path(kubelet, ns, "chatty", "main")
    assert path is not None

    async def big() -> bool:
        return path.exists() and path.stat().st_size > 4000

    await wait_for(big, what="log over 4000 bytes")
    rotator = LogRotator(kubelet.runtime, max_size_bytes=1024, max_files=2)
    assert await rotator.rotate_once() >= 1
    rotated = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    assert len(rotated) == 1

    async def reopened() -> bool:
        return path.exists() and "tick" in path.read_text()

    await wait_for(reopened, what="the runtime writing a fresh log file")
    assert path.stat().st_size < 4000
