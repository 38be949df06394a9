"""The metrics server: scrapes every node's kubelet and serves ``metrics.k8s.io/v1beta1``
as an aggregated API server (upstream's metrics-server, in process).

* Scraping: every ``scrape_interval_s`` (metrics-server's 15 s by default) each Node's kubelet
  ``/metrics/resource`` is read over TLS with the kubelet client identity, at the Node's
  ``InternalIP`` (else first address) and ``status.daemonEndpoints.kubeletEndpoint.Port``.
  A kubelet that does not answer keeps no sample; its node and pods drop out of the answers
  without failing them (``MetricsStore``).
* Serving: its own HTTPS listener (``bind_address``:``port``). ``/healthz``, ``/livez`` and
  ``/readyz`` answer anyone. Everything else requires a client certificate signed by the
  request-header CA (``requestheader_ca_path``; the API server's front-proxy client), with a
  common name in ``requestheader_allowed_names`` when that is not empty; the user is then the
  ``X-Remote-User`` header and the groups ``X-Remote-Group``, as upstream's request-header
  authenticator. Authorization is the aggregating API server's (it authorizes every request
  before it proxies); a caller without such a certificate gets 401 and one whose front-proxy
  request names no user 401 too. Without a request-header CA nobody is authenticated.
  The configured port is used when free, else any free port (the Endpoints say which).
* Registration: at start (and again after a failure, every ``REGISTER_RETRY_S``) the Service
  ``kube-system/metrics-server``, its Endpoints and EndpointSlice (``advertise_address``:``port``,
  the Service has no selector) and the
  APIService ``v1beta1.metrics.k8s.io`` are created or updated, as upstream's manifests do.

Routes: ``/apis``, ``/apis/metrics.k8s.io``, ``/apis/metrics.k8s.io/v1beta1`` (discovery),
``.../nodes``, ``.../nodes/<name>``, ``.../pods``, ``.../namespaces/<ns>/pods[/<name>]``, with
``labelSelector`` (and ``fieldSelector`` of ``metadata.name``/``metadata.namespace``) on lists.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from cryptography import x509

from sampan.addons.metrics.store import GROUP_VERSION, MetricsStore, parse_resource_metrics
from sampan.api.labels import SelectorError, parse_selector
from sampan.client import AlreadyExistsError, Client, ClientConfig, ClientError, NotFoundError
from sampan.client.api import ENDPOINTS, ENDPOINTSLICES, NODES, PODS, SERVICES, Resource
from sampan.client.informer import Informer
from sampan.pki.tls import server_ssl_context

__all__ = [
    "APISERVICE_NAME",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "MetricsServer",
    "MetricsServerOptions",
    "MetricsServerRemoval",
]

log = logging.getLogger("sampan.addons.metrics")

DEFAULT_METRICS_PORT = 4443  # metrics-server's own default secure port
DEFAULT_SCRAPE_INTERVAL_S = 15.0
SCRAPE_TIMEOUT_S = 10.0
REGISTER_RETRY_S = 10.0
APISERVICE_NAME = "v1beta1.metrics.k8s.io"
SERVICE_NAMESPACE = "kube-system"
SERVICE_NAME = "metrics-server"
SLICE_MANAGER = "metrics-server.sampan.io"  # not the EndpointSlice controller's: it leaves it
APISERVICES = Resource("apiregistration.k8s.io", "v1", "apiservices", "APIService", False)
_OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


@dataclass(frozen=True)
class MetricsServerOptions:
    serving_cert_path: Path
    serving_key_path: Path
    requestheader_ca_path: Path | None  # CA of the front-proxy client certs; None: all 401
    kubelet_client_cert_path: Path
    kubelet_client_key_path: Path
    kubelet_ca_path: Path  # CA of the kubelets' serving certificates
    requestheader_allowed_names: tuple[str, ...] = ()
    bind_address: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT  # 0: any free port (tests)
    advertise_address: str = ""  # the Endpoints address; default: bind_address
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S
    register: bool = True
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)


@dataclass(frozen=True)
class _User:
    name: str
    groups: tuple[str, ...] = field(default=())


def _status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


class MetricsServer:
    """The component (``name``, ``start(ctx)``, ``stop()``)."""

    name = "metrics-server"

    def __init__(self, client_config: ClientConfig, options: MetricsServerOptions) -> None:
        self.client_config = client_config
        self.options = options
        self.store = MetricsStore()
        self._client: Client | None = None
        self._nodes: Informer | None = None
        self._pods: Informer | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, ctx: _FailureSink | None = None) -> None:
        del ctx
        serving = await asyncio.to_thread(
            server_ssl_context,
            self.options.serving_cert_path,
            self.options.serving_key_path,
            client_ca_file=self.options.requestheader_ca_path,
        )
        kubelet_tls = await asyncio.to_thread(self._kubelet_context)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=kubelet_tls),
            timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S),
        )
        self._client = Client(self.client_config)
        self._nodes = Informer(self._client, NODES)
        self._pods = Informer(self._client, PODS)
        self._nodes.start()
        self._pods.start()
        app = web.Application(middlewares=[self._auth_middleware])
        r = app.router
        for path in _OPEN_PATHS:
            r.add_get(path, self._ok)
        r.add_get("/apis", self._group_list)
        r.add_get("/apis/metrics.k8s.io", self._group)
        r.add_get("/apis/metrics.k8s.io/", self._group)
        r.add_get("/apis/metrics.k8s.io/v1beta1", self._resources)
        r.add_get("/apis/metrics.k8s.io/v1beta1/", self._resources)
        r.add_get("/apis/metrics.k8s.io/v1beta1/nodes", self._list_nodes)
        r.add_get("/apis/metrics.k8s.io/v1beta1/nodes/{name}", self._get_node)
        r.add_get("/apis/metrics.k8s.io/v1beta1/pods", self._list_pods)
        r.add_get("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", self._list_pods)
        r.add_get("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}", self._get_pod)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            try:
                site = web.TCPSite(
                    runner, self.options.bind_address, self.options.port, ssl_context=serving
                )
                await site.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not self.options.port:
                    raise
                # Another server on this host has it (several servers on one machine): any
                # free port does, since the Endpoints advertise the one bound.
                log.warning(
                    "metrics server: port %d in use; listening on a free port",
                    self.options.port,
                )
                site = web.TCPSite(runner, self.options.bind_address, 0, ssl_context=serving)
                await site.start()
        except BaseException:
            await runner.cleanup()
            await self._close_clients()
            raise
        self._runner = runner
        addresses = [a for a in runner.addresses if isinstance(a, tuple)]
        self._port = addresses[0][1] if addresses else self.options.port
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._scrape_loop(), name="metrics-server-scrape"))
        if self.options.register:
            self._tasks.append(
                loop.create_task(self._register_loop(), name="metrics-server-register")
            )
        log.info("metrics server listening on %s:%d", self.options.bind_address, self._port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._close_clients()

    async def _close_clients(self) -> None:
        for informer in (self._nodes, self._pods):
            if informer is not None:
                await informer.stop()
        self._nodes = self._pods = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _kubelet_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.options.kubelet_ca_path))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(
            str(self.options.kubelet_client_cert_path), str(self.options.kubelet_client_key_path)
        )
        return context

    # --- scraping ------------------------------------------------------------------------

    async def _scrape_loop(self) -> None:
        assert self._nodes is not None
        await self._nodes.wait_synced()
        while True:
            started = time.monotonic()
            try:
                await self.scrape_once()
            except Exception:
                log.exception("metrics scrape failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.options.scrape_interval_s - elapsed))

    async def scrape_once(self) -> None:
        """Scrape every node once, concurrently; a failing kubelet is logged and skipped."""
        assert self._nodes is not None
        nodes = self._nodes.cache.list()
        await asyncio.gather(*(self._scrape_node(n) for n in nodes))
        self.store.forget_except(n["metadata"]["name"] for n in nodes)

    async def _scrape_node(self, node: dict[str, Any]) -> None:
        assert self._session is not None
        name = node["metadata"]["name"]
        status = node.get("status") or {}
        addresses = status.get("addresses") or []
        address = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), None)
        if address is None and addresses:
            address = addresses[0].get("address")
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not port:
            return
        host = f"[{address}]" if ":" in address else address
        url = f"https://{host}:{port}/metrics/resource"
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    log.warning("scraping node %s: HTTP %d", name, response.status)
                    return
                text = await response.text()
            scrape = parse_resource_metrics(name, text, at=time.time())
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            log.warning("scraping node %s failed: %s", name, exc)
            return
        self.store.add(scrape)

    # --- registration --------------------------------------------------------------------

    async def _register_loop(self) -> None:
        while True:
            try:
                await self.register()
                return
            except ClientError as exc:
                log.warning("metrics server: registering the APIService failed: %s", exc)
            await asyncio.sleep(REGISTER_RETRY_S)

    async def register(self) -> None:
        """Create or update the Service, Endpoints and APIService (idempotent)."""
        assert self._client is not None
        address = self.options.advertise_address or self.options.bind_address
        labels = {"k8s-app": "metrics-server"}
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": labels},
            "spec": {
                "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": self._port}
                ]
            },
        }
        endpoints = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": labels},
            "subsets": [
                {
                    "addresses": [{"ip": address}],
                    "ports": [{"name": "https", "port": self._port, "protocol": "TCP"}],
                }
            ],
        }
        apiservice = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE_NAME, "labels": labels},
            "spec": {
                "service": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        await self._apply(SERVICES, service, SERVICE_NAMESPACE, ("spec",))
        await self._apply(ENDPOINTS, endpoints, SERVICE_NAMESPACE, ("subsets",))
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": SERVICE_NAME,
                "namespace": SERVICE_NAMESPACE,
                "labels": {
                    **labels,
                    "kubernetes.io/service-name": SERVICE_NAME,
                    "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
                },
            },
            "addressType": "IPv6" if ":" in address else "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": self._port, "protocol": "TCP"}],
        }
        await self._apply(ENDPOINTSLICES, slice_, SERVICE_NAMESPACE, ("endpoints", "ports"))
        await self._apply(APISERVICES, apiservice, None, ("spec",))

    async def _apply(
        self, resource: Resource, obj: dict[str, Any], namespace: str | None, keys: tuple[str, ...]
    ) -> None:
        assert self._client is not None
        name = obj["metadata"]["name"]
        try:
            current = await self._client.get(resource, name, namespace=namespace)
        except NotFoundError:
            try:
                await self._client.create(resource, obj, namespace=namespace)
                return
            except AlreadyExistsError:  # created meanwhile: update that one
                current = await self._client.get(resource, name, namespace=namespace)
        changed = dict(current)
        for key in keys:
            if key == "spec" and resource is SERVICES:
                spec = dict(current.get("spec") or {})
                spec["ports"] = obj["spec"]["ports"]
                changed["spec"] = spec
            else:
                changed[key] = obj[key]
        if changed != current:
            await self._client.update(resource, changed, namespace=namespace)

    # --- authentication ------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> _User | None:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None  # no client certificate, or one the request-header CA did not sign
        if self.options.requestheader_allowed_names:
            cert = x509.load_der_x509_certificate(der)
            names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
            if not any(n in self.options.requestheader_allowed_names for n in names):
                return None
        user = next(
            (request.headers[h] for h in self.options.username_headers if request.headers.get(h)),
            "",
        )
        if not user:
            return None
        groups: list[str] = []
        for header in self.options.group_headers:
            groups.extend(request.headers.getall(header, []))
        return _User(user, tuple(groups))

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in _OPEN_PATHS:
            return await handler(request)
        user = self._authenticate(request)
        if user is None:
            return _status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    # --- handlers ------------------------------------------------------------------------

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _group_body(self) -> dict[str, Any]:
        version = {"groupVersion": GROUP_VERSION, "version": "v1beta1"}
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": "metrics.k8s.io",
            "versions": [version],
            "preferredVersion": version,
        }

    async def _group_list(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group_body()]}
        )

    async def _group(self, request: web.Request) -> web.Response:
        return web.json_response(self._group_body())

    async def _resources(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": GROUP_VERSION,
                "resources": [
                    {
                        "name": "nodes",
                        "singularName": "",
                        "namespaced": False,
                        "kind": "NodeMetrics",
                        "verbs": ["get", "list"],
                    },
                    {
                        "name": "pods",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "PodMetrics",
                        "verbs": ["get", "list"],
                    },
                ],
            }
        )

    def _selected(
        self, request: web.Request, objs: list[dict[str, Any]]
    ) -> list[dict[str, Any]] | web.Response:
        text = request.query.get("labelSelector", "")
        try:
            selector = parse_selector(text)
        except SelectorError as exc:
            return _status(400, "BadRequest", f"unable to parse requirement: {exc}")
        fields = request.query.get("fieldSelector", "")
        wanted: dict[str, str] = {}
        for term in filter(None, fields.split(",")):
            key, sep, value = term.partition("=")
            key = key.rstrip("=!")
            if not sep or key not in ("metadata.name", "metadata.namespace") or term.count("!="):
                return _status(400, "BadRequest", f"field label not supported: {key or term}")
            wanted[key] = value.lstrip("=")
        result = []
        for obj in objs:
            meta = obj["metadata"]
            if not selector.matches(meta.get("labels") or {}):
                continue
            if "metadata.name" in wanted and meta["name"] != wanted["metadata.name"]:
                continue
            if (
                "metadata.namespace" in wanted
                and meta.get("namespace") != wanted["metadata.namespace"]
            ):
                continue
            result.append(obj)
        return result

    def _list(self, kind: str, items: list[dict[str, Any]]) -> web.Response:
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return web.json_response(
            {"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
        )

    async def _list_nodes(self, request: web.Request) -> web.Response:
        assert self._nodes is not None
        nodes = self._selected(request, self._nodes.cache.list())
        if isinstance(nodes, web.Response):
            return nodes
        items = [m for m in map(self.store.node_metrics, nodes) if m is not None]
        return self._list("NodeMetrics", items)

    async def _get_node(self, request: web.Request) -> web.Response:
        assert self._nodes is not None
        name = request.match_info["name"]
        node = self._nodes.cache.get_by_name(name)
        metrics = self.store.node_metrics(node) if node is not None else None
        if metrics is None:
            return _not_found("nodes", name)
        return web.json_response(metrics)

    async def _list_pods(self, request: web.Request) -> web.Response:
        assert self._pods is not None
        namespace = request.match_info.get("namespace")
        pods = [
            p
            for p in self._pods.cache.list()
            if namespace is None or p["metadata"].get("namespace") == namespace
        ]
        selected = self._selected(request, pods)
        if isinstance(selected, web.Response):
            return selected
        items = [m for m in map(self.store.pod_metrics, selected) if m is not None]
        return self._list("PodMetrics", items)

    async def _get_pod(self, request: web.Request) -> web.Response:
        assert self._pods is not None
        name = request.match_info["name"]
        pod = self._pods.cache.get_by_name(name, request.match_info["namespace"])
        metrics = self.store.pod_metrics(pod) if pod is not None else None
        if metrics is None:
            return _not_found("pods", name)
        return web.json_response(metrics)


def _not_found(resource: str, name: str) -> web.Response:
    return _status(
        404,
        "NotFound",
        f'{resource}.metrics.k8s.io "{name}" not found',
        {"name": name, "group": "metrics.k8s.io", "kind": resource},
    )


class MetricsServerRemoval:
    """With ``--disable=metrics-server``: remove what a previous run registered (APIService,
    Service, Endpoints, EndpointSlice labelled ``k8s-app=metrics-server``), as K3s deletes a
    disabled component; a cluster without the add-on must not advertise its API."""

    name = "metrics-server-removal"

    def __init__(self, client_config: ClientConfig) -> None:
        self.client_config = client_config

    async def start(self, ctx: _FailureSink | None = None) -> None:
        del ctx
        async with Client(self.client_config) as client:
            targets: list[tuple[Resource, str | None]] = [
                (APISERVICES, None),
                (SERVICES, SERVICE_NAMESPACE),
                (ENDPOINTS, SERVICE_NAMESPACE),
                (ENDPOINTSLICES, SERVICE_NAMESPACE),
            ]
            for resource, namespace in targets:
                name = APISERVICE_NAME if resource is APISERVICES else SERVICE_NAME
                try:
                    current = await client.get(resource, name, namespace=namespace)
                    labels = (current.get("metadata") or {}).get("labels") or {}
                    if labels.get("k8s-app") != "metrics-server":
                        continue  # not ours: someone deployed their own metrics-server
                    await client.delete(resource, name, namespace=namespace)
                    log.info("metrics-server disabled: deleted %s %s", resource.kind, name)
                except NotFoundError:
                    continue
                except ClientError as exc:
                    log.warning("metrics-server disabled: cannot delete %s: %s", name, exc)

    async def stop(self) -> None:
        return None
