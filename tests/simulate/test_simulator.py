"""The node simulator against a real API server with the real controllers and scheduler.

20 fake nodes, a Deployment of 30 replicas: the deployment, replicaset, garbage collector,
node IPAM and node lifecycle controllers and the scheduler run in this process under their
own identities; the simulator under the admin's. Checked: every pod Running and Ready with an
IP inside its node's pod CIDR and distinct from the others, nodes Ready with a Lease renewed
after the simulator started, and deleting the Deployment removes the pods (the simulator
deletes them with grace 0 once the garbage collector marks them).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from sampan.api import times
from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.api import DEPLOYMENTS, LEASES, NODES, PODS
from sampan.controllers.base import ControllerContext, ControllerManagerOptions
from sampan.controllers.registry import CONTROLLERS
from sampan.scheduler import Scheduler, SchedulerOptions
from sampan.simulate import Simulator, SimulatorOptions
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401

T = TypeVar("T")
NODES_N = 20
REPLICAS = 30
WAIT_S = 90.0
CONTROLLER_NAMES = ("deployment", "replicaset", "garbagecollector", "nodeipam", "nodelifecycle")


class _Ctx:
    def fail(self, reason: str) -> None:
        raise AssertionError(reason)


async def eventually(predicate: Callable[[], Awaitable[T]], timeout_s: float = WAIT_S) -> T:
    """Poll ``predicate`` until truthy; fail after ``timeout_s`` (bounds a wait only)."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await predicate()
                if last:
                    return last
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout_s}s (last value: {last!r})")


@pytest.fixture
async def control_plane(api_server: ApiServerHarness) -> AsyncIterator[None]:  # noqa: F811
    controller_config = await api_server.identity_config("system:sampan-controller")
    scheduler_config = await api_server.identity_config("system:kube-scheduler")
    ctrl_client = Client(controller_config)
    factory = SharedInformerFactory(ctrl_client)
    context = ControllerContext(ctrl_client, factory, ControllerManagerOptions())
    controllers = [CONTROLLERS[name](context) for name in CONTROLLER_NAMES]
    factory.start()
    tasks = [
        asyncio.get_running_loop().create_task(c.run(2), name=f"test-{c.name}") for c in controllers
    ]
    scheduler = Scheduler(scheduler_config, SchedulerOptions(leader_elect=False))
    await scheduler.start(_Ctx())
    try:
        yield
    finally:
        await scheduler.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
        await context.aclose()
        await ctrl_client.close()


@pytest.fixture
async def simulator(api_server: ApiServerHarness) -> AsyncIterator[Simulator]:  # noqa: F811
    config: ClientConfig = api_server.client_config()
    sim = Simulator(config, SimulatorOptions(nodes=NODES_N, heartbeat_interval_s=2.0))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ],
                    "initContainers": [{"name": "init", "image": "busybox"}],
                },
            },
        },
    }


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


async def test_simulated_nodes_run_a_deployment(
    control_plane: None,
    simulator: Simulator,
    client: Client,  # noqa: F811
) -> None:
    started = times.parse(times.micro())
    assert started is not None
    await client.create(DEPLOYMENTS, _deployment("web", REPLICAS), namespace="default")

    async def all_running() -> list[dict[str, Any]] | None:
        pods = (await client.list(PODS, namespace="default", label_selector="app=web"))["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running" and _ready(p)]
        return pods if len(pods) == REPLICAS and len(running) == REPLICAS else None

    pods = await eventually(all_running)
    nodes = {n["metadata"]["name"]: n for n in (await client.list(NODES))["items"]}
    assert len([n for n in nodes if n.startswith("kwok-node-")]) == NODES_N
    ips = set()
    for pod in pods:
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["labels"]["type"] == "kwok"
        ip = pod["status"]["podIP"]
        assert pod["status"]["podIPs"] == [{"ip": ip}]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(node["spec"]["podCIDR"])
        assert pod["status"]["hostIP"] == node["status"]["addresses"][0]["address"]
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["started"] and "running" in status["state"]
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["state"]["terminated"]["reason"] == "Completed"
        ips.add(ip)
    assert len(ips) == REPLICAS

    # Every node Ready, untainted (the node lifecycle controller saw fresh heartbeats), and
    # its Lease renewed after the simulator started.
    async def leases_fresh() -> bool:
        leases = (await client.list(LEASES, namespace="kube-node-lease"))["items"]
        renewed = {
            item["metadata"]["name"]
            for item in leases
            if (times.parse(item["spec"]["renewTime"]) or started) > started
        }
        return all(f"kwok-node-{i}" in renewed for i in range(NODES_N))

    await eventually(leases_fresh)
    for name, node in nodes.items():
        if name.startswith("kwok-node-"):
            assert _ready(node), name
            assert capacity_ok(node), name
            assert not node["spec"].get("taints"), (name, node["spec"].get("taints"))

    await client.delete(DEPLOYMENTS, "web", namespace="default")

    async def pods_gone() -> bool:
        items = (await client.list(PODS, namespace="default", label_selector="app=web"))["items"]
        return not items

    await eventually(pods_gone)
    assert simulator.stats["deletes"] >= REPLICAS


def capacity_ok(node: dict[str, Any]) -> bool:
    capacity = node["status"]["capacity"]
    return capacity == {"cpu": "32", "memory": "256Gi", "pods": "110"}
