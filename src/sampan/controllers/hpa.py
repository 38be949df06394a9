"""HorizontalPodAutoscaler controller (upstream's "horizontalpodautoscaling").

Every ``SYNC_PERIOD_S`` (upstream's ``--horizontal-pod-autoscaler-sync-period``, 15 s) each
HPA is reconciled: read the target's ``/scale`` subresource (any kind that has one, found by
discovery of the ``scaleTargetRef``'s group/version), compute a replica count per metric,
take the largest, normalize it, write the new scale when it differs, then write the status.

Metrics (``autoscaling/v2``): ``Resource`` and ``ContainerResource`` for cpu and memory, each
with a ``Utilization`` (percentage of the pods' requests) or ``AverageValue`` target. Usage
comes from a ``MetricsSource``; the default reads ``metrics.k8s.io/v1beta1`` PodMetrics through
the API server with the controller's client (so through aggregation). Other metric types
(Pods, Object, External) need a custom/external metrics API that Sampan does not serve: they
are reported invalid in the conditions as upstream reports a failing metrics API.

Replica calculation as upstream's replica calculator: pods being deleted or Failed are
ignored; for cpu, pods not Ready are "unready"; pods without metrics are "missing". Within
``TOLERANCE`` (0.1) of the target nothing changes. Missing pods count as at the target when
scaling down and as zero when scaling up, unready pods as zero when scaling up; if that flips
the direction the count stays.

Normalization: without ``spec.behavior``, the highest recommendation of the last
``DOWNSCALE_STABILIZATION_S`` (300 s) wins and a scale-up is limited to max(2x, 4); with it,
each direction's stabilization window and policies (``Pods``/``Percent`` per period,
``selectPolicy`` Max/Min/Disabled, upstream's defaults for omitted parts) apply. Then
min/max replicas. Conditions ``AbleToScale``, ``ScalingActive``, ``ScalingLimited`` and the
events (``SuccessfulRescale``, ``FailedGetScale``, ``FailedGetResourceMetric``,
``FailedComputeMetricsReplicas``, ``FailedRescale``...) carry upstream's reasons and messages.

Invariants: recommendations and scale events are kept per HPA key in memory (one leadership
term), timestamped with the context clock; a condition's ``lastTransitionTime`` changes only
when its status does; the cached HPA is never mutated.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from sampan.api.labels import SelectorError, parse_selector
from sampan.api.quantity import DECIMAL_SI, QuantityError, format_canonical
from sampan.api.quantity import milli_value as _milli
from sampan.client import ApiError, Client
from sampan.client.api import HPAS, PODS, Resource
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import format_time, wall_now

__all__ = [
    "DOWNSCALE_STABILIZATION_S",
    "SYNC_PERIOD_S",
    "TOLERANCE",
    "APIMetricsSource",
    "HPAController",
    "MetricsError",
    "MetricsSource",
    "PodUsage",
]

log = logging.getLogger("sampan.controllers.hpa")

SYNC_PERIOD_S = 15.0
TOLERANCE = 0.1
DOWNSCALE_STABILIZATION_S = 300.0
DEFAULT_CPU_UTILIZATION = 80
COMPONENT = "horizontal-pod-autoscaler"
_NO_READY_METRICS = "did not receive metrics for targeted pods (pods might be unready)"
_DOWN_STABILIZED = (
    "recent recommendations were higher than current one, applying the highest recent "
    "recommendation"
)
_UP_STABILIZED = (
    "recent recommendations were lower than current one, applying the lowest recent recommendation"
)


class MetricsError(Exception):
    """Metrics could not be read."""


@dataclass(frozen=True)
class PodUsage:
    """One pod's usage per container, in milli-units (millicores, milli-bytes)."""

    timestamp: str
    window_s: float
    containers: Mapping[str, Mapping[str, int]]


class MetricsSource(Protocol):
    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        """Pod name -> usage of the pods matching ``selector`` (``MetricsError``)."""
        ...


def _go_duration_s(text: str) -> float:
    total = 0.0
    number = ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = text[i : i + 2] if text[i : i + 2] in units else ch
        total += float(number or 0) * units.get(unit, 0.0)
        number = ""
        i += len(unit)
    return total


class APIMetricsSource:
    """PodMetrics from ``/apis/metrics.k8s.io/v1beta1/namespaces/<ns>/pods``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
        try:
            body = await self.client.request("GET", path, params={"labelSelector": selector})
        except ApiError as exc:
            message = f"unable to fetch metrics from resource metrics API: {exc.message}"
            raise MetricsError(message) from exc
        result: dict[str, PodUsage] = {}
        for item in (body or {}).get("items") or []:
            containers: dict[str, dict[str, int]] = {}
            try:
                for c in item.get("containers") or []:
                    usage = c.get("usage") or {}
                    containers[c["name"]] = {k: _milli(v) for k, v in usage.items()}
            except (QuantityError, KeyError, TypeError):
                continue
            result[item["metadata"]["name"]] = PodUsage(
                item.get("timestamp", ""), _go_duration_s(item.get("window", "")), containers
            )
        return result


class _ComputeError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Recommendation:
    at: float
    replicas: int


@dataclass
class _ScaleEvent:
    at: float
    change: int


@dataclass
class _State:
    recommendations: list[_Recommendation] = field(default_factory=list)
    up_events: list[_ScaleEvent] = field(default_factory=list)
    down_events: list[_ScaleEvent] = field(default_factory=list)


def _default_rules(direction: str, rules: Mapping[str, Any] | None) -> dict[str, Any]:
    """Upstream's GenerateHPAScaleUpRules / GenerateHPAScaleDownRules."""
    rules = dict(rules or {})
    if direction == "up":
        window, policies = (
            0,
            [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ],
        )
    else:
        window, policies = 300, [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    rules.setdefault("selectPolicy", "Max")
    if rules.get("stabilizationWindowSeconds") is None:
        rules["stabilizationWindowSeconds"] = window
    if not rules.get("policies"):
        rules["policies"] = policies
    return rules


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _requests(pod: Mapping[str, Any], resource: str, container: str | None) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        if container is not None and c.get("name") != container:
            continue
        value = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if value is None:
            name = pod["metadata"]["name"]
            raise _ComputeError(
                "", f"missing request for {resource} in container {c.get('name')} of Pod {name}"
            )
        total += _milli(value)
    return total


def _format_milli(milli: int) -> str:
    """A milli-value as a canonical decimal-SI quantity (resource.NewMilliQuantity)."""
    return format_canonical(Decimal(milli).scaleb(-3), DECIMAL_SI)


class HPAController(QueueController):
    name = "horizontalpodautoscaling"

    def __init__(self, ctx: ControllerContext, metrics: MetricsSource | None = None) -> None:
        super().__init__(ctx)
        self.metrics: MetricsSource = metrics or APIMetricsSource(ctx.client)
        self.hpas = self.watch(ctx.informers.informer(HPAS))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.recorder = ctx.recorder(COMPONENT)
        self.sync_period_s = SYNC_PERIOD_S
        self._states: dict[str, _State] = {}
        self._resources: dict[tuple[str, str], Resource] = {}
        self.hpas.add_event_handler(
            on_add=lambda o: self.queue.add(object_key(o)),
            on_update=self._on_update,
            on_delete=lambda o: self._states.pop(object_key(o), None),
        )

    def _on_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        # Status writes (ours) do not resync; a changed spec does.
        if old.get("spec") != new.get("spec"):
            self.queue.add(object_key(new))

    def _now(self) -> float:
        return self.ctx.clock.now()

    async def reconcile(self, key: str) -> None:
        hpa = self.hpas.cache.get(key)
        if hpa is None:
            self._states.pop(key, None)
            return
        try:
            await self._reconcile(key, copy.deepcopy(hpa))
        finally:
            if self.hpas.cache.get(key) is not None:
                self.queue.add_after(key, self.sync_period_s)

    # --- scale target ----------------------------------------------------------------------

    async def _resource_for(self, api_version: str, kind: str) -> Resource:
        cached = self._resources.get((api_version, kind))
        if cached is not None:
            return cached
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{api_version}" if group else f"/api/{version}"
        try:
            body = await self.ctx.client.request("GET", path)
        except ApiError as exc:
            raise _ComputeError(
                "", f"unable to determine resource for scale target reference: {exc.message}"
            ) from exc
        for r in (body or {}).get("resources") or []:
            if r.get("kind") == kind and "/" not in r.get("name", ""):
                resource = Resource(group, version, r["name"], kind, bool(r.get("namespaced")))
                self._resources[(api_version, kind)] = resource
                return resource
        raise _ComputeError(
            "",
            "unable to determine resource for scale target reference: no matches for kind "
            f'"{kind}" in version "{api_version}"',
        )

    # --- the sync --------------------------------------------------------------------------

    async def _reconcile(self, key: str, hpa: dict[str, Any]) -> None:
        spec = hpa.get("spec") or {}
        status = hpa.setdefault("status", {})
        original_status = copy.deepcopy(status)
        namespace = hpa["metadata"]["namespace"]
        ref = spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind')}/{ref.get('name')}"
        try:
            resource = await self._resource_for(ref.get("apiVersion", ""), ref.get("kind", ""))
            scale = await self.ctx.client.request(
                "GET",
                resource.path(namespace=namespace, name=ref.get("name", ""), subresource="scale"),
            )
        except (_ComputeError, ApiError) as exc:
            message = exc.message if isinstance(exc, ApiError) else str(exc)
            self.recorder.event(hpa, TYPE_WARNING, "FailedGetScale", message)
            self._set_condition(
                hpa,
                "AbleToScale",
                "False",
                "FailedGetScale",
                f"the HPA controller was unable to get the target's current scale: {message}",
            )
            await self._write_status(hpa, original_status)
            return
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        self._set_condition(
            hpa,
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        )
        min_replicas = int(spec.get("minReplicas") if spec.get("minReplicas") is not None else 1)
        max_replicas = int(spec.get("maxReplicas") or 0)
        metric_statuses: list[dict[str, Any]] = []
        rescale_reason = ""
        desired = 0
        if current == 0 and min_replicas != 0:
            self._set_condition(
                hpa,
                "ScalingActive",
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            )
            metric_statuses = list(status.get("currentMetrics") or [])
        elif current > max_replicas:
            rescale_reason = "Current number of replicas above Spec.MaxReplicas"
            desired = max_replicas
        elif current < min_replicas:
            rescale_reason = "Current number of replicas below Spec.MinReplicas"
            desired = min_replicas
        else:
            try:
                proposal, metric_name, metric_statuses = await self._compute(hpa, scale, current)
            except _ComputeError as exc:
                previous = int(status.get("desiredReplicas") or 0)
                self._set_status(hpa, current, previous, metric_statuses_of(exc))
                await self._write_status(hpa, original_status)
                return
            self._set_condition(
                hpa,
                "ScalingActive",
                "True",
                "ValidMetricFound",
                f"the HPA was able to successfully calculate a replica count from {metric_name}",
            )
            desired = proposal
            if desired > current:
                rescale_reason = f"{metric_name} above target"
            if desired < current:
                rescale_reason = "All metrics below target"
            if spec.get("behavior") is None:
                desired = self._normalize(key, hpa, current, desired, min_replicas, max_replicas)
            else:
                desired = self._normalize_with_behavior(
                    key, hpa, current, desired, min_replicas, max_replicas
                )
        if current == 0 and min_replicas != 0:
            desired = 0
            rescale = False
        else:
            rescale = desired != current
        if rescale:
            scale_body = copy.deepcopy(scale)
            scale_body.setdefault("spec", {})["replicas"] = desired
            try:
                await self.ctx.client.request(
                    "PUT",
                    resource.path(
                        namespace=namespace, name=ref.get("name", ""), subresource="scale"
                    ),
                    body=scale_body,
                )
            except ApiError as exc:
                self.recorder.event(
                    hpa,
                    TYPE_WARNING,
                    "FailedRescale",
                    f"New size: {desired}; reason: {rescale_reason}; error: {exc.message}",
                )
                self._set_condition(
                    hpa,
                    "AbleToScale",
                    "False",
                    "FailedUpdateScale",
                    f"the HPA controller was unable to update the target scale: {exc.message}",
                )
                self._set_status(hpa, current, current, metric_statuses)
                await self._write_status(hpa, original_status)
                return
            self._set_condition(
                hpa,
                "AbleToScale",
                "True",
                "SucceededRescale",
                f"the HPA controller was able to update the target scale to {desired}",
            )
            self.recorder.event(
                hpa,
                TYPE_NORMAL,
                "SuccessfulRescale",
                f"New size: {desired}; reason: {rescale_reason}",
            )
            self._store_scale_event(key, hpa, current, desired)
            log.info(
                "HPA %s: %s from %d to %d (%s)", key, reference, current, desired, rescale_reason
            )
            status["lastScaleTime"] = format_time(wall_now(self.ctx.clock))
        self._set_status(hpa, current, desired, metric_statuses)
        await self._write_status(hpa, original_status)

    def _set_status(
        self, hpa: dict[str, Any], current: int, desired: int, metrics: list[dict[str, Any]]
    ) -> None:
        status = hpa["status"]
        status["currentReplicas"] = current
        status["desiredReplicas"] = desired
        if metrics:
            status["currentMetrics"] = metrics
        else:
            status.pop("currentMetrics", None)
        generation = hpa["metadata"].get("generation")
        if generation is not None:
            status["observedGeneration"] = generation

    async def _write_status(self, hpa: dict[str, Any], original: Mapping[str, Any]) -> None:
        if hpa["status"] == original:
            return
        await self.ctx.client.update_status(HPAS, hpa, namespace=hpa["metadata"]["namespace"])

    def _set_condition(
        self, hpa: dict[str, Any], kind: str, status: str, reason: str, message: str
    ) -> None:
        conditions = hpa["status"].setdefault("conditions", [])
        now = format_time(wall_now(self.ctx.clock))
        for c in conditions:
            if c.get("type") == kind:
                if c.get("status") != status:
                    c["lastTransitionTime"] = now
                c.update(status=status, reason=reason, message=message)
                return
        conditions.append(
            {
                "type": kind,
                "status": status,
                "lastTransitionTime": now,
                "reason": reason,
                "message": message,
            }
        )

    # --- metrics ---------------------------------------------------------------------------

    async def _compute(
        self, hpa: dict[str, Any], scale: Mapping[str, Any], current: int
    ) -> tuple[int, str, list[dict[str, Any]]]:
        """(replicas, metric name, current metric statuses); ``_ComputeError`` with the
        statuses attached when no metric is usable."""
        spec = hpa.get("spec") or {}
        metrics = list(spec.get("metrics") or []) or [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": DEFAULT_CPU_UTILIZATION,
                    },
                },
            }
        ]
        selector_text = (scale.get("status") or {}).get("selector") or ""
        statuses: list[dict[str, Any]] = []
        best = -1
        best_name = ""
        invalid = 0
        first_error: _ComputeError | None = None
        first_reason = ""
        if not selector_text:
            err = _ComputeError(
                "InvalidSelector",
                "selector is required",
            )
            self.recorder.event(hpa, TYPE_WARNING, "SelectorRequired", "selector is required")
            self._set_condition(
                hpa,
                "ScalingActive",
                "False",
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
            )
            err.statuses = []  # type: ignore[attr-defined]
            raise err
        for metric in metrics:
            try:
                replicas, name, metric_status = await self._compute_metric(
                    hpa, metric, selector_text, current
                )
            except _ComputeError as exc:
                invalid += 1
                statuses.append(_empty_status(metric))
                if first_error is None:
                    first_error, first_reason = exc, exc.reason
                    self.recorder.event(hpa, TYPE_WARNING, exc.reason, str(exc))
                    self._set_condition(
                        hpa,
                        "ScalingActive",
                        "False",
                        exc.reason,
                        f"the HPA was unable to compute the replica count: {exc}",
                    )
                continue
            statuses.append(metric_status)
            if replicas > best:
                best, best_name = replicas, name
        if invalid == len(metrics) or (invalid and best < current):
            assert first_error is not None
            message = (
                f"invalid metrics ({invalid} invalid out of {len(metrics)}), first error is: "
                f"{first_error}"
            )
            self.recorder.event(hpa, TYPE_WARNING, "FailedComputeMetricsReplicas", message)
            err = _ComputeError(first_reason, message)
            err.statuses = statuses  # type: ignore[attr-defined]
            raise err
        return best, best_name, statuses

    async def _compute_metric(
        self, hpa: Mapping[str, Any], metric: Mapping[str, Any], selector_text: str, current: int
    ) -> tuple[int, str, dict[str, Any]]:
        kind = metric.get("type")
        if kind not in ("Resource", "ContainerResource"):
            source = (kind or "").lower()
            reason = {
                "pods": "FailedGetPodsMetric",
                "object": "FailedGetObjectMetric",
                "external": "FailedGetExternalMetric",
            }.get(source, "InvalidMetricSourceType")
            raise _ComputeError(
                reason,
                f"unable to get metric: no {source or 'such'} metrics API is served "
                f"(only metrics.k8s.io resource metrics)",
            )
        body = metric.get("resource") if kind == "Resource" else metric.get("containerResource")
        body = body or {}
        resource = body.get("name", "")
        container = body.get("container") if kind == "ContainerResource" else None
        target = body.get("target") or {}
        fail_reason = (
            "FailedGetResourceMetric" if kind == "Resource" else "FailedGetContainerResourceMetric"
        )
        namespace = hpa["metadata"]["namespace"]
        try:
            selector = parse_selector(selector_text)
        except SelectorError as exc:
            raise _ComputeError(
                "InvalidSelector",
                f"couldn't convert selector into a corresponding internal selector object: {exc}",
            ) from exc
        try:
            usage = await self.metrics.pod_usage(namespace, selector_text)
        except MetricsError as exc:
            raise _ComputeError(
                fail_reason,
                f"failed to get {resource} utilization: "
                f"unable to get metrics for resource {resource}: {exc}",
            ) from exc
        metrics: dict[str, int] = {}
        for pod_name, pod_usage in usage.items():
            total = 0
            found = False
            for cname, values in pod_usage.containers.items():
                if container is not None and cname != container:
                    continue
                if resource in values:
                    total += values[resource]
                    found = True
            if found:
                metrics[pod_name] = total
        if not metrics:
            if target.get("type") == "Utilization":
                prefix = f"failed to get {resource} utilization"
            else:
                prefix = f"failed to get {resource} usage"
            detail = "no metrics returned from resource metrics API"
            if container is not None:
                detail = f"container {container} not present in metrics"
            raise _ComputeError(
                fail_reason, f"{prefix}: unable to get metrics for resource {resource}: {detail}"
            )
        pods = [
            p
            for p in self.pods.cache.list()
            if p["metadata"].get("namespace") == namespace
            and selector.matches(p["metadata"].get("labels") or {})
        ]
        if not pods:
            raise _ComputeError(
                fail_reason,
                f"failed to get {resource} utilization: "
                "no pods returned by selector while calculating replica count",
            )
        ready_count, ignored, unready, missing = 0, set(), set(), set()
        for pod in pods:
            name = pod["metadata"]["name"]
            phase = (pod.get("status") or {}).get("phase")
            if pod["metadata"].get("deletionTimestamp") or phase == "Failed":
                ignored.add(name)
                continue
            if phase == "Pending":
                unready.add(name)
                continue
            if name not in metrics:
                missing.add(name)
                continue
            if resource == "cpu" and not _pod_ready(pod):
                unready.add(name)
                continue
            ready_count += 1
        for name in ignored | unready:
            metrics.pop(name, None)
        by_name = {p["metadata"]["name"]: p for p in pods}
        if target.get("type") == "Utilization":
            goal = int(target.get("averageUtilization") or 0)
            requests: dict[str, int] = {}
            try:
                for name in set(metrics) | missing:
                    requests[name] = _requests(by_name[name], resource, container)
            except _ComputeError as exc:
                raise _ComputeError(
                    fail_reason, f"failed to get {resource} utilization: {exc}"
                ) from exc
            if not metrics:
                raise _ComputeError(
                    fail_reason,
                    f"failed to get {resource} utilization: {_NO_READY_METRICS}",
                )
            try:
                ratio, utilization, raw_average = _utilization(metrics, requests, goal)
            except _ComputeError as exc:
                raise _ComputeError(
                    fail_reason, f"failed to get {resource} utilization: {exc}"
                ) from exc
            replicas = _replicas_with_gaps(
                current,
                ratio,
                metrics,
                missing,
                unready,
                fill_low=lambda name: requests[name],
                fill_high=0,
                recompute=lambda m: _utilization(m, requests, goal)[0],
            )
            name_suffix = "resource utilization (percentage of request)"
            current_values = {
                "averageUtilization": utilization,
                "averageValue": _format_milli(raw_average),
            }
        else:
            goal_milli = _milli(target.get("averageValue") or 0)
            if goal_milli <= 0:
                raise _ComputeError(
                    fail_reason, f"failed to get {resource} usage: invalid target averageValue"
                )
            if not metrics:
                raise _ComputeError(
                    fail_reason,
                    f"failed to get {resource} usage: {_NO_READY_METRICS}",
                )
            average = sum(metrics.values()) // len(metrics)
            ratio = sum(metrics.values()) / (goal_milli * len(metrics))
            replicas = _replicas_with_gaps(
                current,
                ratio,
                metrics,
                missing,
                unready,
                fill_low=lambda _name: goal_milli,
                fill_high=0,
                recompute=lambda m: sum(m.values()) / (goal_milli * len(m)),
            )
            name_suffix = "resource"
            current_values = {"averageValue": _format_milli(average)}
        if kind == "Resource":
            metric_name = f"{resource} {name_suffix}"
            status = {"type": "Resource", "resource": {"name": resource, "current": current_values}}
        else:
            metric_name = f"{resource} container {name_suffix}"
            status = {
                "type": "ContainerResource",
                "containerResource": {
                    "name": resource,
                    "container": container,
                    "current": current_values,
                },
            }
        return replicas, metric_name, status

    # --- normalization ---------------------------------------------------------------------

    def _state(self, key: str) -> _State:
        return self._states.setdefault(key, _State())

    def _normalize(
        self, key: str, hpa: dict[str, Any], current: int, desired: int, min_r: int, max_r: int
    ) -> int:
        state = self._state(key)
        now = self._now()
        cutoff = now - DOWNSCALE_STABILIZATION_S
        stabilized = desired
        for rec in state.recommendations:
            if rec.at >= cutoff and rec.replicas > stabilized:
                stabilized = rec.replicas
        state.recommendations = [r for r in state.recommendations if r.at >= cutoff]
        state.recommendations.append(_Recommendation(now, desired))
        if stabilized != desired:
            self._set_condition(
                hpa,
                "AbleToScale",
                "True",
                "ScaleDownStabilized",
                _DOWN_STABILIZED,
            )
        else:
            self._set_condition(
                hpa,
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
            )
        scale_up_limit = max(2 * current, 4)
        if max_r > scale_up_limit:
            maximum, cond, msg = (
                scale_up_limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        else:
            maximum, cond, msg = (
                max_r,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        if stabilized < min_r:
            result, cond, msg = (
                min_r,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        elif stabilized > maximum:
            result = maximum
        else:
            result, cond, msg = (
                stabilized,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            )
        self._set_condition(
            hpa, "ScalingLimited", "False" if result == stabilized else "True", cond, msg
        )
        return result

    def _normalize_with_behavior(
        self, key: str, hpa: dict[str, Any], current: int, desired: int, min_r: int, max_r: int
    ) -> int:
        behavior = (hpa.get("spec") or {}).get("behavior") or {}
        up = _default_rules("up", behavior.get("scaleUp"))
        down = _default_rules("down", behavior.get("scaleDown"))
        state = self._state(key)
        now = self._now()
        up_window = float(up["stabilizationWindowSeconds"])
        down_window = float(down["stabilizationWindowSeconds"])
        if not state.recommendations and down_window > 0:
            state.recommendations.append(_Recommendation(now, current))
        up_rec = down_rec = desired
        longest = max(up_window, down_window)
        for rec in state.recommendations:
            if rec.at > now - up_window:
                up_rec = min(up_rec, rec.replicas)
            if rec.at > now - down_window:
                down_rec = max(down_rec, rec.replicas)
        state.recommendations = [r for r in state.recommendations if r.at > now - longest]
        state.recommendations.append(_Recommendation(now, desired))
        stabilized = current
        reason, message = "", ""
        if stabilized < up_rec:
            stabilized = up_rec
        if stabilized > down_rec:
            stabilized = down_rec
        if stabilized != desired:
            if stabilized < desired:
                reason = "ScaleUpStabilized"
                message = _UP_STABILIZED
            else:
                reason = "ScaleDownStabilized"
                message = _DOWN_STABILIZED
            self._set_condition(hpa, "AbleToScale", "True", reason, message)
        else:
            self._set_condition(
                hpa,
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
            )
        result, cond, msg = (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
        if stabilized > current:
            limit = _scale_up_limit(current, state.up_events, state.down_events, up, now)
            limit = max(limit, current)
            if max_r > limit:
                maximum, c, m = (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            else:
                maximum, c, m = (
                    max_r,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            if stabilized > maximum:
                result, cond, msg = maximum, c, m
        elif stabilized < current:
            limit = _scale_down_limit(current, state.up_events, state.down_events, down, now)
            limit = min(limit, current)
            if min_r < limit:
                minimum, c, m = (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            else:
                minimum, c, m = (
                    min_r,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            if stabilized < minimum:
                result, cond, msg = minimum, c, m
        self._set_condition(
            hpa, "ScalingLimited", "False" if result == stabilized else "True", cond, msg
        )
        return result

    def _store_scale_event(self, key: str, hpa: Mapping[str, Any], before: int, after: int) -> None:
        behavior = (hpa.get("spec") or {}).get("behavior")
        if behavior is None:
            return
        state = self._state(key)
        now = self._now()
        horizon = max(
            [
                float(p.get("periodSeconds") or 0)
                for d in ("scaleUp", "scaleDown")
                for p in _default_rules("up" if d == "scaleUp" else "down", behavior.get(d))[
                    "policies"
                ]
            ]
            or [0.0]
        )
        state.up_events = [e for e in state.up_events if e.at > now - horizon]
        state.down_events = [e for e in state.down_events if e.at > now - horizon]
        if after > before:
            state.up_events.append(_ScaleEvent(now, after - before))
        elif after < before:
            state.down_events.append(_ScaleEvent(now, before - after))


def metric_statuses_of(exc: Exception) -> list[dict[str, Any]]:
    return list(getattr(exc, "statuses", []) or [])


def _empty_status(metric: Mapping[str, Any]) -> dict[str, Any]:
    """The currentMetrics slot of a metric that could not be read: upstream keeps an empty
    MetricStatus there, so ``kubectl get hpa`` shows ``<unknown>`` for it."""
    del metric
    return {"type": ""}


def _changes_in_period(events: list[_ScaleEvent], period: float, now: float) -> int:
    return sum(e.change for e in events if e.at > now - period)


def _period_start(
    current: int, ups: list[_ScaleEvent], downs: list[_ScaleEvent], period_s: float, now: float
) -> int:
    """The replicas at the start of a policy's period: what was added in it taken away, what
    was removed given back (both directions count, as upstream since 1.27)."""
    return (
        current - _changes_in_period(ups, period_s, now) + _changes_in_period(downs, period_s, now)
    )


def _scale_up_limit(
    current: int,
    ups: list[_ScaleEvent],
    downs: list[_ScaleEvent],
    rules: Mapping[str, Any],
    now: float,
) -> int:
    policy = rules.get("selectPolicy") or "Max"
    if policy == "Disabled":
        return current
    results = []
    for p in rules.get("policies") or []:
        start = _period_start(current, ups, downs, float(p.get("periodSeconds") or 0), now)
        if p.get("type") == "Pods":
            results.append(start + int(p.get("value") or 0))
        else:
            results.append(math.ceil(start * (1 + int(p.get("value") or 0) / 100)))
    if not results:
        return current
    return min(results) if policy == "Min" else max(results)


def _scale_down_limit(
    current: int,
    ups: list[_ScaleEvent],
    downs: list[_ScaleEvent],
    rules: Mapping[str, Any],
    now: float,
) -> int:
    policy = rules.get("selectPolicy") or "Max"
    if policy == "Disabled":
        return current
    results = []
    for p in rules.get("policies") or []:
        start = _period_start(current, ups, downs, float(p.get("periodSeconds") or 0), now)
        if p.get("type") == "Pods":
            results.append(start - int(p.get("value") or 0))
        else:
            results.append(int(start * (1 - int(p.get("value") or 0) / 100)))
    if not results:
        return current
    # Min selects the smallest change (the most replicas), Max the largest.
    return max(results) if policy == "Min" else min(results)


def _utilization(
    metrics: Mapping[str, int], requests: Mapping[str, int], goal: int
) -> tuple[float, int, int]:
    """(usage ratio, utilization %, raw average) as upstream's GetResourceUtilizationRatio."""
    total_usage = 0
    total_request = 0
    for name, value in metrics.items():
        if name in requests:
            total_usage += value
            total_request += requests[name]
    if total_request == 0:
        raise _ComputeError("", "no metrics returned matched known pods")
    utilization = int(total_usage * 100 / total_request)
    return utilization / goal if goal else 0.0, utilization, total_usage // len(metrics)


def _replicas_with_gaps(
    current: int,
    ratio: float,
    metrics: dict[str, int],
    missing: set[str],
    unready: set[str],
    *,
    fill_low: Any,
    fill_high: int,
    recompute: Any,
) -> int:
    ready = len(metrics)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not missing and not scale_up_with_unready:
        if abs(1.0 - ratio) <= TOLERANCE:
            return current
        return math.ceil(ratio * ready)
    filled = dict(metrics)
    if missing:
        for name in missing:
            filled[name] = fill_low(name) if ratio < 1.0 else fill_high
    if scale_up_with_unready:
        for name in unready:
            filled[name] = 0
    try:
        new_ratio = recompute(filled)
    except _ComputeError:
        return current
    if (
        abs(1.0 - new_ratio) <= TOLERANCE
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return current
    replicas = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas
