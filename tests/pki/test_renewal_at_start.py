"""Certificates within 90 days of expiry are renewed when the server (or agent) starts, with
one log line naming each (K3s behaviour). The test hook: re-sign existing certificates with
the same CA so they expire in 30 days, then start again."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sampan.apiserver import APIServer, APIServerOptions
from sampan.datastore import open_backend
from sampan.pki.certs import cert_to_pem, load_cert, load_private_key, remaining_validity
from sampan.pki.files import atomic_write
from sampan.supervisor.agent import JoinComponent, expiring_node_certificates
from sampan.supervisor.token import ca_hash

from ..support.apiserver import ApiServerHarness

SECRET = "agent-secret-0123456789"


def expire_in(cert_path: Path, ca_cert_path: Path, ca_key_path: Path, days: int) -> None:
    """Re-sign ``cert_path`` (same key, subject, extensions) to expire in ``days`` days."""
    old = load_cert(cert_path.read_bytes())
    ca_cert = load_cert(ca_cert_path.read_bytes())
    ca_key = load_private_key(ca_key_path.read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=300))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    atomic_write(cert_path, cert_to_pem(builder.sign(ca_key, hashes.SHA256())), mode=0o600)


def _days_left(path: Path) -> int:
    return remaining_validity(load_cert(path.read_bytes())).days


async def test_server_renews_certificates_expiring_within_90_days(tmp_path: Path, caplog) -> None:
    harness = ApiServerHarness(tmp_path)
    await harness.start()
    await harness.identity_config("system:kube-proxy")
    tls = tmp_path / "server" / "tls"
    await harness.stop()

    serving = tls / "serving-kube-apiserver.crt"
    admin = tls / "client-admin.crt"
    proxy_client = tls / "client-system-kube-proxy.crt"
    auth_proxy = tls / "client-auth-proxy.crt"
    expire_in(serving, tls / "server-ca.crt", tls / "server-ca.key", 30)
    expire_in(admin, tls / "client-ca.crt", tls / "client-ca.key", 30)
    expire_in(proxy_client, tls / "client-ca.crt", tls / "client-ca.key", 30)
    expire_in(auth_proxy, tls / "request-header-ca.crt", tls / "request-header-ca.key", 30)
    ca_before = (tls / "server-ca.crt").read_bytes()
    assert all(_days_left(p) < 31 for p in (serving, admin, proxy_client, auth_proxy))

    caplog.set_level(logging.INFO, logger="sampan.pki")
    await harness.start()  # what `sampan server` does at start (the API server's PKI)
    try:
        await harness.identity_config("system:kube-proxy")  # a component's credential
        renewed = [r.getMessage() for r in caplog.records if "renewed" in r.getMessage()]
        for path in (serving, admin, proxy_client, auth_proxy):
            assert _days_left(path) >= 364, path
            (line,) = [m for m in renewed if str(path) in m]
            assert "expires within 90 days" in line
        assert (tls / "server-ca.crt").read_bytes() == ca_before  # CAs are never replaced
        # The renewed admin credential works.
        async with harness.new_client() as admin_client:
            await admin_client.request("GET", "/api/v1/namespaces/default")
    finally:
        await harness.stop()


async def test_agent_start_renews_and_names_expiring_certificates(tmp_path: Path, caplog) -> None:
    backend = open_backend("", tmp_path / "server-data")
    await backend.start()
    server = APIServer(
        APIServerOptions(
            tls_dir=tmp_path / "server-data" / "server" / "tls",
            hostname="localhost",
            node_ips=("127.0.0.1",),
            bind_address="127.0.0.1",
            port=0,
        ),
        backend,
    )
    await server.start()
    server.set_join_secrets({"server": "s" * 24, "node": SECRET})
    try:
        token = f"K10{ca_hash(server.pki.ca_pem)}::node:{SECRET}"

        def join() -> JoinComponent:
            return JoinComponent(
                server_url=lambda: server.url,
                token=lambda: token,
                node_name="worker-a",
                node_ips=("192.0.2.31",),
                data_dir=tmp_path / "agent-data",
            )

        first = join()
        async with asyncio.timeout(60):
            await first.start(None)  # type: ignore[arg-type]
        creds = first.credentials
        assert creds is not None
        assert expiring_node_certificates(creds.etc_dir) == []
        tls = server.pki.tls_dir
        expire_in(
            creds.serving_cert, tls / "kubelet-serving-ca.crt", tls / "kubelet-serving-ca.key", 30
        )
        (expiring,) = expiring_node_certificates(creds.etc_dir)
        assert expiring[0] == creds.serving_cert

        caplog.set_level(logging.INFO, logger="sampan.agent")
        async with asyncio.timeout(60):
            await join().start(None)  # type: ignore[arg-type]
        assert _days_left(creds.serving_cert) >= 364
        (line,) = [r.getMessage() for r in caplog.records if "renewed" in r.getMessage()]
        assert str(creds.serving_cert) in line and "expires within 90 days" in line
    finally:
        await server.stop()
        await backend.close()
