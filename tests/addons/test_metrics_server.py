"""The metrics server over HTTPS: request-header authentication, discovery, NodeMetrics and
PodMetrics computed from two kubelet scrapes, selectors, a kubelet that does not answer, and
the APIService registration.

The kubelet here is a small HTTPS server with a kubelet serving certificate that requires the
cluster's client CA, answering ``/metrics/resource`` text the test controls (the real kubelet's
answer is covered in tests/kubelet/server/test_api.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from sampan.addons.metrics import MetricsServer, MetricsServerOptions
from sampan.addons.metrics.server import APISERVICES
from sampan.addons.metrics.store import format_cpu, format_go_duration, format_memory
from sampan.client import Client
from sampan.client.api import ENDPOINTS, ENDPOINTSLICES, NODES, PODS
from sampan.pki import issue_client_certificate, issue_kubelet_serving_certificate
from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names
from sampan.pki.tls import server_ssl_context
from tests.support.apiserver import ApiServerHarness

pytestmark = pytest.mark.asyncio

T0 = 1_700_000_000.0


def _kubelet_text(cpu: float, at: float, *, pod: str = "web-1") -> str:
    ms = int(at * 1000)
    return (
        "# TYPE container_cpu_usage_seconds_total counter\n"
        f'container_cpu_usage_seconds_total{{container="app",namespace="default",pod="{pod}"}} '
        f"{cpu} {ms}\n"
        "# TYPE container_memory_working_set_bytes gauge\n"
        f'container_memory_working_set_bytes{{container="app",namespace="default",pod="{pod}"}} '
        f"{20 * 1024 * 1024} {ms}\n"
        "# TYPE node_cpu_usage_seconds_total counter\n"
        f"node_cpu_usage_seconds_total {cpu * 4} {ms}\n"
        "# TYPE node_memory_working_set_bytes gauge\n"
        f"node_memory_working_set_bytes {1536 * 1024 * 1024} {ms}\n"
    )


class _Kubelet:
    def __init__(self) -> None:
        self.text = ""
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self, context: ssl.SSLContext) -> None:
        async def resource(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            if not peer:
                return web.Response(status=401, text="Unauthorized")
            return web.Response(text=self.text, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics/resource", resource)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = next(a for a in self.runner.addresses if isinstance(a, tuple))[1]


class _Env:
    def __init__(self, api: ApiServerHarness, client: Client, tmp: Path) -> None:
        self.api = api
        self.client = client
        self.tmp = tmp
        self.kubelet = _Kubelet()
        self.metrics: MetricsServer | None = None
        self.front_proxy: ssl.SSLContext | None = None
        self.stranger: ssl.SSLContext | None = None

    async def get(
        self, path: str, *, context: ssl.SSLContext | None = None, user: str = "alice"
    ) -> tuple[int, Any]:
        assert self.metrics is not None
        url = f"https://127.0.0.1:{self.metrics.port}{path}"
        headers = {"X-Remote-User": user, "X-Remote-Group": "devs"} if user else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=context or self.front_proxy, headers=headers) as response,
        ):
            raw = await response.read()
            return response.status, json.loads(raw) if raw.startswith(b"{") else raw.decode()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _setup_tls(api: ApiServerHarness, tmp: Path) -> dict[str, Any]:
    assert api.server is not None
    pki = api.server.pki
    ca, ca_key = create_ca("test-requestheader-ca")
    serving, serving_key = issue_leaf(
        ca, ca_key, common_name="metrics-server", names=split_names(["127.0.0.1"]), server_auth=True
    )
    proxy, proxy_key = issue_leaf(ca, ca_key, common_name="front-proxy-client", client_auth=True)
    other_ca, other_key = create_ca("someone-else")
    rogue, rogue_key = issue_leaf(
        other_ca, other_key, common_name="front-proxy-client", client_auth=True
    )
    kcert, kkey = issue_kubelet_serving_certificate(pki, ["localhost"], ["127.0.0.1"])
    ccert, ckey = issue_client_certificate(pki, "system:kube-apiserver")
    files = {
        "ca": _write(tmp / "rh-ca.crt", cert_to_pem(ca)),
        "serving": _write(tmp / "ms.crt", cert_to_pem(serving)),
        "serving_key": _write(tmp / "ms.key", key_to_pem(serving_key)),
        "proxy": _write(tmp / "proxy.crt", cert_to_pem(proxy)),
        "proxy_key": _write(tmp / "proxy.key", key_to_pem(proxy_key)),
        "rogue": _write(tmp / "rogue.crt", cert_to_pem(rogue)),
        "rogue_key": _write(tmp / "rogue.key", key_to_pem(rogue_key)),
        "kubelet": _write(tmp / "kubelet.crt", kcert),
        "kubelet_key": _write(tmp / "kubelet.key", kkey),
        "kubelet_client": _write(tmp / "kc.crt", ccert),
        "kubelet_client_key": _write(tmp / "kc.key", ckey),
        "kubelet_ca": _write(tmp / "kubelet-ca.crt", pki.kubelet_ca_pem),
        "client_ca": pki.client_ca_cert_path,
    }
    return files


def _client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[_Env]:
    api = ApiServerHarness(tmp_path / "api")
    await api.start()
    client = api.new_client()
    e = _Env(api, client, tmp_path)
    files = await asyncio.to_thread(_setup_tls, api, tmp_path)
    kubelet_tls = server_ssl_context(
        files["kubelet"], files["kubelet_key"], client_ca_file=files["client_ca"]
    )
    await e.kubelet.start(kubelet_tls)
    e.front_proxy = _client_context(files["ca"], files["proxy"], files["proxy_key"])
    e.stranger = _client_context(files["ca"], files["rogue"], files["rogue_key"])
    node = await client.create(
        NODES,
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
    )
    node["status"] = {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": e.kubelet.port}},
    }
    await client.update_status(NODES, node)
    for name, tier in (("web-1", "frontend"), ("db-1", "backend")):
        await client.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"tier": tier}},
                "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
            },
            namespace="default",
        )
    e.metrics = MetricsServer(
        api.client_config(),
        MetricsServerOptions(
            serving_cert_path=files["serving"],
            serving_key_path=files["serving_key"],
            requestheader_ca_path=files["ca"],
            requestheader_allowed_names=("front-proxy-client",),
            kubelet_client_cert_path=files["kubelet_client"],
            kubelet_client_key_path=files["kubelet_client_key"],
            kubelet_ca_path=files["kubelet_ca"],
            port=0,
            scrape_interval_s=3600.0,
        ),
    )
    await e.metrics.start()
    try:
        yield e
    finally:
        await e.metrics.stop()
        assert e.kubelet.runner is not None
        await e.kubelet.runner.cleanup()
        await client.close()
        await api.stop()


async def _two_scrapes(e: _Env) -> None:
    assert e.metrics is not None and e.metrics._nodes is not None and e.metrics._pods is not None
    await e.metrics._nodes.wait_synced()
    await e.metrics._pods.wait_synced()
    for _ in range(200):  # the node informer sees the status update
        node = e.metrics._nodes.cache.get_by_name("n1")
        if node and node.get("status", {}).get("daemonEndpoints"):
            break
        await asyncio.sleep(0.02)
    e.kubelet.text = _kubelet_text(10.0, T0)
    await e.metrics.scrape_once()
    e.kubelet.text = _kubelet_text(10.25, T0 + 10.0)
    await e.metrics.scrape_once()


async def test_quantity_and_duration_formats() -> None:
    assert format_cpu(25_000_000) == "25m"
    assert format_cpu(123_456) == "123456n"
    assert format_cpu(2_000_000_000) == "2"
    assert format_cpu(1_500) == "1500n"
    assert format_memory(20 * 1024 * 1024) == "20Mi"
    assert format_memory(1234 * 1024) == "1234Ki"
    assert format_memory(1000) == "1k"  # BinarySI below 1024 prints as DecimalSI
    assert format_go_duration(15.0) == "15s"
    assert format_go_duration(10.537) == "10.537s"
    assert format_go_duration(75.5) == "1m15.5s"
    assert format_go_duration(0.02) == "20ms"


async def test_authentication(env: _Env) -> None:
    status, _ = await env.get(
        "/healthz", context=ssl.create_default_context(cafile=str(env.tmp / "rh-ca.crt")), user=""
    )
    assert status == 200
    anonymous = ssl.create_default_context(cafile=str(env.tmp / "rh-ca.crt"))
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/nodes", context=anonymous)
    assert status == 401 and body["reason"] == "Unauthorized"
    with pytest.raises(aiohttp.ClientError):  # not signed by the request-header CA: refused
        await env.get("/apis/metrics.k8s.io/v1beta1/nodes", context=env.stranger)
    status, _ = await env.get("/apis/metrics.k8s.io/v1beta1/nodes", user="")
    assert status == 401


async def test_discovery(env: _Env) -> None:
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1")
    assert status == 200
    assert body["kind"] == "APIResourceList" and body["groupVersion"] == "metrics.k8s.io/v1beta1"
    assert {(r["name"], r["kind"], r["namespaced"]) for r in body["resources"]} == {
        ("nodes", "NodeMetrics", False),
        ("pods", "PodMetrics", True),
    }
    status, body = await env.get("/apis/metrics.k8s.io")
    assert body["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"


async def test_node_and_pod_metrics(env: _Env) -> None:
    await _two_scrapes(env)
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/nodes")
    assert status == 200
    assert body["kind"] == "NodeMetricsList" and body["apiVersion"] == "metrics.k8s.io/v1beta1"
    [node] = body["items"]
    assert node["kind"] == "NodeMetrics"
    assert node["metadata"]["name"] == "n1" and node["metadata"]["labels"] == {"zone": "a"}
    assert node["timestamp"] == "2023-11-14T22:13:30Z"
    assert node["window"] == "10s"
    assert node["usage"] == {"cpu": "100m", "memory": "1536Mi"}
    status, one = await env.get("/apis/metrics.k8s.io/v1beta1/nodes/n1")
    assert status == 200 and one["usage"] == node["usage"]

    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
    assert status == 200 and body["kind"] == "PodMetricsList"
    # the kubelet reported web-1 only: db-1 has no metrics and is left out
    [pod] = body["items"]
    assert pod["metadata"]["name"] == "web-1" and pod["metadata"]["namespace"] == "default"
    assert pod["window"] == "10s"
    assert pod["containers"] == [{"name": "app", "usage": {"cpu": "25m", "memory": "20Mi"}}]
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=tier%3Dfrontend")
    assert [p["metadata"]["name"] for p in body["items"]] == ["web-1"]
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=tier%3Dbackend")
    assert body["items"] == []
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/db-1")
    assert status == 404 and body["message"] == 'pods.metrics.k8s.io "db-1" not found'
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=%3D%3D%3D")
    assert status == 400 and body["reason"] == "BadRequest"


async def test_kubelet_down_drops_the_node(env: _Env) -> None:
    await _two_scrapes(env)
    assert env.kubelet.runner is not None
    await env.kubelet.runner.cleanup()
    assert env.metrics is not None
    await env.metrics.scrape_once()  # fails for n1: the last two samples stay
    await env.metrics.scrape_once()
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/nodes")
    assert status == 200 and len(body["items"]) == 1
    await env.client.delete(NODES, "n1")
    for _ in range(200):
        if env.metrics._nodes is not None and env.metrics._nodes.cache.get_by_name("n1") is None:
            break
        await asyncio.sleep(0.02)
    await env.metrics.scrape_once()
    status, body = await env.get("/apis/metrics.k8s.io/v1beta1/nodes")
    assert status == 200 and body["items"] == []
    env.kubelet.runner = web.AppRunner(web.Application())
    await env.kubelet.runner.setup()


async def test_registers_the_apiservice(env: _Env) -> None:
    assert env.metrics is not None
    for _ in range(200):
        try:
            apiservice = await env.client.get(APISERVICES, "v1beta1.metrics.k8s.io")
            break
        except Exception:
            await asyncio.sleep(0.05)
    spec = apiservice["spec"]
    assert spec["service"] == {"name": "metrics-server", "namespace": "kube-system", "port": 443}
    assert spec["group"] == "metrics.k8s.io" and spec["version"] == "v1beta1"
    assert spec["insecureSkipTLSVerify"] is True
    endpoints = await env.client.get(ENDPOINTS, "metrics-server", namespace="kube-system")
    assert endpoints["subsets"][0]["ports"][0]["port"] == env.metrics.port
    assert endpoints["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
    slice_ = await env.client.get(ENDPOINTSLICES, "metrics-server", namespace="kube-system")
    assert slice_["endpoints"][0]["addresses"] == ["127.0.0.1"]
    assert slice_["ports"][0]["port"] == env.metrics.port
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "metrics-server"


async def test_port_in_use_falls_back_to_a_free_port(env: _Env) -> None:
    assert env.metrics is not None
    taken = env.metrics.port
    options = dataclasses.replace(env.metrics.options, port=taken, register=False)
    second = MetricsServer(env.api.client_config(), options)
    await second.start()
    try:
        assert second.port not in (0, taken)
        status, _ = await env.get("/apis/metrics.k8s.io/v1beta1/nodes")
        assert status == 200
    finally:
        await second.stop()


async def test_disabled_removes_the_registration(env: _Env) -> None:
    from sampan.addons.metrics import MetricsServerRemoval
    from sampan.client import NotFoundError

    assert env.metrics is not None
    for _ in range(200):  # the registration task has finished (the APIService comes last)
        if all(t.done() for t in env.metrics._tasks if "register" in t.get_name()):
            break
        await asyncio.sleep(0.05)
    await env.client.get(APISERVICES, "v1beta1.metrics.k8s.io")
    await MetricsServerRemoval(env.api.client_config()).start()
    for resource, namespace, name in (
        (APISERVICES, None, "v1beta1.metrics.k8s.io"),
        (ENDPOINTS, "kube-system", "metrics-server"),
        (ENDPOINTSLICES, "kube-system", "metrics-server"),
    ):
        with pytest.raises(NotFoundError):
            await env.client.get(resource, name, namespace=namespace)
