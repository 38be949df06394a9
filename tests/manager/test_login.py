"""Users and login over real HTTPS: bootstrap password, must-change-password, tokens with a
TTL, logout and revocation, lockout, and the error bodies (Rancher's API error format)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from sampan.client import Client
from sampan.manager import credentials
from sampan.manager.component import ManagerComponent
from sampan.manager.crds import TOKENS, USERS
from sampan.manager.store import LOCKOUT_FAILURES
from tests.manager.conftest import NEW_ADMIN_PASSWORD, ManagerHTTP
from tests.support.poll import eventually


def _is_error(body: object, status: int, code: str) -> None:
    assert isinstance(body, dict), body
    assert body["type"] == "error"
    assert body["status"] == status
    assert body["code"] == code
    assert body["message"]


async def test_bootstrap_password_file_and_hash_only(
    manager: ManagerComponent, bootstrap_password: str, client: Client
) -> None:
    assert len(bootstrap_password) >= credentials.MIN_PASSWORD_LENGTH
    admin = await client.get(USERS, "u-admin")
    stored = admin["spec"]["passwordHash"]
    assert stored.startswith("$argon2id$")
    assert bootstrap_password not in str(admin)
    assert admin["spec"]["mustChangePassword"] is True


async def test_bootstrap_password_logged_once(
    api_server, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    from sampan.manager.component import ManagerOptions

    def start() -> ManagerComponent:
        return ManagerComponent(
            api_server.client_config(),
            ManagerOptions(manager_dir=tmp_path / "m", bind_address="127.0.0.1", port=0),
            api_server.server.pki,
        )

    caplog.set_level(logging.INFO, logger="sampan.manager")
    first = start()
    await first.start()
    await first.stop()
    password = (tmp_path / "m" / "bootstrap-password").read_text().strip()
    assert not [r for r in caplog.records if password in r.getMessage()]  # never logged
    lines = [r.getMessage() for r in caplog.records if "BOOTSTRAP PASSWORD" in r.getMessage()]
    assert len(lines) == 1 and str(tmp_path / "m" / "bootstrap-password") in lines[0]
    caplog.clear()
    second = start()
    await second.start()
    await second.stop()
    assert not [r for r in caplog.records if "BOOTSTRAP PASSWORD" in r.getMessage()]


async def test_login_must_change_password_then_change(
    http: ManagerHTTP, bootstrap_password: str
) -> None:
    status, body = await http.login("admin", bootstrap_password)
    assert status == 201, body
    assert body["mustChangePassword"] is True
    token = body["token"]
    name, _, secret = token.partition(":")
    assert name.startswith("token-") and len(secret) == 54
    # Before the change: only the change, logout and "me" answer.
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert status == 403
    _is_error(body, 403, "PermissionDenied")
    status, body = await http.call("GET", "/v3/users?me=true", token=token)
    assert status == 200 and body["data"][0]["username"] == "admin"
    # Wrong current password; too short a new one.
    status, body = await http.call(
        "POST",
        "/v3/users?action=changepassword",
        token=token,
        json={"currentPassword": "wrong-password!", "newPassword": NEW_ADMIN_PASSWORD},
    )
    assert status == 403
    status, body = await http.call(
        "POST",
        "/v3/users?action=changepassword",
        token=token,
        json={"currentPassword": bootstrap_password, "newPassword": "short"},
    )
    assert status == 422
    _is_error(body, 422, "InvalidBodyContent")
    status, body = await http.call(
        "POST",
        "/v3/users?action=changepassword",
        token=token,
        json={"currentPassword": bootstrap_password, "newPassword": NEW_ADMIN_PASSWORD},
    )
    assert status == 200 and body["mustChangePassword"] is False
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert status == 200
    # The old password no longer works; the new one does.
    assert (await http.login("admin", bootstrap_password))[0] == 401
    status, body = await http.login("admin", NEW_ADMIN_PASSWORD)
    assert status == 201 and body["mustChangePassword"] is False


async def test_unauthenticated_and_bad_tokens(http: ManagerHTTP, admin_token: str) -> None:
    name = admin_token.partition(":")[0]
    for token in (None, "garbage", f"{name}:wrongsecret", "token-zzzzz:abc"):
        status, body = await http.call("GET", "/v3/clusters", token=token)
        assert status == 401, token
        _is_error(body, 401, "Unauthorized")
    # Basic auth with the two halves works too (Rancher's API keys).
    import base64

    basic = base64.b64encode(admin_token.encode()).decode()
    status, _ = await http.call("GET", "/v3/clusters", headers={"Authorization": f"Basic {basic}"})
    assert status == 200


async def test_bad_login_bodies(http: ManagerHTTP) -> None:
    status, body = await http.call(
        "POST", "/v3-public/localProviders/local?action=login", json={"username": "admin"}
    )
    assert status == 422
    _is_error(body, 422, "MissingRequired")
    status, body = await http.login("admin", "x" * 12, ttl=-5)
    assert status == 422
    status, body = await http.login("nobody", "x" * 12)
    assert status == 401
    _is_error(body, 401, "Unauthorized")


async def test_token_ttl_and_expiry(http: ManagerHTTP, admin_token: str, client: Client) -> None:
    status, body = await http.login("admin", NEW_ADMIN_PASSWORD, ttl=60_000)
    assert status == 201
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=61)
    assert body["ttl"] == 60_000
    token = body["token"]
    assert (await http.call("GET", "/v3/clusters", token=token))[0] == 200
    # Time passes (moved forward in the object rather than waited for): 401, and it is gone.
    name = token.partition(":")[0]
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.patch(TOKENS, name, {"spec": {"expiresAt": past}})

    async def refused() -> bool:
        # The manager sees the change when its cache's watch event arrives.
        status, _ = await http.call("GET", "/v3/clusters", token=token)
        return status == 401

    await eventually(refused, what="the expired token refused")
    assert not [t for t in (await client.list(TOKENS))["items"] if t["metadata"]["name"] == name]


async def test_logout_and_revocation(http: ManagerHTTP, admin_token: str, client: Client) -> None:
    status, body = await http.login("admin", NEW_ADMIN_PASSWORD)
    second = body["token"]
    stored = await client.get(TOKENS, second.partition(":")[0])
    assert second.partition(":")[2] not in str(stored)  # only the hash is stored
    assert stored["spec"]["hash"] == credentials.hash_token_secret(second.partition(":")[2])
    # Logout deletes the token presented.
    status, _ = await http.call("POST", "/v3/tokens?action=logout", token=second)
    assert status == 200
    assert (await http.call("GET", "/v3/clusters", token=second))[0] == 401
    # Revocation: delete a token through the API (or as a Token object).
    status, body = await http.login("admin", NEW_ADMIN_PASSWORD)
    third = body["token"]
    name = third.partition(":")[0]
    status, tokens = await http.call("GET", "/v3/tokens", token=admin_token)
    assert name in [t["id"] for t in tokens["data"]]
    status, _ = await http.call("DELETE", f"/v3/tokens/{name}", token=admin_token)
    assert status == 200
    assert (await http.call("GET", "/v3/clusters", token=third))[0] == 401
    status, body = await http.login("admin", NEW_ADMIN_PASSWORD)
    fourth = body["token"]
    await client.delete(TOKENS, fourth.partition(":")[0])  # not through the manager

    async def refused() -> bool:
        return (await http.call("GET", "/v3/clusters", token=fourth))[0] == 401

    await eventually(refused, what="the deleted token refused (its watch event arrived)")


async def test_lockout_after_repeated_failures(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    for _ in range(LOCKOUT_FAILURES):
        status, body = await http.login("admin", "not the password")
        assert status == 401
    # Locked: even the right password is refused, with Retry-After.
    async with http.session.post(
        http.base + "/v3-public/localProviders/local?action=login",
        json={"username": "admin", "password": NEW_ADMIN_PASSWORD},
    ) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) > 0
        body = await response.json()
    _is_error(body, 429, "TooManyRequests")
    user = await client.get(USERS, "u-admin")
    assert user["status"]["lockedUntil"]
    # Tokens already issued keep working; the lockout ends when its time is over.
    assert (await http.call("GET", "/v3/clusters", token=admin_token))[0] == 200
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.patch(USERS, "u-admin", {"status": {"lockedUntil": past}}, subresource="status")
    assert (await http.login("admin", NEW_ADMIN_PASSWORD))[0] == 201


async def test_unknown_usernames_lock_out_the_same_way(http: ManagerHTTP) -> None:
    for _ in range(LOCKOUT_FAILURES):
        status, body = await http.login("nobody", "not the password")
        assert status == 401
    status, body = await http.login("nobody", "not the password")
    assert status == 429
    _is_error(body, 429, "TooManyRequests")


async def test_unknown_paths_and_methods(http: ManagerHTTP, admin_token: str) -> None:
    status, body = await http.call("GET", "/v3/nothing", token=admin_token)
    assert status == 404
    _is_error(body, 404, "NotFound")
    status, body = await http.call("PATCH", "/v3/clusters", token=admin_token, json={})
    assert status == 405
    _is_error(body, 405, "MethodNotAllowed")
    status, body = await http.call(
        "POST", "/v3/clusters", token=admin_token, headers={"Content-Type": "application/json"}
    )
    assert status == 422
    _is_error(body, 422, "MissingRequired")
    async with http.session.post(
        http.base + "/v3/clusters",
        data=b"{not json",
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as response:
        _is_error(await response.json(), 422, "InvalidBodyContent")


async def test_failures_below_the_limit_are_forgotten_on_success(
    http: ManagerHTTP, admin_token: str
) -> None:
    for _ in range(LOCKOUT_FAILURES - 1):
        assert (await http.login("admin", "not the password"))[0] == 401
    assert (await http.login("admin", NEW_ADMIN_PASSWORD))[0] == 201
    for _ in range(LOCKOUT_FAILURES - 1):
        assert (await http.login("admin", "not the password"))[0] == 401
    assert (await http.login("admin", NEW_ADMIN_PASSWORD))[0] == 201


async def test_cacerts_and_ping(http: ManagerHTTP, api_server) -> None:
    status, body = await http.call("GET", "/cacerts")
    assert status == 200 and body == api_server.server.pki.ca_pem.decode()
    assert await http.call("GET", "/ping") == (200, "pong")


async def test_a_missing_object_is_a_404_naming_it(http: ManagerHTTP, admin_token: str) -> None:
    for method, path, message in (
        ("GET", "/v3/tokens/token-nope", "token token-nope not found"),
        ("DELETE", "/v3/tokens/token-nope", "token token-nope not found"),
        ("GET", "/v3/users/u-nope", "user u-nope not found"),
        ("GET", "/v3/clusters/c-nope", "cluster c-nope not found"),
        ("DELETE", "/v3/globalrolebindings/grb-nope", "globalRoleBinding grb-nope not found"),
        (
            "DELETE",
            "/v3/clusterroletemplatebindings/crtb-nope",
            "clusterRoleTemplateBinding crtb-nope not found",
        ),
    ):
        status, body = await http.call(method, path, token=admin_token)
        assert status == 404, (method, path)
        _is_error(body, 404, "NotFound")
        assert isinstance(body, dict) and body["message"] == message
