"""``sampan manager reset-admin`` (RancherD's command), run as a user would: a new random
password printed once, old password and tokens dead, lockout cleared, change required."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sampan.client import Client
from sampan.manager.crds import GLOBAL_ROLE_BINDINGS, USERS
from sampan.manager.store import LOCKOUT_FAILURES
from tests.manager.conftest import NEW_ADMIN_PASSWORD, ManagerHTTP


async def _reset_admin(kubeconfig: Path, tmp_path: Path) -> tuple[int, str, str]:
    config = tmp_path / "empty-config.yaml"
    config.write_text("")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sampan.cli.main",
        "manager",
        "reset-admin",
        "--config",
        str(config),
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_reset_admin(
    http: ManagerHTTP, admin_token: str, api_server, client: Client, tmp_path: Path
) -> None:
    for _ in range(LOCKOUT_FAILURES):
        await http.login("admin", "not the password")
    assert (await http.login("admin", NEW_ADMIN_PASSWORD))[0] == 429
    code, out, err = await _reset_admin(api_server.kubeconfig, tmp_path)
    assert code == 0, err
    prefix = "New password for default admin user (admin): "
    assert out.startswith(prefix)
    password = out[len(prefix) :].strip()
    assert len(password) >= 12
    # The old password and the old tokens are gone; the lockout too.
    assert (await http.call("GET", "/v3/clusters", token=admin_token))[0] == 401
    assert (await http.login("admin", NEW_ADMIN_PASSWORD))[0] == 401
    status, body = await http.login("admin", password)
    assert status == 201 and body["mustChangePassword"] is True
    assert password not in str(await client.get(USERS, "u-admin"))


async def test_reset_admin_restores_a_deleted_admin(
    manager, api_server, client: Client, tmp_path: Path, http: ManagerHTTP
) -> None:
    await client.delete(USERS, "u-admin")
    await client.delete(GLOBAL_ROLE_BINDINGS, "grb-u-admin")
    code, out, err = await _reset_admin(api_server.kubeconfig, tmp_path)
    assert code == 0, err
    password = out.rpartition(": ")[2].strip()
    status, body = await http.login("admin", password)
    assert status == 201
    status, me = await http.call("GET", "/v3/users?me=true", token=body["token"])
    assert me["data"][0]["admin"] is True


async def test_reset_admin_without_a_manager(api_server, tmp_path: Path) -> None:
    code, out, err = await _reset_admin(api_server.kubeconfig, tmp_path)
    assert code == 1 and out == ""
    assert "has the server run with --manager?" in err
