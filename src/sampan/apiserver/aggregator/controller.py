"""``Aggregator``: the API server's aggregation layer (kube-aggregator's controllers, in-process).

It owns four jobs, all over the storage layer's caches:

* **Automatic local APIServices** (autoregister / crdregistration): every group-version the
  registry serves gets ``<version>.<group>`` with ``spec.service`` unset and upstream's
  priorities, labelled ``kube-aggregator.kubernetes.io/automanaged``: ``onstart`` for built-in
  groups (written at start, then left to the user), ``true`` for CRD group-versions (kept in
  step with the CRDs, deleted when the group-version is no longer served). APIServices without
  the label are never touched.
* **Availability** (``status.conditions[type=Available]``): ``Local`` for local ones; for
  the others the Service and its endpoints are resolved (``ServiceNotFound``,
  ``ServicePortError``, ``EndpointsNotFound``, ``MissingEndpoints``) and the backend's
  ``/apis/<group>/<version>`` is fetched as ``system:kube-aggregator`` (``FailedDiscoveryCheck``
  or ``Passed``). Checked just after start (off the start path, so a silent backend never
  delays readiness; until then the stored condition counts), every ``PROBE_INTERVAL_S``, on
  any change to APIServices, Services, Endpoints, EndpointSlices or CRDs, and at once when a
  proxied request cannot dial.
  Upstream's check skips certificate verification; this one verifies with ``caBundle`` as the
  proxy does (the discovery documents it fetches are served to clients), so a wrong bundle
  shows as ``FailedDiscoveryCheck`` instead of as failing requests.
  The condition is written only when it changes.
* **Discovery**: the APIResourceList a passing check fetched is cached per APIService and
  merged into ``/apis`` and aggregated discovery (``discovery.py``); ``/apis/<group>`` of a
  remote group is answered locally from the APIServices, as upstream does.
* **The front-proxy trust**: ConfigMap ``kube-system/extension-apiserver-authentication``
  (client CA, request-header CA, header names, allowed names) is written at start, so
  extension servers can verify who is calling.

Proxying (``proxy``) goes to a ready endpoint of the APIService's Service; a request to an
APIService that is not Available is answered 503 at once, as upstream.

Tasks: ``aggregator-watch-<resource>`` (wake-ups) and ``aggregator-loop``; named, their failure
logged, cancelled by ``stop``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import logging
import ssl
from typing import Any

import aiohttp
from aiohttp import web

from sampan.api import times
from sampan.api.apiregistration import apiservice_name
from sampan.api.errors import InternalError, NotFound, ServiceUnavailable, StatusError
from sampan.api.resources import ResourceRegistry, builtin_api_priority
from sampan.apiserver.aggregator import discovery
from sampan.apiserver.aggregator.proxy import BackendTransport, identity_headers
from sampan.apiserver.aggregator.resolve import Backend, BackendUnavailable, resolve_backend
from sampan.apiserver.auth.authn import (
    REQUEST_HEADER_EXTRA_PREFIX,
    REQUEST_HEADER_GROUP,
    REQUEST_HEADER_USER,
)
from sampan.apiserver.auth.user import UserInfo
from sampan.apiserver.storage import DeleteOptions, Storage
from sampan.datastore import StoreError
from sampan.pki import AUTH_PROXY_USER
from sampan.tasks import log_task_end

__all__ = [
    "AUTH_CONFIGMAP",
    "AUTOMANAGED_LABEL",
    "PROBE_INTERVAL_S",
    "Aggregator",
]

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 10.0
"""How often every remote APIService's backend is checked even when nothing changed."""
PROBE_TIMEOUT_S = 5.0
"""How long one availability check may take (upstream: 5 s)."""
DEBOUNCE_S = 0.1
"""Wake-ups arriving together (a CRD registering several versions) make one pass."""
ERROR_BACKOFF_MIN_S = 0.2
ERROR_BACKOFF_MAX_S = 5.0
AUTOMANAGED_LABEL = "kube-aggregator.kubernetes.io/automanaged"
CRD_GROUP_PRIORITY = 1000
CRD_VERSION_PRIORITY = 100
AUTH_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
UNAVAILABLE_MESSAGE = "the server is currently unable to handle the request"
CHECK_USER = UserInfo(name="system:kube-aggregator", groups=("system:masters",))

JSONObj = dict[str, Any]


def _now() -> str:
    return times.now()


def _spec(obj: JSONObj) -> JSONObj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _name(obj: JSONObj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _available_condition(obj: JSONObj) -> JSONObj | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Available":
            return condition
    return None


class Aggregator:
    """See the module docstring. Build after the storage started; ``start``/``stop``."""

    def __init__(
        self,
        storage: Storage,
        registry: ResourceRegistry,
        pki: Any,
        *,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._registry = registry
        self._pki = pki
        self._probe_interval_s = probe_interval_s

        def store(group: str, version: str, plural: str) -> Any:
            info = registry.by_resource(group, version, plural)
            assert info is not None, plural
            return storage.for_resource(info)

        self._storage = storage
        self._apiservices = store("apiregistration.k8s.io", "v1", "apiservices")
        self._services = store("", "v1", "services")
        self._endpoints = store("", "v1", "endpoints")
        self._slices = store("discovery.k8s.io", "v1", "endpointslices")
        self._configmaps = store("", "v1", "configmaps")
        self._crds = store("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        self._transport = BackendTransport(
            str(pki.auth_proxy_cert_path), str(pki.auth_proxy_key_path)
        )
        self._available: dict[str, bool] = {}
        self._discovery: dict[str, tuple[JSONObj, bool]] = {}  # name -> (resource list, stale)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._remote_index: tuple[int, dict[str, JSONObj]] = (-1, {})

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._storage.wait_ready()
        # Until checked again, an APIService is as available as its stored condition says
        # (as upstream's proxy reads it), so a restart does not interrupt working backends.
        for obj in self._apiservices.cached_objects(None):
            condition = _available_condition(obj)
            self._available[_name(obj)] = (
                condition is not None and condition.get("status") == "True"
            )
        try:
            await self.publish_authentication_config()
            await self.sync_local_apiservices(include_onstart=True)
        except (StatusError, StoreError) as exc:
            log.warning("initial aggregator pass failed (%s); retrying in the background", exc)
        # Backends are probed by the loop at once, never on the start path: a backend that
        # does not answer must not delay the server's readiness.
        self._wake.set()
        watched = {
            "apiservices": self._apiservices,
            "services": self._services,
            "endpoints": self._endpoints,
            "endpointslices": self._slices,
            "customresourcedefinitions": self._crds,
        }
        for resource, store in watched.items():
            self._spawn(f"aggregator-watch-{resource}", self._watch(store))
        self._spawn("aggregator-loop", self._loop())

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._transport.close()

    def _spawn(self, name: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(log_task_end)
        self._tasks.append(task)

    async def _watch(self, store: Any) -> None:
        backoff_s = ERROR_BACKOFF_MIN_S
        while True:
            try:
                async for event in store.watch(None):
                    backoff_s = ERROR_BACKOFF_MIN_S
                    if event.type != "BOOKMARK":
                        self._wake.set()
            except (StatusError, StoreError) as exc:
                log.debug("aggregator watch ended (%s); watching again", exc)
            self._wake.set()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, ERROR_BACKOFF_MAX_S)

    async def _loop(self) -> None:
        backoff_s = ERROR_BACKOFF_MIN_S
        while True:
            try:
                async with asyncio.timeout(self._probe_interval_s):  # no helper task
                    await self._wake.wait()
                await asyncio.sleep(DEBOUNCE_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.sync_local_apiservices(include_onstart=False)
                await self.check_all()
                backoff_s = ERROR_BACKOFF_MIN_S
            except (StatusError, StoreError) as exc:
                log.warning("aggregator pass failed: %s; retrying in %.1fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, ERROR_BACKOFF_MAX_S)

    # --- the front-proxy trust ConfigMap ----------------------------------------------------

    async def publish_authentication_config(self) -> None:
        namespace, name = AUTH_CONFIGMAP
        data = {
            "client-ca-file": self._pki.client_ca_pem.decode("ascii"),
            "requestheader-client-ca-file": self._pki.request_header_ca_pem.decode("ascii"),
            "requestheader-username-headers": json.dumps([REQUEST_HEADER_USER]),
            "requestheader-group-headers": json.dumps([REQUEST_HEADER_GROUP]),
            "requestheader-extra-headers-prefix": json.dumps([REQUEST_HEADER_EXTRA_PREFIX]),
            "requestheader-allowed-names": json.dumps([AUTH_PROXY_USER]),
        }
        try:
            current = await self._configmaps.get(namespace, name)
        except NotFound:
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": data,
            }
            await self._configmaps.create(obj)
            return
        if current.get("data") != data:

            def mutate(obj: JSONObj) -> JSONObj:
                return {**obj, "data": data}

            await self._configmaps.guaranteed_update(namespace, name, mutate)

    # --- automatic local APIServices --------------------------------------------------------

    def _wanted_local(self) -> dict[str, JSONObj]:
        wanted: dict[str, JSONObj] = {}
        for group in self._registry.groups():
            for version in group.versions:
                priority = builtin_api_priority(group.name, version)
                if priority is not None:
                    managed = "onstart"
                else:
                    managed = "true"
                    priority = (CRD_GROUP_PRIORITY, CRD_VERSION_PRIORITY)
                name = apiservice_name(group.name, version)
                wanted[name] = {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": name, "labels": {AUTOMANAGED_LABEL: managed}},
                    "spec": {
                        "group": group.name,
                        "version": version,
                        "groupPriorityMinimum": priority[0],
                        "versionPriority": priority[1],
                    },
                }
        return wanted

    async def sync_local_apiservices(self, *, include_onstart: bool) -> None:
        wanted = self._wanted_local()
        existing = {_name(o): o for o in self._apiservices.cached_objects(None)}
        for name, want in wanted.items():
            current = existing.get(name)
            managed = want["metadata"]["labels"][AUTOMANAGED_LABEL]
            if current is None:
                if managed == "onstart" and not include_onstart:
                    continue  # deleted by the user after start: back at the next start
                try:
                    await self._apiservices.create(want)
                except StatusError as exc:
                    if exc.code != 409:
                        raise
                continue
            labels = (current.get("metadata") or {}).get("labels") or {}
            if labels.get(AUTOMANAGED_LABEL) != managed:
                continue  # the user's own, or managed differently: not ours to rewrite
            if managed == "onstart" and not include_onstart:
                continue
            if _spec(current) != want["spec"]:
                spec = want["spec"]

                def mutate(obj: JSONObj, spec: JSONObj = spec) -> JSONObj:
                    return {**obj, "spec": copy.deepcopy(spec)}

                await self._apiservices.guaranteed_update(None, name, mutate)
        for name, current in existing.items():
            labels = (current.get("metadata") or {}).get("labels") or {}
            if labels.get(AUTOMANAGED_LABEL) == "true" and name not in wanted:
                try:
                    await self._apiservices.delete(None, name, DeleteOptions())
                except NotFound:
                    pass

    # --- availability -----------------------------------------------------------------------

    def _resolve(self, apiservice: JSONObj) -> Backend:
        return resolve_backend(
            _spec(apiservice)["service"],
            services=lambda ns: self._services.cached_objects(ns),
            endpoints=lambda ns: self._endpoints.cached_objects(ns),
            endpoint_slices=lambda ns: self._slices.cached_objects(ns),
        )

    async def _context(self, apiservice: JSONObj) -> ssl.SSLContext:
        spec = _spec(apiservice)
        ca_bundle = str(spec.get("caBundle") or "")
        pem = ""
        if ca_bundle:
            try:
                pem = base64.b64decode(ca_bundle).decode("ascii", "replace")
            except (binascii.Error, ValueError):
                pem = ""
        return await self._transport.ssl_context(pem, spec.get("insecureSkipTLSVerify") is True)

    async def check_all(self) -> None:
        apiservices = list(self._apiservices.cached_objects(None))
        names = {_name(o) for o in apiservices}
        for gone in set(self._discovery) - names:
            del self._discovery[gone]
        for gone in set(self._available) - names:
            del self._available[gone]
        remote = [o for o in apiservices if isinstance(_spec(o).get("service"), dict)]
        local = [o for o in apiservices if not isinstance(_spec(o).get("service"), dict)]
        # Backends are probed concurrently (each bounded by PROBE_TIMEOUT_S); local ones
        # need no I/O and spawn no tasks.
        results = [await self._check(o) for o in local]
        if remote:
            results += await asyncio.gather(*(self._check(o) for o in remote))
        for obj, (status, reason, message) in zip([*local, *remote], results, strict=True):
            self._available[_name(obj)] = status == "True"
            await self._write_condition(obj, status, reason, message)

    async def _check(self, apiservice: JSONObj) -> tuple[str, str, str]:
        spec = _spec(apiservice)
        name = _name(apiservice)
        if not isinstance(spec.get("service"), dict):
            self._discovery.pop(name, None)
            return "True", "Local", "Local APIServices are always available"
        try:
            backend = self._resolve(apiservice)
        except BackendUnavailable as exc:
            self._mark_stale(name)
            return "False", exc.reason, exc.message
        path = f"/apis/{spec.get('group')}/{spec.get('version')}"
        url = backend.base_url + path
        try:
            context = await self._context(apiservice)
            status, body = await self._transport.get(
                backend, path, context, identity_headers(CHECK_USER), PROBE_TIMEOUT_S
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self._mark_stale(name)
            detail = str(exc) or type(exc).__name__
            return (
                "False",
                "FailedDiscoveryCheck",
                # Worded as upstream's, with Go's url.Error inside.
                f'failing or missing response from {url}: Get "{url}": {detail}',
            )
        if not 200 <= status < 300:
            self._mark_stale(name)
            return (
                "False",
                "FailedDiscoveryCheck",
                f"failing or missing response from {url}: bad status from {url}: {status}",
            )
        try:
            resource_list = json.loads(body)
            if not isinstance(resource_list, dict):
                raise ValueError("not an object")
            self._discovery[name] = (resource_list, False)
        except ValueError:
            log.info("APIService %s: discovery document is not JSON", name)
            self._mark_stale(name)
        return "True", "Passed", "all checks passed"

    def _mark_stale(self, name: str) -> None:
        cached = self._discovery.get(name)
        if cached is not None:
            self._discovery[name] = (cached[0], True)

    async def _write_condition(self, obj: JSONObj, status: str, reason: str, message: str) -> None:
        old = _available_condition(obj)
        if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
            status,
            reason,
            message,
        ):
            return

        def mutate(current: JSONObj) -> JSONObj:
            current = copy.deepcopy(current)
            status_obj = current.get("status")
            if not isinstance(status_obj, dict):
                status_obj = current["status"] = {}
            conditions = [c for c in status_obj.get("conditions") or [] if isinstance(c, dict)]
            new = {
                "type": "Available",
                "status": status,
                "lastTransitionTime": _now(),
                "reason": reason,
                "message": message,
            }
            for i, condition in enumerate(conditions):
                if condition.get("type") == "Available":
                    if condition.get("status") == status and condition.get("lastTransitionTime"):
                        new["lastTransitionTime"] = condition["lastTransitionTime"]
                    conditions[i] = new
                    break
            else:
                conditions.append(new)
            status_obj["conditions"] = conditions
            current["metadata"].pop("resourceVersion", None)
            return current

        try:
            await self._apiservices.guaranteed_update(
                None, _name(obj), mutate, subresource="status"
            )
        except NotFound:
            pass  # deleted meanwhile
        if status == "False":
            log.info("APIService %s unavailable: %s: %s", _name(obj), reason, message)

    # --- routing and proxying ---------------------------------------------------------------

    def _all(self) -> list[JSONObj]:
        return list(self._apiservices.cached_objects(None))

    def remote_apiservice(self, group: str, version: str) -> JSONObj | None:
        """The APIService with a ``spec.service`` serving ``group``/``version``, if any.
        Called for every ``/apis/...`` request: a dict lookup, rebuilt when the cache moves."""
        generation = self._apiservices.generation
        if self._remote_index[0] != generation:
            index = {
                _name(o): o
                for o in self._apiservices.cached_objects(None)
                if isinstance(_spec(o).get("service"), dict)
            }
            self._remote_index = (generation, index)
        return self._remote_index[1].get(apiservice_name(group, version))

    def remote_group(self, group: str) -> JSONObj | None:
        """The APIGroup document of a group only backends serve (None if any part is local
        or nothing serves it)."""
        if not group or any(g.name == group for g in self._registry.groups()):
            return None
        apiservices = self._all()
        remote = [
            o
            for o in apiservices
            if _spec(o).get("group") == group and isinstance(_spec(o).get("service"), dict)
        ]
        if not remote:
            return None
        versions = discovery.version_order(remote, group)
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    async def proxy(
        self, request: web.Request, apiservice: JSONObj, user: Any
    ) -> web.StreamResponse:
        name = _name(apiservice)
        if not self._available.get(name, False):
            self._wake.set()
            raise ServiceUnavailable(UNAVAILABLE_MESSAGE)
        try:
            backend = self._resolve(apiservice)
        except BackendUnavailable as exc:
            self._wake.set()
            raise ServiceUnavailable(UNAVAILABLE_MESSAGE) from exc
        try:
            context = await self._context(apiservice)
        except (ssl.SSLError, ValueError) as exc:  # upstream's transport-building error
            raise InternalError(f"unable to build the transport for {name}: {exc}") from exc

        def unreachable() -> None:
            self._available[name] = False
            self._wake.set()

        return await self._transport.forward(
            request, backend, context, user, on_unreachable=unreachable
        )

    # --- discovery ----------------------------------------------------------------------------

    def merge_group_list(self, local: JSONObj) -> JSONObj:
        apiservices = self._all()
        remote: dict[str, list[str]] = {}
        for obj in apiservices:
            spec = _spec(obj)
            if isinstance(spec.get("service"), dict) and spec.get("group"):
                remote.setdefault(str(spec["group"]), [])
        for group in remote:
            served = [
                o
                for o in apiservices
                if _spec(o).get("group") == group and isinstance(_spec(o).get("service"), dict)
            ]
            remote[group] = discovery.version_order(served, group)
        return discovery.merge_group_list(local, remote, apiservices)

    def merge_aggregated(self, local: JSONObj) -> JSONObj:
        apiservices = self._all()
        remote: dict[str, list[JSONObj]] = {}
        for obj in apiservices:
            spec = _spec(obj)
            cached = self._discovery.get(_name(obj))
            if not isinstance(spec.get("service"), dict) or cached is None:
                continue
            resource_list, stale = cached
            remote.setdefault(str(spec.get("group") or ""), []).append(
                discovery.resource_list_to_version(
                    resource_list, str(spec.get("version") or ""), stale=stale
                )
            )
        return discovery.merge_aggregated(local, remote, apiservices)
