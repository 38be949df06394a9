"""The smallest protobuf reader the API server needs: Kubernetes' ``k8s\\x00`` envelope and the
few kinds clients send only as protobuf.

Sampan answers in JSON, but client-go 1.32 typed clients (and so kubectl's ``create
namespace|configmap|secret|serviceaccount|deployment|service|job|cronjob|role|rolebinding|
clusterrole|clusterrolebinding|quota|priorityclass|poddisruptionbudget``, ``autoscale``,
``auth whoami``, ``auth can-i``, ``certificate approve|deny``) send request bodies as
``application/vnd.kubernetes.protobuf`` whatever the server prefers. This module decodes
those bodies into the same dicts the JSON path produces, from small per-kind schemas (field
number -> JSON name and type, as published in Kubernetes' ``generated.proto`` files). A kind
without a schema here is refused by the caller with 415; part 2 of the API server widens the
table (or serves protobuf fully).

Invariants: decoding never raises anything but ``ProtobufError``; a field number the tables do
not know refuses the whole body (415) rather than silently losing data; zero scalars, which
Go's encoder writes out, are dropped the way ``omitempty`` drops them in JSON, except for
pointer fields (``keep_zero``) where zero is a real value (``replicas: 0``).
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sampan.api import times

__all__ = ["ENVELOPE_MAGIC", "ProtobufError", "decode_object", "supported_kinds"]

ENVELOPE_MAGIC = b"k8s\x00"
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    pass


_Schema = dict[int, Any]
"""Field number -> _Field (plus the _IGNORED entry)."""


@dataclass(frozen=True)
class _Field:
    name: str
    # string | bytes | bool | int | time | intstr | map_str | map_bytes | map_quantity | message
    type: str
    repeated: bool = False
    schema: _Schema | None = None
    keep_zero: bool = False
    """True for Go pointer fields and fields without omitempty: a zero value is meaningful."""


def _f(
    name: str,
    type_: str,
    *,
    repeated: bool = False,
    schema: Any = None,
    keep_zero: bool = False,
) -> _Field:
    return _Field(name, type_, repeated, schema, keep_zero)


def _s(name: str) -> _Field:
    return _f(name, "string")


def _ss(name: str) -> _Field:
    return _f(name, "string", repeated=True)


def _m(name: str, schema: _Schema, *, repeated: bool = False) -> _Field:
    return _f(name, "message", schema=schema, repeated=repeated)


def _ptr(name: str, type_: str) -> _Field:
    return _f(name, type_, keep_zero=True)


_TIME = "time"
_IGNORED = -1
_INLINE = "inline"
"""Schema key listing field numbers that are read and deliberately discarded."""

# --- meta.k8s.io/v1 -----------------------------------------------------------------------
_OWNER_REFERENCE: _Schema = {
    1: _s("kind"),
    3: _s("name"),
    4: _s("uid"),
    5: _s("apiVersion"),
    6: _ptr("controller", "bool"),
    7: _ptr("blockOwnerDeletion", "bool"),
}
_OBJECT_META: _Schema = {
    _IGNORED: (4, 17),  # selfLink (deprecated), managedFields (server-side apply, part 2)
    1: _s("name"),
    2: _s("generateName"),
    3: _s("namespace"),
    5: _s("uid"),
    6: _s("resourceVersion"),
    7: _f("generation", "int"),
    8: _f("creationTimestamp", _TIME),
    9: _f("deletionTimestamp", _TIME),
    10: _ptr("deletionGracePeriodSeconds", "int"),
    11: _f("labels", "map_str"),
    12: _f("annotations", "map_str"),
    13: _m("ownerReferences", _OWNER_REFERENCE, repeated=True),
    14: _ss("finalizers"),
}
_META = _m("metadata", _OBJECT_META)
_LABEL_SELECTOR: _Schema = {
    1: _f("matchLabels", "map_str"),
    2: _m("matchExpressions", {1: _s("key"), 2: _s("operator"), 3: _ss("values")}, repeated=True),
}

# --- core/v1 pieces used by workload templates ----------------------------------------------
_OBJECT_FIELD: _Schema = {1: _s("apiVersion"), 2: _s("fieldPath")}
_LOCAL_NAME = _f("localObjectReference", "inline", schema={1: _s("name")})
_KEY_SELECTOR: _Schema = {1: _LOCAL_NAME, 2: _s("key"), 3: _ptr("optional", "bool")}
_CONTAINER: _Schema = {
    1: _s("name"),
    2: _s("image"),
    3: _ss("command"),
    4: _ss("args"),
    5: _s("workingDir"),
    6: _m(
        "ports",
        {
            1: _s("name"),
            2: _f("hostPort", "int"),
            3: _ptr("containerPort", "int"),
            4: _s("protocol"),
            5: _s("hostIP"),
        },
        repeated=True,
    ),
    7: _m(
        "env",
        {
            1: _s("name"),
            2: _s("value"),
            3: _m(
                "valueFrom",
                {
                    1: _m("fieldRef", _OBJECT_FIELD),
                    3: _m("configMapKeyRef", _KEY_SELECTOR),
                    4: _m("secretKeyRef", _KEY_SELECTOR),
                },
            ),
        },
        repeated=True,
    ),
    8: _m("resources", {1: _f("limits", "map_quantity"), 2: _f("requests", "map_quantity")}),
    9: _m(
        "volumeMounts",
        {1: _s("name"), 2: _f("readOnly", "bool"), 3: _s("mountPath"), 4: _s("subPath")},
        repeated=True,
    ),
    13: _s("terminationMessagePath"),
    14: _s("imagePullPolicy"),
    16: _f("stdin", "bool"),
    17: _f("stdinOnce", "bool"),
    18: _f("tty", "bool"),
    15: _m(
        "securityContext",
        {
            1: _m("capabilities", {1: _ss("add"), 2: _ss("drop")}),
            2: _ptr("privileged", "bool"),
            4: _ptr("runAsUser", "int"),
            5: _ptr("runAsNonRoot", "bool"),
            6: _ptr("readOnlyRootFilesystem", "bool"),
            7: _ptr("allowPrivilegeEscalation", "bool"),
            8: _ptr("runAsGroup", "int"),
        },
    ),
    20: _s("terminationMessagePolicy"),
}
_KEY_TO_PATH: _Schema = {1: _s("key"), 2: _s("path"), 3: _ptr("mode", "int")}
_DOWNWARD_ITEMS = _m(
    "items",
    {1: _s("path"), 2: _m("fieldRef", _OBJECT_FIELD), 4: _ptr("mode", "int")},
    repeated=True,
)
_PROJECTION: _Schema = {
    1: _m(
        "secret",
        {1: _LOCAL_NAME, 2: _m("items", _KEY_TO_PATH, repeated=True), 4: _ptr("optional", "bool")},
    ),
    2: _m("downwardAPI", {1: _DOWNWARD_ITEMS}),
    3: _m(
        "configMap",
        {1: _LOCAL_NAME, 2: _m("items", _KEY_TO_PATH, repeated=True), 4: _ptr("optional", "bool")},
    ),
    4: _m(
        "serviceAccountToken",
        {1: _s("audience"), 2: _ptr("expirationSeconds", "int"), 3: _s("path")},
    ),
}
_VOLUME_SOURCE: _Schema = {
    1: _m("hostPath", {1: _s("path"), 2: _ptr("type", "string")}),
    2: _m("emptyDir", {1: _s("medium")}),
    6: _m(
        "secret",
        {
            1: _s("secretName"),
            2: _m("items", _KEY_TO_PATH, repeated=True),
            3: _ptr("defaultMode", "int"),
            4: _ptr("optional", "bool"),
        },
    ),
    10: _m("persistentVolumeClaim", {1: _s("claimName"), 2: _f("readOnly", "bool")}),
    16: _m("downwardAPI", {1: _DOWNWARD_ITEMS, 2: _ptr("defaultMode", "int")}),
    19: _m(
        "configMap",
        {
            1: _LOCAL_NAME,
            2: _m("items", _KEY_TO_PATH, repeated=True),
            3: _ptr("defaultMode", "int"),
            4: _ptr("optional", "bool"),
        },
    ),
    26: _m(
        "projected",
        {1: _m("sources", _PROJECTION, repeated=True), 2: _ptr("defaultMode", "int")},
    ),
}
_POD_SPEC: _Schema = {
    1: _m(
        "volumes",
        {1: _s("name"), 2: _f("volumeSource", _INLINE, schema=_VOLUME_SOURCE)},
        repeated=True,
    ),
    2: _m("containers", _CONTAINER, repeated=True),
    3: _s("restartPolicy"),
    4: _ptr("terminationGracePeriodSeconds", "int"),
    5: _ptr("activeDeadlineSeconds", "int"),
    6: _s("dnsPolicy"),
    7: _f("nodeSelector", "map_str"),
    8: _s("serviceAccountName"),
    9: _s("serviceAccount"),
    10: _s("nodeName"),
    11: _f("hostNetwork", "bool"),
    12: _f("hostPID", "bool"),
    13: _f("hostIPC", "bool"),
    14: _m(
        "securityContext",
        {
            2: _ptr("runAsUser", "int"),
            3: _ptr("runAsNonRoot", "bool"),
            4: _f("supplementalGroups", "int", repeated=True),
            5: _ptr("fsGroup", "int"),
            6: _ptr("runAsGroup", "int"),
        },
    ),
    15: _m("imagePullSecrets", {1: _s("name")}, repeated=True),
    16: _s("hostname"),
    17: _s("subdomain"),
    19: _s("schedulerName"),
    20: _m("initContainers", _CONTAINER, repeated=True),
    21: _ptr("automountServiceAccountToken", "bool"),
    22: _m(
        "tolerations",
        {
            1: _s("key"),
            2: _s("operator"),
            3: _s("value"),
            4: _s("effect"),
            5: _ptr("tolerationSeconds", "int"),
        },
        repeated=True,
    ),
    24: _s("priorityClassName"),
    25: _ptr("priority", "int"),
    27: _ptr("shareProcessNamespace", "bool"),
    29: _ptr("runtimeClassName", "string"),
    30: _ptr("enableServiceLinks", "bool"),
    31: _ptr("preemptionPolicy", "string"),
}
_POD_TEMPLATE: _Schema = {1: _META, 2: _m("spec", _POD_SPEC)}
_REFERENCE: _Schema = {
    1: _s("kind"),
    2: _s("namespace"),
    3: _s("name"),
    4: _s("uid"),
    5: _s("apiVersion"),
    6: _s("resourceVersion"),
    7: _s("fieldPath"),
}
_SERVICE_SPEC: _Schema = {
    1: _m(
        "ports",
        {
            1: _s("name"),
            2: _s("protocol"),
            3: _ptr("port", "int"),
            4: _f("targetPort", "intstr"),
            5: _f("nodePort", "int"),
            6: _s("appProtocol"),
        },
        repeated=True,
    ),
    2: _f("selector", "map_str"),
    3: _s("clusterIP"),
    4: _s("type"),
    5: _ss("externalIPs"),
    7: _s("sessionAffinity"),
    10: _s("externalName"),
    18: _ss("clusterIPs"),
}

# --- batch/v1, apps/v1, rbac, scheduling, policy -------------------------------------------
_JOB_SPEC: _Schema = {
    1: _ptr("parallelism", "int"),
    2: _ptr("completions", "int"),
    3: _ptr("activeDeadlineSeconds", "int"),
    4: _m("selector", _LABEL_SELECTOR),
    5: _ptr("manualSelector", "bool"),
    6: _m("template", _POD_TEMPLATE),
    7: _ptr("backoffLimit", "int"),
    8: _ptr("ttlSecondsAfterFinished", "int"),
    9: _s("completionMode"),
    10: _ptr("suspend", "bool"),
}
_POLICY_RULE: _Schema = {
    1: _ss("verbs"),
    2: _ss("apiGroups"),
    3: _ss("resources"),
    4: _ss("resourceNames"),
    5: _ss("nonResourceURLs"),
}
_BINDING: _Schema = {
    1: _META,
    2: _m(
        "subjects",
        {1: _s("kind"), 2: _s("apiGroup"), 3: _s("name"), 4: _s("namespace")},
        repeated=True,
    ),
    3: _m("roleRef", {1: _s("apiGroup"), 2: _s("kind"), 3: _s("name")}),
}
_STATUS_IGNORED = {_IGNORED: (3,)}  # status (field 3): the server owns it

_DELETE_OPTIONS: _Schema = {
    # DeleteOptions is registered in every group-version; clients encode it with theirs.
    _IGNORED: (6,),  # ignoreStoreReadErrorWithClusterBreakingPotential: not supported
    1: _ptr("gracePeriodSeconds", "int"),
    2: _m("preconditions", {1: _s("uid"), 2: _s("resourceVersion")}),
    3: _ptr("orphanDependents", "bool"),
    4: _s("propagationPolicy"),
    5: _ss("dryRun"),
}

_KINDS: dict[tuple[str, str], _Schema] = {
    ("v1", "Namespace"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m("spec", {1: _ss("finalizers")}),
    },
    ("v1", "ConfigMap"): {
        1: _META,
        2: _f("data", "map_str"),
        3: _f("binaryData", "map_bytes"),
        4: _ptr("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: _META,
        2: _f("data", "map_bytes"),
        3: _s("type"),
        4: _f("stringData", "map_str"),
        5: _ptr("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: _META,
        2: _m("secrets", _REFERENCE, repeated=True),
        3: _m("imagePullSecrets", {1: _s("name")}, repeated=True),
        4: _ptr("automountServiceAccountToken", "bool"),
    },
    ("v1", "Service"): {**_STATUS_IGNORED, 1: _META, 2: _m("spec", _SERVICE_SPEC)},
    # kubectl debug node/NAME creates its pod this way.
    ("v1", "Pod"): {**_STATUS_IGNORED, 1: _META, 2: _m("spec", _POD_SPEC)},
    ("v1", "ResourceQuota"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m("spec", {1: _f("hard", "map_quantity"), 2: _ss("scopes")}),
    },
    ("apps/v1", "Deployment"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m(
            "spec",
            {
                1: _ptr("replicas", "int"),
                2: _m("selector", _LABEL_SELECTOR),
                3: _m("template", _POD_TEMPLATE),
                4: _m(
                    "strategy",
                    {
                        1: _s("type"),
                        2: _m(
                            "rollingUpdate",
                            {1: _f("maxUnavailable", "intstr"), 2: _f("maxSurge", "intstr")},
                        ),
                    },
                ),
                5: _f("minReadySeconds", "int"),
                6: _ptr("revisionHistoryLimit", "int"),
                7: _f("paused", "bool"),
                9: _ptr("progressDeadlineSeconds", "int"),
            },
        ),
    },
    # kubectl autoscale
    ("autoscaling/v1", "HorizontalPodAutoscaler"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m(
            "spec",
            {
                1: _m("scaleTargetRef", {1: _s("kind"), 2: _s("name"), 3: _s("apiVersion")}),
                2: _ptr("minReplicas", "int"),
                3: _ptr("maxReplicas", "int"),  # no omitempty in JSON
                4: _ptr("targetCPUUtilizationPercentage", "int"),
            },
        ),
    },
    ("batch/v1", "Job"): {**_STATUS_IGNORED, 1: _META, 2: _m("spec", _JOB_SPEC)},
    ("batch/v1", "CronJob"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m(
            "spec",
            {
                1: _s("schedule"),
                2: _ptr("startingDeadlineSeconds", "int"),
                3: _s("concurrencyPolicy"),
                4: _ptr("suspend", "bool"),
                5: _m("jobTemplate", {1: _META, 2: _m("spec", _JOB_SPEC)}),
                6: _ptr("successfulJobsHistoryLimit", "int"),
                7: _ptr("failedJobsHistoryLimit", "int"),
                8: _s("timeZone"),
            },
        ),
    },
    ("rbac.authorization.k8s.io/v1", "Role"): {
        1: _META,
        2: _m("rules", _POLICY_RULE, repeated=True),
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {
        1: _META,
        2: _m("rules", _POLICY_RULE, repeated=True),
        3: _m("aggregationRule", {1: _m("clusterRoleSelectors", _LABEL_SELECTOR, repeated=True)}),
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _BINDING,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _BINDING,
    ("scheduling.k8s.io/v1", "PriorityClass"): {
        1: _META,
        2: _ptr("value", "int"),
        3: _f("globalDefault", "bool"),
        4: _s("description"),
        5: _s("preemptionPolicy"),
    },
    ("policy/v1", "PodDisruptionBudget"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m(
            "spec",
            {
                1: _ptr("minAvailable", "intstr"),
                2: _m("selector", _LABEL_SELECTOR),
                3: _ptr("maxUnavailable", "intstr"),
                4: _s("unhealthyPodEvictionPolicy"),
            },
        ),
    },
    ("authentication.k8s.io/v1", "SelfSubjectReview"): {_IGNORED: (2,), 1: _META},
    ("authentication.k8s.io/v1", "TokenReview"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m("spec", {1: _s("token"), 2: _ss("audiences")}),
    },
    ("authentication.k8s.io/v1", "TokenRequest"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m(
            "spec",
            {
                1: _ss("audiences"),
                3: _m(
                    "boundObjectRef",
                    {1: _s("kind"), 2: _s("apiVersion"), 3: _s("name"), 4: _s("uid")},
                ),
                4: _ptr("expirationSeconds", "int"),
            },
        ),
    },
    ("policy/v1", "Eviction"): {1: _META, 2: _m("deleteOptions", _DELETE_OPTIONS)},
    # kubectl certificate approve|deny: the whole object, to the approval subresource.
    ("certificates.k8s.io/v1", "CertificateSigningRequest"): {
        1: _META,
        2: _m(
            "spec",
            {
                _IGNORED: (6,),  # extra: recorded by the server on create, immutable after
                1: _f("request", "bytes"),
                2: _s("username"),
                3: _s("uid"),
                4: _ss("groups"),
                5: _ss("usages"),
                7: _s("signerName"),
                8: _ptr("expirationSeconds", "int"),
            },
        ),
        3: _m(
            "status",
            {
                1: _m(
                    "conditions",
                    {
                        1: _s("type"),
                        6: _s("status"),
                        2: _s("reason"),
                        3: _s("message"),
                        4: _f("lastUpdateTime", _TIME),
                        5: _f("lastTransitionTime", _TIME),
                    },
                    repeated=True,
                ),
                2: _f("certificate", "bytes"),
            },
        ),
    },
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m("spec", {1: _s("namespace")}),
    },
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {
        **_STATUS_IGNORED,
        1: _META,
        2: _m(
            "spec",
            {
                1: _m(
                    "resourceAttributes",
                    {
                        1: _s("namespace"),
                        2: _s("verb"),
                        3: _s("group"),
                        4: _s("version"),
                        5: _s("resource"),
                        6: _s("subresource"),
                        7: _s("name"),
                    },
                ),
                2: _m("nonResourceAttributes", {1: _s("path"), 2: _s("verb")}),
            },
        ),
    },
}


def supported_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) pairs whose protobuf bodies can be decoded."""
    return sorted(_KINDS)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for every field of one message, in order."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            value = data[pos : pos + length]
            pos += length
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if pos + size > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes) -> str | None:
    seconds = 0
    for number, wire, value in _fields(data):
        if number == 1 and wire == _VARINT:
            seconds = _signed(value)
    if seconds == 0:
        return None
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return times.rfc3339(moment)


def _int_or_string(data: bytes) -> int | str:
    """intstr.IntOrString {type=1 (0 int, 1 string), intVal=2, strVal=3}."""
    kind = int_value = 0
    str_value = ""
    for number, wire, value in _fields(data):
        if number == 1 and wire == _VARINT:
            kind = value
        elif number == 2 and wire == _VARINT:
            int_value = _signed(value)
        elif number == 3 and wire == _LEN:
            str_value = value.decode("utf-8")
    return str_value if kind == 1 else int_value


def _quantity(data: bytes) -> str:
    """resource.Quantity {string=1}."""
    for number, wire, value in _fields(data):
        if number == 1 and wire == _LEN:
            return str(value.decode("utf-8"))
    return "0"


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key = ""
    value = b""
    for number, wire, item in _fields(data):
        if wire != _LEN:
            continue
        if number == 1:
            key = item.decode("utf-8")
        elif number == 2:
            value = item
    return key, value


def _scalar(field: _Field, wire: int, value: Any) -> Any:
    kind = field.type
    if kind in ("string", "bytes") and wire == _LEN:
        return value.decode("utf-8") if kind == "string" else base64.b64encode(value).decode()
    if kind == "bool" and wire == _VARINT:
        return bool(value)
    if kind == "int" and wire == _VARINT:
        return _signed(value)
    if kind == _TIME and wire == _LEN:
        return _time(value)
    if kind == "intstr" and wire == _LEN:
        return _int_or_string(value)
    if kind == "message" and wire == _LEN:
        assert field.schema is not None
        return _message(value, field.schema)
    raise ProtobufError(f"field {field.name}: unexpected wire type {wire}")


def _is_zero(wire: int, value: Any) -> bool:
    """A zero scalar, or a message (possibly nested) holding only zero values."""
    if wire == _VARINT:
        return bool(value == 0)
    if wire in (_I64, _I32):
        return not any(value)
    if not value:
        return True
    try:
        return all(_is_zero(w, v) for _, w, v in _fields(value))
    except ProtobufError:
        return False  # not a message: a non-empty string or bytes


def _message(data: bytes, schema: _Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        field = schema.get(number)
        if field is None:
            if number in schema.get(_IGNORED, ()) or _is_zero(wire, value):
                # Deliberately ignored, or a zero value: Go's encoder writes every non-pointer
                # field (hostPID: false, healthCheckNodePort: 0, status: {}), and a zero
                # carries nothing that omitempty JSON would have kept.
                continue
            # Never drop data silently: a field this table does not know refuses the body.
            raise ProtobufError(f"protobuf field {number} is not supported yet")
        if field.type == _INLINE and wire == _LEN:
            # An embedded Go struct (json ",inline"): its fields are the parent's.
            assert field.schema is not None
            out.update(_message(value, field.schema))
            continue
        if field.type in ("map_str", "map_bytes", "map_quantity"):
            key, raw = _map_entry(value)
            entry: str
            if field.type == "map_str":
                entry = raw.decode("utf-8")
            elif field.type == "map_bytes":
                entry = base64.b64encode(raw).decode()
            else:
                entry = _quantity(raw)
            out.setdefault(field.name, {})[key] = entry
            continue
        decoded = _scalar(field, wire, value)
        if field.repeated:
            out.setdefault(field.name, []).append(decoded)
        elif field.keep_zero or decoded not in ("", 0, None, False):
            out[field.name] = decoded
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf-enveloped object of a supported kind, as the dict its JSON form decodes to."""
    if not body.startswith(ENVELOPE_MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf envelope")
    try:
        api_version = kind = ""
        raw = b""
        for number, wire, value in _fields(body[len(ENVELOPE_MAGIC) :]):
            if number == 1 and wire == _LEN:  # typeMeta {apiVersion=1, kind=2}
                for sub_number, sub_wire, sub_value in _fields(value):
                    if sub_wire == _LEN and sub_number == 1:
                        api_version = sub_value.decode("utf-8")
                    elif sub_wire == _LEN and sub_number == 2:
                        kind = sub_value.decode("utf-8")
            elif number == 2 and wire == _LEN:
                raw = value
        schema = _DELETE_OPTIONS if kind == "DeleteOptions" else _KINDS.get((api_version, kind))
        if schema is None:
            raise ProtobufError(
                f"protobuf bodies of kind {kind or '?'} ({api_version or '?'}) are not "
                "supported yet: send application/json"
            )
        obj = _message(raw, schema)
        obj.setdefault("metadata", {})
        return {"apiVersion": api_version, "kind": kind, **obj}
    except (UnicodeDecodeError, OverflowError, ValueError) as exc:
        if isinstance(exc, ProtobufError):
            raise
        raise ProtobufError(f"malformed protobuf body: {exc}") from exc
