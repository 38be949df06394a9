"""The ``kubernetes`` Service's Endpoints and EndpointSlice: the addresses of the API servers
that are alive (kube-apiserver's lease endpoint reconciler).

Every API server keeps a lease in the datastore (``/registry/sampan/apiserverleases/<ip>``,
value ``{"port": .., "renewTime": ..}``) renewed every ``interval_s``; a lease not renewed
for ``lease_ttl_s`` is dead. After each renewal the server writes ``default/kubernetes``
Endpoints (one subset, the live addresses sorted, port ``https``) and the matching
EndpointSlice (``kubernetes``, label ``kubernetes.io/service-name=kubernetes``, addressType
IPv4 or IPv6) when they differ. On a clean stop the server drops its lease and its address, so
clients stop using it at once; after a crash its lease simply expires.

The ``kubernetes`` Service itself is recreated by the same rounds when it was deleted (as
upstream's kubernetes-service controller does).

Invariants: this server's own address is always listed while it runs; only the ``kubernetes``
objects in ``default`` are written; writes happen only when something changed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sampan.api.errors import AlreadyExists, Conflict, NotFound, StatusError
from sampan.apiserver.bootstrap import kubernetes_service
from sampan.apiserver.storage import DeleteOptions
from sampan.datastore.types import ConflictError, KeyExistsError, KeyNotFoundError, StoreError
from sampan.tasks import cancel_and_wait

__all__ = [
    "DEFAULT_LEASE_INTERVAL_S",
    "DEFAULT_LEASE_TTL_S",
    "LEASE_PREFIX",
    "KubernetesEndpointsReconciler",
]

log = logging.getLogger(__name__)

LEASE_PREFIX = "/registry/sampan/apiserverleases/"
DEFAULT_LEASE_INTERVAL_S = 10.0
DEFAULT_LEASE_TTL_S = 15.0
SERVICE_NAME = "kubernetes"
NAMESPACE = "default"
PORT_NAME = "https"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"


class KubernetesEndpointsReconciler:
    """See the module docstring."""

    def __init__(
        self,
        storage: Any,
        registry: Any,
        backend: Any,
        *,
        address: str,
        port: int,
        service_ip: str | None = None,
        interval_s: float = DEFAULT_LEASE_INTERVAL_S,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoints = storage.for_resource(registry.by_resource("", "v1", "endpoints"))
        self._services = storage.for_resource(registry.by_resource("", "v1", "services"))
        self._service_ip = service_ip
        self._slices = storage.for_resource(
            registry.by_resource("discovery.k8s.io", "v1", "endpointslices")
        )
        self._backend = backend
        self.address = address
        self.port = port
        self.interval_s = interval_s
        self.lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    # --- leases -------------------------------------------------------------------------------

    def _lease_key(self, address: str) -> str:
        return LEASE_PREFIX + address

    async def _renew(self) -> None:
        key = self._lease_key(self.address)
        value = json.dumps({"port": self.port, "renewTime": self._clock()}).encode()
        _, current = await self._backend.get(key)
        try:
            if current is None:
                await self._backend.create(key, value)
            else:
                await self._backend.update(key, value, current.mod_revision)
        except (KeyExistsError, ConflictError):
            pass  # another write of the same lease (a restart racing itself): next round

    async def live_addresses(self) -> list[str]:
        result = await self._backend.list(LEASE_PREFIX)
        now = self._clock()
        live = set()
        for kv in result.items:
            try:
                lease = json.loads(kv.value)
                renewed = float(lease.get("renewTime", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            if now - renewed <= self.lease_ttl_s:
                live.add(kv.key[len(LEASE_PREFIX) :])
        return sorted(live, key=_sort_key)

    # --- objects ------------------------------------------------------------------------------

    def _subsets(self, addresses: list[str]) -> list[dict[str, Any]]:
        if not addresses:
            return []
        return [
            {
                "addresses": [{"ip": a} for a in addresses],
                "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
            }
        ]

    def _slice(self, addresses: list[str]) -> dict[str, Any]:
        address_type = (
            "IPv6"
            if addresses and all(ipaddress.ip_address(a).version == 6 for a in addresses)
            else "IPv4"
        )
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": SERVICE_NAME,
                "namespace": NAMESPACE,
                "labels": {SERVICE_NAME_LABEL: SERVICE_NAME},
            },
            "addressType": address_type,
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
            "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
        }

    async def _write_endpoints(self, addresses: list[str]) -> None:
        subsets = self._subsets(addresses)
        try:
            current = await self._endpoints.get(NAMESPACE, SERVICE_NAME)
        except NotFound:
            current = None
        if current is None:
            try:
                await self._endpoints.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Endpoints",
                        "metadata": {
                            "name": SERVICE_NAME,
                            "namespace": NAMESPACE,
                            "labels": {SKIP_MIRROR_LABEL: "true"},
                        },
                        "subsets": subsets,
                    }
                )
            except AlreadyExists:
                pass  # another server just did: the next round compares
            return
        if (current.get("subsets") or []) == subsets:
            return

        def point(obj: dict[str, Any]) -> dict[str, Any]:
            obj["subsets"] = subsets
            return obj

        await self._endpoints.guaranteed_update(NAMESPACE, SERVICE_NAME, point)
        log.info("kubernetes endpoints now %s", ", ".join(addresses) or "empty")

    async def _write_slice(self, addresses: list[str]) -> None:
        wanted = self._slice(addresses)
        try:
            current = await self._slices.get(NAMESPACE, SERVICE_NAME)
        except NotFound:
            current = None
        if current is None:
            try:
                await self._slices.create(wanted)
            except AlreadyExists:
                pass
            return
        labels = (current.get("metadata") or {}).get("labels") or {}
        if (
            current.get("addressType") == wanted["addressType"]
            and (current.get("endpoints") or []) == wanted["endpoints"]
            and current.get("ports") == wanted["ports"]
            and labels.get(SERVICE_NAME_LABEL) == SERVICE_NAME
        ):
            return
        if current.get("addressType") != wanted["addressType"]:
            # addressType is immutable: replace the slice.
            await self._slices.delete(NAMESPACE, SERVICE_NAME, _delete_now())
            await self._slices.create(wanted)
            return

        def point(obj: dict[str, Any]) -> dict[str, Any]:
            obj["endpoints"] = wanted["endpoints"]
            obj["ports"] = wanted["ports"]
            meta = obj.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), SERVICE_NAME_LABEL: SERVICE_NAME}
            return obj

        await self._slices.guaranteed_update(NAMESPACE, SERVICE_NAME, point)

    # --- rounds -------------------------------------------------------------------------------

    async def _ensure_service(self) -> None:
        """Recreate the ``kubernetes`` Service if someone deleted it (upstream's controller
        does the same); its ClusterIP claim follows at the next allocation repair."""
        if self._service_ip is None:
            return
        try:
            await self._services.get(NAMESPACE, SERVICE_NAME)
            return
        except NotFound:
            pass
        try:
            await self._services.create(kubernetes_service(self._service_ip, self.port))
            log.info("recreated the kubernetes service")
        except AlreadyExists:
            pass

    async def reconcile(self) -> None:
        """Renew this server's lease, make sure the Service exists, write the live
        addresses."""
        await self._renew()
        await self._ensure_service()
        addresses = await self.live_addresses()
        if self.address not in addresses:
            addresses = sorted([*addresses, self.address], key=_sort_key)
        await self._write(addresses)

    async def _write(self, addresses: list[str]) -> None:
        for attempt in range(3):
            try:
                await self._write_endpoints(addresses)
                await self._write_slice(addresses)
                return
            except Conflict:
                if attempt == 2:
                    raise

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kubernetes-endpoints")

    async def stop(self) -> None:
        """Stop renewing; drop this server's lease and address (best effort)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        try:
            key = self._lease_key(self.address)
            _, current = await self._backend.get(key)
            if current is not None:
                await self._backend.delete(key, current.mod_revision)
            others = [a for a in await self.live_addresses() if a != self.address]
            await self._write(others)
        except (StatusError, StoreError, KeyNotFoundError, ConflictError, OSError) as exc:
            log.warning("could not remove this server from the kubernetes endpoints: %s", exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubernetes endpoints reconcile failed")


def _sort_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


def _delete_now() -> DeleteOptions:
    return DeleteOptions(grace_period_s=0)
