"""Defaulting: the fields kube-apiserver fills in when it decodes an object.

``apply_defaults(info, obj)`` mutates a JSON object in place so that it reads back the way
``kubectl get -o yaml`` shows it on a real v1.32 cluster right after create (for the fields
defaulting owns; allocation of IPs and node ports, service account injection and the
priority/toleration admission plugins are the API server's business, not this module's).

Defaulting is idempotent: applying it twice gives the same object, so the API server may run
it on every write (and on objects read back from storage written by an older version).
Table: ``_DEFAULTERS`` maps (group, kind) to one function; pod specs, wherever they are
embedded (pods, templates of workloads, job templates of cronjobs), go through
``default_pod_spec``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from sampan.api.apiregistration import default_apiservice
from sampan.api.resources import ResourceInfo

__all__ = [
    "DEFAULT_DNS_POLICY",
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_PERIOD_S",
    "DEFAULT_REVISION_HISTORY_LIMIT",
    "DEFAULT_SCHEDULER_NAME",
    "DEFAULT_TERMINATION_GRACE_PERIOD_S",
    "DEFAULT_TERMINATION_MESSAGE_PATH",
    "apply_defaults",
    "default_pod_spec",
    "default_pod_template",
    "image_pull_policy_for",
]

Obj = dict[str, Any]

DEFAULT_DNS_POLICY = "ClusterFirst"
DEFAULT_RESTART_POLICY = "Always"
DEFAULT_SCHEDULER_NAME = "default-scheduler"
DEFAULT_TERMINATION_GRACE_PERIOD_S = 30
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_TERMINATION_MESSAGE_POLICY = "File"
DEFAULT_PROTOCOL = "TCP"
DEFAULT_TIMEOUT_S = 1
DEFAULT_PERIOD_S = 10
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_VOLUME_MODE_BITS = 0o644  # 420, as upstream shows defaultMode
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_S = 600
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_MAX_SURGE = "25%"
DEFAULT_JOB_BACKOFF_LIMIT = 6
DEFAULT_CRONJOB_SUCCESS_HISTORY = 3
DEFAULT_CRONJOB_FAILED_HISTORY = 1
DEFAULT_SESSION_AFFINITY_TIMEOUT_S = 10800
DEFAULT_WEBHOOK_TIMEOUT_S = 10
DEFAULT_WEBHOOK_PORT = 443
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
RBAC_GROUP = "rbac.authorization.k8s.io"


def _sub(obj: Obj, key: str) -> Obj:
    """``obj[key]`` as a dict, created (or replaced if not a dict) when missing."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = {}
        obj[key] = value
    return value


def _list(obj: Obj, key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _dicts(obj: Obj, key: str) -> list[Obj]:
    return [item for item in _list(obj, key) if isinstance(item, dict)]


# --- pods ----------------------------------------------------------------------------------


def image_pull_policy_for(image: str) -> str:
    """``Always`` for ``:latest`` or untagged images (unless pinned by digest), else
    ``IfNotPresent`` — the rule upstream applies when imagePullPolicy is unset."""
    if not image or "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _default_http_get(action: Obj) -> None:
    action.setdefault("path", "/")
    action.setdefault("scheme", "HTTP")


def _default_probe(probe: Obj) -> None:
    probe.setdefault("timeoutSeconds", DEFAULT_TIMEOUT_S)
    probe.setdefault("periodSeconds", DEFAULT_PERIOD_S)
    probe.setdefault("successThreshold", DEFAULT_SUCCESS_THRESHOLD)
    probe.setdefault("failureThreshold", DEFAULT_FAILURE_THRESHOLD)
    if isinstance(probe.get("httpGet"), dict):
        _default_http_get(probe["httpGet"])
    if isinstance(probe.get("grpc"), dict):
        probe["grpc"].setdefault("service", "")


def _default_container(container: Obj) -> None:
    container.setdefault("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
    container.setdefault("terminationMessagePolicy", DEFAULT_TERMINATION_MESSAGE_POLICY)
    if not container.get("imagePullPolicy"):
        image = container.get("image")
        container["imagePullPolicy"] = image_pull_policy_for(
            image if isinstance(image, str) else ""
        )
    if not isinstance(container.get("resources"), dict):
        container["resources"] = {}
    for port in _dicts(container, "ports"):
        port.setdefault("protocol", DEFAULT_PROTOCOL)
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(container.get(probe_key), dict):
            _default_probe(container[probe_key])
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            handler = lifecycle.get(hook)
            if isinstance(handler, dict) and isinstance(handler.get("httpGet"), dict):
                _default_http_get(handler["httpGet"])
    for env in _dicts(container, "env"):
        value_from = env.get("valueFrom")
        if isinstance(value_from, dict) and isinstance(value_from.get("fieldRef"), dict):
            value_from["fieldRef"].setdefault("apiVersion", "v1")


def _default_volume(volume: Obj) -> None:
    sources = [k for k in volume if k != "name"]
    if not sources:
        volume["emptyDir"] = {}
    for key in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(volume.get(key), dict):
            volume[key].setdefault("defaultMode", DEFAULT_VOLUME_MODE_BITS)
    if isinstance(volume.get("hostPath"), dict):
        volume["hostPath"].setdefault("type", "")
    projected = volume.get("projected")
    if isinstance(projected, dict):
        for source in _dicts(projected, "sources"):
            token = source.get("serviceAccountToken")
            if isinstance(token, dict):
                token.setdefault("expirationSeconds", 3600)
            downward = source.get("downwardAPI")
            if isinstance(downward, dict):
                for item in _dicts(downward, "items"):
                    if isinstance(item.get("fieldRef"), dict):
                        item["fieldRef"].setdefault("apiVersion", "v1")
    downward = volume.get("downwardAPI")
    if isinstance(downward, dict):
        for item in _dicts(downward, "items"):
            if isinstance(item.get("fieldRef"), dict):
                item["fieldRef"].setdefault("apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    """Defaults of a PodSpec, wherever it is embedded."""
    spec.setdefault("dnsPolicy", DEFAULT_DNS_POLICY)
    spec.setdefault("restartPolicy", DEFAULT_RESTART_POLICY)
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD_S)
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    spec.setdefault("schedulerName", DEFAULT_SCHEDULER_NAME)
    # serviceAccount is the deprecated alias of serviceAccountName; keep them in step.
    if spec.get("serviceAccountName") and not spec.get("serviceAccount"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    elif spec.get("serviceAccount") and not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in _dicts(spec, key):
            _default_container(container)
    for volume in _dicts(spec, "volumes"):
        _default_volume(volume)


def _template_meta(template: Obj) -> None:
    # Embedded ObjectMeta serializes an unset creationTimestamp as null upstream.
    _sub(template, "metadata").setdefault("creationTimestamp", None)


def default_pod_template(template: Obj) -> None:
    _template_meta(template)
    default_pod_spec(_sub(template, "spec"))


def _default_pod(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    default_pod_spec(spec)
    # Pod-level defaults (upstream applies them to pods, not to templates).
    spec.setdefault("enableServiceLinks", True)
    host_network = bool(spec.get("hostNetwork"))
    for key in ("initContainers", "containers"):
        for container in _dicts(spec, key):
            if host_network:
                for port in _dicts(container, "ports"):
                    if not port.get("hostPort") and "containerPort" in port:
                        port["hostPort"] = port["containerPort"]
            # requests default to limits where only limits are given
            resources = _d(container.get("resources"))
            limits = resources.get("limits")
            if isinstance(limits, dict) and limits:
                requests = resources.get("requests")
                if requests is None:
                    requests = resources["requests"] = {}
                if isinstance(requests, dict):
                    for name, quantity in limits.items():
                        requests.setdefault(name, quantity)
    # Priority admission with no PriorityClass and no global default.
    if not spec.get("priorityClassName"):
        spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")


# --- workloads -----------------------------------------------------------------------------


def _template_labels(spec: Obj) -> Obj:
    template = spec.get("template")
    if isinstance(template, dict):
        labels = _d(template.get("metadata")).get("labels")
        if isinstance(labels, dict):
            return labels
    return {}


def _default_deployment(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("replicas", 1)
    strategy = _sub(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _sub(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", DEFAULT_MAX_UNAVAILABLE)
        rolling.setdefault("maxSurge", DEFAULT_MAX_SURGE)
    spec.setdefault("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    spec.setdefault("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_S)
    default_pod_template(_sub(spec, "template"))


def _default_replicaset(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("replicas", 1)
    default_pod_template(_sub(spec, "template"))


def _default_pvc_spec(spec: Obj) -> None:
    spec.setdefault("volumeMode", "Filesystem")


def _default_statefulset(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = _sub(spec, "updateStrategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {})
    rolling = strategy.get("rollingUpdate")
    if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict):
        rolling.setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    retention = _sub(spec, "persistentVolumeClaimRetentionPolicy")
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    for claim in _dicts(spec, "volumeClaimTemplates"):
        _template_meta(claim)
        _default_pvc_spec(_sub(claim, "spec"))
        _sub(claim, "status").setdefault("phase", "Pending")
    default_pod_template(_sub(spec, "template"))


def _default_daemonset(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    strategy = _sub(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _sub(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    default_pod_template(_sub(spec, "template"))


def _default_replicationcontroller(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("replicas", 1)
    template = spec.get("template")
    if isinstance(template, dict):
        labels = _template_labels(spec)
        if labels:
            if not spec.get("selector"):
                spec["selector"] = dict(labels)
            meta = _sub(obj, "metadata")
            if not meta.get("labels"):
                meta["labels"] = dict(labels)
        default_pod_template(template)


def _default_job_spec(spec: Obj) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = (
            2**31 - 1 if spec.get("backoffLimitPerIndex") is not None else DEFAULT_JOB_BACKOFF_LIMIT
        )
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    failure_policy = spec.get("podFailurePolicy")
    if isinstance(failure_policy, dict):
        for rule in _dicts(failure_policy, "rules"):
            for pattern in _dicts(rule, "onPodConditions"):
                pattern.setdefault("status", "True")
    spec.setdefault("manualSelector", False)
    if "podReplacementPolicy" not in spec:
        spec["podReplacementPolicy"] = (
            "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
        )
    default_pod_template(_sub(spec, "template"))


def _default_job(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    _default_job_spec(spec)
    meta = _sub(obj, "metadata")
    template_meta = _d(_d(spec.get("template")).get("metadata"))
    if isinstance(template_meta.get("labels"), dict) and not meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])


def _default_cronjob(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", DEFAULT_CRONJOB_SUCCESS_HISTORY)
    spec.setdefault("failedJobsHistoryLimit", DEFAULT_CRONJOB_FAILED_HISTORY)
    job_template = _sub(spec, "jobTemplate")
    _template_meta(job_template)
    job_spec = _sub(job_template, "spec")
    default_pod_template(_sub(job_spec, "template"))


def _default_podtemplate(obj: Obj) -> None:
    default_pod_template(_sub(obj, "template"))


# --- core ----------------------------------------------------------------------------------


def _default_service(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        client_ip = _sub(_sub(spec, "sessionAffinityConfig"), "clientIP")
        client_ip.setdefault("timeoutSeconds", DEFAULT_SESSION_AFFINITY_TIMEOUT_S)
    for port in _dicts(spec, "ports"):
        port.setdefault("protocol", DEFAULT_PROTOCOL)
        if port.get("targetPort") in (None, 0, "") and "port" in port:
            port["targetPort"] = port["port"]
    service_type = spec["type"]
    if service_type != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    externally_accessible = service_type in ("NodePort", "LoadBalancer") or (
        service_type == "ClusterIP" and bool(spec.get("externalIPs"))
    )
    if externally_accessible and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if service_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if service_type != "ExternalName":
        # Headless services without a selector take every family the cluster has (one here).
        headless_selectorless = spec.get("clusterIP") == "None" and not spec.get("selector")
        spec.setdefault(
            "ipFamilyPolicy", "RequireDualStack" if headless_selectorless else "SingleStack"
        )
        spec.setdefault("ipFamilies", ["IPv4"])


def _default_limitrange(obj: Obj) -> None:
    for item in _dicts(_sub(obj, "spec"), "limits"):
        if item.get("type") != "Container":
            continue
        default = _sub(item, "default")
        default_request = _sub(item, "defaultRequest")
        for name, value in _d(item.get("max")).items():
            default.setdefault(name, value)
        for name, value in default.items():
            default_request.setdefault(name, value)
        for name, value in _d(item.get("min")).items():
            default_request.setdefault(name, value)


def _default_secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data")
        if not isinstance(data, dict):
            data = {}
            obj["data"] = data
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_namespace(obj: Obj) -> None:
    meta = _sub(obj, "metadata")
    name = meta.get("name")
    if isinstance(name, str) and name:
        _sub(meta, "labels")[NAMESPACE_NAME_LABEL] = name
    _sub(obj, "status").setdefault("phase", "Active")


def _default_node(obj: Obj) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("capacity"), dict):
        if not status.get("allocatable"):
            status["allocatable"] = dict(status["capacity"])


def _default_pvc(obj: Obj) -> None:
    _default_pvc_spec(_sub(obj, "spec"))
    _sub(obj, "status").setdefault("phase", "Pending")


def _default_pv(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    if isinstance(spec.get("hostPath"), dict):
        spec["hostPath"].setdefault("type", "")
    _sub(obj, "status").setdefault("phase", "Pending")


def _default_endpoints(obj: Obj) -> None:
    for subset in _dicts(obj, "subsets"):
        for port in _dicts(subset, "ports"):
            port.setdefault("protocol", DEFAULT_PROTOCOL)


def _default_endpointslice(obj: Obj) -> None:
    for port in _dicts(obj, "ports"):
        port.setdefault("name", "")
        port.setdefault("protocol", DEFAULT_PROTOCOL)


def _default_networkpolicy(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    if not spec.get("policyTypes"):
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
        spec["policyTypes"] = types
    for direction, peers in (("ingress", "ports"), ("egress", "ports")):
        for rule in _dicts(spec, direction):
            for port in _dicts(rule, peers):
                port.setdefault("protocol", DEFAULT_PROTOCOL)


def _default_priorityclass(obj: Obj) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _default_storageclass(obj: Obj) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _default_csidriver(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("attachRequired", True)
    spec.setdefault("podInfoOnMount", False)
    spec.setdefault("storageCapacity", False)
    spec.setdefault("fsGroupPolicy", "ReadWriteOnceWithFSType")
    spec.setdefault("requiresRepublish", False)
    spec.setdefault("seLinuxMount", False)
    spec.setdefault("volumeLifecycleModes", ["Persistent"])


def _default_hpa_v2(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ]
    _default_hpa_behavior(spec)


def _scale_up_rules() -> Obj:
    return {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }


def _scale_down_rules() -> Obj:
    # No stabilizationWindowSeconds: the controller's own default (300 s) applies.
    return {
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }


def _default_hpa_behavior(spec: Obj) -> None:
    behavior = spec.get("behavior")
    if not isinstance(behavior, dict):
        return
    for key, rules in (("scaleUp", _scale_up_rules()), ("scaleDown", _scale_down_rules())):
        given = behavior.get(key)
        if isinstance(given, dict):
            for field, value in given.items():
                if value is not None:
                    rules[field] = value
        behavior[key] = rules


def _default_hpa_v1(obj: Obj) -> None:
    _sub(obj, "spec").setdefault("minReplicas", 1)


def _default_binding_subjects(obj: Obj) -> None:
    for subject in _dicts(obj, "subjects"):
        if "apiGroup" not in subject:
            subject["apiGroup"] = "" if subject.get("kind") == "ServiceAccount" else RBAC_GROUP


def _default_webhooks(obj: Obj, *, mutating: bool) -> None:
    for webhook in _dicts(obj, "webhooks"):
        webhook.setdefault("failurePolicy", "Fail")
        webhook.setdefault("matchPolicy", "Equivalent")
        for key in ("namespaceSelector", "objectSelector"):
            if webhook.get(key) is None:  # absent or null: the empty selector (everything)
                webhook[key] = {}
        webhook.setdefault("timeoutSeconds", DEFAULT_WEBHOOK_TIMEOUT_S)
        if mutating:
            webhook.setdefault("reinvocationPolicy", "Never")
        for rule in _dicts(webhook, "rules"):
            rule.setdefault("scope", "*")
        service = _d(webhook.get("clientConfig")).get("service")
        if isinstance(service, dict):
            service.setdefault("port", DEFAULT_WEBHOOK_PORT)


def _default_event(obj: Obj) -> None:
    # Keys core/v1 events always carry when read back (Go zero values that are not omitted).
    obj.setdefault("involvedObject", {})
    obj.setdefault("source", {})
    obj.setdefault("firstTimestamp", None)
    obj.setdefault("lastTimestamp", None)
    obj.setdefault("eventTime", None)
    obj.setdefault("reportingComponent", "")
    obj.setdefault("reportingInstance", "")


def _default_crd(obj: Obj) -> None:
    spec = _sub(obj, "spec")
    _sub(spec, "conversion").setdefault("strategy", "None")


_DEFAULTERS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("apiregistration.k8s.io", "APIService"): default_apiservice,
    ("", "Pod"): _default_pod,
    ("", "PodTemplate"): _default_podtemplate,
    ("", "ReplicationController"): _default_replicationcontroller,
    ("", "Service"): _default_service,
    ("", "Secret"): _default_secret,
    ("", "LimitRange"): _default_limitrange,
    ("", "Namespace"): _default_namespace,
    ("", "Node"): _default_node,
    ("", "PersistentVolumeClaim"): _default_pvc,
    ("", "PersistentVolume"): _default_pv,
    ("", "Endpoints"): _default_endpoints,
    ("", "Event"): _default_event,
    ("apps", "Deployment"): _default_deployment,
    ("apps", "ReplicaSet"): _default_replicaset,
    ("apps", "StatefulSet"): _default_statefulset,
    ("apps", "DaemonSet"): _default_daemonset,
    ("batch", "Job"): _default_job,
    ("batch", "CronJob"): _default_cronjob,
    ("discovery.k8s.io", "EndpointSlice"): _default_endpointslice,
    ("networking.k8s.io", "NetworkPolicy"): _default_networkpolicy,
    ("scheduling.k8s.io", "PriorityClass"): _default_priorityclass,
    ("storage.k8s.io", "StorageClass"): _default_storageclass,
    ("storage.k8s.io", "CSIDriver"): _default_csidriver,
    ("rbac.authorization.k8s.io", "RoleBinding"): _default_binding_subjects,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _default_binding_subjects,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): lambda o: _default_webhooks(
        o, mutating=True
    ),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): lambda o: _default_webhooks(
        o, mutating=False
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _default_crd,
}


def apply_defaults(info: ResourceInfo, obj: Obj) -> None:
    """Fill defaults of ``obj`` (a ``info`` object) in place."""
    if info.group == "autoscaling" and info.kind == "HorizontalPodAutoscaler":
        (_default_hpa_v2 if info.version == "v2" else _default_hpa_v1)(obj)
        return
    defaulter = _DEFAULTERS.get((info.group, info.kind))
    if defaulter is not None:
        defaulter(obj)
