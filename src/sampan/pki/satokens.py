"""Signing service-account JWTs, and the claims of a legacy (Secret-held) token.

This module owns the one thing the API server (TokenRequest, token reviews) and the
``serviceaccount-token`` controller (``kubernetes.io/service-account-token`` Secrets) share:
turning the service-account private key into signed JWTs. It does no I/O: callers read the key
(``ClusterPKI.sa_private_key_pem``) and hand over its PEM.

Invariants:

* a token's header names the algorithm the key dictates (RS256 for RSA, ES256 for P-256) and
  the ``kid`` is the unpadded base64url SHA-256 of the DER public key, as upstream computes it
  (so ``/openid/v1/jwks`` and the verifier agree on it);
* a legacy token carries exactly upstream's flat claims (issuer ``kubernetes/serviceaccount``,
  ``sub``, and ``kubernetes.io/serviceaccount/{namespace,secret.name,service-account.name,
  service-account.uid}``) and never expires: it is only as good as the Secret holding it, which
  the authenticator looks up on every use;
* the private key never leaves the signer (no ``repr``, never logged).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sampan.pki.certs import load_pem_private_key

__all__ = [
    "LEGACY_CLAIM_NAMESPACE",
    "LEGACY_CLAIM_SA_NAME",
    "LEGACY_CLAIM_SA_UID",
    "LEGACY_CLAIM_SECRET_NAME",
    "LEGACY_ISSUER",
    "PublicKey",
    "ServiceAccountSigner",
    "key_id",
    "legacy_token_claims",
    "signing_algorithm",
]

LEGACY_ISSUER = "kubernetes/serviceaccount"
_LEGACY_PREFIX = "kubernetes.io/serviceaccount/"
LEGACY_CLAIM_NAMESPACE = _LEGACY_PREFIX + "namespace"
LEGACY_CLAIM_SECRET_NAME = _LEGACY_PREFIX + "secret.name"
LEGACY_CLAIM_SA_NAME = _LEGACY_PREFIX + "service-account.name"
LEGACY_CLAIM_SA_UID = _LEGACY_PREFIX + "service-account.uid"
# The user name a service account authenticates as (the ``sub`` of its tokens).
_SUBJECT_PREFIX = "system:serviceaccount:"

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def key_id(public_key: PublicKey) -> str:
    """The ``kid`` header: unpadded base64url SHA-256 of the DER public key (as upstream)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def signing_algorithm(key: PublicKey) -> str:
    """The JWS algorithm for ``key``: RS256 (RSA) or ES256 (P-256); ``ValueError`` else."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported EC curve {key.curve.name} for service-account tokens")


def legacy_token_claims(
    namespace: str, sa_name: str, sa_uid: str, secret_name: str
) -> dict[str, str]:
    """The claims of the non-expiring token kept in Secret ``namespace/secret_name`` for the
    service account ``namespace/sa_name`` whose uid is ``sa_uid``."""
    return {
        "iss": LEGACY_ISSUER,
        LEGACY_CLAIM_NAMESPACE: namespace,
        LEGACY_CLAIM_SECRET_NAME: secret_name,
        LEGACY_CLAIM_SA_NAME: sa_name,
        LEGACY_CLAIM_SA_UID: sa_uid,
        "sub": f"{_SUBJECT_PREFIX}{namespace}:{sa_name}",
    }


class ServiceAccountSigner:
    """Signs JWT claims with the service-account private key (PEM, RSA or P-256)."""

    def __init__(self, private_key_pem: bytes) -> None:
        key = load_pem_private_key(private_key_pem)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"unsupported service-account key type {type(key).__name__}")
        self._key = key
        self.public_key: PublicKey = key.public_key()
        self.algorithm = signing_algorithm(self.public_key)
        self.kid = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"ServiceAccountSigner(kid={self.kid!r}, algorithm={self.algorithm!r})"

    def sign(self, claims: Mapping[str, Any]) -> str:
        """The compact JWS of ``claims`` (header: ``alg``, ``kid``, ``typ``)."""
        return jwt.encode(
            dict(claims), self._key, algorithm=self.algorithm, headers={"kid": self.kid}
        )

    def sign_legacy(self, namespace: str, sa_name: str, sa_uid: str, secret_name: str) -> str:
        """A legacy token for the Secret ``namespace/secret_name`` (see ``legacy_token_claims``)."""
        return self.sign(legacy_token_claims(namespace, sa_name, sa_uid, secret_name))
