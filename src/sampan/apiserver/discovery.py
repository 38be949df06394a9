"""Discovery documents and /version.

Owns the legacy (unaggregated) discovery API, built from the ResourceRegistry on every call
(the registry may change when CRDs arrive later, and building is cheap):

* ``/api`` -> APIVersions (with serverAddressByClientCIDRs),
* ``/apis`` -> APIGroupList in the registry's (upstream) group order,
* ``/apis/<g>`` -> APIGroup, ``/api/v1`` and ``/apis/<g>/<v>`` -> APIResourceList with
  subresources listed as ``<resource>/<sub>`` entries.

Aggregated discovery (apidiscovery.k8s.io/v2, what kubectl 1.32 asks for first on ``/api``
and ``/apis``): ``aggregated_media_type(accept)`` says whether the client accepts it (the
response then carries that media type as its Content-Type) and ``aggregated_discovery``
builds the APIGroupDiscoveryList (every group, version and resource in one document, so a
kubectl command makes two discovery requests instead of one per group-version). Clients that
do not ask for it get the legacy documents. ``aggregated_caching_headers`` gives that answer
kube-apiserver's validators (ETag: the SHA-512 of the document, ``Vary: Accept``,
``Cache-Control: public``), and ``not_modified`` says when an ``If-None-Match`` naming the
same ETag gets a 304 instead (kubectl's HTTP cache revalidates discovery that way once its
on-disk copy has expired).
"""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
from typing import Any

from sampan.version import KUBERNETES_MAJOR, KUBERNETES_MINOR, KUBERNETES_VERSION, __version__

__all__ = [
    "AGGREGATED_V2",
    "aggregated_caching_headers",
    "aggregated_discovery",
    "aggregated_media_type",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "not_modified",
    "storage_version_hash",
    "version_info",
]

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
BUILD_DATE = "1970-01-01T00:00:00Z"
"""Reported as buildDate; Sampan is not built from a Go tree, so there is no real one."""


def storage_version_hash(group: str, version: str, kind: str) -> str:
    """A stable opaque hash of the storage version, as discovery's storageVersionHash."""
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_dict(group: Any) -> dict[str, Any]:
    versions = [{"groupVersion": f"{group.name}/{v}", "version": v} for v in group.versions]
    preferred = group.preferred_version
    return {
        "name": group.name,
        "versions": versions,
        "preferredVersion": {"groupVersion": f"{group.name}/{preferred}", "version": preferred},
    }


def api_group_list(registry: Any) -> dict[str, Any]:
    groups = [_group_dict(g) for g in registry.groups() if g.name]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Any, name: str) -> dict[str, Any] | None:
    for group in registry.groups():
        if group.name == name and name:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_dict(group)}
    return None


def api_resource_list(registry: Any, group: str, version: str) -> dict[str, Any] | None:
    infos = registry.resources_for(group, version)
    if not infos:
        return None
    resources: list[dict[str, Any]] = []
    for info in sorted(infos, key=lambda i: i.plural):
        storage_group, _, storage_version = info.storage_version.rpartition("/")
        entry: dict[str, Any] = {
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": list(info.verbs),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        if info.stored:
            entry["storageVersionHash"] = storage_version_hash(
                storage_group, storage_version, info.kind
            )
        resources.append(entry)
        for sub in sorted(info.subresources, key=lambda s: s.name):
            sub_entry: dict[str, Any] = {
                "name": f"{info.plural}/{sub.name}",
                "singularName": "",
                "namespaced": info.namespaced,
            }
            if sub.version:
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            sub_entry["kind"] = sub.kind
            sub_entry["verbs"] = list(sub.verbs)
            resources.append(sub_entry)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def version_info() -> dict[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": f"{KUBERNETES_VERSION}+sampan{__version__}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": BUILD_DATE,
        "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}."
        f"{sys.version_info.micro}",
        "compiler": sys.implementation.name,
        "platform": f"{sys.platform}/{arch}",
    }


def aggregated_media_type(accept: str) -> str | None:
    """The aggregated media type to answer with, or None for the legacy documents."""
    for entry in accept.split(","):
        params = {}
        parts = [p.strip() for p in entry.split(";")]
        if parts[0] not in ("application/json", "*/*"):
            continue
        for part in parts[1:]:
            key, _, value = part.partition("=")
            params[key.strip()] = value.strip()
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("v") == "v2"
            and params.get("as") == "APIGroupDiscoveryList"
        ):
            return AGGREGATED_V2
    return None


def _resource_discovery(info: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    subresources = []
    for sub in sorted(info.subresources, key=lambda s: s.name):
        subresources.append(
            {
                "subresource": sub.name,
                "responseKind": {
                    "group": sub.group if sub.version else info.group,
                    "version": sub.version or info.version,
                    "kind": sub.kind,
                },
                "verbs": list(sub.verbs),
            }
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def _version_discovery(registry: Any, group: str, version: str) -> dict[str, Any] | None:
    infos = registry.resources_for(group, version)
    if not infos:
        return None
    return {
        "version": version,
        "resources": [_resource_discovery(i) for i in sorted(infos, key=lambda i: i.plural)],
        "freshness": "Current",
    }


def aggregated_discovery(registry: Any, *, legacy: bool) -> dict[str, Any]:
    """APIGroupDiscoveryList for ``/api`` (legacy=True: the core group) or ``/apis``."""
    items: list[dict[str, Any]] = []
    if legacy:
        core = _version_discovery(registry, "", "v1")
        if core is not None:
            items.append({"metadata": {"creationTimestamp": None}, "versions": [core]})
    else:
        for group in registry.groups():
            if not group.name:
                continue
            # The preferred version first, as kube-apiserver orders them.
            ordered = [group.preferred_version] + [
                v for v in group.versions if v != group.preferred_version
            ]
            versions = [
                d for d in (_version_discovery(registry, group.name, v) for v in ordered) if d
            ]
            if versions:
                items.append(
                    {
                        "metadata": {"name": group.name, "creationTimestamp": None},
                        "versions": versions,
                    }
                )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def aggregated_caching_headers(body: bytes) -> dict[str, str]:
    """Headers of an aggregated discovery answer whose JSON is ``body``."""
    etag = hashlib.sha512(body).hexdigest().upper()
    return {"ETag": f'"{etag}"', "Vary": "Accept", "Cache-Control": "public"}


def not_modified(headers: dict[str, str], if_none_match: str | None) -> bool:
    """Whether the request's ``If-None-Match`` is exactly the answer's quoted ETag (the
    aggregated discovery handler compares the whole header, without a list or ``*``)."""
    return if_none_match is not None and if_none_match == headers["ETag"]
