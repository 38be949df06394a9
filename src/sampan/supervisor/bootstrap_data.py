"""Shared bootstrap data: what every server of one cluster must hold identically, kept once in
the datastore so that a second server on the same datastore joins the first one's cluster.

What is shared (paths relative to ``<data-dir>/server``): the four CAs and the
service-account key pair (``sampan.pki.AUTHORITY_FILES`` under ``tls/``), the encryption
configuration ``--secrets-encryption`` generates and its rotation state (``cred/``), the server
token's secret and the agent token's secret. Each server issues its own leaf certificates
(serving, components, admin) from the shared CAs, so one admin kubeconfig and one agent token
work against every server.

Where and how (K3s's scheme, ``pkg/cluster``): one record at
``/registry/sampan/bootstrap/<first 12 hex of sha256(token secret)>``, its value a JSON envelope
holding the payload sealed with AES-256-GCM under a key derived from the token secret with
PBKDF2 and a random salt; the storage key is the associated data, so a record moved to another
key does not open. K3s derives with PBKDF2-HMAC-SHA1 and 4096 iterations; Sampan uses
PBKDF2-HMAC-SHA512 with ``PBKDF2_ITERATIONS`` (OWASP's figure), because a token may be a short
passphrase and the datastore (PostgreSQL) may be readable by more people than the servers'
disks. The envelope names its KDF and count, so a later change can still open old records.

Invariants:

* The record is created once, with a create-if-absent compare-and-swap: of two servers starting
  at once against an empty datastore, one wins and the other loads the winner's data, so the
  cluster never has two CAs. Material of a fresh cluster is generated in a scratch directory
  and reaches ``tls/`` only from the record that won.
* Records made with two different tokens (two first starts racing with different ``--token``)
  resolve the same way: the record with the lower create revision is the cluster's; the loser
  deletes its own record and is refused.
* A server whose token opens no record while the datastore holds one is refused with one line
  (``BootstrapError``), and nothing is written. So is a data dir whose CA files differ from the
  record (it belongs to another cluster).
* Files are written from the record atomically, mode 0600. The datastore is the truth for the
  CAs; for the encryption files the newer side wins (a ``secrets-encrypt prepare/rotate`` on one
  server is pushed at its restart, pulled by the others at theirs), as K3s reconciles them.
* ``sampan token rotate`` keeps the previous secret in ``server/token.previous`` (0600); the
  next start finds the record under it, seals it again under the new secret (new key created,
  old key deleted) and removes that file.

Secrets (token, keys) never appear in log lines or error messages.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sampan.datastore import (
    Backend,
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
)
from sampan.pki import AUTHORITY_FILES, ensure_authorities
from sampan.pki.files import PRIVATE_FILE_MODE, atomic_write, ensure_private_dir

__all__ = [
    "BOOTSTRAP_PREFIX",
    "KEY_CACHE_FILE",
    "PBKDF2_ITERATIONS",
    "PREVIOUS_TOKEN_FILE",
    "BootstrapError",
    "BootstrapResult",
    "decrypt",
    "encrypt",
    "reconcile_bootstrap",
    "storage_key",
]

log = logging.getLogger("sampan.supervisor.bootstrap")

BOOTSTRAP_PREFIX = "/registry/sampan/bootstrap/"
KEY_HASH_CHARS = 12
PBKDF2_ITERATIONS = 210_000
PBKDF2_HASH = "sha512"
SALT_BYTES = 16
NONCE_BYTES = 12
ENVELOPE_VERSION = 1
SECRET_BYTES = 32
UPDATE_ATTEMPTS = 5
PREVIOUS_TOKEN_FILE = "token.previous"
"""Under ``<data-dir>/server``: the secret ``sampan token rotate`` replaced (see above)."""
KEY_CACHE_FILE = "cred/bootstrap-key.json"
"""Under ``<data-dir>/server`` (0600): the key derived for the record this server last opened,
so a restart skips the derivation (~0.1 s of PBKDF2). It opens nothing the data dir does not
already hold (the token and the CA keys sit beside it), and it is bound to the token secret:
another secret, salt or count derives again."""

TLS_FILES = tuple(f"tls/{name}" for name in AUTHORITY_FILES)
ENCRYPTION_FILES = ("cred/encryption-config.json", "cred/encryption-state.json")
"""Kept in step by modification time: the newer side wins."""


class BootstrapError(Exception):
    """The server cannot take part in the cluster the datastore holds; one line, no secret."""


@dataclass(frozen=True)
class BootstrapResult:
    token_secret: str
    agent_token_secret: str
    """"" when the cluster has no separate agent token."""
    created: bool
    """True when this server wrote the record (the first server of the cluster)."""


def storage_key(secret: str) -> str:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return BOOTSTRAP_PREFIX + digest[:KEY_HASH_CHARS]


def _derive(secret: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(PBKDF2_HASH, secret.encode(), salt, iterations, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt(secret: str, plaintext: bytes, *, key: str) -> bytes:
    """The envelope for ``plaintext`` sealed under ``secret``, bound to storage ``key``."""
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_derive(secret, salt, PBKDF2_ITERATIONS)).encrypt(
        nonce, plaintext, key.encode()
    )
    envelope = {
        "version": ENVELOPE_VERSION,
        "kdf": f"pbkdf2-{PBKDF2_HASH}",
        "iterations": PBKDF2_ITERATIONS,
        "salt": _b64(salt),
        "nonce": _b64(nonce),
        "ciphertext": _b64(sealed),
    }
    return json.dumps(envelope).encode()


def _cache_check(derived: bytes, secret: str) -> str:
    return hmac.new(derived, b"sampan-bootstrap-key\0" + secret.encode(), "sha256").hexdigest()


def _cached_key(cache: Path, secret: str, salt: bytes, iterations: int) -> bytes | None:
    """The derived key ``cache`` holds for this secret, salt and count, else None."""
    try:
        doc = json.loads(cache.read_bytes())
        if doc.get("salt") != _b64(salt) or doc.get("iterations") != iterations:
            return None
        derived = base64.b64decode(doc["key"], validate=True)
        if not hmac.compare_digest(str(doc.get("check")), _cache_check(derived, secret)):
            return None
        return derived
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _store_key(cache: Path, secret: str, salt: bytes, iterations: int, derived: bytes) -> None:
    doc = {
        "salt": _b64(salt),
        "iterations": iterations,
        "key": _b64(derived),
        "check": _cache_check(derived, secret),
    }
    try:
        ensure_private_dir(cache.parent)
        atomic_write(cache, json.dumps(doc).encode(), mode=PRIVATE_FILE_MODE)
    except OSError as exc:  # only a slower next start
        log.warning("cannot keep the bootstrap key cache %s: %s", cache, exc.strerror or exc)


def decrypt(secret: str, envelope: bytes, *, key: str, key_cache: Path | None = None) -> bytes:
    """The plaintext of an ``encrypt`` envelope; ``BootstrapError`` when it is not one or
    ``secret`` does not open it. With ``key_cache`` (``KEY_CACHE_FILE``), the derived key is
    read from there when it was kept for this secret and envelope, and kept there after a
    derivation."""
    try:
        doc = json.loads(envelope)
        if doc.get("version") != ENVELOPE_VERSION or doc.get("kdf") != f"pbkdf2-{PBKDF2_HASH}":
            raise ValueError("unknown envelope version or KDF")
        iterations = int(doc["iterations"])
        if not 1000 <= iterations <= 10_000_000:
            raise ValueError("implausible iteration count")
        salt = base64.b64decode(doc["salt"], validate=True)
        nonce = base64.b64decode(doc["nonce"], validate=True)
        sealed = base64.b64decode(doc["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BootstrapError(f"the bootstrap record {key} is not readable: {exc}") from None
    if key_cache is not None:
        derived = _cached_key(key_cache, secret, salt, iterations)
        if derived is not None:
            try:
                return AESGCM(derived).decrypt(nonce, sealed, key.encode())
            except InvalidTag:
                pass  # a stale or damaged cache: derive
    derived = _derive(secret, salt, iterations)
    try:
        plaintext = AESGCM(derived).decrypt(nonce, sealed, key.encode())
    except InvalidTag:
        raise BootstrapError(
            f"the bootstrap record {key} cannot be decrypted with this token"
        ) from None
    if key_cache is not None:
        _store_key(key_cache, secret, salt, iterations, derived)
    return plaintext


# --- payload --------------------------------------------------------------------------------


@dataclass
class _Payload:
    files: dict[str, tuple[bytes, int]]
    """Relative path -> (content, mtime_ns)."""
    token: str
    agent_token: str

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "files": {
                    path: {"content": _b64(content), "mtimeNs": mtime}
                    for path, (content, mtime) in sorted(self.files.items())
                },
                "token": self.token,
                "agentToken": self.agent_token,
            }
        ).encode()

    @classmethod
    def loads(cls, data: bytes, key: str) -> _Payload:
        try:
            doc = json.loads(data)
            files = {
                str(path): (base64.b64decode(entry["content"]), int(entry["mtimeNs"]))
                for path, entry in doc["files"].items()
            }
            return cls(files, str(doc["token"]), str(doc.get("agentToken") or ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BootstrapError(f"the bootstrap record {key} is malformed: {exc}") from None


def _read(path: Path) -> tuple[bytes, int] | None:
    try:
        return path.read_bytes(), path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _write(path: Path, content: bytes, mtime_ns: int | None = None) -> None:
    ensure_private_dir(path.parent)
    atomic_write(path, content, mode=PRIVATE_FILE_MODE)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _collect(root: Path, names: tuple[str, ...]) -> dict[str, tuple[bytes, int]]:
    files = {}
    for name in names:
        found = _read(root / name)
        if found is not None:
            files[name] = found
    return files


# --- the reconciliation -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Local:
    server_dir: Path
    encryption: bool
    generate_encryption: Callable[[Path], Any] | None

    @property
    def previous_token_path(self) -> Path:
        return self.server_dir / PREVIOUS_TOKEN_FILE

    def candidate(self, token: str, agent_token: str) -> _Payload:
        """The material of a new cluster: this data dir's own CAs when it has them (a server
        that ran alone before), else fresh ones made in a scratch directory."""
        tls = self.server_dir / "tls"
        if (tls / "server-ca.crt").exists():
            ensure_authorities(tls)
            files = _collect(self.server_dir, TLS_FILES)
        else:
            ensure_private_dir(self.server_dir)
            scratch = Path(tempfile.mkdtemp(prefix=".bootstrap-", dir=self.server_dir))
            try:
                ensure_authorities(scratch / "tls")
                files = _collect(scratch, TLS_FILES)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if self.encryption and self.generate_encryption is not None:
            self.generate_encryption(self.server_dir / ENCRYPTION_FILES[0])
        files.update(_collect(self.server_dir, ENCRYPTION_FILES))
        return _Payload(files, token, agent_token)

    def apply(self, payload: _Payload, key: str) -> bool:
        """Write the record's files here; True when local encryption files are newer than the
        record's (the caller pushes them). ``BootstrapError`` when a CA file differs."""
        for name in TLS_FILES:
            if name not in payload.files:
                raise BootstrapError(f"the bootstrap record {key} lacks {name}")
        for name in TLS_FILES:
            path = self.server_dir / name
            content, _ = payload.files[name]
            local = _read(path)
            if local is not None and local[0] != content:
                raise BootstrapError(
                    f"{path} differs from the cluster's bootstrap data in the datastore: this "
                    f"data dir belongs to another cluster (move {path.parent} away to join)"
                )
        for name in TLS_FILES:
            path = self.server_dir / name
            if not path.exists():
                _write(path, payload.files[name][0])
            elif (path.stat().st_mode & 0o777) != PRIVATE_FILE_MODE:
                path.chmod(PRIVATE_FILE_MODE)
        newer = False
        for name in ENCRYPTION_FILES:
            path = self.server_dir / name
            local, stored = _read(path), payload.files.get(name)
            if stored is None:
                newer = newer or local is not None
            elif local is None or (local[0] != stored[0] and local[1] <= stored[1]):
                _write(path, stored[0], stored[1])
                log.info("wrote %s from the cluster's bootstrap data", path)
            elif local[0] != stored[0]:
                newer = True
        return newer


async def _get(backend: Backend, key: str) -> KeyValue | None:
    _, kv = await backend.get(key)
    return kv


async def _others(backend: Backend, key: str) -> list[KeyValue]:
    result = await backend.list(BOOTSTRAP_PREFIX)
    return [kv for kv in result.items if kv.key != key]


async def _seal(secret: str, payload: _Payload, key: str) -> bytes:
    return await asyncio.to_thread(encrypt, secret, payload.dumps(), key=key)


async def _open(secret: str, kv: KeyValue, key_cache: Path | None = None) -> _Payload:
    plain = await asyncio.to_thread(decrypt, secret, kv.value, key=kv.key, key_cache=key_cache)
    return _Payload.loads(plain, kv.key)


def _read_secret(path: Path) -> str:
    from sampan.supervisor.token import TokenError, parse_token

    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    try:
        return parse_token(text).secret
    except TokenError:
        return ""


async def reconcile_bootstrap(
    backend: Backend,
    *,
    server_dir: Path,
    token: str,
    agent_token: str,
    secrets_encryption: bool,
    generate_encryption: Callable[[Path], Any] | None = None,
) -> BootstrapResult:
    """Load this cluster's bootstrap data from ``backend`` into ``server_dir`` (creating the
    record when the datastore has none), and return the secrets in effect. ``token`` and
    ``agent_token`` are the secrets the user gave ("" for none); without ``token`` the secret in
    ``server_dir/token`` is used, else a new one when the datastore holds no cluster yet.
    ``BootstrapError`` (one line) when this server cannot join the datastore's cluster."""
    local = _Local(server_dir, secrets_encryption, generate_encryption)
    secret = token or await asyncio.to_thread(_read_secret, server_dir / "token")
    if not secret:
        if await _others(backend, ""):
            raise BootstrapError(
                "the datastore already holds a cluster: start this server with that cluster's "
                "--token"
            )
        secret = secrets.token_hex(SECRET_BYTES)
    key = storage_key(secret)
    kv = await _get(backend, key)
    created = False
    if kv is None:
        kv = await _rotate_from_previous(backend, local, secret, key)
    if kv is None:
        if await _others(backend, key):
            raise BootstrapError(
                "the datastore holds bootstrap data encrypted with a different token: start "
                "this server with the cluster's --token"
            )
        candidate = await asyncio.to_thread(local.candidate, secret, agent_token)
        try:
            revision = await backend.create(key, await _seal(secret, candidate, key))
            created = True
            log.info("stored the cluster's bootstrap data in the datastore")
        except KeyExistsError:
            log.info("another server stored the bootstrap data first; loading it")
        kv = await _get(backend, key)
        if kv is None:
            raise BootstrapError("the bootstrap record vanished while this server started")
        if created:
            await _check_first(backend, key, revision)
    key_cache = server_dir / KEY_CACHE_FILE
    payload = await _open(secret, kv, key_cache)
    if payload.agent_token and agent_token and payload.agent_token != agent_token:
        raise BootstrapError(
            "--agent-token differs from the agent token the cluster was created with"
        )
    newer = await asyncio.to_thread(local.apply, payload, key)
    if newer or (agent_token and not payload.agent_token):
        await _push(backend, local, secret, key, agent_token)
        payload = await _open(secret, await _get(backend, key) or kv, key_cache)
    return BootstrapResult(secret, payload.agent_token or agent_token, created)


async def _check_first(backend: Backend, key: str, revision: int) -> None:
    """After creating ``key`` at ``revision``: if a record under another token was created
    earlier, that one is the cluster's — drop ours and refuse."""
    earlier = [kv for kv in await _others(backend, key) if kv.create_revision < revision]
    if earlier:
        try:
            await backend.delete(key, revision)
        except (KeyNotFoundError, ConflictError):
            pass
        raise BootstrapError(
            "another server created the cluster at the same time with a different token: "
            "start this server with the cluster's --token"
        )


async def _push(backend: Backend, local: _Local, secret: str, key: str, agent_token: str) -> None:
    """Write this server's newer encryption files (and a first agent token) into the record."""
    for _ in range(UPDATE_ATTEMPTS):
        kv = await _get(backend, key)
        if kv is None:
            raise BootstrapError("the bootstrap record vanished while this server started")
        payload = await _open(secret, kv)
        files = await asyncio.to_thread(_collect, local.server_dir, ENCRYPTION_FILES)
        for name, (content, mtime) in files.items():
            stored = payload.files.get(name)
            if stored is None or (stored[0] != content and mtime > stored[1]):
                payload.files[name] = (content, mtime)
        payload.agent_token = payload.agent_token or agent_token
        try:
            await backend.update(key, await _seal(secret, payload, key), kv.mod_revision)
            log.info("updated the cluster's bootstrap data from this server")
            return
        except (ConflictError, KeyNotFoundError):
            continue
    raise BootstrapError("the bootstrap record kept changing; start this server again")


async def _rotate_from_previous(
    backend: Backend, local: _Local, secret: str, key: str
) -> KeyValue | None:
    """``sampan token rotate`` left the old secret behind: move the record to the new one."""
    previous = await asyncio.to_thread(_read_secret, local.previous_token_path)
    if not previous or previous == secret:
        return None
    old_key = storage_key(previous)
    old = await _get(backend, old_key)
    if old is None:
        return None
    payload = await _open(previous, old)
    payload.token = secret
    try:
        await backend.create(key, await _seal(secret, payload, key))
    except KeyExistsError:
        pass
    try:
        await backend.delete(old_key, old.mod_revision)
    except (KeyNotFoundError, ConflictError):
        pass
    await asyncio.to_thread(local.previous_token_path.unlink, missing_ok=True)
    log.info("bootstrap data re-encrypted with the rotated token")
    return await _get(backend, key)
