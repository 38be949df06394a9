"""Per-kind create/update behaviour: upstream's "registry strategy", for JSON objects.

The API server calls, for a create::

    default(info, obj); prepare_for_create(info, obj); causes = validate(info, obj)

for an update of the main resource::

    default(info, new); prepare_for_update(info, new, old); causes = validate_update(info, new, old)

and for an update through the ``status`` subresource::

    prepare_for_status_update(info, new, old); causes = validate_status_update(info, new, old)

What the strategy owns:

* defaults (``sampan.api.defaults``) and validation (``sampan.api.validation``);
* status on create: reset to what a fresh object of the kind shows (pods: Pending plus their
  QoS class; namespaces: Active; services and ingresses: an empty load balancer; ...);
* status on update: a main-resource update never changes status, a status update never changes
  spec (nor, except for pods, labels, annotations, finalizers or owner references);
* ``metadata.generation``: 1 on create and +1 on every spec change for kinds that track it;
* kind specifics: a Job's generated selector and labels, a Service's allocated fields kept when
  a client omits them on update, a Namespace's finalizers kept on update.

What it does not own: uid, creationTimestamp, resourceVersion, generateName expansion, IP and
node-port allocation, admission plugins. ``prepare_for_create`` of a Job needs
``metadata.uid`` and ``metadata.name``; it generates a uid if there is none yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sampan.api import times
from sampan.api.defaults import apply_defaults
from sampan.api.defaults import default_pod_spec as _default_pod_spec
from sampan.api.errors import Cause
from sampan.api.jsonwire import copy_json
from sampan.api.labels import SelectorError, selector_from_label_selector, selector_from_set
from sampan.api.quantity import QuantityError, parse_quantity
from sampan.api.resources import ResourceInfo, builtin_resources
from sampan.api.validation import validate_create
from sampan.api.validation import validate_ephemeral_containers_update as _validate_ephemeral_update
from sampan.api.validation import validate_status_update as _validate_status_update
from sampan.api.validation import validate_update as _validate_update

__all__ = [
    "JOB_CONTROLLER_UID_LABEL",
    "JOB_NAME_LABEL",
    "LEGACY_JOB_CONTROLLER_UID_LABEL",
    "LEGACY_JOB_NAME_LABEL",
    "default",
    "pod_qos_class",
    "prepare_for_approval_update",
    "prepare_for_create",
    "prepare_for_ephemeral_containers_update",
    "prepare_for_status_update",
    "prepare_for_update",
    "scale_of",
    "validate",
    "validate_ephemeral_containers_update",
    "validate_status_update",
    "validate_update",
]

Obj = dict[str, Any]

JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"

_QOS_RESOURCES = ("cpu", "memory")


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _spec(obj: Obj) -> Obj:
    """``obj["spec"]`` as a dict, replacing a malformed one (validation reports the rest)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        obj["spec"] = spec
    return spec


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


# --- defaults and validation ---------------------------------------------------------------


def default(info: ResourceInfo, obj: Obj) -> None:
    """Fill the defaults kube-apiserver fills (mutates ``obj``)."""
    apply_defaults(info, obj)


def validate(info: ResourceInfo, obj: Obj) -> list[Cause]:
    """Create validation, metadata included."""
    return validate_create(info, obj)


def validate_update(info: ResourceInfo, new: Obj, old: Obj) -> list[Cause]:
    return _validate_update(info, new, old)


def validate_status_update(info: ResourceInfo, new: Obj, old: Obj) -> list[Cause]:
    return _validate_status_update(info, new, old)


# --- QoS -----------------------------------------------------------------------------------


def pod_qos_class(spec: Obj) -> str:
    """``Guaranteed``, ``Burstable`` or ``BestEffort``, from cpu/memory requests and limits."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    guaranteed = True
    containers = [
        *(c for c in _list(spec.get("containers"))),
        *(c for c in _list(spec.get("initContainers"))),
    ]
    for container in containers:
        resources = _d(_d(container).get("resources"))
        for name, text in _d(resources.get("requests")).items():
            if name not in _QOS_RESOURCES:
                continue
            try:
                value = parse_quantity(text)
            except QuantityError:
                continue
            if value > 0:
                requests[name] = requests.get(name, 0) + value
        found: set[str] = set()
        for name, text in _d(resources.get("limits")).items():
            if name not in _QOS_RESOURCES:
                continue
            try:
                value = parse_quantity(text)
            except QuantityError:
                continue
            if value > 0:
                found.add(name)
                limits[name] = limits.get(name, 0) + value
        if not found.issuperset(_QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(name) == value for name, value in requests.items()):
        if len(requests) == len(limits):
            return "Guaranteed"
    return "Burstable"


def apply_defaults_to_ephemeral(spec: Obj) -> None:
    """Container defaults for ephemeral containers (the rest of the spec is already defaulted)."""
    ephemeral = [c for c in _list(spec.get("ephemeralContainers")) if isinstance(c, dict)]
    if ephemeral:
        _default_pod_spec({"ephemeralContainers": ephemeral})


def _now() -> str:
    """metav1.Time as upstream serializes it: RFC 3339, seconds, UTC."""
    return times.now()


# --- create --------------------------------------------------------------------------------

# Status a fresh object shows (zero-valued fields upstream always serializes included).
_FRESH_STATUS: dict[tuple[str, str], Obj] = {
    ("", "Service"): {"loadBalancer": {}},
    ("", "Namespace"): {"phase": "Active"},
    ("", "PersistentVolumeClaim"): {"phase": "Pending"},
    ("", "PersistentVolume"): {"phase": "Pending"},
    ("", "ReplicationController"): {"replicas": 0},
    ("apps", "ReplicaSet"): {"replicas": 0},
    ("apps", "StatefulSet"): {"replicas": 0, "availableReplicas": 0},
    ("apps", "DaemonSet"): {
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    },
    ("networking.k8s.io", "Ingress"): {"loadBalancer": {}},
    ("policy", "PodDisruptionBudget"): {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
}
# Kinds whose creator legitimately supplies status (the kubelet registers nodes with theirs).
_KEEP_STATUS_ON_CREATE = {("", "Node")}


# Kinds this package knows; anything else is a custom resource, handled as upstream's
# custom-resource strategy does.
_BUILTIN_KINDS = frozenset((i.group, i.kind) for i in builtin_resources())


def _is_custom(info: ResourceInfo) -> bool:
    return (info.group, info.kind) not in _BUILTIN_KINDS


def _fresh_status(info: ResourceInfo, obj: Obj) -> Obj | None:
    """The status a new object starts with; None = leave the object's status alone.
    A custom resource with a status subresource starts without status."""
    key = (info.group, info.kind)
    if key == ("", "Pod"):
        status: Obj = {"phase": "Pending", "qosClass": pod_qos_class(_d(obj.get("spec")))}
        if _d(obj.get("spec")).get("schedulingGates"):
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "SchedulingGated",
                    "message": "Scheduling is blocked due to non-empty scheduling gates",
                    "lastProbeTime": None,
                    "lastTransitionTime": _now(),
                }
            ]
        return status
    if key == ("", "PersistentVolume"):
        return {"phase": "Pending", "lastPhaseTransitionTime": _now()}
    if key == ("autoscaling", "HorizontalPodAutoscaler"):
        return (
            {"desiredReplicas": 0}
            if info.version == "v2"
            else {
                "currentReplicas": 0,
                "desiredReplicas": 0,
            }
        )
    if key == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        versions = [_d(v) for v in _d(obj.get("spec")).get("versions") or []]
        stored = [v.get("name") for v in versions if v.get("storage")]
        return {
            "acceptedNames": {"kind": "", "plural": ""},
            "storedVersions": stored[:1],
        }
    if key in _FRESH_STATUS:
        return copy_json(_FRESH_STATUS[key])
    return {} if info.has_status else None


def _prepare_job_create(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector") is True:
        return
    meta = _meta(obj)
    uid = meta.get("uid")
    if not uid:
        uid = str(uuid.uuid4())
        meta["uid"] = uid
    name = meta.get("name") or ""
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    template_meta = template.setdefault("metadata", {})
    if not isinstance(template_meta, dict):
        return
    template_labels = template_meta.get("labels")
    if not isinstance(template_labels, dict):
        template_labels = {}
        template_meta["labels"] = template_labels
    labels_before = dict(template_labels)
    template_labels[JOB_CONTROLLER_UID_LABEL] = uid
    template_labels[JOB_NAME_LABEL] = name
    template_labels[LEGACY_JOB_CONTROLLER_UID_LABEL] = uid
    template_labels[LEGACY_JOB_NAME_LABEL] = name
    if not spec.get("selector"):
        spec["selector"] = {"matchLabels": {JOB_CONTROLLER_UID_LABEL: uid}}
    spec["manualSelector"] = False
    # A job without labels of its own takes its template's (upstream defaulting, re-run on read).
    job_labels = meta.get("labels")
    if not job_labels or job_labels == labels_before:
        meta["labels"] = dict(template_labels)


def _prepare_csr_create(obj: Obj, user: Mapping[str, Any] | None) -> None:
    """The requester's identity is the server's to record, never the client's to claim."""
    spec = _spec(obj)
    for key in ("username", "uid", "groups", "extra"):
        spec.pop(key, None)
    if user:
        if user.get("username"):
            spec["username"] = str(user["username"])
        if user.get("uid"):
            spec["uid"] = str(user["uid"])
        if user.get("groups"):
            spec["groups"] = [str(g) for g in user["groups"]]
        if user.get("extra"):
            spec["extra"] = {str(k): [str(v) for v in vs] for k, vs in dict(user["extra"]).items()}


def prepare_for_create(
    info: ResourceInfo, obj: Obj, *, user: Mapping[str, Any] | None = None
) -> None:
    """Reset what clients may not set on create (mutates ``obj``).

    ``user`` (``{"username", "uid", "groups", "extra"}``) is the authenticated requester; only
    CertificateSigningRequests record it (``spec.username`` etc.), as upstream does."""
    meta = _meta(obj)
    meta.pop("deletionTimestamp", None)
    meta.pop("deletionGracePeriodSeconds", None)
    if info.tracks_generation:
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if _is_custom(info):
        if info.has_status:
            obj.pop("status", None)
    elif (info.group, info.kind) not in _KEEP_STATUS_ON_CREATE:
        status = _fresh_status(info, obj)
        if status is not None:
            obj["status"] = status
    if (info.group, info.kind) == ("batch", "Job"):
        _prepare_job_create(obj)
    if (info.group, info.kind) == ("certificates.k8s.io", "CertificateSigningRequest"):
        _prepare_csr_create(obj, user)
    if (info.group, info.kind) == ("", "Namespace"):
        spec = _spec(obj)
        finalizers = spec.get("finalizers")
        if not isinstance(finalizers, list):
            finalizers = []
        if "kubernetes" not in finalizers:
            finalizers.append("kubernetes")
        spec["finalizers"] = finalizers


# --- update --------------------------------------------------------------------------------


def _spec_part(info: ResourceInfo, obj: Obj) -> Any:
    """What a generation bump compares: ``spec`` for built-in kinds that have one, else every
    field but metadata and status (webhook configurations, endpoint slices, custom resources)."""
    if not _is_custom(info) and ("spec" in obj or info.has_status):
        return obj.get("spec")
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


_SERVICE_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def _prepare_service_update(new: Obj, old: Obj) -> None:
    new_spec, old_spec = new.get("spec"), _d(old.get("spec"))
    if not isinstance(new_spec, dict):
        return
    if new_spec.get("type") == "ExternalName" or old_spec.get("type") == "ExternalName":
        return
    if not new_spec.get("clusterIP") and old_spec.get("clusterIP"):
        for key in _SERVICE_ALLOCATED:
            if key in old_spec:
                new_spec[key] = copy_json(old_spec[key])
    if new_spec.get("type") in ("NodePort", "LoadBalancer") and new_spec.get(
        "type"
    ) == old_spec.get("type"):
        old_ports = [_d(p) for p in _list(old_spec.get("ports"))]
        for port in _list(new_spec.get("ports")):
            if isinstance(port, dict) and not port.get("nodePort"):
                for old_port in old_ports:
                    same = (old_port.get("port"), old_port.get("protocol")) == (
                        port.get("port"),
                        port.get("protocol"),
                    )
                    if same and old_port.get("nodePort"):
                        port["nodePort"] = old_port["nodePort"]
                        break
        if not new_spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
            if new_spec.get("externalTrafficPolicy") == "Local":
                new_spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def _prepare_namespace_update(new: Obj, old: Obj) -> None:
    old_finalizers = _d(old.get("spec")).get("finalizers")
    spec = _spec(new)
    if old_finalizers is None:
        spec.pop("finalizers", None)
    else:
        spec["finalizers"] = copy_json(old_finalizers)


_UPDATE_HOOKS: dict[tuple[str, str], Callable[[Obj, Obj], None]] = {
    ("", "Service"): _prepare_service_update,
    ("", "Namespace"): _prepare_namespace_update,
}


# System metadata an update can never change (upstream's BeforeUpdate).
_KEPT_ON_UPDATE = ("creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")


def _keep_system_metadata(new_meta: Obj, old_meta: Obj) -> None:
    if not new_meta.get("uid") and old_meta.get("uid"):
        new_meta["uid"] = old_meta["uid"]
    for key in _KEPT_ON_UPDATE:
        if key in old_meta and old_meta[key] is not None:
            new_meta[key] = copy_json(old_meta[key])
        elif key != "deletionGracePeriodSeconds":
            new_meta.pop(key, None)


def prepare_for_update(info: ResourceInfo, new: Obj, old: Obj) -> None:
    """Main-resource update: keep status and system metadata, bump generation on spec change
    (mutates ``new``)."""
    new_meta, old_meta = _meta(new), _d(old.get("metadata"))
    _keep_system_metadata(new_meta, old_meta)
    if info.has_status:
        if "status" in old:
            new["status"] = copy_json(old["status"])
        else:
            new.pop("status", None)
    hook = _UPDATE_HOOKS.get((info.group, info.kind))
    if hook is not None:
        hook(new, old)
    old_generation = old_meta.get("generation")
    if info.tracks_generation:
        base = old_generation if isinstance(old_generation, int) else 1
        changed = _spec_part(info, new) != _spec_part(info, old)
        new_meta["generation"] = base + 1 if changed else base
    elif old_generation is not None:
        new_meta["generation"] = old_generation
    else:
        new_meta.pop("generation", None)


_STATUS_PRESERVED_META = (
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)
_POD_STATUS_PRESERVED_META = ("ownerReferences", "deletionTimestamp", "generation")


def prepare_for_status_update(info: ResourceInfo, new: Obj, old: Obj) -> None:
    """Status-subresource update: keep spec (and most metadata) from ``old``."""
    is_pod = (info.group, info.kind) == ("", "Pod")
    for key in list(new):
        if key not in ("apiVersion", "kind", "metadata", "status"):
            del new[key]
    for key, value in old.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            new[key] = copy_json(value)
    new_meta, old_meta = _meta(new), _d(old.get("metadata"))
    _keep_system_metadata(new_meta, old_meta)
    for key in _POD_STATUS_PRESERVED_META if is_pod else _STATUS_PRESERVED_META:
        if key in old_meta:
            new_meta[key] = copy_json(old_meta[key])
        else:
            new_meta.pop(key, None)
    if (info.group, info.kind) == ("", "PersistentVolume"):
        new_status, old_status = _d(new.get("status")), _d(old.get("status"))
        if new_status.get("phase") != old_status.get("phase"):
            if new_status.get("lastPhaseTransitionTime") in (
                None,
                old_status.get("lastPhaseTransitionTime"),
            ):
                new.setdefault("status", {})["lastPhaseTransitionTime"] = _now()
    if is_pod:
        status = new.get("status")
        if isinstance(status, dict) and not status.get("qosClass"):
            old_qos = _d(old.get("status")).get("qosClass")
            if old_qos:
                status["qosClass"] = old_qos


def prepare_for_ephemeral_containers_update(info: ResourceInfo, new: Obj, old: Obj) -> None:
    """``pods/ephemeralcontainers``: only ``spec.ephemeralContainers`` may change."""
    containers = _d(new.get("spec")).get("ephemeralContainers")
    for key in list(new):
        if key not in ("apiVersion", "kind", "metadata"):
            del new[key]
    for key, value in old.items():
        if key not in ("apiVersion", "kind", "metadata"):
            new[key] = copy_json(value)
    _keep_system_metadata(_meta(new), _d(old.get("metadata")))
    for key in ("labels", "annotations", "finalizers", "ownerReferences", "generation"):
        if key in _d(old.get("metadata")):
            _meta(new)[key] = copy_json(old["metadata"][key])
        else:
            _meta(new).pop(key, None)
    spec = _spec(new)
    if containers is None:
        spec.pop("ephemeralContainers", None)
    else:
        spec["ephemeralContainers"] = containers
        apply_defaults_to_ephemeral(spec)


def validate_ephemeral_containers_update(info: ResourceInfo, new: Obj, old: Obj) -> list[Cause]:
    return _validate_ephemeral_update(info, new, old)


def prepare_for_approval_update(info: ResourceInfo, new: Obj, old: Obj) -> None:
    """``certificatesigningrequests/approval``: only ``status.conditions`` may change."""
    conditions = _d(new.get("status")).get("conditions")
    for key in list(new):
        if key not in ("apiVersion", "kind"):
            del new[key]
    for key, value in old.items():
        if key not in ("apiVersion", "kind"):
            new[key] = copy_json(value)
    status = new.get("status")
    if not isinstance(status, dict):
        status = new["status"] = {}
    if conditions is None:
        status.pop("conditions", None)
    else:
        status["conditions"] = conditions
        for condition in _list(conditions):
            if isinstance(condition, dict):
                condition.setdefault("lastUpdateTime", _now())
                condition.setdefault("lastTransitionTime", condition["lastUpdateTime"])


# --- scale subresource ---------------------------------------------------------------------


def _selector_string(info: ResourceInfo, obj: Obj) -> str:
    selector = _d(obj.get("spec")).get("selector")
    try:
        if info.kind == "ReplicationController":
            return str(selector_from_set(_d(selector)))
        if selector is None:
            return ""
        return str(selector_from_label_selector(_d(selector)))
    except SelectorError:
        return ""


def scale_of(info: ResourceInfo, obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale of a scalable object (``GET .../scale``)."""
    meta = _d(obj.get("metadata"))
    scale_meta = {
        key: meta[key]
        for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if key in meta
    }
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": scale_meta,
        "spec": {"replicas": _d(obj.get("spec")).get("replicas", 0)},
        "status": {
            "replicas": _d(obj.get("status")).get("replicas", 0),
            "selector": _selector_string(info, obj),
        },
    }
