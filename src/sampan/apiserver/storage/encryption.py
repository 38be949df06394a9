"""Encryption at rest: kube-apiserver's ``EncryptionConfiguration`` and the value transformers
that apply it between the storage layer and the datastore.

What it owns:

* ``load_encryption_config(path)``: reads and validates an ``EncryptionConfiguration``
  (``apiserver.config.k8s.io/v1``; JSON or YAML) and returns an ``EncryptionConfig``. Every
  problem is an ``EncryptionConfigError`` with one line naming the file and the field path, as
  kube-apiserver words its validation errors; the API server does not start with it. Secrets
  never appear in an error (upstream prints ``"REDACTED"``).
* The providers: ``aescbc`` (AES-CBC, PKCS#7 padding, random 16-byte IV before the
  ciphertext), ``aesgcm`` (AES-GCM, random 12-byte nonce before the ciphertext and tag),
  ``secretbox`` (XSalsa20-Poly1305 through PyNaCl, random 24-byte nonce first) and
  ``identity``. An encrypted value is ``k8s:enc:<provider>:v1:<key name>:`` + the payload.
* ``EncryptingBackend``: a datastore ``Backend`` wrapper. For keys of a configured resource it
  encrypts every value written (create, update) with the FIRST provider of that resource and
  decrypts every value read (get, list, watch events and their ``prev_kv``, delete's result,
  ``ConflictError.current``) with the provider whose prefix the value carries; a value without
  the ``k8s:enc:`` prefix is read by ``identity`` when listed. Everything above it (the watch
  cache, the stores, the API) sees plaintext; the datastore only ever receives what the first
  provider produced, so its ``prev`` columns hold ciphertext too. Compaction and the drivers
  are untouched.
* Staleness: a key whose last-read value was not written by the first provider is "stale";
  ``is_stale(backend, key)`` lets the store rewrite such an object on an otherwise no-op update
  (kube-apiserver does the same), which is how ``sampan secrets-encrypt reencrypt`` (a GET +
  PUT of every Secret) moves old values to the current key.

Invariants: key material lives only in the configuration file (0600 when Sampan writes it) and
in memory; no log line or error carries it. A value that no provider can read is a
``TransformError`` (a ``StoreError``: a ``get`` answers 500 "unable to transform key"); lists
and watches leave such an object out and log its key once (never its value), so one
unreadable Secret does not keep every watch cache from loading.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sampan.api.resources import REGISTRY_PREFIX, ResourceInfo
from sampan.datastore.types import ConflictError, Event, KeyValue, ListResult, StoreError

__all__ = [
    "API_VERSION",
    "ENCRYPTED_PREFIX",
    "K3S_KEY_NAME",
    "KIND",
    "EncryptingBackend",
    "EncryptionConfig",
    "EncryptionConfigError",
    "ResourceTransformer",
    "TransformError",
    "config_hash",
    "generate_config",
    "is_stale",
    "is_unreadable",
    "load_encryption_config",
    "wrap_backend",
    "write_generated_config",
]

API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
ENCRYPTED_PREFIX = b"k8s:enc:"
PROVIDER_TYPES = ("kms", "aesgcm", "aescbc", "secretbox", "identity")
AES_KEY_SIZES = (16, 24, 32)
SECRETBOX_KEY_SIZES = (32,)
AES_BLOCK = 16
GCM_NONCE = 12
log = logging.getLogger(__name__)

K3S_KEY_NAME = "aescbckey"
"""The key name K3s gives the key it generates (``--secrets-encryption``)."""


class EncryptionConfigError(ValueError):
    """An unusable encryption configuration file (one line: file, field, reason)."""


class TransformError(StoreError):
    """A stored value no configured provider can read (or a provider failed)."""


# --- providers ---------------------------------------------------------------------------


class _Provider(abc.ABC):
    type_name = ""

    def __init__(self, name: str, key: bytes = b"") -> None:
        self.name = name
        self._key = key
        self.prefix = f"k8s:enc:{self.type_name}:v1:{name}:".encode()

    @abc.abstractmethod
    def seal(self, data: bytes) -> bytes:
        """Encrypt ``data`` (the prefix is added by the caller)."""

    @abc.abstractmethod
    def open(self, payload: bytes) -> bytes:
        """Decrypt ``payload`` (the prefix already removed)."""

    def __repr__(self) -> str:  # never the key
        return f"<{self.type_name} {self.name}>"


class _AESCBC(_Provider):
    type_name = "aescbc"

    def seal(self, data: bytes) -> bytes:
        iv = os.urandom(AES_BLOCK)
        padder = padding.PKCS7(AES_BLOCK * 8).padder()
        padded = padder.update(data) + padder.finalize()
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return iv + enc.update(padded) + enc.finalize()

    def open(self, payload: bytes) -> bytes:
        if len(payload) < 2 * AES_BLOCK or len(payload) % AES_BLOCK:
            raise ValueError("the data is not a whole number of AES blocks")
        iv, body = payload[:AES_BLOCK], payload[AES_BLOCK:]
        dec = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
        padded = dec.update(body) + dec.finalize()
        unpadder = padding.PKCS7(AES_BLOCK * 8).unpadder()
        return unpadder.update(padded) + unpadder.finalize()


class _AESGCM(_Provider):
    type_name = "aesgcm"

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(GCM_NONCE)
        return nonce + AESGCM(self._key).encrypt(nonce, data, None)

    def open(self, payload: bytes) -> bytes:
        return AESGCM(self._key).decrypt(payload[:GCM_NONCE], payload[GCM_NONCE:], None)


class _Secretbox(_Provider):
    type_name = "secretbox"

    def seal(self, data: bytes) -> bytes:
        import nacl.secret

        return bytes(nacl.secret.SecretBox(self._key).encrypt(data))

    def open(self, payload: bytes) -> bytes:
        import nacl.secret

        return nacl.secret.SecretBox(self._key).decrypt(payload)


class _Identity(_Provider):
    type_name = "identity"

    def __init__(self) -> None:
        super().__init__("")
        self.prefix = b""

    def seal(self, data: bytes) -> bytes:
        return data

    def open(self, payload: bytes) -> bytes:
        return payload


_KEYED = {"aescbc": (_AESCBC, AES_KEY_SIZES), "aesgcm": (_AESGCM, AES_KEY_SIZES),
          "secretbox": (_Secretbox, SECRETBOX_KEY_SIZES)}  # fmt: skip


class ResourceTransformer:
    """The providers of one ``resources[]`` entry: the first writes, all read."""

    def __init__(self, providers: list[_Provider]) -> None:
        self.providers = providers
        self.writer = providers[0]

    def encrypt(self, data: bytes) -> bytes:
        return self.writer.prefix + self.writer.seal(data)

    def decrypt(self, value: bytes, key: str) -> tuple[bytes, bool]:
        """(plaintext, stale): stale when the first provider did not write ``value``."""
        if not value.startswith(ENCRYPTED_PREFIX):
            for p in self.providers:
                if isinstance(p, _Identity):
                    return value, p is not self.writer
            raise TransformError(
                f"unable to transform key {json.dumps(key)}: no matching prefix found"
            )
        for p in self.providers:
            if p.prefix and value.startswith(p.prefix):
                try:
                    return p.open(value[len(p.prefix) :]), p is not self.writer
                except Exception as e:  # wrong key, truncated data: never echo the data
                    raise TransformError(
                        f"unable to transform key {json.dumps(key)}: {p.type_name} provider "
                        f"{p.name!r} could not decrypt the value ({type(e).__name__})"
                    ) from None
        raise TransformError(f"unable to transform key {json.dumps(key)}: no matching prefix found")


@dataclass(frozen=True)
class EncryptionConfig:
    """A validated configuration: ``(resource patterns, transformer)`` in file order."""

    path: Path
    entries: tuple[tuple[tuple[str, ...], ResourceTransformer], ...]
    digest: str

    def transformer_for(self, info: ResourceInfo) -> ResourceTransformer | None:
        """The first entry naming ``info``'s group resource (``secrets``, ``deployments.apps``,
        ``*.apps``, ``*.*``), or None."""
        group = info.group
        exact = info.plural if not group else f"{info.plural}.{group}"
        for patterns, transformer in self.entries:
            for pattern in patterns:
                if (
                    pattern in (exact, "*.*")
                    or pattern == f"*.{group}"
                    or (pattern == "*." and not group)
                ):
                    return transformer
        return None

    def describe(self) -> list[tuple[str, str, str, bool]]:
        """(resources, provider type, key name, writes) of every provider key, for
        ``status``; ``writes`` marks the first (the key new values are written with)."""
        return [
            (",".join(patterns), p.type_name, p.name, p is t.writer)
            for patterns, t in self.entries
            for p in t.providers
        ]


# --- configuration file ------------------------------------------------------------------


def _fail(path: Path, field: str, message: str) -> EncryptionConfigError:
    return EncryptionConfigError(f"error while parsing file {path}: {field}: {message}")


def _provider(path: Path, field: str, item: Any) -> _Provider:
    if not isinstance(item, dict):
        raise _fail(path, field, "Invalid value: must be an object")
    present = [t for t in PROVIDER_TYPES if item.get(t) is not None]
    unknown = sorted(set(item) - set(PROVIDER_TYPES))
    if unknown:
        raise _fail(path, f"{field}.{unknown[0]}", "Invalid value: unknown field")
    if not present:
        raise _fail(
            path,
            field,
            "Invalid value: provider does not contain any of the expected providers: "
            "KMS, AESGCM, AESCBC, Secretbox, Identity",
        )
    if len(present) > 1:
        raise _fail(
            path,
            field,
            "Invalid value: more than one provider specified in a single element, should "
            "split into different list elements",
        )
    kind = present[0]
    if kind == "identity":
        return _Identity()
    if kind == "kms":
        raise _fail(path, f"{field}.kms", "Unsupported value: kms providers are not supported")
    cls, sizes = _KEYED[kind]
    if kind == "secretbox":
        try:
            import nacl.secret  # noqa: F401
        except ImportError:
            raise _fail(
                path, f"{field}.secretbox", "Unsupported value: PyNaCl is not installed"
            ) from None
    keys = item[kind].get("keys") if isinstance(item[kind], dict) else None
    if not keys or not isinstance(keys, list):
        raise _fail(path, f"{field}.{kind}.keys", "Required value: at least one key is required")
    first: _Provider | None = None
    seen: set[str] = set()
    for j, key in enumerate(keys):
        kf = f"{field}.{kind}.keys[{j}]"
        if not isinstance(key, dict):
            raise _fail(path, kf, "Invalid value: must be an object")
        name = key.get("name")
        if not name or not isinstance(name, str):
            raise _fail(path, f"{kf}.name", "Required value: key.name is a mandatory field")
        if name in seen:
            raise _fail(path, f"{kf}.name", f'Duplicate value: "{name}"')
        seen.add(name)
        secret = key.get("secret")
        if not secret or not isinstance(secret, str):
            raise _fail(path, f"{kf}.secret", "Required value: key.secret is a mandatory field")
        try:
            raw = base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(
                path, f"{kf}.secret", 'Invalid value: "REDACTED": secrets must be base64 encoded'
            ) from None
        if len(raw) not in sizes:
            raise _fail(
                path,
                f"{kf}.secret",
                f'Invalid value: "REDACTED": secret is not of the expected length, got '
                f"{len(raw)}, expected one of [{' '.join(map(str, sizes))}]",
            )
        if first is None:  # the first key of a provider writes; every key reads
            first = cls(name, raw)
    assert first is not None
    return first


def _keyed_providers(path: Path, field: str, item: Any) -> list[_Provider]:
    """Every key of one provider element (the first key first)."""
    kind = next(t for t in PROVIDER_TYPES if item.get(t) is not None)
    if kind == "identity":
        return [_Identity()]
    cls, _ = _KEYED[kind]
    return [cls(k["name"], base64.b64decode(k["secret"])) for k in item[kind]["keys"]]


def load_encryption_config(path: Path | str) -> EncryptionConfig:
    """Read and validate the file (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise EncryptionConfigError(
            f"error reading encryption provider configuration file {path}: {e.strerror}"
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise EncryptionConfigError(
            f"error while parsing file {path}: not valid JSON or YAML"
        ) from None
    if not isinstance(doc, dict):
        raise _fail(path, "<root>", "Invalid value: EncryptionConfiguration can't be nil")
    if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise EncryptionConfigError(
            f"error while parsing file {path}: no kind {doc.get('kind')!r} is registered for "
            f"version {doc.get('apiVersion')!r} (want kind {KIND}, apiVersion {API_VERSION})"
        )
    resources = doc.get("resources")
    if not resources or not isinstance(resources, list):
        raise _fail(
            path, "resources", "Required value: at least one resourceConfiguration is required"
        )
    entries: list[tuple[tuple[str, ...], ResourceTransformer]] = []
    claimed: set[str] = set()
    for i, rc in enumerate(resources):
        field = f"resources[{i}]"
        if not isinstance(rc, dict):
            raise _fail(path, field, "Invalid value: must be an object")
        names = rc.get("resources")
        if not names or not isinstance(names, list):
            raise _fail(
                path, f"{field}.resources", "Required value: at least one resource is required"
            )
        for k, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise _fail(path, f"{field}.resources[{k}]", "Required value: resource name")
            if name != name.lower():
                raise _fail(
                    path,
                    f"{field}.resources[{k}]",
                    f'Invalid value: "{name}": resource name must be lower case',
                )
            if name in claimed:
                raise _fail(
                    path,
                    f"{field}.resources[{k}]",
                    f'Duplicate value: "{name}": the resource is already listed',
                )
            claimed.add(name)
        providers = rc.get("providers")
        if not providers or not isinstance(providers, list):
            raise _fail(
                path, f"{field}.providers", "Required value: at least one provider is required"
            )
        chain: list[_Provider] = []
        for j, item in enumerate(providers):
            _provider(path, f"{field}.providers[{j}]", item)  # validates
            chain.extend(_keyed_providers(path, f"{field}.providers[{j}]", item))
        entries.append((tuple(names), ResourceTransformer(chain)))
    return EncryptionConfig(path, tuple(entries), hashlib.sha256(text).hexdigest())


def config_hash(path: Path) -> str:
    """``start-<sha256>`` of the file, the form K3s reports as a server's encryption hash."""
    return "start-" + hashlib.sha256(path.read_bytes()).hexdigest()


def generate_config() -> dict[str, Any]:
    """K3s's generated layout: secrets, one new 32-byte aescbc key, identity fallback."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        "kind": KIND,
        "apiVersion": API_VERSION,
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"aescbc": {"keys": [{"name": K3S_KEY_NAME, "secret": key}]}},
                    {"identity": {}},
                ],
            }
        ],
    }


def write_generated_config(path: Path) -> bool:
    """Write ``generate_config()`` to ``path`` (0600, created so) unless it exists.
    True when written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(generate_config(), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return True


# --- the datastore wrapper ---------------------------------------------------------------


class EncryptingBackend:
    """A ``Backend`` applying ``config`` to the keys of the resources it names (see the
    module docstring). Other keys pass through unchanged."""

    def __init__(self, backend: Any, config: EncryptionConfig, infos: Iterable[ResourceInfo]):
        self.inner = backend
        self.config = config
        by_prefix: dict[str, ResourceTransformer] = {}
        for info in infos:
            if not info.stored:
                continue
            t = config.transformer_for(info)
            if t is not None:  # storage resources may nest: services/specs, services/endpoints
                by_prefix.setdefault(f"{REGISTRY_PREFIX}{info.storage_resource}/", t)
        self._prefixes = sorted(by_prefix.items(), key=lambda item: -len(item[0]))
        self.stale: set[str] = set()
        self.unreadable: set[str] = set()

    def __getattr__(self, name: str) -> Any:  # start, close, current_revision, compact, ...
        return getattr(self.inner, name)

    def _transformer(self, key: str) -> ResourceTransformer | None:
        for prefix, transformer in self._prefixes:  # longest first
            if key.startswith(prefix):
                return transformer
        return None

    def _open(self, kv: KeyValue | None, track: bool = True) -> KeyValue | None:
        if kv is None or not kv.value:
            return kv
        t = self._transformer(kv.key)
        if t is None:
            return kv
        plain, stale = t.decrypt(kv.value, kv.key)
        if track:
            (self.stale.add if stale else self.stale.discard)(kv.key)
        return replace(kv, value=plain)

    def _seal(self, key: str, value: bytes) -> bytes:
        t = self._transformer(key)
        return value if t is None else t.encrypt(value)

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        rev, kv = await self.inner.get(key, revision)
        return rev, self._open(kv, track=revision == 0)

    async def list(
        self, prefix: str, revision: int = 0, limit: int = 0, start_after: str = ""
    ) -> ListResult:
        result = await self.inner.list(prefix, revision, limit, start_after)
        items = [kv for kv in map(self._readable, result.items) if kv is not None]
        return replace(result, items=items)

    def _readable(self, kv: KeyValue) -> KeyValue | None:
        """``kv`` decrypted, or None (logged) when no provider can read it: one unreadable
        object must not keep every watch cache from loading. ``get`` still answers 500."""
        try:
            return self._open(kv)
        except TransformError as e:
            self._unreadable(kv.key, e)
            return None

    def _unreadable(self, key: str, err: TransformError) -> None:
        if key not in self.unreadable:
            self.unreadable.add(key)
            log.error("%s; the object is left out of lists and watches until it is readable", err)

    async def create(self, key: str, value: bytes, lease: int = 0) -> int:
        revision = await self.inner.create(key, self._seal(key, value), lease)
        self.stale.discard(key)
        return revision

    async def update(
        self, key: str, value: bytes, expected_revision: int, lease: int = 0
    ) -> KeyValue:
        try:
            kv = await self.inner.update(key, self._seal(key, value), expected_revision, lease)
        except ConflictError as e:
            raise ConflictError(key, expected_revision, self._open(e.current)) from None
        self.stale.discard(key)
        return replace(kv, value=value)

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        try:
            kv = await self.inner.delete(key, expected_revision)
        except ConflictError as e:
            raise ConflictError(key, expected_revision, self._open(e.current)) from None
        self.stale.discard(key)
        return self._open(kv, track=False)  # type: ignore[return-value]

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        inner = self.inner.watch(prefix, start_revision)
        try:
            async for batch in inner:
                out = self._open_batch(batch)
                if out:
                    yield out
        finally:  # closing this watch closes the datastore's (its watcher is released now)
            close = getattr(inner, "aclose", None)
            if close is not None:
                await close()

    def _open_batch(self, batch: list[Event]) -> list[Event]:
        """The batch decrypted; events no provider can read are left out (logged)."""
        out = []
        for ev in batch:
            key = ev.kv.key
            if not ev.kv.value:  # a delete
                self.stale.discard(key)
                self.unreadable.discard(key)
            try:
                kv = self._open(ev.kv)
            except TransformError as e:
                self._unreadable(key, e)
                continue
            self.unreadable.discard(key)
            try:
                prev = self._open(ev.prev_kv, track=False)
            except TransformError:
                prev = None  # the cache knows the old object already
            out.append(replace(ev, kv=kv, prev_kv=prev))
        return out


def is_stale(backend: Any, key: str) -> bool:
    """True when ``backend`` encrypts and the value last read for ``key`` was not written by
    its first provider: a no-op update must still be written (re-encrypting it)."""
    return isinstance(backend, EncryptingBackend) and key in backend.stale


def is_unreadable(backend: Any, key: str) -> bool:
    """True when ``backend`` left ``key`` out of lists and watches (no provider reads it): a
    get must ask the datastore (and answer 500) rather than say 404."""
    return isinstance(backend, EncryptingBackend) and key in backend.unreadable


def wrap_backend(
    backend: Any, config: EncryptionConfig | None, infos: Callable[[], Iterable[ResourceInfo]]
) -> Any:
    """``backend`` itself without a configuration, else an ``EncryptingBackend``."""
    return backend if config is None else EncryptingBackend(backend, config, infos())
