"""Endpoints and EndpointSlice controllers against a real API server (the test is the kubelet)."""

from __future__ import annotations

from typing import Any

from sampan.client import Client, NotFoundError
from sampan.client.api import ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES
from sampan.controllers.endpoints import EndpointsController
from sampan.controllers.endpointslice import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    MAX_ENDPOINTS_PER_SLICE,
    EndpointSliceController,
)
from sampan.controllers.garbagecollector import GarbageCollector

from .conftest import eventually

NS = "default"


def _pod(name: str, port: int = 8080, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "ports": [{"name": "http", "containerPort": port}],
                }
            ],
        },
    }


SERVICE = {
    "metadata": {"name": "web", "labels": {"tier": "front"}},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    },
}


async def _run_pod(client: Client, pod: dict[str, Any], ip: str, ready: bool) -> dict[str, Any]:
    """Play the kubelet: the pod runs with ``ip``, Ready or not."""
    try:
        current = await client.get(PODS, pod["metadata"]["name"], namespace=NS)
    except NotFoundError:
        current = await client.create(PODS, pod, namespace=NS)
    current["status"] = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return await client.update_status(PODS, current, namespace=NS)


async def _slices(client: Client, service: str = "web") -> list[dict[str, Any]]:
    listing = await client.list(
        ENDPOINTSLICES, namespace=NS, label_selector=f"{LABEL_SERVICE_NAME}={service}"
    )
    return listing["items"]


def _by_ip(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["addresses"][0]: e for s in slices for e in s.get("endpoints") or []}


async def test_endpoints_follow_readiness_and_named_ports(client: Client, run_controller) -> None:
    await run_controller(EndpointsController)
    await client.create(SERVICES, SERVICE, namespace=NS)
    await _run_pod(client, _pod("a", 8080), "10.42.0.10", ready=True)
    await _run_pod(client, _pod("b", 9090), "10.42.0.11", ready=False)
    await _run_pod(client, _pod("other", labels={"app": "db"}), "10.42.0.12", ready=True)

    async def subsets() -> list[dict[str, Any]] | None:
        try:
            ep = await client.get(ENDPOINTS, "web", namespace=NS)
        except NotFoundError:
            return None
        got = ep.get("subsets") or []
        return got if len(got) == 2 else None

    got = await eventually(subsets)
    by_port = {s["ports"][0]["port"]: s for s in got}
    assert [a["ip"] for a in by_port[8080]["addresses"]] == ["10.42.0.10"]
    assert by_port[8080]["addresses"][0]["targetRef"]["name"] == "a"
    assert by_port[8080]["addresses"][0]["nodeName"] == "node-a"
    assert [a["ip"] for a in by_port[9090]["notReadyAddresses"]] == ["10.42.0.11"]
    assert by_port[9090]["ports"][0]["name"] == "http"

    await _run_pod(client, _pod("b", 9090), "10.42.0.11", ready=True)

    async def b_ready() -> bool:
        ep = await client.get(ENDPOINTS, "web", namespace=NS)
        ready = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
        return "10.42.0.11" in ready

    await eventually(b_ready)
    await client.delete(SERVICES, "web", namespace=NS)

    async def ep_gone() -> bool:
        try:
            await client.get(ENDPOINTS, "web", namespace=NS)
        except NotFoundError:
            return True
        return False

    await eventually(ep_gone)


async def test_endpointslices_conditions_and_placeholder(client: Client, run_controller) -> None:
    await run_controller(EndpointSliceController)
    await run_controller(GarbageCollector)
    service = await client.create(SERVICES, SERVICE, namespace=NS)

    async def placeholder() -> list[dict[str, Any]] | None:
        slices = await _slices(client)
        return slices if len(slices) == 1 and not slices[0].get("endpoints") else None

    slices = await eventually(placeholder)
    meta = slices[0]["metadata"]
    assert meta["labels"][LABEL_MANAGED_BY] == "endpointslice-controller.k8s.io"
    assert meta["labels"]["tier"] == "front"
    assert meta["ownerReferences"][0]["uid"] == service["metadata"]["uid"]
    assert meta["ownerReferences"][0]["controller"] is True

    await _run_pod(client, _pod("a"), "10.42.0.10", ready=True)
    await _run_pod(client, _pod("b"), "10.42.0.11", ready=False)

    async def two() -> dict[str, dict[str, Any]] | None:
        found = _by_ip(await _slices(client))
        return found if len(found) == 2 else None

    found = await eventually(two)
    assert found["10.42.0.10"]["conditions"] == {
        "ready": True,
        "serving": True,
        "terminating": False,
    }
    assert found["10.42.0.11"]["conditions"]["ready"] is False
    assert found["10.42.0.10"]["targetRef"]["name"] == "a"
    slices = await _slices(client)
    assert len(slices) == 1
    assert slices[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert slices[0]["addressType"] == "IPv4"

    # A terminating pod stays, serving but not ready. Give it a finalizer so it lingers.
    await client.patch(PODS, "a", {"metadata": {"finalizers": ["example.com/x"]}}, namespace=NS)
    await client.delete(PODS, "a", namespace=NS, grace_period_s=0)

    async def a_terminating() -> bool:
        entry = _by_ip(await _slices(client)).get("10.42.0.10")
        return bool(entry and entry["conditions"]["terminating"])

    await eventually(a_terminating)
    entry = _by_ip(await _slices(client))["10.42.0.10"]
    assert entry["conditions"] == {"ready": False, "serving": True, "terminating": True}
    await client.patch(PODS, "a", {"metadata": {"finalizers": None}}, namespace=NS)

    async def only_b() -> bool:
        return set(_by_ip(await _slices(client))) == {"10.42.0.11"}

    await eventually(only_b)

    await client.delete(SERVICES, "web", namespace=NS)

    async def no_slices() -> bool:
        return await _slices(client) == []

    await eventually(no_slices)


async def test_endpointslices_split_at_one_hundred(client: Client, run_controller) -> None:
    await run_controller(EndpointSliceController)
    await client.create(SERVICES, SERVICE, namespace=NS)
    total = MAX_ENDPOINTS_PER_SLICE + 5
    for index in range(total):
        await _run_pod(client, _pod(f"p{index}"), f"10.42.1.{index}", ready=True)

    async def all_there() -> list[dict[str, Any]] | None:
        slices = await _slices(client)
        return slices if len(_by_ip(slices)) == total else None

    slices = await eventually(all_there)
    sizes = sorted(len(s["endpoints"]) for s in slices)
    assert sizes == [5, MAX_ENDPOINTS_PER_SLICE]
