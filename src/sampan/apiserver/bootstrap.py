"""Objects the API server ensures at every start (kube-apiserver's bootstrap post-start hooks).

Owns: the four system namespaces, the bootstrap RBAC policy (created when absent; existing
objects are left as the administrator may have changed them, but for the few Sampan narrowed:
``auth/bootstrap.NARROWED_POLICY``), and the ``kubernetes`` Service in
``default`` with its Endpoints pointing at this server (so ``kubectl cluster-info`` and
in-cluster clients find the API). The distribution's own objects (the kube-dns Service, ...)
are not here: the server applies them as packaged manifests (``sampan.addons``).

Invariant: idempotent — running it again on a populated datastore changes nothing except the
Endpoints when the advertised address or port moved.
"""

from __future__ import annotations

import logging
from typing import Any

from sampan.api.errors import AlreadyExists, NotFound
from sampan.apiserver.admission import IMMORTAL_NAMESPACES
from sampan.apiserver.auth.bootstrap import (
    NARROWED_POLICY,
    bootstrap_namespaced_policy,
    bootstrap_policy,
)

__all__ = ["ensure_bootstrap_objects", "kubernetes_endpoints", "kubernetes_service"]

log = logging.getLogger(__name__)

_NAMESPACE_ORDER = ("default", "kube-system", "kube-public", "kube-node-lease")
SERVICE_NAME = "kubernetes"
SERVICE_PORT = 443


def kubernetes_service(service_ip: str, target_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE_NAME,
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": service_ip,
            "clusterIPs": [service_ip],
            "ports": [
                {
                    "name": "https",
                    "port": SERVICE_PORT,
                    "protocol": "TCP",
                    "targetPort": target_port,
                }
            ],
            "sessionAffinity": "None",
        },
    }


def _subsets(address: str, port: int) -> list[dict[str, Any]]:
    return [
        {
            "addresses": [{"ip": address}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
    ]


def kubernetes_endpoints(address: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": SERVICE_NAME,
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": _subsets(address, port),
    }


async def _create_if_absent(store: Any, obj: dict[str, Any]) -> bool:
    try:
        await store.create(obj)
    except AlreadyExists:
        return False
    return True


AUTOUPDATE_ANNOTATION = "rbac.authorization.kubernetes.io/autoupdate"


def _missing(current: list[Any], wanted: list[Any]) -> list[Any]:
    return [item for item in wanted if item not in current]


async def _reconcile_policy(store: Any, wanted: dict[str, Any]) -> bool:
    """Like kube-apiserver's RBAC reconciliation: an existing bootstrap object still marked
    ``autoupdate: "true"`` gains the rules (roles) or subjects (bindings) it lacks; nothing
    an administrator added is removed, and ``autoupdate: "false"`` opts out."""
    name = wanted["metadata"]["name"]
    namespace = wanted["metadata"].get("namespace")
    current = await store.get(namespace, name)
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    if annotations.get(AUTOUPDATE_ANNOTATION, "true") != "true":
        return False
    field = "subjects" if wanted["kind"].endswith("Binding") else "rules"
    if (wanted["kind"], name) in NARROWED_POLICY:
        if (current.get(field) or []) == (wanted.get(field) or []):
            return False

        def narrow(obj: dict[str, Any]) -> dict[str, Any]:
            obj[field] = list(wanted.get(field) or [])
            return obj

        await store.guaranteed_update(namespace, name, narrow)
        log.info("bootstrap RBAC: %s %s narrowed to its defaults", wanted["kind"], name)
        return True
    if not _missing(current.get(field) or [], wanted.get(field) or []):
        return False

    def add_missing(obj: dict[str, Any]) -> dict[str, Any]:
        have = obj.get(field) or []
        obj[field] = have + _missing(have, wanted.get(field) or [])
        return obj

    await store.guaranteed_update(namespace, name, add_missing)
    return True


async def _retarget_service(services: Any, port: int) -> None:
    """After a restart on another port, the Service's targetPort follows the server."""
    current = await services.get("default", SERVICE_NAME)
    ports = (current.get("spec") or {}).get("ports") or []
    if ports and all(p.get("targetPort") == port for p in ports if p.get("name") == "https"):
        return

    def retarget(obj: dict[str, Any]) -> dict[str, Any]:
        spec = obj.setdefault("spec", {})
        spec["ports"] = [
            {**p, "targetPort": port} if p.get("name") == "https" else p
            for p in spec.get("ports") or []
        ]
        return obj

    await services.guaranteed_update("default", SERVICE_NAME, retarget)
    log.info("kubernetes service now targets port %d", port)


async def ensure_bootstrap_objects(
    storage: Any,
    registry: Any,
    *,
    service_ip: str,
    advertise_address: str,
    port: int,
) -> None:
    assert set(_NAMESPACE_ORDER) == IMMORTAL_NAMESPACES
    namespaces = storage.for_resource(registry.by_resource("", "v1", "namespaces"))
    created_namespaces = [
        name
        for name in _NAMESPACE_ORDER
        if await _create_if_absent(
            namespaces, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    ]
    if created_namespaces:
        log.info("created namespaces %s", ", ".join(created_namespaces))

    created = reconciled = 0
    # The kube-system Roles and RoleBindings add-ons bind to come after the namespaces.
    for obj in (*bootstrap_policy(), *bootstrap_namespaced_policy()):
        group = obj["apiVersion"].rpartition("/")[0]
        info = registry.by_kind(obj["apiVersion"], obj["kind"])
        if info is None:
            log.warning("bootstrap policy kind %s/%s is not served", group, obj["kind"])
            continue
        store = storage.for_resource(info)
        if await _create_if_absent(store, dict(obj)):
            created += 1
        elif await _reconcile_policy(store, obj):
            reconciled += 1
    if created or reconciled:
        log.info("bootstrap RBAC: %d objects created, %d reconciled", created, reconciled)

    services = storage.for_resource(registry.by_resource("", "v1", "services"))
    if not await _create_if_absent(services, kubernetes_service(service_ip, port)):
        await _retarget_service(services, port)
    endpoints = storage.for_resource(registry.by_resource("", "v1", "endpoints"))
    if not await _create_if_absent(endpoints, kubernetes_endpoints(advertise_address, port)):
        wanted = _subsets(advertise_address, port)

        def point_here(current: dict[str, Any]) -> dict[str, Any]:
            updated = dict(current)
            updated["subsets"] = wanted
            return updated

        try:
            current = await endpoints.get("default", SERVICE_NAME)
            if current.get("subsets") != wanted:
                await endpoints.guaranteed_update("default", SERVICE_NAME, point_here)
                log.info("kubernetes endpoints now %s:%d", advertise_address, port)
        except NotFound:
            await _create_if_absent(endpoints, kubernetes_endpoints(advertise_address, port))
