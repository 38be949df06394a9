"""EndpointSlice controller: ``discovery.k8s.io/v1`` EndpointSlices for Services with selectors.

This module owns the EndpointSlices labelled
``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`` (and
``kubernetes.io/service-name: <service>``); slices managed by anyone else are never touched.

For each Service with a selector, every selected pod with an IP that has not finished for good
becomes an endpoint — terminating pods included — with conditions as upstream:
``serving`` = the pod is Ready, ``terminating`` = it has a deletionTimestamp, ``ready`` =
serving and not terminating; with ``publishNotReadyAddresses`` all three say ready/serving.
Endpoints carry ``nodeName``, ``targetRef``, ``hostname`` (when the pod's subdomain is the
Service) and ``zone`` (the node's ``topology.kubernetes.io/zone`` label, when known).

Pods are grouped by their resolved port list (named target ports differ per pod); each group
is split into slices of at most ``MAX_ENDPOINTS_PER_SLICE`` (100). Reconcile keeps churn low:
an endpoint stays in the slice that holds it, changed endpoints are updated in place, new ones
fill slices with room before a new slice is made, emptied slices are deleted. A Service with no
endpoints keeps one placeholder slice (no endpoints, no ports), as upstream. Slices are owned
by the Service (controller ownerReference), so the garbage collector removes them with it.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

from sampan.client import ApiError, ConflictError, NotFoundError
from sampan.client.api import ENDPOINTSLICES, NODES, PODS, SERVICES
from sampan.client.events import TYPE_WARNING
from sampan.client.informer import INDEX_NAMESPACE, object_key, split_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.endpoints import (
    HEADLESS_LABEL,
    endpoint_ports,
    has_selector,
    is_headless,
    is_pod_ready,
    pod_hostname,
    pod_in_endpoints,
    pod_ip,
    service_selects,
    services_for_pod,
    target_ref,
)

__all__ = [
    "CONTROLLER_NAME",
    "LABEL_MANAGED_BY",
    "LABEL_SERVICE_NAME",
    "MAX_ENDPOINTS_PER_SLICE",
    "EndpointSliceController",
]

log = logging.getLogger(__name__)

MAX_ENDPOINTS_PER_SLICE = 100
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
INDEX_SERVICE = "service"
# How long a write of ours may stay unseen by the informer before we stop waiting for it.
EXPECTATION_TIMEOUT_S = 5.0
_GONE = -1


def _index_service(obj: Mapping[str, Any]) -> tuple[str, ...]:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) != CONTROLLER_NAME or not labels.get(LABEL_SERVICE_NAME):
        return ()
    return (f"{meta.get('namespace')}/{labels[LABEL_SERVICE_NAME]}",)


def _address_type(ip: str) -> str:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return "FQDN"


def _ports_key(ports: list[dict[str, Any]]) -> str:
    return repr([(p.get("name") or "", p.get("port"), p.get("protocol")) for p in ports])


def _endpoint_id(endpoint: Mapping[str, Any]) -> str:
    ref = endpoint.get("targetRef") or {}
    return str(ref.get("uid") or ref.get("name") or (endpoint.get("addresses") or [""])[0])


class EndpointSliceController(QueueController):
    """Keeps EndpointSlices in step with Services and their pods."""

    name = "endpointslice"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.recorder = ctx.recorder("endpoint-slice-controller")
        self.services = self.watch(ctx.informers.informer(SERVICES))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.nodes = self.watch(ctx.informers.informer(NODES))
        self.slices = self.watch(ctx.informers.informer(ENDPOINTSLICES))
        self.slices.add_indexers({INDEX_SERVICE: _index_service})
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
        self.slices.add_event_handler(
            on_add=self._slice_changed,
            on_update=lambda _old, s: self._slice_changed(s),
            on_delete=self._slice_changed,
        )
        # Expectations: service key -> slice name -> (resourceVersion we wrote, or _GONE;
        # clock time of the write). Until the informer shows them, the service is not
        # reconciled again, so a slow watch never makes us create a second copy.
        self._expected: dict[str, dict[str, tuple[int, float]]] = {}

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        for key in services_for_pod(self.services.cache, pod):
            self.queue.add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        keys = set(services_for_pod(self.services.cache, new))
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            keys.update(services_for_pod(self.services.cache, old))
        for key in keys:
            self.queue.add(key)

    def _slice_changed(self, endpoint_slice: dict[str, Any]) -> None:
        for key in _index_service(endpoint_slice):
            self.queue.add(key)

    def _expect(self, key: str, slice_name: str, resource_version: Any) -> None:
        try:
            version = int(resource_version)
        except (TypeError, ValueError):
            return
        self._expected.setdefault(key, {})[slice_name] = (version, self.ctx.clock.now())

    def _caught_up(self, key: str, namespace: str) -> bool:
        pending = self._expected.get(key)
        if not pending:
            return True
        now = self.ctx.clock.now()
        for slice_name, (version, at_s) in list(pending.items()):
            cached = self.slices.cache.get(f"{namespace}/{slice_name}")
            if version == _GONE:
                seen = cached is None
            else:
                cached_rv = (cached or {}).get("metadata", {}).get("resourceVersion")
                seen = cached is not None and int(cached_rv or 0) >= version
            if seen or now - at_s > EXPECTATION_TIMEOUT_S:
                del pending[slice_name]
        if not pending:
            del self._expected[key]
            return True
        return False

    # -- desired state -----------------------------------------------------------------------

    def _desired(
        self, service: dict[str, Any], namespace: str
    ) -> dict[tuple[str, str], tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]]:
        """(address type, ports key) -> (ports, endpoint id -> endpoint)."""
        publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        groups: dict[tuple[str, str], tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]]
        groups = {}
        for pod in self.pods.cache.by_index(INDEX_NAMESPACE, namespace):
            if not service_selects(service, pod) or not pod_in_endpoints(pod, True):
                continue
            ports = endpoint_ports(service, pod)
            if ports is None:
                continue
            ip = pod_ip(pod)
            terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
            serving = publish_not_ready or is_pod_ready(pod)
            endpoint: dict[str, Any] = {
                "addresses": [ip],
                "conditions": {
                    "ready": publish_not_ready or (serving and not terminating),
                    "serving": serving,
                    "terminating": terminating,
                },
                "targetRef": target_ref(pod),
            }
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                endpoint["nodeName"] = node_name
                node = self.nodes.cache.get(node_name)
                zone = (((node or {}).get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL)
                if zone:
                    endpoint["zone"] = zone
            hostname = pod_hostname(service, pod)
            if hostname:
                endpoint["hostname"] = hostname
            group = groups.setdefault((_address_type(ip), _ports_key(ports)), (ports, {}))
            group[1][_endpoint_id(endpoint)] = endpoint
        return groups

    def _labels(self, service: dict[str, Any]) -> dict[str, str]:
        labels = dict((service.get("metadata") or {}).get("labels") or {})
        labels[LABEL_SERVICE_NAME] = service["metadata"]["name"]
        labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
        if is_headless(service):
            labels[HEADLESS_LABEL] = ""
        else:
            labels.pop(HEADLESS_LABEL, None)
        return labels

    # -- reconcile ---------------------------------------------------------------------------

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
                    "FailedToUpdateEndpointSlices",
                    f"Error updating EndpointSlices for Service {key}: {exc}",
                )
            raise

    async def _sync(self, key: str) -> None:
        namespace, name = split_key(key)
        if not self._caught_up(key, namespace or ""):
            log.debug("endpointslice: %s waits for the informer to see our writes", key)
            self.queue.add_after(key, EXPECTATION_TIMEOUT_S)
            return
        service = self.services.cache.get(key)
        existing = self.slices.cache.by_index(INDEX_SERVICE, key)
        if service is None or not has_selector(service):
            # Service gone: the GC removes owned slices; a selector removed: we do.
            if service is not None:
                for endpoint_slice in existing:
                    await self._delete(endpoint_slice, key)
            return
        labels = self._labels(service)
        owner = {
            "apiVersion": "v1",
            "kind": "Service",
            "name": name,
            "uid": service["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        desired = self._desired(service, namespace or "")
        by_group: dict[tuple[str, str], list[dict[str, Any]]] = {}
        stale: list[dict[str, Any]] = []
        for endpoint_slice in existing:
            group_key = (
                endpoint_slice.get("addressType") or "IPv4",
                _ports_key(endpoint_slice.get("ports") or []),
            )
            if group_key in desired:
                by_group.setdefault(group_key, []).append(endpoint_slice)
            else:
                stale.append(endpoint_slice)

        writes: list[tuple[str, dict[str, Any]]] = []  # ("create"|"update", body)
        for group_key, (ports, wanted) in desired.items():
            writes.extend(
                _plan_group(
                    group_key[0], ports, wanted, by_group.get(group_key, []), labels, owner, stale
                )
            )
        if not desired:
            # Keep (or make) one placeholder slice; everything else goes.
            placeholder = next(
                (s for s in stale if not s.get("endpoints") and not s.get("ports")), None
            )
            if placeholder is None:
                writes.append(("create", _new_slice(name, "IPv4", [], [], labels, owner)))
            else:
                stale.remove(placeholder)
                if (placeholder.get("metadata") or {}).get("labels") != labels:
                    body = copy.deepcopy(placeholder)
                    body["metadata"]["labels"] = labels
                    writes.append(("update", body))

        for verb, body in writes:
            try:
                if verb == "create":
                    created = await self.client.create(ENDPOINTSLICES, body, namespace=namespace)
                    self._expect(
                        key, created["metadata"]["name"], created["metadata"]["resourceVersion"]
                    )
                    log.debug(
                        "endpointslice: created %s/%s for %s (%d endpoints)",
                        namespace,
                        created["metadata"]["name"],
                        key,
                        len(body.get("endpoints") or []),
                    )
                else:
                    updated = await self.client.update(ENDPOINTSLICES, body, namespace=namespace)
                    self._expect(
                        key, updated["metadata"]["name"], updated["metadata"]["resourceVersion"]
                    )
                    log.debug(
                        "endpointslice: updated %s/%s for %s (%d endpoints)",
                        namespace,
                        body["metadata"]["name"],
                        key,
                        len(body.get("endpoints") or []),
                    )
            except NotFoundError:
                self.queue.add(key)
        for endpoint_slice in stale:
            await self._delete(endpoint_slice, key)

    async def _delete(self, endpoint_slice: dict[str, Any], key: str) -> None:
        meta = endpoint_slice["metadata"]
        self._expect(key, meta["name"], _GONE)
        try:
            await self.client.delete(
                ENDPOINTSLICES,
                meta["name"],
                namespace=meta["namespace"],
                precondition_uid=meta.get("uid"),
            )
        except (NotFoundError, ConflictError):
            return
        log.debug("endpointslice: deleted %s/%s", meta["namespace"], meta["name"])


def _new_slice(
    service_name: str,
    address_type: str,
    ports: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
    labels: dict[str, str],
    owner: dict[str, Any],
) -> dict[str, Any]:
    return {
        "metadata": {
            "generateName": f"{service_name}-",
            "labels": dict(labels),
            "ownerReferences": [owner],
        },
        "addressType": address_type,
        "ports": copy.deepcopy(ports),
        "endpoints": endpoints,
    }


def _plan_group(
    address_type: str,
    ports: list[dict[str, Any]],
    wanted: dict[str, dict[str, Any]],
    slices: list[dict[str, Any]],
    labels: dict[str, str],
    owner: dict[str, Any],
    stale: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """Writes that make ``slices`` hold exactly ``wanted``; emptied slices go to ``stale``."""
    writes: list[tuple[str, dict[str, Any]]] = []
    placed: set[str] = set()
    kept: list[tuple[dict[str, Any], list[dict[str, Any]], bool]] = []  # slice, endpoints, dirty
    for endpoint_slice in sorted(slices, key=lambda s: s["metadata"]["name"]):
        current = endpoint_slice.get("endpoints") or []
        new_endpoints: list[dict[str, Any]] = []
        for endpoint in current:
            endpoint_id = _endpoint_id(endpoint)
            if endpoint_id in wanted and endpoint_id not in placed:
                new_endpoints.append(wanted[endpoint_id])
                placed.add(endpoint_id)
        dirty = new_endpoints != current or (
            (endpoint_slice.get("metadata") or {}).get("labels") != labels
        )
        kept.append((endpoint_slice, new_endpoints, dirty))
    fresh = [endpoint for eid, endpoint in sorted(wanted.items()) if eid not in placed]
    # Fill slices that have room, fullest first (fewer writes), then make new ones.
    for index, (endpoint_slice, endpoints, _dirty) in sorted(
        enumerate(kept), key=lambda item: -len(item[1][1])
    ):
        room = MAX_ENDPOINTS_PER_SLICE - len(endpoints)
        if fresh and room > 0 and endpoints:
            endpoints.extend(fresh[:room])
            fresh = fresh[room:]
            kept[index] = (endpoint_slice, endpoints, True)
    for index, (endpoint_slice, endpoints, _dirty) in enumerate(kept):
        if fresh and not endpoints:
            endpoints.extend(fresh[:MAX_ENDPOINTS_PER_SLICE])
            fresh = fresh[MAX_ENDPOINTS_PER_SLICE:]
            kept[index] = (endpoint_slice, endpoints, True)
    for endpoint_slice, endpoints, dirty in kept:
        if not endpoints:
            stale.append(endpoint_slice)
        elif dirty:
            body = copy.deepcopy(endpoint_slice)
            body["metadata"]["labels"] = dict(labels)
            body["endpoints"] = endpoints
            writes.append(("update", body))
    while fresh:
        chunk, fresh = fresh[:MAX_ENDPOINTS_PER_SLICE], fresh[MAX_ENDPOINTS_PER_SLICE:]
        writes.append(
            ("create", _new_slice(owner["name"], address_type, ports, chunk, labels, owner))
        )
    return writes
