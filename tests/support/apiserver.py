"""A real API server in-process for tests (the one harness every test area shares).

``api_server`` starts ``sampan.apiserver.APIServer`` on 127.0.0.1:<random port> over the real
SQLite backend in a temp dir, with real TLS, and writes the admin kubeconfig. ``client`` is a
``sampan.client.Client`` configured from that kubeconfig (admin client certificate).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sampan.apiserver import APIServer, APIServerOptions
from sampan.client import Client, ClientConfig
from sampan.datastore import open_backend
from sampan.pki import ensure_client_kubeconfig

__all__ = ["ApiServerHarness", "api_server", "client"]


class ApiServerHarness:
    """One API server over one data dir; ``restart()`` keeps the data."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        """``options``: APIServerOptions fields to override (limits, timeouts)."""
        self.data_dir = data_dir
        self.options = options
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.server: APIServer | None = None
        self.backend: Any = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def start(self) -> None:
        self.backend = open_backend("", self.data_dir)
        await self.backend.start()
        await self._start_server(port=0)

    async def _start_server(self, port: int) -> None:
        options = APIServerOptions(
            tls_dir=self.data_dir / "server" / "tls",
            hostname="localhost",
            node_ips=("127.0.0.1",),
            bind_address="127.0.0.1",
            port=port,
            kubeconfig_path=self.kubeconfig,
            **self.options,
        )
        self.server = APIServer(options, self.backend)
        await self.server.start()

    async def restart_server(
        self, while_down: Callable[[Any], Awaitable[None]] | None = None
    ) -> None:
        """Stop the API server (watches end), run ``while_down(backend)``, start a new one on
        the same port and datastore. Its watch cache starts at the datastore's current
        revision, so a watch from an older resourceVersion gets 410 Expired."""
        assert self.server is not None
        port = self.server.port
        await self.server.stop()
        self.server = None
        if while_down is not None:
            await while_down(self.backend)
        await self._start_server(port=port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.backend is not None:
            await self.backend.close()
            self.backend = None

    def client_config(self) -> ClientConfig:
        return ClientConfig.from_kubeconfig(self.kubeconfig)

    def new_client(self) -> Client:
        return Client(self.client_config())

    async def identity_config(self, user: str, organizations: tuple[str, ...] = ()) -> ClientConfig:
        """A client config for ``user`` (a component identity such as ``system:kube-proxy``;
        ``organizations`` are its groups, e.g. ``system:nodes`` for a kubelet), with its own
        client certificate signed by the cluster's client CA."""
        assert self.server is not None
        name = user.replace(":", "-")
        path = self.data_dir / f"{name}.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            self.server.pki,
            name=name,
            common_name=user,
            organizations=organizations,
            path=path,
            server_url=self.server.url,
        )
        return ClientConfig.from_kubeconfig(path)


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def client(api_server: ApiServerHarness) -> AsyncIterator[Client]:
    async with api_server.new_client() as c:
        yield c
