"""Passwords and token secrets of the manager: generating, hashing, checking.

* Passwords are hashed with argon2id (``argon2-cffi``'s ``PasswordHasher`` with its default,
  memory-hard parameters: 64 MiB, 3 passes, 4 lanes) and checked in a thread, never on the
  event loop. A check for an unknown user runs against a fixed dummy hash, so the answer
  takes the same time whether the user exists or not.
* Token secrets are 54 random characters (Rancher's length); a Token object stores only the
  SHA-256 hex of the secret. A fast hash is enough there: the secret is random with 278 bits
  of entropy, not a human's password.
* Registration tokens are 54 random lower-case characters (they appear in a URL).

Nothing here logs or returns a secret except to its caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "check_password",
    "hash_password",
    "hash_token_secret",
    "new_password",
    "new_token_secret",
    "random_suffix",
    "token_secret_matches",
]

MIN_PASSWORD_LENGTH = 12
"""Rancher's default ``password-min-length``."""
GENERATED_PASSWORD_LENGTH = 20
TOKEN_SECRET_LENGTH = 54
_LOWER = string.ascii_lowercase + string.digits
_PASSWORD_ALPHABET = string.ascii_letters + string.digits

_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def random_suffix(length: int) -> str:
    """Lower-case letters and digits (object name suffixes: ``token-xxxxx``, ``c-xxxxx``)."""
    return "".join(secrets.choice(_LOWER) for _ in range(length))


def new_password() -> str:
    """A random password for the bootstrap admin and ``reset-admin``."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def new_token_secret() -> str:
    return random_suffix(TOKEN_SECRET_LENGTH)


async def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of ``password``, computed in a thread."""
    return await asyncio.to_thread(_HASHER.hash, password)


def _check(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def check_password(password_hash: str | None, password: str) -> bool:
    """Does ``password`` match? ``None`` (no such user, or no password) checks against a
    dummy hash and answers False, taking as long as a real check."""
    if not password_hash:
        await asyncio.to_thread(_check, _DUMMY_HASH, password)
        return False
    return await asyncio.to_thread(_check, password_hash, password)


def hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_secret_matches(stored_hash: str, secret: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_token_secret(secret))
