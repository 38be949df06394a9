"""Legacy service-account token Secrets (``serviceaccount-token``), against a real API server.

The controller runs as ``system:sampan-controller`` with the API server's own service-account
key; tokens it writes are then presented to the same API server (Python client and kubectl).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sampan.client import Client, ClientConfig, NotFoundError, Resource
from sampan.client.api import SECRETS, SERVICEACCOUNTS, UnauthorizedError
from sampan.controllers.base import ControllerDisabled, ControllerManagerOptions
from sampan.controllers.tokens import (
    SA_NAME_ANNOTATION,
    SA_UID_ANNOTATION,
    TOKEN_SECRET_TYPE,
    TokensController,
)

from .conftest import eventually

NS = "default"
SELFSUBJECTREVIEWS = Resource(
    "authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False
)


@pytest.fixture
async def start_tokens(api_server, run_controller):
    async def start() -> TokensController:
        assert api_server.server is not None
        key = await asyncio.to_thread(api_server.server.pki.sa_private_key_pem)
        options = ControllerManagerOptions(service_account_private_key_pem=key)
        return await run_controller(TokensController, options)

    return start


def _token_secret(name: str, account: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "annotations": {SA_NAME_ANNOTATION: account}},
        "type": TOKEN_SECRET_TYPE,
    }
    body.update(extra)
    return body


def _data(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode((secret.get("data") or {}).get(key, ""))


async def _filled(client: Client, name: str) -> dict[str, Any] | None:
    try:
        secret = await client.get(SECRETS, name, namespace=NS)
    except NotFoundError:
        return None
    data = secret.get("data") or {}
    return secret if all(data.get(key) for key in ("token", "ca.crt", "namespace")) else None


async def _gone(client: Client, resource, name: str) -> bool:
    try:
        await client.get(resource, name, namespace=NS)
    except NotFoundError:
        return True
    return False


async def _whoami(api_server, token: str) -> dict[str, Any]:
    """``SelfSubjectReview`` presenting only ``token`` (no client certificate)."""
    admin = api_server.client_config()
    config = ClientConfig(server=admin.server, ca_pem=admin.ca_pem, token=token)
    async with Client(config) as as_token:
        review = await as_token.create(SELFSUBJECTREVIEWS, {})
    return review["status"]["userInfo"]


async def test_token_secret_filled_and_authenticates(
    client: Client, api_server, start_tokens
) -> None:
    await start_tokens()
    account = await client.create(SERVICEACCOUNTS, {"metadata": {"name": "bot"}}, namespace=NS)
    await client.create(SECRETS, _token_secret("bot-token", "bot"), namespace=NS)

    secret = await eventually(lambda: _filled(client, "bot-token"))
    assert _data(secret, "namespace") == NS.encode()
    assert _data(secret, "ca.crt") == api_server.client_config().ca_pem
    annotations = secret["metadata"]["annotations"]
    assert annotations[SA_UID_ANNOTATION] == account["metadata"]["uid"]
    token = _data(secret, "token").decode()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": NS,
        "kubernetes.io/serviceaccount/secret.name": "bot-token",
        "kubernetes.io/serviceaccount/service-account.name": "bot",
        "kubernetes.io/serviceaccount/service-account.uid": account["metadata"]["uid"],
        "sub": f"system:serviceaccount:{NS}:bot",
    }
    user = await _whoami(api_server, token)
    assert user["username"] == f"system:serviceaccount:{NS}:bot"
    assert user["uid"] == account["metadata"]["uid"]
    assert set(user["groups"]) == {
        "system:serviceaccounts",
        f"system:serviceaccounts:{NS}",
        "system:authenticated",
    }

    # A tampered ca.crt is put back; the token is kept.
    secret["data"]["ca.crt"] = base64.b64encode(b"not the CA").decode()
    await client.update(SECRETS, secret, namespace=NS)

    async def ca_restored() -> bool:
        current = await client.get(SECRETS, "bot-token", namespace=NS)
        return _data(current, "ca.crt") == api_server.client_config().ca_pem

    await eventually(ca_restored)
    current = await client.get(SECRETS, "bot-token", namespace=NS)
    assert _data(current, "token").decode() == token

    # Deleting a token Secret revokes its token (the account keeps its other tokens).
    await client.create(SECRETS, _token_secret("bot-spare", "bot"), namespace=NS)
    spare = _data(await eventually(lambda: _filled(client, "bot-spare")), "token").decode()
    assert (await _whoami(api_server, spare))["username"] == f"system:serviceaccount:{NS}:bot"
    await client.delete(SECRETS, "bot-spare", namespace=NS)
    with pytest.raises(UnauthorizedError):
        await _whoami(api_server, spare)
    assert (await _whoami(api_server, token))["username"] == f"system:serviceaccount:{NS}:bot"

    # Deleting the service account deletes its token Secrets; the token no longer works.
    await client.delete(SERVICEACCOUNTS, "bot", namespace=NS)
    await eventually(lambda: _gone(client, SECRETS, "bot-token"))
    with pytest.raises(UnauthorizedError):
        await _whoami(api_server, token)


async def test_secret_for_missing_or_replaced_account_is_deleted(
    client: Client, start_tokens
) -> None:
    await start_tokens()
    await client.create(SECRETS, _token_secret("orphan", "nobody"), namespace=NS)
    await eventually(lambda: _gone(client, SECRETS, "orphan"))

    # A uid annotation naming an earlier incarnation of the account: deleted too.
    await client.create(SERVICEACCOUNTS, {"metadata": {"name": "again"}}, namespace=NS)
    stale = _token_secret("stale", "again")
    stale["metadata"]["annotations"][SA_UID_ANNOTATION] = "0b5e7f2c-0000-4000-8000-000000000000"
    await client.create(SECRETS, stale, namespace=NS)
    await eventually(lambda: _gone(client, SECRETS, "stale"))

    # Other Secret types naming no account are none of its business.
    await client.create(
        SECRETS, {"metadata": {"name": "plain"}, "stringData": {"a": "b"}}, namespace=NS
    )
    await client.create(SECRETS, _token_secret("kept", "again"), namespace=NS)
    await eventually(lambda: _filled(client, "kept"))
    assert not await _gone(client, SECRETS, "plain")


async def test_user_written_token_is_kept_but_forges_nothing(
    client: Client, api_server, start_tokens
) -> None:
    await start_tokens()
    await client.create(SERVICEACCOUNTS, {"metadata": {"name": "admin-bot"}}, namespace=NS)
    account = await client.get(SERVICEACCOUNTS, "admin-bot", namespace=NS)
    # Signed with a key of the user's own, with the claims a real token would have.
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": NS,
            "kubernetes.io/serviceaccount/secret.name": "mine",
            "kubernetes.io/serviceaccount/service-account.name": "admin-bot",
            "kubernetes.io/serviceaccount/service-account.uid": account["metadata"]["uid"],
            "sub": f"system:serviceaccount:{NS}:admin-bot",
        },
        own_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        algorithm="RS256",
    )
    body = _token_secret("mine", "admin-bot", stringData={"token": forged})
    await client.create(SECRETS, body, namespace=NS)
    secret = await eventually(lambda: _filled(client, "mine"))
    assert _data(secret, "token").decode() == forged  # upstream leaves a present token alone
    with pytest.raises(UnauthorizedError):
        await _whoami(api_server, forged)


async def test_deleted_token_secret_leaves_the_accounts_secrets_list(
    client: Client, start_tokens
) -> None:
    await start_tokens()
    await client.create(
        SERVICEACCOUNTS,
        {"metadata": {"name": "lister"}, "secrets": [{"name": "lister-token"}, {"name": "other"}]},
        namespace=NS,
    )
    await client.create(SECRETS, _token_secret("lister-token", "lister"), namespace=NS)
    await eventually(lambda: _filled(client, "lister-token"))
    await client.delete(SECRETS, "lister-token", namespace=NS)

    async def dropped() -> bool:
        account = await client.get(SERVICEACCOUNTS, "lister", namespace=NS)
        return account.get("secrets") == [{"name": "other"}]

    await eventually(dropped)


async def test_disabled_without_a_signing_key(api_server, run_controller) -> None:
    with pytest.raises(ControllerDisabled):
        await run_controller(TokensController, ControllerManagerOptions())


def _token_kubeconfig(path: Path, server: str, ca_pem: bytes, token: str) -> Path:
    """A kubeconfig holding only the server, its CA and ``token``."""
    ca = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


async def _kubectl(kubeconfig: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_with_a_long_lived_token(
    client: Client, api_server, start_tokens, tmp_path: Path
) -> None:
    """The documented recipe: apply a token Secret for a ServiceAccount, read the token back
    with kubectl, use it; delete the ServiceAccount and it stops working."""
    await start_tokens()
    admin = api_server.kubeconfig
    code, out = await _kubectl(admin, "-n", NS, "create", "serviceaccount", "build-robot")
    assert code == 0, out
    manifest = tmp_path / "secret.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                **_token_secret("build-robot-secret", "build-robot"),
            }
        )
    )
    code, out = await _kubectl(admin, "-n", NS, "apply", "-f", str(manifest))
    assert code == 0, out
    await eventually(lambda: _filled(client, "build-robot-secret"))
    code, out = await _kubectl(
        admin, "-n", NS, "get", "secret", "build-robot-secret", "-o", "jsonpath={.data.token}"
    )
    assert code == 0, out
    token = base64.b64decode(out).decode()

    config = api_server.client_config()
    as_robot = _token_kubeconfig(tmp_path / "robot.kubeconfig", config.server, config.ca_pem, token)
    code, out = await _kubectl(
        as_robot, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert code == 0, out
    assert out == f"system:serviceaccount:{NS}:build-robot"

    code, out = await _kubectl(admin, "-n", NS, "delete", "serviceaccount", "build-robot")
    assert code == 0, out
    await eventually(lambda: _gone(client, SECRETS, "build-robot-secret"))
    code, out = await _kubectl(as_robot, "auth", "whoami")
    assert code != 0
    assert "You must be logged in to the server (Unauthorized)" in out
