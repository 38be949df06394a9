"""Allocation and eviction as kubectl users meet them: apply (client- and server-side) of a
NodePort Service, and kubectl drain evicting pods through pods/eviction."""

from __future__ import annotations

import json
import os

import pytest

from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

SERVICE = b"""
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""


async def test_apply_service_twice_keeps_allocations(harness):
    assert "service/web created" in await ok(harness, "apply", "-f", "-", stdin=SERVICE)
    first = json.loads(await ok(harness, "get", "svc", "web", "-o", "json"))
    assert "service/web unchanged" in await ok(harness, "apply", "-f", "-", stdin=SERVICE)
    second = json.loads(await ok(harness, "get", "svc", "web", "-o", "json"))
    assert second["spec"]["clusterIP"] == first["spec"]["clusterIP"]
    assert second["spec"]["ports"][0]["nodePort"] == first["spec"]["ports"][0]["nodePort"]

    server_side = SERVICE.replace(b"name: web", b"name: ssa")
    out = await ok(harness, "apply", "--server-side", "-f", "-", stdin=server_side)
    assert "service/ssa serverside-applied" in out
    ssa = json.loads(await ok(harness, "get", "svc", "ssa", "-o", "json"))
    assert ssa["spec"]["clusterIP"].startswith("10.43.")
    assert ssa["spec"]["ports"][0]["nodePort"] != first["spec"]["ports"][0]["nodePort"]


async def test_kubectl_drain_evicts(harness):
    status, _ = await harness.request(
        "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    )
    assert status == 201
    for name in ("a", "b"):
        status, created = await harness.request(
            "POST",
            "/api/v1/namespaces/default/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
            },
        )
        assert status == 201, created
    code, out, err = await kubectl(
        harness, "drain", "n1", "--force", "--grace-period=0", "--timeout=30s"
    )
    assert code == 0, err
    assert "evicting pod default/a" in err + out
    assert "node/n1 drained" in out
    listed = json.loads(await ok(harness, "get", "pods", "-o", "json"))
    assert listed["items"] == []
