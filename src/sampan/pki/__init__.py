"""Sampan's public-key infrastructure: cluster CAs, serving and client certificates,
service-account signing keys, kubeconfig files and the TLS settings of every listener.

Façade over ``sampan.pki.cluster`` (files under the TLS directory), ``sampan.pki.certs``
(X.509 primitives), ``sampan.pki.kubeconfig``, ``sampan.pki.files`` (atomic writes) and
``sampan.pki.tls`` (server ``SSLContext``s).
All functions block (key generation, file I/O): call them from a thread in async code.
"""

from sampan.pki.cluster import (
    ADMIN_GROUP,
    ADMIN_USER,
    AUTH_PROXY_USER,
    AUTHORITY_FILES,
    DEFAULT_SERVICE_IP,
    LEAF_RENEW_BEFORE_DAYS,
    ClusterPKI,
    PKIError,
    api_server_names,
    ensure_admin_kubeconfig,
    ensure_authorities,
    ensure_client_certificate,
    ensure_client_kubeconfig,
    ensure_cluster_pki,
    issue_client_certificate,
    issue_kubelet_serving_certificate,
    issue_listener_serving_certificate,
)
from sampan.pki.kubeconfig import build_kubeconfig, write_kubeconfig
from sampan.pki.tls import TLS12_CIPHERS, server_ssl_context

__all__ = [
    "ADMIN_GROUP",
    "ADMIN_USER",
    "AUTHORITY_FILES",
    "AUTH_PROXY_USER",
    "DEFAULT_SERVICE_IP",
    "LEAF_RENEW_BEFORE_DAYS",
    "TLS12_CIPHERS",
    "ClusterPKI",
    "PKIError",
    "api_server_names",
    "build_kubeconfig",
    "ensure_admin_kubeconfig",
    "ensure_authorities",
    "ensure_client_certificate",
    "ensure_client_kubeconfig",
    "ensure_cluster_pki",
    "issue_client_certificate",
    "issue_kubelet_serving_certificate",
    "issue_listener_serving_certificate",
    "server_ssl_context",
    "write_kubeconfig",
]
