"""The supervisor component "manager": ``sampan server --manager``.

``start(ctx)`` (the local API is up; the supervisor gave this component a cluster-admin
client) does, in order:

1. installs the ``management.sampan.io`` CRDs and waits until they are served (retrying while
   the API refuses);
2. writes the built-in RoleTemplates and the ``local`` Cluster, refreshes its status;
3. creates the bootstrap admin if there is none: its random password is written once to
   ``<manager_dir>/bootstrap-password`` (0600) and the log names that file in one line marked
   ``BOOTSTRAP PASSWORD`` (unlike Rancher, never the password itself: no secret goes to a log
   line); only its argon2id hash is stored. Later starts print nothing;
4. issues the serving certificate (``manager-serving.crt``/``.key``, 0600, in the server's
   TLS directory) signed by the server CA for the API server's own names, at every start;
5. serves the HTTPS API (``sampan.manager.web``) on ``bind_address:port`` (default 8443),
   with the agents' tunnel endpoint ``/v3/connect`` (``sampan.manager.clusters``) and, when
   the supervisor gives one (``ui``), the web UI mounted under its prefix (``/dashboard/``),
   which reaches the manager's API through this same listener;
6. keeps watch-backed caches of its own objects (``sampan.manager.cache``: Users, Tokens,
   bindings, RoleTemplates, Clusters), from which requests are authenticated and authorized
   and the downstream RBAC is computed;
7. keeps three tasks: ``manager-refresh``: every ``REFRESH_S`` the ``local`` Cluster's status
   is refreshed and expired Tokens are deleted (a failure is logged and retried next time);
   ``manager-clusters``: the imported clusters' status from their tunnels and, through them,
   from their API servers (``ImportedClusters.run``); ``manager-rbac``: at start, whenever
   the API changes a binding, whenever an agent connects, and every ``REFRESH_S``, the
   downstream RBAC of every Cluster is reconciled (at once too when the cache sees a binding
   or RoleTemplate change, however it was made) (``sampan.manager.downstream_rbac``)
   through the dialer; clusters that are not connected are skipped until the next pass.

The dialer (``sampan.manager.proxy``) reaches cluster ``local`` with the manager's own client
configuration (``LocalDialer``) and every other cluster through its agent's tunnel
(``sampan.manager.clusters.TunnelDialer``, installed at start; ``remote_dialer`` or
``set_remote_dialer`` may replace it).

``stop()`` stops the listener (closing every tunnel) and the tasks. Blocking work
(certificates, files, argon2) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sampan.client import Client, ClientConfig, ClientError
from sampan.manager import downstream_rbac, store
from sampan.manager.cache import ManagerObjects
from sampan.manager.clusters import ImportedClusters, TunnelDialer
from sampan.manager.crds import CLUSTERS
from sampan.manager.proxy import (
    ClusterDialer,
    ClusterNotConnected,
    ClusterProxy,
    DownstreamError,
    LocalDialer,
    RoutingDialer,
)
from sampan.manager.web import ManagerAPI
from sampan.pki import ClusterPKI, issue_listener_serving_certificate
from sampan.pki.files import atomic_write
from sampan.pki.tls import server_ssl_context
from sampan.version import __version__

__all__ = [
    "BOOTSTRAP_PASSWORD_FILE",
    "COMPONENT_NAME",
    "DEFAULT_PORT",
    "ManagerComponent",
    "ManagerOptions",
]

log = logging.getLogger(__name__)

COMPONENT_NAME = "manager"
USER_AGENT = "sampan-manager"
DEFAULT_PORT = 8443
BOOTSTRAP_PASSWORD_FILE = "bootstrap-password"
REFRESH_S = 30.0
UIFactory = Callable[[Callable[[], str], bytes], tuple[str, web.Application]]
"""The web UI to mount (``sampan.ui``, given by the supervisor: components do not import each
other): called with the manager's loopback URL (a callable: the port is known once serving)
and the CA, it answers ``(path prefix, sub-application)``."""
INSTALL_RETRY_S = 2.0


@dataclass(frozen=True)
class ManagerOptions:
    manager_dir: Path
    """``<data-dir>/server/manager``: the bootstrap password file."""
    bind_address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    manager_url: str = ""
    """What registration commands name; empty: the ``Host`` the caller used."""


def _write_bootstrap_password(path: Path, password: str) -> None:
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    atomic_write(path, (password + "\n").encode(), mode=0o600)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "manager: %s ended: %r", task.get_name(), task.exception(), exc_info=task.exception()
        )


class ManagerComponent:
    """See the module docstring."""

    name = COMPONENT_NAME

    def __init__(
        self,
        client_config: ClientConfig,
        options: ManagerOptions,
        pki: ClusterPKI,
        *,
        remote_dialer: ClusterDialer | None = None,
        ui: UIFactory | None = None,
    ) -> None:
        self._ui = ui
        self._client_config = client_config.with_user_agent(USER_AGENT)
        self._options = options
        self._pki = pki
        self.dialer = RoutingDialer(LocalDialer(self._client_config), remote_dialer)
        """Reaches every cluster's API server (see ``sampan.manager.proxy``)."""
        self._client: Client | None = None
        self._runner: web.AppRunner | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self.clusters: ImportedClusters | None = None
        self._rbac: asyncio.Task[None] | None = None
        self._rbac_wanted = asyncio.Event()
        self.objects: ManagerObjects | None = None
        """The watch-backed caches of the manager's objects (from ``start``)."""
        self._proxy = ClusterProxy(self.dialer)
        self.port: int | None = None
        """The port served (useful with ``port=0``)."""

    @property
    def bootstrap_password_path(self) -> Path:
        return self._options.manager_dir / BOOTSTRAP_PASSWORD_FILE

    async def start(self, ctx: Any = None) -> None:
        del ctx
        client = Client(self._client_config)
        self._client = client
        while True:
            try:
                await store.ensure_crds(client)
                await store.ensure_builtins(client)
                password = await store.ensure_bootstrap_admin(client)
                break
            except (ClientError, OSError) as exc:
                log.warning("manager: cannot install its resources yet: %s", exc)
                await asyncio.sleep(INSTALL_RETRY_S)
        if password is not None:
            path = self.bootstrap_password_path
            await asyncio.to_thread(_write_bootstrap_password, path, password)
            # Rancher logs the password itself; a log line never carries a secret here.
            log.warning(
                "manager: BOOTSTRAP PASSWORD for user admin written to %s (0600, this once; "
                "change it at first login; `sampan manager reset-admin` sets a new one)",
                path,
            )
        await self._refresh_once()
        objects = ManagerObjects(client)
        objects.on_bindings_changed(self.reconcile_rbac_soon)
        self.objects = objects
        await objects.start()
        cert, key = await asyncio.to_thread(
            issue_listener_serving_certificate, self._pki, "manager"
        )
        context: ssl.SSLContext = await asyncio.to_thread(server_ssl_context, cert, key)
        clusters = ImportedClusters(client, on_connected=lambda _id: self.reconcile_rbac_soon())
        self.clusters = clusters
        if self.dialer.remote is None:
            self.set_remote_dialer(TunnelDialer(clusters))
        api = ManagerAPI(
            client,
            ca_pem=self._pki.ca_pem,
            agent_version=__version__,
            manager_url=self._options.manager_url,
            clusters=clusters,
            proxy=self._proxy,
            bindings_changed=self.reconcile_rbac_soon,
            objects=objects,
        )
        app = api.app()
        if self._ui is not None:
            prefix, ui_app = self._ui(self._loopback_url, self._pki.ca_pem)
            app.add_subapp(prefix, ui_app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, self._options.bind_address, self._options.port, ssl_context=context
        )
        await site.start()
        self._runner = runner
        self.port = next(
            (int(a[1]) for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2),
            self._options.port,
        )
        log.info("manager: serving https on %s:%s", self._options.bind_address, self.port)
        self._refresh = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="manager-refresh"
        )
        self._refresh.add_done_callback(_log_failure)
        self._health = asyncio.get_running_loop().create_task(
            clusters.run(), name="manager-clusters"
        )
        self._health.add_done_callback(_log_failure)
        self._rbac = asyncio.get_running_loop().create_task(self._rbac_loop(), name="manager-rbac")
        self._rbac.add_done_callback(_log_failure)

    def _loopback_url(self) -> str:
        """This listener's URL as this process reaches it (the web UI calls the API here)."""
        host = self._options.bind_address
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}"

    def set_remote_dialer(self, dialer: ClusterDialer | None) -> None:
        """Install (or remove) the dialer of the clusters other than ``local``."""
        self.dialer.remote = dialer
        self.reconcile_rbac_soon()

    def reconcile_rbac_soon(self) -> None:
        self._rbac_wanted.set()

    async def reconcile_rbac_once(self) -> None:
        """One pass over every Cluster (failures are logged; the next pass retries)."""
        assert self._client is not None
        inputs = self.objects.rbac_inputs() if self.objects is not None else None
        if inputs is not None and self.objects is not None:
            names = [c["metadata"]["name"] for c in self.objects.clusters.cache.list()]
        else:
            try:
                clusters = (await self._client.list_all(CLUSTERS)).get("items", [])
            except (ClientError, OSError) as exc:
                log.warning("manager: cannot list clusters for RBAC: %s", exc)
                return
            names = [c["metadata"]["name"] for c in clusters]
        for name in names:
            try:
                await downstream_rbac.reconcile(self._client, self.dialer, name, inputs)
            except ClusterNotConnected:
                continue
            except (ClientError, DownstreamError, OSError) as exc:
                log.warning("manager: downstream RBAC of cluster %s: %s", name, exc)

    async def _rbac_loop(self) -> None:
        while True:
            self._rbac_wanted.clear()
            await self.reconcile_rbac_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await self._rbac_wanted.wait()

    async def _refresh_once(self) -> None:
        assert self._client is not None
        try:
            await store.refresh_local_cluster(self._client)
            await store.delete_expired_tokens(self._client)
        except (ClientError, OSError) as exc:
            log.warning("manager: refresh failed (retrying in %ds): %s", REFRESH_S, exc)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            await self._refresh_once()

    async def stop(self) -> None:
        for attr in ("_refresh", "_health", "_rbac"):
            task = getattr(self, attr)
            setattr(self, attr, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._proxy.close()
        objects, self.objects = self.objects, None
        if objects is not None:
            await objects.stop()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
