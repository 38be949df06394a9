"""Service-account issuer discovery documents (the review APIs are tested over HTTP)."""

from __future__ import annotations

import jwt

from sampan.apiserver.auth import (
    TokenIssuer,
)
from sampan.apiserver.auth.reviews import (
    openid_configuration,
    service_account_jwks,
)
from sampan.pki.certs import generate_ec_key, generate_rsa_key, key_to_pem, public_key_to_pem


def test_jwks_verifies_issued_tokens() -> None:
    rsa_key, ec_key = generate_rsa_key(), generate_ec_key()
    jwks = service_account_jwks([public_key_to_pem(rsa_key), public_key_to_pem(ec_key)])
    assert [k["alg"] for k in jwks["keys"]] == ["RS256", "ES256"]
    client = jwt.PyJWKSet.from_dict(jwks)
    for key in (rsa_key, ec_key):
        token, _ = TokenIssuer(key_to_pem(key)).issue("demo", "robot", "uid", audiences=["x"])
        kid = jwt.get_unverified_header(token)["kid"]
        (match,) = [k for k in client.keys if k.key_id == kid]
        claims = jwt.decode(token, match.key, algorithms=[match.algorithm_name], audience="x")
        assert claims["sub"] == "system:serviceaccount:demo:robot"
    config = openid_configuration(
        "https://kubernetes.default.svc.cluster.local",
        "https://10.0.0.1:6443/openid/v1/jwks",
        [public_key_to_pem(rsa_key)],
    )
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert config["issuer"] == "https://kubernetes.default.svc.cluster.local"
