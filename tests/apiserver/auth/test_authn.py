"""Authentication: x509 mapping, service-account JWTs (bound and legacy), token chain."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sampan.apiserver.auth import (
    SYSTEM_AUTHENTICATED,
    AuthenticationError,
    Authenticator,
    TokenIssuer,
    UserInfo,
    user_from_certificate,
)
from sampan.apiserver.auth.serviceaccount import TOKEN_LEEWAY_S
from sampan.pki import (
    ensure_cluster_pki,
    issue_client_certificate,
    issue_kubelet_serving_certificate,
)
from sampan.pki.certs import (
    create_ca,
    generate_ec_key,
    generate_rsa_key,
    issue_leaf,
    key_to_pem,
    public_key_to_pem,
)
from sampan.pki.satokens import ServiceAccountSigner

NOW = 1_800_000_000.0
SA_UID = "11111111-2222-3333-4444-555555555555"
POD_UID = "99999999-8888-7777-6666-555555555555"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeLookup:
    """In-memory TokenLookup (the API server supplies the real one)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}

    def put(self, resource: str, namespace: str, name: str, uid: str, **extra) -> dict:
        obj = {"metadata": {"name": name, "namespace": namespace, "uid": uid}, **extra}
        self.objects[(resource, namespace, name)] = obj
        return obj

    async def get_object(self, resource: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((resource, namespace, name))


@pytest.fixture(scope="module")
def rsa_key_pem() -> bytes:
    return key_to_pem(generate_rsa_key())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lookup() -> FakeLookup:
    lookup = FakeLookup()
    lookup.put("serviceaccounts", "demo", "robot", SA_UID)
    lookup.put("pods", "demo", "web-1", POD_UID)
    return lookup


@pytest.fixture
def issuer(rsa_key_pem: bytes, clock: Clock) -> TokenIssuer:
    return TokenIssuer(rsa_key_pem, clock=clock)


@pytest.fixture
def authn(rsa_key_pem: bytes, lookup: FakeLookup, clock: Clock) -> Authenticator:
    from sampan.pki.certs import load_private_key

    public = public_key_to_pem(load_private_key(rsa_key_pem))
    return Authenticator(sa_public_keys=[public], lookup=lookup, clock=clock)


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_bound_token_round_trip(issuer, authn, clock) -> None:
    token, expires = issuer.issue("demo", "robot", SA_UID)
    assert expires == dt.datetime.fromtimestamp(NOW + 3600, dt.UTC)
    user = await authn.authenticate(peer_cert=None, authorization=bearer(token))
    assert user is not None
    assert user.name == "system:serviceaccount:demo:robot"
    assert user.uid == SA_UID
    assert user.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:demo",
        SYSTEM_AUTHENTICATED,
    )
    assert "authentication.kubernetes.io/pod-name" not in user.extra
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:demo:robot"
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "robot", "uid": SA_UID}
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    # still valid within the leeway after expiry, invalid after
    clock.now = NOW + 3600 + TOKEN_LEEWAY_S - 1
    assert await authn.authenticate(peer_cert=None, authorization=bearer(token))
    clock.now = NOW + 3600 + TOKEN_LEEWAY_S + 1
    with pytest.raises(AuthenticationError, match="expired"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_token_from_the_future_is_rejected(issuer, authn, clock) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID)
    clock.now = NOW - 3 * TOKEN_LEEWAY_S
    with pytest.raises(AuthenticationError, match="not valid yet"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_pod_bound_token(issuer, authn, lookup) -> None:
    token, _ = issuer.issue(
        "demo",
        "robot",
        SA_UID,
        bound_object={"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": POD_UID},
        node={"name": "node-a", "uid": "n-uid"},
    )
    lookup.put("nodes", "", "node-a", "n-uid")
    user = await authn.authenticate(peer_cert=None, authorization=bearer(token))
    assert user.extra["authentication.kubernetes.io/pod-name"] == ("web-1",)
    assert user.extra["authentication.kubernetes.io/pod-uid"] == (POD_UID,)
    assert user.extra["authentication.kubernetes.io/node-name"] == ("node-a",)
    assert user.extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    assert user.to_dict()["extra"]["authentication.kubernetes.io/pod-name"] == ["web-1"]

    # pod replaced by another with the same name
    lookup.put("pods", "demo", "web-1", "another-uid")
    with pytest.raises(AuthenticationError, match=r"pod UID \(another-uid\) does not match"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))
    # pod gone
    del lookup.objects[("pods", "demo", "web-1")]
    with pytest.raises(AuthenticationError, match="pod demo/web-1 has been deleted"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_secret_bound_token(issuer, authn, lookup) -> None:
    lookup.put("secrets", "demo", "s", "s-uid")
    token, _ = issuer.issue(
        "demo", "robot", SA_UID, bound_object={"kind": "Secret", "name": "s", "uid": "s-uid"}
    )
    assert await authn.authenticate(peer_cert=None, authorization=bearer(token))
    del lookup.objects[("secrets", "demo", "s")]
    with pytest.raises(AuthenticationError, match="secret demo/s has been deleted"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_deleted_service_account(issuer, authn, lookup) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID)
    del lookup.objects[("serviceaccounts", "demo", "robot")]
    with pytest.raises(AuthenticationError, match="service account demo/robot has been deleted"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_service_account_uid_mismatch(issuer, authn, lookup) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID)
    lookup.put("serviceaccounts", "demo", "robot", "recreated-uid")
    with pytest.raises(AuthenticationError, match="does not match claim"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_service_account_being_deleted(issuer, authn, lookup, clock) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID)
    stamp = dt.datetime.fromtimestamp(NOW - 10, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lookup.objects[("serviceaccounts", "demo", "robot")]["metadata"]["deletionTimestamp"] = stamp
    assert await authn.authenticate(peer_cert=None, authorization=bearer(token))  # grace
    clock.now = NOW + 120
    with pytest.raises(AuthenticationError, match="has been deleted"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_wrong_audience(issuer, authn) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID, audiences=["vault"])
    with pytest.raises(AuthenticationError, match="audience"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))
    ok, _ = issuer.issue("demo", "robot", SA_UID, audiences=["vault", "sampan"])
    assert await authn.authenticate(peer_cert=None, authorization=bearer(ok))


async def test_wrong_key(authn, clock) -> None:
    other = TokenIssuer(key_to_pem(generate_rsa_key()), clock=clock)
    token, _ = other.issue("demo", "robot", SA_UID)
    with pytest.raises(AuthenticationError, match="signature"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_tampered_claims(issuer, authn) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID)
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["kubernetes.io"]["namespace"] = "kube-system"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    with pytest.raises(AuthenticationError, match="signature"):
        await authn.authenticate(
            peer_cert=None, authorization=bearer(f"{header}.{forged.decode()}.{signature}")
        )


async def test_es256_keys_are_accepted(lookup, clock) -> None:
    key = generate_ec_key()
    issuer = TokenIssuer(key_to_pem(key), clock=clock)
    authn = Authenticator(sa_public_keys=[public_key_to_pem(key)], lookup=lookup, clock=clock)
    token, _ = issuer.issue("demo", "robot", SA_UID)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    user = await authn.authenticate(peer_cert=None, authorization=bearer(token))
    assert user.name == "system:serviceaccount:demo:robot"


async def test_key_rotation_accepts_old_and_new(rsa_key_pem, lookup, clock) -> None:
    from sampan.pki.certs import load_private_key

    new_key = generate_rsa_key()
    authn = Authenticator(
        sa_public_keys=[
            public_key_to_pem(new_key),
            public_key_to_pem(load_private_key(rsa_key_pem)),
        ],
        lookup=lookup,
        clock=clock,
    )
    for pem in (rsa_key_pem, key_to_pem(new_key)):
        token, _ = TokenIssuer(pem, clock=clock).issue("demo", "robot", SA_UID)
        assert await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_legacy_secret_token(rsa_key_pem, authn, lookup) -> None:
    # signed as the serviceaccount-token controller signs them
    token = ServiceAccountSigner(rsa_key_pem).sign_legacy("demo", "robot", SA_UID, "robot-token")
    secret = lookup.put(
        "secrets",
        "demo",
        "robot-token",
        "sec-uid",
        type="kubernetes.io/service-account-token",
        data={"token": base64.b64encode(token.encode()).decode()},
    )
    user = await authn.authenticate(peer_cert=None, authorization=bearer(token))
    assert user.name == "system:serviceaccount:demo:robot"
    assert user.uid == SA_UID
    assert SYSTEM_AUTHENTICATED in user.groups
    # marked invalid
    secret["metadata"]["labels"] = {"kubernetes.io/legacy-token-invalid-since": "2026-01-01"}
    with pytest.raises(AuthenticationError, match="marked invalid"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))
    # secret holds a different token now
    secret["metadata"]["labels"] = {}
    secret["data"]["token"] = base64.b64encode(b"something else").decode()
    with pytest.raises(AuthenticationError, match="does not match"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))
    # secret deleted
    del lookup.objects[("secrets", "demo", "robot-token")]
    with pytest.raises(AuthenticationError, match="deleted"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_legacy_token_uid_mismatch(rsa_key_pem, authn, lookup) -> None:
    token = ServiceAccountSigner(rsa_key_pem).sign_legacy(
        "demo", "robot", "stale-uid", "robot-token"
    )
    lookup.put(
        "secrets",
        "demo",
        "robot-token",
        "x",
        data={"token": base64.b64encode(token.encode()).decode()},
    )
    with pytest.raises(AuthenticationError, match="does not match claim"):
        await authn.authenticate(peer_cert=None, authorization=bearer(token))


async def test_authorization_header_shapes(authn) -> None:
    assert await authn.authenticate(peer_cert=None, authorization=None) is None
    assert await authn.authenticate(peer_cert=None, authorization="") is None
    assert await authn.authenticate(peer_cert=None, authorization="Basic dXNlcjpwYXNz") is None
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        await authn.authenticate(peer_cert=None, authorization="Bearer ")
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        await authn.authenticate(peer_cert=None, authorization="Bearer abcdef.0123456789abcdef")
    # a JWT from a foreign issuer is nobody's token here
    foreign = jwt.encode({"iss": "https://accounts.example.com", "sub": "x"}, "k" * 32)
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        await authn.authenticate(peer_cert=None, authorization=f"bearer {foreign}")


async def test_extra_token_authenticators(rsa_key_pem, lookup, clock) -> None:
    from sampan.pki.certs import load_private_key

    class Bootstrap:
        async def authenticate_token(self, token: str) -> UserInfo | None:
            if token == "abcdef.0123456789abcdef":
                return UserInfo("system:bootstrap:abcdef", groups=("system:bootstrappers",))
            return None

    authn = Authenticator(
        sa_public_keys=[public_key_to_pem(load_private_key(rsa_key_pem))],
        lookup=lookup,
        clock=clock,
        token_authenticators=[Bootstrap()],
    )
    user = await authn.authenticate(peer_cert=None, authorization="Bearer abcdef.0123456789abcdef")
    assert user.name == "system:bootstrap:abcdef"
    assert user.groups == ("system:bootstrappers", SYSTEM_AUTHENTICATED)
    with pytest.raises(AuthenticationError):
        await authn.authenticate(peer_cert=None, authorization="Bearer zzzzzz.0123456789abcdef")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return ensure_cluster_pki(
        tmp_path_factory.mktemp("tls"), hostname="h", node_ips=(), tls_sans=()
    )


def test_x509_mapping_from_der_and_dict(pki) -> None:
    cert_pem, _ = issue_client_certificate(pki, "jane", ["devs", "ops", "devs"])
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
    user = user_from_certificate(der)
    assert user == UserInfo("jane", groups=("devs", "ops", SYSTEM_AUTHENTICATED))
    peer_dict = {
        "subject": (
            (("organizationName", "devs"),),
            (("organizationName", "ops"),),
            (("commonName", "jane"),),
        )
    }
    assert user_from_certificate(peer_dict) == user
    with pytest.raises(AuthenticationError, match="common name"):
        user_from_certificate({"subject": ((("organizationName", "x"),),)})


async def test_authenticator_rechecks_der_against_client_ca(pki, lookup, tmp_path: Path) -> None:
    authn = Authenticator(
        sa_public_keys=[pki.sa_public_key_pem], lookup=lookup, client_ca_pem=pki.client_ca_pem
    )
    cert_pem, _ = issue_client_certificate(pki, "system:admin", ["system:masters"])
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
    # a certificate wins over a bearer token
    user = await authn.authenticate(peer_cert=der, authorization="Bearer junk")
    assert user.name == "system:admin"
    assert user.groups == ("system:masters", SYSTEM_AUTHENTICATED)
    assert await authn.authenticate(peer_cert=der, authorization=None) == user  # cached path
    # a kubelet serving cert (kubelet CA): not a client of this cluster
    serving_pem, _ = issue_kubelet_serving_certificate(pki, ["n1"], [])
    serving_der = x509.load_pem_x509_certificate(serving_pem).public_bytes(Encoding.DER)
    with pytest.raises(AuthenticationError, match="client CA"):
        await authn.authenticate(peer_cert=serving_der, authorization=None)
    # signed by a foreign CA
    rogue_ca, rogue_key = create_ca("rogue")
    rogue, _ = issue_leaf(rogue_ca, rogue_key, common_name="system:admin", client_auth=True)
    with pytest.raises(AuthenticationError, match="client CA"):
        await authn.authenticate(peer_cert=rogue.public_bytes(Encoding.DER), authorization=None)
    with pytest.raises(AuthenticationError, match="parsed"):
        await authn.authenticate(peer_cert=b"not a certificate", authorization=None)


async def test_authenticate_peer_cert_from_a_real_tls_handshake(pki, lookup, tmp_path) -> None:
    """DER from the server's ssl_object (as the API server will call it) and the dict form."""
    authn = Authenticator(
        sa_public_keys=[pki.sa_public_key_pem], lookup=lookup, client_ca_pem=pki.client_ca_pem
    )
    seen: list[tuple[UserInfo | None, UserInfo | None]] = []

    async def handler(request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        from_der = await authn.authenticate(
            peer_cert=der, authorization=request.headers.get("Authorization")
        )
        from_dict = await authn.authenticate(
            peer_cert=ssl_object.getpeercert(), authorization=request.headers.get("Authorization")
        )
        seen.append((from_der, from_dict))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.ssl_server_context())
    await site.start()
    port = runner.addresses[0][1]
    cert_pem, key_pem = issue_client_certificate(pki, "jane", ["devs"])
    (tmp_path / "c.crt").write_bytes(cert_pem)
    (tmp_path / "c.key").write_bytes(key_pem)
    try:
        client_ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
        client_ctx.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://localhost:{port}/", ssl=client_ctx) as resp:
                assert resp.status == 200
            async with session.get(
                f"https://localhost:{port}/",
                ssl=ssl.create_default_context(cadata=pki.ca_pem.decode()),
            ) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
    jane = UserInfo("jane", groups=("devs", SYSTEM_AUTHENTICATED))
    assert seen == [(jane, jane), (None, None)]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_algorithm_confusion_and_none_are_rejected(rsa_key_pem, issuer, authn) -> None:
    import hashlib
    import hmac

    from sampan.pki.certs import load_private_key

    token, _ = issuer.issue("demo", "robot", SA_UID)
    claims = jwt.decode(token, options={"verify_signature": False})
    body = _b64url(json.dumps(claims).encode())
    public_pem = public_key_to_pem(load_private_key(rsa_key_pem))
    # HS256 "signed" with the public key as the HMAC secret
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(AuthenticationError, match="signature"):
        await authn.authenticate(
            peer_cert=None, authorization=bearer(f"{header}.{body}.{_b64url(mac)}")
        )
    # unsigned
    none_header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    with pytest.raises(AuthenticationError, match="signature"):
        await authn.authenticate(peer_cert=None, authorization=bearer(f"{none_header}.{body}."))


async def test_hostile_headers_are_authentication_errors(issuer, authn) -> None:
    token, _ = issuer.issue("demo", "robot", SA_UID)
    _, body, signature = token.split(".")
    for header in ({"alg": "RS256", "kid": ["x"]}, {"alg": "RS256", "kid": {"a": 1}}):
        crafted = f"{_b64url(json.dumps(header).encode())}.{body}.{signature}"
        with pytest.raises(AuthenticationError):
            await authn.authenticate(peer_cert=None, authorization=bearer(crafted))


async def test_request_header_authentication(pki, lookup) -> None:
    """A front-proxy certificate (request-header CA, allowed CN) vouches for X-Remote-*; no
    other certificate can, and a front-proxy certificate is never a user of its own."""
    from multidict import CIMultiDict

    from sampan.apiserver.auth import RequestHeaderConfig
    from sampan.pki import AUTH_PROXY_USER
    from sampan.pki.certs import load_cert, load_private_key

    authn = Authenticator(
        sa_public_keys=[pki.sa_public_key_pem],
        lookup=lookup,
        client_ca_pem=pki.client_ca_pem,
        request_header=RequestHeaderConfig(
            ca_pem=pki.request_header_ca_pem, allowed_names=(AUTH_PROXY_USER,)
        ),
    )
    proxy_der = x509.load_pem_x509_certificate(pki.auth_proxy_cert_path.read_bytes()).public_bytes(
        Encoding.DER
    )
    headers = CIMultiDict(
        [
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "a"),
            ("X-Remote-Group", "b"),
            ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
            ("X-Remote-Extra-Acme.com%2Fproject", "p2"),
        ]
    )
    user = await authn.authenticate(peer_cert=proxy_der, authorization=None, headers=headers)
    assert user == UserInfo(
        "alice",
        groups=("a", "b", SYSTEM_AUTHENTICATED),
        extra={"acme.com/project": ("p1", "p2")},
    )
    # Without a user header the front-proxy certificate authenticates nobody.
    assert await authn.authenticate(peer_cert=proxy_der, authorization=None, headers={}) is None
    # A user's own certificate (client CA) cannot assert another identity.
    jane_pem, _ = issue_client_certificate(pki, "jane")
    jane_der = x509.load_pem_x509_certificate(jane_pem).public_bytes(Encoding.DER)
    user = await authn.authenticate(peer_cert=jane_der, authorization=None, headers=headers)
    assert user.name == "jane"
    # A request-header CA certificate with a CN that is not allowed: 401.
    ca = load_cert(pki.request_header_ca_pem)
    ca_key = load_private_key((pki.tls_dir / "request-header-ca.key").read_bytes())
    other, _ = issue_leaf(ca, ca_key, common_name="someone-else", client_auth=True)
    with pytest.raises(AuthenticationError, match="not allowed"):
        await authn.authenticate(
            peer_cert=other.public_bytes(Encoding.DER), authorization=None, headers=headers
        )
