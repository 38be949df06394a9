"""Strategy: defaults as a real v1.32 cluster shows them, create/update/status preparation,
validation causes with upstream wording, pod update immutability."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sampan.api import strategy
from sampan.api.fielderrors import invalid_message
from sampan.api.resources import ResourceInfo, builtin_registry

REG = builtin_registry()
PODS = REG.by_resource("", "v1", "pods")
DEPLOYMENTS = REG.by_resource("apps", "v1", "deployments")
JOBS = REG.by_resource("batch", "v1", "jobs")
CRONJOBS = REG.by_resource("batch", "v1", "cronjobs")
SERVICES = REG.by_resource("", "v1", "services")
NAMESPACES = REG.by_resource("", "v1", "namespaces")
CONFIGMAPS = REG.by_resource("", "v1", "configmaps")
SECRETS = REG.by_resource("", "v1", "secrets")
ROLES = REG.by_resource("rbac.authorization.k8s.io", "v1", "roles")
ROLEBINDINGS = REG.by_resource("rbac.authorization.k8s.io", "v1", "rolebindings")
EVENTS = REG.by_resource("", "v1", "events")
STATEFULSETS = REG.by_resource("apps", "v1", "statefulsets")
LEASES = REG.by_resource("coordination.k8s.io", "v1", "leases")

Obj = dict[str, Any]


def create(info: ResourceInfo, obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    strategy.default(info, obj)
    strategy.prepare_for_create(info, obj)
    return obj


def causes(info: ResourceInfo, obj: Obj) -> list[tuple[str, str, str]]:
    return [(c.reason, c.field, c.message) for c in strategy.validate(info, create(info, obj))]


def fields(info: ResourceInfo, obj: Obj) -> list[str]:
    return [field for _, field, _ in causes(info, obj)]


def pod(**spec: Any) -> Obj:
    body: Obj = {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": body,
    }


def deployment(**spec: Any) -> Obj:
    body: Obj = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
        },
    }
    body.update(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": body,
    }


# --- defaults ------------------------------------------------------------------------------


def test_pod_defaults_as_a_real_cluster_shows_them() -> None:
    # `kubectl run web --image=nginx:1.27; kubectl get pod web -o yaml` on v1.32, minus what
    # admission adds (service account, its token volume, default not-ready tolerations).
    assert create(PODS, pod()) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "containers": [
                {
                    "image": "nginx:1.27",
                    "imagePullPolicy": "IfNotPresent",
                    "name": "web",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


def test_container_defaults_ports_probes_and_pull_policy() -> None:
    obj = create(
        PODS,
        pod(
            containers=[
                {
                    "name": "a",
                    "image": "nginx",
                    "ports": [{"containerPort": 80}],
                    "readinessProbe": {"httpGet": {"port": 80}},
                    "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                },
                {"name": "b", "image": "registry:5000/app:latest"},
                {"name": "c", "image": "busybox@sha256:" + "0" * 64},
                {"name": "d", "image": "registry:5000/app"},
            ],
            volumes=[{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}],
        ),
    )
    containers = obj["spec"]["containers"]
    assert [c["imagePullPolicy"] for c in containers] == [
        "Always",
        "Always",
        "IfNotPresent",
        "Always",
    ]
    assert containers[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert containers[0]["readinessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert containers[0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert obj["spec"]["volumes"] == [
        {"name": "v", "emptyDir": {}},
        {"name": "s", "secret": {"secretName": "x", "defaultMode": 420}},
    ]


def test_qos_classes() -> None:
    guaranteed = create(
        PODS,
        pod(
            containers=[
                {
                    "name": "a",
                    "image": "x:1",
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                }
            ]
        ),
    )
    # requests default to limits on pods
    assert guaranteed["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "64Mi",
    }
    assert guaranteed["status"]["qosClass"] == "Guaranteed"
    burstable = create(
        PODS,
        pod(containers=[{"name": "a", "image": "x:1", "resources": {"requests": {"cpu": "1"}}}]),
    )
    assert burstable["status"]["qosClass"] == "Burstable"


def test_deployment_defaults_as_a_real_cluster_shows_them() -> None:
    # `kubectl create deployment web --image=nginx; kubectl get deploy web -o yaml` on v1.32
    obj = create(DEPLOYMENTS, deployment())
    assert obj["metadata"]["generation"] == 1
    assert obj["status"] == {}
    assert obj["spec"] == {
        "progressDeadlineSeconds": 600,
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            "type": "RollingUpdate",
        },
        "template": {
            "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "image": "nginx",
                        "imagePullPolicy": "Always",
                        "name": "nginx",
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }
                ],
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30,
            },
        },
    }


def test_statefulset_job_and_cronjob_defaults() -> None:
    sts = create(
        STATEFULSETS,
        {
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": "postgres:16"}]},
                },
            },
        },
    )["spec"]
    assert sts["podManagementPolicy"] == "OrderedReady"
    assert sts["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert sts["revisionHistoryLimit"] == 10
    assert sts["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    job = create(
        JOBS,
        {
            "metadata": {"name": "pi", "namespace": "default", "uid": "1234"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "pi", "image": "perl:5"}],
                        "restartPolicy": "Never",
                    }
                }
            },
        },
    )
    spec = job["spec"]
    assert {k: spec[k] for k in spec if k not in ("template", "selector")} == {
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "completions": 1,
        "manualSelector": False,
        "parallelism": 1,
        "podReplacementPolicy": "TerminatingOrFailed",
        "suspend": False,
    }
    generated = {
        "batch.kubernetes.io/controller-uid": "1234",
        "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "1234",
        "job-name": "pi",
    }
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}}
    assert spec["template"]["metadata"]["labels"] == generated
    assert job["metadata"]["labels"] == generated
    assert strategy.validate(JOBS, job) == []
    cron = create(
        CRONJOBS,
        {
            "metadata": {"name": "tick", "namespace": "default"},
            "spec": {
                "schedule": "*/5 * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [{"name": "t", "image": "busybox:1"}],
                                "restartPolicy": "OnFailure",
                            }
                        }
                    }
                },
            },
        },
    )
    assert {k: v for k, v in cron["spec"].items() if k not in ("jobTemplate", "schedule")} == {
        "concurrencyPolicy": "Allow",
        "failedJobsHistoryLimit": 1,
        "successfulJobsHistoryLimit": 3,
        "suspend": False,
    }
    assert strategy.validate(CRONJOBS, cron) == []


def test_service_namespace_and_secret_defaults() -> None:
    svc = create(
        SERVICES,
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert svc["spec"] == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack",
        "ipFamilies": ["IPv4"],
    }
    assert svc["status"] == {"loadBalancer": {}}
    node_port = create(
        SERVICES,
        {
            "metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    assert node_port["spec"]["externalTrafficPolicy"] == "Cluster"
    assert node_port["spec"]["ports"][0]["targetPort"] == "http"
    ns = create(NAMESPACES, {"metadata": {"name": "team-a"}})
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    secret = create(
        SECRETS,
        {"metadata": {"name": "s", "namespace": "default"}, "stringData": {"user": "admin"}},
    )
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"user": "YWRtaW4="}
    assert "stringData" not in secret


def test_defaulting_is_idempotent() -> None:
    for info, obj in ((PODS, pod()), (DEPLOYMENTS, deployment())):
        once = create(info, obj)
        twice = copy.deepcopy(once)
        strategy.default(info, twice)
        assert twice == once


# --- validation ----------------------------------------------------------------------------


def test_metadata_causes() -> None:
    obj = pod()
    obj["metadata"] = {"namespace": "default", "labels": {"bad key!": "v"}}
    assert [(r, f) for r, f, _ in causes(PODS, obj)] == [
        ("FieldValueRequired", "metadata.name"),
        ("FieldValueInvalid", "metadata.labels"),
    ]
    assert causes(PODS, obj)[0][2] == "Required value: name or generateName is required"
    no_ns = pod()
    del no_ns["metadata"]["namespace"]
    assert fields(PODS, no_ns) == ["metadata.namespace"]
    assert causes(NAMESPACES, {"metadata": {"name": "x", "namespace": "y"}}) == [
        ("FieldValueForbidden", "metadata.namespace", "Forbidden: not allowed on this type")
    ]


def test_pod_validation_causes() -> None:
    obj = pod(
        containers=[
            {"name": "web", "image": "a:1", "ports": [{"containerPort": 70000}]},
            {"name": "web", "image": "", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
            {
                "name": "Side_car",
                "image": "b:1",
                "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
            },
        ],
        restartPolicy="Sometimes",
        volumes=[{"name": "v"}, {"name": "v"}],
    )
    got = causes(PODS, obj)
    assert ("FieldValueDuplicate", "spec.volumes[1].name", 'Duplicate value: "v"') in got
    assert (
        "FieldValueInvalid",
        "spec.containers[0].ports[0].containerPort",
        "Invalid value: 70000: must be between 1 and 65535, inclusive",
    ) in got
    assert ("FieldValueDuplicate", "spec.containers[1].name", 'Duplicate value: "web"') in got
    assert ("FieldValueRequired", "spec.containers[1].image", "Required value") in got
    assert (
        "FieldValueNotFound",
        "spec.containers[1].volumeMounts[0].name",
        'Not found: "data"',
    ) in got
    assert any(f == "spec.containers[2].name" and r == "FieldValueInvalid" for r, f, _ in got)
    assert (
        "FieldValueInvalid",
        "spec.containers[2].resources.requests",
        'Invalid value: "2Gi": must be less than or equal to memory limit of 1Gi',
    ) in got
    assert (
        "FieldValueNotSupported",
        "spec.restartPolicy",
        'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
    ) in got
    assert fields(PODS, pod(containers=[])) == ["spec.containers"]


def test_invalid_message_format() -> None:
    got = strategy.validate(PODS, create(PODS, pod(containers=[])))
    assert invalid_message("Pod", "web", got) == (
        'Pod "web" is invalid: spec.containers: Required value'
    )


def test_workload_validation() -> None:
    mismatched = deployment()
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    assert causes(DEPLOYMENTS, mismatched) == [
        (
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            'Invalid value: map[string]string{"app":"other"}: '
            "`selector` does not match template `labels`",
        )
    ]
    assert fields(DEPLOYMENTS, deployment(replicas=-1)) == ["spec.replicas"]
    no_selector = deployment()
    del no_selector["spec"]["selector"]
    assert causes(DEPLOYMENTS, no_selector) == [
        ("FieldValueRequired", "spec.selector", "Required value")
    ]
    never = deployment()
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert causes(DEPLOYMENTS, never) == [
        (
            "FieldValueNotSupported",
            "spec.template.spec.restartPolicy",
            'Unsupported value: "Never": supported values: "Always"',
        )
    ]
    old = create(DEPLOYMENTS, deployment())
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    strategy.prepare_for_update(DEPLOYMENTS, new, old)
    assert [c.field for c in strategy.validate_update(DEPLOYMENTS, new, old)] == ["spec.selector"]


def test_job_restart_policy_and_cronjob_schedule() -> None:
    job = {
        "metadata": {"name": "j", "namespace": "default", "uid": "u"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}},
    }
    assert causes(JOBS, job) == [
        (
            "FieldValueRequired",
            "spec.template.spec.restartPolicy",
            'Required value: valid values: "OnFailure", "Never"',
        )
    ]
    cron = {
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {
            "schedule": "every minute",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": "c", "image": "x:1"}],
                            "restartPolicy": "Never",
                        }
                    }
                }
            },
        },
    }
    assert causes(CRONJOBS, cron) == [
        (
            "FieldValueInvalid",
            "spec.schedule",
            'Invalid value: "every minute": expected exactly 5 fields, found 2: [every minute]',
        )
    ]


def test_service_validation() -> None:
    def svc(**spec: Any) -> Obj:
        return {"metadata": {"name": "s", "namespace": "default"}, "spec": spec}

    assert causes(SERVICES, svc()) == [("FieldValueRequired", "spec.ports", "Required value")]
    assert causes(SERVICES, svc(clusterIP="None")) == []
    assert causes(SERVICES, svc(type="ExternalName", externalName="example.com")) == []
    assert causes(SERVICES, svc(type="Bogus", ports=[{"port": 80}])) == [
        (
            "FieldValueNotSupported",
            "spec.type",
            'Unsupported value: "Bogus": supported values: '
            '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
        )
    ]
    two = svc(ports=[{"port": 80, "name": "http"}, {"port": 0, "protocol": "ICMP"}])
    assert causes(SERVICES, two) == [
        ("FieldValueRequired", "spec.ports[1].name", "Required value"),
        (
            "FieldValueInvalid",
            "spec.ports[1].port",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            "FieldValueNotSupported",
            "spec.ports[1].protocol",
            'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
        ),
        (
            "FieldValueInvalid",
            "spec.ports[1].targetPort",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
    ]
    old = create(SERVICES, svc(ports=[{"port": 80}], clusterIP="10.43.0.10"))
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.43.0.11"
    assert [c.field for c in strategy.validate_update(SERVICES, new, old)] == ["spec.clusterIPs[0]"]
    omitted = copy.deepcopy(old)
    del omitted["spec"]["clusterIP"]
    strategy.prepare_for_update(SERVICES, omitted, old)
    assert omitted["spec"]["clusterIP"] == "10.43.0.10"
    assert strategy.validate_update(SERVICES, omitted, old) == []


def test_configmap_and_secret_rules() -> None:
    cm = {"metadata": {"name": "c", "namespace": "default"}, "data": {"bad key": "v"}}
    assert causes(CONFIGMAPS, cm) == [
        (
            "FieldValueInvalid",
            "data[bad key]",
            'Invalid value: "bad key": a valid config key must consist of alphanumeric '
            "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', "
            "regex used for validation is '[-._a-zA-Z0-9]+')",
        )
    ]
    big = {"metadata": {"name": "c", "namespace": "default"}, "data": {"k": "x" * ((1 << 20) + 1)}}
    assert [r for r, _, _ in causes(CONFIGMAPS, big)] == ["FieldValueTooLong"]
    old = create(
        CONFIGMAPS,
        {"metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}, "immutable": True},
    )
    new = copy.deepcopy(old)
    new["data"]["a"] = "2"
    assert [(c.field, c.message) for c in strategy.validate_update(CONFIGMAPS, new, old)] == [
        ("data", "Forbidden: field is immutable when `immutable` is set")
    ]
    tls = {"metadata": {"name": "t", "namespace": "default"}, "type": "kubernetes.io/tls"}
    assert fields(SECRETS, tls) == ["data[tls.crt]", "data[tls.key]"]
    old_secret = create(SECRETS, {"metadata": {"name": "s", "namespace": "default"}})
    new_secret = copy.deepcopy(old_secret)
    new_secret["type"] = "kubernetes.io/basic-auth"
    new_secret["data"] = {"username": "YQ=="}
    assert [c.field for c in strategy.validate_update(SECRETS, new_secret, old_secret)] == ["type"]


def test_rbac_event_and_lease_rules() -> None:
    role = {
        "metadata": {"name": "r", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods"]}, {"nonResourceURLs": ["/x"]}],
    }
    assert causes(ROLES, role) == [
        (
            "FieldValueRequired",
            "rules[0].verbs",
            "Required value: verbs must contain at least one value",
        ),
        (
            "FieldValueRequired",
            "rules[1].verbs",
            "Required value: verbs must contain at least one value",
        ),
        (
            "FieldValueInvalid",
            "rules[1].nonResourceURLs",
            'Invalid value: []string{"/x"}: namespaced rules cannot apply to non-resource URLs',
        ),
    ]
    binding = {
        "metadata": {"name": "b", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    created = create(ROLEBINDINGS, binding)
    assert created["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert strategy.validate(ROLEBINDINGS, created) == []
    changed = copy.deepcopy(created)
    changed["roleRef"]["name"] = "other"
    assert [
        c.message.split(":")[-1] for c in strategy.validate_update(ROLEBINDINGS, changed, created)
    ] == [" cannot change roleRef"]
    event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"},
    }
    assert causes(EVENTS, event) == [
        (
            "FieldValueInvalid",
            "involvedObject.namespace",
            'Invalid value: "other": does not match event.namespace',
        )
    ]
    node_event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "n1"},
    }
    assert causes(EVENTS, node_event) == []
    lease = {"metadata": {"name": "l", "namespace": "default"}, "spec": {"leaseDurationSeconds": 0}}
    assert fields(LEASES, lease) == ["spec.leaseDurationSeconds"]


# --- update paths --------------------------------------------------------------------------


def test_pod_update_may_change_image_only() -> None:
    old = create(PODS, pod())
    ok = copy.deepcopy(old)
    ok["spec"]["containers"][0]["image"] = "nginx:1.28"
    ok["spec"]["tolerations"] = [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    ok["spec"]["activeDeadlineSeconds"] = 60
    strategy.prepare_for_update(PODS, ok, old)
    assert strategy.validate_update(PODS, ok, old) == []
    bad = copy.deepcopy(old)
    bad["spec"]["containers"][0]["name"] = "renamed"
    strategy.prepare_for_update(PODS, bad, old)
    got = strategy.validate_update(PODS, bad, old)
    assert [(c.reason, c.field) for c in got] == [("FieldValueForbidden", "spec")]
    assert got[0].message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
        "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
        "be set to 1 if it was previously negative)\n"
    )
    assert "renamed" in got[0].message
    renamed_meta = copy.deepcopy(old)
    renamed_meta["metadata"]["name"] = "other"
    assert [c.field for c in strategy.validate_update(PODS, renamed_meta, old)] == ["metadata.name"]


def test_update_keeps_status_and_bumps_generation_on_spec_change() -> None:
    old = create(DEPLOYMENTS, deployment())
    old["status"] = {"replicas": 1}
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 99}
    new["metadata"]["labels"] = {"x": "y"}
    strategy.prepare_for_update(DEPLOYMENTS, new, old)
    assert new["status"] == {"replicas": 1}
    assert new["metadata"]["generation"] == 1
    newer = copy.deepcopy(new)
    newer["spec"]["replicas"] = 3
    strategy.prepare_for_update(DEPLOYMENTS, newer, new)
    assert newer["metadata"]["generation"] == 2
    cm_old = create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}})
    assert "generation" not in cm_old["metadata"]


def test_status_update_keeps_spec_and_metadata() -> None:
    old = create(PODS, pod())
    old["metadata"]["labels"] = {"a": "1"}
    old["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}
    ]
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = "elsewhere"
    new["metadata"]["labels"] = {"a": "2"}
    new["metadata"]["ownerReferences"] = []
    new["status"] = {"phase": "Running", "podIP": "10.42.0.7"}
    strategy.prepare_for_status_update(PODS, new, old)
    assert new["spec"] == old["spec"]
    assert new["metadata"]["labels"] == {"a": "2"}  # pods may change labels via status
    assert new["metadata"]["ownerReferences"] == old["metadata"]["ownerReferences"]
    assert new["status"] == {"phase": "Running", "podIP": "10.42.0.7", "qosClass": "BestEffort"}
    assert strategy.validate_status_update(PODS, new, old) == []
    new["status"]["phase"] = "Dancing"
    assert [c.field for c in strategy.validate_status_update(PODS, new, old)] == ["status.phase"]
    dep_old = create(DEPLOYMENTS, deployment())
    dep_new = copy.deepcopy(dep_old)
    dep_new["metadata"]["labels"] = {"x": "y"}
    dep_new["spec"]["replicas"] = 5
    dep_new["status"] = {"replicas": 1}
    strategy.prepare_for_status_update(DEPLOYMENTS, dep_new, dep_old)
    assert dep_new["spec"]["replicas"] == 1
    assert "labels" not in dep_new["metadata"]
    assert dep_new["status"] == {"replicas": 1}


def test_scale_subresource_helpers() -> None:
    obj = create(DEPLOYMENTS, deployment(replicas=3))
    obj["metadata"]["resourceVersion"] = "7"
    obj["status"] = {"replicas": 2}
    scale = strategy.scale_of(DEPLOYMENTS, obj)
    assert scale == {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
        "spec": {"replicas": 3},
        "status": {"replicas": 2, "selector": "app=web"},
    }


@pytest.mark.parametrize("info", builtin_registry().all(), ids=lambda i: i.group_resource)
def test_every_kind_survives_the_strategy_with_a_minimal_object(info: ResourceInfo) -> None:
    obj: Obj = {
        "apiVersion": info.api_version,
        "kind": info.kind,
        "metadata": {"name": "x", **({"namespace": "default"} if info.namespaced else {})},
    }
    created = create(info, obj)
    for cause in strategy.validate(info, created):
        assert cause.reason.startswith("Field") and cause.message
    updated = copy.deepcopy(created)
    strategy.default(info, updated)
    strategy.prepare_for_update(info, updated, created)
    strategy.validate_update(info, updated, created)
    strategy.prepare_for_status_update(info, updated, created)
    strategy.validate_status_update(info, updated, created)


def test_metadata_update_rules() -> None:
    old = create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "d", "uid": "u1"}})
    old["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    old["metadata"]["deletionTimestamp"] = "2024-01-02T00:00:00Z"
    old["metadata"]["finalizers"] = ["example.com/a"]
    new = copy.deepcopy(old)
    del new["metadata"]["uid"]
    del new["metadata"]["creationTimestamp"]
    del new["metadata"]["deletionTimestamp"]
    new["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    strategy.prepare_for_update(CONFIGMAPS, new, old)
    assert new["metadata"]["uid"] == "u1"
    assert new["metadata"]["deletionTimestamp"] == "2024-01-02T00:00:00Z"
    got = strategy.validate_update(CONFIGMAPS, new, old)
    assert [(c.reason, c.field, c.message) for c in got] == [
        (
            "FieldValueForbidden",
            "metadata.finalizers",
            "Forbidden: no new finalizers can be added if the object is being deleted, found "
            'new finalizers []string{"example.com/b"}',
        )
    ]


def test_owner_reference_and_finalizer_rules() -> None:
    obj = create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "d"}})
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "a",
            "uid": "1",
            "controller": True,
        },
        {"apiVersion": "", "kind": "ReplicaSet", "name": "b", "uid": "", "controller": True},
    ]
    obj["metadata"]["finalizers"] = ["orphan", "foregroundDeletion"]
    got = [(c.field, c.message) for c in strategy.validate(CONFIGMAPS, obj)]
    assert (
        "metadata.ownerReferences.apiVersion",
        'Invalid value: "": version must not be empty',
    ) in got
    assert ("metadata.ownerReferences.uid", 'Invalid value: "": must not be empty') in got
    assert any(
        f == "metadata.ownerReferences"
        and m.endswith("references for ReplicaSet/a and ReplicaSet/b")
        for f, m in got
    )
    assert any(
        m.endswith("finalizer orphan and foregroundDeletion cannot be both set") for _, m in got
    )


def test_custom_resources_follow_the_custom_resource_strategy() -> None:
    widgets = ResourceInfo(
        group="example.com",
        version="v1",
        kind="Widget",
        plural="widgets",
        singular="widget",
        namespaced=True,
        verbs=("create", "get"),
        subresources=(),
        tracks_generation=True,
        has_status=True,
        storage_resource="example.com/widgets",
    )
    obj = create(
        widgets,
        {"metadata": {"name": "w", "namespace": "d"}, "spec": {"size": 1}, "status": {"x": 1}},
    )
    assert "status" not in obj and obj["metadata"]["generation"] == 1
    new = copy.deepcopy(obj)
    new["data"] = {"extra": True}  # a top-level field outside spec still counts
    strategy.prepare_for_update(widgets, new, obj)
    assert new["metadata"]["generation"] == 2


def test_job_update_rules() -> None:
    job = create(
        JOBS,
        {
            "metadata": {"name": "j", "namespace": "default", "uid": "u"},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "containers": [{"name": "c", "image": "x:1"}],
                        "restartPolicy": "Never",
                    }
                },
            },
        },
    )
    assert strategy.validate(JOBS, job) == []
    moved = copy.deepcopy(job)
    moved["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "a"}
    strategy.prepare_for_update(JOBS, moved, job)
    assert strategy.validate_update(JOBS, moved, job) == []  # suspended: scheduling may change
    changed = copy.deepcopy(job)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
    strategy.prepare_for_update(JOBS, changed, job)
    assert [c.field for c in strategy.validate_update(JOBS, changed, job)] == ["spec.template"]
    tampered = copy.deepcopy(job)
    tampered["spec"]["template"]["metadata"]["labels"]["job-name"] = "other"
    tampered["spec"]["selector"] = {"matchLabels": {"job-name": "other"}}
    fields_ = [c.field for c in strategy.validate(JOBS, tampered)]
    assert "spec.template.metadata.labels[job-name]" in fields_
    assert "spec.selector" in fields_


def test_cronjob_name_limit_only_on_create() -> None:
    long_name = "c" * 53
    cron = create(
        CRONJOBS,
        {
            "metadata": {"name": long_name, "namespace": "default"},
            "spec": {
                "schedule": "@daily",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [{"name": "c", "image": "x:1"}],
                                "restartPolicy": "Never",
                            }
                        }
                    }
                },
            },
        },
    )
    assert [c.message for c in strategy.validate(CRONJOBS, cron)] == [
        f'Invalid value: "{long_name}": must be no more than 52 characters'
    ]
    assert strategy.validate_update(CRONJOBS, copy.deepcopy(cron), cron) == []


def test_hpa_behavior_defaults_and_gated_pods() -> None:
    hpa_v2 = REG.by_resource("autoscaling", "v2", "horizontalpodautoscalers")
    hpa = create(
        hpa_v2,
        {
            "metadata": {"name": "h", "namespace": "d"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
                "maxReplicas": 3,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
            },
        },
    )
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert hpa["spec"]["behavior"] == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 60,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        },
    }
    assert strategy.validate(hpa_v2, hpa) == []
    gated = create(PODS, pod(schedulingGates=[{"name": "example.com/wait"}]))
    condition = gated["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "PodScheduled",
        "False",
        "SchedulingGated",
    )


def test_certificate_signing_requests() -> None:
    csrs = REG.by_resource("certificates.k8s.io", "v1", "certificatesigningrequests")
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "node1")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    obj = {
        "metadata": {"name": "node-csr-Ab_c"},
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["client auth"],
            "username": "forged",
        },
    }
    created = copy.deepcopy(obj)
    strategy.default(csrs, created)
    strategy.prepare_for_create(
        csrs, created, user={"username": "system:node:node1", "groups": ["system:nodes"]}
    )
    assert created["spec"]["username"] == "system:node:node1"
    assert created["spec"]["groups"] == ["system:nodes"]
    assert created["status"] == {}
    assert strategy.validate(csrs, created) == []
    garbage = copy.deepcopy(created)
    garbage["spec"]["request"] = base64.b64encode(b"hello").decode()
    assert [c.field for c in strategy.validate(csrs, garbage)] == ["spec.request"]
    approved = copy.deepcopy(created)
    approved["spec"]["username"] = "someone-else"  # ignored by the approval subresource
    approved["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "ok"}]}
    strategy.prepare_for_approval_update(csrs, approved, created)
    assert approved["spec"] == created["spec"]
    assert approved["status"]["conditions"][0]["type"] == "Approved"
    assert strategy.validate_status_update(csrs, approved, created) == []
    both = copy.deepcopy(approved)
    both["status"]["conditions"].append({"type": "Denied", "status": "True"})
    assert [
        c.message.rsplit(": ", 1)[-1] for c in strategy.validate_status_update(csrs, both, approved)
    ] == ["Approved and Denied conditions are mutually exclusive"]
    unapproved = copy.deepcopy(approved)
    unapproved["status"]["conditions"] = []
    assert [c.reason for c in strategy.validate_status_update(csrs, unapproved, approved)] == [
        "FieldValueForbidden"
    ]


def test_ephemeral_containers_subresource() -> None:
    old = create(PODS, pod())
    debug = copy.deepcopy(old)
    debug["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox:1", "targetContainerName": "web"}
    ]
    debug["spec"]["containers"][0]["image"] = "ignored:2"
    strategy.prepare_for_ephemeral_containers_update(PODS, debug, old)
    assert debug["spec"]["containers"] == old["spec"]["containers"]
    added = debug["spec"]["ephemeralContainers"][0]
    assert added["terminationMessagePolicy"] == "File"
    assert added["imagePullPolicy"] == "IfNotPresent"
    assert strategy.validate_ephemeral_containers_update(PODS, debug, old) == []
    changed = copy.deepcopy(debug)
    changed["spec"]["ephemeralContainers"][0]["image"] = "busybox:2"
    changed["spec"]["ephemeralContainers"].append(
        {"name": "web", "image": "x:1", "ports": [{"containerPort": 1}]}
    )
    strategy.prepare_for_ephemeral_containers_update(PODS, changed, debug)
    got = [
        (c.field, c.message)
        for c in strategy.validate_ephemeral_containers_update(PODS, changed, debug)
    ]
    assert got == [
        (
            "spec.ephemeralContainers",
            'Forbidden: existing ephemeral containers "debugger" may not be changed',
        ),
        ("spec.ephemeralContainers[1].name", 'Duplicate value: "web"'),
        (
            "spec.ephemeralContainers[1].ports",
            "Forbidden: cannot be set for an Ephemeral Container",
        ),
    ]
