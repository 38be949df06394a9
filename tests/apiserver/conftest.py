"""A real API server in-process (``tests/support/apiserver.py``'s harness): real SQLite
datastore in a temp dir, real TLS, admin client certificate. ``ServerHarness`` adds a raw
admin HTTP session and can restart the server over the same data dir."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.apiserver import ApiServerHarness


class ServerHarness(ApiServerHarness):
    """The shared harness plus an admin ``aiohttp`` session (``request``) and a full restart.
    ``options``: APIServerOptions fields to override (audit, admission config)."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.kubeconfig = data_dir / "kubeconfig.yaml"
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        await super().start()
        self.session = aiohttp.ClientSession(
            base_url=self.url,
            connector=aiohttp.TCPConnector(ssl=self.ssl_context(client_cert=True)),
        )

    def ssl_context(self, *, client_cert: bool) -> ssl.SSLContext:
        assert self.server is not None
        pki = self.server.pki
        context = ssl.create_default_context(cadata=pki.ca_pem.decode())
        if client_cert:
            context.load_cert_chain(pki.admin_cert_path, pki.admin_key_path)
        return context

    def anonymous_session(self, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.url,
            connector=aiohttp.TCPConnector(ssl=self.ssl_context(client_cert=False)),
            headers=headers,
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        await super().stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    # --- small JSON helpers -------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        import json

        assert self.session is not None
        data = None
        send_headers = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            send_headers["Content-Type"] = content_type
        async with self.session.request(
            method, path, data=data, params=params, headers=send_headers
        ) as response:
            raw = await response.read()
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, raw.decode()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ServerHarness]:
    h = ServerHarness(tmp_path)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
