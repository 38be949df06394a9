"""A throwaway CA and one serving certificate for test servers (webhooks, registries, bench
helpers), made with Sampan's own ``pki.certs`` so that tests exercise the same certificate
shapes the cluster issues.

``serving_pki(directory, names)`` writes ``ca.crt``, ``<stem>.crt`` and ``<stem>.key`` (0600)
and returns their paths with the CA's PEM; every call makes a new CA, so two calls never
trust each other (tests of a wrong CA rely on that).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names

__all__ = ["ServingPKI", "serving_pki"]


@dataclass(frozen=True)
class ServingPKI:
    ca_pem: bytes
    ca_file: Path
    cert_path: Path
    key_path: Path

    @property
    def ca_bundle(self) -> str:
        """The CA as a ``caBundle`` field wants it (base64 of the PEM)."""
        return base64.b64encode(self.ca_pem).decode()


def serving_pki(
    directory: Path,
    names: tuple[str, ...] = ("127.0.0.1",),
    *,
    common_name: str = "test-server",
    stem: str = "tls",
) -> ServingPKI:
    """A new CA and a serverAuth certificate for ``names`` (IPs and DNS names) under it."""
    ca, ca_key = create_ca(f"{common_name}-ca", valid_days=2)
    cert, key = issue_leaf(
        ca, ca_key, common_name=common_name, names=split_names(names), server_auth=True
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_path, key_path = (
        directory / "ca.crt",
        directory / f"{stem}.crt",
        directory / f"{stem}.key",
    )
    ca_file.write_bytes(cert_to_pem(ca))
    cert_path.write_bytes(cert_to_pem(cert))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_to_pem(key))
    return ServingPKI(cert_to_pem(ca), ca_file, cert_path, key_path)
