"""The kubelet API directly (authentication, /pods, /stats/summary) and through nodes/proxy."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from sampan.pki import issue_client_certificate
from tests.kubelet.server.conftest import NODE_NAME, NodeEnv, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _context(
    env: NodeEnv, tmp_path: Path, user: str | None, groups: tuple[str, ...] = ()
) -> ssl.SSLContext:
    pki = env.api.server.pki
    context = ssl.create_default_context(cadata=pki.kubelet_ca_pem.decode())
    if user is not None:
        cert, key = issue_client_certificate(pki, user, groups)
        (tmp_path / f"{user}.crt").write_bytes(cert)
        (tmp_path / f"{user}.key").write_bytes(key)
        context.load_cert_chain(tmp_path / f"{user}.crt", tmp_path / f"{user}.key")
    return context


async def _get(env: NodeEnv, context: ssl.SSLContext, path: str) -> tuple[int, bytes]:
    url = f"https://127.0.0.1:{env.kubelet.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as response:
        return response.status, await response.read()


async def test_authentication_and_authorization(node_env: NodeEnv, tmp_path: Path) -> None:
    anonymous = await asyncio.to_thread(_context, node_env, tmp_path, None)
    assert await _get(node_env, anonymous, "/healthz") == (200, b"ok")
    status, _ = await _get(node_env, anonymous, "/pods")
    assert status == 401
    stranger = await asyncio.to_thread(_context, node_env, tmp_path, "alice", ("devs",))
    status, body = await _get(node_env, stranger, "/containerLogs/default/x/y")
    assert status == 403 and b"alice" in body
    apiserver = await asyncio.to_thread(_context, node_env, tmp_path, "system:kube-apiserver")
    status, _ = await _get(node_env, apiserver, "/pods")
    assert status == 200
    master = await asyncio.to_thread(_context, node_env, tmp_path, "bob", ("system:masters",))
    status, body = await _get(node_env, master, "/containerLogs/default/no-such-pod/c")
    assert status == 404 and b"no-such-pod" in body


async def test_pods_and_stats_summary(node_env: NodeEnv, tmp_path: Path) -> None:
    name = unique("s")
    pod = await node_env.run_pod(name, {"s": ["sleep", "3600"]})
    context = await asyncio.to_thread(_context, node_env, tmp_path, "system:kube-apiserver")
    status, body = await _get(node_env, context, "/pods")
    assert status == 200
    assert name in [p["metadata"]["name"] for p in json.loads(body)["items"]]
    status, body = await _get(node_env, context, "/stats/summary")
    assert status == 200
    summary = json.loads(body)
    assert summary["node"]["nodeName"] == NODE_NAME
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    entry = next(p for p in summary["pods"] if p["podRef"]["name"] == name)
    assert entry["podRef"]["uid"] == pod.uid
    assert [c["name"] for c in entry["containers"]] == ["s"]
    assert entry["containers"][0]["memory"]["workingSetBytes"] > 0


def _raw(env: NodeEnv, path: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(env.kubeconfig), "get", "--raw", path],
        capture_output=True,
        timeout=60,
        check=False,
    )


async def test_node_proxy_reaches_the_kubelet(node_env: NodeEnv) -> None:
    healthz = await asyncio.to_thread(_raw, node_env, f"/api/v1/nodes/{NODE_NAME}/proxy/healthz")
    assert healthz.returncode == 0 and healthz.stdout == b"ok", healthz.stderr
    stats = await asyncio.to_thread(
        _raw, node_env, f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary"
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["node"]["nodeName"] == NODE_NAME


async def test_pod_without_a_node_is_a_bad_request(node_env: NodeEnv) -> None:
    from sampan.client.api import PODS

    name = unique("pending")
    await node_env.client.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    result = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "--kubeconfig", str(node_env.kubeconfig), "logs", name],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert b"does not have a host assigned" in result.stderr


async def test_busy_pod_shows_cpu_usage(node_env: NodeEnv, tmp_path: Path) -> None:
    """A pod burning CPU: usageNanoCores > 0 for the container and the pod (its cgroup), and
    /metrics/resource carries upstream's names with the pod's labels."""
    name = unique("busy")
    await node_env.run_pod(name, {"burn": ["sh", "-c", "while :; do :; done"]})
    context = await asyncio.to_thread(_context, node_env, tmp_path, "system:kube-apiserver")
    entry: dict = {}
    for _ in range(100):  # the housekeeping loop samples every second: wait for two samples
        status, body = await _get(node_env, context, "/stats/summary")
        assert status == 200
        entry = next(p for p in json.loads(body)["pods"] if p["podRef"]["name"] == name)
        if entry["containers"] and entry["containers"][0]["cpu"].get("usageNanoCores"):
            if entry["cpu"].get("usageNanoCores"):
                break
        await asyncio.sleep(0.3)
    container = entry["containers"][0]
    assert container["name"] == "burn"
    assert container["cpu"]["usageNanoCores"] > 0
    assert container["cpu"]["usageCoreNanoSeconds"] > 0
    assert entry["cpu"]["usageNanoCores"] > 0
    assert entry["memory"]["workingSetBytes"] > 0
    summary = json.loads(body)
    assert summary["node"]["cpu"]["usageNanoCores"] > 0
    assert summary["node"]["fs"]["capacityBytes"] > 0
    assert entry["network"]["name"] == "eth0"
    assert [i["name"] for i in entry["network"]["interfaces"]] == ["eth0"]

    status, body = await _get(node_env, context, "/metrics/resource")
    assert status == 200
    text = body.decode()
    assert "# TYPE container_cpu_usage_seconds_total counter" in text
    labels = f'container="burn",namespace="default",pod="{name}"'
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith(f"container_cpu_usage_seconds_total{{{labels}}}")
    )
    assert float(line.split()[1]) > 0
    assert f'pod_memory_working_set_bytes{{namespace="default",pod="{name}"}}' in text
    assert "node_memory_working_set_bytes " in text
    anonymous = await asyncio.to_thread(_context, node_env, tmp_path, None)
    assert (await _get(node_env, anonymous, "/metrics/resource"))[0] == 401

    status, body = await _get(node_env, context, "/metrics/cadvisor")
    assert status == 200
    text = body.decode()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("container_cpu_usage_seconds_total{")
        and 'container="burn"' in ln
        and f'pod="{name}"' in ln
    )
    assert 'cpu="total"' in line and float(line.split()[1]) > 0
    assert 'container_network_receive_bytes_total{container="",' in text
    status, body = await _get(node_env, context, "/metrics")
    assert status == 200
    running = next(
        ln for ln in body.decode().splitlines() if ln.startswith("kubelet_running_pods ")
    )
    assert float(running.split()[1]) >= 1
