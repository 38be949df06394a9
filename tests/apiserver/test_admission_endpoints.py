"""The kubernetes Service's Endpoints and EndpointSlice list the live API servers."""

from __future__ import annotations

import json

from sampan.apiserver.endpoints_reconciler import LEASE_PREFIX, KubernetesEndpointsReconciler

ENDPOINTS = "/api/v1/namespaces/default/endpoints/kubernetes"
SLICE = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"


async def test_kubernetes_endpoints_and_slice(harness):
    port = harness.server.port
    status, endpoints = await harness.request("GET", ENDPOINTS)
    assert status == 200
    assert endpoints["subsets"] == [
        {
            "addresses": [{"ip": "127.0.0.1"}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
    ]
    status, endpoint_slice = await harness.request("GET", SLICE)
    assert status == 200, endpoint_slice
    assert endpoint_slice["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert endpoint_slice["addressType"] == "IPv4"
    assert endpoint_slice["endpoints"] == [
        {"addresses": ["127.0.0.1"], "conditions": {"ready": True}}
    ]
    assert endpoint_slice["ports"] == [{"name": "https", "port": port, "protocol": "TCP"}]
    _, service = await harness.request("GET", "/api/v1/namespaces/default/services/kubernetes")
    assert service["spec"]["clusterIP"] == "10.43.0.1"


async def test_second_server_joins_and_leaves(harness):
    """Another server's lease adds its address; a dead lease drops it."""
    server = harness.server
    other = KubernetesEndpointsReconciler(
        server.storage, server.registry, harness.backend, address="10.0.0.2", port=server.port
    )
    await other.reconcile()
    _, endpoints = await harness.request("GET", ENDPOINTS)
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["10.0.0.2", "127.0.0.1"]
    _, endpoint_slice = await harness.request("GET", SLICE)
    assert [e["addresses"][0] for e in endpoint_slice["endpoints"]] == ["10.0.0.2", "127.0.0.1"]

    # The other server crashes: its lease expires and the next round drops it.
    _, kv = await harness.backend.get(LEASE_PREFIX + "10.0.0.2")
    stale = json.dumps({"port": server.port, "renewTime": 0}).encode()
    await harness.backend.update(LEASE_PREFIX + "10.0.0.2", stale, kv.mod_revision)
    mine = KubernetesEndpointsReconciler(
        server.storage, server.registry, harness.backend, address="127.0.0.1", port=server.port
    )
    await mine.reconcile()
    _, endpoints = await harness.request("GET", ENDPOINTS)
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["127.0.0.1"]

    # A clean stop removes the server at once.
    await other.reconcile()
    await other.stop()
    _, endpoints = await harness.request("GET", ENDPOINTS)
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["127.0.0.1"]


async def test_deleted_kubernetes_service_comes_back(harness):
    server = harness.server
    status, _ = await harness.request("DELETE", "/api/v1/namespaces/default/services/kubernetes")
    assert status == 200
    reconciler = KubernetesEndpointsReconciler(
        server.storage,
        server.registry,
        harness.backend,
        address="127.0.0.1",
        port=server.port,
        service_ip="10.43.0.1",
    )
    await reconciler.reconcile()
    status, service = await harness.request("GET", "/api/v1/namespaces/default/services/kubernetes")
    assert status == 200 and service["spec"]["clusterIP"] == "10.43.0.1"
    assert service["spec"]["ports"][0]["targetPort"] == server.port
