"""The API server: lifecycle, request pipeline and non-resource endpoints.

Owns ``APIServer`` (start: PKI -> storage -> auth -> listen -> admin kubeconfig -> bootstrap
objects -> ready; stop: end watches -> close the listener -> stop storage) and the request
pipeline every request goes through, in kube-apiserver's order:

    request info -> authentication -> (401 unless a public health/version path)
    -> audit (policy evaluated with the authenticated user; 401s are audited too)
    -> impersonation -> max in-flight (429; limits.py) -> authorization (Node, then RBAC; 403
       with the upstream wording) -> watches per user (429) -> handler
       (or, for ``/apis/<group>/<version>/...`` of an APIService with a ``spec.service``,
       the aggregator's proxy: authorized here first, so a refused request never reaches
       the extension server)

Connections are accepted through ``httpconn.HeaderTimeoutRunner`` (as ``StatusAppRunner``):
request headers must arrive within 32 s (upstream's ReadHeaderTimeout), and errors of the HTTP
layer itself are answered as a Status.

Every response carries ``Audit-ID`` (the client's, or a new UUID). With an audit policy
(``APIServerOptions.audit``), each request the policy records emits RequestReceived,
ResponseStarted (long-running requests, when the headers go out), then ResponseComplete — or
Panic for the last-guard 500 — to the audit log (audit/); authorization adds the
``authorization.k8s.io/decision`` and ``reason`` annotations.

Every failure leaves as a ``Status`` JSON (errors.py). Non-resource endpoints served here:
``/healthz``, ``/livez``, ``/readyz`` (and ``/<check>`` subpaths, ``?verbose``), ``/version``,
``/metrics`` (Prometheus, ``sampan.apiserver.metrics``; every request is counted there),
and discovery (``/api``, ``/apis`` ...).

Invariants: the server never owns the datastore backend (the supervisor starts and closes
it); ``stop()`` returns within a few seconds even with open watches.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sampan.api import fields
from sampan.api.conversion import convert
from sampan.api.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotSupported,
    NotAcceptable,
    NotFound,
    StatusError,
    Unauthorized,
)
from sampan.api.labels import SelectorError, parse_selector
from sampan.api.resources import builtin_registry
from sampan.apiserver import discovery
from sampan.apiserver.admission import Admission
from sampan.apiserver.admission.podsecurityconfig import load_admission_config
from sampan.apiserver.aggregator import Aggregator
from sampan.apiserver.audit import (
    AUDIT_ID_HEADER,
    AUDIT_ID_KEY,
    AUDIT_KEY,
    STAGE_PANIC,
    STAGE_RESPONSE_STARTED,
    AuditLogBackend,
    AuditOptions,
    Auditor,
    load_policy,
    new_audit_id,
)
from sampan.apiserver.auth import (
    ANONYMOUS,
    DEFAULT_API_AUDIENCES,
    Attributes,
    AuthenticationError,
    Authenticator,
    RBACAuthorizer,
    RequestHeaderConfig,
    TokenIssuer,
    forbidden_message,
)
from sampan.apiserver.auth.bootstrap import node_rules
from sampan.apiserver.auth.node import NodeAuthorizer, NodeGraph
from sampan.apiserver.auth.reviews import (
    JWKS_PATH,
    OPENID_CONFIGURATION_PATH,
    openid_configuration,
    service_account_jwks,
)
from sampan.apiserver.auth.serviceaccount import DEFAULT_ISSUER
from sampan.apiserver.auth.union import UnionAuthorizer
from sampan.apiserver.bootstrap import ensure_bootstrap_objects
from sampan.apiserver.crd import (
    BuiltinSchemas,
    CRDController,
    CustomResources,
    request_warnings,
    warning_header,
)
from sampan.apiserver.crd.conversion import WebhookConversion
from sampan.apiserver.endpoints_reconciler import KubernetesEndpointsReconciler
from sampan.apiserver.handlers import HandlerContext, ResourceHandler, not_found
from sampan.apiserver.httperrors import StatusAppRunner
from sampan.apiserver.impersonation import impersonate
from sampan.apiserver.join import JoinService, is_join_path
from sampan.apiserver.limits import (
    InFlightLimiter,
    LimitsOptions,
    WatchLimiter,
    is_long_running,
)
from sampan.apiserver.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from sampan.apiserver.metrics import APIServerMetrics
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, dump_json
from sampan.apiserver.openapi import DocumentResponse, OpenAPI
from sampan.apiserver.openapi_data import load_definitions
from sampan.apiserver.openapi_pb import PROTOBUF_CONTENT_TYPE, PROTOBUF_MEDIA_TYPES
from sampan.apiserver.podproxy import PodProxy, build_pod_proxy
from sampan.apiserver.requestinfo import RequestInfo, parse_request_info
from sampan.apiserver.responses import bounded_warnings, error_response, json_response
from sampan.apiserver.static import is_static_path, serve_static
from sampan.apiserver.storage import DeleteOptions, Storage
from sampan.apiserver.storage.encryption import (
    EncryptionConfig,
    load_encryption_config,
    wrap_backend,
)
from sampan.apiserver.subresources import EvictionHandler, TokenRequestHandler
from sampan.apiserver.watch import WatchTracker
from sampan.datastore import StoreError
from sampan.httpconn import (
    DEFAULT_HEADER_READ_TIMEOUT_S,
    HeaderTimeout,
    pin_mmap_threshold,
    share_tls_receive_buffers,
)
from sampan.pki import AUTH_PROXY_USER, ensure_admin_kubeconfig, ensure_cluster_pki

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "APIServer",
    "APIServerOptions",
]

if TYPE_CHECKING:
    from sampan.api.resources import ResourceRegistry
    from sampan.pki import ClusterPKI

log = logging.getLogger(__name__)

DEFAULT_PORT = 6443
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024
SHUTDOWN_TIMEOUT_S = 3.0
"""How long stop() lets in-flight requests finish before the listener is torn down."""
HEALTH_CHECK_TIMEOUT_S = 5.0
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
"""Answered without authentication, and exempt from the in-flight limit."""
SERVICE_HTTPS_PORT = 443
DECISION_ANNOTATION = "authorization.k8s.io/decision"
REASON_ANNOTATION = "authorization.k8s.io/reason"


@dataclass(frozen=True)
class APIServerOptions:
    tls_dir: Path
    hostname: str
    node_ips: tuple[str, ...] = ()
    tls_sans: tuple[str, ...] = ()
    bind_address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    advertise_address: str | None = None
    service_cidr: str = "10.43.0.0/16"
    kubeconfig_path: Path | None = None
    kubeconfig_mode: int = 0o600
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    service_node_port_range: str = "30000-32767"
    limits: LimitsOptions = field(default_factory=LimitsOptions)
    encryption_provider_config: Path | None = None
    """kube-apiserver's ``--encryption-provider-config``: resources encrypted at rest
    (storage/encryption.py); a bad file stops the start."""
    header_read_timeout_s: float = DEFAULT_HEADER_READ_TIMEOUT_S
    static_dir: Path | None = None
    """``<data-dir>/server/static``: served unauthenticated under ``/static/`` (K3s); None =
    not served."""
    audit: AuditOptions | None = None
    """kube-apiserver's ``--audit-policy-file`` and ``--audit-log-*`` (audit/); a bad policy
    stops the start."""
    admission_config_file: Path | None = None
    """kube-apiserver's ``--admission-control-config-file`` (RKE2's
    ``--pod-security-admission-config-file``): the PodSecurity plugin's defaults and
    exemptions (admission/podsecurityconfig.py); a bad file stops the start."""

    @property
    def service_ip(self) -> str:
        """The first address of the service CIDR: the ``kubernetes`` Service's ClusterIP."""
        network = ipaddress.ip_network(self.service_cidr, strict=False)
        return str(network.network_address + 1)


def _is_public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


@dataclass
class _HealthCheck:
    name: str
    check: Callable[[], Awaitable[None]]


@dataclass
class _Runtime:
    """Everything start() builds; None until then."""

    pki: ClusterPKI | None = None
    storage: Storage | None = None
    registry: ResourceRegistry | None = None
    authenticator: Authenticator | None = None
    authorizer: UnionAuthorizer | None = None  # Node, then RBAC
    handler: ResourceHandler | None = None
    admission: Admission | None = None
    endpoints: KubernetesEndpointsReconciler | None = None
    openapi: OpenAPI | None = None
    custom: CustomResources | None = None
    crds: CRDController | None = None
    pod_proxy: PodProxy | None = None  # pods/log, exec, attach, portforward; nodes/proxy
    # serviceaccounts/token, pods/eviction: (group, plural, subresource) -> handler
    subresources: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    join: JoinService | None = None  # /cacerts and /v1-sampan/node (agents joining)
    aggregator: Aggregator | None = None  # APIServices: proxying, availability, discovery
    auditor: Auditor | None = None  # with an audit policy
    runner: web.AppRunner | None = None
    port: int = 0
    bootstrapped: bool = False
    checks: list[_HealthCheck] = field(default_factory=list)


class APIServer:
    """One Kubernetes API server over a datastore backend (already started by the caller)."""

    def __init__(self, options: APIServerOptions, backend: Any) -> None:
        self.options = options
        self.backend = backend
        self.encryption: EncryptionConfig | None = None  # what start() loaded
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._watches = WatchTracker()
        self._inflight = InFlightLimiter(
            options.limits.max_requests_inflight, options.limits.max_mutating_requests_inflight
        )
        self._watch_limiter = WatchLimiter(options.limits.max_watches_per_user)
        self._rt = _Runtime()
        self.metrics = APIServerMetrics()
        self._join_secrets: dict[str, str] = {}
        self._etcd_member: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        self._local_node: str | None = None

    # --- public ---------------------------------------------------------------------------

    def add_readyz_check(self, name: str, check: Callable[[], Awaitable[None]]) -> None:
        """Add a check to ``/readyz`` (``[+]name ok``); ``check`` raises RuntimeError when not
        ready. The supervisor uses it for the in-process components' health."""
        self._rt.checks.append(_HealthCheck(name, check))

    def set_join_secrets(
        self, secrets_by_user: dict[str, str], *, local_node: str | None = None
    ) -> None:
        """The token secrets agents may join with (``{"server": s, "node": agent_s}``);
        until set, every join is refused. ``local_node``: the name of the node running on
        this host (the embedded agent), which alone may claim the host's name and IPs."""
        self._join_secrets = dict(secrets_by_user)
        self._local_node = local_node

    def set_etcd_member_handler(
        self, handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None
    ) -> None:
        """What answers ``POST /v1-sampan/etcd-member`` (a server joining the embedded etcd
        cluster): the supervisor's embedded etcd; None (the default) answers 404."""
        self._etcd_member = handler

    @property
    def url(self) -> str:
        """Where this process reaches its own API: loopback, unless the listener is bound to
        one specific address (then that one)."""
        host = self.options.bind_address
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self._rt.port or self.options.port}"

    @property
    def port(self) -> int:
        return self._rt.port

    @property
    def pki(self) -> Any:
        return self._rt.pki

    @property
    def storage(self) -> Any:
        return self._rt.storage

    @property
    def registry(self) -> Any:
        return self._rt.registry

    @property
    def openapi(self) -> OpenAPI | None:
        """The served OpenAPI schemas (CRD handling registers CRD schemas here)."""
        return self._rt.openapi

    @property
    def inflight(self) -> InFlightLimiter:
        """Requests being served, by kind (the max-in-flight counters)."""
        return self._inflight

    @property
    def watch_limiter(self) -> WatchLimiter:
        """Open watches per user."""
        return self._watch_limiter

    @property
    def open_watch_streams(self) -> int:
        return len(self._watches)

    @property
    def advertise_address(self) -> str:
        if self.options.advertise_address:
            return self.options.advertise_address
        if self.options.node_ips:
            return self.options.node_ips[0]
        return "127.0.0.1"

    async def start(self) -> None:
        """Bring the server up; on any failure, undo what was started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        opts = self.options
        rt = self._rt
        rt.pki = await asyncio.to_thread(
            ensure_cluster_pki,
            opts.tls_dir,
            hostname=opts.hostname,
            node_ips=list(opts.node_ips),
            tls_sans=list(opts.tls_sans),
            service_ip=opts.service_ip,
        )
        if opts.audit is not None:
            policy = await asyncio.to_thread(load_policy, opts.audit.policy_file)
            backend = AuditLogBackend(
                opts.audit.log_path,
                max_size_mb=opts.audit.max_size_mb,
                max_backups=opts.audit.max_backups,
                max_age_days=opts.audit.max_age_days,
                queue_events=opts.audit.queue_events,
            )
            await backend.start()
            rt.auditor = Auditor(policy, backend)
        rt.registry = builtin_registry()
        rt.openapi = OpenAPI(rt.registry, await asyncio.to_thread(load_definitions))
        if opts.encryption_provider_config is not None:
            # Every writer below (stores, binding, endpoints, allocators) goes through it.
            encryption = await asyncio.to_thread(
                load_encryption_config, opts.encryption_provider_config
            )
            self.backend = wrap_backend(self.backend, encryption, rt.registry.all)
            self.encryption = encryption
        rt.storage = Storage(self.backend, rt.registry)
        self.metrics.watch_storage(rt.storage.object_counts, rt.storage.object_bytes)
        await rt.storage.start()
        self._build_auth()
        pod_security = None
        if opts.admission_config_file is not None:
            pod_security = await asyncio.to_thread(
                load_admission_config, opts.admission_config_file
            )
        rt.admission = Admission(
            rt.storage,
            rt.registry,
            self.backend,
            authorize=rt.authorizer.authorize,
            resolve_rules=rt.authorizer.rbac.resolved_rules,  # RBAC rules only, as upstream
            service_cidr=opts.service_cidr,
            node_port_range=opts.service_node_port_range,
            pod_security=pod_security,
        )
        # The computed subresources (REST handlers, not admission plugins; they admit what
        # they create through the chain as upstream's TokenRequest and Eviction REST do).
        rt.subresources = {
            ("", "serviceaccounts", "token"): TokenRequestHandler(
                TokenIssuer(await asyncio.to_thread(rt.pki.sa_private_key_pem)),
                rt.admission.get,
                rt.admission.chain,
                tuple(DEFAULT_API_AUDIENCES),
            ),
            ("", "pods", "eviction"): EvictionHandler(
                rt.storage, rt.registry, rt.admission.chain, DeleteOptions
            ),
        }
        rt.custom = CustomResources(
            BuiltinSchemas(rt.openapi.definition_name, rt.openapi.definition)
        )
        rt.admission.custom = rt.custom  # CEL rules of custom resources
        # CRD conversion webhooks go through the admission webhooks' HTTPS pool.
        rt.custom.conversion = WebhookConversion(rt.admission.webhook_caller.post_review)
        rt.admission.openapi = rt.openapi  # type checks of ValidatingAdmissionPolicies
        rt.pod_proxy = await build_pod_proxy(
            rt.pki, rt.storage, rt.registry, authorize=rt.authorizer.authorize
        )
        rt.handler = ResourceHandler(self._handler_context())
        rt.join = JoinService(
            rt.pki,
            lambda plural: rt.storage.for_resource(rt.registry.by_resource("", "v1", plural)),
            lambda: self._join_secrets,
            host_addresses=(opts.hostname, *opts.node_ips),
            local_node=lambda: self._local_node,
            etcd_member=lambda: self._etcd_member,
        )
        rt.checks = [
            _HealthCheck("ping", _ok),
            _HealthCheck("etcd", self._check_datastore),
            _HealthCheck("informer-sync", self._check_storage),
            _HealthCheck("poststarthook/bootstrap-controller", self._check_bootstrap),
        ]
        ssl_context: ssl.SSLContext = rt.pki.ssl_server_context()
        pin_mmap_threshold()  # closed connections give their TLS buffers back (httpconn)
        share_tls_receive_buffers()  # one TLS receive buffer per thread, not per connection
        app = web.Application(client_max_size=opts.max_body_bytes + 1)
        # [\s\S]: a path with a newline (%0A) is the API's to answer too, not the router's.
        app.router.add_route("*", "/{tail:[\\s\\S]*}", self._dispatch)
        app.on_response_prepare.append(_add_warnings)
        app.on_response_prepare.append(_audit_response_started)
        # Access entries go to the "aiohttp.access" logger at INFO: the supervisor's logging
        # shows them only at high verbosity, and aiohttp skips formatting when disabled.
        # HTTP-layer errors answer a Status; request headers must arrive in time (httpconn).
        rt.runner = StatusAppRunner(
            app,
            HeaderTimeout(opts.header_read_timeout_s),
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            handle_signals=False,
            access_log_format=ACCESS_LOG_FORMAT,
        )
        await rt.runner.setup()
        site = web.TCPSite(rt.runner, opts.bind_address, opts.port, ssl_context=ssl_context)
        await site.start()
        rt.port = _bound_port(rt.runner, opts.port)
        if opts.kubeconfig_path is not None:
            await asyncio.to_thread(
                ensure_admin_kubeconfig,
                rt.pki,
                opts.kubeconfig_path,
                self.url,
                opts.kubeconfig_mode,
            )
        await rt.storage.wait_ready()
        await ensure_bootstrap_objects(
            rt.storage,
            rt.registry,
            service_ip=opts.service_ip,
            advertise_address=self.advertise_address,
            port=rt.port,
        )
        await rt.admission.start()  # system PriorityClasses, Service allocation repair
        rt.endpoints = KubernetesEndpointsReconciler(
            rt.storage,
            rt.registry,
            self.backend,
            address=self.advertise_address,
            port=rt.port,
            service_ip=opts.service_ip,
        )
        await rt.endpoints.reconcile()  # this server (and the other live ones) in kubernetes
        rt.endpoints.start()
        rt.crds = CRDController(rt.storage, rt.registry, rt.custom, rt.openapi)
        await rt.crds.start()
        rt.aggregator = Aggregator(rt.storage, rt.registry, rt.pki)
        await rt.aggregator.start()
        rt.bootstrapped = True
        self.ready.set()
        log.info("API server listening on %s:%d", opts.bind_address, rt.port)

    async def stop(self) -> None:
        self._stopping.set()
        self._watches.stop_all()
        self.ready.clear()
        rt = self._rt
        if rt.endpoints is not None:
            await rt.endpoints.stop()  # clients stop picking this server first
            rt.endpoints = None
        if rt.runner is not None:
            await rt.runner.cleanup()
            rt.runner = None
        if rt.aggregator is not None:
            await rt.aggregator.stop()
            rt.aggregator = None
        if rt.auditor is not None:
            await rt.auditor.backend.stop()  # every event of the finished requests written
            rt.auditor = None
        if rt.crds is not None:
            await rt.crds.stop()
            rt.crds = None
        if rt.admission is not None:
            await rt.admission.stop()
        if rt.storage is not None:
            await rt.storage.stop()

    # --- wiring -----------------------------------------------------------------------------

    def _build_auth(self) -> None:
        rt = self._rt
        rt.authenticator = Authenticator(
            sa_public_keys=[rt.pki.sa_public_key_pem],
            lookup=_StorageLookup(rt.storage, rt.registry),
            client_ca_pem=rt.pki.client_ca_pem,
            request_header=RequestHeaderConfig(
                ca_pem=rt.pki.request_header_ca_pem, allowed_names=(AUTH_PROXY_USER,)
            ),
        )

        def store(group: str, version: str, plural: str) -> Any:
            return rt.storage.for_resource(rt.registry.by_resource(group, version, plural))

        graph = NodeGraph(
            store("", "v1", "pods"),
            store("", "v1", "persistentvolumes"),
            store("storage.k8s.io", "v1", "volumeattachments"),
        )
        rt.authorizer = UnionAuthorizer(
            NodeAuthorizer(graph, node_rules()),
            RBACAuthorizer(_StorageRBACSource(rt.storage, rt.registry)),
        )

    def _handler_context(self) -> HandlerContext:
        rt = self._rt
        assert rt.admission is not None
        return HandlerContext(
            registry=rt.registry,
            storage=rt.storage,
            admission=rt.admission.chain,
            subresources={**rt.subresources, **rt.pod_proxy.handlers()},
            max_body_bytes=self.options.max_body_bytes,
            watches=self._watches,
            authorize=rt.authorizer.authorize,
            make_attributes=Attributes,
            delete_options_type=DeleteOptions,
            label_selector=_parse_label_selector,
            field_selector=_parse_field_selector,
            convert=convert,
            rules_for=rt.authorizer.rules_for,
            authenticate_token=self._authenticate_token,
            api_audiences=tuple(DEFAULT_API_AUDIENCES),
            datastore_health=self._datastore_health,
            openapi=rt.openapi,
            custom=rt.custom,
        )

    async def _authenticate_token(self, token: str) -> Any:
        """TokenReview: the bearer-token chain alone (no client certificate)."""
        assert self._rt.authenticator is not None
        return await self._rt.authenticator.authenticate(
            peer_cert=None, authorization=f"Bearer {token}"
        )

    async def _datastore_health(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
                await self.backend.current_revision()
        except (StoreError, OSError, RuntimeError, TimeoutError) as exc:
            return False, f"datastore check failed: {type(exc).__name__}"
        return True, "ok"

    # --- request pipeline -----------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        request[AUDIT_ID_KEY] = request.headers.get(AUDIT_ID_HEADER) or new_audit_id()
        ri = parse_request_info(request.method, request.path, request.query)
        dry_run = bool(request.query.get("dryRun"))
        with self.metrics.track(request.method, ri, dry_run=dry_run) as code:
            response = await self._serve(request, ri, received)
            code.append(response.status)
            return response

    async def _serve(
        self, request: web.Request, ri: RequestInfo, received: float
    ) -> web.StreamResponse:
        audit = None
        try:
            if self._rt.join is not None and is_join_path(request.path):
                return await self._rt.join.handle(request)
            if self.options.static_dir is not None and is_static_path(request.path):
                return await serve_static(self.options.static_dir, request)
            try:
                user = await self._authenticate(request)
                if user is None and not _is_public(request.path):
                    raise Unauthorized()
            except Unauthorized:
                audit = await self._audit_begin(request, ri, None, received)
                raise
            audit = await self._audit_begin(request, ri, user or ANONYMOUS, received)
            if user is None:
                response = await self._route(request, ri, user)
            else:
                impersonated = self._impersonate(request, user)
                if audit is not None and impersonated is not user:
                    audit.impersonated(impersonated)
                response = await self._limited_route(request, ri, impersonated)
        except StatusError as exc:
            response = error_response(exc)  # warnings go with failures too, as upstream
        except Exception as exc:  # the last guard: log it, answer 500, keep serving
            log.exception("internal error serving %s %s", request.method, request.path)
            response = error_response(InternalError(f"Internal error occurred: {exc}"))
            if audit is not None:
                audit.response(response.status, response)
                await audit.emit(STAGE_PANIC, time.time())
            return response
        if audit is not None:
            assert self._rt.auditor is not None
            await self._rt.auditor.finish(audit, response.status, response)
        return response

    async def _audit_begin(
        self, request: web.Request, ri: RequestInfo, user: Any, received: float
    ) -> Any:
        auditor = self._rt.auditor
        if auditor is None:
            return None
        return await auditor.begin(
            request,
            ri,
            user,
            audit_id=request[AUDIT_ID_KEY],
            received=received,
            long_running=is_long_running(ri.verb, ri.subresource),
        )

    async def _limited_route(
        self, request: web.Request, ri: RequestInfo, user: Any
    ) -> web.StreamResponse:
        """In-flight limit (before authorization, as upstream), authorization, then the watch
        cap for watches that were allowed, then the handler."""
        field_selector = request.query.get("fieldSelector", "")
        if _is_public(request.path):
            self._authorize(ri, user, field_selector, request.get(AUDIT_KEY))
            return await self._route(request, ri, user)
        with self._inflight.admit(ri.verb, ri.subresource, user):
            self._authorize(ri, user, field_selector, request.get(AUDIT_KEY))
            if ri.verb != "watch":
                return await self._route(request, ri, user)
            with self._watch_limiter.admit(user):
                return await self._route(request, ri, user)

    async def _authenticate(self, request: web.Request) -> Any:
        peer_cert: bytes | None = None
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            peer_cert = ssl_object.getpeercert(binary_form=True)
        try:
            return await self._rt.authenticator.authenticate(
                peer_cert=peer_cert,
                authorization=request.headers.get("Authorization"),
                headers=request.headers,
            )
        except AuthenticationError as exc:
            log.debug("authentication failed for %s: %s", request.path, exc)
            raise Unauthorized() from exc

    def _impersonate(self, request: web.Request, user: Any) -> Any:
        return impersonate(
            user,
            request.headers,
            authorize=self._rt.authorizer.authorize,
            make_attributes=Attributes,
            forbidden_message=forbidden_message,
        )

    def _authorize(
        self, ri: RequestInfo, user: Any, field_selector: str = "", audit: Any = None
    ) -> None:
        if ri.is_resource_request:
            attrs = Attributes(
                user=user,
                verb=ri.verb,
                namespace=ri.namespace,
                api_group=ri.api_group,
                resource=ri.resource,
                subresource=ri.subresource,
                name=ri.name,
                path=ri.path,
                resource_request=True,
                field_selector=field_selector,
            )
        else:
            attrs = Attributes(user=user, verb=ri.verb, path=ri.path, resource_request=False)
        decision = self._rt.authorizer.authorize(attrs)
        if audit is not None:
            audit.annotate(DECISION_ANNOTATION, "allow" if decision.allowed else "forbid")
            audit.annotate(REASON_ANNOTATION, decision.reason)
        if not decision.allowed:
            raise Forbidden(
                forbidden_message(attrs, decision.reason),
                name=ri.name,
                group=ri.api_group,
                kind=ri.resource,
            )

    async def _route(self, request: web.Request, ri: RequestInfo, user: Any) -> web.StreamResponse:
        rt = self._rt
        aggregated = self._aggregated(request)
        if aggregated is not None:
            return await aggregated(user)
        if ri.is_resource_request:
            assert rt.handler is not None
            return await rt.handler.handle(request, ri, user)
        path = request.path.rstrip("/") or "/"
        for prefix in ("/healthz", "/livez", "/readyz"):
            if path == prefix or path.startswith(prefix + "/"):
                _require_get(request)
                return await self._health(request, prefix, path[len(prefix) + 1 :])
        if path == "/version":
            _require_get(request)
            return json_response(discovery.version_info())
        if path == "/metrics":
            _require_get(request)
            return web.Response(
                body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
            )
        if path in (OPENID_CONFIGURATION_PATH, JWKS_PATH):
            _require_get(request)
            return self._issuer_discovery(path)
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            _require_get(request)
            return self._openapi_v3(request, path)
        if path == "/openapi/v2":
            _require_get(request)
            return self._openapi_v2(request)
        if path in ("/api", "/apis"):
            media_type = discovery.aggregated_media_type(request.headers.get("Accept", ""))
            if media_type is not None:
                _require_get(request)
                aggregated = discovery.aggregated_discovery(
                    self._rt.registry, legacy=path == "/api"
                )
                if path == "/apis" and rt.aggregator is not None:
                    aggregated = rt.aggregator.merge_aggregated(aggregated)
                body = dump_json(aggregated)
                headers = discovery.aggregated_caching_headers(body)
                if discovery.not_modified(headers, request.headers.get("If-None-Match")):
                    return web.Response(status=304, headers=headers)
                response = web.Response(body=body, headers=headers)
                response.headers["Content-Type"] = media_type
                return response
        document = self._discovery_document(path)
        if document is not None:
            _require_get(request)
            return json_response(document)
        raise not_found()

    def _issuer_discovery(self, path: str) -> web.StreamResponse:
        """Service-account issuer discovery (OIDC), as kube-apiserver serves it: the
        configuration names this server's JWKS; both behind RBAC
        (``system:service-account-issuer-discovery``, bound to every service account)."""
        keys = [self._rt.pki.sa_public_key_pem]
        if path == JWKS_PATH:
            response = json_response(service_account_jwks(keys))
            response.headers["Content-Type"] = "application/jwk-set+json"
            return response
        jwks_uri = f"https://{self.advertise_address}:{self._rt.port}{JWKS_PATH}"
        return json_response(openid_configuration(DEFAULT_ISSUER, jwks_uri, keys))

    def _aggregated(
        self, request: web.Request
    ) -> Callable[[Any], Awaitable[web.StreamResponse]] | None:
        """The proxy call for ``/apis/<group>/<version>[/...]`` of an APIService with a
        ``spec.service`` (after authentication and authorization), else None."""
        aggregator = self._rt.aggregator
        parts = request.path.strip("/").split("/")
        if aggregator is None or len(parts) < 3 or parts[0] != "apis":
            return None
        apiservice = aggregator.remote_apiservice(parts[1], parts[2])
        if apiservice is None:
            return None
        return lambda user: aggregator.proxy(request, apiservice, user)

    def _openapi_v3(self, request: web.Request, path: str) -> web.Response:
        assert self._rt.openapi is not None
        served = self._rt.openapi.v3_response(
            path, request.query.get("hash"), request.headers.get("If-None-Match")
        )
        if served is None:
            raise not_found()
        return _document_response(served, JSON_CONTENT_TYPE)

    def _openapi_v2(self, request: web.Request) -> web.Response:
        """Swagger 2.0 in JSON, or as gnostic protobuf for client-go, which asks for that
        first (kubectl's client-side validation reads it)."""
        assert self._rt.openapi is not None
        accept = request.headers.get("Accept", "")
        if_none_match = request.headers.get("If-None-Match")
        if any(media_type in accept for media_type in PROTOBUF_MEDIA_TYPES):
            # Answered with the spelling Go's mime parser accepts (no "@"), as kube-apiserver.
            served = self._rt.openapi.v2_response(protobuf=True, if_none_match=if_none_match)
            return _document_response(served, PROTOBUF_CONTENT_TYPE)
        if accept and not any(t in accept for t in ("application/json", "*/*", "application/*")):
            raise NotAcceptable(
                "only application/json and " + PROTOBUF_MEDIA_TYPES[0] + " are supported"
            )
        served = self._rt.openapi.v2_response(protobuf=False, if_none_match=if_none_match)
        return _document_response(served, JSON_CONTENT_TYPE)

    def _discovery_document(self, path: str) -> dict[str, Any] | None:
        registry = self._rt.registry
        parts = path.strip("/").split("/")
        if parts == ["api"]:
            return discovery.api_versions(f"{self.advertise_address}:{self._rt.port}")
        if len(parts) == 2 and parts[0] == "api":
            return discovery.api_resource_list(registry, "", parts[1])
        aggregator = self._rt.aggregator
        if parts == ["apis"]:
            groups = discovery.api_group_list(registry)
            return aggregator.merge_group_list(groups) if aggregator is not None else groups
        if len(parts) == 2 and parts[0] == "apis":
            remote = aggregator.remote_group(parts[1]) if aggregator is not None else None
            return remote or discovery.api_group(registry, parts[1])
        if len(parts) == 3 and parts[0] == "apis":
            return discovery.api_resource_list(registry, parts[1], parts[2])
        return None

    # --- health -------------------------------------------------------------------------------

    async def _health(self, request: web.Request, endpoint: str, only: str) -> web.Response:
        checks = self._rt.checks
        if endpoint == "/livez":
            checks = [c for c in checks if c.name in ("ping", "etcd")]
        elif endpoint == "/healthz":
            checks = [c for c in checks if not c.name.startswith("component/")]
        if only:
            checks = [c for c in checks if c.name == only]
            if not checks:
                raise not_found()
        excluded = set(request.query.getall("exclude", []))
        checks = [c for c in checks if c.name not in excluded]
        lines: list[str] = []
        failed = False
        for check in checks:
            try:
                async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
                    await check.check()
                lines.append(f"[+]{check.name} ok")
            except (StatusError, StoreError, OSError, RuntimeError, TimeoutError) as exc:
                log.warning("health check %s failed: %s", check.name, exc)
                lines.append(f"[-]{check.name} failed: reason withheld")
                failed = True
        if endpoint == "/readyz" and self._stopping.is_set():
            lines.append("[-]shutdown failed: reason withheld")
            failed = True
        name = endpoint.lstrip("/")
        verbose = "verbose" in request.query or failed
        if verbose:
            verdict = f"{name} check failed" if failed else f"{name} check passed"
            text = "\n".join([*lines, verdict]) + "\n"
        else:
            text = "ok"
        return web.Response(
            text=text,
            status=500 if failed else 200,
            content_type="text/plain",
            charset="utf-8",
        )

    async def _check_datastore(self) -> None:
        await self.backend.current_revision()

    async def _check_storage(self) -> None:
        await self._rt.storage.wait_ready()

    async def _check_bootstrap(self) -> None:
        if not self._rt.bootstrapped:
            raise RuntimeError("bootstrap objects not created yet")


async def _add_warnings(request: web.Request, response: web.StreamResponse) -> None:
    """Warning headers go with every response, failures and streams (LIST, watch) included:
    added as the headers are sent, after the handler recorded them."""
    for warning in bounded_warnings(request_warnings(request)):
        response.headers.add("Warning", warning_header(warning))


async def _audit_response_started(request: web.Request, response: web.StreamResponse) -> None:
    """Every response says its ``Audit-ID``; a long-running request's audit emits
    ResponseStarted as its headers go out (a watch, logs, exec...)."""
    audit_id = request.get(AUDIT_ID_KEY)
    if audit_id is not None and AUDIT_ID_HEADER not in response.headers:
        response.headers[AUDIT_ID_HEADER] = audit_id
    audit = request.get(AUDIT_KEY)
    if audit is not None and audit.long_running and not audit.started:
        audit.started = True
        audit.status_code = response.status
        await audit.emit(STAGE_RESPONSE_STARTED, time.time())


async def _ok() -> None:
    return None


def _document_response(served: DocumentResponse, content_type: str) -> web.Response:
    """An OpenAPI answer: a 304 goes without body or Content-Type (as Go's
    ``http.ServeContent`` sends it), a 301 with the small HTML body of ``http.Redirect``."""
    if served.status == 304:
        return web.Response(status=304, headers=served.headers)
    if served.status == 301:
        content_type = "text/html; charset=utf-8"
    response = web.Response(body=served.body, status=served.status)
    response.headers["Content-Type"] = content_type
    response.headers.update(served.headers)
    return response


def _require_get(request: web.Request) -> None:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotSupported("the server does not allow this method on the requested resource")


def _bound_port(runner: web.AppRunner, wanted: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return wanted


def _parse_label_selector(text: str) -> Any:
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise BadRequest(str(exc)) from exc


def _parse_field_selector(info: Any, text: str) -> Any:
    try:
        return fields.check_supported(info, fields.parse_field_selector(text))
    except SelectorError as exc:
        raise BadRequest(str(exc)) from exc


class _StorageLookup:
    """Authentication's TokenLookup over the storage layer (service accounts, pods...)."""

    def __init__(self, storage: Any, registry: Any) -> None:
        self._storage = storage
        self._registry = registry

    async def get_object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        info = self._registry.by_resource("", "v1", resource)
        if info is None:
            return None
        try:
            return await self._storage.for_resource(info).get(
                namespace if info.namespaced else None, name
            )
        except NotFound:
            return None


class _StorageRBACSource:
    """RBAC objects straight from the storage layer's watch caches."""

    GROUP = "rbac.authorization.k8s.io"

    def __init__(self, storage: Any, registry: Any) -> None:
        def store(plural: str) -> Any:
            return storage.for_resource(registry.by_resource(self.GROUP, "v1", plural))

        self._cluster_roles = store("clusterroles")
        self._cluster_role_bindings = store("clusterrolebindings")
        self._roles = store("roles")
        self._role_bindings = store("rolebindings")

    def cluster_roles(self) -> Any:
        return self._cluster_roles.cached_objects(None)

    def cluster_role_bindings(self) -> Any:
        return self._cluster_role_bindings.cached_objects(None)

    def roles(self, namespace: str) -> Any:
        return self._roles.cached_objects(namespace)

    def role_bindings(self, namespace: str) -> Any:
        return self._role_bindings.cached_objects(namespace)

    def generation(self) -> int:
        return (
            self._cluster_roles.generation
            + self._cluster_role_bindings.generation
            + self._roles.generation
            + self._role_bindings.generation
        )
