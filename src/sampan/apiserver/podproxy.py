"""pods/log, pods/exec, pods/attach, pods/portforward and nodes/proxy: the kubelet's API,
reached through the API server.

Each request names a pod (or node); the pod's ``spec.nodeName`` picks the Node, whose
``status.addresses`` (InternalIP first) and ``status.daemonEndpoints.kubeletEndpoint.Port``
say where its kubelet listens. The API server calls the kubelet over TLS with its own client
certificate (user ``KUBELET_CLIENT_USER``), verifying the kubelet's serving certificate
against the kubelet serving CA (never the server CA) and for the address it dials.

* ``pods/log`` is an ordinary streaming GET: the kubelet's ``/containerLogs`` body is copied
  to the caller chunk by chunk (``follow`` keeps it open as long as the kubelet does).
* ``exec``, ``attach`` and ``portforward`` are connection upgrades (SPDY/3.1 or WebSocket):
  the caller's upgrade request is sent on to the kubelet, the kubelet's answer relayed, and
  after ``101 Switching Protocols`` the two connections are spliced byte for byte, as
  upstream's upgrade-aware proxy does. The API server never parses the streaming protocol;
  translation, where needed, is the kubelet's business.
* ``nodes/proxy`` forwards any request under ``/api/v1/nodes/<n>/proxy/<path>`` to the
  kubelet's ``/<path>`` (upgrades spliced the same way).

Invariants: nothing is buffered beyond one chunk; a splice ends, and both connections close,
when either side closes; the kubelet's refusals reach the caller as ``Status`` errors with the
kubelet's code and message.

Connection takeover and splicing come from ``sampan.httpstream``, shared with the kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from sampan import httpstream
from sampan.api.errors import BadRequest, Forbidden, ServiceUnavailable, StatusError
from sampan.apiserver.auth import Attributes, forbidden_message
from sampan.pki import ensure_client_certificate

__all__ = [
    "DEFAULT_KUBELET_PORT",
    "KUBELET_CLIENT_NAME",
    "KUBELET_CLIENT_USER",
    "KubeletTarget",
    "PodProxy",
    "build_pod_proxy",
    "kubelet_client_context",
]

log = logging.getLogger("sampan.apiserver.podproxy")

DEFAULT_KUBELET_PORT = 10250
KUBELET_CLIENT_USER = "system:kube-apiserver"
"""The user the API server's client certificate names when it calls kubelets."""
KUBELET_CLIENT_NAME = "kube-apiserver-kubelet-client"
"""Its file stem under the TLS dir (client-<name>.crt/.key)."""
CONNECT_TIMEOUT_S = 10.0
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_PROXY_BODY_BYTES = 3 * 1024 * 1024
ADDRESS_PREFERENCE = ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS")

_LOG_PARAMS = (
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "limitBytes",
    "sinceSeconds",
    "sinceTime",
)
_UPGRADE_HEADERS = (
    "Connection",
    "Upgrade",
    "X-Stream-Protocol-Version",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Origin",
)

GetObject = Callable[[str, str | None, str], Awaitable[dict[str, Any]]]
"""(plural, namespace or None, name) -> the object, raising NotFound."""


def kubelet_client_context(kubelet_ca_pem: bytes, cert_path: str, key_path: str) -> ssl.SSLContext:
    """TLS towards kubelets: our client certificate; their serving certificates must chain to
    the kubelet serving CA and name the address dialled (hostname checking on, as
    kube-apiserver with ``--kubelet-certificate-authority``). Blocking (reads the key)."""
    context = ssl.create_default_context(cadata=kubelet_ca_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


def _unreachable(exc: BaseException) -> ServiceUnavailable:
    """The Status for a kubelet that cannot be reached; a certificate it presents that does
    not verify says so, with what to do about it."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ServiceUnavailable(
            f"error trying to reach the kubelet: its serving certificate is not valid for this "
            f"address or not signed by the kubelet serving CA ({text}); a node that joined "
            "before the kubelet serving CA existed gets a new certificate when its agent restarts"
        )
    return ServiceUnavailable(f"error trying to reach the kubelet: {text}")


@dataclass(frozen=True)
class KubeletTarget:
    host: str
    port: int

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{path}"


def kubelet_target(node: dict[str, Any]) -> KubeletTarget:
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    host = ""
    for kind in ADDRESS_PREFERENCE:
        host = next((a.get("address", "") for a in addresses if a.get("type") == kind), "")
        if host:
            break
    name = (node.get("metadata") or {}).get("name", "")
    if not host:
        raise BadRequest(f'node "{name}" has no address to reach its kubelet')
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get(
        "Port"
    ) or DEFAULT_KUBELET_PORT
    return KubeletTarget(host=host, port=int(port))


def _container_name(pod: dict[str, Any], requested: str) -> str:
    spec = pod.get("spec") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    others = [
        c.get("name", "")
        for key in ("initContainers", "ephemeralContainers")
        for c in spec.get(key) or []
    ]
    if requested:
        if requested not in containers + others:
            raise BadRequest(f"container {requested} is not valid for pod {name}")
        return requested
    if len(containers) == 1:
        return containers[0]
    raise BadRequest(
        f"a container name must be specified for pod {name}, choose one of: "
        f"[{' '.join(containers)}]"
        + (f" or one of the init containers: [{' '.join(others)}]" if others else "")
    )


_PULL_PROBLEMS = {
    "ErrImagePull": "image can't be pulled",
    "ImagePullBackOff": "trying and failing to pull image",
}


def log_status_problem(pod: dict[str, Any], container: str, *, previous: bool) -> str:
    """Why the logs of ``container`` cannot be read, judged from the pod's status as the
    kubelet judges it before it opens a log file (its messages, which the API server returns
    as a 400); "" when there are logs to read."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    found = next(
        (
            s
            for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
            for s in status.get(key) or []
            if isinstance(s, dict) and s.get("name") == container
        ),
        None,
    )
    if found is None:
        return f'container "{container}" in pod "{name}" is not available'
    state = found.get("state") or {}
    last = (found.get("lastState") or {}).get("terminated")
    if previous:
        if not last or not last.get("containerID"):
            return f'previous terminated container "{container}" in pod "{name}" not found'
        return ""
    if "running" in state:
        return ""
    terminated = state.get("terminated")
    if terminated is not None:
        if terminated.get("containerID") or (last and last.get("containerID")):
            return ""
        return f'container "{container}" in pod "{name}" is terminated'
    if last is not None:
        if last.get("containerID"):
            return ""
        return f'container "{container}" in pod "{name}" is terminated'
    waiting = state.get("waiting")
    if waiting is not None:
        reason = waiting.get("reason", "")
        return f'container "{container}" in pod "{name}" is waiting to start: ' + (
            _PULL_PROBLEMS.get(reason, reason)
        )
    return f'container "{container}" in pod "{name}" is waiting to start - no logs yet'


def _forwarded_ports(request: web.Request) -> list[int]:
    """PodPortForwardOptions' ``ports`` (WebSocket clients name their ports in the query;
    SPDY clients such as kubectl name them per stream instead, so none is fine), passed to the
    kubelet as its ``port`` parameters, as kube-apiserver does. A value may list several
    ports separated by commas (the official Python client sends them so)."""
    ports: list[int] = []
    for raw in request.query.getall("ports", []):
        for part in raw.split(","):
            part = part.strip()
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise BadRequest(f"invalid port {part!r}: must be between 1 and 65535")
            ports.append(int(part))
    return ports


def _query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = urlencode(list(pairs))
    return f"?{encoded}" if encoded else ""


def _is_upgrade(request: web.Request) -> bool:
    tokens = [t.strip().lower() for t in request.headers.get("Connection", "").split(",")]
    return "upgrade" in tokens and bool(request.headers.get("Upgrade"))


class PodProxy:
    """The handlers for the subresources above (``handlers()`` maps them for the
    ``HandlerContext.subresources`` table)."""

    def __init__(
        self,
        get_object: GetObject,
        ssl_context: ssl.SSLContext,
        *,
        authorize: Callable[[Attributes], Any] | None = None,
    ) -> None:
        self._get = get_object
        self._ssl = ssl_context
        self._authorize = authorize

    def _require_create(self, ri: Any, namespace: str | None, user: Any) -> None:
        """A WebSocket exec/attach/portforward arrives as GET (verb "get"), but it can do what
        a POST does: like kube-apiserver 1.31+, also require "create" on the subresource."""
        if self._authorize is None or ri.verb == "create":
            return
        attrs = Attributes(
            user=user,
            verb="create",
            namespace=namespace or "",
            api_group="",
            resource="pods",
            subresource=ri.subresource,
            name=ri.path_name,
            path=ri.path,
            resource_request=True,
        )
        decision = self._authorize(attrs)
        if not decision.allowed:
            raise Forbidden(
                forbidden_message(attrs, decision.reason), name=ri.path_name, kind="pods"
            )

    def handlers(self) -> dict[tuple[str, str, str], Callable[..., Awaitable[web.StreamResponse]]]:
        return {
            ("", "pods", "log"): self.pod_log,
            ("", "pods", "exec"): self.pod_exec,
            ("", "pods", "attach"): self.pod_attach,
            ("", "pods", "portforward"): self.pod_portforward,
            ("", "nodes", "proxy"): self.node_proxy,
        }

    # --- lookups -----------------------------------------------------------------------

    async def _pod_and_target(
        self, namespace: str | None, name: str
    ) -> tuple[dict[str, Any], KubeletTarget]:
        pod = await self._get("pods", namespace, name)
        node_name = (pod.get("spec") or {}).get("nodeName", "")
        if not node_name:
            raise BadRequest(f"pod {name} does not have a host assigned")
        node = await self._get("nodes", None, node_name)
        return pod, kubelet_target(node)

    # --- handlers ----------------------------------------------------------------------

    async def pod_log(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        pod, target = await self._pod_and_target(namespace, ri.path_name)
        container = _container_name(pod, request.query.get("container", ""))
        problem = log_status_problem(
            pod, container, previous=request.query.get("previous", "") in ("true", "1")
        )
        if problem:
            raise BadRequest(problem)
        path = "/containerLogs/" + "/".join(
            quote(p, safe="") for p in (namespace or "", ri.path_name, container)
        )
        path += _query((k, v) for k, v in request.query.items() if k in _LOG_PARAMS)
        return await self._stream_get(request, target, path, content_type="text/plain")

    async def pod_exec(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        self._require_create(ri, namespace, user)
        return await self._remote_command("exec", request, ri, namespace)

    async def pod_attach(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        self._require_create(ri, namespace, user)
        return await self._remote_command("attach", request, ri, namespace)

    async def _remote_command(
        self, verb: str, request: web.Request, ri: Any, namespace: str | None
    ) -> web.StreamResponse:
        pod, target = await self._pod_and_target(namespace, ri.path_name)
        container = _container_name(pod, request.query.get("container", ""))
        if verb == "exec" and not request.query.getall("command", []):
            raise BadRequest("you must specify at least one command for the container")
        path = f"/{verb}/" + "/".join(
            quote(p, safe="") for p in (namespace or "", ri.path_name, container)
        )
        path += _query((k, v) for k, v in request.query.items() if k != "container")
        return await self._upgrade(request, target, path)

    async def pod_portforward(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        self._require_create(ri, namespace, user)
        _pod, target = await self._pod_and_target(namespace, ri.path_name)
        path = "/portForward/" + "/".join(
            quote(p, safe="") for p in (namespace or "", ri.path_name)
        )
        path += _query(("port", str(port)) for port in _forwarded_ports(request))
        return await self._upgrade(request, target, path)

    async def node_proxy(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        node = await self._get("nodes", None, ri.path_name)
        target = kubelet_target(node)
        rest = "/".join(quote(p, safe="") for p in ri.parts[3:])
        path = "/" + rest + (f"?{request.query_string}" if request.query_string else "")
        if _is_upgrade(request):
            return await self._upgrade(request, target, path)
        if request.method == "GET":
            return await self._stream_get(request, target, path, content_type=None)
        body = await request.content.read(MAX_PROXY_BODY_BYTES + 1)
        if len(body) > MAX_PROXY_BODY_BYTES:
            raise BadRequest("request body too large for the node proxy")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    request.method,
                    target.url(path),
                    data=body,
                    ssl=self._ssl,
                    headers={"Content-Type": request.headers.get("Content-Type", "")},
                ) as upstream,
            ):
                data = await upstream.read()
                response = web.Response(status=upstream.status, body=data)
                response.headers["Content-Type"] = upstream.headers.get(
                    "Content-Type", "text/plain"
                )
                return response
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unreachable(exc) from exc

    # --- transports --------------------------------------------------------------------

    async def _stream_get(
        self, request: web.Request, target: KubeletTarget, path: str, *, content_type: str | None
    ) -> web.StreamResponse:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        response: web.StreamResponse | None = None
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(target.url(path), ssl=self._ssl) as upstream,
            ):
                if upstream.status >= 400:
                    text = (await upstream.content.read(MAX_ERROR_BODY_BYTES)).decode(
                        "utf-8", "replace"
                    )
                    raise StatusError(
                        text.strip() or f"the kubelet answered {upstream.status}",
                        code=upstream.status,
                        reason=_reason(upstream.status),
                    )
                response = web.StreamResponse(status=upstream.status)
                response.content_type = (
                    content_type
                    or upstream.headers.get("Content-Type", "application/octet-stream").split(";")[
                        0
                    ]
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if response is None:
                raise _unreachable(exc) from exc
            log.debug("stream from kubelet %s ended: %s", target.host, exc)
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _upgrade(
        self, request: web.Request, target: KubeletTarget, path: str
    ) -> web.StreamResponse:
        if not _is_upgrade(request):
            raise BadRequest("Upgrade request required")
        headers = [
            (name, value) for name in _UPGRADE_HEADERS for value in request.headers.getall(name, [])
        ]
        try:
            upstream = await _open_upgrade(target, request.method, path, headers, self._ssl)
        except OSError as exc:
            raise _unreachable(exc) from exc
        if upstream.status != 101:
            body = await upstream.read_body()
            raise StatusError(
                body.decode("utf-8", "replace").strip()
                or f"the kubelet answered {upstream.status}",
                code=upstream.status,
                reason=_reason(upstream.status),
            )
        try:
            client_reader, client_writer, done = await httpstream.hijack(request)
        except BaseException:
            await httpstream.close_writer(upstream.writer)
            raise
        client_writer.write(upstream.head)
        await httpstream.splice((client_reader, client_writer), (upstream.reader, upstream.writer))
        return done


def _reason(code: int) -> str:
    return {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        500: "InternalError",
        502: "InternalError",
        503: "ServiceUnavailable",
    }.get(code, "InternalError" if code >= 500 else "BadRequest")


# --- the kubelet side of an upgrade ----------------------------------------------------------


async def _open_upgrade(
    target: KubeletTarget,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext,
) -> httpstream.UpgradeResponse:
    try:
        return await httpstream.open_upgrade(
            host=target.host,
            port=target.port,
            method=method,
            target=path,
            headers=headers,
            ssl_context=ssl_context,
            server_hostname=target.host,
            timeout_s=CONNECT_TIMEOUT_S,
        )
    except httpstream.UpstreamError as exc:
        raise OSError(str(exc)) from exc


async def build_pod_proxy(
    pki: Any,
    storage: Any,
    registry: Any,
    *,
    authorize: Callable[[Attributes], Any] | None = None,
) -> PodProxy:
    """The ``PodProxy`` of an API server: its kubelet client certificate (issued under the
    TLS dir on first use), trust in the kubelet serving CA only, and object reads from the
    watch-cached storage."""
    cert_path, key_path = await asyncio.to_thread(
        ensure_client_certificate, pki, KUBELET_CLIENT_NAME, KUBELET_CLIENT_USER
    )
    context = await asyncio.to_thread(
        kubelet_client_context, pki.kubelet_ca_pem, str(cert_path), str(key_path)
    )

    async def get_object(plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        info = registry.by_resource("", "v1", plural)
        return await storage.for_resource(info).get(namespace, name)

    return PodProxy(get_object, context, authorize=authorize)
