"""The supervisor component "dashboard": the single-cluster UI on its own HTTPS port.

Opt-in (``--dashboard`` / ``dashboard: true``; off by default, as K3s's add-ons). ``start()``
issues the dashboard's serving certificate (``dashboard-serving.crt``/``.key``, 0600, in the
server's TLS directory, signed by the server CA for the API server's own names, at every
start) and serves ``UIApp`` (``TokenProvider``: users log in with a service account token,
which the UI sends to the local API server) on ``bind_address:port`` (default 8443). It holds
no credential of its own: everything it shows, it reads with the logged-in user's token.

With ``--manager`` this component does not run: the manager's own HTTPS app serves the same
UI under ``/dashboard/`` (``mount_in_manager``), for every cluster the manager reaches.
``stop()`` closes the listener and every live stream.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sampan.pki import ClusterPKI, issue_listener_serving_certificate
from sampan.pki.tls import server_ssl_context
from sampan.ui.app import PREFIX, UIApp
from sampan.ui.providers import ManagerProvider, TokenProvider

__all__ = ["DEFAULT_PORT", "DashboardComponent", "DashboardOptions", "manager_ui_app"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8443


@dataclass(frozen=True)
class DashboardOptions:
    api_url: str
    """The local API server's URL (the UI calls it with each session's token)."""
    bind_address: str = "0.0.0.0"
    port: int = DEFAULT_PORT


def manager_ui_app(manager_url: Callable[[], str], ca_pem: bytes) -> tuple[str, web.Application]:
    """The UI for the manager's app: ``(prefix, sub-application)``; ``manager_url()`` is the
    manager's own HTTPS URL as this process reaches it (the UI logs in and reaches clusters
    through the manager's public API, as any client would)."""
    return PREFIX, UIApp(ManagerProvider(manager_url), ca_pem, title="Sampan manager").app()


class DashboardComponent:
    """See the module docstring."""

    name = "dashboard"

    def __init__(self, options: DashboardOptions, pki: ClusterPKI) -> None:
        self._options = options
        self._pki = pki
        self._runner: web.AppRunner | None = None
        self.ui = UIApp(TokenProvider(options.api_url), pki.ca_pem, title="Sampan dashboard")
        self.port: int | None = None

    async def start(self, ctx: Any = None) -> None:
        del ctx
        cert, key = await asyncio.to_thread(
            issue_listener_serving_certificate, self._pki, "dashboard"
        )
        context: ssl.SSLContext = await asyncio.to_thread(server_ssl_context, cert, key)
        # Live streams end within CALLER_CHECK_S of their browser leaving; at stop, open ones
        # are not waited for longer than this.
        runner = web.AppRunner(self.ui.root_app(), access_log=None, shutdown_timeout=5.0)
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
        log.info(
            "dashboard: serving https on %s:%s%s/", self._options.bind_address, self.port, PREFIX
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
