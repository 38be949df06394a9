"""The embedded etcd's TLS identity: its two CAs and the certificates etcd and its clients use.

Files under ``<tls-dir>/etcd/`` (mode 0700; keys 0600), as K3s lays out ``server/tls/etcd``::

    server-ca.crt / server-ca.key          signs etcd's client-facing serving certificate and
                                           the certificates of etcd's clients
    peer-ca.crt / peer-ca.key              signs the peer (member-to-member) certificates
    server-client.crt / .key               etcd's serving certificate on the client port
                                           (serverAuth + clientAuth; loopback, node IPs, host)
    peer-server-client.crt / .key          this member's peer certificate (both usages)
    client.crt / client.key                the certificate Sampan's datastore driver presents

Invariants:

* the etcd CAs are separate from the Kubernetes CAs (a certificate for the API can never
  open the datastore, which holds every Secret), and etcd requires client certificates on
  both ports (``--client-cert-auth``, ``--peer-client-cert-auth``);
* CAs are created once and never replaced automatically (other members trust them); leaves
  are re-issued when missing, not signed by the current CA, close to expiry, or lacking a
  wanted name (a new node IP);
* a server that joined another server's etcd cluster holds the CA *certificates* only: its
  leaves were issued by the server it joined (``issue_member_certificates``, sent over the
  join) and are kept as they are (``write_joined_pki``); it cannot issue any itself;
* every function blocks (key generation, file I/O): call it from a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sampan.pki.certs import cert_to_pem, issue_leaf, key_to_pem, load_cert, split_names
from sampan.pki.cluster import (
    PKIError,
    _ensure_ca,
    _load_ca_key,
    _load_pair,
    _needs_leaf,
    _tighten,
    _write_private,
    logger,
)
from sampan.pki.files import ensure_private_dir

__all__ = [
    "ETCD_TLS_SUBDIR",
    "JOINED_FILES",
    "EtcdPKI",
    "ensure_etcd_pki",
    "issue_member_certificates",
    "write_joined_pki",
]

ETCD_TLS_SUBDIR = "etcd"


@dataclass(frozen=True)
class EtcdPKI:
    """Paths of the embedded etcd's TLS files."""

    dir: Path

    def path(self, stem: str, ext: str) -> Path:
        return self.dir / f"{stem}.{ext}"

    @property
    def joined(self) -> bool:
        """True for a member that joined another server's cluster (no CA keys here)."""
        return self.server_ca.exists() and not self.path("server-ca", "key").exists()

    @property
    def server_ca(self) -> Path:
        return self.path("server-ca", "crt")

    @property
    def peer_ca(self) -> Path:
        return self.path("peer-ca", "crt")

    @property
    def server_cert(self) -> Path:
        return self.path("server-client", "crt")

    @property
    def server_key(self) -> Path:
        return self.path("server-client", "key")

    @property
    def peer_cert(self) -> Path:
        return self.path("peer-server-client", "crt")

    @property
    def peer_key(self) -> Path:
        return self.path("peer-server-client", "key")

    @property
    def client_cert(self) -> Path:
        return self.path("client", "crt")

    @property
    def client_key(self) -> Path:
        return self.path("client", "key")


def _ensure_leaf(
    pki: EtcdPKI,
    stem: str,
    ca_stem: str,
    *,
    common_name: str,
    names: Sequence[str] = (),
    server_auth: bool,
) -> None:
    cert_path, key_path = pki.path(stem, "crt"), pki.path(stem, "key")
    ca_cert = load_cert(pki.path(ca_stem, "crt").read_bytes())
    wanted = split_names(names) if names else None
    why = _needs_leaf(_load_pair(cert_path, key_path), ca_cert, wanted)
    if why is None:
        _tighten(key_path)
        return
    ca_key = _load_ca_key(pki.path(ca_stem, "key"))
    cert, key = issue_leaf(
        ca_cert,
        ca_key,
        common_name=common_name,
        names=wanted,
        server_auth=server_auth,
        client_auth=True,
    )
    _write_private(key_path, key_to_pem(key))
    _write_private(cert_path, cert_to_pem(cert))
    logger.info("issued etcd certificate %s (%s)", cert_path, why)


def ensure_etcd_pki(tls_dir: Path, names: Sequence[str]) -> EtcdPKI:
    """Create or refresh ``<tls_dir>/etcd``; ``names`` are the host names and addresses etcd
    is reached at (loopback and ``localhost`` are always added). Blocking."""
    pki = EtcdPKI(tls_dir / ETCD_TLS_SUBDIR)
    ensure_private_dir(pki.dir)
    if pki.joined:
        missing = [f for f in JOINED_FILES if not pki.dir.joinpath(f).exists()]
        if missing:
            raise PKIError(f"{pki.dir}: {', '.join(missing)} missing (join the cluster again)")
        return pki
    _ensure_ca(pki.dir, "server-ca", "etcd-server-ca")
    _ensure_ca(pki.dir, "peer-ca", "etcd-peer-ca")
    all_names = ["localhost", "127.0.0.1", *names]
    _ensure_leaf(
        pki, "server-client", "server-ca", common_name="etcd-server", names=all_names,
        server_auth=True,
    )  # fmt: skip
    _ensure_leaf(
        pki, "peer-server-client", "peer-ca", common_name="etcd-peer", names=all_names,
        server_auth=True,
    )  # fmt: skip
    _ensure_leaf(pki, "client", "server-ca", common_name="etcd-client", server_auth=False)
    return pki


JOINED_FILES = (
    "server-ca.crt",
    "peer-ca.crt",
    "server-client.crt",
    "server-client.key",
    "peer-server-client.crt",
    "peer-server-client.key",
    "client.crt",
    "client.key",
)
"""What a joining member receives (the names are the files' names here)."""


def issue_member_certificates(pki: EtcdPKI, names: Sequence[str]) -> dict[str, str]:
    """The CA certificates and fresh serving, peer and client pairs for a joining member
    reached at ``names``: ``{file name: PEM}``. Blocking; needs this server's CA keys."""
    if pki.joined:
        raise PKIError("this member joined another server's cluster and holds no etcd CA key")
    all_names = split_names(["localhost", "127.0.0.1", *names])
    out = {
        "server-ca.crt": pki.server_ca.read_text(),
        "peer-ca.crt": pki.peer_ca.read_text(),
    }
    for stem, ca_stem, common_name, server_auth in (
        ("server-client", "server-ca", "etcd-server", True),
        ("peer-server-client", "peer-ca", "etcd-peer", True),
        ("client", "server-ca", "etcd-client", False),
    ):
        ca_cert = load_cert(pki.path(ca_stem, "crt").read_bytes())
        cert, key = issue_leaf(
            ca_cert,
            _load_ca_key(pki.path(ca_stem, "key")),
            common_name=common_name,
            names=all_names if server_auth else None,
            server_auth=server_auth,
            client_auth=True,
        )
        out[f"{stem}.crt"] = cert_to_pem(cert).decode()
        out[f"{stem}.key"] = key_to_pem(key).decode()
    return out


def write_joined_pki(tls_dir: Path, files: dict[str, str]) -> EtcdPKI:
    """Write what ``issue_member_certificates`` gave (every file 0600). Blocking."""
    pki = EtcdPKI(tls_dir / ETCD_TLS_SUBDIR)
    ensure_private_dir(pki.dir)
    for name in JOINED_FILES:
        data = files.get(name)
        if not isinstance(data, str) or "-----BEGIN" not in data:
            raise PKIError(f"the join answer has no valid {name}")
        _write_private(pki.dir / name, data.encode())
    return pki
