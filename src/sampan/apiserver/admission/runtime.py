"""The API server's admission runtime: builds the plugin chain in kube-apiserver's order, the
Service allocators and their repair loop, and the built-in PriorityClasses.

``Admission(storage, registry, backend, ...)`` is built after the storage layer started;
``start()`` (after the bootstrap objects exist, before the server reports ready) creates the
system PriorityClasses, repairs the Service allocations once and starts the periodic repair;
``stop()`` ends it. ``chain`` is what handlers (and the computed subresources of
``sampan.apiserver.subresources``) admit with.

Plugin order (kube-apiserver's recommended order, for the plugins Sampan has):
NamespaceLifecycle, RBACEscalation (upstream checks it in the RBAC REST storage, after
mutating and before validating admission), LimitRanger, ServiceAccount, NodeRestriction,
Priority, DefaultTolerationSeconds, ValidatingAdmissionPolicyDefaults (the API defaults of
policies and bindings), CustomResourceValidationRules (the CEL rules of a custom resource's
schema; upstream runs them in the strategy's validation, just before validating admission),
PodSecurity, DefaultStorageClass, StorageObjectInUseProtection, CertificateApproval,
CertificateSigning, CertificateSubjectRestriction, DefaultIngressClass,
ServiceAllocation (upstream does this in the Service REST storage), MutatingAdmissionWebhook,
ValidatingAdmissionPolicy, ValidatingAdmissionWebhook, ResourceQuota. Mutating ones run before
validating ones (the chain's rule). ``custom`` is set by the API server once it built its
``CustomResources``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sampan.api import strategy
from sampan.api.conversion import convert
from sampan.api.errors import AlreadyExists, Invalid, NotFound
from sampan.apiserver.admission.allocator import (
    DEFAULT_LEAK_GRACE_S,
    DEFAULT_NODE_PORT_RANGE,
    ip_range,
    port_range,
)
from sampan.apiserver.admission.certificates import (
    CertificateApproval,
    CertificateSigning,
    CertificateSubjectRestriction,
)
from sampan.apiserver.admission.chain import AdmissionAttributes, AdmissionChain, AdmissionPlugin
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
from sampan.apiserver.admission.podsecurityconfig import DEFAULT_CONFIG as DEFAULT_POD_SECURITY
from sampan.apiserver.admission.policy import (
    PolicyDefaults,
    PolicyStatusController,
    ValidatingAdmissionPolicyPlugin,
)
from sampan.apiserver.admission.quota import LimitRanger, QuotaRecalculator, ResourceQuota
from sampan.apiserver.admission.services import (
    DEFAULT_REPAIR_INTERVAL_S,
    ServiceAllocation,
    ServiceAllocationRepair,
)
from sampan.apiserver.admission.storage import DefaultStorageClass, StorageObjectInUseProtection
from sampan.apiserver.admission.webhooks import (
    GROUP as WEBHOOK_GROUP,
)
from sampan.apiserver.admission.webhooks import (
    WebhookCaller,
    WebhookSource,
    build,
    pick_endpoint,
)
from sampan.apiserver.auth.escalation import Authorize, RBACEscalation, ResolveRules
from sampan.apiserver.crd.celrules import CustomResourceRules

__all__ = ["Admission"]

log = logging.getLogger(__name__)


SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service."""


async def _first(objects: Awaitable[list[dict[str, Any]]]) -> dict[str, Any]:
    return (await objects)[0]


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
        repair_interval_s: float = DEFAULT_REPAIR_INTERVAL_S,
        leak_grace_s: float = DEFAULT_LEAK_GRACE_S,
        extra_plugins: tuple[AdmissionPlugin, ...] = (),
        pod_security: Any = None,
    ) -> None:
        self._storage = storage
        self._registry = registry
        self.custom: Any = None
        """The API server's ``CustomResources`` (schemas of custom resources), once built."""
        self.openapi: Any = None
        """The API server's ``OpenAPI`` (schemas of every kind), for policy type checks."""
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
        mutating_webhooks, validating_webhooks = self._webhook_plugins(authorize)
        plugins: list[AdmissionPlugin] = [
            NamespaceLifecycle(get_namespace),
            RBACEscalation(authorize, resolve_rules, self.get),
            LimitRanger(self.cached),
            ServiceAccountAdmission(self.get),
            NodeRestriction(self.get),
            PriorityAdmission(self.get, self.cached),
            DefaultTolerationSeconds(),
            PolicyDefaults(),
            CustomResourceRules(lambda: self.custom, self.get),
            PodSecurity(
                get_namespace,
                lambda namespace: self.cached("", "pods", namespace),
                pod_security or DEFAULT_POD_SECURITY,  # defaults and exemptions
            ),
            DefaultStorageClass(lambda: self.cached("storage.k8s.io", "storageclasses", "")),
            StorageObjectInUseProtection(),
            CertificateApproval(authorize),
            CertificateSigning(authorize),
            CertificateSubjectRestriction(),
            DefaultIngressClass(lambda: self.cached("networking.k8s.io", "ingressclasses", "")),
            ServiceAllocation(
                self.ips,
                self.node_ports,
                get_service,
                lambda namespace: self.cached("", "services", namespace),
            ),
            mutating_webhooks,
            ValidatingAdmissionPolicyPlugin(
                self.cached,
                self.generation,
                self.get,
                self.kind_of,
                self.resource_of_kind,
                authorize,
            ),
            validating_webhooks,
            ResourceQuota(self._store("", "resourcequotas"), self.cached, self.quota_recalculator),
            *extra_plugins,
        ]
        self.chain = AdmissionChain(plugins)

        async def write_policy_status(name: str, write: Callable[..., Any]) -> Any:
            store = self._store("admissionregistration.k8s.io", "validatingadmissionpolicies")
            return await store.guaranteed_update(None, name, write, subresource="status")

        self.policy_status = PolicyStatusController(
            self.cached,
            self.generation,
            self.kind_of,
            lambda group, version, kind: (
                self.openapi.definition_name(group, version, kind) if self.openapi else None
            ),
            lambda name: self.openapi.definition(name) if self.openapi else None,
            write_policy_status,
        )

    # --- dynamic admission webhooks ---------------------------------------------------------

    def _webhook_plugins(self, authorize: Authorize) -> tuple[AdmissionPlugin, AdmissionPlugin]:
        """MutatingAdmissionWebhook and ValidatingAdmissionWebhook over the watch cache of
        their configurations (see admission.webhooks)."""
        registry = self._registry

        def source(plural: str, *, mutating: bool) -> WebhookSource:
            store = self._store(WEBHOOK_GROUP, plural)

            async def objects() -> list[dict[str, Any]]:
                page = await store.list(None)
                return [json.loads(item) for item in page.items]

            return WebhookSource(lambda: store.generation, objects, mutating=mutating)

        def kind_of(group: str, version: str, plural: str) -> str | None:
            info = registry.by_resource(group, version, plural)
            return info.kind if info is not None else None

        def equivalents(group: str, version: str, plural: str) -> list[tuple[str, str, str]]:
            info = registry.by_resource(group, version, plural)
            if info is None or not info.stored:
                return []
            return [
                (other.group, other.version, other.plural)
                for other in registry.all()
                if other.storage_resource == info.storage_resource
                and other.stored
                and other.namespaced == info.namespaced
                and (other.group, other.version, other.plural) != (group, version, plural)
            ]

        def convert_to(obj: dict[str, Any], group: str, version: str, plural: str) -> Any:
            info_from = registry.by_kind(str(obj.get("apiVersion") or ""), str(obj.get("kind")))
            info_to = registry.by_resource(group, version, plural)
            if info_from is None or info_to is None or info_from is info_to:
                return obj
            custom = self.custom
            if custom is not None and custom.conversion_webhook(info_to) is not None:
                # A CRD converted by its webhook: an awaitable the dispatcher awaits.
                return _first(custom.convert(info_to, [obj], info_to.api_version))
            return convert(info_from, obj, info_to)

        namespaces = self._store("", "namespaces")
        labels_by_name: dict[str, dict[str, str]] = {}
        seen: list[int] = [-1]

        async def namespace_labels(name: str) -> dict[str, str] | None:
            if seen[0] != namespaces.generation:
                labels_by_name.clear()
                for ns in namespaces.cached_objects(None):
                    meta = ns.get("metadata") or {}
                    labels_by_name[str(meta.get("name"))] = dict(meta.get("labels") or {})
                seen[0] = namespaces.generation
            labels = labels_by_name.get(name)
            if labels is None:  # not in the cache yet: read it
                ns = await self.get("", "namespaces", "", name)
                labels = (
                    dict(((ns or {}).get("metadata") or {}).get("labels") or {}) if ns else None
                )
            return labels

        async def from_cache(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
            try:  # resourceVersion "0": the watch cache as it is, no datastore round trip
                return await self._store("", plural).get(namespace, name, resource_version="0")
            except NotFound:
                return None

        async def resolve_service(namespace: str, name: str, port: int) -> tuple[str, int]:
            service = await from_cache("services", namespace, name)
            if service is None:
                raise LookupError(f'service "{name}" not found')
            slices = [
                s
                for s in self.cached("discovery.k8s.io", "endpointslices", namespace)
                if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == name
            ]
            endpoints = await from_cache("endpoints", namespace, name)
            return pick_endpoint(service, slices, endpoints, port)

        def prevalidate(attrs: AdmissionAttributes) -> None:
            """The strategy's validation of the object admission holds (what the store does
            again when it writes, after admission)."""
            if attrs.obj is None or attrs.operation not in ("CREATE", "UPDATE"):
                return
            # The object's own apiVersion and kind (inside admitted_update it is in the
            # storage version, which may be another group's: events.k8s.io over core events).
            info = registry.by_kind(
                str(attrs.obj.get("apiVersion") or ""), str(attrs.obj.get("kind") or "")
            ) or registry.by_resource(attrs.group, attrs.version, attrs.resource)
            if info is None:
                return
            new = copy.deepcopy(attrs.obj)
            meta = new.get("metadata")
            if not isinstance(meta, dict):
                return  # the store reports it
            if attrs.operation == "CREATE" and not attrs.subresource:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}xxxxx"  # the store picks the real one
                strategy.default(info, new)
                strategy.prepare_for_create(info, new)
                causes = strategy.validate(info, new)
            elif attrs.operation == "UPDATE" and attrs.old_obj is not None:
                old = copy.deepcopy(attrs.old_obj)
                if attrs.subresource == "status":
                    strategy.prepare_for_status_update(info, new, old)
                    causes = strategy.validate_status_update(info, new, old)
                elif not attrs.subresource:
                    strategy.default(info, new)
                    strategy.prepare_for_update(info, new, old)
                    causes = strategy.validate_update(info, new, old)
                else:
                    return
            else:
                return
            if causes:
                raise Invalid.for_object(info.kind, info.group, str(meta.get("name") or ""), causes)

        async def get_object(attrs: AdmissionAttributes) -> dict[str, Any] | None:
            return await self.get(attrs.group, attrs.resource, attrs.namespace, attrs.name)

        def default(obj: dict[str, Any]) -> dict[str, Any]:
            info = registry.by_kind(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))
            if info is None:
                return obj
            out = copy.deepcopy(obj)
            strategy.default(info, out)
            return out

        self.webhook_caller = WebhookCaller(resolve_service)
        return build(
            source("mutatingwebhookconfigurations", mutating=True),
            source("validatingwebhookconfigurations", mutating=False),
            self.webhook_caller,
            kind_of=kind_of,
            equivalents=equivalents,
            namespace_labels=namespace_labels,
            convert=convert_to,
            prevalidate=prevalidate,
            get_object=get_object,
            default=default,
            authorize=authorize,
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

    def generation(self, group: str, plural: str) -> int:
        """The watch cache generation of a kind (-1 when not served): changes on every write."""
        info = self._info(group, plural)
        if info is None:
            return -1
        return int(self._storage.for_resource(info).generation)

    def kind_of(self, group: str, version: str, plural: str) -> tuple[str, bool] | None:
        info = self._registry.by_resource(group, version, plural) or self._info(group, plural)
        return (info.kind, info.namespaced) if info is not None else None

    def resource_of_kind(self, api_version: str, kind: str) -> tuple[str, bool] | None:
        """(plural, namespaced) of the kind ``api_version``/``kind`` (None: not served)."""
        group, _, version = api_version.rpartition("/")
        for info in self._registry.all():
            if (info.group, info.version, info.kind) == (group, version, kind):
                return (info.plural, info.namespaced)
        return None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ensure_priority_classes()
        await self._ensure_default_service_accounts()
        await self.repair.run_once()
        self.repair.start()
        self.quota_recalculator.start()
        await self.quota_recalculator.poke()
        self.policy_status.start()

    async def stop(self) -> None:
        await self.webhook_caller.close()
        await self.policy_status.stop()
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
