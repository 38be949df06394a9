"""Service IP and port allocation: ClusterIPs from the service CIDR and NodePorts from the
node-port range, as kube-apiserver's Service REST storage does on create, update and delete.

Owns ``ServiceAllocation`` (a mutating admission step for ``services``) and
``ServiceAllocationRepair`` (the periodic reconciliation of claims with Services).

* create: a Service that needs a ClusterIP (not ExternalName, not headless ``None``) gets the
  one it asked for (422 when taken or outside the range, with upstream's wording) or a free
  one; NodePort and LoadBalancer Services get their nodePorts (asked for or free), and a
  LoadBalancer with ``externalTrafficPolicy: Local`` its healthCheckNodePort.
* update: values the new object leaves empty are carried over from the old one (as upstream's
  ``patchAllocatedValues``); items newly needed are claimed; items no longer used are released
  once the update is stored.
* delete: the Service's items are released once it is really gone.

Invariants: claims made for a request that fails are released (``on_failure``); a dry run
claims nothing; the owner of every claim is ``<namespace>/<name>``.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api.errors import InternalError, Invalid
from sampan.apiserver.admission.allocator import (
    AllocationError,
    RangeAllocator,
    RangeFull,
)
from sampan.apiserver.admission.chain import AdmissionAttributes
from sampan.tasks import cancel_and_wait

__all__ = [
    "DEFAULT_REPAIR_INTERVAL_S",
    "ServiceAllocation",
    "ServiceAllocationRepair",
    "service_items",
]

log = logging.getLogger(__name__)

DEFAULT_REPAIR_INTERVAL_S = 60.0

ServiceLister = Callable[[], Awaitable[list[dict[str, Any]]]]
ServiceGetter = Callable[[str, str], Awaitable[dict[str, Any] | None]]


def _needs_cluster_ip(spec: dict[str, Any]) -> bool:
    return (spec.get("type") or "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None"


def _needs_node_ports(spec: dict[str, Any]) -> bool:
    service_type = spec.get("type") or "ClusterIP"
    if service_type == "NodePort":
        return True
    return service_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def _needs_health_check_port(spec: dict[str, Any]) -> bool:
    return (spec.get("type") == "LoadBalancer") and spec.get("externalTrafficPolicy") == "Local"


def _ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ports = spec.get("ports")
    return [p for p in ports if isinstance(p, dict)] if isinstance(ports, list) else []


def _ip_int(text: Any) -> int | None:
    if not isinstance(text, str) or not text or text == "None":
        return None
    try:
        return int(ipaddress.ip_address(text))
    except ValueError:
        return None


def service_items(service: dict[str, Any]) -> tuple[set[int], set[int]]:
    """(ClusterIPs as ints, node ports incl. the health-check port) a stored Service uses."""
    spec = service.get("spec") or {}
    if not isinstance(spec, dict):
        return set(), set()
    ips: set[int] = set()
    if (spec.get("type") or "ClusterIP") != "ExternalName":
        for text in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            value = _ip_int(text)
            if value is not None:
                ips.add(value)
    ports: set[int] = set()
    for port in _ports(spec):
        node_port = port.get("nodePort")
        if isinstance(node_port, int) and node_port > 0:
            ports.add(node_port)
    health = spec.get("healthCheckNodePort")
    if isinstance(health, int) and health > 0:
        ports.add(health)
    return ips, ports


def _owner(service: dict[str, Any], attrs: AdmissionAttributes) -> str:
    meta = service.get("metadata") or {}
    return f"{meta.get('namespace') or attrs.namespace}/{meta.get('name') or attrs.name}"


class ServiceAllocation:
    """The allocation step of Service writes (see the module docstring)."""

    name = "ServiceAllocation"
    mutating = True

    def __init__(
        self,
        ips: RangeAllocator,
        node_ports: RangeAllocator,
        get_service: ServiceGetter,
        list_cached: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.ips = ips
        self.node_ports = node_ports
        self._get_service = get_service
        self._list_services = list_cached

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not attrs.is_resource("", "services"):
            return
        if attrs.operation == "CREATE" and attrs.obj is not None:
            await self._allocate(attrs, attrs.obj, None)
        elif attrs.operation == "UPDATE" and attrs.obj is not None and attrs.old_obj is not None:
            await self._allocate(attrs, attrs.obj, attrs.old_obj)
        elif attrs.operation == "DELETE" and not attrs.dry_run:
            if attrs.name:
                await self._release_on_delete(attrs)
            elif self._list_services is not None:
                self._release_on_delete_collection(attrs)

    # --- create / update ------------------------------------------------------------------

    async def _allocate(
        self, attrs: AdmissionAttributes, service: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        spec = service.get("spec")
        if not isinstance(spec, dict):
            return  # validation reports it
        old_spec = (old or {}).get("spec") or {}
        if old is not None:
            _drop_type_dependent(spec, old_spec)
            _carry_over(spec, old_spec)
        owner = _owner(service, attrs)
        name = (service.get("metadata") or {}).get("name") or attrs.name
        old_ips, old_ports = service_items(old) if old is not None else (set(), set())
        new_claims: list[tuple[RangeAllocator, int]] = []

        async def release_new() -> None:
            for allocator, item in new_claims:
                await allocator.release(item, owner)

        attrs.on_failure(release_new)
        causes: list[Any] = []
        if _needs_cluster_ip(spec):
            await self._cluster_ip(attrs, spec, owner, old_ips, new_claims, causes)
        if _needs_node_ports(spec):
            await self._node_ports(attrs, spec, owner, old_ports, new_claims, causes)
        else:
            for port in _ports(spec):
                if old is not None and port.get("nodePort") in old_ports:
                    # Leaving NodePort: the ports go (upstream drops them too).
                    port.pop("nodePort", None)
        if _needs_health_check_port(spec):
            await self._health_check_port(attrs, spec, owner, old_ports, new_claims, causes)
        elif old is not None and spec.get("healthCheckNodePort") in old_ports:
            spec.pop("healthCheckNodePort", None)
        if causes:
            raise Invalid(
                fe.invalid_message("Service", name, causes),
                name=name,
                kind="Service",
                causes=causes,
            )
        if old is not None and not attrs.dry_run:
            new_ips, new_ports = service_items(service)
            gone = [(self.ips, i) for i in old_ips - new_ips] + [
                (self.node_ports, p) for p in old_ports - new_ports
            ]
            if gone:

                async def release_old() -> None:
                    for allocator, item in gone:
                        await allocator.release(item, owner)

                attrs.on_success(release_old)

    async def _cluster_ip(
        self,
        attrs: AdmissionAttributes,
        spec: dict[str, Any],
        owner: str,
        old_ips: set[int],
        new_claims: list[tuple[RangeAllocator, int]],
        causes: list[Any],
    ) -> None:
        cluster_ips = spec.get("clusterIPs")
        wanted = spec.get("clusterIP") or (
            cluster_ips[0] if isinstance(cluster_ips, list) and cluster_ips else ""
        )
        if not wanted:
            try:
                item = await self.ips.claim_next(owner, dry_run=attrs.dry_run)
            except RangeFull as exc:
                raise InternalError(
                    f"Internal error occurred: failed to allocate a serviceIP: {exc}"
                ) from exc
            if not attrs.dry_run:
                new_claims.append((self.ips, item))
            text = self.ips.render(item)
        else:
            item_or_none = _ip_int(wanted)
            if item_or_none is None:
                return  # not an IP: validation says so
            text = wanted
            if item_or_none not in old_ips:
                try:
                    fresh = await self.ips.claim(item_or_none, owner, dry_run=attrs.dry_run)
                except AllocationError as exc:
                    causes.append(
                        fe.invalid(
                            "spec.clusterIPs",
                            list(cluster_ips) if isinstance(cluster_ips, list) else [wanted],
                            f"failed to allocate IP {wanted}: {exc}",
                        )
                    )
                    return
                if fresh and not attrs.dry_run:
                    new_claims.append((self.ips, item_or_none))
        spec["clusterIP"] = text
        if not isinstance(cluster_ips, list) or not cluster_ips:
            spec["clusterIPs"] = [text]
        elif cluster_ips[0] in ("", None):
            spec["clusterIPs"] = [text, *cluster_ips[1:]]

    async def _claim_port(
        self,
        attrs: AdmissionAttributes,
        owner: str,
        wanted: Any,
        path: str,
        old_ports: set[int],
        claimed_here: set[int],
        new_claims: list[tuple[RangeAllocator, int]],
        causes: list[Any],
    ) -> int | None:
        if isinstance(wanted, int) and wanted > 0:
            if wanted in old_ports or wanted in claimed_here:
                return wanted
            try:
                fresh = await self.node_ports.claim(wanted, owner, dry_run=attrs.dry_run)
            except AllocationError as exc:
                causes.append(fe.invalid(path, wanted, str(exc)))
                return None
            claimed_here.add(wanted)
            if fresh and not attrs.dry_run:
                new_claims.append((self.node_ports, wanted))
            return wanted
        if wanted not in (None, 0):
            return None  # not a number: validation says so
        try:
            item = await self.node_ports.claim_next(owner, dry_run=attrs.dry_run)
        except RangeFull as exc:
            raise InternalError(
                f"Internal error occurred: failed to allocate a nodePort: {exc}"
            ) from exc
        claimed_here.add(item)
        if not attrs.dry_run:
            new_claims.append((self.node_ports, item))
        return item

    async def _node_ports(
        self,
        attrs: AdmissionAttributes,
        spec: dict[str, Any],
        owner: str,
        old_ports: set[int],
        new_claims: list[tuple[RangeAllocator, int]],
        causes: list[Any],
    ) -> None:
        claimed_here: set[int] = set()
        for i, port in enumerate(_ports(spec)):
            item = await self._claim_port(
                attrs,
                owner,
                port.get("nodePort"),
                f"spec.ports[{i}].nodePort",
                old_ports,
                claimed_here,
                new_claims,
                causes,
            )
            if item is not None:
                port["nodePort"] = item

    async def _health_check_port(
        self,
        attrs: AdmissionAttributes,
        spec: dict[str, Any],
        owner: str,
        old_ports: set[int],
        new_claims: list[tuple[RangeAllocator, int]],
        causes: list[Any],
    ) -> None:
        used = {p.get("nodePort") for p in _ports(spec)}
        wanted = spec.get("healthCheckNodePort")
        if isinstance(wanted, int) and wanted in used:
            return  # validation reports the clash
        item = await self._claim_port(
            attrs,
            owner,
            wanted,
            "spec.healthCheckNodePort",
            old_ports,
            set(),
            new_claims,
            causes,
        )
        if item is not None:
            spec["healthCheckNodePort"] = item

    # --- delete ---------------------------------------------------------------------------

    async def _release_on_delete(self, attrs: AdmissionAttributes) -> None:
        current = await self._get_service(attrs.namespace, attrs.name)
        if current is None:
            return
        uid = (current.get("metadata") or {}).get("uid")
        ips, ports = service_items(current)
        owner = _owner(current, attrs)

        async def release() -> None:
            still = await self._get_service(attrs.namespace, attrs.name)
            if still is not None and (still.get("metadata") or {}).get("uid") == uid:
                return  # only marked for deletion (finalizers): released when really gone
            for item in ips:
                await self.ips.release(item, owner)
            for item in ports:
                await self.node_ports.release(item, owner)

        attrs.on_success(release)

    def _release_on_delete_collection(self, attrs: AdmissionAttributes) -> None:
        """deletecollection (namespace deletion uses it): afterwards, release the items of
        every Service of the namespace that is really gone."""
        assert self._list_services is not None
        before = [
            (
                (s.get("metadata") or {}).get("name", ""),
                (s.get("metadata") or {}).get("uid"),
                service_items(s),
            )
            for s in self._list_services(attrs.namespace)
        ]
        if not before:
            return

        async def release() -> None:
            for name, uid, (ips, ports) in before:
                still = await self._get_service(attrs.namespace, name)
                if still is not None and (still.get("metadata") or {}).get("uid") == uid:
                    continue
                owner = f"{attrs.namespace}/{name}"
                for item in ips:
                    await self.ips.release(item, owner)
                for item in ports:
                    await self.node_ports.release(item, owner)

        attrs.on_success(release)


def _drop_type_dependent(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Upstream's dropTypeDependentFields: a type change clears the fields the new type may
    not have, when the update left them as they were (a user's own change is validated)."""

    def same(key: str) -> bool:
        return spec.get(key) == old_spec.get(key)

    if _needs_cluster_ip(old_spec) and (spec.get("type") == "ExternalName"):
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if same(key):
                spec.pop(key, None)
    if _needs_node_ports(old_spec) and not _needs_node_ports(spec):
        old_node_ports = {p.get("nodePort") for p in _ports(old_spec)} - {None}
        for port in _ports(spec):
            if port.get("nodePort") in old_node_ports:
                port.pop("nodePort", None)
    if _needs_health_check_port(old_spec) and not _needs_health_check_port(spec):
        if same("healthCheckNodePort"):
            spec.pop("healthCheckNodePort", None)
    if spec.get("type") != "LoadBalancer":
        for key in ("allocateLoadBalancerNodePorts", "loadBalancerClass"):
            if same(key):
                spec.pop(key, None)
    external = ("NodePort", "LoadBalancer")
    if (old_spec.get("type") in external) and spec.get("type") not in external:
        if same("externalTrafficPolicy"):
            spec.pop("externalTrafficPolicy", None)


def _carry_over(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Upstream's patchAllocatedValues: what an update leaves empty keeps its old value."""
    if _needs_cluster_ip(spec) and _needs_cluster_ip(old_spec):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = copy.deepcopy(old_spec["clusterIPs"])
    if _needs_node_ports(spec) and _needs_node_ports(old_spec):
        old_ports = _ports(old_spec)
        for port in _ports(spec):
            if port.get("nodePort"):
                continue
            match = next(
                (
                    p
                    for p in old_ports
                    if p.get("port") == port.get("port")
                    and (p.get("protocol") or "TCP") == (port.get("protocol") or "TCP")
                    and p.get("nodePort")
                ),
                None,
            )
            if match is not None:
                port["nodePort"] = match["nodePort"]
    if _needs_health_check_port(spec) and _needs_health_check_port(old_spec):
        if not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


class ServiceAllocationRepair:
    """Reconciles the claims with the Services (at start, then every ``interval_s``)."""

    def __init__(
        self,
        ips: RangeAllocator,
        node_ports: RangeAllocator,
        list_services: ServiceLister,
        *,
        interval_s: float = DEFAULT_REPAIR_INTERVAL_S,
    ) -> None:
        self.ips = ips
        self.node_ports = node_ports
        self._list_services = list_services
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> None:
        ip_claims = await self.ips.claims()
        port_claims = await self.node_ports.claims()
        services = await self._list_services()
        ips_in_use: dict[int, str] = {}
        ports_in_use: dict[int, str] = {}
        for service in services:
            meta = service.get("metadata") or {}
            owner = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
            ips, ports = service_items(service)
            for item in ips:
                if item in ips_in_use and ips_in_use[item] != owner:
                    log.warning(
                        "ClusterIP %s is used by both %s and %s",
                        self.ips.render(item),
                        ips_in_use[item],
                        owner,
                    )
                ips_in_use.setdefault(item, owner)
            for item in ports:
                if item in ports_in_use and ports_in_use[item] != owner:
                    log.warning(
                        "NodePort %d is used by both %s and %s", item, ports_in_use[item], owner
                    )
                ports_in_use.setdefault(item, owner)
        for allocator, in_use, claims in (
            (self.ips, ips_in_use, ip_claims),
            (self.node_ports, ports_in_use, port_claims),
        ):
            result = await allocator.repair(in_use, claims)
            if result.claimed or result.released or result.duplicates:
                log.info(
                    "service %s repair: claimed %s, released leaked %s, re-owned %s",
                    allocator.what,
                    list(result.claimed),
                    list(result.released),
                    list(result.duplicates),
                )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="service-allocation-repair")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "service allocation repair failed; retrying in %.0fs", self.interval_s
                )
