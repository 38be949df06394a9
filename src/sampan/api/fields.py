"""Field selectors: parsing, matching, and the selectable fields of each kind.

``parse_field_selector`` follows upstream's grammar: comma-joined terms ``field=value``,
``field==value`` or ``field!=value``; in values ``\\``, ``,`` and ``=`` are escaped with a
backslash. Terms are kept sorted, so ``str()`` is canonical.

``check_supported(info, selector)`` checks a selector against the field labels a list/watch
of that resource accepts and raises ``SelectorError`` worded as kube-apiserver 1.32
(``field label not supported: foo``, or for kinds without their own table
``"foo" is not a known field selector: only "metadata.name", "metadata.namespace"``).
``field_set(info, obj)`` computes the values those labels have for one object, which
``FieldSelector.matches`` then tests. A field missing from the object reads as ``""``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sampan.api.labels import SelectorError
from sampan.api.resources import ResourceInfo

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "check_supported",
    "escape_value",
    "field_set",
    "parse_field_selector",
]

_META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    operator: str  # "=" (also for "==") or "!="
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        actual = fields.get(self.field, "")
        return actual == self.value if self.operator == "=" else actual != self.value

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_value(self.value)}"


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_value(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    in_slash = False
    for c in value:
        if in_slash:
            if c not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            in_slash = False
            continue
        if c == "\\":
            in_slash = True
        elif c in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {c}")
        else:
            out.append(c)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    start = 0
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse_field_selector(text: str) -> FieldSelector:
    """Parse a ``fieldSelector`` query string; raises ``SelectorError``."""
    if not text:
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for part in sorted(_split_terms(text)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        lhs, op, rhs = split
        reqs.append(
            FieldRequirement(
                field=lhs, operator="!=" if op == "!=" else "=", value=_unescape_value(rhs)
            )
        )
    return FieldSelector(requirements=tuple(reqs))


# --- per-kind tables -----------------------------------------------------------------------

_Getter = Callable[[Mapping[str, Any]], str]


def _path(*keys: str) -> _Getter:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for k in keys:
            if not isinstance(cur, Mapping):
                return ""
            cur = cur.get(k)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


def _bool_path(*keys: str) -> _Getter:
    plain = _path(*keys)

    def get(obj: Mapping[str, Any]) -> str:
        return plain(obj) or "false"

    return get


def _int_path(*keys: str) -> _Getter:
    plain = _path(*keys)

    def get(obj: Mapping[str, Any]) -> str:
        return plain(obj) or "0"

    return get


def _pod_ip(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    ips = status.get("podIPs") or []
    if ips and isinstance(ips[0], Mapping):
        return str(ips[0].get("ip", ""))
    return str(status.get("podIP") or "")


def _either(core: _Getter, events: _Getter) -> _Getter:
    """Read an Event field whichever shape the object has (core/v1 or events.k8s.io/v1)."""

    def get(obj: Mapping[str, Any]) -> str:
        if "regarding" in obj or "reportingController" in obj or "note" in obj:
            return events(obj)
        return core(obj)

    return get


def _event_source(obj: Mapping[str, Any]) -> str:
    return (
        _path("source", "component")(obj)
        or _path("deprecatedSource", "component")(obj)
        or _path("reportingComponent")(obj)
        or _path("reportingController")(obj)
    )


_INVOLVED_KEYS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_EVENT_GETTERS: dict[str, _Getter] = {
    **{
        f"involvedObject.{k}": _either(_path("involvedObject", k), _path("regarding", k))
        for k in _INVOLVED_KEYS
    },
    "reason": _path("reason"),
    "reportingComponent": _either(_path("reportingComponent"), _path("reportingController")),
    "source": _event_source,
    "type": _path("type"),
}
# events.k8s.io/v1 field labels and the (core) selectable field each one reads.
_EVENTS_V1_LABELS = {
    "reason": "reason",
    **{f"regarding.{k}": f"involvedObject.{k}" for k in _INVOLVED_KEYS},
    "reportingController": "reportingComponent",
    "source": "source",
    "type": "type",
    "metadata.namespace": "metadata.namespace",
    "metadata.name": "metadata.name",
}


@dataclass(frozen=True, slots=True)
class _KindFields:
    labels: tuple[str, ...]  # accepted labels, metadata ones included
    getters: Mapping[str, _Getter]  # kind-specific values by field-set key (metadata generic)
    error: str = "field label not supported: {label}"
    aliases: Mapping[str, str] | None = None  # old label -> current label


_KIND_FIELDS: dict[tuple[str, str], _KindFields] = {
    ("", "Pod"): _KindFields(
        labels=(
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        getters={
            "spec.nodeName": _path("spec", "nodeName"),
            "spec.restartPolicy": _path("spec", "restartPolicy"),
            "spec.schedulerName": _path("spec", "schedulerName"),
            "spec.serviceAccountName": _path("spec", "serviceAccountName"),
            "spec.hostNetwork": _bool_path("spec", "hostNetwork"),
            "status.phase": _path("status", "phase"),
            "status.podIP": _pod_ip,
            "status.nominatedNodeName": _path("status", "nominatedNodeName"),
        },
        aliases={"spec.host": "spec.nodeName"},
    ),
    ("", "Node"): _KindFields(
        labels=("metadata.name", "spec.unschedulable"),
        getters={"spec.unschedulable": _bool_path("spec", "unschedulable")},
    ),
    ("", "ReplicationController"): _KindFields(
        labels=("metadata.name", "metadata.namespace", "status.replicas"),
        getters={"status.replicas": _int_path("status", "replicas")},
    ),
    ("", "Event"): _KindFields(
        labels=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ),
        getters=_EVENT_GETTERS,
    ),
    ("events.k8s.io", "Event"): _KindFields(
        labels=tuple(_EVENTS_V1_LABELS),
        getters=_EVENT_GETTERS,
        aliases={k: v for k, v in _EVENTS_V1_LABELS.items() if k != v},
    ),
    ("", "Namespace"): _KindFields(
        labels=("status.phase", "metadata.name"),
        getters={"status.phase": _path("status", "phase")},
    ),
    ("", "Secret"): _KindFields(
        labels=("type", "metadata.namespace", "metadata.name"),
        getters={"type": _path("type")},
    ),
    ("", "Service"): _KindFields(
        labels=("metadata.namespace", "metadata.name", "spec.clusterIP", "spec.type"),
        getters={"spec.clusterIP": _path("spec", "clusterIP"), "spec.type": _path("spec", "type")},
    ),
    ("apps", "ReplicaSet"): _KindFields(
        labels=("metadata.name", "metadata.namespace", "status.replicas"),
        getters={"status.replicas": _int_path("status", "replicas")},
    ),
    ("apps", "StatefulSet"): _KindFields(
        labels=("metadata.name", "metadata.namespace", "status.successful"),
        getters={"status.successful": _int_path("status", "succeeded")},
        error="field label not supported for appsv1.StatefulSet: {label}",
    ),
    ("batch", "Job"): _KindFields(
        labels=("metadata.name", "metadata.namespace", "status.successful"),
        getters={"status.successful": _int_path("status", "succeeded")},
        error='field label "{label}" not supported for batchv1.Job',
    ),
    ("certificates.k8s.io", "CertificateSigningRequest"): _KindFields(
        labels=("metadata.name", "spec.signerName"),
        getters={"spec.signerName": _path("spec", "signerName")},
    ),
}


def _kind_fields(info: ResourceInfo) -> _KindFields | None:
    return _KIND_FIELDS.get((info.group, info.kind))


def check_supported(info: ResourceInfo, selector: FieldSelector) -> FieldSelector:
    """Validate (and normalise aliases such as ``spec.host``) a selector for this resource;
    raises ``SelectorError`` with kube-apiserver's message for an unsupported label."""
    kf = _kind_fields(info)
    out: list[FieldRequirement] = []
    for req in selector.requirements:
        label = req.field
        if kf is None:
            if label not in _META_FIELDS:
                raise SelectorError(
                    f'"{label}" is not a known field selector: '
                    f'only "metadata.name", "metadata.namespace"'
                )
        else:
            if kf.aliases and label in kf.aliases:
                label = kf.aliases[label]
            elif label not in kf.labels:
                raise SelectorError(kf.error.format(label=label))
        out.append(FieldRequirement(field=label, operator=req.operator, value=req.value))
    return FieldSelector(requirements=tuple(out))


def field_set(info: ResourceInfo, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable fields of one object (``metadata.namespace`` only when namespaced)."""
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": str(meta.get("name") or "")}
    if info.namespaced:
        fields["metadata.namespace"] = str(meta.get("namespace") or "")
    kf = _kind_fields(info)
    if kf is not None:
        for label, getter in kf.getters.items():
            fields[label] = getter(obj)
    return fields
