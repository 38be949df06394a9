"""Where an APIService's backend is: its Service's endpoints, resolved as kube-apiserver with
``--enable-aggregator-routing`` does (the API server dials an endpoint address directly, so
no service proxy is needed on the control plane and a test can point a Service at 127.0.0.1
with hand-written Endpoints).

``resolve_backend`` reads from caches only (no I/O) and raises ``BackendUnavailable`` with
kube-aggregator's availability reason and message when there is nothing to dial:
``ServiceNotFound``, ``ServicePortError``, ``EndpointsNotFound``, ``MissingEndpoints``.
The Service port is picked by ``spec.service.port``; its name selects the endpoint port
(Endpoints first, then EndpointSlices labelled ``kubernetes.io/service-name``); among the
ready addresses one is chosen at random.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sampan.api.apiregistration import DEFAULT_SERVICE_PORT

__all__ = ["Backend", "BackendUnavailable", "resolve_backend"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

JSONObj = dict[str, Any]
Lister = Callable[[str], Iterable[JSONObj]]
"""namespace -> the cached objects of one resource there."""


class BackendUnavailable(Exception):
    """No endpoint to dial; ``reason`` is the Available condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Backend:
    host: str
    port: int
    server_name: str
    """The name the backend's serving certificate must carry: ``<service>.<namespace>.svc``."""

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def _find(objects: Iterable[JSONObj], name: str) -> JSONObj | None:
    for obj in objects:
        if (obj.get("metadata") or {}).get("name") == name:
            return obj
    return None


def _ready_from_endpoints(endpoints: JSONObj, port_name: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ports = [p for p in subset.get("ports") or [] if (p.get("name") or "") == port_name]
        for port in ports:
            for address in subset.get("addresses") or []:
                if address.get("ip"):
                    found.append((str(address["ip"]), int(port.get("port") or 0)))
    return [f for f in found if f[1]]


def _ready_from_slices(slices: Iterable[JSONObj], port_name: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for eps in slices:
        ports = [p for p in eps.get("ports") or [] if (p.get("name") or "") == port_name]
        for port in ports:
            for endpoint in eps.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                for address in endpoint.get("addresses") or []:
                    found.append((str(address), int(port.get("port") or 0)))
    return [f for f in found if f[1]]


def resolve_backend(
    service_ref: JSONObj,
    *,
    services: Lister,
    endpoints: Lister,
    endpoint_slices: Lister,
    choose: Callable[[list[tuple[str, int]]], tuple[str, int]] = random.choice,
) -> Backend:
    namespace = str(service_ref.get("namespace") or "")
    name = str(service_ref.get("name") or "")
    port = int(service_ref.get("port") or DEFAULT_SERVICE_PORT)
    server_name = f"{name}.{namespace}.svc"
    service = _find(services(namespace), name)
    if service is None:
        raise BackendUnavailable(
            "ServiceNotFound", f'service/{name} in "{namespace}" is not present'
        )
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        host = str(spec.get("externalName") or "")
        return Backend(host=host, port=port, server_name=server_name)
    service_port = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    if service_port is None:
        raise BackendUnavailable(
            "ServicePortError", f'service/{name} in "{namespace}" is not listening on port {port}'
        )
    port_name = str(service_port.get("name") or "")
    ready: list[tuple[str, int]] = []
    endpoints_obj = _find(endpoints(namespace), name)
    if endpoints_obj is not None:
        ready = _ready_from_endpoints(endpoints_obj, port_name)
    slices = [
        s
        for s in endpoint_slices(namespace)
        if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == name
    ]
    if not ready:
        ready = _ready_from_slices(slices, port_name)
    if not ready:
        if endpoints_obj is None and not slices:
            raise BackendUnavailable(
                "EndpointsNotFound", f'cannot find endpoints for service/{name} in "{namespace}"'
            )
        raise BackendUnavailable(
            "MissingEndpoints",
            f'endpoints for service/{name} in "{namespace}" have no addresses with port name '
            f'"{port_name}"',
        )
    host, target_port = choose(ready)
    return Backend(host=host, port=target_port, server_name=server_name)
