"""The kubelet's HTTPS API (port 10250 unless ``--kubelet-arg=port`` says otherwise; the Node's
``status.daemonEndpoints`` tells the API server which): logs, exec, attach, port-forward, stats,
pods.

Endpoints (the paths upstream's kubelet serves, and that the API server calls)::

    GET       /healthz                                    no authentication
    GET       /containerLogs/<ns>/<pod>/<container>       ?follow&previous&tailLines&...
    GET|POST  /exec/<ns>/<pod>[/<uid>]/<container>        ?command=..&stdin&stdout&stderr&tty
    GET|POST  /attach/<ns>/<pod>[/<uid>]/<container>      ?stdin&stdout&stderr&tty
    GET|POST  /portForward/<ns>/<pod>[/<uid>]             ?port=.. (WebSocket clients)
    GET       /stats/summary                              Summary API (``sampan.kubelet.stats``)
    GET       /metrics/resource                           node/pod/container CPU and memory
    GET       /metrics/cadvisor                           cAdvisor-named container series
    GET       /metrics                                    kubelet_*, and the node registry's series
    GET       /pods                                       the pods with a sandbox here

Exec, attach and port-forward ask the runtime (CRI ``Exec``/``Attach``/``PortForward``) for a
streaming URL on containerd's stream server and proxy the caller's upgrade to it byte for
byte (``sampan.httpstream.proxy_upgrade``): containerd speaks SPDY/3.1 and WebSocket
``v4.channel.k8s.io`` itself. A WebSocket client asking only for a protocol the runtime lacks
(kubectl's ``v5.channel.k8s.io``) gets the runtime's non-101 answer, which kubectl treats as
an upgrade failure and retries over SPDY — the fallback it keeps for older servers.

Authentication and authorization: every endpoint but ``/healthz`` requires a TLS client
certificate signed by the cluster's client CA (verified in the handshake) whose user is in
``allowed_users`` or one of whose groups is in ``allowed_groups`` (default: the API server's
kubelet-client identity ``system:kube-apiserver`` and ``system:masters``). This is the
"accept only the API server" choice: it needs no round trip to the API server per request
and no extra RBAC; upstream's webhook mode (a SubjectAccessReview per request for
``nodes/proxy``, ``nodes/log``, ``nodes/stats``) can be added behind the same check later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from sampan import httpstream as upgrade
from sampan.api import times
from sampan.httpconn import (
    DEFAULT_HEADER_READ_TIMEOUT_S,
    HeaderTimeout,
    HeaderTimeoutRunner,
    pin_mmap_threshold,
    share_tls_receive_buffers,
)
from sampan.kubelet.runtime import cri, pb
from sampan.kubelet.server import bridge, logs
from sampan.kubelet.server.lookup import CRIPodLookup, NotFoundError, PodLookup
from sampan.kubelet.stats import DEFAULT_HOUSEKEEPING_INTERVAL_S, StatsProvider
from sampan.pki.tls import server_ssl_context

__all__ = [
    "DEFAULT_ALLOWED_GROUPS",
    "DEFAULT_ALLOWED_USERS",
    "DEFAULT_KUBELET_PORT",
    "KubeletServer",
    "KubeletServerOptions",
]

log = logging.getLogger("sampan.kubelet.server")

DEFAULT_KUBELET_PORT = 10250
DEFAULT_ALLOWED_USERS = ("system:kube-apiserver",)
DEFAULT_ALLOWED_GROUPS = ("system:masters",)
SHUTDOWN_TIMEOUT_S = 5.0
_TRUE = ("1", "true")


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


@dataclass(frozen=True)
class KubeletServerOptions:
    node_name: str
    cert_path: Path
    key_path: Path
    client_ca_path: Path
    bind_address: str = "0.0.0.0"
    port: int = DEFAULT_KUBELET_PORT  # 0: any free port (tests)
    allowed_users: tuple[str, ...] = DEFAULT_ALLOWED_USERS
    allowed_groups: tuple[str, ...] = DEFAULT_ALLOWED_GROUPS
    header_read_timeout_s: float = DEFAULT_HEADER_READ_TIMEOUT_S  # slow clients are closed
    cgroup_root: str = "/kubepods"  # where the kubelet puts pod cgroups (stats)
    housekeeping_interval_s: float = DEFAULT_HOUSEKEEPING_INTERVAL_S

    def ssl_context(self) -> ssl.SSLContext:
        """Serving cert; client certs optional (``/healthz``) but verified when sent; the
        protocol versions and suites of every Sampan listener (``sampan.pki.tls``)."""
        return server_ssl_context(self.cert_path, self.key_path, client_ca_file=self.client_ca_path)


@dataclass(frozen=True)
class _Caller:
    user: str
    groups: tuple[str, ...] = field(default=())


def _caller(request: web.Request) -> _Caller | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    groups = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    if not names:
        return None
    return _Caller(user=str(names[0]), groups=tuple(str(g) for g in groups))


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _flag(request: web.Request, *names: str) -> bool:
    return any(request.query.get(n, "").lower() in _TRUE for n in names)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip("\n") + "\n")


def _ns_to_rfc3339(ns: int) -> str:
    return times.rfc3339(times.from_unix(ns / 1e9))


class KubeletServer:
    """The kubelet API server component (``name``, ``start(ctx)``, ``stop()``).

    ``runtime`` is the CRI runtime client (``ContainerRuntime.runtime``); ``lookup`` resolves
    names to CRI ids (default: ``CRIPodLookup(runtime)``)."""

    name = "kubelet-server"

    def __init__(
        self,
        options: KubeletServerOptions,
        runtime: cri.RuntimeClient,
        *,
        lookup: PodLookup | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """``metrics_registry``: the node registry whose series ``/metrics`` serves beside
        the running pods and containers (the kubelet's, proxy's and DNS server's)."""
        self.options = options
        self.metrics_registry = metrics_registry
        self.runtime = runtime
        self.lookup: PodLookup = lookup if lookup is not None else CRIPodLookup(runtime)
        self._runner: HeaderTimeoutRunner | None = None
        self._port = 0
        self.stats = StatsProvider(
            runtime, node_name=options.node_name, cgroup_root=options.cgroup_root
        )
        self._housekeeping: asyncio.Task[None] | None = None
        # Requests in flight (log follows, exec/attach/port-forward splices): stop() cancels
        # them, since hijacked connections are invisible to aiohttp's graceful shutdown.
        self._inflight: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        return self._port

    async def start(self, ctx: _FailureSink | None = None) -> None:
        """Listen; returns once the port is bound. ``ctx`` is unused: after start nothing here
        can fail as a whole (each request fails alone)."""
        del ctx
        ssl_context = await asyncio.to_thread(self.options.ssl_context)
        pin_mmap_threshold()  # closed connections give their TLS buffers back (httpconn)
        share_tls_receive_buffers()  # one TLS receive buffer per thread, not per connection
        app = web.Application()
        app.middlewares.append(self._track_middleware)
        app.middlewares.append(self._auth_middleware)
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        for verb in ("exec", "attach"):
            for path in (
                f"/{verb}/{{namespace}}/{{pod}}/{{container}}",
                f"/{verb}/{{namespace}}/{{pod}}/{{uid}}/{{container}}",
            ):
                r.add_route("GET", path, self._remote_command)
                r.add_route("POST", path, self._remote_command)
        for path in ("/portForward/{namespace}/{pod}", "/portForward/{namespace}/{pod}/{uid}"):
            r.add_route("GET", path, self._port_forward)
            r.add_route("POST", path, self._port_forward)
        r.add_get("/stats/summary", self._stats_summary)
        r.add_get("/stats/summary/", self._stats_summary)
        r.add_get("/metrics/resource", self._metrics_resource)
        r.add_get("/metrics/cadvisor", self._metrics_cadvisor)
        r.add_get("/metrics", self._metrics_kubelet)
        r.add_get("/pods", self._pods)
        runner = HeaderTimeoutRunner(
            app,
            HeaderTimeout(self.options.header_read_timeout_s),
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            handle_signals=False,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self.options.bind_address, self.options.port, ssl_context=ssl_context
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = [a for a in runner.addresses if isinstance(a, tuple)]
        self._port = addresses[0][1] if addresses else self.options.port
        self._housekeeping = asyncio.create_task(
            self.stats.run_housekeeping(self.options.housekeeping_interval_s),
            name="kubelet-stats-housekeeping",
        )
        log.info("kubelet API listening on %s:%d", self.options.bind_address, self._port)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=SHUTDOWN_TIMEOUT_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _track_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await handler(request)
        finally:
            if task is not None:
                self._inflight.discard(task)

    # --- authentication ----------------------------------------------------------------

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        caller = _caller(request)
        if caller is None:
            return _text(401, "Unauthorized")
        allowed = caller.user in self.options.allowed_users or any(
            g in self.options.allowed_groups for g in caller.groups
        )
        if not allowed:
            log.info(
                "kubelet API: %s (groups %s) refused for %s",
                caller.user,
                ",".join(caller.groups),
                request.path,
            )
            return _text(
                403,
                f"Forbidden (user={caller.user}, verb={request.method.lower()}, "
                f"path={request.path})",
            )
        return await handler(request)

    # --- handlers ------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, name = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            options = logs.LogOptions.from_query(request.query)
        except logs.LogOptionsError as exc:
            return _text(400, str(exc))
        try:
            ref = await self.lookup.container(ns, pod, name, previous=options.previous)
        except NotFoundError as exc:
            return _text(404, str(exc))
        except cri.CRIError as exc:
            return _text(503, f"container runtime: {exc}")
        if not ref.log_path:
            return _text(404, f'container "{name}" in pod "{pod}" has no log file')
        response = web.StreamResponse()
        response.content_type = "text/plain"
        response.charset = "utf-8"

        async def write(data: bytes) -> None:
            if not response.prepared:
                await response.prepare(request)
            await response.write(data)

        async def is_running() -> bool:
            try:
                return await self.lookup.is_running(ref.container_id)
            except cri.CRIError:
                return False

        try:
            await logs.read_log(
                ref.log_path,
                options,
                write,
                is_running=is_running if ref.running and not options.previous else None,
            )
        except FileNotFoundError:
            if not response.prepared:
                return _text(404, f"log file {ref.log_path} not found")
        except (ConnectionError, OSError) as exc:
            if not response.prepared:
                return _text(500, f"reading {ref.log_path}: {exc}")
            log.debug("log stream for %s/%s/%s ended: %s", ns, pod, name, exc)
            return response
        if not response.prepared:
            await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _remote_command(self, request: web.Request) -> web.StreamResponse:
        ns, pod, name = (request.match_info[k] for k in ("namespace", "pod", "container"))
        verb = request.path.split("/", 2)[1]
        if not upgrade.is_upgrade_request(request):
            return _text(400, f"{verb} needs an upgrade to SPDY/3.1 or WebSocket")
        tty = _flag(request, "tty")
        stdin = _flag(request, "stdin", "input")
        stdout = _flag(request, "stdout", "output")
        stderr = _flag(request, "stderr", "error")
        if not (stdin or stdout or stderr):
            return _text(400, "you must specify at least one of stdin, stdout, stderr")
        try:
            ref = await self.lookup.container(ns, pod, name)
            if verb == "exec":
                command = request.query.getall("command", [])
                if not command:
                    return _text(400, "you must specify at least one command for the container")
                url = await self.runtime.exec(
                    ref.container_id,
                    command,
                    tty=tty,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                )
            else:
                url = await self.runtime.attach(
                    ref.container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
                )
        except NotFoundError as exc:
            return _text(404, str(exc))
        except cri.CRIError as exc:
            return _text(500, f"container runtime: {exc}")
        if _is_websocket(request) and bridge.REMOTECOMMAND_V5 in bridge.offered_protocols(request):
            streams = bridge.RemoteCommandStreams(
                stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
            )
            return await self._bridge(request, url, streams)
        return await self._proxy(request, url)

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        ns, pod = request.match_info["namespace"], request.match_info["pod"]
        if not upgrade.is_upgrade_request(request):
            return _text(400, "port forwarding needs an upgrade to SPDY/3.1 or WebSocket")
        ports: list[int] = []
        for raw in request.query.getall("port", []):
            for part in raw.split(","):
                if not part.strip().isdigit() or not 0 < int(part) < 65536:
                    return _text(400, f"invalid port {part!r}")
                ports.append(int(part))
        try:
            sandbox = await self.lookup.sandbox(ns, pod)
            url = await self.runtime.port_forward(sandbox.sandbox_id, ports)
        except NotFoundError as exc:
            return _text(404, str(exc))
        except cri.CRIError as exc:
            return _text(500, f"container runtime: {exc}")
        if _is_websocket(request) and bridge.PORTFORWARD_TUNNEL_PROTOCOL in (
            bridge.offered_protocols(request)
        ):
            return await self._bridge(request, url, None)
        return await self._proxy(request, url)

    async def _bridge(
        self, request: web.Request, url: str, streams: bridge.RemoteCommandStreams | None
    ) -> web.StreamResponse:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            return _text(500, f"the runtime returned an unusable stream URL {url!r}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        port = parts.port or 80
        try:
            if streams is None:
                return await bridge.bridge_tunnel(
                    request, host=parts.hostname, port=port, target=target
                )
            return await bridge.bridge_remotecommand(
                request, host=parts.hostname, port=port, target=target, streams=streams
            )
        except upgrade.UpstreamError as exc:
            return _text(502, str(exc))

    async def _proxy(self, request: web.Request, url: str) -> web.StreamResponse:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname is None:
            return _text(500, f"the runtime returned an unusable stream URL {url!r}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        context = ssl.create_default_context() if parts.scheme == "https" else None
        return await upgrade.proxy_upgrade(
            request, host=parts.hostname, port=port, target=target, ssl_context=context
        )

    async def _stats_summary(self, request: web.Request) -> web.Response:
        try:
            summary = await self.stats.summary()
        except cri.CRIError as exc:
            return _text(503, f"container runtime: {exc}")
        return web.json_response(summary)

    async def _metrics_resource(self, request: web.Request) -> web.Response:
        return await self._metrics(self.stats.resource_metrics)

    async def _metrics_kubelet(self, request: web.Request) -> web.Response:
        return await self._metrics(lambda: self.stats.kubelet_metrics(self.metrics_registry))

    async def _metrics_cadvisor(self, request: web.Request) -> web.Response:
        return await self._metrics(self.stats.cadvisor_metrics)

    async def _metrics(self, render: Callable[[], Awaitable[bytes]]) -> web.Response:
        try:
            body = await render()
        except cri.CRIError as exc:
            return _text(503, f"container runtime: {exc}")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _pods(self, request: web.Request) -> web.Response:
        try:
            sandboxes = await self.runtime.list_pod_sandbox()
        except cri.CRIError as exc:
            return _text(503, f"container runtime: {exc}")
        items = [
            {
                "metadata": {
                    "name": s.metadata.name,
                    "namespace": s.metadata.namespace,
                    "uid": s.metadata.uid,
                    "creationTimestamp": _ns_to_rfc3339(s.created_at),
                },
                "status": {
                    "phase": "Running" if s.state == pb.PodSandboxState.SANDBOX_READY else "Unknown"
                },
            }
            for s in sandboxes
        ]
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        )
