from __future__ import annotations

from sampan.client import Client
from sampan.client.api import NODES, PODS

from .conftest import StartScheduler, eventually, make_node, make_pod


async def test_binds_a_pod(client: Client, start_scheduler: StartScheduler) -> None:
    await client.create(NODES, make_node("n1"))
    await start_scheduler()
    await client.create(PODS, make_pod("p1"), namespace="default")

    async def bound() -> str | None:
        pod = await client.get(PODS, "p1", namespace="default")
        return pod["spec"].get("nodeName")

    assert await eventually(bound) == "n1"
