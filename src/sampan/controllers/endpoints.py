"""Endpoints controller: the ``v1.Endpoints`` of every Service with a selector.

This module owns Endpoints objects named after Services that have a ``spec.selector``; it
never touches Endpoints of selector-less Services (those belong to their users). It also holds
the helpers the EndpointSlice controller shares (which pods belong, readiness, named ports).

For each such Service, the pods in its namespace whose labels match the selector and that have
an IP and have not finished (phase Succeeded/Failed with no restart to come) become addresses:
``addresses`` when Ready (or when ``publishNotReadyAddresses``), ``notReadyAddresses``
otherwise; terminating pods are left out unless ``publishNotReadyAddresses``. Each Service
port's ``targetPort`` is resolved per pod (a name looks up the pod's container ports), so pods
with different port numbers land in different subsets. Headless Services without ports get
subsets without ports. At most ``MAX_ENDPOINTS`` addresses are kept (the rest are dropped and
the ``endpoints.kubernetes.io/over-capacity: truncated`` annotation set, as upstream).

When the Service is deleted its Endpoints is deleted. Writes happen only when the computed
subsets, labels or annotations differ from what is stored.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sampan.client import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from sampan.client.api import ENDPOINTS, PODS, SERVICES
from sampan.client.events import TYPE_WARNING
from sampan.client.informer import INDEX_NAMESPACE, object_key, split_key
from sampan.controllers.base import ControllerContext, QueueController

__all__ = [
    "MAX_ENDPOINTS",
    "EndpointsController",
    "is_pod_ready",
    "pod_in_endpoints",
    "resolve_target_port",
    "service_selects",
    "services_for_pod",
]

log = logging.getLogger(__name__)

MAX_ENDPOINTS = 1000
OVER_CAPACITY_ANNOTATION = "endpoints.kubernetes.io/over-capacity"
HEADLESS_LABEL = "service.kubernetes.io/headless"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"


# -- shared helpers -----------------------------------------------------------------------------


def service_selects(service: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Whether ``pod`` (same namespace) is selected by ``service``'s non-empty selector."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def has_selector(service: Mapping[str, Any] | None) -> bool:
    spec = (service or {}).get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def services_for_pod(services_cache: Any, pod: Mapping[str, Any]) -> list[str]:
    """Keys of the Services in ``pod``'s namespace that select it."""
    namespace = (pod.get("metadata") or {}).get("namespace") or ""
    return [
        object_key(service)
        for service in services_cache.by_index(INDEX_NAMESPACE, namespace)
        if has_selector(service) and service_selects(service, pod)
    ]


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def pod_ip(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    if status.get("podIP"):
        return str(status["podIP"])
    ips = status.get("podIPs") or []
    return str(ips[0].get("ip") or "") if ips else ""


def pod_in_endpoints(pod: Mapping[str, Any], include_terminating: bool) -> bool:
    """Upstream's rule: an IP, not finished for good, and (unless asked) not terminating."""
    if not pod_ip(pod):
        return False
    phase = (pod.get("status") or {}).get("phase")
    restart = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if phase == "Succeeded" and restart != "Always":
        return False
    if phase == "Failed" and restart == "Never":
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp") and not include_terminating:
        return False
    return True


def resolve_target_port(service_port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    """The pod's port number for ``service_port`` (None if a named port is not found)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                number = port.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def endpoint_ports(
    service: Mapping[str, Any], pod: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The EndpointPort list of ``pod`` for ``service`` (None if a port does not resolve and
    the service has exactly that one port — upstream then leaves the pod out)."""
    ports: list[dict[str, Any]] = []
    service_ports = (service.get("spec") or {}).get("ports") or []
    for service_port in service_ports:
        number = resolve_target_port(service_port, pod)
        if number is None:
            continue
        port: dict[str, Any] = {"port": number, "protocol": service_port.get("protocol") or "TCP"}
        if service_port.get("name"):
            port["name"] = service_port["name"]
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        ports.append(port)
    if service_ports and not ports:
        return None
    return sorted(ports, key=lambda p: (p.get("name") or "", p["port"], p["protocol"]))


def pod_hostname(service: Mapping[str, Any], pod: Mapping[str, Any]) -> str:
    """The pod's hostname when its subdomain is the service's name (stable DNS names)."""
    spec = pod.get("spec") or {}
    service_name = (service.get("metadata") or {}).get("name")
    if spec.get("hostname") and spec.get("subdomain") == service_name:
        return str(spec["hostname"])
    return ""


def target_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    return {
        "kind": "Pod",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
    }


def is_headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


# -- the controller -----------------------------------------------------------------------------


class EndpointsController(QueueController):
    """Keeps ``v1.Endpoints`` in step with Services and their pods."""

    name = "endpoint"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.recorder = ctx.recorder("endpoint-controller")
        self.services = self.watch(ctx.informers.informer(SERVICES))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.endpoints = self.watch(ctx.informers.informer(ENDPOINTS))
        self.services.add_event_handler(
            on_add=lambda svc: self.queue.add(object_key(svc)),
            on_update=lambda _old, svc: self.queue.add(object_key(svc)),
            on_delete=lambda svc: self.queue.add(object_key(svc)),
        )
        self.pods.add_event_handler(
            on_add=self._pod_changed,
            on_update=self._pod_updated,
            on_delete=self._pod_changed,
        )
        self.endpoints.add_event_handler(
            on_update=lambda _old, ep: self.queue.add(object_key(ep)),
            on_delete=lambda ep: self.queue.add(object_key(ep)),
        )

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        for key in services_for_pod(self.services.cache, pod):
            self.queue.add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        keys = set(services_for_pod(self.services.cache, new))
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            keys.update(services_for_pod(self.services.cache, old))
        for key in keys:
            self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        try:
            await self._sync(key)
        except ApiError as exc:
            service = self.services.cache.get(key)
            # A conflict only means our cache was behind: retried quietly.
            if service is not None and not isinstance(exc, ConflictError):
                self.recorder.event(
                    service,
                    TYPE_WARNING,
                    "FailedToUpdateEndpoint",
                    f"Error updating endpoint {key}: {exc}",
                )
            raise

    async def _sync(self, key: str) -> None:
        namespace, name = split_key(key)
        service = self.services.cache.get(key)
        current = self.endpoints.cache.get(key)
        if service is None:
            if current is not None and _managed_by_us(current):
                try:
                    await self.client.delete(
                        ENDPOINTS,
                        name,
                        namespace=namespace,
                        precondition_uid=current["metadata"].get("uid"),
                    )
                except (NotFoundError, ConflictError):
                    return
                log.debug("endpoint: deleted %s (service gone)", key)
            return
        if not has_selector(service):
            return
        subsets, truncated = self._subsets(service, namespace or "")
        labels = dict((service.get("metadata") or {}).get("labels") or {})
        labels[SKIP_MIRROR_LABEL] = "true"
        if is_headless(service):
            labels[HEADLESS_LABEL] = ""
        if current is None:
            body: dict[str, Any] = {"metadata": {"name": name, "labels": labels}}
            if truncated:
                body["metadata"]["annotations"] = {OVER_CAPACITY_ANNOTATION: "truncated"}
            if subsets:
                body["subsets"] = subsets
            try:
                await self.client.create(ENDPOINTS, body, namespace=namespace)
            except AlreadyExistsError:
                self.queue.add(key)  # our cache is behind; look again
                return
            log.debug("endpoint: created %s (%d subsets)", key, len(subsets))
            return
        annotations = dict((current.get("metadata") or {}).get("annotations") or {})
        if truncated:
            annotations[OVER_CAPACITY_ANNOTATION] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY_ANNOTATION, None)
        meta = current.get("metadata") or {}
        if (
            (current.get("subsets") or []) == subsets
            and (meta.get("labels") or {}) == labels
            and (meta.get("annotations") or {}) == annotations
        ):
            return
        body = copy.deepcopy(current)
        body["metadata"]["labels"] = labels
        body["metadata"]["annotations"] = annotations
        if subsets:
            body["subsets"] = subsets
        else:
            body.pop("subsets", None)
        try:
            await self.client.update(ENDPOINTS, body, namespace=namespace)
        except NotFoundError:
            self.queue.add(key)
            return
        log.debug("endpoint: updated %s (%d subsets)", key, len(subsets))

    def _subsets(
        self, service: dict[str, Any], namespace: str
    ) -> tuple[list[dict[str, Any]], bool]:
        spec = service.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        # port tuple (as JSON-ish key) -> (ports, ready addresses, not-ready addresses)
        groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]]
        groups = {}
        total = 0
        truncated = False
        for pod in _sorted_pods(self.pods.cache.by_index(INDEX_NAMESPACE, namespace)):
            if not service_selects(service, pod) or not pod_in_endpoints(pod, publish_not_ready):
                continue
            ports = endpoint_ports(service, pod)
            if ports is None:
                continue
            if total >= MAX_ENDPOINTS:
                truncated = True
                break
            total += 1
            address: dict[str, Any] = {"ip": pod_ip(pod), "targetRef": target_ref(pod)}
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                address["nodeName"] = node_name
            hostname = pod_hostname(service, pod)
            if hostname:
                address["hostname"] = hostname
            group_key = repr([(p.get("name"), p["port"], p["protocol"]) for p in ports])
            group = groups.setdefault(group_key, (ports, [], []))
            if publish_not_ready or is_pod_ready(pod):
                group[1].append(address)
            else:
                group[2].append(address)
        subsets: list[dict[str, Any]] = []
        for ports, ready, not_ready in groups.values():
            subset: dict[str, Any] = {}
            if ready:
                subset["addresses"] = sorted(ready, key=_address_order)
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=_address_order)
            if ports:
                subset["ports"] = ports
            subsets.append(subset)
        subsets.sort(key=lambda s: repr(s.get("ports")))
        return subsets, truncated


def _managed_by_us(endpoints: Mapping[str, Any]) -> bool:
    labels = (endpoints.get("metadata") or {}).get("labels") or {}
    return labels.get(SKIP_MIRROR_LABEL) == "true"


def _address_order(address: Mapping[str, Any]) -> tuple[str, str]:
    return (str(address.get("ip")), str((address.get("targetRef") or {}).get("name")))


def _sorted_pods(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first, so truncation keeps the longest-lived pods."""
    return sorted(
        pods,
        key=lambda p: (
            (p.get("metadata") or {}).get("creationTimestamp") or "",
            (p.get("metadata") or {}).get("name") or "",
        ),
    )
