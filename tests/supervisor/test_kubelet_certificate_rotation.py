"""The kubelet's client certificate is renewed through a CSR (auto-approved by csrapproving,
signed by csrsigning) before it expires, and the live client switches to it."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.api import CSRS
from sampan.controllers.base import ControllerContext, ControllerManagerOptions
from sampan.controllers.certificates import CSRApprovingController, CSRSigningController
from sampan.pki.certs import cert_to_pem, is_issued_by, load_cert, load_private_key
from sampan.pki.files import atomic_write
from sampan.supervisor.agent import JoinComponent
from sampan.supervisor.certrotation import KubeletCertificateRotation, rotation_deadline
from sampan.supervisor.token import ca_hash

from ..support.apiserver import ApiServerHarness

SECRET = "agent-secret-0123456789"


def test_deadline_is_between_70_and_90_percent_of_the_lifetime() -> None:
    pem = _self_signed(days=100)
    cert = load_cert(pem)
    start = cert.not_valid_before_utc
    assert rotation_deadline(cert, 0.7) == start + (cert.not_valid_after_utc - start) * 0.7
    for _ in range(20):
        deadline = rotation_deadline(cert)
        assert start + dt.timedelta(days=69) < deadline < start + dt.timedelta(days=91)


def _self_signed(days: int) -> bytes:
    from sampan.pki.certs import create_ca

    cert, _ = create_ca("test", valid_days=days)
    return cert_to_pem(cert)


def _age_kubeconfig_certificate(path: Path, ca_cert: Path, ca_key: Path) -> None:
    """Re-sign the kubeconfig's client certificate: issued 300 days ago, 30 days left."""
    doc = json.loads(path.read_text())
    user = doc["users"][0]["user"]
    old = load_cert(base64.b64decode(user["client-certificate-data"]))
    ca = load_cert(ca_cert.read_bytes())
    key = load_private_key(ca_key.read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=300))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    pem = cert_to_pem(builder.sign(key, hashes.SHA256()))
    user["client-certificate-data"] = base64.b64encode(pem).decode()
    atomic_write(path, json.dumps(doc).encode(), mode=0o600)


async def _presented_certificate(client: Client, pki) -> x509.Certificate:
    """What a new TLS connection of ``client`` presents, seen by a listener with the API
    server's serving certificate that asks for client certificates."""
    seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.serving_cert_path, pki.serving_key_path)
    context.load_verify_locations(cadata=pki.client_ca_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not seen.done():
            seen.set_result(der)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client._ssl_context, server_hostname="localhost"
        )
        der = await asyncio.wait_for(seen, 10)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_kubelet_client_certificate_renewed_through_csr(tmp_path: Path) -> None:
    harness = ApiServerHarness(tmp_path / "server")
    await harness.start()
    tasks: list[asyncio.Task[None]] = []
    controller_client = Client(await harness.identity_config("system:sampan-controller"))
    factory = SharedInformerFactory(controller_client)
    pki = harness.server.pki
    options = ControllerManagerOptions(
        signing_kubelet_client_cert_file=str(pki.client_ca_cert_path),
        signing_kubelet_client_key_file=str(pki.client_ca_key_path),
    )
    context = ControllerContext(controller_client, factory, options)
    rotation = None
    live = None
    try:
        for cls in (CSRApprovingController, CSRSigningController):
            controller = cls(context)
            tasks.append(asyncio.create_task(controller.run(1), name=f"test-{cls.name}"))
        factory.start()

        harness.server.set_join_secrets({"server": "s" * 24, "node": SECRET})
        token = f"K10{ca_hash(pki.ca_pem)}::node:{SECRET}"
        join = JoinComponent(
            server_url=lambda: harness.url,
            token=lambda: token,
            node_name="worker-a",
            node_ips=("192.0.2.31",),
            data_dir=tmp_path / "agent",
        )
        async with asyncio.timeout(60):
            await join.start(None)  # type: ignore[arg-type]
        assert join.credentials is not None
        kubeconfig = join.credentials.kubeconfig("kubelet")
        _age_kubeconfig_certificate(kubeconfig, pki.client_ca_cert_path, pki.client_ca_key_path)
        before = json.loads(kubeconfig.read_text())["users"][0]["user"]

        live = Client(ClientConfig.from_kubeconfig(kubeconfig))
        # An open session first: the renewal must change what it presents.
        await live.request("GET", "/version")
        rotation = KubeletCertificateRotation(lambda: kubeconfig, "worker-a", lambda: [live])
        await rotation.start(None)
        async with asyncio.timeout(60):
            await rotation.renewed.wait()

        after = json.loads(kubeconfig.read_text())["users"][0]["user"]
        assert after["client-key-data"] != before["client-key-data"]
        cert = load_cert(base64.b64decode(after["client-certificate-data"]))
        assert is_issued_by(cert, load_cert(pki.client_ca_pem))
        assert cert.subject.rfc4514_string() == "CN=system:node:worker-a,O=system:nodes"
        assert (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days >= 364
        assert (kubeconfig.stat().st_mode & 0o777) == 0o600
        assert live.config.client_cert_pem == base64.b64decode(after["client-certificate-data"])

        async with Client(harness.client_config()) as admin:
            (csr,) = (await admin.list(CSRS))["items"]
        assert csr["spec"]["username"] == "system:node:worker-a"
        approved = csr["status"]["conditions"][0]
        assert (approved["type"], approved["reason"]) == ("Approved", "AutoApproved")

        # New connections of the live client present the new certificate.
        assert await _presented_certificate(live, pki) == cert

        # The renewed credential authenticates, from the file and from the live client.
        for client in (Client(ClientConfig.from_kubeconfig(kubeconfig)), live):
            review = await client.request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            assert review["status"]["userInfo"]["username"] == "system:node:worker-a"
            if client is not live:
                await client.close()
    finally:
        if rotation is not None:
            await rotation.stop()
        if live is not None:
            await live.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
        await context.aclose()
        await controller_client.close()
        await harness.stop()
