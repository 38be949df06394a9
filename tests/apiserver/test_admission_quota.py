"""LimitRanger defaults and limits, ResourceQuota enforcement and usage in status, through the
real API server (and kubectl for the quota)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from sampan.apiserver.admission.allocator import NODE_PORT_PREFIX
from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok

PODS = "/api/v1/namespaces/default/pods"


def pod(name: str, resources: dict | None = None) -> dict:
    container: dict = {"name": "c", "image": "busybox"}
    if resources is not None:
        container["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]},
    }


async def limit_range(harness, limits: list[dict]) -> None:
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/limitranges",
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "lr"},
            "spec": {"limits": limits},
        },
    )
    assert status == 201, body


async def test_limit_ranger_defaults_and_bounds(harness):
    await limit_range(
        harness,
        [
            {
                "type": "Container",
                "default": {"cpu": "500m"},
                "defaultRequest": {"cpu": "100m"},
                "max": {"cpu": "1"},
                "min": {"cpu": "50m"},
            }
        ],
    )
    status, created = await harness.request("POST", PODS, pod("d"))
    assert status == 201, created
    resources = created["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "500m"}, "requests": {"cpu": "100m"}}
    assert created["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu request for container c; cpu limit for container c"
    )
    status, body = await harness.request("POST", PODS, pod("big", {"limits": {"cpu": "2"}}))
    assert status == 403
    assert body["message"] == (
        'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )
    status, body = await harness.request(
        "POST", PODS, pod("small", {"requests": {"cpu": "10m"}, "limits": {"cpu": "20m"}})
    )
    assert (
        status == 403
        and "minimum cpu usage per Container is 50m, but request is 10m" in (body["message"])
    )


async def wait_used(harness, name: str, key: str, value: str) -> dict:
    quota: dict = {}
    for _ in range(100):
        _, quota = await harness.request("GET", f"/api/v1/namespaces/default/resourcequotas/{name}")
        if (quota.get("status") or {}).get("used", {}).get(key) == value:
            return quota
        await asyncio.sleep(0.05)
    raise AssertionError(f"quota {name} never showed {key}={value}: {quota.get('status')}")


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_resource_quota(harness):
    await ok(harness, "create", "quota", "q", "--hard=pods=2,configmaps=3,requests.cpu=1")
    await wait_used(harness, "q", "pods", "0")

    status, body = await harness.request("POST", PODS, pod("nocpu"))
    assert status == 403
    assert body["message"] == (
        'pods "nocpu" is forbidden: failed quota: q: must specify requests.cpu for: c'
    )
    status, _ = await harness.request("POST", PODS, pod("a", {"requests": {"cpu": "400m"}}))
    assert status == 201
    quota = await wait_used(harness, "q", "pods", "1")
    assert quota["status"]["used"]["requests.cpu"] == "400m"
    assert quota["status"]["hard"] == {"pods": "2", "configmaps": "3", "requests.cpu": "1"}

    status, body = await harness.request("POST", PODS, pod("b", {"requests": {"cpu": "700m"}}))
    assert status == 403
    assert body["message"] == (
        'pods "b" is forbidden: exceeded quota: q, requested: requests.cpu=700m, '
        "used: requests.cpu=400m, limited: requests.cpu=1"
    )
    status, _ = await harness.request("POST", PODS, pod("b", {"requests": {"cpu": "100m"}}))
    assert status == 201
    status, body = await harness.request("POST", PODS, pod("c", {"requests": {"cpu": "100m"}}))
    assert (
        status == 403
        and "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        in (body["message"])
    )
    code, out, _ = await kubectl(harness, "describe", "quota", "q")
    assert code == 0 and "requests.cpu" in out and "500m" in out

    # Deleting frees the quota (usage recalculated from what exists).
    status, _ = await harness.request("DELETE", f"{PODS}/a", params={"gracePeriodSeconds": "0"})
    assert status == 200
    await wait_used(harness, "q", "pods", "1")
    status, _ = await harness.request("POST", PODS, pod("c", {"requests": {"cpu": "100m"}}))
    assert status == 201

    # Concurrent creates never pass the quota together.
    statuses = await asyncio.gather(
        *(
            harness.request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"}},
            )
            for i in range(6)
        )
    )
    assert sorted(s for s, _ in statuses) == [201, 201, 201, 403, 403, 403]
    used = json.loads(await ok(harness, "get", "quota", "q", "-o", "json"))["status"]["used"]
    assert used["configmaps"] == "3"


async def test_quota_on_service_update(harness):
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces/default/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "np"},
            "spec": {"hard": {"services.nodeports": "0"}},
        },
    )
    assert status == 201
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "s"}},
    }
    status, _ = await harness.request("POST", "/api/v1/namespaces/default/services", service)
    assert status == 201
    status, body = await harness.request(
        "PATCH",
        "/api/v1/namespaces/default/services/s",
        {"spec": {"type": "NodePort"}},
        content_type="application/merge-patch+json",
    )
    assert status == 403, body
    assert "exceeded quota: np, requested: services.nodeports=1" in body["message"]
    # Refused: the node port it had claimed on the way is free again.
    _, current = await harness.request("GET", "/api/v1/namespaces/default/services/s")
    assert current["spec"]["type"] == "ClusterIP"
    claims = await harness.backend.list(NODE_PORT_PREFIX)
    assert claims.items == []
