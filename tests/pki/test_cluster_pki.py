"""sampan.pki: generated files, reuse across restarts, re-issue rules, kubeconfig, real TLS."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import shutil
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sampan.pki import (
    ADMIN_GROUP,
    ADMIN_USER,
    PKIError,
    ensure_admin_kubeconfig,
    ensure_client_certificate,
    ensure_client_kubeconfig,
    ensure_cluster_pki,
    issue_client_certificate,
    issue_kubelet_serving_certificate,
    issue_listener_serving_certificate,
    server_ssl_context,
    write_kubeconfig,
)
from sampan.pki.certs import (
    cert_to_pem,
    create_ca,
    is_issued_by,
    issue_leaf,
    key_to_pem,
    load_private_key,
    public_key_to_pem,
)

HOST = "node-a"
NODE_IPS = ("192.168.5.10",)


def _ensure(tls_dir: Path, tls_sans=("api.example.com", "203.0.113.7")):
    return ensure_cluster_pki(tls_dir, hostname=HOST, node_ips=NODE_IPS, tls_sans=tls_sans)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _eku(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    return tmp_path / "server" / "tls"


def test_first_start_generates_everything_private(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    assert _mode(tls_dir) == 0o700
    for key in (
        pki.server_ca_key_path,
        pki.client_ca_key_path,
        pki.kubelet_ca_key_path,
        pki.serving_key_path,
        pki.sa_key_path,
    ):
        assert _mode(key) == 0o600, key
    server_ca = _cert(pki.server_ca_cert_path)
    client_ca = _cert(pki.client_ca_cert_path)
    kubelet_ca = _cert(pki.kubelet_ca_cert_path)
    cn = server_ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn.startswith("sampan-server-ca@")
    assert client_ca.subject != server_ca.subject
    kubelet_cn = kubelet_ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert kubelet_cn.startswith("sampan-kubelet-serving-ca@")
    assert kubelet_ca.public_key() != server_ca.public_key()
    assert pki.kubelet_ca_pem == pki.kubelet_ca_cert_path.read_bytes()
    assert isinstance(server_ca.public_key(), ec.EllipticCurvePublicKey)
    assert server_ca.public_key().curve.name == "secp256r1"
    validity = server_ca.not_valid_after_utc - server_ca.not_valid_before_utc
    assert validity.days >= 3649
    assert server_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.ca_pem == pki.server_ca_cert_path.read_bytes()
    assert len(pki.ca_hash()) == 64
    # no temporary files left behind
    assert not [p for p in tls_dir.iterdir() if p.name.endswith(".tmp")]


def test_serving_certificate_names_chain_and_usage(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    serving = _cert(pki.serving_cert_path)
    assert is_issued_by(serving, _cert(pki.server_ca_cert_path))
    assert not is_issued_by(serving, _cert(pki.client_ca_cert_path))
    assert _eku(serving) == {ExtendedKeyUsageOID.SERVER_AUTH}
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert {
        HOST,
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.example.com",
    } <= dns
    assert {"127.0.0.1", "::1", "10.43.0.1", "192.168.5.10", "203.0.113.7"} <= ips
    assert "203.0.113.7" not in dns  # IPs are IP SANs, not DNS SANs
    validity = serving.not_valid_after_utc - serving.not_valid_before_utc
    assert 364 <= validity.days <= 366


def test_restart_reuses_everything(tls_dir: Path) -> None:
    first = _ensure(tls_dir)
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    second = _ensure(tls_dir)
    after = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    assert before == after
    assert first == second


def test_a_data_dir_without_the_kubelet_ca_gets_one_and_keeps_everything_else(
    tls_dir: Path,
) -> None:
    """A data dir from before the kubelet serving CA: the CA is added at start; the cluster
    CAs, the API serving certificate and the keys stay as they were (clients keep working)."""
    first = _ensure(tls_dir)
    first.kubelet_ca_cert_path.unlink()
    first.kubelet_ca_key_path.unlink()
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    pki = _ensure(tls_dir)
    after = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    assert set(after) - set(before) == {"kubelet-serving-ca.crt", "kubelet-serving-ca.key"}
    assert {name: after[name] for name in before} == before
    assert _mode(pki.kubelet_ca_key_path) == 0o600
    assert pki.kubelet_ca_pem != first.kubelet_ca_pem
    cert_pem, _ = issue_kubelet_serving_certificate(pki, ["n1"], ["10.0.0.9"])
    assert is_issued_by(x509.load_pem_x509_certificate(cert_pem), _cert(pki.kubelet_ca_cert_path))


def test_serving_names_are_the_certificates(tls_dir: Path) -> None:
    """What no node may claim: every SAN of the serving certificate in use, including ones
    kept from an earlier --tls-san (the certificate is not re-issued to drop them)."""
    _ensure(tls_dir, tls_sans=("old.example.com", "203.0.113.9"))
    pki = _ensure(tls_dir, tls_sans=())
    assert "old.example.com" in pki.serving_names.dns
    assert ipaddress.ip_address("203.0.113.9") in pki.serving_names.ips
    assert ipaddress.ip_address("10.43.0.1") in pki.serving_names.ips
    assert ipaddress.ip_address(NODE_IPS[0]) in pki.serving_names.ips


def test_new_san_reissues_only_serving_cert(tls_dir: Path) -> None:
    _ensure(tls_dir)
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    pki = _ensure(tls_dir, tls_sans=("api.example.com", "203.0.113.7", "new.example.com"))
    after = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"serving-kube-apiserver.crt", "serving-kube-apiserver.key"}
    serving = _cert(pki.serving_cert_path)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "new.example.com" in san.get_values_for_type(x509.DNSName)
    assert is_issued_by(serving, _cert(pki.server_ca_cert_path))
    # dropping a SAN is not a reason to re-issue
    _ensure(tls_dir, tls_sans=("api.example.com",))
    assert pki.serving_cert_path.read_bytes() == after["serving-kube-apiserver.crt"]


def test_serving_cert_close_to_expiry_is_renewed(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    ca_cert = _cert(pki.server_ca_cert_path)
    ca_key = load_private_key(pki.server_ca_key_path.read_bytes())
    old_cert = _cert(pki.serving_cert_path)
    short, key = issue_leaf(
        ca_cert, ca_key, common_name="kube-apiserver", server_auth=True, valid_days=30
    )
    pki.serving_key_path.write_bytes(key_to_pem(key))
    pki.serving_cert_path.write_bytes(short.public_bytes(encoding=Encoding.PEM))
    _ensure(tls_dir)
    renewed = _cert(pki.serving_cert_path)
    assert renewed.serial_number not in (short.serial_number, old_cert.serial_number)
    assert (renewed.not_valid_after_utc - renewed.not_valid_before_utc).days >= 364


def test_half_written_leaf_is_repaired(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    # simulate a crash after the new key was written but before its certificate
    _, other = issue_leaf(
        _cert(pki.server_ca_cert_path),
        load_private_key(pki.server_ca_key_path.read_bytes()),
        common_name="x",
        server_auth=True,
    )
    pki.serving_key_path.write_bytes(key_to_pem(other))
    _ensure(tls_dir)
    ctx = pki.ssl_server_context()  # load_cert_chain checks key/cert agreement
    assert ctx.verify_mode == ssl.CERT_OPTIONAL


def test_ca_without_key_is_an_error_not_a_new_ca(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    ca_before = pki.server_ca_cert_path.read_bytes()
    pki.server_ca_key_path.unlink()
    with pytest.raises(PKIError, match="missing"):
        _ensure(tls_dir)
    assert pki.server_ca_cert_path.read_bytes() == ca_before


def test_loose_key_modes_are_tightened(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    pki.sa_key_path.chmod(0o644)
    pki.server_ca_key_path.chmod(0o640)
    _ensure(tls_dir)
    assert _mode(pki.sa_key_path) == 0o600
    assert _mode(pki.server_ca_key_path) == 0o600


def test_sa_key_pair(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    key = load_private_key(pki.sa_private_key_pem())
    assert public_key_to_pem(key) == pki.sa_pub_path.read_bytes() == pki.sa_public_key_pem
    pki.sa_pub_path.unlink()
    _ensure(tls_dir)
    assert pki.sa_pub_path.read_bytes() == pki.sa_public_key_pem


def test_client_and_serving_issuance(tls_dir: Path) -> None:
    pki = _ensure(tls_dir)
    cert_pem, key_pem = issue_client_certificate(pki, "system:node:n1", ["system:nodes"], days=10)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert is_issued_by(cert, _cert(pki.client_ca_cert_path))
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes"
    ]
    load_private_key(key_pem)

    cert_pem, _ = issue_kubelet_serving_certificate(pki, ["n1"], ["10.0.0.9"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert is_issued_by(cert, _cert(pki.kubelet_ca_cert_path))
    assert not is_issued_by(cert, _cert(pki.server_ca_cert_path))
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.9")]


async def test_listener_serving_certificate(tls_dir: Path) -> None:
    """The dashboard's and manager's certificate: the API server's names, signed by the server
    CA (a client trusting the cluster trusts it), private files, issued anew at each call."""
    pki = _ensure(tls_dir)
    cert_path, key_path = issue_listener_serving_certificate(pki, "dashboard")
    assert (cert_path.name, key_path.name) == ("dashboard-serving.crt", "dashboard-serving.key")
    assert _mode(cert_path) == 0o600 and _mode(key_path) == 0o600
    cert = _cert(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sampan-dashboard"
    assert is_issued_by(cert, _cert(pki.server_ca_cert_path))
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(pki.serving_names.dns)
    assert set(san.get_values_for_type(x509.IPAddress)) == set(pki.serving_names.ips)
    first = cert_path.read_bytes()
    assert issue_listener_serving_certificate(pki, "dashboard") == (cert_path, key_path)
    assert cert_path.read_bytes() != first
    with pytest.raises(ValueError):
        issue_listener_serving_certificate(pki, "../manager")

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    context = server_ssl_context(cert_path, key_path)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        client_ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
        async with aiohttp.ClientSession() as session:
            for host in ("localhost", "127.0.0.1"):
                async with session.get(f"https://{host}:{port}/", ssl=client_ctx) as resp:
                    assert await resp.text() == "hello"
    finally:
        await runner.cleanup()


def test_admin_kubeconfig(tls_dir: Path, tmp_path: Path) -> None:
    pki = _ensure(tls_dir)
    path = tmp_path / "etc" / "sampan.yaml"
    ensure_admin_kubeconfig(pki, path, "https://127.0.0.1:6443", 0o644)
    assert _mode(path) == 0o644
    assert _mode(pki.admin_key_path) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "default"
    assert config["kind"] == "Config"
    (cluster,) = config["clusters"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == pki.ca_pem
    (user,) = config["users"]
    cert_pem = base64.b64decode(user["user"]["client-certificate-data"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ADMIN_USER
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ADMIN_GROUP
    # second call reuses the admin identity and rewrites the file with the mode asked for
    ensure_admin_kubeconfig(pki, path, "https://10.0.0.1:6443", 0o600)
    assert _mode(path) == 0o600
    config2 = yaml.safe_load(path.read_text())
    assert config2["users"] == config["users"]
    assert config2["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"


def test_write_kubeconfig_names(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    write_kubeconfig(
        path,
        server_url="https://x:1",
        ca_pem=b"ca",
        client_cert_pem=b"c",
        client_key_pem=b"k",
        cluster_name="c1",
        user_name="u1",
    )
    config = yaml.safe_load(path.read_text())
    assert _mode(path) == 0o600
    assert config["contexts"] == [{"name": "default", "context": {"cluster": "c1", "user": "u1"}}]


async def test_real_tls_handshake_with_admin_cert(tls_dir: Path, tmp_path: Path) -> None:
    pki = _ensure(tls_dir)
    ensure_admin_kubeconfig(pki, tmp_path / "kc", "https://127.0.0.1:0")
    seen: list[bytes | None] = []

    async def handler(request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object")
        seen.append(ssl_object.getpeercert(binary_form=True))
        return web.Response(text=ssl_object.selected_alpn_protocol() or "none")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.ssl_server_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        client_ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
        client_ctx.set_alpn_protocols(["h2", "http/1.1"])
        client_ctx.load_cert_chain(pki.admin_cert_path, pki.admin_key_path)
        async with aiohttp.ClientSession() as session:
            # hostname verification against the serving cert's SANs (localhost + 127.0.0.1)
            for host in ("localhost", "127.0.0.1"):
                async with session.get(f"https://{host}:{port}/", ssl=client_ctx) as resp:
                    assert resp.status == 200
                    assert await resp.text() == "http/1.1"
            # no client certificate: still allowed at the TLS layer
            async with session.get(
                f"https://localhost:{port}/",
                ssl=ssl.create_default_context(cadata=pki.ca_pem.decode()),
            ) as resp:
                assert resp.status == 200
            # a certificate from a foreign CA fails the handshake
            rogue_ca, rogue_key = create_ca("rogue")
            rogue_cert, rogue_leaf_key = issue_leaf(
                rogue_ca, rogue_key, common_name=ADMIN_USER, client_auth=True
            )
            rogue_dir = tmp_path / "rogue"
            rogue_dir.mkdir()
            (rogue_dir / "c.crt").write_bytes(cert_to_pem(rogue_cert))
            (rogue_dir / "c.key").write_bytes(key_to_pem(rogue_leaf_key))
            rogue_ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
            rogue_ctx.load_cert_chain(rogue_dir / "c.crt", rogue_dir / "c.key")
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"https://localhost:{port}/", ssl=rogue_ctx) as resp:
                    await resp.read()
    finally:
        await runner.cleanup()
    admin_der = x509.load_pem_x509_certificate(pki.admin_cert_path.read_bytes()).public_bytes(
        Encoding.DER
    )
    assert seen[0] == admin_der and seen[1] == admin_der
    assert seen[2] is None


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_accepts_kubeconfig_and_certificates(tls_dir: Path, tmp_path: Path) -> None:
    """Go's TLS stack (kubectl) verifies our serving cert and presents our admin cert."""
    pki = _ensure(tls_dir)
    peers: list[str] = []

    async def version(request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        peers.append(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        return web.json_response(
            {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "platform": "linux/amd64"}
        )

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.ssl_server_context())
    await site.start()
    port = runner.addresses[0][1]
    kubeconfig = tmp_path / "kubeconfig"
    ensure_admin_kubeconfig(pki, kubeconfig, f"https://127.0.0.1:{port}")
    try:
        proc = await asyncio.create_subprocess_exec(
            "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            "version",
            "-o",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout)["serverVersion"]["gitVersion"] == "v1.32.4"
    assert peers and set(peers) == {ADMIN_USER}


def test_component_kubeconfig_reuse_and_subject_change(tls_dir: Path, tmp_path: Path) -> None:
    pki = _ensure(tls_dir)
    path = tmp_path / "cred" / "scheduler.kubeconfig"
    ensure_client_kubeconfig(
        pki,
        name="scheduler",
        common_name="system:kube-scheduler",
        path=path,
        server_url="https://127.0.0.1:6443",
    )
    cert_path, key_path = pki.tls_dir / "client-scheduler.crt", pki.tls_dir / "client-scheduler.key"
    assert _mode(cert_path) == _mode(key_path) == _mode(path) == 0o600
    first = cert_path.read_bytes()
    config = yaml.safe_load(path.read_text())
    assert base64.b64decode(config["users"][0]["user"]["client-certificate-data"]) == first
    # same subject: reused
    assert ensure_client_certificate(pki, "scheduler", "system:kube-scheduler") == (
        cert_path,
        key_path,
    )
    assert cert_path.read_bytes() == first
    # different groups asked for: re-issued
    ensure_client_certificate(pki, "scheduler", "system:kube-scheduler", ["extra"])
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "extra"
    with pytest.raises(ValueError):
        ensure_client_certificate(pki, "../evil", "x")
