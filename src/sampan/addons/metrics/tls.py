"""TLS material of the in-process metrics server, kept under the server's TLS directory.

* serving certificate ``metrics-server.crt``/``.key`` (0600), signed by the server CA, for
  ``metrics-server.kube-system.svc`` and the listener's address; issued again at every start
  (the APIService uses ``insecureSkipTLSVerify`` as upstream's manifests do, so nothing pins
  it);
* kubelet client certificate: the API server's own kubelet-client identity
  (``client-kube-apiserver-kubelet-client.crt``, user ``system:kube-apiserver``), which every
  kubelet accepts; the kubelets' serving CA to verify them.

Blocking: call from a thread.
"""

from __future__ import annotations

from pathlib import Path

from sampan.pki import ClusterPKI, ensure_client_certificate
from sampan.pki.certs import (
    cert_to_pem,
    issue_leaf,
    key_to_pem,
    load_cert,
    load_private_key,
    split_names,
)
from sampan.pki.files import atomic_write

__all__ = ["KUBELET_CLIENT_NAME", "KUBELET_CLIENT_USER", "MetricsTLS", "ensure_metrics_tls"]

KUBELET_CLIENT_NAME = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_USER = "system:kube-apiserver"


class MetricsTLS:
    def __init__(
        self,
        serving_cert: Path,
        serving_key: Path,
        kubelet_cert: Path,
        kubelet_key: Path,
        kubelet_ca: Path,
    ) -> None:
        self.serving_cert = serving_cert
        self.serving_key = serving_key
        self.kubelet_cert = kubelet_cert
        self.kubelet_key = kubelet_key
        self.kubelet_ca = kubelet_ca


def ensure_metrics_tls(pki: ClusterPKI, address: str) -> MetricsTLS:
    ca = load_cert(pki.ca_pem)
    ca_key = load_private_key(pki.server_ca_key_path.read_bytes())
    names = split_names(["metrics-server.kube-system.svc", "metrics-server.kube-system", address])
    cert, key = issue_leaf(ca, ca_key, common_name="metrics-server", names=names, server_auth=True)
    serving_cert = pki.tls_dir / "metrics-server.crt"
    serving_key = pki.tls_dir / "metrics-server.key"
    atomic_write(serving_key, key_to_pem(key), mode=0o600)
    atomic_write(serving_cert, cert_to_pem(cert), mode=0o600)
    kubelet_cert, kubelet_key = ensure_client_certificate(
        pki, KUBELET_CLIENT_NAME, KUBELET_CLIENT_USER
    )
    kubelet_ca = pki.kubelet_ca_cert_path
    return MetricsTLS(serving_cert, serving_key, kubelet_cert, kubelet_key, kubelet_ca)
