"""TLS settings of every HTTPS listener Sampan opens (API server, kubelet API).

``server_ssl_context`` is the one place a server-side ``ssl.SSLContext`` is built, so every
listener offers the same protocol versions and suites:

* TLS 1.3 (its suites are all AEAD) and TLS 1.2; nothing older (``minimum_version``);
* on TLS 1.2 only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (``TLS12_CIPHERS``):
  no CBC suites (``AES256-SHA256``, ``ECDHE-*-AES*-SHA384``...), no static RSA key exchange;
* the server's order of preference wins, renegotiation and compression are off;
* ALPN offers only ``http/1.1`` (the servers speak no HTTP/2);
* client certificates are optional (bearer-token clients and anonymous health checks send
  none), but one that is sent must verify against the given client CA or the handshake fails.

Building a context reads the key pair from disk (blocking, but small and done once at start).
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["MIN_TLS_VERSION", "TLS12_CIPHERS", "server_ssl_context"]

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""The TLS 1.2 suites offered (OpenSSL names). TLS 1.3 suites are OpenSSL's defaults, all AEAD."""
ALPN_PROTOCOLS = ("http/1.1",)


def server_ssl_context(
    cert_path: Path | str,
    key_path: Path | str,
    *,
    client_ca_pem: bytes | None = None,
    client_ca_file: Path | str | None = None,
) -> ssl.SSLContext:
    """A server context presenting ``cert_path``/``key_path``; with a client CA (PEM bytes or
    a file), client certificates are requested (optional) and verified against it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_TLS_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(str(cert_path), str(key_path))
    if client_ca_pem is not None:
        context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    if client_ca_file is not None:
        context.load_verify_locations(cafile=str(client_ca_file))
    if client_ca_pem is not None or client_ca_file is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    return context
