"""What a pod sees: ConfigMap/Secret/downward API volumes and env, updates in place, missing
sources and images, init containers, termination messages, the service-account token."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from sampan.client.api import CONFIGMAPS, PODS, SECRETS
from sampan.kubelet.runtime import pb
from tests.support.cluster import BUSYBOX, NodeHarness, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _pod_where(node: NodeHarness, ns: str, name: str, check: Any, what: str) -> Any:
    async def probe() -> dict[str, Any] | None:
        pod = await node.get_pod(ns, name)
        return pod if pod is not None and check(pod) else None

    return await wait_for(probe, what=what)


def _statuses(pod: dict[str, Any], key: str = "containerStatuses") -> list[dict[str, Any]]:
    return (pod.get("status") or {}).get(key) or []


def _waiting_reason(pod: dict[str, Any]) -> str | None:
    for status in _statuses(pod):
        return ((status.get("state") or {}).get("waiting") or {}).get("reason")
    return None


async def _exec(node: NodeHarness, ns: str, pod: str, command: list[str]) -> str:
    assert node.kubelet is not None
    cid = await node.kubelet.pod_container_id(ns, pod, "main")
    assert cid is not None
    result = await node.kubelet.runtime.exec_sync(cid, command, timeout_s=10)
    return result.stdout.decode()


async def test_configmap_secret_and_downward_api(node: NodeHarness, ns: str) -> None:
    assert node.client is not None
    await node.client.create(
        CONFIGMAPS, {"metadata": {"name": "conf"}, "data": {"greeting": "hello"}}, namespace=ns
    )
    await node.client.create(
        SECRETS,
        {"metadata": {"name": "creds"}, "data": {"password": base64.b64encode(b"s3cr3t").decode()}},
        namespace=ns,
    )
    pod = {
        "metadata": {"name": "reader", "labels": {"app": "reader"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "env": [
                        {
                            "name": "PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {"name": "COMBINED", "value": "$(POD_NAME)-x-$$(KEEP)"},
                    ],
                    "volumeMounts": [
                        {"name": "conf", "mountPath": "/etc/conf"},
                        {"name": "info", "mountPath": "/etc/info"},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
            "volumes": [
                {"name": "conf", "configMap": {"name": "conf"}},
                {
                    "name": "info",
                    "downwardAPI": {
                        "items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
                        ]
                    },
                },
                {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
            ],
        },
    }
    await node.create_pod(ns, pod)
    await _pod_where(node, ns, "reader", lambda p: p["status"].get("phase") == "Running", "Running")
    env = await _exec(node, ns, "reader", ["env"])
    assert "PASSWORD=s3cr3t" in env
    assert "POD_NAME=reader" in env
    assert "COMBINED=reader-x-$(KEEP)" in env
    assert await _exec(node, ns, "reader", ["cat", "/etc/conf/greeting"]) == "hello"
    assert await _exec(node, ns, "reader", ["cat", "/etc/info/labels"]) == 'app="reader"'
    assert await _exec(node, ns, "reader", ["cat", "/etc/info/ns"]) == ns
    mounts = await _exec(node, ns, "reader", ["cat", "/proc/mounts"])
    assert any(" /scratch tmpfs " in line + " " for line in mounts.splitlines())

    await node.client.patch(CONFIGMAPS, "conf", {"data": {"greeting": "bonjour"}}, namespace=ns)

    async def updated() -> bool:
        return await _exec(node, ns, "reader", ["cat", "/etc/conf/greeting"]) == "bonjour"

    await wait_for(updated, what="ConfigMap update in the volume")


async def test_missing_configmap_key_then_recovery(node: NodeHarness, ns: str) -> None:
    assert node.client is not None
    pod = {
        "metadata": {"name": "needs-config"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "env": [
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "late", "key": "mode"}},
                        }
                    ],
                }
            ],
        },
    }
    await node.create_pod(ns, pod)
    await _pod_where(
        node,
        ns,
        "needs-config",
        lambda p: _waiting_reason(p) == "CreateContainerConfigError",
        "CreateContainerConfigError",
    )
    await node.client.create(
        CONFIGMAPS, {"metadata": {"name": "late"}, "data": {"mode": "fast"}}, namespace=ns
    )
    await _pod_where(
        node, ns, "needs-config", lambda p: p["status"].get("phase") == "Running", "recovery"
    )
    assert "MODE=fast" in await _exec(node, ns, "needs-config", ["env"])


async def test_image_never_pulled_and_missing(node: NodeHarness, ns: str) -> None:
    pod = {
        "metadata": {"name": "no-image"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/nothing:1.0",
                    "imagePullPolicy": "Never",
                }
            ]
        },
    }
    await node.create_pod(ns, pod)
    pod = await _pod_where(
        node,
        ns,
        "no-image",
        lambda p: _waiting_reason(p) == "ErrImageNeverPull",
        "ErrImageNeverPull",
    )
    assert pod["status"]["phase"] == "Pending"


async def test_init_containers_run_in_order_and_termination_message(
    node: NodeHarness, ns: str
) -> None:
    pod = {
        "metadata": {"name": "inits"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {
                    "name": "first",
                    "image": BUSYBOX,
                    "command": ["sh", "-c", "echo one > /work/order"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
                {
                    "name": "second",
                    "image": BUSYBOX,
                    "command": ["sh", "-c", "echo two >> /work/order"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
            ],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": [
                        "sh",
                        "-c",
                        "cat /work/order | tr '\\n' ' ' > /dev/termination-log",
                    ],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }
            ],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }
    await node.create_pod(ns, pod)
    pod = await _pod_where(
        node, ns, "inits", lambda p: p["status"].get("phase") == "Succeeded", "Succeeded"
    )
    terminated = _statuses(pod)[0]["state"]["terminated"]
    assert terminated["reason"] == "Completed"
    assert terminated["message"] == "one two "
    inits = _statuses(pod, "initContainerStatuses")
    assert [s["name"] for s in inits] == ["first", "second"]
    assert all(s["state"]["terminated"]["exitCode"] == 0 for s in inits)
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "PodCompleted"


async def test_service_account_token_is_projected(node: NodeHarness, ns: str) -> None:
    pod = {
        "metadata": {"name": "sa"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}],
        },
    }
    created = await node.create_pod(ns, pod)
    volumes = [v["name"] for v in created["spec"].get("volumes") or []]
    if not any(v.startswith("kube-api-access-") for v in volumes):
        pytest.skip("the API server did not inject the service-account volume")
    await _pod_where(node, ns, "sa", lambda p: p["status"].get("phase") == "Running", "Running")
    base = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = await _exec(node, ns, "sa", ["cat", f"{base}/token"])
    assert token.count(".") == 2
    assert "BEGIN CERTIFICATE" in await _exec(node, ns, "sa", ["cat", f"{base}/ca.crt"])
    assert await _exec(node, ns, "sa", ["cat", f"{base}/namespace"]) == ns


async def test_pod_cgroup_has_the_pod_limits(node: NodeHarness, ns: str) -> None:
    pod = {
        "metadata": {"name": "limited"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "16Mi"},
                        "limits": {"cpu": "200m", "memory": "64Mi"},
                    },
                }
            ],
        },
    }
    created = await node.create_pod(ns, pod)
    await _pod_where(node, ns, "limited", lambda p: p["status"].get("phase") == "Running", "run")
    assert node.kubelet is not None
    uid = created["metadata"]["uid"]
    path = f"{node.names.cgroup_root}/burstable/pod{uid}"
    assert node.kubelet.cgroups.pod_uids()[uid] == path
    cgroups = node.kubelet.cgroups
    if not cgroups.v2:
        memory = cgroups.fs / "memory" / path.lstrip("/") / "memory.limit_in_bytes"
        assert memory.read_text().strip() == str(64 * 1024 * 1024)
        quota = cgroups.fs / "cpu" / path.lstrip("/") / "cpu.cfs_quota_us"
        assert quota.read_text().strip() == "20000"
    sandboxes = await node.kubelet.runtime.list_pod_sandbox(
        pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": uid})
    )
    assert len(sandboxes) == 1


async def test_lifecycle_hooks_sidecar_and_cleanup_after_delete(node: NodeHarness, ns: str) -> None:
    assert node.client is not None and node.kubelet is not None
    out_dir = node.root / f"hooks-{ns}"
    out_dir.mkdir()
    volume_mount = [{"name": "out", "mountPath": "/out"}]
    pod = {
        "metadata": {"name": "hooks"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "initContainers": [
                {
                    "name": "sidecar",
                    "image": BUSYBOX,
                    "restartPolicy": "Always",
                    "command": ["sleep", "3600"],
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "volumeMounts": volume_mount,
                    "lifecycle": {
                        "postStart": {"exec": {"command": ["sh", "-c", "echo post > /out/post"]}},
                        "preStop": {"exec": {"command": ["sh", "-c", "echo pre > /out/pre"]}},
                    },
                }
            ],
            "volumes": [{"name": "out", "hostPath": {"path": str(out_dir)}}],
        },
    }
    created = await node.create_pod(ns, pod)
    running = await _pod_where(
        node,
        ns,
        "hooks",
        lambda p: any(
            c.get("type") == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        ),
        "Ready",
    )
    [sidecar] = running["status"]["initContainerStatuses"]
    assert "running" in sidecar["state"]
    assert (out_dir / "post").read_text() == "post\n"
    uid = created["metadata"]["uid"]
    assert uid in node.kubelet.cgroups.pod_uids()
    await node.client.delete(PODS, "hooks", namespace=ns)

    async def gone() -> bool:
        return await node.get_pod(ns, "hooks") is None

    await wait_for(gone, what="pod deleted")
    assert (out_dir / "pre").read_text() == "pre\n"
    assert uid not in node.kubelet.cgroups.pod_uids()
    assert not node.kubelet.volumes.pod_dir(uid).exists()


async def test_finished_pod_is_not_started_again(node: NodeHarness, ns: str) -> None:
    assert node.kubelet is not None
    pod = {
        "metadata": {"name": "once"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["true"]}],
        },
    }
    created = await node.create_pod(ns, pod)
    await _pod_where(node, ns, "once", lambda p: p["status"].get("phase") == "Succeeded", "done")
    uid = created["metadata"]["uid"]
    worker = node.kubelet.workers[uid]
    for _ in range(3):  # several syncs after the end
        worker.wake()
        await worker.first_sync_done.wait()
        await asyncio.sleep(0.3)
    sandboxes = await node.kubelet.runtime.list_pod_sandbox(
        pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": uid})
    )
    assert len(sandboxes) == 1
    assert sandboxes[0].state == pb.PodSandboxState.SANDBOX_NOTREADY


async def test_active_deadline_fails_the_pod(node: NodeHarness, ns: str) -> None:
    pod = {
        "metadata": {"name": "deadline"},
        "spec": {
            "activeDeadlineSeconds": 2,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}],
        },
    }
    await node.create_pod(ns, pod)
    pod = await _pod_where(
        node, ns, "deadline", lambda p: p["status"].get("phase") == "Failed", "Failed"
    )
    assert pod["status"]["reason"] == "DeadlineExceeded"


async def test_security_context_and_secret_volume(node: NodeHarness, ns: str) -> None:
    assert node.client is not None
    await node.client.create(
        SECRETS,
        {"metadata": {"name": "vol"}, "data": {"pw": base64.b64encode(b"hidden").decode()}},
        namespace=ns,
    )
    locked = {
        "metadata": {"name": "locked"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "securityContext": {
                        "runAsUser": 65534,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "s", "mountPath": "/etc/s"}],
                }
            ],
            "volumes": [{"name": "s", "secret": {"secretName": "vol", "defaultMode": 0o444}}],
        },
    }
    root = {
        "metadata": {"name": "rooted"},
        "spec": {
            "securityContext": {"runAsNonRoot": True},
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}],
        },
    }
    await node.create_pod(ns, locked)
    await node.create_pod(ns, root)
    await _pod_where(node, ns, "locked", lambda p: p["status"].get("phase") == "Running", "run")
    assert (await _exec(node, ns, "locked", ["id", "-u"])).strip() == "65534"
    assert await _exec(node, ns, "locked", ["cat", "/etc/s/pw"]) == "hidden"
    touched = await _exec(node, ns, "locked", ["sh", "-c", "touch /x 2>&1 || echo refused"])
    assert "refused" in touched
    pod = await _pod_where(
        node,
        ns,
        "rooted",
        lambda p: _waiting_reason(p) == "CreateContainerConfigError",
        "runAsNonRoot refused",
    )
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "runAsNonRoot" in message
