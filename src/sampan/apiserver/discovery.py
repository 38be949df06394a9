"""Discovery documents and /version.

Owns the legacy (unaggregated) discovery API, built from the ResourceRegistry on every call
(the registry may change when CRDs arrive later, and building is cheap):

* ``/api`` -> APIVersions (with serverAddressByClientCIDRs),
* ``/apis`` -> APIGroupList in the registry's (upstream) group order,
* ``/apis/<g>`` -> APIGroup, ``/api/v1`` and ``/apis/<g>/<v>`` -> APIResourceList with
  subresources listed as ``<resource>/<sub>`` entries.

Clients asking for aggregated discovery (apidiscovery.k8s.io/v2) get these plain documents
with ``Content-Type: application/json``; kubectl and client-go fall back to the legacy form
when the response does not claim the aggregated one.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
from typing import Any

from sampan.version import KUBERNETES_MAJOR, KUBERNETES_MINOR, KUBERNETES_VERSION, __version__

__all__ = [
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "storage_version_hash",
    "version_info",
]

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
