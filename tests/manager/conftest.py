"""Fixtures for the manager: the in-process API server and the "manager" component against it.

* ``manager``: ``ManagerComponent`` started with the admin identity on 127.0.0.1:<random
  port>, its bootstrap password file under ``<tmp>/manager``.
* ``http``: ``ManagerHTTP``, an aiohttp session over real TLS that trusts only the server CA
  (the manager's certificate must verify against it for 127.0.0.1).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sampan.manager.component import ManagerComponent, ManagerOptions
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401


class ManagerHTTP:
    """Requests to the manager; ``token`` sets ``Authorization: Bearer``."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=json, headers=all_headers
        ) as response:
            raw = await response.read()
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, raw.decode()

    async def login(self, username: str, password: str, **extra: Any) -> tuple[int, Any]:
        return await self.call(
            "POST",
            "/v3-public/localProviders/local?action=login",
            json={"username": username, "password": password, **extra},
        )


@pytest.fixture
async def manager(
    api_server: ApiServerHarness,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[ManagerComponent]:
    assert api_server.server is not None
    component = ManagerComponent(
        api_server.client_config(),
        ManagerOptions(manager_dir=tmp_path / "manager", bind_address="127.0.0.1", port=0),
        api_server.server.pki,
    )
    await component.start()
    try:
        yield component
    finally:
        await component.stop()


@pytest.fixture
async def http(
    manager: ManagerComponent,
    api_server: ApiServerHarness,  # noqa: F811
) -> AsyncIterator[ManagerHTTP]:
    assert api_server.server is not None
    context = ssl.create_default_context(cadata=api_server.server.pki.ca_pem.decode())
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield ManagerHTTP(session, f"https://127.0.0.1:{manager.port}")


@pytest.fixture
def bootstrap_password(manager: ManagerComponent) -> str:
    path = manager.bootstrap_password_path
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


NEW_ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture
async def admin_token(http: ManagerHTTP, bootstrap_password: str) -> str:
    """Logged in as admin, password changed (so every endpoint answers)."""
    status, body = await http.login("admin", bootstrap_password)
    assert status == 201, body
    status, body2 = await http.call(
        "POST",
        "/v3/users?action=changepassword",
        token=body["token"],
        json={"currentPassword": bootstrap_password, "newPassword": NEW_ADMIN_PASSWORD},
    )
    assert status == 200, body2
    return str(body["token"])
