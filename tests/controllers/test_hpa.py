"""HorizontalPodAutoscaler controller against a real API server, with a metrics source the
test controls and a fake clock (no sleeping): scale up above target, tolerance, the scale-up
limit and maxReplicas, the scale-down stabilization window, behavior policies, conditions and
events as upstream, and the missing-metrics / missing-request conditions."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from sampan.client import Client
from sampan.client.api import DEPLOYMENTS, EVENTS, HPAS, PODS
from sampan.client.workqueue import FakeClock
from sampan.controllers.base import ControllerContext
from sampan.controllers.hpa import (
    SYNC_PERIOD_S,
    HPAController,
    MetricsError,
    PodUsage,
    _format_milli,
    _go_duration_s,
)
from tests.controllers.conftest import RunController, eventually

pytestmark = pytest.mark.asyncio

NS = "default"
T0 = 1_700_000_000.0


class FakeMetrics:
    def __init__(self) -> None:
        self.cpu: dict[str, int] = {}  # pod -> millicores
        self.fail: str | None = None

    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        assert selector == "app=web"
        if self.fail:
            raise MetricsError(self.fail)
        return {
            name: PodUsage("2023-11-14T22:13:20Z", 15.0, {"c": {"cpu": milli, "memory": 10**9}})
            for name, milli in self.cpu.items()
        }


def _controller(metrics: FakeMetrics) -> type[HPAController]:
    class Controller(HPAController):
        def __init__(self, ctx: ControllerContext) -> None:
            super().__init__(ctx, metrics=metrics)

    return Controller


async def _deployment(client: Client, replicas: int) -> None:
    await client.create(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        namespace=NS,
    )


async def _pod(client: Client, name: str, *, cpu_request: str | None = "100m") -> None:
    resources = {"requests": {"cpu": cpu_request}} if cpu_request else {}
    pod = await client.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
        },
        namespace=NS,
    )
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    await client.update_status(PODS, pod, namespace=NS)


async def _hpa(
    client: Client, *, behavior: dict[str, Any] | None = None, max_replicas: int = 5
) -> None:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50},
                },
            }
        ],
    }
    if behavior is not None:
        spec["behavior"] = behavior
    await client.create(
        HPAS,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": NS},
            "spec": spec,
        },
        namespace=NS,
    )


def _condition(hpa: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in hpa["status"].get("conditions", []) if c["type"] == kind]
    assert found, hpa["status"]
    return found[0]


async def _replicas(client: Client) -> int:
    return int((await client.get(DEPLOYMENTS, "web", namespace=NS))["spec"]["replicas"])


async def _status_where(client: Client, check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        hpa = await client.get(HPAS, "web", namespace=NS)
        return hpa if hpa.get("status") and check(hpa) else None

    return await eventually(probe)


async def _events(client: Client, reason: str) -> list[str]:
    body = await client.list(EVENTS, namespace=NS)
    items = body["items"] if isinstance(body, dict) else body
    return [e["message"] for e in items if e.get("reason") == reason]


def _utilization(hpa: dict[str, Any]) -> int | None:
    metrics = hpa["status"].get("currentMetrics") or []
    if not metrics or metrics[0].get("type") != "Resource":
        return None
    return metrics[0]["resource"]["current"].get("averageUtilization")


async def _advance(clock: FakeClock, seconds: float) -> None:
    """Move the clock once the controller has asked for its next resync (``add_after`` runs
    after the status write the test saw: advancing earlier would skip that resync)."""

    async def resync_pending() -> bool:
        return clock.sleepers > 0

    await eventually(resync_pending)
    clock.advance(seconds)


async def test_helpers() -> None:
    assert _format_milli(90) == "90m"
    assert _format_milli(2000) == "2"
    assert _go_duration_s("1m15.5s") == 75.5


async def test_scales_up_respects_tolerance_limits_and_stabilization(
    client: Client, run_controller: RunController
) -> None:
    clock = FakeClock(T0)
    metrics = FakeMetrics()
    metrics.cpu = {"p1": 90}
    await _deployment(client, 1)
    await _pod(client, "p1")
    await _hpa(client)
    await run_controller(_controller(metrics), clock=clock)

    # 90% of the request against a 50% target: ceil(1.8 * 1) = 2
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 2)
    assert await _replicas(client) == 2
    assert hpa["status"]["currentReplicas"] == 1
    assert hpa["status"]["currentMetrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "current": {"averageUtilization": 90, "averageValue": "90m"},
            },
        }
    ]
    assert hpa["status"]["lastScaleTime"] == "2023-11-14T22:13:20Z"
    assert _condition(hpa, "AbleToScale")["reason"] == "SucceededRescale"
    assert _condition(hpa, "AbleToScale")["message"] == (
        "the HPA controller was able to update the target scale to 2"
    )
    assert _condition(hpa, "ScalingActive") | {"lastTransitionTime": ""} == {
        "type": "ScalingActive",
        "status": "True",
        "reason": "ValidMetricFound",
        "message": "the HPA was able to successfully calculate a replica count from cpu resource "
        "utilization (percentage of request)",
        "lastTransitionTime": "",
    }
    assert _condition(hpa, "ScalingLimited")["reason"] == "DesiredWithinRange"
    assert "New size: 2; reason: cpu resource utilization (percentage of request) above target" in (
        await eventually(lambda: _events(client, "SuccessfulRescale"))
    )

    # 53%: within the 0.1 tolerance, nothing changes
    await _pod(client, "p2")
    metrics.cpu = {"p1": 52, "p2": 54}
    await _advance(clock, SYNC_PERIOD_S)
    hpa = await _status_where(client, lambda h: _utilization(h) == 53)
    assert hpa["status"]["desiredReplicas"] == 2 and await _replicas(client) == 2

    # 500%: the scale-up limit max(2 * 2, 4) = 4, then maxReplicas 5
    metrics.cpu = {"p1": 500, "p2": 500}
    await _advance(clock, SYNC_PERIOD_S)
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 4)
    assert _condition(hpa, "ScalingLimited")["status"] == "True"
    assert _condition(hpa, "ScalingLimited")["reason"] == "ScaleUpLimit"
    await _advance(clock, SYNC_PERIOD_S)
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 5)
    assert _condition(hpa, "ScalingLimited")["reason"] == "TooManyReplicas"
    assert _condition(hpa, "ScalingLimited")["message"] == (
        "the desired replica count is more than the maximum replica count"
    )
    assert await _replicas(client) == 5

    # idle: the 300 s scale-down stabilization window keeps the highest recommendation
    metrics.cpu = {"p1": 5, "p2": 5}
    await _advance(clock, SYNC_PERIOD_S)
    hpa = await _status_where(client, lambda h: _utilization(h) == 5)
    assert await _replicas(client) == 5
    assert _condition(hpa, "AbleToScale")["reason"] == "ScaleDownStabilized"
    await _advance(clock, 300)
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 1)
    assert await _replicas(client) == 1
    assert "New size: 1; reason: All metrics below target" in await _events(
        client, "SuccessfulRescale"
    )


async def test_behavior_policies(client: Client, run_controller: RunController) -> None:
    clock = FakeClock(T0)
    metrics = FakeMetrics()
    metrics.cpu = {"p1": 100, "p2": 100}
    await _deployment(client, 2)
    await _pod(client, "p1")
    await _pod(client, "p2")
    behavior = {
        "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    }
    await _hpa(client, behavior=behavior, max_replicas=10)
    await run_controller(_controller(metrics), clock=clock)
    # 200% wants 4; one pod per 60 s
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 3)
    assert _condition(hpa, "ScalingLimited")["reason"] == "ScaleUpLimit"
    assert _condition(hpa, "ScalingLimited")["message"] == (
        "the desired replica count is increasing faster than the maximum scale rate"
    )
    await _advance(clock, SYNC_PERIOD_S)  # still inside the 60 s period: no change
    hpa = await _status_where(
        client,
        lambda h: (
            _condition(h, "ScalingLimited")["status"] == "True"
            and h["status"]["currentReplicas"] == 3
        ),
    )
    assert await _replicas(client) == 3
    metrics.cpu = {"p1": 10, "p2": 10}  # 10%: scale down, one pod per period, no window
    await _advance(clock, 60)
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 2)
    assert _condition(hpa, "ScalingLimited")["reason"] == "ScaleDownLimit"


async def test_scale_down_after_shortened_window_with_select_policy(
    client: Client, run_controller: RunController
) -> None:
    """Load stops: nothing happens inside ``scaleDown.stabilizationWindowSeconds`` (30 s),
    then the policies limit the step, ``selectPolicy: Min`` picking the smaller change; a
    scale-up inside a policy's period counts against the next scale-down, as upstream."""
    clock = FakeClock(T0)
    metrics = FakeMetrics()
    metrics.cpu = {f"p{i}": 50 for i in range(1, 5)}  # on target: 4 stays 4
    await _deployment(client, 4)
    for i in range(1, 5):
        await _pod(client, f"p{i}")
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 30,
            "selectPolicy": "Min",
            "policies": [
                {"type": "Pods", "value": 1, "periodSeconds": 60},
                {"type": "Percent", "value": 50, "periodSeconds": 60},
            ],
        },
    }
    await _hpa(client, behavior=behavior, max_replicas=10)
    await run_controller(_controller(metrics), clock=clock)
    await _status_where(client, lambda h: _utilization(h) == 50)
    assert await _replicas(client) == 4

    metrics.cpu = {f"p{i}": 5 for i in range(1, 5)}  # the load stops: 10% wants 1
    await _advance(clock, SYNC_PERIOD_S)
    hpa = await _status_where(client, lambda h: _utilization(h) == 5)
    assert _condition(hpa, "AbleToScale")["reason"] == "ScaleDownStabilized"
    assert hpa["status"]["desiredReplicas"] == 4 and await _replicas(client) == 4

    await _advance(clock, SYNC_PERIOD_S + 1)  # 31 s after the last recommendation of 4
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 3)
    # Min of the changes: 1 pod (to 3), not 50% (to 2)
    assert _condition(hpa, "ScalingLimited")["reason"] == "ScaleDownLimit"
    assert await _replicas(client) == 3

    await _advance(clock, SYNC_PERIOD_S)  # inside the 60 s period of that step: no further change
    hpa = await _status_where(
        client,
        lambda h: h["status"]["currentReplicas"] == 3 and h["status"]["desiredReplicas"] == 3,
    )
    assert await _replicas(client) == 3
    await _advance(clock, 60)
    await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 2)
    assert await _replicas(client) == 2


async def test_missing_metrics_and_requests(client: Client, run_controller: RunController) -> None:
    clock = FakeClock(T0)
    metrics = FakeMetrics()
    await _deployment(client, 1)
    await _pod(client, "p1", cpu_request=None)
    await _hpa(client)
    await run_controller(_controller(metrics), clock=clock)
    hpa = await _status_where(client, lambda h: _condition(h, "ScalingActive")["status"] == "False")
    active = _condition(hpa, "ScalingActive")
    assert active["reason"] == "FailedGetResourceMetric"
    assert active["message"] == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    )
    assert hpa["status"]["currentMetrics"] == [{"type": ""}]
    assert await _replicas(client) == 1
    assert await eventually(lambda: _events(client, "FailedComputeMetricsReplicas"))

    metrics.cpu = {"p1": 50}
    await _advance(clock, SYNC_PERIOD_S)
    hpa = await _status_where(
        client, lambda h: "missing request" in _condition(h, "ScalingActive")["message"]
    )
    assert _condition(hpa, "ScalingActive")["message"] == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "missing request for cpu in container c of Pod p1"
    )


async def test_target_without_scale_subresource(
    client: Client, run_controller: RunController
) -> None:
    clock = FakeClock(T0)
    await client.create(
        HPAS,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"},
                "maxReplicas": 3,
            },
        },
        namespace=NS,
    )
    await run_controller(_controller(FakeMetrics()), clock=clock)
    hpa = await _status_where(client, lambda h: h["status"].get("conditions"))
    able = _condition(hpa, "AbleToScale")
    assert able["status"] == "False" and able["reason"] == "FailedGetScale"
    assert able["message"] == (
        "the HPA controller was unable to get the target's current scale: "
        "the server could not find the requested resource"
    )


async def _kubectl(api_server: Any, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={api_server.kubeconfig}",
        "-n",
        NS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_autoscale_and_get_hpa(
    api_server: Any, client: Client, run_controller: RunController
) -> None:
    clock = FakeClock(T0)
    metrics = FakeMetrics()
    await _deployment(client, 1)
    await _pod(client, "p1")
    code, out = await _kubectl(
        api_server, "autoscale", "deployment", "web", "--cpu-percent=50", "--min=1", "--max=5"
    )
    assert code == 0, out
    await run_controller(_controller(metrics), clock=clock)
    await _status_where(client, lambda h: _condition(h, "ScalingActive")["status"] == "False")
    code, out = await _kubectl(api_server, "get", "hpa", "web")
    assert code == 0, out
    header, row = out.splitlines()
    assert header.split() == [
        "NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE",
    ]  # fmt: skip
    assert row.split()[:6] == ["web", "Deployment/web", "cpu:", "<unknown>/50%", "1", "5"]
    metrics.cpu = {"p1": 90}
    await _advance(clock, SYNC_PERIOD_S)
    await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 2)
    code, out = await _kubectl(api_server, "get", "hpa", "web")
    assert out.splitlines()[1].split()[:7] == [
        "web", "Deployment/web", "cpu:", "90%/50%", "1", "5", "1",
    ]  # fmt: skip


class SidecarMetrics:
    """Container "c" and a busy sidecar "s" per pod; memory in bytes (as milli-units)."""

    def __init__(self, cpu_c: int, cpu_s: int, memory: int) -> None:
        self.values = {"c": {"cpu": cpu_c, "memory": memory * 1000}, "s": {"cpu": cpu_s}}

    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        return {"p1": PodUsage("2023-11-14T22:13:20Z", 15.0, self.values)}


async def _hpa_with(client: Client, metric: dict[str, Any]) -> None:
    await client.create(
        HPAS,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 10,
                "metrics": [metric],
            },
        },
        namespace=NS,
    )


def _with_source(metrics: Any) -> type[HPAController]:
    class Controller(HPAController):
        def __init__(self, ctx: ControllerContext) -> None:
            super().__init__(ctx, metrics=metrics)

    return Controller


async def test_container_resource_counts_only_that_container(
    client: Client, run_controller: RunController
) -> None:
    await _deployment(client, 1)
    await _pod(client, "p1")
    await _hpa_with(
        client,
        {
            "type": "ContainerResource",
            "containerResource": {
                "name": "cpu",
                "container": "c",
                "target": {"type": "Utilization", "averageUtilization": 50},
            },
        },
    )
    # the sidecar burns 900m; container c uses 80m of its 100m: 80% / 50% -> ceil(1.6) = 2
    await run_controller(_with_source(SidecarMetrics(80, 900, 0)), clock=FakeClock(T0))
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 2)
    assert hpa["status"]["currentMetrics"] == [
        {
            "type": "ContainerResource",
            "containerResource": {
                "name": "cpu",
                "container": "c",
                "current": {"averageUtilization": 80, "averageValue": "80m"},
            },
        }
    ]
    assert (
        "New size: 2; reason: cpu container resource utilization (percentage of request) "
        "above target" in await eventually(lambda: _events(client, "SuccessfulRescale"))
    )


async def test_memory_average_value(client: Client, run_controller: RunController) -> None:
    await _deployment(client, 1)
    await _pod(client, "p1")
    await _hpa_with(
        client,
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "AverageValue", "averageValue": "50Mi"},
            },
        },
    )
    # 150Mi against 50Mi per pod: 3 replicas
    await run_controller(_with_source(SidecarMetrics(1, 1, 150 * 2**20)), clock=FakeClock(T0))
    hpa = await _status_where(client, lambda h: h["status"].get("desiredReplicas") == 3)
    assert hpa["status"]["currentMetrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "memory", "current": {"averageValue": "157286400"}},
        }
    ]
    assert "New size: 3; reason: memory resource above target" in await eventually(
        lambda: _events(client, "SuccessfulRescale")
    )
