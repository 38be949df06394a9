"""Fixtures for the UI: the in-process API server, the single-cluster dashboard in front of
it, and a browser-like HTTPS session (cookie jar, trusts only the server CA).

* ``dashboard``: ``DashboardComponent`` on 127.0.0.1:<random port>;
* ``admin_token``: a service account bound to cluster-admin, its TokenRequest token;
* ``browser``: ``Browser`` — an aiohttp session over real TLS with a cookie jar, and helpers to
  log in and to read the CSRF token a page carries.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sampan.ui.component import DashboardComponent
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401
from tests.ui.support import dashboard_on, service_account_token


class Browser:
    def __init__(self, base: str, ca_pem: bytes) -> None:
        self.base = base
        self.jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
        self.session = aiohttp.ClientSession(
            cookie_jar=self.jar,
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cadata=ca_pem.decode())),
        )

    async def get(self, path: str, **kw: Any) -> tuple[int, str, Any]:
        async with self.session.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, **kw: Any) -> tuple[int, str, Any]:
        async with self.session.post(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    @staticmethod
    def csrf(html: str) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, "the page carries a CSRF token"
        return match.group(1)

    async def login(self, token: str) -> Any:
        _, html, _ = await self.get("/dashboard/login")
        status, _, response = await self.post(
            "/dashboard/login", data={"csrf_token": self.csrf(html), "secret": token}
        )
        assert status == 302, status
        return response

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def dashboard(api_server: ApiServerHarness) -> AsyncIterator[DashboardComponent]:  # noqa: F811
    component = await dashboard_on(api_server)
    try:
        yield component
    finally:
        await component.stop()


@pytest.fixture
async def admin_token(client: Any) -> str:  # noqa: F811
    return await service_account_token(client, "ui-admin", admin=True)


@pytest.fixture
async def browser(
    api_server: ApiServerHarness,  # noqa: F811
    dashboard: DashboardComponent,
) -> AsyncIterator[Browser]:
    assert api_server.server is not None
    b = Browser(f"https://127.0.0.1:{dashboard.port}", api_server.server.pki.ca_pem)
    try:
        yield b
    finally:
        await b.close()
