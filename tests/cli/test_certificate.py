"""``sampan certificate check|rotate|rotate-ca|generate-ca`` on a real server's data dir."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from sampan.cli.main import main
from sampan.client import Client, ClientConfig
from sampan.pki.certs import is_issued_by, load_cert
from sampan.pki.kubeconfig import write_kubeconfig
from sampan.supervisor.agent import JoinComponent
from sampan.supervisor.token import ca_hash

from ..pki.test_renewal_at_start import expire_in
from ..support.apiserver import ApiServerHarness

SECRET = "agent-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, data_dir: Path, port: int | None = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"data-dir": str(data_dir), "https-listen-port": port or _free_port()})
    )
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["certificate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def stopped_server(tmp_path: Path):
    """A server's data dir (PKI, admin credential) with the server stopped again."""
    harness = ApiServerHarness(tmp_path / "data")
    await harness.start()
    await harness.stop()
    return harness


async def test_check_lists_expiry_and_rotate_reissues(stopped_server, tmp_path, capsys) -> None:
    data = stopped_server.data_dir
    config = _config(tmp_path, data)
    tls = data / "server" / "tls"
    expire_in(tls / "client-admin.crt", tls / "client-ca.crt", tls / "client-ca.key", 30)

    code, out, _ = _run(capsys, "check", "-c", str(config), "--output", "json")
    assert code == 0
    rows = {r["Filename"]: r for r in json.loads(out)["Certificates"]}
    assert rows["client-admin.crt"]["Status"] == "WARNING"
    assert rows["client-admin.crt"]["Subject"] == "system:admin"
    assert rows["client-admin.crt"]["Usages"] == ["ClientAuth"]
    assert rows["serving-kube-apiserver.crt"]["Status"] == "OK"
    assert rows["serving-kube-apiserver.crt"]["Usages"] == ["ServerAuth"]
    assert rows["server-ca.crt"]["Usages"] == ["CertSign"]
    assert rows["serving-kube-apiserver.crt"]["Issuer"] == rows["server-ca.crt"]["Subject"]

    code, out, _ = _run(capsys, "check", "-c", str(config), "-o", "table", "-s", "admin")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split("   ")[0] == "FILENAME"
    assert "RESIDUAL TIME" in lines[0] and "STATUS" in lines[0]
    admin_line = next(line for line in lines if line.startswith("client-admin.crt"))
    assert "system:admin" in admin_line and admin_line.endswith("WARNING")

    code, _, err = _run(capsys, "rotate", "-c", str(config), "--service", "nope")
    assert code == 1
    assert "service nope is not recognized" in err

    serving = tls / "serving-kube-apiserver.crt"
    old_serial = load_cert(serving.read_bytes()).serial_number
    code, out, _ = _run(capsys, "rotate", "-c", str(config), "--service", "api-server,admin")
    assert code == 0, out
    assert not serving.exists() and not (tls / "client-admin.crt").exists()
    assert (tls / "server-ca.crt").exists() and (tls / "sa.key").exists()
    backups = list((data / "server").glob("tls-*"))
    assert len(backups) == 1 and (backups[0] / "serving-kube-apiserver.crt").exists()
    assert (backups[0].stat().st_mode & 0o777) == 0o700

    await stopped_server.start()  # the next start issues them again
    try:
        assert load_cert(serving.read_bytes()).serial_number != old_serial
        async with stopped_server.new_client() as admin:
            await admin.request("GET", "/api/v1/namespaces/default")
        # While the server answers on the configured port, rotate refuses.
        busy = _config(tmp_path, data, port=stopped_server.server.port)
        code, _, err = _run(capsys, "rotate", "-c", str(busy))
        assert code == 1 and "stop the server first" in err
    finally:
        await stopped_server.stop()


async def test_rotate_ca_keeps_old_certificates_valid_and_old_token_joins(
    tmp_path: Path, capsys
) -> None:
    harness = ApiServerHarness(tmp_path / "data")
    data = harness.data_dir
    tls = data / "server" / "tls"
    await harness.start()
    try:
        harness.server.set_join_secrets({"server": "s" * 24, "node": SECRET})
        token = f"K10{ca_hash(harness.server.pki.ca_pem)}::node:{SECRET}"
        url = harness.url

        def join() -> JoinComponent:
            return JoinComponent(
                server_url=lambda: url,
                token=lambda: token,
                node_name="worker-a",
                node_ips=("192.0.2.31",),
                data_dir=tmp_path / "agent",
            )

        first = join()
        async with asyncio.timeout(60):
            await first.start(None)  # type: ignore[arg-type]
        assert first.credentials is not None
        old_kubelet = yaml.safe_load(first.credentials.kubeconfig("kubelet").read_text())
    finally:
        await harness.stop()
    old_client_ca = load_cert((tls / "client-ca.crt").read_bytes())
    old_admin = load_cert((tls / "client-admin.crt").read_bytes())
    config = _config(tmp_path, data)

    # A lone self-signed CA is refused (it would cut every existing certificate off).
    lone = tmp_path / "lone"
    code, _, _ = _run(capsys, "generate-ca", "-c", str(config), "--path", str(lone))
    assert code == 0
    bundle = (lone / "tls" / "client-ca.crt").read_bytes()
    first_pem = bundle[: bundle.index(b"-----END CERTIFICATE-----") + 26]
    (lone / "tls" / "client-ca.crt").write_bytes(first_pem)
    for other in ("server-ca", "kubelet-serving-ca", "request-header-ca"):
        (lone / "tls" / f"{other}.crt").unlink()
    code, _, err = _run(capsys, "rotate-ca", "-c", str(config), "--path", str(lone))
    assert code == 1
    assert "client-ca: new CA is self-signed" in err
    assert load_cert((tls / "client-ca.crt").read_bytes()) == old_client_ca

    new = tmp_path / "new-ca"
    code, out, _ = _run(capsys, "generate-ca", "-c", str(config), "--path", str(new))
    assert code == 0, out
    code, out, err = _run(capsys, "rotate-ca", "-c", str(config), "--path", str(new))
    assert code == 0, err
    assert "restart the server" in out

    await harness.start()
    try:
        pki = harness.server.pki
        new_client_ca = load_cert(pki.client_ca_pem)
        assert new_client_ca != old_client_ca
        # Leaves were re-issued by the new CA at start; the old ones still verify against
        # the bundle, which holds both CAs.
        new_admin = load_cert((tls / "client-admin.crt").read_bytes())
        assert is_issued_by(new_admin, new_client_ca)
        assert not is_issued_by(old_admin, new_client_ca)
        bundle_cas = x509.load_pem_x509_certificates(pki.client_ca_pem)
        assert any(is_issued_by(old_admin, ca) for ca in bundle_cas)
        async with harness.new_client() as admin:
            await admin.request("GET", "/api/v1/namespaces/default")

        # The agent's old client certificate still authenticates.
        user = old_kubelet["users"][0]["user"]
        path = tmp_path / "old-kubelet.kubeconfig"
        write_kubeconfig(
            path,
            server_url=harness.url,
            ca_pem=pki.ca_pem,
            client_cert_pem=base64.b64decode(user["client-certificate-data"]),
            client_key_pem=base64.b64decode(user["client-key-data"]),
        )
        async with Client(ClientConfig.from_kubeconfig(path)) as kubelet:
            review = await kubelet.request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        assert review["status"]["userInfo"]["username"] == "system:node:worker-a"

        # The agent joins again with its old token and gets the new bundle and certificates.
        harness.server.set_join_secrets({"server": "s" * 24, "node": SECRET})
        url = harness.url
        again = join()
        async with asyncio.timeout(60):
            await again.start(None)  # type: ignore[arg-type]
        assert again.credentials is not None
        assert (again.credentials.etc_dir / "server-ca.crt").read_bytes() == pki.ca_pem
        kubelet_doc = yaml.safe_load(again.credentials.kubeconfig("kubelet").read_text())
        fresh = load_cert(
            base64.b64decode(kubelet_doc["users"][0]["user"]["client-certificate-data"])
        )
        assert is_issued_by(fresh, new_client_ca)
    finally:
        await harness.stop()
