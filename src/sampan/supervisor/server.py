"""``sampan server``: which components run, in which order, built from the configuration.

Order (each waits on the readiness of the ones before it): datastore -> API server ->
controllers -> scheduler -> addons (auto-deployed manifests) -> snapshots -> the embedded
agent. Before the API server issues its certificates it loads the cluster's shared CAs, keys
and tokens from the datastore, or stores them there when it is the first server
(``sampan.supervisor.bootstrap_data``); ``--cluster-reset`` restores a snapshot instead of
starting anything (``sampan.supervisor.snapshots``).
The controllers and the scheduler record their Prometheus series in the API server's
registry, so its ``/metrics`` serves them all (K3s serves its embedded components' metrics on
the apiserver's port the same way). Components after the API server talk to it only through
the Kubernetes API, each with its
own client certificate and kubeconfig under ``<data-dir>/server/cred/`` (as K3s keeps
``server/cred/*.kubeconfig``), exactly as a remote component would.

Everything a user can get wrong in the components' options (``kube-*-arg`` keys, scheduler
configuration files) is checked here, before anything starts, so the error is one line.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sampan.config import Config, ConfigError
from sampan.pki import AUTH_PROXY_USER
from sampan.supervisor.agent import (
    agent_components,
    default_node_ips,
    node_name,
    restricted_node_labels,
)
from sampan.supervisor.etcd import EmbeddedEtcd, uses_embedded_etcd
from sampan.supervisor.profile import PROFILE_CIS, SecretFilePermissions, cis_server_files
from sampan.supervisor.supervisor import Component, ComponentContext
from sampan.supervisor.token import (
    JoinToken,
    TokenError,
    ensure_agent_token,
    ensure_server_token,
    parse_token,
)

if TYPE_CHECKING:
    from sampan.apiserver import APIServer
    from sampan.datastore import Backend

__all__ = [
    "DatastoreComponent",
    "encryption_config_path",
    "encryption_hash_path",
    "generated_encryption_path",
    "server_components",
]

log = logging.getLogger("sampan.supervisor")


class DatastoreComponent:
    """The datastore driver: ``--datastore-endpoint`` (with K3s's TLS file flags for etcd),
    or the embedded etcd started before it."""

    name = "datastore"

    def __init__(
        self,
        endpoint: str,
        data_dir: Path,
        *,
        tls: Any = None,
        embedded_etcd: EmbeddedEtcd | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._data_dir = data_dir
        self._tls = tls
        self._embedded_etcd = embedded_etcd
        self.backend: Backend | None = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.datastore import describe, open_backend

        endpoint, tls = self._endpoint, self._tls
        if self._embedded_etcd is not None:
            endpoint, tls = self._embedded_etcd.endpoint, self._embedded_etcd.tls
        backend = open_backend(endpoint, self._data_dir, tls=tls)
        await backend.start()
        self.backend = backend
        log.info(
            "datastore ready: %s (revision %d)", describe(backend), await backend.current_revision()
        )

    async def stop(self) -> None:
        if self.backend is not None:
            await self.backend.close()
            self.backend = None


class APIServerComponent:
    name = "apiserver"

    def __init__(self, config: Config, datastore: DatastoreComponent) -> None:
        self._config = config
        self._datastore = datastore
        self._limits = _apiserver_limits(config)
        self._encryption = _apiserver_encryption(config)
        audit_policy, admission_config = cis_server_files(config)
        self._audit = _apiserver_audit(config, audit_policy)
        # kube-apiserver-arg wins, as a later kube-apiserver flag does in RKE2.
        args = config.component_args("kube-apiserver-arg")
        self._admission_config = _apiserver_admission_config(
            args.get(ADMISSION_CONFIG_ARG) or admission_config
        )
        self.server: APIServer | None = None
        self.token: JoinToken | None = None
        self.embedded_etcd: EmbeddedEtcd | None = None
        """Set when this server runs an embedded etcd: it then answers etcd member joins."""

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.apiserver import APIServer, APIServerOptions

        config = self._config
        hostname = socket.gethostname()
        boot = await self._bootstrap()
        if config.secrets_encryption and self._encryption == generated_encryption_path(config):
            from sampan.apiserver.storage.encryption import write_generated_config

            if await asyncio.to_thread(write_generated_config, self._encryption):
                log.info("generated the secrets encryption configuration %s", self._encryption)
        options = APIServerOptions(
            bind_address=config.bind_address,
            port=config.https_listen_port,
            advertise_address=config.advertise_address or None,
            tls_dir=config.data_dir / "server" / "tls",
            hostname=hostname,
            node_ips=tuple(config.node_ip) or default_node_ips(),
            # Agents and kubectl verify the server's name: the address it advertises must be
            # in its certificate too (as K3s adds it).
            # So must a specific --bind-address: the server's own components dial it.
            tls_sans=(
                *config.tls_san,
                *filter(None, [config.advertise_address]),
                *([config.bind_address] if config.bind_address not in ("0.0.0.0", "::") else []),
            ),
            service_cidr=config.service_cidr,
            service_node_port_range=config.service_node_port_range,
            kubeconfig_path=config.write_kubeconfig,
            kubeconfig_mode=config.kubeconfig_mode,
            limits=self._limits,
            encryption_provider_config=self._encryption,
            static_dir=config.data_dir / "server" / "static",
            audit=self._audit,
            admission_config_file=self._admission_config,
        )
        assert self._datastore.backend is not None
        server = APIServer(options, self._datastore.backend)
        await server.start()
        self.server = server
        await asyncio.to_thread(_record_encryption_hash, config, server.encryption)
        try:
            token_path = config.data_dir / "server" / "token"
            given = config.token.reveal()
            if config.server and self.embedded_etcd is not None and given:
                # The token's CA hash was checked when joining; only its secret is kept (the
                # token file is written again with this server's CA bundle).
                given = parse_token(given).secret
            token = await asyncio.to_thread(
                ensure_server_token,
                config.data_dir,
                server.pki.ca_pem,
                given or boot.token_secret,
            )
            agent_token = None
            if config.agent_token or boot.agent_token_secret:
                agent_token = await asyncio.to_thread(
                    ensure_agent_token,
                    config.data_dir,
                    server.pki.ca_pem,
                    config.agent_token.reveal() or boot.agent_token_secret,
                )
        except TokenError as exc:
            raise RuntimeError(f"--token: {exc}") from None
        # Agents join with the agent token when there is one, else with the server token.
        server.set_join_secrets(
            {"server": token.secret, "node": (agent_token or token).secret},
            local_node=None if config.disable_agent else node_name(config),
        )
        self.token = token
        if self.embedded_etcd is not None:
            server.set_etcd_member_handler(self.embedded_etcd.add_member)
        log.info("node token is available at %s", token_path)
        log.info(
            "API server ready at %s; admin kubeconfig: %s", server.url, config.write_kubeconfig
        )
        log.info(
            "use it with: export KUBECONFIG=%s; kubectl get nodes  (or: sampan kubectl get nodes)",
            config.write_kubeconfig,
        )

    async def _bootstrap(self) -> Any:
        """The cluster's shared CAs, keys and tokens from the datastore (written there by the
        first server): see ``sampan.supervisor.bootstrap_data``."""
        from sampan.apiserver.storage.encryption import write_generated_config
        from sampan.supervisor.bootstrap_data import BootstrapError, reconcile_bootstrap

        config = self._config
        backend = self._datastore.backend
        assert backend is not None, "the datastore starts first"
        try:
            token = parse_token(config.token.reveal()).secret if config.token else ""
            agent_token = ""
            if config.agent_token:
                agent_token = parse_token(config.agent_token.reveal(), default_user="node").secret
        except TokenError as exc:
            raise RuntimeError(f"--token: {exc}") from None
        try:
            return await reconcile_bootstrap(
                backend,
                server_dir=config.data_dir / "server",
                token=token,
                agent_token=agent_token,
                secrets_encryption=bool(config.secrets_encryption)
                and self._encryption == generated_encryption_path(config),
                generate_encryption=write_generated_config,
            )
        except BootstrapError as exc:
            raise RuntimeError(f"bootstrap: {exc}") from None

    def started(self) -> APIServer:
        """The running API server (components after this one start once it runs)."""
        assert self.server is not None, "the API server starts first"
        return self.server

    def server_token(self) -> JoinToken:
        assert self.token is not None, "the API server starts first"
        return self.token

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


class ClientComponent:
    """A component that talks to the API server: at start, issue its client certificate and
    kubeconfig (``<data-dir>/server/cred/<name>.kubeconfig``), then build and start it."""

    def __init__(
        self,
        name: str,
        api: APIServerComponent,
        cred_dir: Path,
        *,
        common_name: str,
        organizations: Sequence[str] = (),
        build: Callable[[Any], Any],
    ) -> None:
        self.name = name
        self._api = api
        self._cred_dir = cred_dir
        self._common_name = common_name
        self._organizations = tuple(organizations)
        self._build = build
        self.inner: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.client import ClientConfig
        from sampan.pki import ensure_client_kubeconfig

        server = self._api.server
        assert server is not None, "the API server starts first"
        path = self._cred_dir / f"{self.name}.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            server.pki,
            name=self.name,
            common_name=self._common_name,
            organizations=self._organizations,
            path=path,
            server_url=server.url,
        )
        client_config = await asyncio.to_thread(ClientConfig.from_kubeconfig, path)
        inner = self._build(client_config)
        if inspect.isawaitable(inner):  # a builder that must read files first
            inner = await inner
        self.inner = inner
        await self.inner.start(ctx)
        if callable(getattr(self.inner, "health", None)):
            server.add_readyz_check(f"component/{self.name}", self._check_health)

    async def _check_health(self) -> None:
        """``/readyz?verbose`` shows ``[+]component/controllers ok`` while every controller of
        the current term is healthy (a follower has none and is ready)."""
        inner = self.inner
        if inner is None:
            raise RuntimeError(f"{self.name} is stopped")
        unhealthy = sorted(name for name, ok in inner.health().items() if not ok)
        if unhealthy:
            raise RuntimeError(f"unhealthy: {', '.join(unhealthy)}")

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
            self.inner = None


CONTROL_PLANE_ROLE_LABEL = "node-role.kubernetes.io/control-plane"
MASTER_ROLE_LABEL = "node-role.kubernetes.io/master"
ETCD_ROLE_LABEL = "node-role.kubernetes.io/etcd"
NODE_LABEL_RETRY_S = 5.0


class ServerNodeLabels:
    """Keeps the labels a kubelet may not set itself (NodeRestriction) on this server's own
    Node, as K3s's server labels its node: ``node-role.kubernetes.io/control-plane=true`` and
    ``node-role.kubernetes.io/master=true``, ``node-role.kubernetes.io/etcd=true`` when the
    server runs an embedded etcd member (so ``kubectl get nodes`` shows
    ``control-plane,etcd,master``), and the restricted ``--node-label`` values. Watches that
    one Node and patches it whenever one of them is missing or different (also after the Node
    is deleted and registered again); a failed patch is logged and retried."""

    name = "node-labels"

    def __init__(
        self, client_config: Any, node: str, labels: dict[str, str], *, etcd: bool = False
    ) -> None:
        self._client_config = client_config
        self._node = node
        roles = {CONTROL_PLANE_ROLE_LABEL: "true", MASTER_ROLE_LABEL: "true"}
        if etcd:
            roles[ETCD_ROLE_LABEL] = "true"
        self._labels = {**roles, **labels}
        self._client: Any = None
        self._informer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.client import Client, Informer
        from sampan.client.api import NODES

        self._client = Client(self._client_config)
        self._informer = Informer(self._client, NODES, field_selector=f"metadata.name={self._node}")
        self._informer.add_event_handler(
            on_add=lambda _n: self._wake.set(), on_update=lambda _o, _n: self._wake.set()
        )
        self._informer.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="node-labels")

    async def _run(self) -> None:
        from sampan.client import ClientError, PatchType
        from sampan.client.api import NODES

        while True:
            await self._wake.wait()
            self._wake.clear()
            node = self._informer.cache.get_by_name(self._node)
            if node is None:
                continue
            current = (node.get("metadata") or {}).get("labels") or {}
            wanted = {k: v for k, v in self._labels.items() if current.get(k) != v}
            if not wanted:
                continue
            try:
                await self._client.patch(
                    NODES,
                    self._node,
                    {"metadata": {"labels": wanted}},
                    patch_type=PatchType.MERGE,
                )
                log.info("node %s labelled %s", self._node, ", ".join(sorted(wanted)))
            except ClientError as exc:
                log.warning("node %s: cannot set labels yet: %s", self._node, exc)
                await asyncio.sleep(NODE_LABEL_RETRY_S)
                self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._informer is not None:
            await self._informer.stop()
            self._informer = None
        if self._client is not None:
            await self._client.close()
            self._client = None


SERVER_DIRS = ("db", "tls", "manifests", "cred", "static")


ENCRYPTION_PROVIDER_CONFIG_ARG = "encryption-provider-config"
ADMISSION_CONFIG_ARG = "admission-control-config-file"


def _apiserver_limits(config: Config) -> Any:
    """``kube-apiserver-arg`` (the request limits' keys), checked now."""
    from sampan.apiserver.audit import AUDIT_ARGS
    from sampan.apiserver.limits import parse_limits_args

    args = config.component_args("kube-apiserver-arg")
    args.pop(ENCRYPTION_PROVIDER_CONFIG_ARG, None)  # see encryption_config_path
    for key in (*AUDIT_ARGS, ADMISSION_CONFIG_ARG):  # see _apiserver_audit
        args.pop(key, None)
    try:
        return parse_limits_args(args)
    except ValueError as exc:
        raise ConfigError(f"kube-apiserver-arg: {exc}") from None


def generated_encryption_path(config: Config) -> Path:
    """Where ``--secrets-encryption`` keeps its configuration (K3s's place)."""
    return config.data_dir / "server" / "cred" / "encryption-config.json"


def encryption_config_path(config: Config) -> Path | None:
    """The ``EncryptionConfiguration`` in effect: ``kube-apiserver-arg=
    encryption-provider-config=PATH`` (the user's file wins, as a later kube-apiserver flag
    does in K3s), else the generated file with ``--secrets-encryption``, else None."""
    given = config.component_args("kube-apiserver-arg").get(ENCRYPTION_PROVIDER_CONFIG_ARG)
    if given is not None:
        if not given.strip():
            raise ConfigError(f"kube-apiserver-arg: --{ENCRYPTION_PROVIDER_CONFIG_ARG}: empty path")
        return Path(given.strip())
    if config.secrets_encryption:
        return generated_encryption_path(config)
    return None


def encryption_hash_path(config: Config) -> Path:
    """Where the server records the path and hash of the encryption configuration it loaded
    (removed when it runs without one): ``secrets-encrypt`` compares the file with it (a
    change needs a restart) and finds the file through it when no flag names one."""
    return config.data_dir / "server" / "cred" / "encryption-loaded.json"


def _record_encryption_hash(config: Config, loaded: Any) -> None:
    path = encryption_hash_path(config)
    if loaded is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    record = {"hash": f"start-{loaded.digest}", "path": str(loaded.path)}
    tmp.write_text(json.dumps(record) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _apiserver_encryption(config: Config) -> Path | None:
    """The configuration file, validated now when it exists (a bad one stops the start with
    one line naming the file and the field)."""
    from sampan.apiserver.storage.encryption import EncryptionConfigError, load_encryption_config

    path = encryption_config_path(config)
    if path is None or (path == generated_encryption_path(config) and not path.exists()):
        return path
    try:
        load_encryption_config(path)
    except EncryptionConfigError as exc:
        raise ConfigError(
            f"kube-apiserver-arg: --{ENCRYPTION_PROVIDER_CONFIG_ARG}: {exc}"
        ) from None
    return path


def _apiserver_audit(config: Config, policy_file: str) -> Any:
    """``--audit-policy-file`` and the ``kube-apiserver-arg`` ``audit-*`` keys, checked now
    (the policy too: a bad one stops the start with one line naming the file and field)."""
    from sampan.apiserver.audit import AuditPolicyError, load_policy, parse_audit_args

    try:
        options = parse_audit_args(
            config.component_args("kube-apiserver-arg"),
            policy_file=policy_file,
            default_log_path=config.data_dir / "server" / "logs" / "audit.log",
        )
    except ValueError as exc:
        raise ConfigError(f"kube-apiserver-arg: {exc}") from None
    if options is not None:
        try:
            load_policy(options.policy_file)
        except AuditPolicyError as exc:
            raise ConfigError(f"audit-policy-file: {exc}") from None
    return options


def _apiserver_admission_config(path: str) -> Path | None:
    """``--pod-security-admission-config-file`` (or ``kube-apiserver-arg=
    admission-control-config-file``), checked now."""
    from sampan.apiserver.admission.podsecurityconfig import (
        PodSecurityConfigError,
        load_admission_config,
    )

    if not path:
        return None
    try:
        load_admission_config(Path(path))
    except PodSecurityConfigError as exc:
        raise ConfigError(f"pod-security-admission-config-file: {exc}") from None
    return Path(path)


def controller_manager_options(config: Config) -> Any:
    """The controller manager's options from the configuration (``ConfigError`` for a bad
    ``kube-controller-manager-arg``). ``--disable=local-storage`` leaves the local-path
    provisioner out, as K3s does."""
    from sampan.controllers.base import ControllerManagerOptions

    tls = config.data_dir / "server" / "tls"
    try:
        return ControllerManagerOptions(
            cluster_cidr=config.cluster_cidr,
            service_cidr=config.service_cidr,
            local_storage_path=str(config.local_storage_path),
            # csrsigning signs with the CAs the API server and the nodes already trust, as
            # K3s points kube-controller-manager's --cluster-signing-* flags at its own.
            signing_kube_apiserver_client_cert_file=str(tls / "client-ca.crt"),
            signing_kube_apiserver_client_key_file=str(tls / "client-ca.key"),
            signing_kubelet_client_cert_file=str(tls / "client-ca.crt"),
            signing_kubelet_client_key_file=str(tls / "client-ca.key"),
            signing_kubelet_serving_cert_file=str(tls / "kubelet-serving-ca.crt"),
            signing_kubelet_serving_key_file=str(tls / "kubelet-serving-ca.key"),
            controllers=("*", "-local-path-provisioner")
            if "local-storage" in config.disable
            else ("*",),
            args=config.component_args("kube-controller-manager-arg"),
        )
    except ValueError as exc:
        raise ConfigError(f"kube-controller-manager-arg: {exc}") from None


def _shared_registry(api: APIServerComponent) -> Any:
    """The metrics registry of the in-process components: the API server's, served on its
    ``/metrics`` (as K3s serves its embedded components' metrics on the apiserver's)."""
    assert api.server is not None, "the API server starts first"
    return api.server.metrics.registry


def _controller_manager(config: Config, api: APIServerComponent) -> Callable[[Any], Any]:
    """Validate the controller manager's options now; build the component at start, with the
    service-account signing key (read off the event loop) for ``serviceaccount-token``."""
    from sampan.controllers.manager import ControllerManager

    options = controller_manager_options(config)

    async def build(client_config: Any) -> Any:
        assert api.server is not None, "the API server starts first"
        key_pem = await asyncio.to_thread(api.server.pki.sa_private_key_pem)
        return ControllerManager(
            client_config,
            options.with_changes(service_account_private_key_pem=key_pem),
            metrics_registry=_shared_registry(api),
        )

    return build


def helm_controller_enabled(config: Config) -> bool:
    """K3s's two switches: ``--disable=helm-controller`` and ``--disable-helm-controller``."""
    return not config.disable_helm_controller and "helm-controller" not in config.disable


def _helm_controller(config: Config) -> Callable[[Any], Any]:
    """The HelmChart controller, leader-elected with the controller manager's timings."""
    from sampan.helm import HelmControllerComponent, HelmOptions

    options = HelmOptions(
        static_dir=config.data_dir / "server" / "static",
        # Written by its ClientComponent before the component is built (0600).
        kubeconfig_path=config.data_dir / "server" / "cred" / "helm-controller.kubeconfig",
    )
    manager_options = controller_manager_options(config)
    return lambda client_config: HelmControllerComponent(client_config, options, manager_options)


class DashboardServerComponent:
    """``--dashboard`` (without ``--manager``): the single-cluster web UI on its own port. It
    has no credential of its own (each user logs in with a service account token), so unlike
    the client components it gets no client certificate: only the API server's URL and the
    PKI (its serving certificate is signed by the server CA)."""

    name = "dashboard"

    def __init__(self, config: Config, api: APIServerComponent) -> None:
        self._config = config
        self._api = api
        self.inner: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.ui.component import DashboardComponent, DashboardOptions

        server = self._api.server
        assert server is not None, "the API server starts first"
        options = DashboardOptions(
            api_url=server.url,
            bind_address=self._config.bind_address,
            port=self._config.dashboard_port,
        )
        self.inner = DashboardComponent(options, server.pki)
        await self.inner.start(ctx)

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
            self.inner = None


def _manager(config: Config, api: APIServerComponent) -> Callable[[Any], Any]:
    """The manager (``--manager``): a component of this server, not a separate process. It
    needs the server CA (its serving certificate and ``/cacerts``), and keeps its state in
    this cluster through the API like any other component; one process, one lifecycle."""
    from sampan.manager.component import ManagerComponent, ManagerOptions
    from sampan.ui.component import manager_ui_app

    options = ManagerOptions(
        manager_dir=config.data_dir / "server" / "manager",
        bind_address=config.bind_address,
        port=config.manager_port,
    )

    def build(client_config: Any) -> Any:
        assert api.server is not None, "the API server starts first"
        # The web UI is mounted in the manager's app (/dashboard/), handed over here:
        # components do not import each other.
        return ManagerComponent(client_config, options, api.server.pki, ui=manager_ui_app)

    return build


def _scheduler(config: Config, api: APIServerComponent) -> Callable[[Any], Any]:
    """Validate ``kube-scheduler-arg`` (and the configuration file it names) now."""
    from sampan.scheduler import Scheduler, SchedulerConfigError, SchedulerOptions
    from sampan.scheduler.config import resolve_options

    options = SchedulerOptions(args=config.component_args("kube-scheduler-arg"))
    try:
        resolve_options(options)
    except SchedulerConfigError as exc:
        raise ConfigError(str(exc)) from None
    return lambda client_config: Scheduler(
        client_config, options, metrics_registry=_shared_registry(api)
    )


def _addons(config: Config) -> Callable[[Any], Any]:
    from sampan.addons import AddonManager, AddonOptions, template_vars

    options = AddonOptions(
        manifests_dir=config.data_dir / "server" / "manifests",
        disabled=frozenset(config.disable),
        variables=template_vars(
            cluster_dns=config.cluster_dns,
            cluster_domain=config.cluster_domain,
            default_local_storage_path=str(config.local_storage_path),
        ),
    )
    return lambda client_config: AddonManager(client_config, options)


class MetricsServerComponent:
    """The metrics-server add-on with its TLS material (issued in a thread at start)."""

    name = "metrics-server"

    def __init__(self, client_config: Any, api: APIServerComponent) -> None:
        self._client_config = client_config
        self._api = api
        self.inner: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.addons.metrics import MetricsServer, MetricsServerOptions
        from sampan.addons.metrics.tls import ensure_metrics_tls

        assert self._api.server is not None
        pki = self._api.server.pki
        tls = await asyncio.to_thread(ensure_metrics_tls, pki, "127.0.0.1")
        self.inner = MetricsServer(
            self._client_config,
            MetricsServerOptions(
                serving_cert_path=tls.serving_cert,
                serving_key_path=tls.serving_key,
                # The API server's front-proxy client (API aggregation) is the only caller.
                requestheader_ca_path=pki.request_header_ca_cert_path,
                requestheader_allowed_names=(AUTH_PROXY_USER,),
                kubelet_client_cert_path=tls.kubelet_cert,
                kubelet_client_key_path=tls.kubelet_key,
                kubelet_ca_path=tls.kubelet_ca,
            ),
        )
        await self.inner.start(ctx)

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
            self.inner = None


def _metrics_server(config: Config, api: APIServerComponent) -> Callable[[Any], Any]:
    """The metrics-server add-on (``--disable=metrics-server`` leaves it out, as K3s)."""
    del config
    return lambda client_config: MetricsServerComponent(client_config, api)


def _metrics_server_removal(client_config: Any) -> Any:
    from sampan.addons.metrics import MetricsServerRemoval

    return MetricsServerRemoval(client_config)


def server_components(config: Config) -> list[Component]:
    for sub in SERVER_DIRS:
        os.makedirs(config.data_dir / "server" / sub, mode=0o700, exist_ok=True)
    os.makedirs(config.data_dir / "server" / "static" / "charts", mode=0o700, exist_ok=True)
    cred = config.data_dir / "server" / "cred"
    components: list[Component] = []
    embedded_etcd = None
    if uses_embedded_etcd(config):
        embedded_etcd = EmbeddedEtcd(config)
        components.append(embedded_etcd)
    datastore = DatastoreComponent(
        config.datastore_endpoint.reveal(),
        config.data_dir,
        tls=_datastore_tls(config),
        embedded_etcd=embedded_etcd,
    )
    api = APIServerComponent(config, datastore)
    api.embedded_etcd = embedded_etcd
    components += [datastore, api]
    if not config.disable_controller_manager:
        components.append(
            ClientComponent(
                "controllers",
                api,
                cred,
                common_name="system:sampan-controller",
                build=_controller_manager(config, api),
            )
        )
    if not config.disable_scheduler:
        components.append(
            ClientComponent(
                "scheduler",
                api,
                cred,
                common_name="system:kube-scheduler",
                build=_scheduler(config, api),
            )
        )
    if helm_controller_enabled(config):
        # Helm charts may hold any kind: cluster-admin, as K3s's Helm jobs run.
        components.append(
            ClientComponent(
                "helm-controller",
                api,
                cred,
                common_name="system:sampan-helm-controller",
                organizations=("system:masters",),
                build=_helm_controller(config),
            )
        )
    if config.manager:
        # The manager installs its CRDs and reads and writes any kind: cluster-admin.
        components.append(
            ClientComponent(
                "manager",
                api,
                cred,
                common_name="system:sampan-manager",
                organizations=("system:masters",),
                build=_manager(config, api),
            )
        )
    if config.dashboard and not config.manager:
        components.append(DashboardServerComponent(config, api))
    # Manifests in <data-dir>/server/manifests, applied as cluster-admin (as K3s deploys them).
    components.append(
        ClientComponent(
            "addons",
            api,
            cred,
            common_name="system:sampan-addons",
            organizations=("system:masters",),
            build=_addons(config),
        )
    )
    # The metrics add-on registers its own Service, Endpoints and APIService (hence
    # cluster-admin, as the manifests K3s applies for it); disabled, it removes them.
    components.append(
        ClientComponent(
            "metrics-server",
            api,
            cred,
            common_name="system:metrics-server",
            organizations=("system:masters",),
            build=_metrics_server_removal
            if "metrics-server" in config.disable
            else _metrics_server(config, api),
        )
    )
    if embedded_etcd is not None:
        from sampan.supervisor.etcd_members import EtcdMemberController

        etcd, own_node = embedded_etcd, node_name(config)
        components.append(
            ClientComponent(
                "etcd-member-controller",
                api,
                cred,
                common_name="system:sampan-controller",
                build=lambda client_config: EtcdMemberController(client_config, etcd, own_node),
            )
        )
    snapshots = _snapshots(config)
    if snapshots is not None:
        components.append(
            ClientComponent(
                "etcd-snapshots", api, cred, common_name="system:sampan-controller", build=snapshots
            )
        )
    if not config.disable_agent:
        # The embedded agent joins this server exactly as a remote agent would.
        components += agent_components(
            config,
            server_url=lambda: api.started().url,
            token=lambda: api.server_token().render(),
            is_server=True,
        )
        # The labels its kubelet may not set itself, from the server's side.
        labels = restricted_node_labels(_node_labels(config))
        name = node_name(config)
        components.append(
            ClientComponent(
                "node-labels",
                api,
                cred,
                common_name="system:sampan-controller",
                build=lambda client_config: ServerNodeLabels(
                    client_config, name, labels, etcd=embedded_etcd is not None
                ),
            )
        )
    if config.profile == PROFILE_CIS:
        components.append(SecretFilePermissions(config.data_dir))  # last: every file written
    return components


def _snapshots(config: Config) -> Callable[[Any], Any] | None:
    """Scheduled snapshots and their records, for a datastore that has snapshots (SQLite and
    embedded etcd: ``supervisor.snapshots.backend_for``), unless ``--etcd-disable-snapshots``.
    Options are checked now."""
    from sampan.datastore.snapshot import SnapshotError, snapshot_backend
    from sampan.supervisor.snapshots import SnapshotComponent, check_snapshot_options

    if config.etcd_disable_snapshots:
        return None
    try:
        snapshot_backend(config.datastore_endpoint.reveal(), config.data_dir)
    except SnapshotError:
        return None  # e.g. PostgreSQL: backed up with its own tools
    check_snapshot_options(config)
    name = node_name(config)
    return lambda client_config: SnapshotComponent(client_config, config, name)


def _datastore_tls(config: Config) -> Any:
    """K3s's ``--datastore-cafile/certfile/keyfile`` (etcd endpoints only)."""
    if not (config.datastore_cafile or config.datastore_certfile or config.datastore_keyfile):
        return None
    from sampan.datastore.etcd import EtcdTLS  # grpc: ~35 ms, only for etcd endpoints

    return EtcdTLS(
        cafile=Path(config.datastore_cafile) if config.datastore_cafile else None,
        certfile=Path(config.datastore_certfile) if config.datastore_certfile else None,
        keyfile=Path(config.datastore_keyfile) if config.datastore_keyfile else None,
    )


def _node_labels(config: Config) -> dict[str, str]:
    """``--node-label`` as a dict (agent_components already refused malformed items)."""
    labels = {}
    for item in config.node_label:
        key, _sep, value = item.partition("=")
        labels[key] = value
    return labels
