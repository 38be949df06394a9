"""Server-side printing: the Table kube-apiserver 1.32 sends for sample objects.

Expected cells are what a 1.32 cluster prints for the same objects (from the rules of
``pkg/printers/internalversion``, the default table convertor and the apiextensions
convertor), evaluated at a fixed ``NOW``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sampan.api import printing
from sampan.api.printing import (
    crd_table,
    human_duration,
    to_table,
)
from sampan.api.quantity import canonical_quantity

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kwargs: float) -> str:
    return (NOW - timedelta(**kwargs)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, *, age_s: float = 300, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(seconds=age_s), **extra}


def cells(kind: str, group: str, obj: dict[str, Any], **kwargs: Any) -> list[Any]:
    table = to_table(kind, group, [obj], now=NOW, **kwargs)
    assert len(table["rows"]) == 1
    row_cells = table["rows"][0]["cells"]
    assert len(row_cells) == len(table["columnDefinitions"])
    return row_cells


def table_columns(kind: str, group: str, *, wide: bool = True) -> list[dict[str, Any]]:
    """The column definitions the server sends for a kind (those of an empty list)."""
    return to_table(kind, group, [], wide=wide)["columnDefinitions"]


def column_names(kind: str, group: str, *, wide: bool = True) -> list[str]:
    return [c["name"] for c in table_columns(kind, group, wide=wide)]


# ---------------------------------------------------------------------------------------------
# duration.HumanDuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=-3), "<invalid>"),
        (timedelta(seconds=-2), "<invalid>"),
        (timedelta(seconds=-1.5), "0s"),
        (timedelta(seconds=-1), "0s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=1.9), "1s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(minutes=2), "2m"),
        (timedelta(minutes=2, seconds=3), "2m3s"),
        (timedelta(minutes=9, seconds=59), "9m59s"),
        (timedelta(minutes=10), "10m"),
        (timedelta(minutes=10, seconds=59), "10m"),
        (timedelta(minutes=179), "179m"),
        (timedelta(hours=3), "3h"),
        (timedelta(hours=3, minutes=4), "3h4m"),
        (timedelta(hours=7, minutes=59), "7h59m"),
        (timedelta(hours=8, minutes=30), "8h"),
        (timedelta(hours=47, minutes=59), "47h"),
        (timedelta(hours=48), "2d"),
        (timedelta(days=2, hours=5), "2d5h"),
        (timedelta(days=7, hours=23), "7d23h"),
        (timedelta(days=8, hours=5), "8d"),
        (timedelta(days=729), "729d"),
        (timedelta(days=730), "2y"),
        (timedelta(days=365 * 2 + 3), "2y3d"),
        (timedelta(days=365 * 8), "8y"),
        (timedelta(days=365 * 20), "20y"),
    ],
)
def test_human_duration(delta: timedelta, expected: str) -> None:
    assert human_duration(delta) == expected


# ---------------------------------------------------------------------------------------------
# Table shape and includeObject
# ---------------------------------------------------------------------------------------------


def test_table_envelope_and_default_partial_object_metadata() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("cfg", labels={"a": "b"}, uid="u1", resourceVersion="7"),
        "data": {"k": "v"},
    }
    table = to_table("ConfigMap", "", [obj], now=NOW, resource_version="42")
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    row = table["rows"][0]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    # A copy: editing the row never edits the stored object.
    row["object"]["metadata"]["name"] = "changed"
    assert obj["metadata"]["name"] == "cfg"
    json.dumps(table)  # wire-ready


def test_include_object_and_none() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg")}
    assert to_table("ConfigMap", "", [obj], include_object="Object")["rows"][0]["object"] is obj
    assert to_table("ConfigMap", "", [obj], include_object="None")["rows"][0]["object"] is None
    with pytest.raises(ValueError, match="includeObject"):
        to_table("ConfigMap", "", [obj], include_object="Everything")


def test_no_headers_and_list_metadata() -> None:
    table = to_table(
        "ConfigMap",
        "",
        [],
        no_headers=True,
        continue_token="abc",
        remaining_item_count=5,
    )
    assert table["columnDefinitions"] == []
    assert table["rows"] == []
    assert table["metadata"] == {"continue": "abc", "remainingItemCount": 5}


def test_column_definition_fields() -> None:
    columns = table_columns("Pod", "")
    assert columns[0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": columns[0]["description"],
        "priority": 0,
    }
    assert all(c["description"] for c in columns)


def test_narrow_table_drops_priority_one_columns_and_cells() -> None:
    pod = {"metadata": meta("p"), "spec": {"containers": [{"name": "c"}]}, "status": {}}
    table = to_table("Pod", "", [pod], wide=False, now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert table["rows"][0]["cells"] == ["p", "0/1", "", "0", "5m"]


def test_every_printer_survives_an_empty_object() -> None:
    for (group, kind), spec in printing._PRINTERS.items():
        row = cells(kind, group, {})
        assert len(row) == len(spec.columns), kind
        assert row[0] in ("", "<unknown>"), kind  # Name (or Last Seen for events)


# ---------------------------------------------------------------------------------------------
# Columns per kind, exactly as kube-apiserver 1.32 names them
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "group", "expected"),
    [
        ("Pod", "", "Name Ready Status Restarts Age | IP Node Nominated Node Readiness Gates"),
        ("Deployment", "apps", "Name Ready Up-to-date Available Age | Containers Images Selector"),
        ("ReplicaSet", "apps", "Name Desired Current Ready Age | Containers Images Selector"),
        ("StatefulSet", "apps", "Name Ready Age | Containers Images"),
        (
            "DaemonSet",
            "apps",
            "Name Desired Current Ready Up-to-date Available Node Selector Age"
            " | Containers Images Selector",
        ),
        ("Job", "batch", "Name Status Completions Duration Age | Containers Images Selector"),
        (
            "CronJob",
            "batch",
            "Name Schedule Timezone Suspend Active Last Schedule Age | Containers Images Selector",
        ),
        ("Service", "", "Name Type Cluster-IP External-IP Port(s) Age | Selector"),
        ("Endpoints", "", "Name Endpoints Age"),
        ("EndpointSlice", "discovery.k8s.io", "Name AddressType Ports Endpoints Age"),
        (
            "Node",
            "",
            "Name Status Roles Age Version | Internal-IP External-IP OS-Image Kernel-Version"
            " Container-Runtime",
        ),
        ("Namespace", "", "Name Status Age"),
        ("ConfigMap", "", "Name Data Age"),
        ("Secret", "", "Name Type Data Age"),
        ("ServiceAccount", "", "Name Secrets Age"),
        (
            "PersistentVolume",
            "",
            "Name Capacity Access Modes Reclaim Policy Status Claim StorageClass"
            " VolumeAttributesClass Reason Age | VolumeMode",
        ),
        (
            "PersistentVolumeClaim",
            "",
            "Name Status Volume Capacity Access Modes StorageClass VolumeAttributesClass Age"
            " | VolumeMode",
        ),
        ("Ingress", "networking.k8s.io", "Name Class Hosts Address Ports Age"),
        ("IngressClass", "networking.k8s.io", "Name Controller Parameters Age"),
        ("Lease", "coordination.k8s.io", "Name Holder Age"),
        (
            "RoleBinding",
            "rbac.authorization.k8s.io",
            "Name Role Age | Users Groups ServiceAccounts",
        ),
        (
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io",
            "Name Role Age | Users Groups ServiceAccounts",
        ),
        ("Role", "rbac.authorization.k8s.io", "Name Created At"),
        ("ClusterRole", "rbac.authorization.k8s.io", "Name Created At"),
        ("CustomResourceDefinition", "apiextensions.k8s.io", "Name Created At"),
        ("LimitRange", "", "Name Created At"),
        (
            "StorageClass",
            "storage.k8s.io",
            "Name Provisioner ReclaimPolicy VolumeBindingMode AllowVolumeExpansion Age",
        ),
        (
            "PriorityClass",
            "scheduling.k8s.io",
            "Name Value Global-Default Age PreemptionPolicy",
        ),
        (
            "ReplicationController",
            "",
            "Name Desired Current Ready Age | Containers Images Selector",
        ),
        ("ControllerRevision", "apps", "Name Controller Revision Age"),
        (
            "PodDisruptionBudget",
            "policy",
            "Name Min Available Max Unavailable Allowed Disruptions Age",
        ),
        (
            "HorizontalPodAutoscaler",
            "autoscaling",
            "Name Reference Targets MinPods MaxPods Replicas Age",
        ),
        ("NetworkPolicy", "networking.k8s.io", "Name Pod-Selector Age"),
        ("ResourceQuota", "", "Name Age Request Limit"),
        ("PodTemplate", "", "Name Containers Images Pod Labels"),
        (
            "CertificateSigningRequest",
            "certificates.k8s.io",
            "Name Age SignerName Requestor RequestedDuration Condition",
        ),
        ("RuntimeClass", "node.k8s.io", "Name Handler Age"),
        ("MutatingWebhookConfiguration", "admissionregistration.k8s.io", "Name Webhooks Age"),
        ("APIService", "apiregistration.k8s.io", "Name Service Available Age"),
        ("ComponentStatus", "", "Name Status Message Error"),
        ("Scale", "autoscaling", "Name Desired Available Age"),
        (
            "CSIDriver",
            "storage.k8s.io",
            "Name AttachRequired PodInfoOnMount StorageCapacity TokenRequests RequiresRepublish"
            " Modes Age",
        ),
        ("CSINode", "storage.k8s.io", "Name Drivers Age"),
        ("CSIStorageCapacity", "storage.k8s.io", "Name StorageClassName Capacity"),
        ("VolumeAttachment", "storage.k8s.io", "Name Attacher PV Node Attached Age"),
        (
            "ValidatingAdmissionPolicy",
            "admissionregistration.k8s.io",
            "Name Validations ParamKind Age",
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "admissionregistration.k8s.io",
            "Name PolicyName ParamRef Age",
        ),
    ],
)
def test_columns(kind: str, group: str, expected: str) -> None:
    normal, _, wide = expected.partition(" | ")
    assert " ".join(column_names(kind, group, wide=False)) == normal
    assert " ".join(column_names(kind, group)) == " ".join(filter(None, [normal, wide]))


def test_event_wide_columns_follow_kube_order() -> None:
    assert column_names("Event", "", wide=False) == [
        "Last Seen",
        "Type",
        "Reason",
        "Object",
        "Message",
    ]
    assert column_names("Event", "") == [
        "Last Seen",
        "Type",
        "Reason",
        "Object",
        "Subobject",
        "Source",
        "Message",
        "First Seen",
        "Count",
        "Name",
    ]


def test_default_convertor_columns_and_cells() -> None:
    columns = table_columns("ClusterRole", "rbac.authorization.k8s.io")
    assert [(c["name"], c["type"], c["format"]) for c in columns] == [
        ("Name", "string", "name"),
        ("Created At", "date", ""),
    ]
    role = {"metadata": {"name": "admin", "creationTimestamp": "2025-05-31T08:09:10+02:00"}}
    assert cells("ClusterRole", "rbac.authorization.k8s.io", role) == [
        "admin",
        "2025-05-31T06:09:10Z",
    ]
    assert cells("Widget", "example.com", {"metadata": {"name": "w"}}) == [
        "w",
        "0001-01-01T00:00:00Z",
    ]
    assert column_names("Role", "rbac.authorization.k8s.io") == ["Name", "Created At"]
    assert column_names("Pod", "core") == column_names("Pod", "") != ["Name", "Created At"]


# ---------------------------------------------------------------------------------------------
# Pods: STATUS, READY, RESTARTS as kubectl shows them
# ---------------------------------------------------------------------------------------------


def pod(
    statuses: list[dict[str, Any]],
    *,
    phase: str = "Running",
    containers: int | None = None,
    init: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    count = len(statuses) if containers is None else containers
    status: dict[str, Any] = {"phase": phase, "containerStatuses": statuses}
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    if conditions is not None:
        status["conditions"] = conditions
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}"} for i in range(count)]}
    if init is not None:
        spec["initContainers"] = init
    return {"metadata": meta("p", **metadata), "spec": spec, "status": status}


RUNNING = {"ready": True, "restartCount": 0, "state": {"running": {"startedAt": ago(minutes=4)}}}
READY_TRUE = [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]


def waiting(reason: str, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "ready": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason}},
        **extra,
    }


def terminated(reason: str | None, exit_code: int, signal: int = 0) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code}
    if reason:
        state["reason"] = reason
    if signal:
        state["signal"] = signal
    return {"ready": False, "restartCount": 0, "state": {"terminated": state}}


def status_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    row = cells("Pod", "", obj)
    return row[1], row[2], row[3]


def test_pod_running() -> None:
    assert cells("Pod", "", pod([RUNNING], conditions=READY_TRUE)) == [
        "p",
        "1/1",
        "Running",
        "0",
        "5m",
        "<none>",
        "<none>",
        "<none>",
        "<none>",
    ]


@pytest.mark.parametrize(
    ("container", "phase", "expected"),
    [
        (waiting("ContainerCreating"), "Pending", "ContainerCreating"),
        (waiting("ErrImagePull"), "Pending", "ErrImagePull"),
        (waiting("ImagePullBackOff"), "Pending", "ImagePullBackOff"),
        (terminated("Completed", 0), "Succeeded", "Completed"),
        (terminated("Error", 1), "Failed", "Error"),
        (terminated("OOMKilled", 137), "Running", "OOMKilled"),
        (terminated(None, 3), "Failed", "ExitCode:3"),
        (terminated(None, 137, signal=9), "Failed", "Signal:9"),
    ],
)
def test_pod_container_state_reasons(container: dict[str, Any], phase: str, expected: str) -> None:
    assert status_of(pod([container], phase=phase)) == ("0/1", expected, "0")


def test_pod_crash_loop_restarts_show_time_since_last_exit() -> None:
    crashing = waiting(
        "CrashLoopBackOff",
        restarts=5,
        lastState={"terminated": {"exitCode": 1, "finishedAt": ago(seconds=30)}},
    )
    assert status_of(pod([crashing])) == ("0/1", "CrashLoopBackOff", "5 (30s ago)")


def test_pod_restarts_without_termination_time_are_a_plain_number() -> None:
    assert status_of(pod([waiting("CrashLoopBackOff", restarts=2)]))[2] == "2"


def test_pod_restarts_use_the_latest_exit_across_containers() -> None:
    first = dict(RUNNING, restartCount=1, lastState={"terminated": {"finishedAt": ago(hours=3)}})
    second = dict(RUNNING, restartCount=2, lastState={"terminated": {"finishedAt": ago(minutes=7)}})
    assert status_of(pod([first, second], conditions=READY_TRUE)) == (
        "2/2",
        "Running",
        "3 (7m ago)",
    )


def test_pod_pending_without_statuses_shows_phase() -> None:
    obj = pod([], phase="Pending", containers=2)
    assert status_of(obj) == ("0/2", "Pending", "0")


def test_pod_status_reason_overrides_phase() -> None:
    obj = pod([], phase="Failed", containers=1)
    obj["status"]["reason"] = "Evicted"
    assert status_of(obj)[1] == "Evicted"


def test_pod_scheduling_gated() -> None:
    gated = [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
    assert status_of(pod([], phase="Pending", containers=1, conditions=gated))[1] == (
        "SchedulingGated"
    )


INIT = [{"name": "init-a"}]


def test_pod_init_waiting_to_start() -> None:
    init_status = [waiting("PodInitializing", name="init-a")]
    obj = pod(
        [waiting("PodInitializing")],
        phase="Pending",
        init=INIT,
        init_statuses=init_status,
    )
    assert status_of(obj) == ("0/1", "Init:0/1", "0")


def test_pod_init_running_second_of_two() -> None:
    init = [{"name": "init-a"}, {"name": "init-b"}]
    statuses = [
        dict(terminated("Completed", 0), name="init-a"),
        dict(RUNNING, name="init-b", ready=False),
    ]
    obj = pod([waiting("PodInitializing")], phase="Pending", init=init, init_statuses=statuses)
    assert status_of(obj) == ("0/1", "Init:1/2", "0")


def test_pod_init_crash_loop_counts_init_restarts() -> None:
    statuses = [
        waiting(
            "CrashLoopBackOff",
            restarts=4,
            name="init-a",
            lastState={"terminated": {"exitCode": 1, "finishedAt": ago(minutes=1)}},
        )
    ]
    obj = pod([waiting("PodInitializing")], phase="Pending", init=INIT, init_statuses=statuses)
    assert status_of(obj) == ("0/1", "Init:CrashLoopBackOff", "4 (60s ago)")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (terminated("Error", 2), "Init:Error"),
        (terminated(None, 2), "Init:ExitCode:2"),
        (terminated(None, 2, signal=15), "Init:Signal:15"),
    ],
)
def test_pod_init_failed(state: dict[str, Any], expected: str) -> None:
    obj = pod(
        [waiting("PodInitializing")],
        phase="Pending",
        init=INIT,
        init_statuses=[dict(state, name="init-a")],
    )
    assert status_of(obj)[1] == expected


def test_pod_sidecar_counts_towards_ready_and_total() -> None:
    init = [{"name": "proxy", "restartPolicy": "Always"}]
    sidecar = dict(
        RUNNING,
        name="proxy",
        started=True,
        restartCount=1,
        lastState={"terminated": {"finishedAt": ago(minutes=3)}},
    )
    obj = pod([RUNNING], init=init, init_statuses=[sidecar], conditions=READY_TRUE)
    assert status_of(obj) == ("2/2", "Running", "1 (3m ago)")


def test_pod_completed_container_with_running_sibling() -> None:
    statuses = [RUNNING, terminated("Completed", 0)]
    assert status_of(pod(statuses, conditions=READY_TRUE)) == ("1/2", "Running", "0")
    not_ready = [{"type": "Ready", "status": "False"}]
    assert status_of(pod(statuses, conditions=not_ready))[1] == "NotReady"


def test_pod_terminating_and_node_lost() -> None:
    deleting = pod([RUNNING], conditions=READY_TRUE, deletionTimestamp=ago(seconds=5))
    assert status_of(deleting)[1] == "Terminating"
    finished = pod(
        [terminated("Completed", 0)], phase="Succeeded", deletionTimestamp=ago(seconds=5)
    )
    assert status_of(finished)[1] == "Completed"
    lost = pod([RUNNING], deletionTimestamp=ago(seconds=5))
    lost["status"]["reason"] = "NodeLost"
    assert status_of(lost)[1] == "Unknown"
    del lost["metadata"]["deletionTimestamp"]
    lost["status"]["containerStatuses"] = []
    assert status_of(lost)[1] == "NodeLost"


def test_pod_wide_cells() -> None:
    obj = pod([RUNNING], conditions=[*READY_TRUE, {"type": "example.com/gate", "status": "True"}])
    obj["spec"]["nodeName"] = "node-1"
    obj["spec"]["readinessGates"] = [
        {"conditionType": "example.com/gate"},
        {"conditionType": "example.com/other"},
    ]
    obj["status"]["podIPs"] = [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}]
    obj["status"]["podIP"] = "10.42.0.7"
    obj["status"]["nominatedNodeName"] = "node-2"
    assert cells("Pod", "", obj)[5:] == ["10.42.0.7", "node-1", "node-2", "1/2"]
    del obj["status"]["podIPs"]
    assert cells("Pod", "", obj)[5] == "10.42.0.7"


def test_pod_row_conditions_mark_completed_pods() -> None:
    table = to_table("Pod", "", [pod([terminated("Completed", 0)], phase="Succeeded")], now=NOW)
    assert table["rows"][0]["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]
    running = to_table("Pod", "", [pod([RUNNING])], now=NOW)
    assert "conditions" not in running["rows"][0]


def test_pod_age_unknown_without_creation_timestamp() -> None:
    obj = pod([RUNNING])
    del obj["metadata"]["creationTimestamp"]
    assert cells("Pod", "", obj)[4] == "<unknown>"


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------

TEMPLATE = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {
        "containers": [
            {"name": "nginx", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "busybox"},
        ]
    },
}


def test_deployment() -> None:
    obj = {
        "metadata": meta("web", age_s=3600 * 26),
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            },
            "template": TEMPLATE,
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert cells("Deployment", "apps", obj) == [
        "web",
        "2/3",
        3,
        2,
        "26h",
        "nginx,sidecar",
        "nginx:1.27,busybox",
        "app=web,!canary,tier in (edge,front)",
    ]


def test_deployment_fresh_and_invalid_selector() -> None:
    obj = {
        "metadata": meta("web", age_s=10),
        "spec": {"selector": {"matchExpressions": [{"key": "x", "operator": "Near"}]}},
    }
    assert cells("Deployment", "apps", obj)[:5] == ["web", "0/1", 0, 0, "10s"]
    assert cells("Deployment", "apps", obj)[7] == "<invalid>"


def test_replica_set_and_replication_controller() -> None:
    rs = {
        "metadata": meta("web-7d4b9", age_s=125),
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-hash": "7d4b9"}}},
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    rs["spec"]["template"] = TEMPLATE
    assert cells("ReplicaSet", "apps", rs) == [
        "web-7d4b9",
        2,
        2,
        1,
        "2m5s",
        "nginx,sidecar",
        "nginx:1.27,busybox",
        "app=web,pod-hash=7d4b9",
    ]
    rc = {
        "metadata": meta("old", age_s=60),
        "spec": {"replicas": 1, "selector": {"app": "old"}, "template": TEMPLATE},
        "status": {"replicas": 1, "readyReplicas": 1},
    }
    assert cells("ReplicationController", "", rc) == [
        "old",
        1,
        1,
        1,
        "60s",
        "nginx,sidecar",
        "nginx:1.27,busybox",
        "app=old",
    ]


def test_stateful_set_and_daemon_set() -> None:
    sts = {
        "metadata": meta("db"),
        "spec": {"replicas": 3, "template": TEMPLATE},
        "status": {"readyReplicas": 3},
    }
    assert cells("StatefulSet", "apps", sts) == [
        "db",
        "3/3",
        "5m",
        "nginx,sidecar",
        "nginx:1.27,busybox",
    ]
    ds = {
        "metadata": meta("agent"),
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "a", "image": "agent:1"}],
                }
            },
        },
        "status": {
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "numberReady": 2,
            "updatedNumberScheduled": 3,
            "numberAvailable": 2,
        },
    }
    assert cells("DaemonSet", "apps", ds) == [
        "agent",
        3,
        3,
        2,
        3,
        2,
        "kubernetes.io/os=linux",
        "5m",
        "a",
        "agent:1",
        "app=agent",
    ]
    ds["spec"]["template"]["spec"].pop("nodeSelector")
    ds["spec"].pop("selector")
    row = cells("DaemonSet", "apps", ds)
    assert (row[6], row[10]) == ("<none>", "<none>")


def test_jobs() -> None:
    done = {
        "metadata": meta("pi", age_s=600),
        "spec": {"completions": 1, "parallelism": 1, "template": TEMPLATE},
        "status": {
            "succeeded": 1,
            "startTime": ago(seconds=600),
            "completionTime": ago(seconds=583),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    done["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}
    assert cells("Job", "batch", done) == [
        "pi",
        "Complete",
        "1/1",
        "17s",
        "10m",
        "nginx,sidecar",
        "nginx:1.27,busybox",
        "batch.kubernetes.io/controller-uid=u1",
    ]
    running = {
        "metadata": meta("work", age_s=200),
        "spec": {"parallelism": 3},
        "status": {"succeeded": 1, "startTime": ago(seconds=190), "active": 2},
    }
    assert cells("Job", "batch", running)[:5] == ["work", "Running", "1/1 of 3", "3m10s", "3m20s"]
    pending = {"metadata": meta("later"), "spec": {"completions": 5, "suspend": True}}
    pending["status"] = {"conditions": [{"type": "Suspended", "status": "True"}]}
    assert cells("Job", "batch", pending)[:4] == ["later", "Suspended", "0/5", ""]
    failed = {
        "metadata": meta("bad"),
        "spec": {},
        "status": {
            "failed": 6,
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True"},
            ],
        },
    }
    assert cells("Job", "batch", failed)[1:3] == ["Failed", "0/1"]
    failed["status"]["conditions"].pop()
    assert cells("Job", "batch", failed)[1] == "FailureTarget"
    failed["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert cells("Job", "batch", failed)[1] == "Terminating"


def test_cron_job() -> None:
    obj = {
        "metadata": meta("nightly", age_s=86400 * 3),
        "spec": {
            "schedule": "0 3 * * *",
            "suspend": False,
            "jobTemplate": {"spec": {"template": TEMPLATE}},
        },
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(hours=9)},
    }
    assert cells("CronJob", "batch", obj) == [
        "nightly",
        "0 3 * * *",
        "<none>",
        "False",
        1,
        "9h",
        "3d",
        "nginx,sidecar",
        "nginx:1.27,busybox",
        "<none>",
    ]
    obj["spec"]["timeZone"] = "Europe/Paris"
    obj["spec"]["suspend"] = True
    del obj["status"]
    assert cells("CronJob", "batch", obj)[2:6] == ["Europe/Paris", "True", 0, "<none>"]


def test_controller_revision() -> None:
    obj = {
        "metadata": meta(
            "agent-5f7c",
            ownerReferences=[
                {"apiVersion": "v1", "kind": "Pod", "name": "x"},
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True},
            ],
        ),
        "revision": 2,
    }
    assert cells("ControllerRevision", "apps", obj) == [
        "agent-5f7c",
        "daemonset.apps/agent",
        2,
        "5m",
    ]
    obj["metadata"]["ownerReferences"] = []
    assert cells("ControllerRevision", "apps", obj)[1] == "<none>"


# ---------------------------------------------------------------------------------------------
# Services and networking
# ---------------------------------------------------------------------------------------------


def service(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": meta("svc"), "spec": spec, "status": status or {}}


def test_service_cluster_ip() -> None:
    obj = service(
        {
            "type": "ClusterIP",
            "clusterIP": "10.43.0.10",
            "clusterIPs": ["10.43.0.10"],
            "ports": [
                {"port": 53, "protocol": "UDP"},
                {"port": 53, "protocol": "TCP"},
                {"port": 9153, "protocol": "TCP"},
            ],
            "selector": {"k8s-app": "kube-dns"},
        }
    )
    assert cells("Service", "", obj) == [
        "svc",
        "ClusterIP",
        "10.43.0.10",
        "<none>",
        "53/UDP,53/TCP,9153/TCP",
        "5m",
        "k8s-app=kube-dns",
    ]


def test_service_node_port_headless_and_external_name() -> None:
    node_port = service(
        {
            "type": "NodePort",
            "clusterIPs": ["10.43.7.1"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
            "externalIPs": ["192.0.2.1", "192.0.2.2"],
        }
    )
    assert cells("Service", "", node_port)[1:5] == [
        "NodePort",
        "10.43.7.1",
        "192.0.2.1,192.0.2.2",
        "80:30080/TCP",
    ]
    assert cells("Service", "", node_port)[6] == "<none>"
    headless = service({"clusterIP": "None", "clusterIPs": ["None"]})
    assert cells("Service", "", headless)[1:5] == ["ClusterIP", "None", "<none>", "<none>"]
    external = service({"type": "ExternalName", "externalName": "db.example.com"})
    assert cells("Service", "", external)[1:4] == ["ExternalName", "<none>", "db.example.com"]


def test_service_load_balancer() -> None:
    pending = service(
        {"type": "LoadBalancer", "clusterIPs": ["10.43.1.1"], "ports": [{"port": 443}]}
    )
    assert cells("Service", "", pending)[3:5] == ["<pending>", "443/TCP"]
    ready = service(
        {"type": "LoadBalancer", "clusterIPs": ["10.43.1.1"]},
        {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}},
    )
    assert cells("Service", "", ready)[3] == "203.0.113.9,lb.example.com"
    narrow = to_table("Service", "", [ready], wide=False, now=NOW)["rows"][0]["cells"]
    assert narrow[3] == "203.0.113.9,l..."
    ready["spec"]["externalIPs"] = ["192.0.2.5"]
    assert cells("Service", "", ready)[3] == "203.0.113.9,lb.example.com,192.0.2.5"


def test_endpoints() -> None:
    obj = {
        "metadata": meta("web"),
        "subsets": [
            {
                "addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.1.6"}],
                "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}],
            }
        ],
    }
    assert cells("Endpoints", "", obj) == [
        "web",
        "10.42.0.5:80,10.42.1.6:80,10.42.0.5:9090 + 1 more...",
        "5m",
    ]
    small = {
        "metadata": meta("dns"),
        "subsets": [{"addresses": [{"ip": "fd00::a"}], "ports": [{"port": 53}]}],
    }
    assert cells("Endpoints", "", small)[1] == "[fd00::a]:53"
    headless = {"metadata": meta("h"), "subsets": [{"addresses": [{"ip": "10.42.0.9"}]}]}
    assert cells("Endpoints", "", headless)[1] == "10.42.0.9"
    assert cells("Endpoints", "", {"metadata": meta("none")})[1] == "<none>"


def test_endpoint_slice() -> None:
    obj = {
        "metadata": meta("web-abc12"),
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "named"}],
        "endpoints": [{"addresses": [f"10.42.0.{i}"]} for i in range(1, 6)],
    }
    assert cells("EndpointSlice", "discovery.k8s.io", obj) == [
        "web-abc12",
        "IPv4",
        "80,named",
        "10.42.0.1,10.42.0.2,10.42.0.3 + 2 more...",
        "5m",
    ]
    empty = {"metadata": meta("e"), "addressType": "IPv6"}
    assert cells("EndpointSlice", "discovery.k8s.io", empty)[2:4] == ["<unset>", "<unset>"]


def test_ingress_and_class() -> None:
    obj = {
        "metadata": meta("site"),
        "spec": {
            "ingressClassName": "traefik",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}],
            "tls": [{"hosts": ["a.example.com"]}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
    }
    assert cells("Ingress", "networking.k8s.io", obj) == [
        "site",
        "traefik",
        "a.example.com,b.example.com",
        "192.0.2.10",
        "80, 443",
        "5m",
    ]
    many = {"metadata": meta("many"), "spec": {"rules": [{"host": f"h{i}"} for i in range(5)]}}
    assert cells("Ingress", "networking.k8s.io", many)[1:5] == [
        "<none>",
        "h0,h1,h2 + 2 more...",
        "",
        "80",
    ]
    assert cells("Ingress", "networking.k8s.io", {"metadata": meta("any"), "spec": {}})[2] == "*"
    ic = {
        "metadata": meta("traefik"),
        "spec": {
            "controller": "traefik.io/ingress-controller",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"},
        },
    }
    assert cells("IngressClass", "networking.k8s.io", ic) == [
        "traefik",
        "traefik.io/ingress-controller",
        "IngressParameters.k8s.example.com/p",
        "5m",
    ]


def test_network_policy() -> None:
    deny = {"metadata": meta("deny-all"), "spec": {"podSelector": {}}}
    assert cells("NetworkPolicy", "networking.k8s.io", deny) == ["deny-all", "<none>", "5m"]
    web = {"metadata": meta("web"), "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    assert cells("NetworkPolicy", "networking.k8s.io", web)[1] == "app=web"


# ---------------------------------------------------------------------------------------------
# Nodes, namespaces, config and identity
# ---------------------------------------------------------------------------------------------


def test_node() -> None:
    obj = {
        "metadata": meta(
            "server-1",
            age_s=86400 * 10,
            labels={
                "node-role.kubernetes.io/master": "true",
                "node-role.kubernetes.io/control-plane": "true",
                "kubernetes.io/hostname": "server-1",
            },
        ),
        "spec": {},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "addresses": [
                {"type": "Hostname", "address": "server-1"},
                {"type": "InternalIP", "address": "192.168.1.10"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0+sampan1",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-28-amd64",
                "containerRuntimeVersion": "containerd://1.6.20",
            },
        },
    }
    assert cells("Node", "", obj) == [
        "server-1",
        "Ready",
        "control-plane,master",
        "10d",
        "v1.32.0+sampan1",
        "192.168.1.10",
        "<none>",
        "Debian GNU/Linux 12 (bookworm)",
        "6.1.0-28-amd64",
        "containerd://1.6.20",
    ]
    obj["spec"]["unschedulable"] = True
    assert cells("Node", "", obj)[1] == "Ready,SchedulingDisabled"
    obj["status"]["conditions"][1]["status"] = "Unknown"
    assert cells("Node", "", obj)[1] == "NotReady,SchedulingDisabled"


def test_node_without_status() -> None:
    obj = {"metadata": meta("agent-1", labels={"kubernetes.io/role": "worker"})}
    assert cells("Node", "", obj) == [
        "agent-1",
        "Unknown",
        "worker",
        "5m",
        "",
        "<none>",
        "<none>",
        "<unknown>",
        "<unknown>",
        "<unknown>",
    ]
    assert cells("Node", "", {"metadata": meta("n")})[2] == "<none>"


def test_namespace_config_map_secret_service_account() -> None:
    ns = {"metadata": meta("kube-system", age_s=86400 * 400), "status": {"phase": "Active"}}
    assert cells("Namespace", "", ns) == ["kube-system", "Active", "400d"]
    cm = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert cells("ConfigMap", "", cm) == ["cfg", 3, "5m"]
    secret = {
        "metadata": meta("tls"),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }
    assert cells("Secret", "", secret) == ["tls", "kubernetes.io/tls", 2, "5m"]
    assert cells("Secret", "", {"metadata": meta("s")}) == ["s", "Opaque", 0, "5m"]
    sa = {"metadata": meta("default"), "secrets": [{"name": "t"}]}
    assert cells("ServiceAccount", "", sa) == ["default", 1, "5m"]


def test_lease_and_bindings() -> None:
    lease = {"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "server-1_abc"}}
    assert cells("Lease", "coordination.k8s.io", lease) == ["kube-scheduler", "server-1_abc", "5m"]
    binding = {
        "metadata": meta("admins"),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "User", "name": "bob"},
            {"kind": "Group", "name": "system:masters"},
            {"kind": "ServiceAccount", "namespace": "kube-system", "name": "ctl"},
        ],
    }
    assert cells("ClusterRoleBinding", "rbac.authorization.k8s.io", binding) == [
        "admins",
        "ClusterRole/admin",
        "5m",
        "alice, bob",
        "system:masters",
        "kube-system/ctl",
    ]


def test_events() -> None:
    event = {
        "metadata": meta("web.17a"),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{nginx}"},
        "reason": "Pulled",
        "message": "Container image already present on machine\n",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "server-1"},
        "firstTimestamp": ago(minutes=20),
        "lastTimestamp": ago(seconds=42),
        "count": 4,
    }
    assert cells("Event", "", event) == [
        "42s",
        "Normal",
        "Pulled",
        "pod/web",
        "spec.containers{nginx}",
        "kubelet, server-1",
        "Container image already present on machine",
        "20m",
        4,
        "web.17a",
    ]
    new_style = {
        "metadata": meta("sched.1"),
        "involvedObject": {"kind": "Pod", "name": "web"},
        "reason": "Scheduled",
        "message": "Successfully assigned default/web to server-1",
        "type": "Normal",
        "eventTime": ago(seconds=90).replace("Z", ".123456Z"),
        "reportingComponent": "default-scheduler",
        "reportingInstance": "default-scheduler-server-1",
    }
    row = cells("Event", "", new_style)
    assert row[0] == "89s" and row[7] == "89s" and row[8] == 1  # 89.9 s truncates
    assert row[5] == "default-scheduler, default-scheduler-server-1"
    series = dict(new_style, series={"count": 7, "lastObservedTime": ago(seconds=3)})
    row = cells("Event", "", series)
    assert (row[0], row[8]) == ("3s", 7)
    v1 = {
        "apiVersion": "events.k8s.io/v1",
        "metadata": meta("x.1"),
        "regarding": {"kind": "Node", "name": "server-1"},
        "note": "Node server-1 status is now: NodeReady",
        "reason": "NodeReady",
        "type": "Normal",
        "deprecatedFirstTimestamp": ago(minutes=3),
        "deprecatedLastTimestamp": ago(minutes=3),
        "deprecatedCount": 1,
        "deprecatedSource": {"component": "kubelet", "host": "server-1"},
    }
    assert cells("Event", "events.k8s.io", v1)[:7] == [
        "3m",
        "Normal",
        "NodeReady",
        "node/server-1",
        "",
        "kubelet, server-1",
        "Node server-1 status is now: NodeReady",
    ]


def test_csr() -> None:
    obj = {
        "metadata": meta("node-csr-1"),
        "spec": {
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "username": "system:node:server-1",
            "expirationSeconds": 86400,
        },
        "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"},
    }
    assert cells("CertificateSigningRequest", "certificates.k8s.io", obj) == [
        "node-csr-1",
        "5m",
        "kubernetes.io/kube-apiserver-client-kubelet",
        "system:node:server-1",
        "24h",
        "Approved,Issued",
    ]
    pending = {"metadata": meta("c2"), "spec": {"username": "bob"}}
    assert cells("CertificateSigningRequest", "certificates.k8s.io", pending)[2:] == [
        "<none>",
        "bob",
        "<none>",
        "Pending",
    ]


# ---------------------------------------------------------------------------------------------
# Storage, scheduling, policy, autoscaling, quota
# ---------------------------------------------------------------------------------------------


def test_persistent_volume_and_claim() -> None:
    pv = {
        "metadata": meta("pvc-123", annotations={"pv.kubernetes.io/provisioned-by": "x"}),
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "default", "name": "data"},
            "storageClassName": "local-path",
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Bound"},
    }
    assert cells("PersistentVolume", "", pv) == [
        "pvc-123",
        "10Gi",
        "RWO,RWX",
        "Delete",
        "Bound",
        "default/data",
        "local-path",
        "<unset>",
        "",
        "5m",
        "Filesystem",
    ]
    pvc = {
        "metadata": meta("data"),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "local-path",
            "volumeName": "pvc-123",
        },
        "status": {
            "phase": "Bound",
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"},
        },
    }
    assert cells("PersistentVolumeClaim", "", pvc) == [
        "data",
        "Bound",
        "pvc-123",
        "1Gi",
        "RWO",
        "local-path",
        "<unset>",
        "5m",
        "<unset>",
    ]
    pending = {
        "metadata": meta("wait", annotations={"volume.beta.kubernetes.io/storage-class": "old"}),
        "spec": {"storageClassName": "local-path"},
        "status": {"phase": "Pending"},
    }
    assert cells("PersistentVolumeClaim", "", pending)[1:6] == ["Pending", "", "", "", "old"]
    pending["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert cells("PersistentVolumeClaim", "", pending)[1] == "Terminating"


def test_storage_class() -> None:
    obj = {
        "metadata": meta(
            "local-path",
            annotations={"storageclass.kubernetes.io/is-default-class": "true"},
        ),
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    assert cells("StorageClass", "storage.k8s.io", obj) == [
        "local-path (default)",
        "rancher.io/local-path",
        "Delete",
        "WaitForFirstConsumer",
        False,
        "5m",
    ]


def test_priority_runtime_class_pdb() -> None:
    pc = {
        "metadata": meta("system-node-critical"),
        "value": 2000001000,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    assert cells("PriorityClass", "scheduling.k8s.io", pc) == [
        "system-node-critical",
        2000001000,
        False,
        "5m",
        "PreemptLowerPriority",
    ]
    rc = {"metadata": meta("runc"), "handler": "runc"}
    assert cells("RuntimeClass", "node.k8s.io", rc) == ["runc", "runc", "5m"]
    pdb = {
        "metadata": meta("web"),
        "spec": {"minAvailable": "50%"},
        "status": {"disruptionsAllowed": 1},
    }
    assert cells("PodDisruptionBudget", "policy", pdb) == ["web", "50%", "N/A", 1, "5m"]
    pdb["spec"] = {"maxUnavailable": 1}
    assert cells("PodDisruptionBudget", "policy", pdb)[1:3] == ["N/A", "1"]


def test_hpa() -> None:
    obj = {
        "metadata": meta("web"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "500Mi"},
                    },
                },
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "rps"},
                        "target": {"type": "AverageValue", "averageValue": "10"},
                    },
                },
            ],
        },
        "status": {
            "currentReplicas": 3,
            "currentMetrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {"averageUtilization": 35, "averageValue": "70m"},
                    },
                },
            ],
        },
    }
    assert cells("HorizontalPodAutoscaler", "autoscaling", obj) == [
        "web",
        "Deployment/web",
        "cpu: 35%/80%, memory: <unknown>/500Mi + 1 more...",
        "2",
        10,
        3,
        "5m",
    ]
    v1 = {
        "metadata": meta("old"),
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "old"},
            "maxReplicas": 4,
            "targetCPUUtilizationPercentage": 50,
        },
    }
    assert cells("HorizontalPodAutoscaler", "autoscaling", v1)[2:6] == [
        "cpu: <unknown>/50%",
        "<unset>",
        4,
        0,
    ]
    bare = {
        "metadata": meta("b"),
        "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 2},
    }
    assert cells("HorizontalPodAutoscaler", "autoscaling", bare)[2] == "<none>"


def test_resource_quota_and_pod_template() -> None:
    quota = {
        "metadata": meta("compute"),
        "status": {
            "hard": {"requests.cpu": "2", "limits.memory": "4Gi", "pods": "10", "limits.cpu": "4"},
            "used": {"requests.cpu": "500m", "limits.memory": "1Gi", "pods": "3"},
        },
    }
    assert cells("ResourceQuota", "", quota) == [
        "compute",
        "5m",
        "pods: 3/10, requests.cpu: 500m/2",
        "limits.cpu: 0/4, limits.memory: 1Gi/4Gi",
    ]
    template = {"metadata": meta("t"), "template": TEMPLATE}
    assert cells("PodTemplate", "", template) == [
        "t",
        "nginx,sidecar",
        "nginx:1.27,busybox",
        "app=web",
    ]


def test_webhook_configuration() -> None:
    obj = {"metadata": meta("hooks"), "webhooks": [{"name": "a"}, {"name": "b"}]}
    assert cells("ValidatingWebhookConfiguration", "admissionregistration.k8s.io", obj) == [
        "hooks",
        2,
        "5m",
    ]


# ---------------------------------------------------------------------------------------------
# Custom resources
# ---------------------------------------------------------------------------------------------

CRD_COLUMNS = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio", "priority": 1},
    {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where it is"},
    {"name": "First", "type": "string", "jsonPath": ".status.conditions[0].type"},
    {"name": "Last", "type": "string", "jsonPath": ".status.conditions[-1].type"},
    {"name": "App", "type": "string", "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"},
    {
        "name": "Quoted",
        "type": "string",
        "jsonPath": ".metadata.labels['app\\.kubernetes\\.io/name']",
    },
    {"name": "Spec", "type": "string", "jsonPath": ".spec.nested"},
    {"name": "Count", "type": "string", "jsonPath": ".spec.replicas"},
    {"name": "Weight", "type": "string", "jsonPath": ".spec.ratio"},
    {"name": "Started", "type": "date", "jsonPath": ".status.startTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def test_crd_columns_definitions() -> None:
    columns = crd_table(CRD_COLUMNS, [], now=NOW)["columnDefinitions"]
    assert columns[0]["name"] == "Name" and columns[0]["format"] == "name"
    assert [c["name"] for c in columns[1:]] == [c["name"] for c in CRD_COLUMNS]
    assert columns[2]["priority"] == 1 and columns[2]["type"] == "number"
    assert columns[4]["description"] == "Where it is"
    assert columns[1]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    )


def test_crd_table_cells() -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": meta("w1", labels={"app.kubernetes.io/name": "shop"}),
        "spec": {"replicas": 3, "ratio": 0.5, "nested": {"b": [1, 2], "a": "x"}},
        "status": {
            "ready": True,
            "phase": "Running",
            "conditions": [{"type": "Available"}, {"type": "Progressing"}],
            "startTime": ago(hours=2, minutes=5),
        },
    }
    table = crd_table(CRD_COLUMNS, [obj], now=NOW)
    assert table["rows"][0]["cells"] == [
        "w1",
        3,
        0.5,
        True,
        "Running",
        "Available",
        "Progressing",
        "shop",
        "shop",
        '{"a":"x","b":[1,2]}',
        "3",
        "0.5",
        "125m",
        "5m",
    ]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_crd_table_missing_and_mistyped_values_are_null() -> None:
    obj = {
        "metadata": {"name": "w2"},
        "spec": {"replicas": "three", "ratio": True},
        "status": {"ready": "yes", "conditions": [], "startTime": "yesterday"},
    }
    row = crd_table(CRD_COLUMNS, [obj], now=NOW)["rows"][0]["cells"]
    assert row == [
        "w2",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        "three",
        "true",
        "<invalid>",
        None,
    ]


def test_crd_default_age_column() -> None:
    table = crd_table([], [{"metadata": meta("w", age_s=3 * 3600)}], now=NOW, include_object="None")
    assert [(c["name"], c["type"]) for c in table["columnDefinitions"]] == [
        ("Name", "string"),
        ("Age", "date"),
    ]
    assert table["rows"] == [{"cells": ["w", "3h"], "object": None}]


@pytest.mark.parametrize("path", [".a['x", ".a[abc]", ".a[?(@.x=='y')", ".a ~"])
def test_crd_column_that_does_not_parse_ends_the_columns(path: str) -> None:
    # The apiextensions convertor falls back to the columns it could build before the bad one.
    columns = [
        {"name": "Good", "type": "string", "jsonPath": ".spec.a"},
        {"name": "Bad", "type": "string", "jsonPath": path},
        {"name": "After", "type": "string", "jsonPath": ".spec.b"},
    ]
    obj = {"metadata": {"name": "w"}, "spec": {"a": "1", "b": "2"}}
    table = crd_table(columns, [obj], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Good"]
    assert table["rows"][0]["cells"] == ["w", "1"]


def test_crd_filter_wildcard_and_recursive_columns() -> None:
    columns = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='Ready')].status",
        },
        {
            "name": "Since",
            "type": "date",
            "jsonPath": '.status.conditions[?(@.type == "Ready")].lastTransitionTime',
        },
        {"name": "Types", "type": "string", "jsonPath": ".status.conditions[*].type"},
        {"name": "Deep", "type": "integer", "jsonPath": "..replicas"},
        {"name": "Null", "type": "string", "jsonPath": ".spec.nothing"},
        {"name": "Unescaped", "type": "string", "jsonPath": ".metadata.labels['a.b/c']"},
    ]
    obj = {
        "metadata": {"name": "w", "labels": {"a.b/c": "x"}},
        "spec": {"template": {"replicas": 4}, "nothing": None},
        "status": {
            "conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True", "lastTransitionTime": ago(minutes=7)},
            ]
        },
    }
    row = crd_table(columns, [obj], now=NOW)["rows"][0]["cells"]
    # Only the first result of a column is printed; null prints as client-go prints a nil
    # value; a quoted key is read as a dotted path (escape the dots to keep them).
    assert row == ["w", "True", "7m", "Synced", 4, "<no value>", None]


# ---------------------------------------------------------------------------------------------


def test_api_service() -> None:
    local = {
        "metadata": meta("v1.apps"),
        "spec": {"group": "apps", "version": "v1"},
        "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]},
    }
    assert cells("APIService", "apiregistration.k8s.io", local) == [
        "v1.apps",
        "Local",
        "True",
        "5m",
    ]
    remote = {
        "metadata": meta("v1beta1.metrics.k8s.io"),
        "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
        "status": {
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MissingEndpoints"},
            ]
        },
    }
    assert cells("APIService", "apiregistration.k8s.io", remote)[1:3] == [
        "kube-system/metrics-server",
        "False (MissingEndpoints)",
    ]
    del remote["status"]
    assert cells("APIService", "apiregistration.k8s.io", remote)[2] == "Unknown"


def test_component_status_and_scale() -> None:
    cs = {
        "metadata": {"name": "etcd-0"},
        "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}],
    }
    assert cells("ComponentStatus", "", cs) == ["etcd-0", "Healthy", "ok", ""]
    cs["conditions"] = [{"type": "Healthy", "status": "False", "error": "dial tcp: refused"}]
    assert cells("ComponentStatus", "", cs) == ["etcd-0", "Unhealthy", "", "dial tcp: refused"]
    assert cells("ComponentStatus", "", {"metadata": {"name": "x"}})[1] == "Unknown"
    scale = {"metadata": meta("web"), "spec": {"replicas": 3}, "status": {"replicas": 2}}
    assert cells("Scale", "autoscaling", scale) == ["web", 3, 2, "5m"]
    assert table_columns("Scale", "autoscaling")[0]["format"] == ""


def test_csi_kinds_and_volume_attachment() -> None:
    driver = {
        "metadata": meta("local.csi.example.com"),
        "spec": {
            "podInfoOnMount": True,
            "tokenRequests": [{"audience": "vault"}, {"audience": "gcp"}],
            "volumeLifecycleModes": ["Persistent", "Ephemeral"],
        },
    }
    assert cells("CSIDriver", "storage.k8s.io", driver) == [
        "local.csi.example.com",
        True,
        True,
        False,
        "vault,gcp",
        False,
        "Persistent,Ephemeral",
        "5m",
    ]
    bare = cells("CSIDriver", "storage.k8s.io", {"metadata": meta("d"), "spec": {}})
    assert (bare[4], bare[6]) == ("<unset>", "<none>")
    node = {"metadata": meta("server-1"), "spec": {"drivers": [{"name": "a"}, {"name": "b"}]}}
    assert cells("CSINode", "storage.k8s.io", node) == ["server-1", 2, "5m"]
    capacity = {"metadata": meta("csisc-1"), "storageClassName": "fast", "capacity": "1.5Gi"}
    assert cells("CSIStorageCapacity", "storage.k8s.io", capacity) == ["csisc-1", "fast", "1536Mi"]
    del capacity["capacity"]
    assert cells("CSIStorageCapacity", "storage.k8s.io", capacity)[2] == "<unset>"
    attachment = {
        "metadata": meta("csi-123"),
        "spec": {
            "attacher": "local.csi.example.com",
            "nodeName": "server-1",
            "source": {"persistentVolumeName": "pv-1"},
        },
        "status": {"attached": True},
    }
    assert cells("VolumeAttachment", "storage.k8s.io", attachment) == [
        "csi-123",
        "local.csi.example.com",
        "pv-1",
        "server-1",
        True,
        "5m",
    ]
    assert table_columns("VolumeAttachment", "storage.k8s.io")[1]["format"] == "name"


def test_validating_admission_policy_and_binding() -> None:
    group = "admissionregistration.k8s.io"
    policy = {
        "metadata": meta("replicas-limit"),
        "spec": {
            "paramKind": {"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit"},
            "validations": [{"expression": "true"}, {"expression": "false"}],
        },
    }
    assert cells("ValidatingAdmissionPolicy", group, policy) == [
        "replicas-limit",
        2,
        "rules.example.com/v1/ReplicaLimit",
        "5m",
    ]
    assert cells("ValidatingAdmissionPolicy", group, {"metadata": meta("p")})[2] == "<unset>"
    binding = {
        "metadata": meta("b"),
        "spec": {"policyName": "replicas-limit", "paramRef": {"name": "limit", "namespace": "ns"}},
    }
    kind = "ValidatingAdmissionPolicyBinding"
    assert cells(kind, group, binding) == ["b", "replicas-limit", "ns/limit", "5m"]
    binding["spec"]["paramRef"] = {"name": "limit"}
    assert cells(kind, group, binding)[2] == "*/limit"
    binding["spec"]["paramRef"] = {
        "selector": {
            "matchLabels": {"tier": "gold"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}],
        }
    }
    assert cells(kind, group, binding)[2] == (
        "&LabelSelector{MatchLabels:map[string]string{tier: gold,},"
        "MatchExpressions:[]LabelSelectorRequirement{"
        "LabelSelectorRequirement{Key:env,Operator:In,Values:[a b],},},}"
    )
    del binding["spec"]["paramRef"]
    assert cells(kind, group, binding)[2] == "<unset>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10Gi", "10Gi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("2048Ki", "2Mi"),
        ("0.5Ki", "512"),
        ("1000m", "1"),
        ("0.5", "500m"),
        ("1500", "1500"),
        ("2000", "2k"),
        ("1000M", "1G"),
        ("0.0001", "100u"),
        ("1.0000000001", "1000000001n"),
        ("1e3", "1e3"),
        ("1500e3", "1500e3"),
        ("1E", "1E"),
        ("-0.5", "-500m"),
        ("+1Ki", "1Ki"),
        ("0Gi", "0"),
        ("12 cores", None),
    ],
)
def test_canonical_quantity(text: str, expected: str | None) -> None:
    assert canonical_quantity(text) == expected


def test_printed_quantities_are_canonical() -> None:
    pv = {"metadata": meta("pv"), "spec": {"capacity": {"storage": "1.5Gi"}}}
    assert cells("PersistentVolume", "", pv)[1] == "1536Mi"
    assert cells("PersistentVolume", "", {"metadata": meta("pv"), "spec": {}})[1] == "0"
    quota = {"metadata": meta("q"), "status": {"hard": {"cpu": "2000m"}, "used": {"cpu": "0.5"}}}
    assert cells("ResourceQuota", "", quota)[2] == "cpu: 500m/2"


def test_crd_string_column_prints_structures_like_go_json_marshal() -> None:
    columns = [{"name": "Spec", "type": "string", "jsonPath": ".spec"}]
    obj = {
        "metadata": {"name": "w"},
        "spec": {"z": [1, 2.0, 1e-7, 1e21], "a": "<b>&", "m": None, "t": True},
    }
    row = crd_table(columns, [obj], now=NOW)["rows"][0]["cells"]
    assert row == ["w", '{"a":"\\u003cb\\u003e\\u0026","m":null,"t":true,"z":[1,2,1e-7,1e+21]}']


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3.0, "3"), (0.25, "0.25"), (123456.0, "123456"), (1e6, "1e+06"), (1.5e-7, "1.5e-07")],
)
def test_crd_string_column_prints_floats_like_go(value: float, expected: str) -> None:
    columns = [{"name": "V", "type": "string", "jsonPath": ".v"}]
    row = crd_table(columns, [{"metadata": {"name": "w"}, "v": value}], now=NOW)["rows"][0]
    assert row["cells"] == ["w", expected]
