"""Service-account JWT signing shared by the API server and the serviceaccount-token controller."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sampan.pki.satokens import LEGACY_ISSUER, ServiceAccountSigner, key_id


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_legacy_token_verifies_with_the_public_key(key, algorithm) -> None:
    signer = ServiceAccountSigner(_pem(key))
    token = signer.sign_legacy("team", "robot", "uid-1", "robot-token")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm
    assert header["kid"] == key_id(key.public_key())
    claims = jwt.decode(token, key.public_key(), algorithms=[algorithm])
    assert claims == {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": "team",
        "kubernetes.io/serviceaccount/secret.name": "robot-token",
        "kubernetes.io/serviceaccount/service-account.name": "robot",
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
        "sub": "system:serviceaccount:team:robot",
    }
    assert "PRIVATE" not in repr(signer)


def test_unsupported_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported EC curve"):
        ServiceAccountSigner(_pem(ec.generate_private_key(ec.SECP384R1())))


def test_the_same_private_key_pem_is_loaded_once() -> None:
    """A server loads the service-account key in several places while it starts; RSA keys are
    checked on load (~35 ms each), so the same PEM gives the same key object. Another PEM (a
    rotated key) is loaded on its own, and a bad one still fails every time."""
    from sampan.pki.certs import generate_rsa_key, key_to_pem, load_private_key

    pem = key_to_pem(generate_rsa_key())
    first = load_private_key(pem)
    assert load_private_key(pem) is first
    assert ServiceAccountSigner(pem)._key is first
    other = key_to_pem(generate_rsa_key())
    assert load_private_key(other) is not first
    for _ in range(2):
        with pytest.raises(ValueError):
            load_private_key(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
