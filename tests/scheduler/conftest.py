"""Fixtures for scheduler tests: a real API server in-process and simulated nodes.

* ``api_server`` / ``client``: ``ApiServerHarness`` from the client tests, and an admin client
  (the test plays the user and the kubelet).
* ``scheduler_config``: a ``ClientConfig`` for ``system:kube-scheduler`` (the identity the
  scheduler runs as in ``sampan server``), so RBAC gaps show up here.
* ``start_scheduler(args=None, leader_elect=False)``: construct and start a ``Scheduler``;
  stopped at the end of the test.
* ``make_node``/``make_pod``: plain Node and Pod dicts (nodes have capacity and allocatable
  and no kubelet behind them).
* ``eventually(predicate)``: poll an async predicate until truthy (bounds a wait only).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sampan.client import Client, ClientConfig
from sampan.pki import ensure_client_kubeconfig
from sampan.scheduler import Scheduler, SchedulerOptions
from tests.client.conftest import ApiServerHarness

EVENTUALLY_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05


class _Ctx:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def fail(self, reason: str) -> None:
        self.failures.append(reason)


def make_node(
    name: str,
    cpu: str = "4",
    memory: str = "32Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    images: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        },
        "spec": {},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }
    if taints:
        node["spec"]["taints"] = taints
    if images:
        node["status"]["images"] = images
    return node


def make_pod(
    name: str,
    cpu: str | None = "100m",
    memory: str | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    requests = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    labels = spec.pop("labels", None)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests}}],
            **spec,
        },
    }
    if labels:
        pod["metadata"]["labels"] = labels
    return pod


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def client(api_server: ApiServerHarness) -> AsyncIterator[Client]:
    async with api_server.new_client() as c:
        yield c


@pytest.fixture
async def scheduler_config(api_server: ApiServerHarness) -> ClientConfig:
    assert api_server.server is not None
    path = api_server.data_dir / "scheduler.kubeconfig"
    await asyncio.to_thread(
        ensure_client_kubeconfig,
        api_server.server.pki,
        name="kube-scheduler",
        common_name="system:kube-scheduler",
        path=path,
        server_url=api_server.url,
    )
    return ClientConfig.from_kubeconfig(path)


StartScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture
async def start_scheduler(scheduler_config: ClientConfig) -> AsyncIterator[StartScheduler]:
    started: list[Scheduler] = []

    async def start(
        args: dict[str, str] | None = None, leader_elect: bool = False, **options: Any
    ) -> Scheduler:
        scheduler = Scheduler(
            scheduler_config,
            SchedulerOptions(args=args or {}, leader_elect=leader_elect, **options),
        )
        started.append(scheduler)
        await scheduler.start(_Ctx())
        return scheduler

    try:
        yield start
    finally:
        for scheduler in started:
            await scheduler.stop()


async def eventually(
    predicate: Callable[[], Awaitable[Any]], timeout_s: float = EVENTUALLY_TIMEOUT_S
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(POLL_INTERVAL_S)
    raise AssertionError(f"condition not met in {timeout_s} s; last value {last!r}")
