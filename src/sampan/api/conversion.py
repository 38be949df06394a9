"""Conversion between versions of a kind that share storage.

``convert(info_from, obj, info_to)`` returns a new object (the input is never mutated) in the
version ``info_to`` serves. Two kinds really change shape:

* ``Event``: core/v1 <-> events.k8s.io/v1, mapped field by field as upstream does
  (involvedObject <-> regarding, message <-> note, source <-> deprecatedSource,
  firstTimestamp/lastTimestamp/count <-> deprecatedFirstTimestamp/deprecatedLastTimestamp/
  deprecatedCount, reportingComponent <-> reportingController).
* ``HorizontalPodAutoscaler``: autoscaling/v2 <-> v1. v1 only has a CPU utilization target,
  so what v1 cannot express (other metrics, behavior, current metrics, conditions) travels in
  ``autoscaling.alpha.kubernetes.io/*`` annotations, as upstream does, and comes back when the
  object is converted to v2 again: v2 -> v1 -> v2 is lossless. (Upstream writes those
  annotations in its older v2beta1 metric format; here they hold v2 JSON.)

Everything else converts by identity with ``apiVersion`` set.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sampan.api.resources import ResourceInfo

__all__ = [
    "HPA_BEHAVIOR_ANNOTATION",
    "HPA_CONDITIONS_ANNOTATION",
    "HPA_CURRENT_METRICS_ANNOTATION",
    "HPA_METRICS_ANNOTATION",
    "convert",
]

Obj = dict[str, Any]

HPA_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
HPA_CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
HPA_CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
HPA_BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"

# core/v1 field -> events.k8s.io/v1 field; fields not listed keep their name.
_EVENT_FIELDS = {
    "involvedObject": "regarding",
    "message": "note",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "reportingComponent": "reportingController",
}
_EVENT_FIELDS_BACK = {v: k for k, v in _EVENT_FIELDS.items()}
_EVENT_COMMON = ("metadata", "reason", "type", "eventTime", "series", "action", "related")


def _event_core_to_events(obj: Obj) -> Obj:
    out: Obj = {}
    for key in _EVENT_COMMON:
        if key in obj:
            out[key] = obj[key]
    for core_key, new_key in _EVENT_FIELDS.items():
        value = obj.get(core_key)
        if value not in (None, "", {}, 0) or (core_key == "involvedObject" and value):
            out[new_key] = value
    if obj.get("reportingInstance"):
        out["reportingInstance"] = obj["reportingInstance"]
    # Non-omitempty time fields of events.k8s.io/v1 read back as null.
    out.setdefault("eventTime", None)
    out.setdefault("regarding", {})
    return out


def _event_events_to_core(obj: Obj) -> Obj:
    out: Obj = {}
    for key in _EVENT_COMMON:
        if key in obj:
            out[key] = obj[key]
    for new_key, core_key in _EVENT_FIELDS_BACK.items():
        if new_key in obj and obj[new_key] not in (None, ""):
            out[core_key] = obj[new_key]
    out["reportingInstance"] = obj.get("reportingInstance") or ""
    # Shape kube-apiserver gives core/v1 events: these keys are always present.
    out.setdefault("involvedObject", {})
    out.setdefault("source", {})
    out.setdefault("firstTimestamp", None)
    out.setdefault("lastTimestamp", None)
    out.setdefault("eventTime", None)
    out.setdefault("reportingComponent", "")
    return out


def _is_cpu_utilization(metric: Any) -> bool:
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return False
    resource = metric.get("resource") or {}
    target = resource.get("target") or {}
    return resource.get("name") == "cpu" and target.get("type") == "Utilization"


def _is_cpu_current(metric: Any) -> bool:
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return False
    resource = metric.get("resource") or {}
    return resource.get("name") == "cpu" and "averageUtilization" in (resource.get("current") or {})


def _hpa_v2_to_v1(obj: Obj) -> Obj:
    out: Obj = {"metadata": copy.deepcopy(obj.get("metadata") or {})}
    annotations: dict[str, str] = dict(out["metadata"].get("annotations") or {})
    spec = obj.get("spec") or {}
    v1_spec: Obj = {}
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if key in spec:
            v1_spec[key] = copy.deepcopy(spec[key])
    other_metrics = []
    for metric in spec.get("metrics") or []:
        if _is_cpu_utilization(metric) and "targetCPUUtilizationPercentage" not in v1_spec:
            target = metric["resource"]["target"]
            if "averageUtilization" in target:
                v1_spec["targetCPUUtilizationPercentage"] = target["averageUtilization"]
                continue
        other_metrics.append(metric)
    if other_metrics:
        annotations[HPA_METRICS_ANNOTATION] = json.dumps(other_metrics, separators=(",", ":"))
    if spec.get("behavior"):
        annotations[HPA_BEHAVIOR_ANNOTATION] = json.dumps(spec["behavior"], separators=(",", ":"))
    out["spec"] = v1_spec
    status = obj.get("status")
    if isinstance(status, dict):
        v1_status: Obj = {}
        for key in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"):
            if key in status:
                v1_status[key] = status[key]
        v1_status.setdefault("currentReplicas", 0)
        v1_status.setdefault("desiredReplicas", 0)
        other_current = []
        for metric in status.get("currentMetrics") or []:
            if _is_cpu_current(metric) and "currentCPUUtilizationPercentage" not in v1_status:
                v1_status["currentCPUUtilizationPercentage"] = metric["resource"]["current"][
                    "averageUtilization"
                ]
                continue
            other_current.append(metric)
        if other_current:
            annotations[HPA_CURRENT_METRICS_ANNOTATION] = json.dumps(
                other_current, separators=(",", ":")
            )
        if status.get("conditions"):
            annotations[HPA_CONDITIONS_ANNOTATION] = json.dumps(
                status["conditions"], separators=(",", ":")
            )
        out["status"] = v1_status
    if annotations:
        out["metadata"]["annotations"] = annotations
    return out


def _pop_json(annotations: dict[str, str], key: str) -> Any:
    text = annotations.pop(key, None)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # a hand-written, unparseable annotation is dropped as upstream does


def _hpa_v1_to_v2(obj: Obj) -> Obj:
    out: Obj = {"metadata": copy.deepcopy(obj.get("metadata") or {})}
    annotations: dict[str, str] = dict(out["metadata"].get("annotations") or {})
    spec = obj.get("spec") or {}
    v2_spec: Obj = {}
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if key in spec:
            v2_spec[key] = copy.deepcopy(spec[key])
    metrics: list[Any] = []
    target = spec.get("targetCPUUtilizationPercentage")
    if target is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": target},
                },
            }
        )
    extra = _pop_json(annotations, HPA_METRICS_ANNOTATION)
    if isinstance(extra, list):
        metrics.extend(extra)
    if metrics:
        v2_spec["metrics"] = metrics
    behavior = _pop_json(annotations, HPA_BEHAVIOR_ANNOTATION)
    if isinstance(behavior, dict):
        v2_spec["behavior"] = behavior
    out["spec"] = v2_spec
    current_extra = _pop_json(annotations, HPA_CURRENT_METRICS_ANNOTATION)
    conditions = _pop_json(annotations, HPA_CONDITIONS_ANNOTATION)
    status = obj.get("status")
    if isinstance(status, dict):
        v2_status: Obj = {}
        for key in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"):
            if key in status:
                v2_status[key] = status[key]
        v2_status.setdefault("desiredReplicas", 0)
        current: list[Any] = []
        if status.get("currentCPUUtilizationPercentage") is not None:
            current.append(
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {
                            "averageUtilization": status["currentCPUUtilizationPercentage"]
                        },
                    },
                }
            )
        if isinstance(current_extra, list):
            current.extend(current_extra)
        if current:
            v2_status["currentMetrics"] = current
        if isinstance(conditions, list):
            v2_status["conditions"] = conditions
        out["status"] = v2_status
    if annotations:
        out["metadata"]["annotations"] = annotations
    else:
        out["metadata"].pop("annotations", None)
    return out


def convert(info_from: ResourceInfo, obj: Obj, info_to: ResourceInfo) -> Obj:
    """``obj`` (served as ``info_from``) as ``info_to`` serves it; a new dict."""
    if (info_from.group, info_from.version) == (info_to.group, info_to.version):
        out = copy.deepcopy(obj)
    elif info_from.kind == "Event" and info_to.kind == "Event":
        source = copy.deepcopy(obj)
        if info_from.group == "" and info_to.group == "events.k8s.io":
            out = _event_core_to_events(source)
        elif info_from.group == "events.k8s.io" and info_to.group == "":
            out = _event_events_to_core(source)
        else:
            out = source
    elif info_from.kind == info_to.kind == "HorizontalPodAutoscaler":
        if info_from.version == "v2" and info_to.version == "v1":
            out = _hpa_v2_to_v1(obj)
        elif info_from.version == "v1" and info_to.version == "v2":
            out = _hpa_v1_to_v2(obj)
        else:
            out = copy.deepcopy(obj)
    else:
        out = copy.deepcopy(obj)
    out["apiVersion"] = info_to.api_version
    out["kind"] = info_to.kind
    # Keep apiVersion and kind first, as kube-apiserver serializes them.
    return {"apiVersion": out.pop("apiVersion"), "kind": out.pop("kind"), **out}
