"""The in-process components' series on the API server's ``/metrics`` (as ``sampan server``
wires them: the controllers and the scheduler record into the API server's registry), with
upstream's names, labels and buckets: ``workqueue_*{name}`` and ``scheduler_*``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sampan.client import Client, ClientConfig
from sampan.client.api import DEPLOYMENTS, NODES, PODS
from sampan.controllers.base import ControllerManagerOptions
from sampan.controllers.manager import ControllerManager
from sampan.controllers.registry import CONTROLLERS
from sampan.scheduler import Scheduler, SchedulerOptions
from tests.apiserver.conftest import ServerHarness

pytestmark = pytest.mark.asyncio

WAIT_S = 30.0


class _Ctx:
    def fail(self, reason: str) -> None:
        raise AssertionError(reason)


def _pod(name: str, cpu: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}
            ]
        },
    }


async def _samples(harness: ServerHarness) -> list[Any]:
    status, text = await harness.request("GET", "/metrics")
    assert status == 200
    assert "_created" not in text  # as Go's client: no *_created series
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def _value(samples: list[Any], metric: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_scheduler_and_workqueue_series(harness: ServerHarness) -> None:
    assert harness.server is not None
    registry = harness.server.metrics.registry
    config = ClientConfig.from_kubeconfig(harness.kubeconfig)
    scheduler = Scheduler(config, SchedulerOptions(leader_elect=False), metrics_registry=registry)
    manager = ControllerManager(
        config,
        ControllerManagerOptions(leader_elect=False, identity="test"),
        controllers={"deployment": CONTROLLERS["deployment"]},
        metrics_registry=registry,
    )
    await scheduler.start(_Ctx())
    await manager.start(_Ctx())
    try:
        async with Client(config) as client:
            resources = {"cpu": "1", "memory": "4Gi", "pods": "110"}
            await client.create(
                NODES,
                {
                    "metadata": {"name": "n1"},
                    "status": {"capacity": resources, "allocatable": resources},
                },
            )
            await client.create(PODS, _pod("fits", "100m"), namespace="default")
            await client.create(PODS, _pod("too-big", "8"), namespace="default")
            await client.create(
                DEPLOYMENTS,
                {
                    "metadata": {"name": "web"},
                    "spec": {
                        "replicas": 0,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                        },
                    },
                },
                namespace="default",
            )
            async with asyncio.timeout(WAIT_S):
                while True:
                    samples = await _samples(harness)
                    profile = {"profile": "default-scheduler"}
                    done = (
                        _value(samples, "scheduler_schedule_attempts_total", result="scheduled")
                        >= 1
                        and _value(
                            samples, "scheduler_schedule_attempts_total", result="unschedulable"
                        )
                        >= 1
                        and _value(
                            samples, "workqueue_work_duration_seconds_count", name="deployment"
                        )
                        >= 1
                        # settled: every key added has been handed out
                        and _value(samples, "workqueue_depth", name="deployment") == 0
                    )
                    if done:
                        break
                    await asyncio.sleep(0.1)
    finally:
        await manager.stop()
        await scheduler.stop()

    assert _value(samples, "scheduler_schedule_attempts_total", result="scheduled", **profile) == 1
    assert (
        _value(samples, "scheduler_scheduling_attempt_duration_seconds_count", result="scheduled")
        == 1
    )
    le = [
        s.labels["le"]
        for s in samples
        if s.name == "scheduler_scheduling_attempt_duration_seconds_bucket"
        and s.labels["result"] == "scheduled"
    ]
    assert le[0] == "0.001" and le[-2] == "16.384" and le[-1] == "+Inf"
    assert _value(samples, "scheduler_pending_pods", queue="unschedulable") == 1
    assert _value(samples, "scheduler_pending_pods", queue="active") == 0
    assert {s.labels["queue"] for s in samples if s.name == "scheduler_pending_pods"} == {
        "active",
        "backoff",
        "unschedulable",
        "gated",
    }
    assert _value(samples, "workqueue_adds_total", name="deployment") >= 1
    le = [
        s.labels["le"]
        for s in samples
        if s.name == "workqueue_queue_duration_seconds_bucket" and s.labels["name"] == "deployment"
    ]
    # Go's ExponentialBuckets(10e-7, 10, 10), the same floats as kube-controller-manager's
    assert le[:2] == ["1e-06", "9.999999999999999e-06"] and len(le) == 11 and le[-1] == "+Inf"
    in_progress = {
        s.name
        for s in samples
        if s.name.startswith("workqueue_") and s.labels.get("name") == "deployment"
    }
    assert {
        "workqueue_longest_running_processor_seconds",
        "workqueue_unfinished_work_seconds",
        "workqueue_retries_total",
    } <= in_progress
