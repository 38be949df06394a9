"""Defaulted objects use only fields the official Kubernetes client knows.

Each object is created through the strategy, decoded into the `kubernetes` package's typed
model and encoded again: a misspelt or invented field would be dropped on the way and the
round trip would differ."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client import ApiClient

from sampan.api import strategy
from sampan.api.conversion import convert
from sampan.api.resources import builtin_registry

REG = builtin_registry()
CLIENT = ApiClient()

POD_SPEC = {
    "containers": [
        {
            "name": "c",
            "image": "nginx:1.27",
            "ports": [{"containerPort": 80, "name": "http"}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "readinessProbe": {"grpc": {"port": 9000}},
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
    ],
    "volumes": [
        {"name": "data"},
        {"name": "cfg", "configMap": {"name": "x"}},
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
        {"name": "host", "hostPath": {"path": "/tmp"}},
    ],
}
TEMPLATE = {"metadata": {"labels": {"app": "a"}}, "spec": POD_SPEC}
JOB_TEMPLATE = {
    "metadata": {"labels": {"app": "a"}},
    "spec": {**POD_SPEC, "restartPolicy": "Never"},
}
SELECTOR = {"matchLabels": {"app": "a"}}

CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("", "v1", "pods", "V1Pod", {"spec": POD_SPEC}),
    (
        "apps",
        "v1",
        "deployments",
        "V1Deployment",
        {"spec": {"selector": SELECTOR, "template": TEMPLATE}},
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "V1ReplicaSet",
        {"spec": {"selector": SELECTOR, "template": TEMPLATE}},
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "V1StatefulSet",
        {
            "spec": {
                "serviceName": "s",
                "selector": SELECTOR,
                "template": TEMPLATE,
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "d"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            }
        },
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "V1DaemonSet",
        {"spec": {"selector": SELECTOR, "template": TEMPLATE}},
    ),
    (
        "",
        "v1",
        "replicationcontrollers",
        "V1ReplicationController",
        {"spec": {"template": TEMPLATE}},
    ),
    ("batch", "v1", "jobs", "V1Job", {"spec": {"template": JOB_TEMPLATE}}),
    (
        "batch",
        "v1",
        "cronjobs",
        "V1CronJob",
        {"spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": JOB_TEMPLATE}}}},
    ),
    (
        "",
        "v1",
        "services",
        "V1Service",
        {"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}},
    ),
    ("", "v1", "namespaces", "V1Namespace", {}),
    ("", "v1", "secrets", "V1Secret", {"stringData": {"a": "b"}}),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "V1PersistentVolumeClaim",
        {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            }
        },
    ),
    (
        "",
        "v1",
        "limitranges",
        "V1LimitRange",
        {"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}}]}},
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "V1NetworkPolicy",
        {"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}},
    ),
    ("storage.k8s.io", "v1", "storageclasses", "V1StorageClass", {"provisioner": "x"}),
    ("storage.k8s.io", "v1", "csidrivers", "V1CSIDriver", {"spec": {}}),
    ("scheduling.k8s.io", "v1", "priorityclasses", "V1PriorityClass", {"value": 10}),
    (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "V2HorizontalPodAutoscaler",
        {
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "w"},
                "maxReplicas": 2,
                "behavior": {},
            }
        },
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "V1MutatingWebhookConfiguration",
        {
            "webhooks": [
                {
                    "name": "a.b.c",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {"service": {"name": "s", "namespace": "n"}},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                }
            ]
        },
    ),
    ("", "v1", "events", "CoreV1Event", {"involvedObject": {"kind": "Pod", "name": "p"}}),
]

TIME_FIELDS = {"lastTransitionTime", "lastPhaseTransitionTime"}


def _drop_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_times(v) for k, v in value.items() if k not in TIME_FIELDS}
    if isinstance(value, list):
        return [_drop_times(v) for v in value]
    return value


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _round_trip(model: str, obj: dict[str, Any]) -> dict[str, Any]:
    typed = CLIENT._ApiClient__deserialize(copy.deepcopy(obj), model)  # type: ignore[attr-defined]
    return CLIENT.sanitize_for_serialization(typed)


@pytest.mark.parametrize(("group", "version", "plural", "model", "body"), CASES, ids=lambda v: v)
def test_defaulted_object_round_trips_through_client_model(
    group: str, version: str, plural: str, model: str, body: dict[str, Any]
) -> None:
    info = REG.by_resource(group, version, plural)
    obj: dict[str, Any] = {
        "apiVersion": info.api_version,
        "kind": info.kind,
        "metadata": {"name": "x", "uid": "u1", **({"namespace": "d"} if info.namespaced else {})},
        **copy.deepcopy(body),
    }
    strategy.default(info, obj)
    strategy.prepare_for_create(info, obj)
    expected = _strip_nulls(_drop_times(obj))
    assert _strip_nulls(_drop_times(_round_trip(model, obj))) == expected


def test_converted_objects_round_trip_through_client_models() -> None:
    hpa_v2 = REG.by_resource("autoscaling", "v2", "horizontalpodautoscalers")
    hpa_v1 = REG.by_resource("autoscaling", "v1", "horizontalpodautoscalers")
    obj = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h", "namespace": "d"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 3},
    }
    strategy.default(hpa_v2, obj)
    v1 = convert(hpa_v2, obj, hpa_v1)
    assert _strip_nulls(_round_trip("V1HorizontalPodAutoscaler", v1)) == _strip_nulls(v1)
    core = REG.by_resource("", "v1", "events")
    new = REG.by_resource("events.k8s.io", "v1", "events")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e", "namespace": "d"},
        "involvedObject": {"kind": "Pod", "name": "p"},
        "message": "m",
        "reason": "R",
        "count": 2,
        "eventTime": "2024-01-01T00:00:00.000000Z",  # the client insists on one
    }
    converted = convert(core, event, new)
    round_tripped = _drop_times(_strip_nulls(_round_trip("EventsV1Event", converted)))
    assert round_tripped.pop("eventTime")
    assert round_tripped == _strip_nulls({k: v for k, v in converted.items() if k != "eventTime"})
