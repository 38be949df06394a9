"""Node IPAM: allocator unit tests and the controller against a real API server."""

from __future__ import annotations

import pytest

from sampan.client import Client
from sampan.client.api import NODES
from sampan.controllers.base import ControllerManagerOptions
from sampan.controllers.nodeipam import CIDRAllocator, CIDRExhausted, NodeIpamController

from .conftest import eventually


def test_allocator_never_gives_a_range_twice() -> None:
    allocator = CIDRAllocator("10.42.0.0/22", 24)
    assert allocator.capacity == 4
    assert allocator.occupy("10.42.1.0/24")
    assert not allocator.occupy("10.99.0.0/24")
    assert not allocator.occupy("10.42.0.0/25")
    got = {allocator.allocate() for _ in range(3)}
    assert got == {"10.42.0.0/24", "10.42.2.0/24", "10.42.3.0/24"}
    with pytest.raises(CIDRExhausted):
        allocator.allocate()
    allocator.release("10.42.2.0/24")
    assert allocator.allocate() == "10.42.2.0/24"


def test_allocator_ipv6_and_bad_mask() -> None:
    allocator = CIDRAllocator("fd00:42::/56", 64)
    assert allocator.allocate() == "fd00:42::/64"
    assert allocator.allocate() == "fd00:42:0:1::/64"
    with pytest.raises(ValueError):
        CIDRAllocator("10.42.0.0/16", 8)


def _node(name: str, cidr: str | None = None) -> dict:
    node: dict = {"metadata": {"name": name}}
    if cidr:
        node["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
    return node


async def _cidrs(client: Client) -> dict[str, str]:
    nodes = (await client.list(NODES))["items"]
    return {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in nodes}


async def test_nodes_get_distinct_cidrs_released_on_delete(client: Client, run_controller) -> None:
    await client.create(NODES, _node("pre", "10.42.0.0/24"))
    options = ControllerManagerOptions(cluster_cidr="10.42.0.0/23")  # two /24s
    await run_controller(NodeIpamController, options=options)
    await client.create(NODES, _node("a"))
    await client.create(NODES, _node("b"))

    async def a_done() -> dict[str, str] | None:
        got = await _cidrs(client)
        return got if got.get("a") else None

    got = await eventually(a_done)
    assert got["a"] == "10.42.1.0/24"
    node_a = await client.get(NODES, "a")
    assert node_a["spec"]["podCIDRs"] == ["10.42.1.0/24"]
    assert (await _cidrs(client))["b"] is None  # full: b waits

    await client.delete(NODES, "pre")

    async def b_done() -> str | None:
        return (await _cidrs(client)).get("b")

    assert await eventually(b_done) == "10.42.0.0/24"
