"""Service ClusterIP / NodePort allocation through the real API server and kubectl."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest

from sampan.apiserver.admission.allocator import IP_PREFIX, NODE_PORT_PREFIX
from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

SERVICE_CIDR = ipaddress.ip_network("10.43.0.0/16")


def service(name: str, **spec: object) -> dict:
    body = {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": name}}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


async def create(harness, body: dict) -> tuple[int, dict]:
    return await harness.request("POST", "/api/v1/namespaces/default/services", body)


async def test_kubectl_create_clusterip_and_nodeport(harness):
    await ok(harness, "create", "service", "clusterip", "s", "--tcp=80:8080")
    out = json.loads(await ok(harness, "get", "svc", "s", "-o", "json"))
    ip = ipaddress.ip_address(out["spec"]["clusterIP"])
    assert ip in SERVICE_CIDR and out["spec"]["clusterIPs"] == [str(ip)]
    # Dynamic allocation leaves the static band (10.43.0.0/24) alone.
    assert ip not in ipaddress.ip_network("10.43.0.0/24")

    await ok(harness, "create", "service", "nodeport", "np", "--tcp=80:8080")
    out = json.loads(await ok(harness, "get", "svc", "np", "-o", "json"))
    node_port = out["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767

    code, _, err = await kubectl(
        harness, "create", "service", "nodeport", "np2", "--tcp=80:8080", f"--node-port={node_port}"
    )
    assert code != 0
    assert (
        f'Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: {node_port}: '
        "provided port is already allocated" in err
    )


async def test_static_ip_duplicate_and_range(harness):
    status, body = await create(harness, service("a", clusterIP="10.43.0.50"))
    assert status == 201 and body["spec"]["clusterIP"] == "10.43.0.50"
    status, body = await create(harness, service("b", clusterIP="10.43.0.50"))
    assert status == 422
    assert body["message"] == (
        'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.0.50"}: '
        "failed to allocate IP 10.43.0.50: provided IP is already allocated"
    )
    status, body = await create(harness, service("c", clusterIP="10.44.0.1"))
    assert status == 422
    assert "the provided IP (10.44.0.1) is not in the valid range" in body["message"]
    status, body = await create(
        harness, service("d", type="NodePort", ports=[{"port": 80, "nodePort": 80}])
    )
    assert status == 422
    assert (
        "provided port is not in the valid range. The range of valid ports is 30000-32767"
        in (body["message"])
    )
    # The kubernetes service holds 10.43.0.1 (claimed by the repair at start).
    status, body = await create(harness, service("e", clusterIP="10.43.0.1"))
    assert status == 422 and "already allocated" in body["message"]
    # Nothing of the refused creates is left claimed.
    for ip in ("10.44.0.1",):
        _, kv = await harness.backend.get(IP_PREFIX + ip)
        assert kv is None


async def test_release_on_delete_and_failed_create(harness):
    status, _ = await create(
        harness, service("np", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    )
    assert status == 201
    # A create that fails after allocation (the name exists) releases what it claimed.
    status, _ = await create(
        harness, service("np", type="NodePort", ports=[{"port": 81, "nodePort": 30081}])
    )
    assert status == 409
    _, kv = await harness.backend.get(NODE_PORT_PREFIX + "30081")
    assert kv is None
    status, _ = await harness.request("DELETE", "/api/v1/namespaces/default/services/np")
    assert status == 200
    status, body = await create(
        harness, service("np2", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    )
    assert status == 201, body
    assert body["spec"]["ports"][0]["nodePort"] == 30080


async def test_update_keeps_and_changes_allocations(harness):
    status, created = await create(harness, service("web"))
    assert status == 201
    ip = created["spec"]["clusterIP"]
    # A PUT without clusterIP keeps it; switching to NodePort by patch allocates a port.
    status, patched = await harness.request(
        "PATCH",
        "/api/v1/namespaces/default/services/web",
        {"spec": {"type": "NodePort"}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, patched
    assert patched["spec"]["clusterIP"] == ip
    node_port = patched["spec"]["ports"][0]["nodePort"]
    _, kv = await harness.backend.get(NODE_PORT_PREFIX + str(node_port))
    assert kv is not None and json.loads(kv.value)["owner"] == "default/web"
    # Back to ClusterIP: the node port is dropped and released.
    status, patched = await harness.request(
        "PATCH",
        "/api/v1/namespaces/default/services/web",
        {"spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8080}]}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, patched["message"]
    assert "nodePort" not in patched["spec"]["ports"][0]
    _, kv = await harness.backend.get(NODE_PORT_PREFIX + str(node_port))
    assert kv is None


async def test_dry_run_claims_nothing(harness):
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/services",
        service("dry", type="NodePort"),
        params={"dryRun": "All"},
    )
    assert status == 201
    assert body["spec"]["clusterIP"] and body["spec"]["ports"][0]["nodePort"]
    _, kv = await harness.backend.get(IP_PREFIX + body["spec"]["clusterIP"])
    assert kv is None


async def test_repair_after_crash(harness):
    """A claim left by a crash between allocation and create is freed at the next start;
    a Service whose claim vanished gets it back."""
    status, created = await create(harness, service("kept"))
    assert status == 201
    kept_ip = created["spec"]["clusterIP"]
    await harness.backend.create(
        IP_PREFIX + "10.43.0.77", json.dumps({"owner": "default/ghost", "claimedAt": 0}).encode()
    )
    _, kv = await harness.backend.get(IP_PREFIX + kept_ip)
    await harness.backend.delete(IP_PREFIX + kept_ip, kv.mod_revision)
    await harness.restart()
    _, kv = await harness.backend.get(IP_PREFIX + "10.43.0.77")
    assert kv is None
    _, kv = await harness.backend.get(IP_PREFIX + kept_ip)
    assert kv is not None and json.loads(kv.value)["owner"] == "default/kept"
    status, _ = await create(harness, service("ghost", clusterIP="10.43.0.77"))
    assert status == 201


async def test_delete_collection_releases(harness):
    for name, port in (("x", 30090), ("y", 30091)):
        status, _ = await create(
            harness, service(name, type="NodePort", ports=[{"port": 80, "nodePort": port}])
        )
        assert status == 201
    status, _ = await harness.request("DELETE", "/api/v1/namespaces/default/services")
    assert status == 200
    for port in (30090, 30091):
        _, kv = await harness.backend.get(NODE_PORT_PREFIX + str(port))
        assert kv is None
