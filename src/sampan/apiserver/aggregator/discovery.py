"""Discovery across local and aggregated groups, ordered as kube-aggregator orders them.

* Group order: the highest ``groupPriorityMinimum`` among a group's APIServices first, then
  by name; version order inside a group: higher ``versionPriority`` first, then Kubernetes
  version order (GA > beta > alpha, higher numbers first).
* ``/apis`` (APIGroupList): the local groups plus every group-version an APIService with a
  ``spec.service`` names (whether or not its backend answers, as upstream lists them).
* Aggregated discovery (APIGroupDiscoveryList v2): the local items plus, per remote
  group-version, the resources from the backend's APIResourceList the availability check
  fetched last (``freshness: Stale`` once a later fetch failed; left out until one worked).

Pure functions over plain dicts; the controller owns the caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sampan.api.resources import builtin_group_priority, version_sort_key

__all__ = [
    "group_priorities",
    "merge_aggregated",
    "merge_group_list",
    "resource_list_to_version",
    "version_order",
]

JSONObj = dict[str, Any]


def _spec(apiservice: JSONObj) -> JSONObj:
    spec = apiservice.get("spec")
    return spec if isinstance(spec, dict) else {}


def group_priorities(apiservices: list[JSONObj]) -> dict[str, int]:
    priorities: dict[str, int] = {}
    for svc in apiservices:
        spec = _spec(svc)
        group = str(spec.get("group") or "")
        priority = int(spec.get("groupPriorityMinimum") or 0)
        priorities[group] = max(priorities.get(group, 0), priority)
    return priorities


def version_order(apiservices: list[JSONObj], group: str) -> list[str]:
    entries = [
        (int(_spec(s).get("versionPriority") or 0), str(_spec(s).get("version") or ""))
        for s in apiservices
        if str(_spec(s).get("group") or "") == group
    ]
    entries.sort(key=lambda e: (-e[0], version_sort_key(e[1])))
    return [v for _, v in entries]


def _sort_groups(groups: list[JSONObj], name_of: Any, priorities: Mapping[str, int]) -> None:
    def key(group: JSONObj) -> tuple[int, str]:
        name = name_of(group)
        return (-priorities.get(name, builtin_group_priority(name)), name)

    groups.sort(key=key)


def merge_group_list(
    local: JSONObj, remote: Mapping[str, list[str]], apiservices: list[JSONObj]
) -> JSONObj:
    """``local``: the registry's APIGroupList; ``remote``: group -> versions served by
    backends, in priority order."""
    groups = [dict(g) for g in local.get("groups") or []]
    by_name = {g["name"]: g for g in groups}
    for name, versions in remote.items():
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        existing = by_name.get(name)
        if existing is None:
            existing = {"name": name, "versions": [], "preferredVersion": entries[0]}
            groups.append(existing)
            by_name[name] = existing
        known = {e["version"] for e in existing["versions"]}
        existing["versions"] = existing["versions"] + [
            e for e in entries if e["version"] not in known
        ]
        order = version_order(apiservices, name)
        if order:
            rank = {v: i for i, v in enumerate(order)}
            existing["versions"].sort(key=lambda e: rank.get(e["version"], len(rank)))
            existing["preferredVersion"] = existing["versions"][0]
    _sort_groups(groups, lambda g: g["name"], group_priorities(apiservices))
    return {**local, "groups": groups}


def resource_list_to_version(resource_list: JSONObj, version: str, *, stale: bool) -> JSONObj:
    """An APIResourceList as an APIVersionDiscovery (subresources under their resource)."""
    group_version = str(resource_list.get("groupVersion") or "")
    group = group_version.rpartition("/")[0]
    resources: list[JSONObj] = []
    by_name: dict[str, JSONObj] = {}
    entries = [r for r in resource_list.get("resources") or [] if isinstance(r, dict)]
    for entry in entries:
        name = str(entry.get("name") or "")
        if not name or "/" in name:
            continue
        item: JSONObj = {
            "resource": name,
            "responseKind": {
                "group": entry.get("group", group),
                "version": entry.get("version", version),
                "kind": entry.get("kind", ""),
            },
            "scope": "Namespaced" if entry.get("namespaced") else "Cluster",
            "singularResource": entry.get("singularName") or "",
            "verbs": list(entry.get("verbs") or []),
        }
        for key in ("shortNames", "categories"):
            if entry.get(key):
                item[key] = list(entry[key])
        resources.append(item)
        by_name[name] = item
    for entry in entries:
        name = str(entry.get("name") or "")
        parent, _, sub = name.partition("/")
        if not sub or parent not in by_name:
            continue
        by_name[parent].setdefault("subresources", []).append(
            {
                "subresource": sub,
                "responseKind": {
                    "group": entry.get("group", group),
                    "version": entry.get("version", version),
                    "kind": entry.get("kind", ""),
                },
                "verbs": list(entry.get("verbs") or []),
            }
        )
    resources.sort(key=lambda r: r["resource"])
    return {
        "version": version,
        "resources": resources,
        "freshness": "Stale" if stale else "Current",
    }


def merge_aggregated(
    local: JSONObj,
    remote: Mapping[str, list[JSONObj]],
    apiservices: list[JSONObj],
) -> JSONObj:
    """``remote``: group -> APIVersionDiscovery entries fetched from backends."""
    items = [dict(i) for i in local.get("items") or []]
    by_name = {str((i.get("metadata") or {}).get("name") or ""): i for i in items}
    for name, versions in remote.items():
        if not versions:
            continue
        existing = by_name.get(name)
        if existing is None:
            existing = {"metadata": {"name": name, "creationTimestamp": None}, "versions": []}
            items.append(existing)
            by_name[name] = existing
        known = {v["version"] for v in existing["versions"]}
        existing["versions"] = existing["versions"] + [
            v for v in versions if v["version"] not in known
        ]
        order = version_order(apiservices, name)
        rank = {v: i for i, v in enumerate(order)}
        existing["versions"].sort(key=lambda v: rank.get(v["version"], len(rank)))
    priorities = group_priorities(apiservices)
    _sort_groups(items, lambda i: str((i.get("metadata") or {}).get("name") or ""), priorities)
    return {**local, "items": items}
