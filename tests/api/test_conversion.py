"""Conversion round trips between versions that share storage."""

from __future__ import annotations

import copy

from sampan.api.conversion import HPA_METRICS_ANNOTATION, convert
from sampan.api.resources import builtin_registry

REG = builtin_registry()
CORE_EVENTS = REG.by_resource("", "v1", "events")
NEW_EVENTS = REG.by_resource("events.k8s.io", "v1", "events")
HPA_V1 = REG.by_resource("autoscaling", "v1", "horizontalpodautoscalers")
HPA_V2 = REG.by_resource("autoscaling", "v2", "horizontalpodautoscalers")

CORE_EVENT = {
    "apiVersion": "v1",
    "kind": "Event",
    "metadata": {"name": "web.1", "namespace": "default"},
    "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
    "reason": "Pulled",
    "message": "Successfully pulled image",
    "source": {"component": "kubelet", "host": "node1"},
    "firstTimestamp": "2024-01-01T00:00:00Z",
    "lastTimestamp": "2024-01-01T00:01:00Z",
    "count": 2,
    "type": "Normal",
    "eventTime": None,
    "reportingComponent": "kubelet",
    "reportingInstance": "node1",
    "action": "Pull",
}


def test_core_event_to_events_v1_field_mapping() -> None:
    new = convert(CORE_EVENTS, CORE_EVENT, NEW_EVENTS)
    assert new == {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "regarding": CORE_EVENT["involvedObject"],
        "reason": "Pulled",
        "note": "Successfully pulled image",
        "deprecatedSource": {"component": "kubelet", "host": "node1"},
        "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z",
        "deprecatedLastTimestamp": "2024-01-01T00:01:00Z",
        "deprecatedCount": 2,
        "type": "Normal",
        "eventTime": None,
        "reportingController": "kubelet",
        "reportingInstance": "node1",
        "action": "Pull",
    }


def test_event_round_trips() -> None:
    original = copy.deepcopy(CORE_EVENT)
    back = convert(NEW_EVENTS, convert(CORE_EVENTS, CORE_EVENT, NEW_EVENTS), CORE_EVENTS)
    assert back == CORE_EVENT
    assert CORE_EVENT == original  # input untouched
    new_event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "e", "namespace": "default"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "series": {"count": 3, "lastObservedTime": "2024-01-01T00:05:00.000000Z"},
        "reportingController": "example.com/ctl",
        "reportingInstance": "ctl-1",
        "action": "Reconcile",
        "reason": "Synced",
        "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"},
        "note": "ok",
        "type": "Normal",
    }
    core = convert(NEW_EVENTS, new_event, CORE_EVENTS)
    assert core["message"] == "ok"
    assert core["reportingComponent"] == "example.com/ctl"
    assert core["involvedObject"]["kind"] == "Deployment"
    assert core["firstTimestamp"] is None and core["source"] == {}
    assert convert(CORE_EVENTS, core, NEW_EVENTS) == new_event


HPA_V2_OBJ = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 60},
                },
            },
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "100Mi"},
                },
            },
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
    },
    "status": {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75}}}
        ],
        "conditions": [{"type": "AbleToScale", "status": "True"}],
    },
}


def test_hpa_v2_to_v1() -> None:
    v1 = convert(HPA_V2, HPA_V2_OBJ, HPA_V1)
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 60,
    }
    assert v1["status"] == {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "currentCPUUtilizationPercentage": 75,
    }
    assert "memory" in v1["metadata"]["annotations"][HPA_METRICS_ANNOTATION]


def test_hpa_round_trips() -> None:
    assert convert(HPA_V1, convert(HPA_V2, HPA_V2_OBJ, HPA_V1), HPA_V2) == HPA_V2_OBJ
    v1_obj = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "targetCPUUtilizationPercentage": 50,
        },
    }
    v2 = convert(HPA_V1, v1_obj, HPA_V2)
    assert v2["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50},
            },
        }
    ]
    assert v2["metadata"]["annotations"] == {"team": "a"}
    assert convert(HPA_V2, v2, HPA_V1) == v1_obj


def test_identity_conversion_sets_api_version() -> None:
    pods = REG.by_resource("", "v1", "pods")
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    out = convert(pods, obj, pods)
    assert out == obj and out is not obj
