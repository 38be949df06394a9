"""The async Kubernetes API client every Sampan component talks through.

This module owns the HTTP(S) conversation with an API server: configuration (``ClientConfig``,
also read from kubeconfig files as kubectl does), one pooled aiohttp session per ``Client``,
the REST verbs over ``Resource`` descriptions, streaming watches, and the translation of
failures into one exception tree. Objects are plain JSON dicts in and out; nothing here
caches or mutates them.

Exception tree (everything this module raises on purpose)::

    ClientError                     any failure of a client call
    ├── TransportError              no usable answer: connect/TLS failure, connection dropped,
    │                               timeout, a body that is not JSON
    └── ApiError(status)            the server answered with a failure ``Status``
        │                           (.status dict, .code, .reason, .message, .details)
        ├── BadRequestError          400 BadRequest
        ├── UnauthorizedError        401 Unauthorized
        ├── ForbiddenError           403 Forbidden
        ├── NotFoundError            404 NotFound
        ├── ConflictError            409 Conflict (stale resourceVersion, precondition)
        ├── AlreadyExistsError       409 AlreadyExists
        ├── ResourceExpired          410 Expired/Gone: the resourceVersion was compacted
        │                           (also raised for a watch ERROR event with code 410)
        ├── InvalidError             422 Invalid
        ├── TooManyRequestsError     429 TooManyRequests (after the client's own retries)
        └── ServerError              5xx InternalError, ServiceUnavailable, Timeout...

Invariants and choices:

* One ``aiohttp.ClientSession`` per ``Client``, created lazily on the first call inside the
  running loop; its TLS context (verify against the configured CA, present the client
  certificate) is built in a thread because loading PEM data touches files. Keep-alive is on;
  ``DEFAULT_CONNECTION_LIMIT`` bounds open connections. **Every open watch holds one
  connection**, so the limit must stay above the number of informers sharing a client.
* Requests other than watches have a total timeout (``ClientConfig.request_timeout_s``);
  watches have none but ask the server for ``timeoutSeconds``.
* 429 answers are retried after the server's ``Retry-After`` (bounded count), as client-go does.
  Nothing else is retried here: informers and controllers own their retry policy.
* A ``Client`` is bound to the event loop that first used it. ``close()`` it when done.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import ssl
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
import yaml

from sampan.api import jsonwire
from sampan.version import __version__

__all__ = [
    "CLUSTERROLEBINDINGS",
    "CLUSTERROLES",
    "CONFIGMAPS",
    "CONTROLLERREVISIONS",
    "CRONJOBS",
    "CSRS",
    "CUSTOMRESOURCEDEFINITIONS",
    "DAEMONSETS",
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEPLOYMENTS",
    "ENDPOINTS",
    "ENDPOINTSLICES",
    "EVENTS",
    "HPAS",
    "INGRESSCLASSES",
    "INGRESSES",
    "JOBS",
    "LEASES",
    "LIMITRANGES",
    "NAMESPACES",
    "NETWORKPOLICIES",
    "NODES",
    "PDBS",
    "PODS",
    "PODTEMPLATES",
    "PRIORITYCLASSES",
    "PVCS",
    "PVS",
    "REPLICASETS",
    "REPLICATIONCONTROLLERS",
    "RESOURCEQUOTAS",
    "ROLEBINDINGS",
    "ROLES",
    "SECRETS",
    "SERVICEACCOUNTS",
    "SERVICES",
    "STATEFULSETS",
    "STORAGECLASSES",
    "AlreadyExistsError",
    "ApiError",
    "BadRequestError",
    "Client",
    "ClientConfig",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "NotFoundError",
    "PatchType",
    "Resource",
    "ResourceExpired",
    "ServerError",
    "TooManyRequestsError",
    "TransportError",
    "UnauthorizedError",
    "WatchStream",
]

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_CONNECTION_LIMIT = 256
DEFAULT_PAGE_SIZE = 500
DEFAULT_MAX_429_RETRIES = 10
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 30.0
WATCH_TIMEOUT_MARGIN_S = 30.0
KEEPALIVE_TIMEOUT_S = 30.0
LARGE_BODY_BYTES = 256 * 1024
TOKEN_FILE_REFRESH_S = 60.0

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


# ---------------------------------------------------------------------------------------------
# Errors


class ClientError(Exception):
    """Base of every failure a ``Client`` call raises."""


class TransportError(ClientError):
    """The server could not be reached, the connection broke, or the answer was unreadable."""


class ApiError(ClientError):
    """The server answered with a failure ``Status`` (``meta.k8s.io/v1``).

    ``status`` is the Status dict as received (or synthesised from the HTTP code when the
    server sent something else). ``ApiError.from_status`` picks the matching subclass.
    """

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status: dict[str, Any] = dict(status)
        super().__init__(f"{self.code} {self.reason}: {self.message}")

    @property
    def code(self) -> int:
        return int(self.status.get("code") or 0)

    @property
    def reason(self) -> str:
        return str(self.status.get("reason") or "")

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.status.get("details") or {})

    @staticmethod
    def from_status(status: Mapping[str, Any]) -> ApiError:
        """The most specific error class for this Status (by reason, then by code)."""
        reason = str(status.get("reason") or "")
        code = int(status.get("code") or 0)
        cls = _ERRORS_BY_REASON.get(reason) or _ERRORS_BY_CODE.get(code)
        if cls is None:
            cls = ServerError if code >= 500 else ApiError
        return cls(status)


class BadRequestError(ApiError):
    """400: the request was malformed."""


class UnauthorizedError(ApiError):
    """401: no valid credentials."""


class ForbiddenError(ApiError):
    """403: authenticated but not allowed (RBAC, terminating namespace...)."""


class NotFoundError(ApiError):
    """404: no such object (or resource)."""


class ConflictError(ApiError):
    """409 Conflict: the resourceVersion or a precondition did not match. Re-read and retry."""


class AlreadyExistsError(ApiError):
    """409 AlreadyExists: an object with that name exists."""


class ResourceExpired(ApiError):
    """410: the requested resourceVersion is older than the server keeps; list again."""


class InvalidError(ApiError):
    """422: the object failed validation (``details.causes`` says where)."""


class TooManyRequestsError(ApiError):
    """429: the server is throttling; the client already retried ``DEFAULT_MAX_429_RETRIES``."""


class ServerError(ApiError):
    """5xx: the server failed (internal error, unavailable, timeout)."""


_ERRORS_BY_REASON: dict[str, type[ApiError]] = {
    "AlreadyExists": AlreadyExistsError,
    "Conflict": ConflictError,
    "Expired": ResourceExpired,
    "Gone": ResourceExpired,
}
_ERRORS_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: ResourceExpired,
    422: InvalidError,
    429: TooManyRequestsError,
}


def _status_from_http(code: int, body: bytes) -> dict[str, Any]:
    """The Status in ``body`` if it is one, else a Status made from the HTTP code and text."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        parsed.setdefault("code", code)
        return parsed
    text = body[:512].decode("utf-8", "replace").strip()
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": _REASON_BY_CODE.get(code, "Unknown"),
        "message": text or f"HTTP {code}",
    }


_REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


# ---------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource: where it lives (group, version, plural), its kind, and its scope."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``<group>/<version>`` otherwise (as in objects)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def path(
        self,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path: ``/api/v1/namespaces/ns/pods/name/status`` and the like.

        ``namespace`` is ignored for cluster-scoped resources and may be None for namespaced
        ones when listing or watching across all namespaces.
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            if not name:
                raise ValueError(f"empty name for {self.plural}")
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return base


PODS = Resource("", "v1", "pods", "Pod", True)
NODES = Resource("", "v1", "nodes", "Node", False)
SERVICES = Resource("", "v1", "services", "Service", True)
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints", True)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
EVENTS = Resource("", "v1", "events", "Event", True)
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True)
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", False)
REPLICATIONCONTROLLERS = Resource("", "v1", "replicationcontrollers", "ReplicationController", True)
PODTEMPLATES = Resource("", "v1", "podtemplates", "PodTemplate", True)
RESOURCEQUOTAS = Resource("", "v1", "resourcequotas", "ResourceQuota", True)
LIMITRANGES = Resource("", "v1", "limitranges", "LimitRange", True)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True)
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet", True)
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet", True)
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet", True)
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True)
JOBS = Resource("batch", "v1", "jobs", "Job", True)
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob", True)
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True)
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True)
PRIORITYCLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False)
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False)
INGRESSES = Resource("networking.k8s.io", "v1", "ingresses", "Ingress", True)
INGRESSCLASSES = Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False)
NETWORKPOLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True)
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True)
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True)
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
CLUSTERROLEBINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
)
CSRS = Resource(
    "certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", False
)
CUSTOMRESOURCEDEFINITIONS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)


class PatchType(StrEnum):
    """Patch flavours, valued by the Content-Type the server expects for each."""

    JSON = "application/json-patch+json"  # RFC 6902 list of operations
    MERGE = "application/merge-patch+json"  # RFC 7386
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"  # server-side apply (needs field_manager)


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ClientConfig:
    """Where the API server is and how to prove who we are.

    ``ca_pem`` verifies the server (system roots if None, unless ``insecure_skip_tls_verify``).
    Authenticate with a client certificate (``client_cert_pem`` + ``client_key_pem``) and/or a
    bearer ``token``; ``token_file`` is read at first use and re-read every minute (rotated
    service account tokens).
    Secrets never appear in ``repr``.
    """

    server: str
    ca_pem: bytes | None = field(default=None, repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    user_agent: str = f"sampan/{__version__}"
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    connection_limit: int = DEFAULT_CONNECTION_LIMIT

    def with_user_agent(self, user_agent: str) -> ClientConfig:
        """A copy identifying another component (``sampan/<version> (scheduler)``)."""
        return replace(self, user_agent=user_agent)

    @classmethod
    def from_kubeconfig(cls, path: Path | str, context: str | None = None) -> ClientConfig:
        """Read a kubeconfig file as kubectl does (blocking file I/O; at startup or in a thread).

        Uses ``context`` or the file's ``current-context``. Credentials may be embedded
        (``*-data``, base64) or file paths, which are relative to the kubeconfig's directory.
        Supports ``certificate-authority``, ``insecure-skip-tls-verify``, ``tls-server-name``,
        ``client-certificate``/``client-key``, ``token`` and ``tokenFile``. Raises ``ValueError``
        naming what is missing or unsupported.
        """
        path = Path(path)
        doc = yaml.safe_load(path.read_text()) or {}
        base_dir = path.parent
        context_name = context or doc.get("current-context")
        if not context_name:
            raise ValueError(f"{path}: no context given and no current-context")
        ctx = _named(doc.get("contexts"), context_name, "context", path)
        cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster", path)
        user = _named(doc.get("users"), ctx.get("user"), "user", path) if ctx.get("user") else {}
        server = cluster.get("server")
        if not server:
            raise ValueError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
        if user.get("exec") or user.get("auth-provider"):
            raise ValueError(f"{path}: exec and auth-provider credentials are not supported")
        token_file = user.get("tokenFile")
        return cls(
            server=str(server).rstrip("/"),
            ca_pem=_data_or_file(cluster, "certificate-authority", base_dir),
            client_cert_pem=_data_or_file(user, "client-certificate", base_dir),
            client_key_pem=_data_or_file(user, "client-key", base_dir),
            token=user.get("token") or None,
            token_file=(base_dir / token_file) if token_file else None,
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
            tls_server_name=cluster.get("tls-server-name") or None,
        )

    @classmethod
    def in_cluster(cls, secrets_dir: Path = IN_CLUSTER_DIR) -> ClientConfig:
        """Configuration for a pod: ``KUBERNETES_SERVICE_HOST``/``PORT`` and the mounted SA."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ValueError("not running in a cluster: KUBERNETES_SERVICE_HOST is unset")
        if ":" in host:
            host = f"[{host}]"
        return cls(
            server=f"https://{host}:{port}",
            ca_pem=(secrets_dir / "ca.crt").read_bytes(),
            token_file=secrets_dir / "token",
        )


def _named(entries: Any, name: Any, what: str, path: Path) -> dict[str, Any]:
    for entry in entries or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return dict(entry.get(what) or {})
    raise ValueError(f"{path}: no {what} named {name!r}")


def _data_or_file(section: Mapping[str, Any], key: str, base_dir: Path) -> bytes | None:
    data = section.get(f"{key}-data")
    if data:
        return base64.b64decode(data)
    file_name = section.get(key)
    if file_name:
        return (base_dir / str(file_name)).read_bytes()
    return None


def _build_ssl_context(config: ClientConfig) -> ssl.SSLContext:
    """The client TLS context (blocking: writes the client key to a private temp file)."""
    context = ssl.create_default_context(
        cadata=config.ca_pem.decode("ascii") if config.ca_pem else None
    )
    if config.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert_pem and config.client_key_pem:
        _load_client_pair(context, config.client_cert_pem, config.client_key_pem)
    elif config.client_cert_pem or config.client_key_pem:
        raise ValueError("client certificate and key must be given together")
    return context


def _load_client_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Present this key pair from now on (blocking). The ssl module loads key pairs only
    from files: use a private directory that is removed at once (mkdtemp makes it 0700)."""
    with tempfile.TemporaryDirectory(prefix="sampan-client-") as tmp:
        cert_path = Path(tmp) / "client.crt"
        key_path = Path(tmp) / "client.key"
        cert_path.write_bytes(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(key_pem)
        context.load_cert_chain(cert_path, key_path)


# ---------------------------------------------------------------------------------------------
# Watch streams


class WatchStream:
    """An open watch: an async iterator of ``(event_type, object)`` and an async context manager.

    ``event_type`` is ``ADDED``, ``MODIFIED``, ``DELETED`` or ``BOOKMARK`` (bookmarks carry only
    ``metadata.resourceVersion``). An ``ERROR`` event raises: ``ResourceExpired`` for code 410,
    otherwise the matching ``ApiError``. The iterator ends when the server ends the watch
    (``timeoutSeconds`` elapsed, server shutdown). Use ``async with`` (or ``close()``) so the
    connection is released when you stop early. ``resource_version`` tracks the newest
    resourceVersion seen, to resume from.
    """

    def __init__(self, client: Client, opener: Any, resource_version: str | None) -> None:
        self._client = client
        self._opener = opener
        self._response: aiohttp.ClientResponse | None = None
        self._partial: list[bytes] = []
        self._lines: deque[bytes] = deque()
        self._closed = False
        self.resource_version = resource_version

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        if self._closed:
            raise StopAsyncIteration
        if self._response is None:
            self._response = await self._opener()
            self._client._active_watches += 1
        while True:
            while self._lines:
                line = self._lines.popleft().strip()
                if line:
                    return self._decode(line)
            try:
                chunk = await self._response.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.close()
                raise TransportError(f"watch stream broken: {exc}") from exc
            if not chunk:
                self.close()
                if b"".join(self._partial).strip():
                    raise TransportError("watch stream ended inside an event")
                raise StopAsyncIteration
            if b"\n" not in chunk:
                # Part of a large event: keep the pieces, join once the line is complete.
                self._partial.append(chunk)
                continue
            self._partial.append(chunk)
            *lines, rest = b"".join(self._partial).split(b"\n")
            self._partial = [rest] if rest else []
            self._lines.extend(lines)

    def _decode(self, line: bytes) -> tuple[str, dict[str, Any]]:
        try:
            event = jsonwire.parse(line)
            event_type = event["type"]
            obj = event["object"]
            if not isinstance(obj, dict):
                raise TypeError("event object is not a JSON object")
        except (ValueError, KeyError, TypeError) as exc:
            self.close()
            raise TransportError(f"watch sent a malformed event: {line[:200]!r}") from exc
        if event_type == "ERROR":
            self.close()
            raise ApiError.from_status(obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        return event_type, obj

    def close(self) -> None:
        """Release the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._response is not None:
            self._response.close()
            self._client._active_watches -= 1


# ---------------------------------------------------------------------------------------------
# The client


def _bool_param(value: bool) -> str:
    return "true" if value else "false"


class Client:
    """An async client for one API server. All methods return plain dicts.

    ``namespace`` arguments are required for namespaced resources' single-object calls and
    ignored for cluster-scoped ones; ``create``/``update`` take it from the body when omitted.
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._session_lock = asyncio.Lock()
        self._auth_header: str | None = None
        self._token_read_at_s = 0.0
        self._active_watches = 0
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def active_watches(self) -> int:
        """How many watch streams are open right now (each holds one connection)."""
        return self._active_watches

    async def reload_client_certificate(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Authenticate with a new client certificate from now on (a renewed one): new
        connections present it; connections already open keep the old one until they close
        (it is still valid when it is renewed)."""
        async with self._session_lock:
            if self._ssl_context is not None:
                await asyncio.to_thread(_load_client_pair, self._ssl_context, cert_pem, key_pem)
            self.config = replace(self.config, client_cert_pem=cert_pem, client_key_pem=key_pem)

    async def close(self) -> None:
        """Close the session and its connections; later calls raise ``TransportError``."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        async with self._session_lock:
            if self._closed:
                raise TransportError("client is closed")
            if self._session is None:
                ssl_context = None
                if self.config.server.startswith("https:"):
                    ssl_context = await asyncio.to_thread(_build_ssl_context, self.config)
                    self._ssl_context = ssl_context
                if self.config.token:
                    self._auth_header = f"Bearer {self.config.token}"
                connector = aiohttp.TCPConnector(
                    ssl=ssl_context if ssl_context is not None else False,
                    limit=self.config.connection_limit,
                    limit_per_host=self.config.connection_limit,
                    # Below aiohttp's server default (75 s): the client closes idle connections
                    # first, which narrows the race of reusing one the server just closed.
                    keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                )
                self._session = aiohttp.ClientSession(
                    base_url=None,
                    connector=connector,
                    headers={"User-Agent": self.config.user_agent},
                    json_serialize=json.dumps,
                    auto_decompress=True,
                )
        return self._session

    # -- raw requests ------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Send one request; 429s are retried after Retry-After. Returns an OK response."""
        session = await self._get_session()
        await self._refresh_token_file()
        headers = {"Accept": "application/json"}
        if self._auth_header:
            headers["Authorization"] = self._auth_header
        if content_type:
            headers["Content-Type"] = content_type
        url = self.config.server + path
        server_name = self.config.tls_server_name
        stale_retry_left = method == "GET"
        attempt = 0
        while True:
            try:
                response = await session.request(
                    method,
                    url,
                    params=params,
                    # aiohttp streams a BytesIO in chunks instead of one big write on the loop;
                    # a fresh one per attempt, since a retry must send the body again.
                    data=io.BytesIO(body) if body and len(body) > LARGE_BODY_BYTES else body,
                    headers=headers,
                    timeout=client_timeout,
                    server_hostname=server_name,
                )
            except aiohttp.ServerDisconnectedError as exc:
                # A pooled keep-alive connection the server had just closed: a GET is safe to
                # send again, once. Other verbs might have been applied; let the caller decide.
                if stale_retry_left:
                    stale_retry_left = False
                    continue
                raise TransportError(f"{method} {path}: server disconnected") from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise TransportError(f"{method} {path}: {exc or type(exc).__name__}") from exc
            if response.status < 400:
                return response
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransportError(f"{method} {path}: {exc}") from exc
            finally:
                response.release()
            if response.status == 429 and attempt < DEFAULT_MAX_429_RETRIES:
                attempt += 1
                await asyncio.sleep(_retry_after_s(response.headers.get("Retry-After")))
                continue
            raise ApiError.from_status(_status_from_http(response.status, data))

    async def _refresh_token_file(self) -> None:
        """(Re)read ``token_file`` when first needed and then every ``TOKEN_FILE_REFRESH_S``:
        projected service account tokens are rotated on disk (client-go re-reads them too)."""
        token_file = self.config.token_file
        if token_file is None:
            return
        now_s = asyncio.get_running_loop().time()
        if self._auth_header is not None and now_s < self._token_read_at_s + TOKEN_FILE_REFRESH_S:
            return
        try:
            token = (await asyncio.to_thread(token_file.read_text)).strip()
        except OSError as exc:
            if self._auth_header is None:
                raise TransportError(f"cannot read token file {token_file}: {exc}") from exc
            log.warning("cannot re-read token file %s: %s; keeping the old token", token_file, exc)
            token = ""
        if token:
            self._auth_header = f"Bearer {token}"
        self._token_read_at_s = now_s

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """``request`` for an answer that must be one JSON object (an object, a list, a
        Status); anything else is a ``ClientError``."""
        answer = await self.request(method, path, **kwargs)
        if not isinstance(answer, dict):
            raise ClientError(f"{method} {path}: the server answered {type(answer).__name__}")
        return answer

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
    ) -> Any:
        """Escape hatch: any method on any path; ``body`` is JSON-encoded unless bytes.

        Returns the decoded JSON answer (None for an empty body). Failures raise as above.
        """
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or self.config.request_timeout_s,
            connect=self.config.connect_timeout_s,
        )
        response = await self._send(
            method,
            path,
            params=params,
            body=data,
            content_type=content_type if data is not None else None,
            client_timeout=timeout,
        )
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{method} {path}: {exc}") from exc
        finally:
            response.release()
        if not raw:
            return None
        try:
            return jsonwire.parse(raw)
        except ValueError as exc:
            raise TransportError(f"{method} {path}: answer is not JSON: {raw[:200]!r}") from exc

    async def request_text(
        self, path: str, *, params: Mapping[str, str] | None = None, timeout_s: float | None = None
    ) -> str:
        """GET a plain-text endpoint (``/readyz``, ``/livez``, ``/version``'s neighbours);
        returns the body as text. Failures raise as above."""
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or self.config.request_timeout_s,
            connect=self.config.connect_timeout_s,
        )
        response = await self._send(
            "GET", path, params=params, body=None, content_type=None, client_timeout=timeout
        )
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"GET {path}: {exc}") from exc
        finally:
            response.release()
        return raw.decode("utf-8", "replace")

    # -- verbs -------------------------------------------------------------------------------

    async def get(
        self, resource: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        """One object (``NotFoundError`` if absent)."""
        _need_namespace(resource, namespace)
        return await self._object("GET", resource.path(namespace=namespace, name=name))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> dict[str, Any]:
        """One page of a list (``<Kind>List`` with ``metadata.continue`` if there is more).

        ``namespace=None`` lists across all namespaces.
        """
        params = _selector_params(label_selector, field_selector)
        if limit is not None:
            params["limit"] = str(limit)
        if continue_:
            params["continue"] = continue_
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if resource_version_match:
            params["resourceVersionMatch"] = resource_version_match
        return await self._object("GET", resource.path(namespace=namespace), params=params)

    async def list_all(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> dict[str, Any]:
        """The whole list, fetched page by page; one consistent snapshot.

        All pages are read at the first page's resourceVersion (the continue token carries
        it), so ``metadata.resourceVersion`` of the result is where a watch should start. If
        the snapshot expires half-way (410), the list is read again in one request, as
        client-go's pager does.
        """
        page = await self.list(
            resource,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=page_size,
        )
        items: list[dict[str, Any]] = list(page.get("items") or [])
        result = page
        while (page.get("metadata") or {}).get("continue"):
            try:
                page = await self.list(
                    resource,
                    namespace=namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=page_size,
                    continue_=page["metadata"]["continue"],
                )
            except ResourceExpired:
                log.info("%s: list snapshot expired while paging; listing in one go", resource)
                return await self.list(
                    resource,
                    namespace=namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
            items.extend(page.get("items") or [])
        metadata = dict(result.get("metadata") or {})
        metadata.pop("continue", None)
        metadata.pop("remainingItemCount", None)
        return {**result, "metadata": metadata, "items": items}

    async def create(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """Create ``body`` (``AlreadyExistsError`` if the name is taken)."""
        namespace = namespace or _body_namespace(body)
        _need_namespace(resource, namespace)
        return await self._object(
            "POST",
            resource.path(namespace=namespace),
            params=_write_params(dry_run, field_manager),
            body=_with_type(resource, body),
        )

    async def update(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """Replace the object named in ``body``; its resourceVersion makes it a compare-and-swap
        (``ConflictError`` if stale)."""
        return await self._put(resource, body, None, namespace, dry_run, field_manager)

    async def update_status(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """Replace the ``status`` subresource of the object named in ``body``."""
        return await self._put(resource, body, "status", namespace, dry_run, field_manager)

    async def _put(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        subresource: str | None,
        namespace: str | None,
        dry_run: bool,
        field_manager: str | None,
    ) -> dict[str, Any]:
        namespace = namespace or _body_namespace(body)
        _need_namespace(resource, namespace)
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ValueError("update needs metadata.name in the body")
        return await self._object(
            "PUT",
            resource.path(namespace=namespace, name=name, subresource=subresource),
            params=_write_params(dry_run, field_manager),
            body=_with_type(resource, body),
        )

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict[str, Any]:
        """Patch one object. ``patch`` is a dict (merge/strategic/apply) or a list (JSON patch).

        ``force`` applies to server-side apply only (take over conflicting fields).
        """
        _need_namespace(resource, namespace)
        params = _write_params(dry_run, field_manager)
        if force is not None:
            params["force"] = _bool_param(force)
        return await self._object(
            "PATCH",
            resource.path(namespace=namespace, name=name, subresource=subresource),
            params=params,
            body=patch,
            content_type=patch_type.value,
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        grace_period_s: int | None = None,
        propagation_policy: str | None = None,
        precondition_uid: str | None = None,
        precondition_resource_version: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete one object; returns what the server answers (the object, or a Status).

        ``propagation_policy`` is ``Orphan``, ``Background`` or ``Foreground``. Preconditions
        make the delete conditional (``ConflictError`` when they do not hold).
        """
        _need_namespace(resource, namespace)
        return await self._object(
            "DELETE",
            resource.path(namespace=namespace, name=name),
            body=_delete_options(
                grace_period_s,
                propagation_policy,
                precondition_uid,
                precondition_resource_version,
                dry_run,
            ),
        )

    async def delete_collection(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        grace_period_s: int | None = None,
        propagation_policy: str | None = None,
    ) -> dict[str, Any]:
        """Delete every matching object; returns the server's answer (a list or a Status)."""
        return await self._object(
            "DELETE",
            resource.path(namespace=namespace),
            params=_selector_params(label_selector, field_selector),
            body=_delete_options(grace_period_s, propagation_policy, None, None, False),
        )

    async def create_subresource(
        self,
        resource: Resource,
        name: str,
        subresource: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any] | None:
        """POST to a subresource: ``pods/binding``, ``pods/eviction``, ``serviceaccounts/token``.

        Returns the server's answer (a Status for binding/eviction, a TokenRequest for token).
        """
        _need_namespace(resource, namespace)
        return await self._object(
            "POST",
            resource.path(namespace=namespace, name=name, subresource=subresource),
            body=dict(body),
        )

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        allow_bookmarks: bool = True,
        timeout_s: int | None = None,
        send_initial_events: bool | None = None,
    ) -> WatchStream:
        """A watch stream of ``(type, object)`` from ``resource_version`` (see ``WatchStream``).

        Opened lazily on the first iteration. Use it as ``async with client.watch(...) as w:
        async for event_type, obj in w: ...``. ``resource_version=None`` starts with synthetic
        ADDED events for what exists now (as the API does); "0" means "any recent state".
        """
        params = _selector_params(label_selector, field_selector)
        params["watch"] = "true"
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_s is not None:
            params["timeoutSeconds"] = str(int(timeout_s))
        if send_initial_events is not None:
            params["sendInitialEvents"] = _bool_param(send_initial_events)
            params["resourceVersionMatch"] = "NotOlderThan"
        path = resource.path(namespace=namespace)
        # No total timeout unless the server was told when to end the watch: then allow a
        # margin, so a server that vanished without closing the socket cannot hang us forever.
        timeout = aiohttp.ClientTimeout(
            total=timeout_s + WATCH_TIMEOUT_MARGIN_S if timeout_s is not None else None,
            connect=self.config.connect_timeout_s,
        )

        async def opener() -> aiohttp.ClientResponse:
            return await self._send(
                "GET", path, params=params, body=None, content_type=None, client_timeout=timeout
            )

        return WatchStream(self, opener, resource_version)


# ---------------------------------------------------------------------------------------------
# Helpers


def _retry_after_s(header: str | None) -> float:
    try:
        value = float(header) if header else DEFAULT_RETRY_AFTER_S
    except ValueError:
        value = DEFAULT_RETRY_AFTER_S
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


def _need_namespace(resource: Resource, namespace: str | None) -> None:
    if resource.namespaced and not namespace:
        raise ValueError(f"{resource.plural} are namespaced: give a namespace")


def _body_namespace(body: Mapping[str, Any]) -> str | None:
    return (body.get("metadata") or {}).get("namespace") or None


def _with_type(resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with apiVersion and kind filled in when the caller left them out."""
    result = dict(body)
    result.setdefault("apiVersion", resource.api_version)
    result.setdefault("kind", resource.kind)
    return result


def _selector_params(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _write_params(dry_run: bool, field_manager: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if dry_run:
        params["dryRun"] = "All"
    if field_manager:
        params["fieldManager"] = field_manager
    return params


def _delete_options(
    grace_period_s: int | None,
    propagation_policy: str | None,
    precondition_uid: str | None,
    precondition_resource_version: str | None,
    dry_run: bool,
) -> dict[str, Any]:
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
    if grace_period_s is not None:
        options["gracePeriodSeconds"] = int(grace_period_s)
    if propagation_policy:
        options["propagationPolicy"] = propagation_policy
    preconditions = {}
    if precondition_uid:
        preconditions["uid"] = precondition_uid
    if precondition_resource_version:
        preconditions["resourceVersion"] = precondition_resource_version
    if preconditions:
        options["preconditions"] = preconditions
    if dry_run:
        options["dryRun"] = ["All"]
    return options
