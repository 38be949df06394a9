"""The issue's patch/apply acceptance with the real kubectl 1.32 against the in-process
server: client-side apply (created / unchanged / configured, a removed container port gone),
kubectl diff, server-side apply conflicts and --force-conflicts, set image, scale, rollout
restart and edit."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: {image}
        ports:
{ports}
"""


def deployment(replicas: int, image: str, ports: tuple[int, ...]) -> bytes:
    port_lines = "\n".join(f"        - containerPort: {p}" for p in ports)
    return DEPLOYMENT.format(replicas=replicas, image=image, ports=port_lines).encode()


async def kubectl(
    harness, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    full_env = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    full_env.update(env or {})
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def ok(harness, *args: str, **kwargs: object) -> str:
    code, out, err = await kubectl(harness, *args, **kwargs)  # type: ignore[arg-type]
    assert code == 0, f"kubectl {' '.join(args)} failed ({code}): {err}\n{out}"
    return out


async def get_json(harness, *args: str) -> dict:
    return json.loads(await ok(harness, "get", *args, "-o", "json", "--show-managed-fields"))


async def test_client_side_apply_diff_and_imperative_commands(harness):
    first = deployment(2, "nginx:1.25", (80, 443))
    assert "deployment.apps/web created" in await ok(harness, "apply", "-f", "-", stdin=first)
    assert "deployment.apps/web unchanged" in await ok(harness, "apply", "-f", "-", stdin=first)

    changed = deployment(3, "nginx:1.26", (80, 443))
    code, diff, err = await kubectl(harness, "diff", "-f", "-", stdin=changed)
    assert code == 1, err  # 1: differences found
    assert "-  replicas: 2" in diff and "+  replicas: 3" in diff
    assert "+      - image: nginx:1.26" in diff
    assert "deployment.apps/web configured" in await ok(harness, "apply", "-f", "-", stdin=changed)
    obj = await get_json(harness, "deploy", "web")
    assert obj["spec"]["replicas"] == 3
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.26"
    assert [p["containerPort"] for p in container["ports"]] == [80, 443]

    # Removing a port from the manifest removes it on the server (three-way merge).
    fewer = deployment(3, "nginx:1.26", (80,))
    assert "deployment.apps/web configured" in await ok(harness, "apply", "-f", "-", stdin=fewer)
    obj = await get_json(harness, "deploy", "web")
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [80]
    code, diff, err = await kubectl(harness, "diff", "-f", "-", stdin=fewer)
    assert code == 0 and diff == "", err

    assert "image updated" in await ok(harness, "set", "image", "deploy/web", "nginx=nginx:1.27")
    assert "scaled" in await ok(harness, "scale", "deploy/web", "--replicas=5")
    assert "restarted" in await ok(harness, "rollout", "restart", "deploy/web")
    obj = await get_json(harness, "deploy", "web")
    assert obj["spec"]["replicas"] == 5
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    annotations = obj["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    managers = {e["manager"] for e in obj["metadata"]["managedFields"]}
    assert {"kubectl-client-side-apply", "kubectl-set", "kubectl-rollout"} <= managers

    await ok(harness, "create", "configmap", "c", "--from-literal=key=a")
    await ok(harness, "edit", "cm/c", env={"EDITOR": "sed -i s/key:\\ a/key:\\ b/"})
    assert (await get_json(harness, "cm", "c"))["data"] == {"key": "b"}


async def test_server_side_apply_conflict_and_force(harness):
    manifest = b"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: shared
data:
  owner: first
  other: kept
"""
    out = await ok(harness, "apply", "--server-side", "-f", "-", stdin=manifest)
    assert "configmap/shared serverside-applied" in out
    other = manifest.replace(b"owner: first", b"owner: second").replace(b"  other: kept\n", b"")
    code, _, err = await kubectl(
        harness, "apply", "--server-side", "--field-manager=other", "-f", "-", stdin=other
    )
    assert code != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .data.owner' in err
    await ok(
        harness,
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
        stdin=other,
    )
    obj = await get_json(harness, "cm", "shared")
    assert obj["data"] == {"owner": "second", "other": "kept"}
    owners = {
        e["manager"]: e["fieldsV1"]["f:data"]
        for e in obj["metadata"]["managedFields"]
        if e["operation"] == "Apply"
    }
    assert owners == {"kubectl": {"f:other": {}}, "other": {"f:owner": {}}}
    # The first manager drops a key from its manifest: it is removed (nobody else owns it).
    only_owner = manifest.replace(b"  other: kept\n", b"").replace(b"first", b"second")
    await ok(harness, "apply", "--server-side", "-f", "-", stdin=only_owner)
    assert (await get_json(harness, "cm", "shared"))["data"] == {"owner": "second"}


async def test_client_side_to_server_side_apply_upgrade(harness):
    await ok(harness, "apply", "-f", "-", stdin=deployment(2, "nginx:1.25", (80,)))
    # Same manifest owner (kubectl) switching to server-side apply with a change: no conflict
    # with its own client-side apply, as on a real cluster.
    out = await ok(
        harness, "apply", "--server-side", "-f", "-", stdin=deployment(3, "nginx:1.26", (80,))
    )
    assert "serverside-applied" in out
    obj = await get_json(harness, "deploy", "web")
    assert obj["spec"]["replicas"] == 3
    # The last-applied annotation follows, so client-side apply still computes correctly.
    last_applied = json.loads(
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert last_applied["spec"]["replicas"] == 3
    await ok(harness, "apply", "-f", "-", stdin=deployment(4, "nginx:1.26", (80,)))
    assert (await get_json(harness, "deploy", "web"))["spec"]["replicas"] == 4
    # Another manager still conflicts.
    code, _, err = await kubectl(
        harness,
        "apply",
        "--server-side",
        "--field-manager=intruder",
        "-f",
        "-",
        stdin=deployment(5, "nginx:1.26", (80,)),
    )
    assert code != 0 and "conflict" in err
