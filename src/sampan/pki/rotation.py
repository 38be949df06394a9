"""Certificate maintenance on disk, for ``sampan certificate``: inventory, leaf rotation, and
CA rotation with a cross-signed transition (K3s's ``certificate check|rotate|rotate-ca``).

* ``inventory(...)`` lists every certificate of the named services (and the CAs): file,
  subject and issuer CN, usages (K3s's ``CertSign``/``ServerAuth``/``ClientAuth``), expiry,
  time left, status (``OK``; ``WARNING`` within ``LEAF_RENEW_BEFORE_DAYS``; ``EXPIRED``;
  ``NOT YET VALID``).
* ``rotate_services(...)`` copies the server TLS directory (and the agent's files) to a
  ``tls-<unix time>`` backup, then deletes the services' leaf certificates and keys: the next
  start issues new ones (CAs and the service-account key are never touched). The server must
  be stopped, as K3s says: a running one keeps serving the old files until restarted.
* ``rotate_ca(...)`` installs new CA material from a directory (``DIR/tls`` or ``DIR``, files
  named as under the server's TLS directory). Each CA bundle given is checked as K3s does: its
  key matches its first certificate; unless ``force``, that first certificate is not a lone
  self-signed one and chains (through the bundle's other certificates) to a root of the
  current bundle, so everything already issued keeps verifying. The old TLS directory is
  backed up, then each bundle (all its certificates: the new CA first, its issuers, the old
  roots) and the new CA's key are written. At the next start every leaf not signed by the new
  CA is re-issued by it (``sampan.pki.cluster``) and the API serving certificate is sent with
  the bundle as its chain, so a client that only trusts the old root still verifies it.
* ``generate_cross_signed_cas(...)`` writes such material for the current CAs (what K3s's
  ``contrib/util/rotate-default-ca-certs.sh`` does, without its extra intermediate): for each
  CA a new self-signed CA and the same CA (subject and key) cross-signed by the old CA's key;
  the bundle is ``[new CA, new CA cross-signed, old CA]``.
* ``bundle_endorsed_by(...)``: how an agent whose token pins the old CA's hash accepts the
  new bundle when it joins again (the old CA is in it and signed the new one).

Transition, and its limits: trust bundles hold old and new CAs, so certificates issued by
either verify wherever a bundle is the trust (the API server for client certificates, and for
kubelets; kubectl and components with the new kubeconfigs). Sampan's own CAs were created with
``pathLenConstraint=0``, so a verifier holding only the old CA (an agent not restarted yet)
cannot follow the cross-signed link to a leaf of the new CA: restart servers, then agents, as
K3s documents; an agent's restart joins again with its old token (``bundle_endorsed_by``) and
gets the new bundle and new certificates.

Not done (say so where asked): the service-account signing key is never rotated (the API
server verifies tokens with one key); nothing is stored in the datastore (one server owns its
TLS directory; with several servers, copy the directory to each).

Everything here blocks (file I/O, key generation).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from sampan.pki.certs import (
    CA_VALIDITY_DAYS,
    PrivateKey,
    cert_to_pem,
    generate_ec_key,
    is_issued_by,
    key_to_pem,
    load_private_key,
)
from sampan.pki.cluster import LEAF_RENEW_BEFORE_DAYS
from sampan.pki.files import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write

__all__ = [
    "AGENT_SERVICES",
    "CA_NAMES",
    "SERVER_SERVICES",
    "CertificateInfo",
    "RotationError",
    "bundle_endorsed_by",
    "default_services",
    "generate_cross_signed_cas",
    "inventory",
    "rotate_ca",
    "rotate_services",
    "service_files",
]

CA_NAMES = ("server-ca", "client-ca", "kubelet-serving-ca", "request-header-ca")
"""The CAs under the server's TLS directory (``<name>.crt`` bundle, ``<name>.key``)."""

SERVER_SERVICES: Mapping[str, tuple[str, ...]] = {
    "admin": ("client-admin",),
    "api-server": ("serving-kube-apiserver", "client-kube-apiserver-kubelet-client"),
    "controller-manager": ("client-controllers", "client-node-labels"),
    "scheduler": ("client-scheduler",),
    "sampan-controller": ("client-addons", "client-metrics-server", "metrics-server"),
    "auth-proxy": ("client-auth-proxy",),
}
"""Service -> file stems (``.crt`` + ``.key``) under ``<data-dir>/server/tls``."""

AGENT_SERVICES: Mapping[str, tuple[str, ...]] = {
    "kubelet": ("kubelet.kubeconfig", "serving-kubelet.crt", "serving-kubelet.key"),
    "kube-proxy": ("kube-proxy.kubeconfig",),
    "sampan-agent": ("agent.kubeconfig", "ingress.kubeconfig"),
}
"""Service -> files under ``<data-dir>/agent/etc`` (written again at every join)."""

STATUS_OK = "OK"
STATUS_WARNING = "WARNING"
STATUS_EXPIRED = "EXPIRED"
STATUS_NOT_YET_VALID = "NOT YET VALID"
_CROSS_SIGNED_ROOT_DAYS = 7300


class RotationError(Exception):
    """The request cannot be carried out; the message says why (one line)."""


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate of one file (a bundle gives one per certificate)."""

    service: str
    path: Path
    subject: str
    issuer: str
    usages: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    status: str

    def residual(self, now: dt.datetime) -> dt.timedelta:
        return self.not_after - now


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _usages(cert: x509.Certificate) -> tuple[str, ...]:
    usages: list[str] = []
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            usages.append("CertSign")
    except x509.ExtensionNotFound:
        pass
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        extended = x509.ExtendedKeyUsage([])
    for oid in extended:
        if oid == ExtendedKeyUsageOID.SERVER_AUTH:
            usages.append("ServerAuth")
        elif oid == ExtendedKeyUsageOID.CLIENT_AUTH:
            usages.append("ClientAuth")
    return tuple(usages) or ("Unknown",)


def _status(cert: x509.Certificate, now: dt.datetime) -> str:
    if now < cert.not_valid_before_utc:
        return STATUS_NOT_YET_VALID
    if now > cert.not_valid_after_utc:
        return STATUS_EXPIRED
    if now + dt.timedelta(days=LEAF_RENEW_BEFORE_DAYS) > cert.not_valid_after_utc:
        return STATUS_WARNING
    return STATUS_OK


def _certificates_in(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file, or the client certificate of a kubeconfig."""
    data = path.read_bytes()
    if path.suffix == ".kubeconfig":
        import base64

        import yaml  # JSON is YAML too: both the server's and the agent's kubeconfigs

        try:
            doc = yaml.safe_load(data) or {}
            data = base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
        except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
            return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def service_files(data_dir: Path, services: Sequence[str]) -> dict[str, list[Path]]:
    """Service -> the files it owns (existing or not); ``RotationError`` for an unknown one."""
    tls, etc = data_dir / "server" / "tls", data_dir / "agent" / "etc"
    files: dict[str, list[Path]] = {}
    for service in services:
        if service in SERVER_SERVICES:
            files[service] = [
                tls / f"{stem}{suffix}"
                for stem in SERVER_SERVICES[service]
                for suffix in (".crt", ".key")
            ]
        elif service in AGENT_SERVICES:
            files[service] = [etc / name for name in AGENT_SERVICES[service]]
        else:
            known = ", ".join([*SERVER_SERVICES, *AGENT_SERVICES])
            raise RotationError(f"service {service} is not recognized (known: {known})")
    return files


def default_services(data_dir: Path) -> list[str]:
    """All services on a server (its data dir has ``server/``), else the agent's."""
    if (data_dir / "server").is_dir():
        return [*SERVER_SERVICES, *AGENT_SERVICES]
    return list(AGENT_SERVICES)


def inventory(
    data_dir: Path, services: Sequence[str], *, include_cas: bool = True
) -> list[CertificateInfo]:
    """The certificates of ``services`` (files that exist), then the CAs when asked."""
    now = dt.datetime.now(dt.UTC)
    found: list[CertificateInfo] = []
    entries = [
        (service, path)
        for service, paths in service_files(data_dir, services).items()
        for path in paths
        if path.suffix in (".crt", ".kubeconfig")
    ]
    if include_cas and (data_dir / "server" / "tls").is_dir():
        tls = data_dir / "server" / "tls"
        entries += [("certificate-authority", tls / f"{name}.crt") for name in CA_NAMES]
    for service, path in entries:
        if not path.exists():
            continue
        for cert in _certificates_in(path):
            found.append(
                CertificateInfo(
                    service=service,
                    path=path,
                    subject=_cn(cert.subject),
                    issuer=_cn(cert.issuer),
                    usages=_usages(cert),
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    status=_status(cert, now),
                )
            )
    return found


def _backup(data_dir: Path, extra_files: Iterable[Path]) -> Path:
    """Copy ``server/tls`` (when present) and ``extra_files`` to a ``tls-<unix time>`` dir
    (mode 0700) beside it (under ``agent/`` on an agent); returns the backup's path."""
    stamp = f"tls-{int(time.time())}"
    tls = data_dir / "server" / "tls"
    if tls.is_dir():
        backup = data_dir / "server" / stamp
        shutil.copytree(tls, backup, symlinks=True)
    else:
        backup = data_dir / "agent" / stamp
        backup.mkdir(parents=True, mode=0o700)
    backup.chmod(0o700)
    for path in extra_files:
        if path.exists() and not path.is_relative_to(tls):
            shutil.copy2(path, backup / path.name)
    return backup


def rotate_services(data_dir: Path, services: Sequence[str]) -> tuple[Path, list[Path]]:
    """Back up, then delete the leaf files of ``services``; returns (backup, deleted)."""
    files = service_files(data_dir, services)
    all_files = [path for paths in files.values() for path in paths]
    backup = _backup(data_dir, all_files)
    deleted = []
    for path in all_files:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        deleted.append(path)
    return backup, deleted


# --- CA rotation ------------------------------------------------------------------------------


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and is_issued_by(cert, cert)


def _load_bundle(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise RotationError(f"{path}: not a PEM certificate bundle ({exc})") from None
    return certs


def _load_first_key(path: Path) -> tuple[PrivateKey, bytes]:
    """The first private key of a PEM file (K3s appends its root key after the CA's)."""
    text = path.read_bytes()
    end = text.find(b"-----END ")
    if end < 0:
        raise RotationError(f"{path}: no PEM private key")
    end = text.find(b"-----", end + 9) + 5
    first = text[:end].strip() + b"\n"
    try:
        return load_private_key(first), first
    except ValueError as exc:
        raise RotationError(f"{path}: cannot load the private key ({exc})") from None


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _chains_to(
    cert: x509.Certificate, roots: Sequence[x509.Certificate], links: Sequence[x509.Certificate]
) -> bool:
    """Whether ``cert`` is signed by one of ``roots``, directly or through ``links``."""
    frontier, seen = [cert], {cert.fingerprint(hashes.SHA256())}
    while frontier:
        current = frontier.pop()
        if any(is_issued_by(current, root) for root in roots):
            return True
        for link in links:
            digest = link.fingerprint(hashes.SHA256())
            if digest not in seen and is_issued_by(current, link):
                seen.add(digest)
                frontier.append(link)
    return False


def _validate_ca(old: list[x509.Certificate], new: list[x509.Certificate]) -> str | None:
    """Why the new bundle would break what the old one issued, or None."""
    if len(new) == 1:
        return "new CA is self-signed"
    roots = [c for c in old if _is_self_signed(c)] or old[-1:]
    links = [c for c in old if c not in roots] + new[1:]
    if not _chains_to(new[0], roots, links):
        return "new CA cert cannot be verified using old CA chain"
    return None


def rotate_ca(data_dir: Path, source: Path, *, force: bool = False) -> tuple[Path, list[str]]:
    """Install the CA bundles found under ``source`` (see the module docstring); returns
    (backup dir, names of the CAs replaced). ``RotationError`` lists every problem."""
    tls = data_dir / "server" / "tls"
    if not tls.is_dir():
        raise RotationError(f"{tls} does not exist: rotate-ca runs on a server")
    src = source / "tls" if (source / "tls").is_dir() else source
    if not src.is_dir():
        raise RotationError(f"--path {source}: not a directory")
    planned: list[tuple[str, list[x509.Certificate], bytes, bytes]] = []
    problems: list[str] = []
    for name in CA_NAMES:
        cert_path, key_path = src / f"{name}.crt", src / f"{name}.key"
        if not cert_path.exists():
            continue
        if not key_path.exists():
            problems.append(f"{name}: {key_path.name} is missing")
            continue
        try:
            new = _load_bundle(cert_path)
            key, key_pem = _load_first_key(key_path)
            old = _load_bundle(tls / f"{name}.crt")
        except (RotationError, OSError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        if not new:
            problems.append(f"{name}: {cert_path} holds no certificate")
            continue
        if not _same_key(new[0], key):
            problems.append(f"{name}: new CA cert and key do not match")
            continue
        basic = new[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        if not basic.ca:
            problems.append(f"{name}: the first certificate of {cert_path.name} is not a CA")
            continue
        reason = _validate_ca(old, new)
        if reason is not None and not force:
            problems.append(f"{name}: {reason}")
            continue
        bundle = b"".join(cert_to_pem(c) for c in new)
        planned.append((name, new, bundle, key_pem))
    if problems:
        raise RotationError(
            "failed to validate new CA certificates and keys: " + "; ".join(problems)
        )
    if not planned:
        names = ", ".join(f"{n}.crt" for n in CA_NAMES)
        raise RotationError(f"--path {source}: no CA to rotate (expected any of {names})")
    backup = _backup(data_dir, ())
    for name, _new, bundle, key_pem in planned:
        # Key before certificate (cluster.py's invariant: the certificate marks a full pair).
        atomic_write(tls / f"{name}.key", key_pem, mode=PRIVATE_FILE_MODE)
        atomic_write(tls / f"{name}.crt", bundle, mode=PUBLIC_FILE_MODE)
    return backup, [name for name, *_ in planned]


def _ca_certificate(
    subject: x509.Name,
    public_key: PrivateKey,
    issuer: x509.Certificate | None,
    signing_key: PrivateKey,
    days: int,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name = subject if issuer is None else issuer.subject
    not_after = now + dt.timedelta(days=days)
    if issuer is not None:
        not_after = min(not_after, issuer.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        .sign(signing_key, hashes.SHA256())
    )


def generate_cross_signed_cas(
    data_dir: Path, out_dir: Path, names: Sequence[str] = CA_NAMES
) -> list[str]:
    """Write new CA material for ``names`` under ``out_dir/tls`` (see the module docstring);
    returns the names written. The old CA's key is read from the server's TLS directory."""
    tls = data_dir / "server" / "tls"
    target = out_dir / "tls"
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)
    stamp = int(time.time())
    for name in names:
        cert_path, key_path = tls / f"{name}.crt", tls / f"{name}.key"
        if not cert_path.exists() or not key_path.exists():
            raise RotationError(f"current {name} CA cert or key does not exist; cannot continue")
        old_bundle = _load_bundle(cert_path)
        old_key, _ = _load_first_key(key_path)
        old_ca = old_bundle[0]  # the CA whose key we hold
        key = generate_ec_key()
        subject = x509.Name(
            [x509.NameAttribute(x509.NameOID.COMMON_NAME, f"sampan-{name}@{stamp}")]
        )
        new = _ca_certificate(subject, key, None, key, CA_VALIDITY_DAYS)
        cross = _ca_certificate(subject, key, old_ca, old_key, CA_VALIDITY_DAYS)
        bundle = [new, cross, *(c for c in old_bundle if c not in (new, cross))]
        atomic_write(target / f"{name}.key", key_to_pem(key), mode=PRIVATE_FILE_MODE)
        atomic_write(
            target / f"{name}.crt", b"".join(cert_to_pem(c) for c in bundle), mode=PUBLIC_FILE_MODE
        )
    return list(names)


def bundle_endorsed_by(bundle_pem: bytes, ca_hash: str) -> bool:
    """Whether a CA bundle is trusted by a holder of the token CA hash ``ca_hash`` (sha256
    hex of the CA file it pinned): the file itself, or a bundle after ``rotate_ca`` that
    still holds that CA (byte for byte as ``cert_to_pem`` wrote it) and whose first CA the
    pinned CA's key signed, directly or through the bundle's cross-signed certificates."""
    import hashlib

    if hashlib.sha256(bundle_pem).hexdigest() == ca_hash:
        return True
    try:
        certs = x509.load_pem_x509_certificates(bundle_pem)
    except ValueError:
        return False
    pinned = [c for c in certs if hashlib.sha256(cert_to_pem(c)).hexdigest() == ca_hash]
    return bool(pinned and certs) and _chains_to(certs[0], pinned, certs[1:])
