"""The API server's admission runtime: builds the plugin chain in kube-apiserver's order, the
Service allocators and their repair loop, the built-in PriorityClasses, and the computed
subresources (TokenRequest, Eviction) the handlers dispatch to.

``Admission(storage, registry, backend, ...)`` is built after the storage layer started;
``start()`` (after the bootstrap objects exist, before the server reports ready) creates the
system PriorityClasses, repairs the Service allocations once and starts the periodic repair;
``stop()`` ends it. ``chain`` is what handlers admit with; ``subresource_handlers`` maps
``(group, plural, subresource)`` to a handler coroutine.

Plugin order (kube-apiserver's recommended order, for the plugins Sampan has):
NamespaceLifecycle, RBACEscalation (upstream checks it in the RBAC REST storage, after
mutating and before validating admission), LimitRanger, ServiceAccount, NodeRestriction,
Priority, DefaultTolerationSeconds, PodSecurity, DefaultStorageClass,
StorageObjectInUseProtection, DefaultIngressClass, ServiceAllocation (upstream does this in
the Service REST storage), ResourceQuota. Mutating ones run before validating ones (the
chain's rule).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sampan.apiserver.admission.allocator import (
    DEFAULT_LEAK_GRACE_S,
    DEFAULT_NODE_PORT_RANGE,
    ip_range,
    port_range,
)
from sampan.apiserver.admission.chain import AdmissionChain, AdmissionPlugin
from sampan.apiserver.admission.namespace import IMMORTAL_NAMESPACES, NamespaceLifecycle
from sampan.apiserver.admission.network import DefaultIngressClass
from sampan.apiserver.admission.noderestriction import NodeRestriction
from sampan.apiserver.admission.pods import (
    DEFAULT_SERVICE_ACCOUNT,
    SYSTEM_PRIORITY_CLASSES,
    DefaultTolerationSeconds,
    PriorityAdmission,
    ServiceAccountAdmission,
)
from sampan.apiserver.admission.podsecurity import PodSecurity
from sampan.apiserver.admission.quota import LimitRanger, QuotaRecalculator, ResourceQuota
from sampan.apiserver.admission.services import (
    DEFAULT_REPAIR_INTERVAL_S,
    ServiceAllocation,
    ServiceAllocationRepair,
)
from sampan.apiserver.admission.storage import DefaultStorageClass, StorageObjectInUseProtection
from sampan.apiserver.admission.subresources import EvictionHandler, TokenRequestHandler
from sampan.apiserver.auth.escalation import Authorize, RBACEscalation, ResolveRules
from sampan.apiserver.errors import AlreadyExists, NotFound

__all__ = ["Admission", "SubresourceHandler"]

log = logging.getLogger(__name__)

SubresourceHandler = Callable[..., Awaitable[Any]]


class Admission:
    """See the module docstring."""

    def __init__(
        self,
        storage: Any,
        registry: Any,
        backend: Any,
        *,
        authorize: Authorize,
        resolve_rules: ResolveRules,
        service_cidr: str,
        node_port_range: str = DEFAULT_NODE_PORT_RANGE,
        token_issuer: Any = None,
        api_audiences: tuple[str, ...] = (),
        delete_options_type: Any = None,
        repair_interval_s: float = DEFAULT_REPAIR_INTERVAL_S,
        leak_grace_s: float = DEFAULT_LEAK_GRACE_S,
        extra_plugins: tuple[AdmissionPlugin, ...] = (),
    ) -> None:
        self._storage = storage
        self._registry = registry
        self.ips = ip_range(backend, service_cidr, leak_grace_s=leak_grace_s)
        self.node_ports = port_range(backend, node_port_range, leak_grace_s=leak_grace_s)
        services = self._store("", "services")

        async def get_service(namespace: str, name: str) -> dict[str, Any] | None:
            return await self.get("", "services", namespace, name)

        async def list_services() -> list[dict[str, Any]]:
            page = await services.list(None)
            return [json.loads(item) for item in page.items]

        self.repair = ServiceAllocationRepair(
            self.ips, self.node_ports, list_services, interval_s=repair_interval_s
        )

        async def get_namespace(name: str) -> dict[str, Any] | None:
            return await self.get("", "namespaces", "", name)

        self.quota_recalculator = QuotaRecalculator(self._store("", "resourcequotas"), self.cached)
        plugins: list[AdmissionPlugin] = [
            NamespaceLifecycle(get_namespace),
            RBACEscalation(authorize, resolve_rules, self.get),
            LimitRanger(self.cached),
            ServiceAccountAdmission(self.get),
            NodeRestriction(self.get),
            PriorityAdmission(self.get, self.cached),
            DefaultTolerationSeconds(),
            PodSecurity(get_namespace, lambda namespace: self.cached("", "pods", namespace)),
            DefaultStorageClass(lambda: self.cached("storage.k8s.io", "storageclasses", "")),
            StorageObjectInUseProtection(),
            DefaultIngressClass(lambda: self.cached("networking.k8s.io", "ingressclasses", "")),
            ServiceAllocation(
                self.ips,
                self.node_ports,
                get_service,
                lambda namespace: self.cached("", "services", namespace),
            ),
            ResourceQuota(self._store("", "resourcequotas"), self.cached, self.quota_recalculator),
            *extra_plugins,
        ]
        self.chain = AdmissionChain(plugins)
        self.subresource_handlers: dict[tuple[str, str, str], SubresourceHandler] = {}
        if token_issuer is not None:
            self.subresource_handlers[("", "serviceaccounts", "token")] = TokenRequestHandler(
                token_issuer, self.get, self.chain, api_audiences
            )
        if delete_options_type is not None:
            self.subresource_handlers[("", "pods", "eviction")] = EvictionHandler(
                storage, registry, self.chain, delete_options_type
            )

    # --- lookups the plugins use ----------------------------------------------------------

    def _store(self, group: str, plural: str) -> Any:
        info = self._info(group, plural)
        if info is None:
            raise LookupError(f"{plural}.{group} is not served")
        return self._storage.for_resource(info)

    def _info(self, group: str, plural: str) -> Any:
        info = self._registry.by_resource(group, "v1", plural)
        if info is not None:
            return info
        for candidate in self._registry.all():  # other versions (custom resources...)
            if candidate.group == group and candidate.plural == plural:
                return candidate
        return None

    async def get(
        self, group: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """One object (None when missing or its kind is not served)."""
        info = self._info(group, plural)
        if info is None:
            return None
        try:
            return await self._storage.for_resource(info).get(namespace or None, name)
        except NotFound:
            return None

    def cached(self, group: str, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Objects from the watch cache (none for a kind that is not served, e.g. a quota
        counting a custom resource whose CRD is gone)."""
        info = self._info(group, plural)
        if info is None:
            return []
        return list(self._storage.for_resource(info).cached_objects(namespace or None))

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ensure_priority_classes()
        await self._ensure_default_service_accounts()
        await self.repair.run_once()
        self.repair.start()
        self.quota_recalculator.start()
        await self.quota_recalculator.poke()

    async def stop(self) -> None:
        await self.repair.stop()
        await self.quota_recalculator.stop()

    async def _ensure_default_service_accounts(self) -> None:
        """The ``default`` ServiceAccount of the system namespaces, so pods there are admitted
        even before the service-account controller ran (it creates them everywhere else;
        upstream relies on the controller alone, Sampan's single process starts the API
        server well before it)."""
        store = self._store("", "serviceaccounts")
        for namespace in sorted(IMMORTAL_NAMESPACES):
            try:
                await store.get(namespace, DEFAULT_SERVICE_ACCOUNT)
                continue
            except NotFound:
                pass
            try:
                await store.create(
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace},
                    }
                )
            except (AlreadyExists, NotFound):
                pass

    async def _ensure_priority_classes(self) -> None:
        store = self._store("scheduling.k8s.io", "priorityclasses")
        for pc in SYSTEM_PRIORITY_CLASSES:
            try:
                await store.get(None, pc["metadata"]["name"])
                continue
            except NotFound:
                pass
            try:
                await store.create(dict(pc))
                log.info("created PriorityClass %s", pc["metadata"]["name"])
            except AlreadyExists:
                pass
