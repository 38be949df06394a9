"""The metrics pipeline on a real node: a pod burning CPU under containerd -> the kubelet's
``/metrics/resource`` -> the metrics server's scrapes -> PodMetrics and NodeMetrics over
HTTPS (request-header authentication with a test front-proxy CA)."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sampan.addons.metrics import MetricsServer, MetricsServerOptions
from sampan.pki import issue_client_certificate
from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names
from tests.kubelet.server.conftest import NODE_NAME, NodeEnv, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _files(env: NodeEnv, tmp: Path) -> dict[str, Path]:
    pki = env.api.server.pki
    ca, ca_key = create_ca("test-front-proxy-ca")
    serving, serving_key = issue_leaf(
        ca, ca_key, common_name="metrics", names=split_names(["127.0.0.1"]), server_auth=True
    )
    proxy, proxy_key = issue_leaf(ca, ca_key, common_name="front-proxy-client", client_auth=True)
    kubelet_cert, kubelet_key = issue_client_certificate(pki, "system:kube-apiserver")
    blobs = {
        "ca": cert_to_pem(ca),
        "serving": cert_to_pem(serving),
        "serving_key": key_to_pem(serving_key),
        "proxy": cert_to_pem(proxy),
        "proxy_key": key_to_pem(proxy_key),
        "kc": kubelet_cert,
        "kc_key": kubelet_key,
        "kubelet_ca": pki.kubelet_ca_pem,
    }
    paths = {}
    for name, data in blobs.items():
        path = tmp / f"{name}.pem"
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = path
    return paths


async def test_busy_pod_reaches_pod_metrics(node_env: NodeEnv, tmp_path: Path) -> None:
    name = unique("hot")
    await node_env.run_pod(name, {"burn": ["sh", "-c", "while :; do :; done"]})
    files = await asyncio.to_thread(_files, node_env, tmp_path)
    server = MetricsServer(
        node_env.api.client_config(),
        MetricsServerOptions(
            serving_cert_path=files["serving"],
            serving_key_path=files["serving_key"],
            requestheader_ca_path=files["ca"],
            kubelet_client_cert_path=files["kc"],
            kubelet_client_key_path=files["kc_key"],
            kubelet_ca_path=files["kubelet_ca"],
            port=0,
            scrape_interval_s=1.0,
            register=False,
        ),
    )
    await server.start()
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.load_cert_chain(str(files["proxy"]), str(files["proxy_key"]))
    headers = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}

    async def get(path: str) -> tuple[int, Any]:
        url = f"https://127.0.0.1:{server.port}/apis/metrics.k8s.io/v1beta1{path}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=context, headers=headers) as response,
        ):
            return response.status, json.loads(await response.read())

    try:
        pod: dict[str, Any] = {}
        for _ in range(120):  # two scrapes a second apart
            status, body = await get(f"/namespaces/default/pods/{name}")
            if status == 200:
                pod = body
                break
            await asyncio.sleep(0.5)
        assert pod, "no PodMetrics for the busy pod"
        [container] = pod["containers"]
        assert container["name"] == "burn"
        cpu = container["usage"]["cpu"]
        assert cpu.endswith(("n", "u", "m")) or cpu.isdigit()
        assert cpu != "0"
        assert pod["window"].endswith("s")
        status, nodes = await get("/nodes")
        assert status == 200
        assert [n["metadata"]["name"] for n in nodes["items"]] == [NODE_NAME]
        assert nodes["items"][0]["usage"]["memory"] != "0"
    finally:
        await server.stop()
