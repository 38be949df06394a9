"""Service-account issuer discovery documents (OIDC): the configuration served at
``/.well-known/openid-configuration`` and the JSON Web Key Set at ``/openid/v1/jwks``, from
which token verifiers outside the cluster verify projected service-account tokens.

Pure functions from public keys to documents; the API server routes and authorizes the
requests (non-resource URLs, ``system:service-account-issuer-discovery``). The review APIs
(SubjectAccessReview and friends) are computed by the request handlers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from sampan.apiserver.auth.serviceaccount import PublicKey, key_id, load_public_key

__all__ = [
    "JWKS_PATH",
    "OPENID_CONFIGURATION_PATH",
    "openid_configuration",
    "service_account_jwks",
]

OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"


def service_account_jwks(public_keys: Iterable[bytes | str | PublicKey]) -> dict[str, Any]:
    """The JSON Web Key Set served at ``/openid/v1/jwks``."""
    keys = []
    for raw in public_keys:
        key = load_public_key(raw)
        if isinstance(key, rsa.RSAPublicKey):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
            jwk["alg"] = "RS256"
        else:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
            jwk["alg"] = "ES256"
        jwk["use"] = "sig"
        jwk["kid"] = key_id(key)
        keys.append(jwk)
    return {"keys": keys}


def openid_configuration(
    issuer: str, jwks_uri: str, public_keys: Iterable[bytes | str | PublicKey]
) -> dict[str, Any]:
    """The OIDC discovery document served at ``/.well-known/openid-configuration``."""
    algorithms = sorted({jwk["alg"] for jwk in service_account_jwks(public_keys)["keys"]})
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
    }
