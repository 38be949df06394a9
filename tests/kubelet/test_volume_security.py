"""Pod files on the host are the pod's only: the kubelet's directories are 0750 root:root so
another host user cannot read a Secret or a token, while the containers (root, a runAsUser
with fsGroup, a runAsUser without) still read their volumes; seccompProfile RuntimeDefault
is applied; a static pod whose security fields have the wrong type is not started at all."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sampan.client.api import SECRETS
from sampan.kubelet.runtime import pb
from sampan.kubelet.specs import LABEL_POD_UID
from tests.support.cluster import BUSYBOX, NodeHarness, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOBODY = 65534


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
        capture_output=True,
        text=True,
        check=False,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pod(name: str, security: dict[str, Any], secret_mode: int | None = None) -> dict[str, Any]:
    secret: dict[str, Any] = {"secretName": "creds"}
    if secret_mode is not None:
        secret["defaultMode"] = secret_mode
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "securityContext": security,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "volumeMounts": [
                        {"name": "s", "mountPath": "/etc/s"},
                        {"name": "t", "mountPath": "/var/run/t"},
                    ],
                }
            ],
            "volumes": [
                {"name": "s", "secret": secret},
                {
                    "name": "t",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token"}},
                            {"secret": {"name": "creds"}},
                        ]
                    },
                },
            ],
        },
    }


async def _running(node: NodeHarness, ns: str, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        pod = await node.get_pod(ns, name)
        return pod if pod and (pod.get("status") or {}).get("phase") == "Running" else None

    return await wait_for(check, what=f"{name} Running")


async def _exec(node: NodeHarness, ns: str, pod: str, command: list[str]) -> tuple[int, str]:
    assert node.kubelet is not None
    cid = await node.kubelet.pod_container_id(ns, pod, "main")
    assert cid is not None
    result = await node.kubelet.runtime.exec_sync(cid, command, timeout_s=10)
    return result.exit_code, (result.stdout + result.stderr).decode()


async def test_secret_and_token_files_are_reachable_by_the_pod_only(
    node: NodeHarness, ns: str
) -> None:
    assert node.client is not None and node.kubelet is not None
    # The harness's temp dirs are 0700: open them so that only the kubelet's own
    # directories stand between another host user and the pod files.
    for directory in (node.root, node.data_dir, node.data_dir / "agent"):
        os.chmod(directory, 0o755)
    await node.client.create(
        SECRETS,
        {"metadata": {"name": "creds"}, "data": {"password": base64.b64encode(b"s3cr3t").decode()}},
        namespace=ns,
    )
    pods = {
        "as-root": _pod("as-root", {}),
        "with-fsgroup": _pod(
            "with-fsgroup",
            {"runAsUser": 1000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
            0o400,
        ),
        "without-fsgroup": _pod("without-fsgroup", {"runAsUser": 1000}),
    }
    for pod in pods.values():
        await node.create_pod(ns, pod)
    uids = {name: (await _running(node, ns, name))["metadata"]["uid"] for name in pods}

    for name in pods:
        assert await _exec(node, ns, name, ["cat", "/etc/s/password"]) == (0, "s3cr3t"), name
        code, token = await _exec(node, ns, name, ["cat", "/var/run/t/token"])
        assert code == 0 and token.count(".") == 2, (name, token)
        assert await _exec(node, ns, name, ["cat", "/var/run/t/password"]) == (0, "s3cr3t")
    assert (await _exec(node, ns, "with-fsgroup", ["id", "-u"]))[1].strip() == "1000"
    assert "2000" in (await _exec(node, ns, "with-fsgroup", ["id", "-G"]))[1].split()
    # seccompProfile RuntimeDefault is applied (mode 2: filter); unset stays unconfined.
    status = (await _exec(node, ns, "with-fsgroup", ["cat", "/proc/self/status"]))[1]
    assert "Seccomp:\t2" in status
    status = (await _exec(node, ns, "as-root", ["cat", "/proc/self/status"]))[1]
    assert "Seccomp:\t0" in status

    kubelet_dir = node.kubelet.options.kubelet_dir
    agent_dir = kubelet_dir.parent
    assert _as_nobody("ls", str(agent_dir)).returncode == 0  # the way up is open...
    for name, uid in uids.items():
        pod_dir = kubelet_dir / "pods" / uid
        volumes = pod_dir / "volumes"
        for directory in (
            kubelet_dir,
            kubelet_dir / "pods",
            pod_dir,
            volumes,
            volumes / "kubernetes.io~secret",
            volumes / "kubernetes.io~projected",
        ):
            info = directory.stat()
            assert (_mode(directory), info.st_uid, info.st_gid) == (0o750, 0, 0), directory
        secret_file = volumes / "kubernetes.io~secret" / "s" / "password"
        token_file = volumes / "kubernetes.io~projected" / "t" / "token"
        # ... but not into the kubelet's directories.
        for path in (secret_file, token_file):
            denied = _as_nobody("cat", str(path))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, (name, path)
            assert "s3cr3t" not in denied.stdout
        secret_info, token_info = secret_file.stat(), token_file.stat()
        got = (
            (_mode(secret_file), secret_info.st_gid),
            (_mode(token_file), token_info.st_uid, token_info.st_gid),
        )
        expected = {
            "as-root": ((0o644, 0), (0o644, 0, 0)),
            "with-fsgroup": ((0o440, 2000), (0o640, 1000, 2000)),
            "without-fsgroup": ((0o644, 0), (0o600, 1000, 0)),
        }[name]
        assert got == expected, name

    # A pod directory an older kubelet left open is closed at the next sync.
    pod_dir = kubelet_dir / "pods" / uids["as-root"]
    os.chmod(pod_dir, 0o755)
    os.chmod(pod_dir / "volumes", 0o755)
    node.kubelet.wake(uids["as-root"])

    async def closed() -> bool:
        return _mode(pod_dir) == 0o750 and _mode(pod_dir / "volumes") == 0o750

    await wait_for(closed, what="pod dir back to 0750")


async def test_static_pod_with_wrong_typed_privileges_does_not_start(node: NodeHarness) -> None:
    assert node.kubelet is not None
    manifests = node.kubelet.options.pod_manifests_dir
    manifests.mkdir(parents=True, exist_ok=True)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sneaky", "namespace": "default"},
        "spec": {
            "hostNetwork": "true",
            "hostPID": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "command": ["sleep", "3600"],
                    "securityContext": {"privileged": "true"},
                }
            ],
        },
    }
    path = manifests / "sneaky.json"
    await asyncio.to_thread(path.write_text, json.dumps(manifest))
    try:

        async def refused() -> tuple[str, str] | None:
            assert node.kubelet is not None
            for uid, pod in node.kubelet.static_pods.items():
                if pod["metadata"]["name"].startswith("sneaky-"):
                    worker = node.kubelet.workers.get(uid)
                    if worker is not None and "main" in worker.waiting:
                        return worker.waiting["main"]
            return None

        reason, message = await wait_for(refused, what="static pod refused")
        assert reason == "CreateContainerConfigError"
        assert message == (
            'invalid pod spec: spec.hostNetwork: Invalid value: "true": must be a boolean'
        )
        uid = next(
            u
            for u, p in node.kubelet.static_pods.items()
            if p["metadata"]["name"].startswith("sneaky-")
        )
        sandboxes = await node.kubelet.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(label_selector={LABEL_POD_UID: uid})
        )
        assert sandboxes == []
    finally:
        await asyncio.to_thread(path.unlink)
