"""serviceaccounts/token (TokenRequest): kubectl create token, validation, bound tokens, and
the token authenticating through TokenReview; kubectl auth can-i as a service account."""

from __future__ import annotations

import os

import jwt
import pytest

from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok

SA_TOKEN = "/api/v1/namespaces/default/serviceaccounts/{}/token"


def token_request(**spec: object) -> dict:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_create_token_and_can_i(harness):
    token = (await ok(harness, "create", "token", "default")).strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["exp"] - claims["iat"] == 3600
    status, review = await harness.request(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
    )
    assert status == 201 and review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == "system:serviceaccount:default:default"

    as_sa = "--as=system:serviceaccount:default:default"
    code, out, _ = await kubectl(harness, "auth", "can-i", "create", "pods", as_sa)
    assert code == 1 and out.strip() == "no"
    await ok(harness, "create", "role", "pods", "--verb=create", "--resource=pods")
    await ok(
        harness,
        "create",
        "rolebinding",
        "pods",
        "--role=pods",
        "--serviceaccount=default:default",
    )
    code, out, _ = await kubectl(harness, "auth", "can-i", "create", "pods", as_sa)
    assert code == 0 and out.strip() == "yes"
    # The token itself is what the server sees as that account.
    async with harness.anonymous_session({"Authorization": f"Bearer {token}"}) as session:
        async with session.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        ) as response:
            whoami = await response.json()
    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:default:default"


async def test_token_request_validation_and_binding(harness):
    status, body = await harness.request("POST", SA_TOKEN.format("missing"), token_request())
    assert status == 404 and body["message"] == 'serviceaccounts "missing" not found'
    status, body = await harness.request(
        "POST", SA_TOKEN.format("default"), token_request(expirationSeconds=10)
    )
    assert status == 422
    assert body["message"] == (
        'TokenRequest.authentication.k8s.io "default" is invalid: spec.expirationSeconds: '
        "Invalid value: 10: may not specify a duration less than 10 minutes"
    )
    status, body = await harness.request(
        "POST",
        SA_TOKEN.format("default"),
        token_request(
            audiences=["vault"],
            expirationSeconds=7200,
            boundObjectRef={"kind": "Secret", "apiVersion": "v1", "name": "nope"},
        ),
    )
    assert status == 403, body

    status, secret = await harness.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bound"}},
    )
    assert status == 201
    status, body = await harness.request(
        "POST",
        SA_TOKEN.format("default"),
        token_request(
            audiences=["vault"],
            expirationSeconds=7200,
            boundObjectRef={"kind": "Secret", "apiVersion": "v1", "name": "bound"},
        ),
    )
    assert status == 201, body
    assert body["kind"] == "TokenRequest" and body["status"]["expirationTimestamp"]
    claims = jwt.decode(body["status"]["token"], options={"verify_signature": False})
    assert claims["aud"] == ["vault"] and claims["exp"] - claims["iat"] == 7200
    assert claims["kubernetes.io"]["secret"] == {
        "name": "bound",
        "uid": secret["metadata"]["uid"],
    }


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_create_bound_token(harness):
    """kubectl sends TokenRequest as protobuf: duration, audience and bound object all arrive."""
    status, secret = await harness.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bound"}},
    )
    assert status == 201
    token = (
        await ok(
            harness,
            "create",
            "token",
            "default",
            "--duration=2h",
            "--audience=vault",
            "--bound-object-kind=Secret",
            "--bound-object-name=bound",
        )
    ).strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == ["vault"] and claims["exp"] - claims["iat"] == 7200
    assert claims["kubernetes.io"]["secret"]["uid"] == secret["metadata"]["uid"]


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_issuer_discovery_verifies_a_service_account_token(harness):
    """/.well-known/openid-configuration and its JWKS, as a token verifier outside the
    cluster reads them: any service account may (system:service-account-issuer-discovery),
    a request without credentials may not."""
    token = (await ok(harness, "create", "token", "default")).strip()
    unverified = jwt.decode(token, options={"verify_signature": False})
    async with harness.anonymous_session({"Authorization": f"Bearer {token}"}) as session:
        async with session.get("/.well-known/openid-configuration") as response:
            assert response.status == 200
            config = await response.json()
        assert config["issuer"] == unverified["iss"]
        jwks_path = "/" + config["jwks_uri"].split("/", 3)[3]
        assert jwks_path == "/openid/v1/jwks"
        async with session.get(jwks_path) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/jwk-set+json"
            jwks = await response.json(content_type=None)
    keys = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in keys.keys if k.key_id == kid]
    claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=unverified["aud"])
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert config["id_token_signing_alg_values_supported"] == [key.algorithm_name]
    async with harness.anonymous_session({}) as session:
        async with session.get("/openid/v1/jwks") as response:
            assert response.status == 401  # no anonymous requests, as with K3s
