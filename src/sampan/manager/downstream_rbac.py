"""Downstream RBAC from the manager's bindings, as Rancher writes it: what a manager user may
do on a cluster is decided by that cluster's own RBAC, for the user id the proxy impersonates.

For one cluster, ``reconcile(client, dialer, cluster_id)`` makes the downstream hold exactly:

* for each RoleTemplate used by a ClusterRoleTemplateBinding on the cluster (except
  ``cluster-owner``, which is the built-in ``cluster-admin``): ClusterRole
  ``sampan-rt-<template>`` with the template's rules;
* for each such binding: ClusterRoleBinding ``sampan-crtb-<binding>`` of the user id to that
  ClusterRole (``cluster-admin`` for ``cluster-owner``);
* for each user with the global role ``admin``: ClusterRoleBinding ``sampan-admin-<user id>``
  to ``cluster-admin`` (manager admins reach every cluster, as Rancher's).

Every object it writes carries the label ``management.sampan.io/managed=true``; managed
objects nothing asks for any more (a deleted binding, an unused template) are deleted, and
objects without the label are never touched. It talks to the downstream through the dialer
(``sampan.manager.proxy.downstream_request``), as the dialer's own identity, so it works the
same for ``local`` and for tunnelled clusters. A cluster that is not connected is skipped
(``ClusterNotConnected`` propagates to the caller, which retries later).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from sampan.client import Client
from sampan.manager.crds import (
    ADMIN_ROLE,
    CLUSTER_ROLE_TEMPLATE_BINDINGS,
    GLOBAL_ROLE_BINDINGS,
    GROUP,
    ROLE_TEMPLATES,
)
from sampan.manager.proxy import ClusterDialer, DownstreamError, downstream_request

__all__ = ["MANAGED_LABEL", "desired_objects", "reconcile"]

MANAGED_LABEL = f"{GROUP}/managed"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
OWNER_TEMPLATE = "cluster-owner"
CLUSTER_ADMIN = "cluster-admin"


def _meta(name: str, extra: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "labels": {MANAGED_LABEL: "true", **extra}}


def _binding(name: str, role: str, user_id: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(name, extra),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user_id}],
    }


def desired_objects(
    cluster_id: str,
    crtbs: list[dict[str, Any]],
    grbs: list[dict[str, Any]],
    templates: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(ClusterRoles by name, ClusterRoleBindings by name) the cluster must hold."""
    roles: dict[str, dict[str, Any]] = {}
    bindings: dict[str, dict[str, Any]] = {}
    for crtb in crtbs:
        spec = crtb.get("spec", {})
        if spec.get("clusterName") != cluster_id:
            continue
        template_name = str(spec.get("roleTemplateName", ""))
        user_id = str(spec.get("userId", ""))
        template = templates.get(template_name)
        if template is None or not user_id:
            continue  # a binding to a template that is gone grants nothing
        if template_name == OWNER_TEMPLATE:
            role = CLUSTER_ADMIN
        else:
            role = f"sampan-rt-{template_name}"
            roles[role] = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(role, {f"{GROUP}/role-template": template_name}),
                "rules": template.get("spec", {}).get("rules", []),
            }
        name = f"sampan-crtb-{crtb['metadata']['name']}"
        bindings[name] = _binding(name, role, user_id, {f"{GROUP}/crtb": crtb["metadata"]["name"]})
    for grb in grbs:
        spec = grb.get("spec", {})
        user_id = str(spec.get("userId", ""))
        if spec.get("globalRoleName") == ADMIN_ROLE and user_id:
            name = f"sampan-admin-{user_id}"
            bindings[name] = _binding(name, CLUSTER_ADMIN, user_id, {})
    return roles, bindings


async def _call(
    dialer: ClusterDialer, cluster_id: str, method: str, path: str, body: Any = None
) -> Any:
    status, answer = await downstream_request(dialer, cluster_id, method, path, body)
    if status == 404 and method == "DELETE":
        return None
    if not 200 <= status < 300:
        message = (answer or {}).get("message", "") if isinstance(answer, dict) else ""
        raise DownstreamError(f"cluster {cluster_id}: {method} {path}: {status} {message}")
    return answer


async def _sync(
    dialer: ClusterDialer, cluster_id: str, plural: str, desired: dict[str, dict[str, Any]]
) -> None:
    selector = urllib.parse.quote(f"{MANAGED_LABEL}=true")
    existing = await _call(dialer, cluster_id, "GET", f"{RBAC}/{plural}?labelSelector={selector}")
    have = {o["metadata"]["name"]: o for o in (existing or {}).get("items", [])}
    for name, body in desired.items():
        current = have.get(name)
        if current is None:
            await _call(dialer, cluster_id, "POST", f"{RBAC}/{plural}", body)
            continue
        fields = ("rules",) if plural == "clusterroles" else ("roleRef", "subjects")
        if all(current.get(f) == body.get(f) for f in fields):
            continue
        if plural == "clusterrolebindings" and current.get("roleRef") != body["roleRef"]:
            # roleRef is immutable: replace the binding.
            await _call(dialer, cluster_id, "DELETE", f"{RBAC}/{plural}/{name}")
            await _call(dialer, cluster_id, "POST", f"{RBAC}/{plural}", body)
            continue
        replacement = {**body, "metadata": {**current["metadata"], **body["metadata"]}}
        await _call(dialer, cluster_id, "PUT", f"{RBAC}/{plural}/{name}", replacement)
    for name in have.keys() - desired.keys():
        await _call(dialer, cluster_id, "DELETE", f"{RBAC}/{plural}/{name}")


RbacInputs = tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]]
"""ClusterRoleTemplateBindings, GlobalRoleBindings, RoleTemplates by name."""


async def reconcile(
    client: Client, dialer: ClusterDialer, cluster_id: str, inputs: RbacInputs | None = None
) -> None:
    """Bring one cluster's managed RBAC in line with the bindings (see the module docstring):
    ``inputs`` (from the manager's caches), else read from the local API. Raises
    ``ClusterNotConnected``, ``DownstreamError`` or the local client's errors."""
    if inputs is not None:
        crtbs, grbs, templates = inputs
    else:
        crtbs = (await client.list_all(CLUSTER_ROLE_TEMPLATE_BINDINGS)).get("items", [])
        grbs = (await client.list_all(GLOBAL_ROLE_BINDINGS)).get("items", [])
        templates = {
            t["metadata"]["name"]: t
            for t in (await client.list_all(ROLE_TEMPLATES)).get("items", [])
        }
    roles, bindings = desired_objects(cluster_id, crtbs, grbs, templates)
    # Roles first so a new binding never points at a missing role (a binding whose role was
    # just pruned grants nothing until it is pruned too).
    await _sync(dialer, cluster_id, "clusterroles", roles)
    await _sync(dialer, cluster_id, "clusterrolebindings", bindings)
