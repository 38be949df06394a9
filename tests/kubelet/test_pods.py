"""Pod lifecycle on a real node: start, status, logs, restarts, OOM, probes, volumes, delete."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.cluster import BUSYBOX, NodeHarness, container_log_path, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": BUSYBOX, "command": command}
    container.update(spec.pop("container", {}))
    return {
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
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
    log_path = await container_log_path(node.kubelet, ns, "hello", "main")
    assert log_path is not None

    async def logged() -> bool:
        return log_path.exists() and "hello from hello" in log_path.read_text()

    await wait_for(logged, what="log line")


async def _pod_where(
    node: NodeHarness, ns: str, name: str, check: Any, what: str, timeout_s: float = 60.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        pod = await node.get_pod(ns, name)
        return pod if pod is not None and check(pod) else None

    return await wait_for(probe, what=what, timeout_s=timeout_s)


def _main_status(pod: dict[str, Any]) -> dict[str, Any]:
    return ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]


async def test_failing_container_goes_into_crash_loop_backoff(node: NodeHarness, ns: str) -> None:
    await node.create_pod(ns, _pod("crash", ["sh", "-c", "echo bye; exit 1"]))
    pod = await _pod_where(
        node,
        ns,
        "crash",
        lambda p: (
            _main_status(p).get("restartCount", 0) >= 2
            and (_main_status(p).get("state") or {}).get("waiting", {}).get("reason")
            == "CrashLoopBackOff"
        ),
        "CrashLoopBackOff with restarts",
    )
    status = _main_status(pod)
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"
    first = status["restartCount"]
    await _pod_where(
        node, ns, "crash", lambda p: _main_status(p).get("restartCount", 0) > first, "more restarts"
    )


async def test_container_over_its_memory_limit_is_oom_killed(node: NodeHarness, ns: str) -> None:
    pod = _pod(
        "oom",
        ["sh", "-c", "head -c 200m /dev/zero | tail"],
        restartPolicy="Never",
        container={"resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}},
    )
    await node.create_pod(ns, pod)
    pod = await _pod_where(
        node, ns, "oom", lambda p: p["status"].get("phase") == "Failed", "pod Failed"
    )
    terminated = _main_status(pod)["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137
    assert pod["status"]["qosClass"] == "Guaranteed"


async def test_liveness_failure_restarts_and_readiness_failure_keeps_unready(
    node: NodeHarness, ns: str
) -> None:
    liveness = {
        "exec": {"command": ["cat", "/tmp/alive"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    await node.create_pod(
        ns,
        _pod(
            "live",
            ["sh", "-c", "touch /tmp/alive; sleep 1; rm /tmp/alive; sleep 3600"],
            container={"livenessProbe": liveness},
        ),
    )
    readiness = {"exec": {"command": ["false"]}, "periodSeconds": 1}
    await node.create_pod(
        ns, _pod("unready", ["sleep", "3600"], container={"readinessProbe": readiness})
    )
    pod = await _pod_where(
        node,
        ns,
        "live",
        lambda p: _main_status(p).get("restartCount", 0) >= 1,
        "restart after liveness failure",
    )
    assert _main_status(pod)["lastState"]["terminated"]["exitCode"] in (137, 143)
    # By now the readiness probe has failed every second for seconds: still never ready.
    pod = await node.get_pod(ns, "unready")
    assert pod is not None
    assert "running" in _main_status(pod)["state"]
    assert _condition(pod, "Ready") == "False"
    assert _condition(pod, "ContainersReady") == "False"
    assert _main_status(pod)["ready"] is False
    assert _main_status(pod)["restartCount"] == 0


async def test_http_and_tcp_probes_make_a_pod_ready(node: NodeHarness, ns: str) -> None:
    container = {
        "ports": [{"name": "web", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    await node.create_pod(
        ns,
        _pod(
            "web",
            ["sh", "-c", "mkdir /www; echo ok > /www/index.html; httpd -f -p 8080 -h /www"],
            container=container,
        ),
    )
    pod = await _pod_where(node, ns, "web", lambda p: _condition(p, "Ready") == "True", "Ready")
    assert _main_status(pod)["started"] is True


async def test_unpullable_image_backs_off_and_host_network_pod_runs(
    node: NodeHarness, ns: str
) -> None:
    await node.create_pod(
        ns,
        {
            "metadata": {"name": "unpullable"},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "127.0.0.1:1/none/such:1.0",
                        "imagePullPolicy": "IfNotPresent",
                    }
                ]
            },
        },
    )
    await node.create_pod(
        ns, _pod("hostnet", ["sleep", "3600"], hostNetwork=True, terminationGracePeriodSeconds=1)
    )
    seen: set[str] = set()

    def backing_off(pod: dict[str, Any]) -> bool:
        waiting = (_main_status(pod).get("state") or {}).get("waiting") or {}
        seen.add(waiting.get("reason", ""))
        return {"ErrImagePull", "ImagePullBackOff"} <= seen

    await _pod_where(node, ns, "unpullable", backing_off, "ErrImagePull then ImagePullBackOff")
    pod = await _pod_where(node, ns, "hostnet", lambda p: _condition(p, "Ready") == "True", "Ready")
    assert pod["status"]["podIP"] == "127.0.0.1"
