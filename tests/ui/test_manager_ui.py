"""The UI served by the manager (``/dashboard/`` on the manager's port): login with a manager
user (first login changes the password), the clusters list, and the explorer of cluster
``local`` reached through the manager's proxy with the user's own token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sampan.manager.component import ManagerComponent, ManagerOptions
from sampan.ui.component import manager_ui_app
from tests.support.apiserver import ApiServerHarness
from tests.ui.conftest import Browser

NEW_PASSWORD = "correct horse battery staple"


@pytest.fixture
async def manager(
    api_server: ApiServerHarness,
    tmp_path: Path,
) -> AsyncIterator[ManagerComponent]:
    assert api_server.server is not None
    component = ManagerComponent(
        api_server.client_config(),
        ManagerOptions(manager_dir=tmp_path / "manager", bind_address="127.0.0.1", port=0),
        api_server.server.pki,
        ui=manager_ui_app,
    )
    await component.start()
    try:
        yield component
    finally:
        await component.stop()


async def test_manager_login_password_change_clusters_and_explorer(
    manager: ManagerComponent, api_server: ApiServerHarness
) -> None:
    assert api_server.server is not None
    # "localhost", not the 127.0.0.1 the UI calls the manager at: import commands must name
    # the host the browser used.
    browser = Browser(f"https://localhost:{manager.port}", api_server.server.pki.ca_pem)
    try:
        password = manager.bootstrap_password_path.read_text().strip()
        _, html, _ = await browser.get("/dashboard/login")
        assert 'name="username"' in html
        status, html, _ = await browser.post(
            "/dashboard/login",
            data={"csrf_token": browser.csrf(html), "username": "admin", "secret": "wrong"},
        )
        assert status == 401
        status, _, response = await browser.post(
            "/dashboard/login",
            data={"csrf_token": browser.csrf(html), "username": "admin", "secret": password},
        )
        assert status == 302 and response.headers["Location"] == "/dashboard/password"
        status, _, response = await browser.get("/dashboard/")
        assert status == 302 and response.headers["Location"] == "/dashboard/password"
        _, html, _ = await browser.get("/dashboard/password")
        status, _, response = await browser.post(
            "/dashboard/password",
            data={
                "csrf_token": browser.csrf(html),
                "current": password,
                "new": NEW_PASSWORD,
                "confirm": NEW_PASSWORD,
            },
        )
        assert status == 302, _
        status, html, _ = await browser.get("/dashboard/")
        assert status == 200
        assert 'href="/dashboard/c/local/"' in html
        assert "Connected" in html
        status, _, response = await browser.post(
            "/dashboard/clusters", data={"csrf_token": browser.csrf(html), "name": "edge-1"}
        )
        assert status == 302, _
        status, html, _ = await browser.get("/dashboard/")
        assert "edge-1" in html and "Disconnected" in html
        assert f"kubectl apply -f https://localhost:{manager.port}/v3/import/" in html
        # A cluster with no agent connected: its explorer answers at once, with the reason.
        edge = re.search(r'href="/dashboard/c/(c-[a-z0-9]+)/"', html)
        assert edge
        status, page, _ = await browser.get(f"/dashboard/c/{edge.group(1)}/k/pods")
        assert status == 503, page
        status, html, _ = await browser.post(
            "/dashboard/clusters", data={"csrf_token": browser.csrf(html), "name": "edge-1"}
        )
        assert status == 409 and "already in use" in html
        status, html, _ = await browser.get("/dashboard/c/local/k/namespaces")
        assert status == 200, html
        assert ">kube-system<" in html
    finally:
        await browser.close()
