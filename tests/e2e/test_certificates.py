"""Certificates on a whole node as a user meets them: a user CSR signed by the running
controller manager and used with kubectl; ``sampan certificate check``; ``rotate`` with the
server stopped, then a start that issues the rotated certificate again."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.test_single_node import Cluster, cluster  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_user_csr_check_and_rotate(cluster: Cluster) -> None:  # noqa: F811
    cluster.wait(
        "the API",
        lambda: (
            cluster.kubeconfig.exists()
            and cluster.kubectl("get", "--raw", "/readyz", check=False) == "ok"
        ),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devs"),
            x509.NameAttribute(NameOID.COMMON_NAME, "jane"),
        ]
    )
    request = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    )
    manifest = cluster.root / "csr.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"name": "jane"},
                "spec": {
                    "request": base64.b64encode(
                        request.public_bytes(serialization.Encoding.PEM)
                    ).decode(),
                    "signerName": "kubernetes.io/kube-apiserver-client",
                    "usages": ["client auth"],
                },
            }
        )
    )
    cluster.kubectl("apply", "-f", str(manifest))
    cluster.kubectl("certificate", "approve", "jane")
    issued = cluster.wait(
        "the certificate",
        lambda: cluster.kubectl("get", "csr", "jane", "-o", "jsonpath={.status.certificate}"),
    )
    (cluster.root / "jane.crt").write_bytes(base64.b64decode(issued))
    (cluster.root / "jane.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cluster.kubectl(
        "config",
        "set-credentials",
        "jane",
        f"--client-certificate={cluster.root / 'jane.crt'}",
        f"--client-key={cluster.root / 'jane.key'}",
    )
    whoami = json.loads(cluster.kubectl("--user=jane", "auth", "whoami", "-o", "json"))
    assert whoami["status"]["userInfo"]["username"] == "jane"

    out = cluster.sampan(
        "certificate", "check", "-o", "json", "-c", str(cluster.config), "-d", str(cluster.data)
    )
    assert out.returncode == 0, out.stderr
    names = {row["Filename"] for row in json.loads(out.stdout)["Certificates"]}
    assert {"serving-kube-apiserver.crt", "client-admin.crt", "kubelet.kubeconfig"} <= names

    serving = cluster.data / "server" / "tls" / "serving-kube-apiserver.crt"
    serial = x509.load_pem_x509_certificate(serving.read_bytes()).serial_number
    assert cluster.proc is not None
    cluster.proc.send_signal(signal.SIGTERM)
    cluster.proc.wait(timeout=30)
    out = cluster.sampan(
        "certificate",
        "rotate",
        "-s",
        "api-server",
        "-c",
        str(cluster.config),
        "-d",
        str(cluster.data),
    )
    assert out.returncode == 0, out.stderr
    assert not serving.exists()
    cluster.log = cluster.root / "server2.log"
    cluster.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sampan.cli.main",
            "server",
            "--config",
            str(cluster.config),
            "--data-dir",
            str(cluster.data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=cluster.log.open("w"),
        env=cluster.env(),
    )
    cluster.wait(
        "the API again", lambda: cluster.kubectl("get", "--raw", "/readyz", check=False) == "ok"
    )
    assert x509.load_pem_x509_certificate(serving.read_bytes()).serial_number != serial
    assert "issued API serving certificate" in cluster.log.read_text()
