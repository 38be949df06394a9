"""What a CustomResourceDefinition means to the server: its served versions as ``ResourceInfo``
plus the per-version facts the request path needs (schema, printer columns, subresources).

``served_versions(crd)`` is a pure function of the CRD object; the controller registers its
result in the ResourceRegistry and in ``CustomResources`` (the handler-facing index).

``ServedVersion.read_defaults`` is the storage version's schema when it declares any
``default``: kube-apiserver defaults every object it reads from storage with that schema (so
a default on ``.status`` shows right after a create whose status was dropped, and a default
added to the CRD later shows on old objects), and the renderer does the same.

Invariants: a custom resource is stored under ``/registry/<group>/<plural>/`` in its CRD's
storage version (upstream's layout); every served version shares that storage. The ``None``
conversion between versions is a change of ``apiVersion`` only; with ``Webhook`` each
version carries the CRD's ``spec.conversion.webhook`` (see ``crd.conversion``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sampan.api.resources import VERBS_ALL, ResourceInfo, SubresourceInfo, version_sort_key

__all__ = [
    "CRD_FINALIZER",
    "ScalePaths",
    "ServedVersion",
    "accepted_names",
    "crd_names",
    "served_versions",
    "storage_version_name",
]

CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
"""The finalizer that makes deleting a CRD delete its objects first (upstream's name)."""

_STATUS_VERBS = ("get", "patch", "update")


@dataclass(frozen=True, slots=True)
class ScalePaths:
    """A version's ``subresources.scale``: JSON paths like ``.spec.replicas``."""

    spec_replicas: str
    status_replicas: str
    label_selector: str = ""


@dataclass(frozen=True)
class ServedVersion:
    info: ResourceInfo
    schema: dict[str, Any] | None
    columns: tuple[dict[str, Any], ...]
    scale: ScalePaths | None
    crd_name: str
    preserve_unknown_fields: bool = False
    deprecation_warning: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    conversion_webhook: dict[str, Any] | None = None
    """``spec.conversion.webhook`` when the strategy is ``Webhook`` (None: apiVersion only)."""
    read_defaults: dict[str, Any] | None = None

    @property
    def has_status(self) -> bool:
        return self.info.has_status


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def crd_names(crd: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.names`` with upstream's defaults (singular = lowercase kind, listKind)."""
    names = dict(_d(_d(crd.get("spec")).get("names")))
    kind = str(names.get("kind") or "")
    names.setdefault("singular", kind.lower())
    if not names.get("singular"):
        names["singular"] = kind.lower()
    if not names.get("listKind"):
        names["listKind"] = f"{kind}List"
    return names


def accepted_names(crd: Mapping[str, Any]) -> dict[str, Any]:
    """``status.acceptedNames`` as upstream writes it (empty lists omitted)."""
    names = crd_names(crd)
    out: dict[str, Any] = {"plural": names.get("plural", ""), "singular": names["singular"]}
    if names.get("shortNames"):
        out["shortNames"] = list(names["shortNames"])
    out["kind"] = names.get("kind", "")
    out["listKind"] = names["listKind"]
    if names.get("categories"):
        out["categories"] = list(names["categories"])
    return out


def storage_version_name(crd: Mapping[str, Any]) -> str:
    for version in _d(crd.get("spec")).get("versions") or []:
        if _d(version).get("storage"):
            return str(version.get("name") or "")
    return ""


def _scale(subresources: Mapping[str, Any]) -> ScalePaths | None:
    scale = subresources.get("scale")
    if not isinstance(scale, dict):
        return None
    return ScalePaths(
        spec_replicas=str(scale.get("specReplicasPath") or ".spec.replicas"),
        status_replicas=str(scale.get("statusReplicasPath") or ".status.replicas"),
        label_selector=str(scale.get("labelSelectorPath") or ""),
    )


def _default_deprecation(spec: Mapping[str, Any], group: str, version: str, kind: str) -> str:
    """Upstream's default warning: the deprecated version, and the preferred served version
    that is not deprecated (when there is one) to use instead."""
    others = [
        str(v.get("name"))
        for v in spec.get("versions") or []
        if isinstance(v, dict) and v.get("served") and not v.get("deprecated") and v.get("name")
    ]
    warning = f"{group}/{version} {kind} is deprecated"
    if others:
        preferred = sorted(others, key=version_sort_key)[0]
        warning += f"; use {group}/{preferred} {kind}"
    return warning


def _has_default(node: Any) -> bool:
    if isinstance(node, dict):
        return "default" in node or any(_has_default(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_default(v) for v in node)
    return False


def _storage_defaults(spec: Mapping[str, Any], storage: str) -> dict[str, Any] | None:
    """The storage version's schema if it declares defaults (served or not), else None."""
    for version in spec.get("versions") or []:
        version = _d(version)
        if version.get("name") == storage:
            schema = _d(version.get("schema")).get("openAPIV3Schema")
            if isinstance(schema, dict) and _has_default(schema.get("properties")):
                return schema
    return None


def served_versions(crd: Mapping[str, Any]) -> list[ServedVersion]:
    """Every served version of ``crd`` (none when its names or versions are unusable)."""
    spec = _d(crd.get("spec"))
    names = crd_names(crd)
    group = str(spec.get("group") or "")
    plural = str(names.get("plural") or "")
    kind = str(names.get("kind") or "")
    storage = storage_version_name(crd)
    if not (group and plural and kind and storage):
        return []
    namespaced = spec.get("scope", "Namespaced") != "Cluster"
    crd_name = str(_d(crd.get("metadata")).get("name") or "")
    conversion = _d(spec.get("conversion"))
    webhook = (
        copy.deepcopy(_d(conversion.get("webhook")))
        if conversion.get("strategy") == "Webhook"
        else None
    )
    out: list[ServedVersion] = []
    read_defaults = _storage_defaults(spec, storage)
    for version in spec.get("versions") or []:
        version = _d(version)
        if not version.get("served"):
            continue
        name = str(version.get("name") or "")
        if not name:
            continue
        subresources = _d(version.get("subresources"))
        subs: list[SubresourceInfo] = []
        has_status = isinstance(subresources.get("status"), dict)
        if has_status:
            subs.append(SubresourceInfo(name="status", kind=kind, verbs=_STATUS_VERBS))
        scale = _scale(subresources)
        if scale is not None:
            subs.append(
                SubresourceInfo(
                    name="scale",
                    kind="Scale",
                    verbs=_STATUS_VERBS,
                    group="autoscaling",
                    version="v1",
                )
            )
        info = ResourceInfo(
            group=group,
            version=name,
            kind=kind,
            plural=plural,
            singular=str(names["singular"]),
            namespaced=namespaced,
            verbs=VERBS_ALL,
            short_names=tuple(str(s) for s in names.get("shortNames") or ()),
            categories=tuple(str(c) for c in names.get("categories") or ()),
            subresources=tuple(subs),
            tracks_generation=True,
            has_status=has_status,
            storage_resource=f"{group}/{plural}",
            storage_version=f"{group}/{storage}",
        )
        schema = _d(version.get("schema")).get("openAPIV3Schema")
        warning = ""
        if version.get("deprecated"):
            warning = str(version.get("deprecationWarning") or "") or _default_deprecation(
                spec, group, name, kind
            )
        out.append(
            ServedVersion(
                info=info,
                schema=schema if isinstance(schema, dict) else None,
                columns=tuple(
                    _d(c)
                    for c in version.get("additionalPrinterColumns") or []
                    if isinstance(c, dict)
                ),
                scale=scale,
                crd_name=crd_name,
                preserve_unknown_fields=bool(spec.get("preserveUnknownFields")),
                deprecation_warning=warning,
                conversion_webhook=webhook,
                read_defaults=read_defaults,
            )
        )
    return out
