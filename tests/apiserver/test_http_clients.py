"""The official ``kubernetes`` Python client and the real kubectl against the in-process
server. The synchronous client runs in a thread so the server's event loop keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def api_client(harness) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(harness.kubeconfig))


async def test_python_client_crud_and_watch_order(harness):
    api = api_client(harness)
    core = k8s.CoreV1Api(api)

    def list_rv() -> str:
        return core.list_namespaced_config_map("default").metadata.resource_version

    rv = await asyncio.to_thread(list_rv)
    events: list[tuple[str, str, str]] = []
    done = threading.Event()

    def watch() -> None:
        w = k8s_watch.Watch()
        for event in w.stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=20
        ):
            obj = event["object"]
            events.append((event["type"], obj.metadata.name, (obj.data or {}).get("k", "")))
            if event["type"] == "DELETED":
                w.stop()
        done.set()

    watcher = asyncio.create_task(asyncio.to_thread(watch))

    def mutate() -> None:
        body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="pyc"), data={"k": "1"})
        core.create_namespaced_config_map("default", body)
        core.patch_namespaced_config_map(
            "pyc", "default", {"data": {"k": "2"}}, _content_type="application/merge-patch+json"
        )
        got = core.read_namespaced_config_map("pyc", "default")
        assert got.data == {"k": "2"}
        core.delete_namespaced_config_map("pyc", "default")

    await asyncio.to_thread(mutate)
    await asyncio.wait_for(watcher, 30)
    assert events == [("ADDED", "pyc", "1"), ("MODIFIED", "pyc", "2"), ("DELETED", "pyc", "2")]
    api.close()


async def test_python_client_conflict_and_not_found(harness):
    api = api_client(harness)
    core = k8s.CoreV1Api(api)

    def scenario() -> tuple[int, int]:
        body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="stale"), data={"a": "1"})
        created = core.create_namespaced_config_map("default", body)
        created.data = {"a": "2"}
        core.replace_namespaced_config_map("stale", "default", created)
        created.data = {"a": "3"}  # still the first resourceVersion
        try:
            core.replace_namespaced_config_map("stale", "default", created)
            conflict = 0
        except k8s.ApiException as exc:
            conflict = exc.status
        try:
            core.read_namespaced_config_map("nope", "default")
            missing = 0
        except k8s.ApiException as exc:
            missing = exc.status
        return conflict, missing

    assert await asyncio.to_thread(scenario) == (409, 404)
    api.close()


async def test_restart_keeps_objects_and_resource_versions(harness):
    status, created = await harness.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "1"}},
    )
    assert status == 201
    rv_before = created["metadata"]["resourceVersion"]
    await harness.restart()  # on another port (port 0)
    status, svc = await harness.request("GET", "/api/v1/namespaces/default/services/kubernetes")
    assert svc["spec"]["ports"][0]["targetPort"] == harness.server.port
    status, ep = await harness.request("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    assert ep["subsets"][0]["ports"][0]["port"] == harness.server.port
    status, got = await harness.request("GET", "/api/v1/namespaces/default/configmaps/keep")
    assert status == 200
    assert got["metadata"]["resourceVersion"] == rv_before
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    # A watch resumed from a resourceVersion taken before the restart continues.
    assert harness.session is not None
    async with harness.session.get(
        "/api/v1/namespaces/default/configmaps",
        params={"watch": "1", "resourceVersion": rv_before, "timeoutSeconds": "20"},
    ) as response:
        assert response.status == 200
        await harness.request(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/keep",
            {"data": {"a": "2"}},
            content_type="application/merge-patch+json",
        )
        async with asyncio.timeout(10):
            line = await response.content.readline()
    event = json.loads(line)
    if event["type"] == "ERROR":
        assert event["object"]["code"] == 410
    else:
        assert event["type"] == "MODIFIED" and event["object"]["data"] == {"a": "2"}


async def kubectl(harness, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    env = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def ok(harness, *args: str, stdin: bytes | None = None) -> str:
    code, out, err = await kubectl(harness, *args, stdin=stdin)
    assert code == 0, f"kubectl {' '.join(args)} failed ({code}): {err}\n{out}"
    return out


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_acceptance(harness):
    assert "Kubernetes control plane is running at" in await ok(harness, "cluster-info")
    version = await ok(harness, "version", "-o", "json")
    assert json.loads(version)["serverVersion"]["minor"] == "32"
    resources = await ok(harness, "api-resources")
    for line in (
        "configmaps",
        "deployments",
        "clusterroles",
        "leases",
        "customresourcedefinitions",
    ):
        assert line in resources
    versions = await ok(harness, "api-versions")
    assert "apps/v1" in versions and "autoscaling/v2" in versions and "v1" in versions.split()
    namespaces = await ok(harness, "get", "ns")
    assert "kube-system" in namespaces and "STATUS" in namespaces
    whoami = await ok(harness, "auth", "whoami", "-o", "json")
    assert json.loads(whoami)["status"]["userInfo"]["username"] == "system:admin"
    await ok(harness, "create", "ns", "demo")
    await ok(harness, "create", "configmap", "cfg", "-n", "demo", "--from-literal=a=1")
    await ok(harness, "label", "configmap", "cfg", "-n", "demo", "tier=web")
    listed = await ok(harness, "get", "configmaps", "-A", "-l", "tier=web")
    assert "demo" in listed and "cfg" in listed
    await ok(
        harness,
        "patch",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        '{"data":{"b":"2"}}',
    )
    await ok(
        harness,
        "patch",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/data/c","value":"3"}]',
    )
    current = json.loads(await ok(harness, "get", "configmap", "cfg", "-n", "demo", "-o", "json"))
    assert current["data"] == {"a": "1", "b": "2", "c": "3"}
    stale = dict(current)
    await ok(
        harness,
        "patch",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        '{"data":{"d":"4"}}',
    )
    code, _, err = await kubectl(harness, "replace", "-f", "-", stdin=json.dumps(stale).encode())
    assert code != 0 and "the object has been modified" in err, err
    # Typed kubectl clients send protobuf bodies; these decode to the same objects.
    await ok(
        harness,
        "create",
        "deployment",
        "web",
        "-n",
        "demo",
        "--image=nginx:1.27",
        "--replicas=0",
        "--port=80",
    )
    deployment = json.loads(
        await ok(harness, "get", "deployment", "web", "-n", "demo", "-o", "json")
    )
    assert deployment["spec"]["replicas"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.27" and container["ports"][0]["containerPort"] == 80
    await ok(harness, "create", "secret", "generic", "sec", "-n", "demo", "--from-literal=k=v")
    await ok(harness, "delete", "configmap", "cfg", "-n", "demo")
    code, _, err = await kubectl(harness, "get", "configmap", "cfg", "-n", "demo")
    assert code != 0 and "NotFound" in err
    await ok(harness, "delete", "ns", "demo", "--wait=false")
    shown = await ok(harness, "get", "ns", "demo", "-o", "jsonpath={.status.phase}")
    assert shown == "Terminating"


async def test_restart_restores_bootstrap_policy_rules(harness):
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:discovery"
    status, role = await harness.request("GET", path)
    assert status == 200 and role["rules"]
    wanted_rules = role["rules"]
    role["rules"] = []
    status, emptied = await harness.request("PUT", path, role)
    assert status == 200 and not emptied.get("rules")
    await harness.restart()
    status, restored = await harness.request("GET", path)
    assert restored["rules"] == wanted_rules
