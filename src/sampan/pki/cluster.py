"""The cluster's TLS identity: CAs, the API serving certificate, service-account keys, admin.

Files under ``tls_dir`` (mode 0700; private keys 0600, certificates and public keys 0644)::

    server-ca.crt / server-ca.key                   signs the API server's serving certificate
    client-ca.crt / client-ca.key                   signs client certificates (users, nodes)
    kubelet-serving-ca.crt / kubelet-serving-ca.key signs kubelet serving certificates only
    serving-kube-apiserver.crt / .key               the API server's serving certificate
    sa.key / sa.pub                                 RSA key pair signing service-account tokens
    client-admin.crt / client-admin.key             system:admin in system:masters
    client-<name>.crt / client-<name>.key           other client identities (components)
    request-header-ca.crt / request-header-ca.key   the front-proxy CA (requestheader-client-ca)
    client-auth-proxy.crt / client-auth-proxy.key   system:auth-proxy, signed by it: what the
                                                    aggregator presents to extension API servers

Invariants:

* The front-proxy (request-header) CA is a fourth, separate CA: a certificate it signs lets
  its bearer assert any user in X-Remote-* headers, so it signs the aggregator's one client
  certificate and nothing else, and no user certificate can pass for it.
* Three CAs, never mixed (as kubeadm keeps separate CAs): what clients of the API trust
  (server CA) never signs a certificate a node receives, so a joined node's serving
  certificate can never pass as the API server; the API server trusts only the kubelet CA
  when it dials a kubelet. A data dir from before the kubelet CA existed gets one at the next
  start (the nodes' serving certificates are re-issued by it when their agents join again).
* CAs are created once and never replaced automatically: every client trusts them. A CA
  certificate without its key is an error (``PKIError``), never a reason to start over.
* For every pair the key is written before the certificate, each file atomically, so the
  certificate's presence marks a complete pair; a crash in between is repaired at the next
  start (a CA whose certificate is missing is regenerated, a leaf whose key does not match its
  certificate is re-issued).
* The serving certificate is re-issued (by the same CA) when it lacks a wanted SAN, expires
  within ``LEAF_RENEW_BEFORE_DAYS``, or was not signed by the current server CA.

Everything here blocks (key generation, file I/O); the API server calls it in a thread.
One process owns a ``tls_dir`` at a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sampan.pki.certs import (
    CA_VALIDITY_DAYS,
    LEAF_VALIDITY_DAYS,
    CertificateNames,
    PrivateKey,
    cert_names,
    cert_to_pem,
    create_ca,
    generate_rsa_key,
    is_issued_by,
    issue_leaf,
    key_to_pem,
    load_cert,
    load_private_key,
    public_key_to_pem,
    remaining_validity,
    split_names,
)
from sampan.pki.files import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    atomic_write,
    ensure_private_dir,
)
from sampan.pki.kubeconfig import write_kubeconfig
from sampan.pki.tls import server_ssl_context

__all__ = [
    "ADMIN_GROUP",
    "ADMIN_USER",
    "AUTHORITY_FILES",
    "AUTH_PROXY_USER",
    "DEFAULT_SERVICE_IP",
    "LEAF_RENEW_BEFORE_DAYS",
    "ClusterPKI",
    "PKIError",
    "api_server_names",
    "ensure_admin_kubeconfig",
    "ensure_authorities",
    "ensure_client_certificate",
    "ensure_client_kubeconfig",
    "ensure_cluster_pki",
    "issue_client_certificate",
    "issue_kubelet_serving_certificate",
    "issue_listener_serving_certificate",
]

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_IP = "10.43.0.1"
LEAF_RENEW_BEFORE_DAYS = 90
ADMIN_USER = "system:admin"
ADMIN_GROUP = "system:masters"
SERVING_COMMON_NAME = "kube-apiserver"
# Names every API serving certificate carries, besides the node's own names and IPs.
# ::1 is included: it is a loopback address, so it widens nothing an attacker could use.
_LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
_SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

_SERVER_CA = "server-ca"
_CLIENT_CA = "client-ca"
_KUBELET_CA = "kubelet-serving-ca"
_REQUEST_HEADER_CA = "request-header-ca"
_AUTH_PROXY = "client-auth-proxy"
AUTH_PROXY_USER = "system:auth-proxy"
"""The front-proxy client's CN (K3s's choice) and the one requestheader-allowed-names entry."""
_SERVING = "serving-kube-apiserver"
_ADMIN_NAME = "admin"
_SA_KEY = "sa.key"
_SA_PUB = "sa.pub"


class PKIError(Exception):
    """The files under tls_dir are inconsistent in a way Sampan must not repair by itself."""


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of the cluster's TLS material plus the public parts, loaded.

    Private keys are never held here; helpers read them from disk when they need them.
    """

    tls_dir: Path
    server_ca_cert_path: Path
    server_ca_key_path: Path
    client_ca_cert_path: Path
    client_ca_key_path: Path
    serving_cert_path: Path
    serving_key_path: Path
    sa_key_path: Path
    sa_pub_path: Path
    kubelet_ca_cert_path: Path
    kubelet_ca_key_path: Path
    request_header_ca_cert_path: Path
    auth_proxy_cert_path: Path
    auth_proxy_key_path: Path
    ca_pem: bytes = field(repr=False)
    client_ca_pem: bytes = field(repr=False)
    kubelet_ca_pem: bytes = field(repr=False)
    request_header_ca_pem: bytes = field(repr=False)
    sa_public_key_pem: bytes = field(repr=False)
    serving_names: CertificateNames = field(
        default_factory=lambda: CertificateNames(frozenset(), frozenset())
    )
    """The subject alternative names of the API serving certificate (what no node may claim)."""

    @property
    def admin_cert_path(self) -> Path:
        return self.tls_dir / f"client-{_ADMIN_NAME}.crt"

    @property
    def admin_key_path(self) -> Path:
        return self.tls_dir / f"client-{_ADMIN_NAME}.key"

    def ssl_server_context(self) -> ssl.SSLContext:
        """Server-side TLS for the API: serving cert; client certs optional but, if sent,
        verified against the client CA; versions and suites of ``sampan.pki.tls``."""
        return server_ssl_context(
            self.serving_cert_path,
            self.serving_key_path,
            # The TLS layer accepts both; authentication tells them apart by issuer.
            client_ca_pem=self.client_ca_pem + self.request_header_ca_pem,
        )

    def ca_hash(self) -> str:
        """SHA-256 hex of the server CA certificate file (the K10<hash>::... token part)."""
        return hashlib.sha256(self.ca_pem).hexdigest()

    def sa_private_key_pem(self) -> bytes:
        """The service-account signing key (blocking read)."""
        return self.sa_key_path.read_bytes()


def api_server_names(
    *,
    hostname: str,
    node_ips: Sequence[str],
    tls_sans: Sequence[str],
    service_ip: str = DEFAULT_SERVICE_IP,
) -> CertificateNames:
    """Every SAN the API serving certificate must carry."""
    return split_names(
        [hostname, *node_ips, *_LOOPBACK_NAMES, *_SERVICE_NAMES, service_ip, *tls_sans]
    )


# --- file helpers -------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=PRIVATE_FILE_MODE)


def _write_public(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=PUBLIC_FILE_MODE)


def _tighten(path: Path) -> None:
    """Make an existing private file 0600 (an operator may have copied it in with 0644)."""
    if path.exists() and (path.stat().st_mode & 0o777) != PRIVATE_FILE_MODE:
        logger.warning("tightening mode of %s to 0600", path)
        path.chmod(PRIVATE_FILE_MODE)


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey] | None:
    """The pair if both files exist and match, else None (caller re-issues)."""
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        cert = load_cert(cert_path.read_bytes())
        key = load_private_key(key_path.read_bytes())
    except ValueError as exc:
        logger.warning("cannot load %s / %s (%s); re-issuing", cert_path, key_path, exc)
        return None
    if not _same_key(cert, key):
        logger.warning("%s does not match %s; re-issuing", key_path, cert_path)
        return None
    return cert, key


def _ensure_ca(tls_dir: Path, stem: str, common_name_prefix: str) -> tuple[x509.Certificate, Path]:
    cert_path, key_path = tls_dir / f"{stem}.crt", tls_dir / f"{stem}.key"
    if cert_path.exists():
        if not key_path.exists():
            raise PKIError(f"{cert_path} exists but its key {key_path} is missing")
        try:
            cert = load_cert(cert_path.read_bytes())
            key = load_private_key(key_path.read_bytes())
        except ValueError as exc:
            raise PKIError(f"cannot load CA {cert_path}: {exc}") from exc
        if not _same_key(cert, key):
            raise PKIError(f"CA key {key_path} does not match {cert_path}")
        _tighten(key_path)
        left = remaining_validity(cert)
        if left < dt.timedelta(days=LEAF_RENEW_BEFORE_DAYS):
            logger.warning("CA %s expires in %s; rotate it by hand", cert_path, left)
        return cert, key_path
    common_name = f"{common_name_prefix}@{int(time.time())}"
    cert, key = create_ca(common_name, valid_days=CA_VALIDITY_DAYS)
    _write_private(key_path, key_to_pem(key))
    _write_public(cert_path, cert_to_pem(cert))
    logger.info("generated CA %s (%s)", cert_path, common_name)
    return cert, key_path


def _ensure_sa_keys(tls_dir: Path) -> tuple[Path, Path, bytes]:
    key_path, pub_path = tls_dir / _SA_KEY, tls_dir / _SA_PUB
    if key_path.exists():
        try:
            key = load_private_key(key_path.read_bytes())
        except ValueError as exc:
            raise PKIError(f"cannot load service-account key {key_path}: {exc}") from exc
        _tighten(key_path)
        public_pem = public_key_to_pem(key)
        if not pub_path.exists() or pub_path.read_bytes() != public_pem:
            _write_public(pub_path, public_pem)
        return key_path, pub_path, public_pem
    # RSA (RS256) rather than ECDSA: it is what every token consumer expects of
    # Kubernetes service-account tokens (OIDC discovery advertises RS256).
    key = generate_rsa_key()
    public_pem = public_key_to_pem(key)
    _write_private(key_path, key_to_pem(key))
    _write_public(pub_path, public_pem)
    logger.info("generated service-account signing key %s", key_path)
    return key_path, pub_path, public_pem


def _needs_leaf(
    pair: tuple[x509.Certificate, PrivateKey] | None,
    ca_cert: x509.Certificate,
    wanted: CertificateNames | None,
) -> str | None:
    """Why the leaf must be (re)issued, or None if it is fine."""
    if pair is None:
        return "missing"
    cert, _ = pair
    if not is_issued_by(cert, ca_cert):
        return "not signed by the current CA"
    left = remaining_validity(cert)
    if left < dt.timedelta(days=LEAF_RENEW_BEFORE_DAYS):
        expiry = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        if left <= dt.timedelta(0):
            return f"expired at {expiry}"
        return f"expires within {LEAF_RENEW_BEFORE_DAYS} days (at {expiry}, {left.days} days left)"
    if wanted is not None and not cert_names(cert).covers(wanted):
        return "missing subject alternative names"
    return None


def _log_issued(cert_path: Path, what: str, reason: str) -> None:
    """One line per certificate written: issued (it was missing) or renewed, and why."""
    if reason == "missing":
        logger.info("issued %s %s", what, cert_path)
    else:
        logger.info("renewed %s %s: %s", what, cert_path, reason)


def _load_ca_key(key_path: Path) -> PrivateKey:
    return load_private_key(key_path.read_bytes())


AUTHORITY_FILES = (
    *(
        f"{ca}.{ext}"
        for ca in (_SERVER_CA, _CLIENT_CA, _KUBELET_CA, _REQUEST_HEADER_CA)
        for ext in ("crt", "key")
    ),
    _SA_KEY,
    _SA_PUB,
)
"""The files under tls_dir every server of one cluster shares (the CAs and the service-account
key pair); everything else there is issued from them per server."""


def ensure_authorities(tls_dir: Path) -> None:
    """Create the CAs and the service-account key pair under ``tls_dir`` when missing (the
    ``AUTHORITY_FILES``), reuse them when present. Blocking; ``PKIError`` on inconsistent CA
    files."""
    tls_dir = Path(tls_dir)
    ensure_private_dir(tls_dir)
    _ensure_ca(tls_dir, _SERVER_CA, "sampan-server-ca")
    _ensure_ca(tls_dir, _CLIENT_CA, "sampan-client-ca")
    _ensure_ca(tls_dir, _KUBELET_CA, "sampan-kubelet-serving-ca")
    _ensure_ca(tls_dir, _REQUEST_HEADER_CA, "sampan-request-header-ca")
    _ensure_sa_keys(tls_dir)


def ensure_cluster_pki(
    tls_dir: Path,
    *,
    hostname: str,
    node_ips: Sequence[str],
    tls_sans: Sequence[str],
    service_ip: str = DEFAULT_SERVICE_IP,
) -> ClusterPKI:
    """Create what is missing under ``tls_dir``, reuse what is there, renew the serving
    certificate when needed. Blocking; raises ``PKIError`` on inconsistent CA files."""
    tls_dir = Path(tls_dir)
    ensure_authorities(tls_dir)
    server_ca, server_ca_key_path = _ensure_ca(tls_dir, _SERVER_CA, "sampan-server-ca")
    client_ca_key_path = tls_dir / f"{_CLIENT_CA}.key"
    kubelet_ca_key_path = tls_dir / f"{_KUBELET_CA}.key"
    request_header_ca, request_header_ca_key_path = _ensure_ca(
        tls_dir, _REQUEST_HEADER_CA, "sampan-request-header-ca"
    )
    auth_proxy_cert_path, auth_proxy_key_path = _ensure_auth_proxy_certificate(
        tls_dir, request_header_ca, request_header_ca_key_path
    )
    sa_key_path, sa_pub_path, sa_public_pem = _ensure_sa_keys(tls_dir)

    wanted = api_server_names(
        hostname=hostname, node_ips=node_ips, tls_sans=tls_sans, service_ip=service_ip
    )
    serving_cert_path, serving_key_path = tls_dir / f"{_SERVING}.crt", tls_dir / f"{_SERVING}.key"
    pair = _load_pair(serving_cert_path, serving_key_path)
    reason = _needs_leaf(pair, server_ca, wanted)
    serving_names = cert_names(pair[0]) if pair is not None else wanted
    if reason is not None:
        serving_names = wanted
        cert, key = issue_leaf(
            server_ca,
            _load_ca_key(server_ca_key_path),
            common_name=SERVING_COMMON_NAME,
            names=wanted,
            server_auth=True,
            valid_days=LEAF_VALIDITY_DAYS,
        )
        _write_private(serving_key_path, key_to_pem(key))
        _write_public(serving_cert_path, cert_to_pem(cert))
        _log_issued(serving_cert_path, "API serving certificate", reason)
    else:
        _tighten(serving_key_path)

    return ClusterPKI(
        tls_dir=tls_dir,
        server_ca_cert_path=tls_dir / f"{_SERVER_CA}.crt",
        server_ca_key_path=server_ca_key_path,
        client_ca_cert_path=tls_dir / f"{_CLIENT_CA}.crt",
        client_ca_key_path=client_ca_key_path,
        serving_cert_path=serving_cert_path,
        serving_key_path=serving_key_path,
        sa_key_path=sa_key_path,
        sa_pub_path=sa_pub_path,
        kubelet_ca_cert_path=tls_dir / f"{_KUBELET_CA}.crt",
        kubelet_ca_key_path=kubelet_ca_key_path,
        request_header_ca_cert_path=tls_dir / f"{_REQUEST_HEADER_CA}.crt",
        auth_proxy_cert_path=auth_proxy_cert_path,
        auth_proxy_key_path=auth_proxy_key_path,
        ca_pem=(tls_dir / f"{_SERVER_CA}.crt").read_bytes(),
        client_ca_pem=(tls_dir / f"{_CLIENT_CA}.crt").read_bytes(),
        kubelet_ca_pem=(tls_dir / f"{_KUBELET_CA}.crt").read_bytes(),
        request_header_ca_pem=(tls_dir / f"{_REQUEST_HEADER_CA}.crt").read_bytes(),
        sa_public_key_pem=sa_public_pem,
        serving_names=serving_names,
    )


def _ensure_auth_proxy_certificate(
    tls_dir: Path, ca_cert: x509.Certificate, ca_key_path: Path
) -> tuple[Path, Path]:
    """The front-proxy client certificate (CN system:auth-proxy, clientAuth), both files
    0600; re-issued when missing, expiring or not signed by the current request-header CA."""
    cert_path, key_path = tls_dir / f"{_AUTH_PROXY}.crt", tls_dir / f"{_AUTH_PROXY}.key"
    pair = _load_pair(cert_path, key_path)
    reason = _needs_leaf(pair, ca_cert, None)
    if reason is None and pair is not None and not _subject_is(pair[0], AUTH_PROXY_USER, ()):
        reason = "subject changed"
    if reason is None:
        _tighten(key_path)
        return cert_path, key_path
    cert, key = issue_leaf(
        ca_cert,
        _load_ca_key(ca_key_path),
        common_name=AUTH_PROXY_USER,
        client_auth=True,
        valid_days=LEAF_VALIDITY_DAYS,
    )
    _write_private(key_path, key_to_pem(key))
    _write_private(cert_path, cert_to_pem(cert))
    _log_issued(cert_path, "front-proxy client certificate", reason)
    return cert_path, key_path


def issue_client_certificate(
    pki: ClusterPKI,
    common_name: str,
    organizations: Sequence[str] = (),
    *,
    days: int = LEAF_VALIDITY_DAYS,
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) for user ``common_name`` in groups ``organizations`` (clientAuth),
    signed by the client CA. Blocking."""
    ca_cert = load_cert(pki.client_ca_pem)
    cert, key = issue_leaf(
        ca_cert,
        _load_ca_key(pki.client_ca_key_path),
        common_name=common_name,
        organizations=organizations,
        client_auth=True,
        valid_days=days,
    )
    return cert_to_pem(cert), key_to_pem(key)


def issue_kubelet_serving_certificate(
    pki: ClusterPKI,
    names: Sequence[str],
    ips: Sequence[str],
    *,
    days: int = LEAF_VALIDITY_DAYS,
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) with serverAuth for DNS ``names`` and ``ips``, signed by the
    kubelet serving CA — never by the server CA that API clients trust. The CN is the first
    name (or first IP). Which names a node may have is the caller's business (the join
    checks them). Blocking."""
    all_names = split_names([*names, *ips])
    if not (all_names.dns or all_names.ips):
        raise ValueError("a serving certificate needs at least one name or IP")
    common_name = next(iter(names), None) or str(next(iter(ips)))
    ca_cert = load_cert(pki.kubelet_ca_pem)
    cert, key = issue_leaf(
        ca_cert,
        _load_ca_key(pki.kubelet_ca_key_path),
        common_name=common_name,
        names=all_names,
        server_auth=True,
        valid_days=days,
    )
    return cert_to_pem(cert), key_to_pem(key)


def issue_listener_serving_certificate(pki: ClusterPKI, name: str) -> tuple[Path, Path]:
    """Issue ``<name>-serving.crt``/``.key`` in ``tls_dir`` (both 0600, key written first):
    CN ``sampan-<name>``, serverAuth, for the API server's own names (``serving_names``),
    signed by the server CA, so a client that trusts the cluster's API trusts this listener
    too. Issued anew at every call (the HTTPS listeners beside the API server, dashboard and
    manager, call it at each start). Answers ``(cert_path, key_path)``. Blocking."""
    _check_client_name(name)
    cert, key = issue_leaf(
        load_cert(pki.ca_pem),
        _load_ca_key(pki.server_ca_key_path),
        common_name=f"sampan-{name}",
        names=pki.serving_names,
        server_auth=True,
    )
    cert_path = pki.tls_dir / f"{name}-serving.crt"
    key_path = pki.tls_dir / f"{name}-serving.key"
    _write_private(key_path, key_to_pem(key))
    _write_private(cert_path, cert_to_pem(cert))
    return cert_path, key_path


def _subject_is(cert: x509.Certificate, common_name: str, organizations: Sequence[str]) -> bool:
    subject = cert.subject
    common_names = [a.value for a in subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    groups = [a.value for a in subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    return common_names == [common_name] and groups == list(organizations)


def _check_client_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ValueError(f"invalid credential file name {name!r}")


def ensure_client_certificate(
    pki: ClusterPKI, name: str, common_name: str, organizations: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Keep a client certificate for ``common_name``/``organizations`` under tls_dir as
    ``client-<name>.crt``/``.key`` (both 0600): reused while it is signed by the current
    client CA, names that subject and has more than ``LEAF_RENEW_BEFORE_DAYS`` left;
    otherwise issued again. Returns (cert path, key path). Blocking."""
    _check_client_name(name)
    cert_path, key_path = pki.tls_dir / f"client-{name}.crt", pki.tls_dir / f"client-{name}.key"
    pair = _load_pair(cert_path, key_path)
    reason = _needs_leaf(pair, load_cert(pki.client_ca_pem), None)
    if reason is None and pair is not None and not _subject_is(pair[0], common_name, organizations):
        reason = "subject changed"
    if reason is None:
        _tighten(key_path)
        return cert_path, key_path
    cert_pem, key_pem = issue_client_certificate(pki, common_name, organizations)
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert_pem)
    _log_issued(cert_path, f"client certificate for {common_name}", reason)
    return cert_path, key_path


def ensure_client_kubeconfig(
    pki: ClusterPKI,
    *,
    name: str,
    common_name: str,
    organizations: Sequence[str] = (),
    path: Path,
    server_url: str,
    mode: int = PRIVATE_FILE_MODE,
) -> None:
    """``ensure_client_certificate`` then (re)write a kubeconfig for it at ``path`` — what
    each in-process component (scheduler, controllers, proxy, kubelet) connects with, as K3s
    keeps ``server/cred/*.kubeconfig``. Blocking."""
    cert_path, key_path = ensure_client_certificate(pki, name, common_name, organizations)
    write_kubeconfig(
        Path(path),
        server_url=server_url,
        ca_pem=pki.ca_pem,
        client_cert_pem=cert_path.read_bytes(),
        client_key_pem=key_path.read_bytes(),
        mode=mode,
    )


def ensure_admin_kubeconfig(
    pki: ClusterPKI, path: Path, server_url: str, mode: int = PRIVATE_FILE_MODE
) -> None:
    """Issue ``system:admin`` (group ``system:masters``) once, keep it under tls_dir as
    client-admin.crt/.key, and (re)write the kubeconfig at ``path`` with ``mode``. Blocking."""
    ensure_client_kubeconfig(
        pki,
        name=_ADMIN_NAME,
        common_name=ADMIN_USER,
        organizations=[ADMIN_GROUP],
        path=path,
        server_url=server_url,
        mode=mode,
    )
