"""Fixtures for scheduler tests: a real API server in-process and simulated nodes.

* ``api_server`` / ``client``: ``tests/support/apiserver.py``'s harness, and an admin client
  (the test plays the user and the kubelet).
* ``scheduler_config``: a ``ClientConfig`` for ``system:kube-scheduler`` (the identity the
  scheduler runs as in ``sampan server``), so RBAC gaps show up here.
* ``start_scheduler(args=None, leader_elect=False)``: construct and start a ``Scheduler``;
  stopped at the end of the test.
* ``make_node``/``make_pod``: plain Node and Pod dicts (nodes have capacity and allocatable
  and no kubelet behind them).
* ``eventually``: ``tests/support/poll.py``'s, re-exported for the tests here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sampan.client import ClientConfig
from sampan.pki import ensure_client_kubeconfig
from sampan.scheduler import Scheduler, SchedulerOptions
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401
from tests.support.poll import eventually  # noqa: F401


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
async def scheduler_config(api_server: ApiServerHarness) -> ClientConfig:  # noqa: F811
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
