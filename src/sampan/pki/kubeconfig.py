"""Kubeconfig files with embedded credentials, shaped like the one K3s writes.

One cluster, one user, one context, all called ``default`` unless told otherwise, and
``current-context: default``; certificate and key data are embedded base64 so the file stands
alone. Written atomically (``sampan.pki.files.atomic_write``) with the requested mode, since it
holds a private key. Blocking; async callers use a thread.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from sampan.pki.files import PRIVATE_FILE_MODE, atomic_write

__all__ = ["DEFAULT_CONTEXT_NAME", "build_kubeconfig", "write_kubeconfig"]

DEFAULT_CONTEXT_NAME = "default"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_kubeconfig(
    *,
    server_url: str,
    ca_pem: bytes,
    client_cert_pem: bytes,
    client_key_pem: bytes,
    cluster_name: str = DEFAULT_CONTEXT_NAME,
    user_name: str = DEFAULT_CONTEXT_NAME,
    context_name: str = DEFAULT_CONTEXT_NAME,
) -> dict[str, Any]:
    """The kubeconfig as a plain dict (``kind: Config``, ``apiVersion: v1``)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server_url, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "contexts": [
            {"name": context_name, "context": {"cluster": cluster_name, "user": user_name}}
        ],
        "current-context": context_name,
        "preferences": {},
        "users": [
            {
                "name": user_name,
                "user": {
                    "client-certificate-data": _b64(client_cert_pem),
                    "client-key-data": _b64(client_key_pem),
                },
            }
        ],
    }


def write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    ca_pem: bytes,
    client_cert_pem: bytes,
    client_key_pem: bytes,
    mode: int = PRIVATE_FILE_MODE,
    cluster_name: str = DEFAULT_CONTEXT_NAME,
    user_name: str = DEFAULT_CONTEXT_NAME,
) -> None:
    """Atomically (re)write ``path`` with a single-context kubeconfig; the file gets ``mode``."""
    config = build_kubeconfig(
        server_url=server_url,
        ca_pem=ca_pem,
        client_cert_pem=client_cert_pem,
        client_key_pem=client_key_pem,
        cluster_name=cluster_name,
        user_name=user_name,
    )
    text = yaml.safe_dump(config, default_flow_style=False, sort_keys=True)
    atomic_write(Path(path), text.encode("utf-8"), mode=mode)
