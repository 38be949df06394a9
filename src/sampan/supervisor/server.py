"""``sampan server``: which components run, in which order, built from the configuration.

Order (each waits on the readiness of the ones before it): datastore -> API server ->
controllers -> scheduler -> the embedded agent. Components after the API server talk to it
only through the Kubernetes API, each with its own client certificate and kubeconfig under
``<data-dir>/server/cred/`` (as K3s keeps ``server/cred/*.kubeconfig``), exactly as a remote
component would.

Everything a user can get wrong in the components' options (``kube-*-arg`` keys, scheduler
configuration files) is checked here, before anything starts, so the error is one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sampan.config import Config, ConfigError
from sampan.supervisor.supervisor import Component, ComponentContext
from sampan.supervisor.token import TokenError, ensure_agent_token, ensure_server_token

__all__ = ["DatastoreComponent", "server_components"]

log = logging.getLogger("sampan.supervisor")


class DatastoreComponent:
    name = "datastore"

    def __init__(self, endpoint: str, data_dir: Path) -> None:
        self._endpoint = endpoint
        self._data_dir = data_dir
        self.backend = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.datastore import describe, open_backend

        backend = open_backend(self._endpoint, self._data_dir)
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
        self.server = None
        self.token = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.apiserver import APIServer, APIServerOptions

        config = self._config
        hostname = socket.gethostname()
        options = APIServerOptions(
            bind_address=config.bind_address,
            port=config.https_listen_port,
            advertise_address=config.advertise_address or None,
            tls_dir=config.data_dir / "server" / "tls",
            hostname=hostname,
            node_ips=tuple(config.node_ip) or _default_node_ips(),
            tls_sans=tuple(config.tls_san),
            service_cidr=config.service_cidr,
            kubeconfig_path=config.write_kubeconfig,
            kubeconfig_mode=config.kubeconfig_mode,
        )
        assert self._datastore.backend is not None
        server = APIServer(options, self._datastore.backend)
        await server.start()
        self.server = server
        try:
            token_path = config.data_dir / "server" / "token"
            token = await asyncio.to_thread(
                ensure_server_token, config.data_dir, server.pki.ca_pem, config.token.reveal()
            )
            agent_token = None
            if config.agent_token:
                agent_token = await asyncio.to_thread(
                    ensure_agent_token,
                    config.data_dir,
                    server.pki.ca_pem,
                    config.agent_token.reveal(),
                )
        except TokenError as exc:
            raise RuntimeError(f"--token: {exc}") from None
        # Agents join with the agent token when there is one, else with the server token.
        server.set_join_secrets({"server": token.secret, "node": (agent_token or token).secret})
        self.token = token
        log.info("node token is available at %s", token_path)
        log.info(
            "API server ready at %s; admin kubeconfig: %s", server.url, config.write_kubeconfig
        )
        log.info(
            "use it with: export KUBECONFIG=%s; kubectl get nodes  (or: sampan kubectl get nodes)",
            config.write_kubeconfig,
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def _default_node_ips() -> tuple[str, ...]:
    """The address of the interface holding the default route (what K3s advertises)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # No packet is sent: connect() on UDP only picks the route and source address.
        s.connect(("192.0.2.1", 9))
        return (s.getsockname()[0],)
    except OSError:
        return ("127.0.0.1",)
    finally:
        s.close()


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
        self.inner = self._build(client_config)
        await self.inner.start(ctx)

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
            self.inner = None


SERVER_DIRS = ("db", "tls", "manifests", "cred")


def _controller_manager(config: Config) -> Callable[[Any], Any]:
    """Validate the controller manager's options now; build the component at start."""
    from sampan.controllers.base import ControllerManagerOptions
    from sampan.controllers.manager import ControllerManager

    try:
        options = ControllerManagerOptions(
            cluster_cidr=config.cluster_cidr,
            service_cidr=config.service_cidr,
            args=config.component_args("kube-controller-manager-arg"),
        )
    except ValueError as exc:
        raise ConfigError(f"kube-controller-manager-arg: {exc}") from None
    return lambda client_config: ControllerManager(client_config, options)


def _scheduler(config: Config) -> Callable[[Any], Any]:
    """Validate ``kube-scheduler-arg`` (and the configuration file it names) now."""
    from sampan.scheduler import Scheduler, SchedulerConfigError, SchedulerOptions
    from sampan.scheduler.config import resolve_options

    options = SchedulerOptions(args=config.component_args("kube-scheduler-arg"))
    try:
        resolve_options(options)
    except SchedulerConfigError as exc:
        raise ConfigError(str(exc)) from None
    return lambda client_config: Scheduler(client_config, options)


def node_name(config: Config) -> str:
    return config.node_name or socket.gethostname().lower()


def _kubelet(config: Config, *, is_server: bool) -> Callable[[Any], Any]:
    """Validate the kubelet's options (``kubelet-arg``, labels, taints) now."""
    from sampan.kubelet import Kubelet, KubeletOptions, KubeletOptionsError

    labels: dict[str, str] = {}
    for item in config.node_label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"node-label: {item!r} is not of the form key=value")
        labels[key] = value
    try:
        options = KubeletOptions(
            node_name=node_name(config),
            data_dir=config.data_dir,
            node_ips=tuple(config.node_ip) or _default_node_ips(),
            labels=labels,
            taints=tuple(config.node_taint),
            cluster_dns=config.cluster_dns,
            cluster_domain=config.cluster_domain,
            is_server=is_server,
            runtime_endpoint=config.container_runtime_endpoint,
            kubelet_args=config.component_args("kubelet-arg"),
        )
    except KubeletOptionsError as exc:
        raise ConfigError(str(exc)) from None
    return lambda client_config: Kubelet(client_config, options)


def _cni_writer(config: Config) -> Callable[[Any], Any]:
    from sampan.kubelet.runtime.containerd import ContainerdConfig
    from sampan.network.cni import CNIConfigWriter

    conf_dir = ContainerdConfig(data_dir=config.data_dir).cni_conf_dir
    ipam_dir = config.data_dir / "agent" / "cni" / "networks"
    return lambda client_config: CNIConfigWriter(
        client_config, node_name=node_name(config), conf_dir=conf_dir, ipam_data_dir=ipam_dir
    )


def server_components(config: Config) -> list[Component]:
    for sub in SERVER_DIRS:
        os.makedirs(config.data_dir / "server" / sub, mode=0o700, exist_ok=True)
    cred = config.data_dir / "server" / "cred"
    datastore = DatastoreComponent(config.datastore_endpoint.reveal(), config.data_dir)
    api = APIServerComponent(config, datastore)
    components: list[Component] = [datastore, api]
    if not config.disable_controller_manager:
        components.append(
            ClientComponent(
                "controllers",
                api,
                cred,
                common_name="system:sampan-controller",
                build=_controller_manager(config),
            )
        )
    if not config.disable_scheduler:
        components.append(
            ClientComponent(
                "scheduler",
                api,
                cred,
                common_name="system:kube-scheduler",
                build=_scheduler(config),
            )
        )
    if not config.disable_agent:
        name = node_name(config)
        if config.network_backend != "none":
            components.append(
                ClientComponent(
                    "network",
                    api,
                    cred,
                    common_name="system:sampan-agent",
                    build=_cni_writer(config),
                )
            )
        components.append(
            ClientComponent(
                "kubelet",
                api,
                cred,
                common_name=f"system:node:{name}",
                organizations=("system:nodes",),
                build=_kubelet(config, is_server=True),
            )
        )
    return components
