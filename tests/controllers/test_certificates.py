"""csrsigning and csrapproving against a real API server: user and node CSRs end to end."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sampan.client import Client, ClientConfig
from sampan.client.api import CSRS
from sampan.controllers.base import ControllerManagerOptions
from sampan.controllers.certificates import CSRApprovingController, CSRSigningController
from sampan.pki.certs import is_issued_by, load_cert
from sampan.pki.kubeconfig import write_kubeconfig

from .conftest import eventually


def _options(api_server) -> ControllerManagerOptions:
    pki = api_server.server.pki
    return ControllerManagerOptions(
        signing_kube_apiserver_client_cert_file=str(pki.client_ca_cert_path),
        signing_kube_apiserver_client_key_file=str(pki.client_ca_key_path),
        signing_kubelet_client_cert_file=str(pki.client_ca_cert_path),
        signing_kubelet_client_key_file=str(pki.client_ca_key_path),
        signing_kubelet_serving_cert_file=str(pki.kubelet_ca_cert_path),
        signing_kubelet_serving_key_file=str(pki.kubelet_ca_key_path),
    )


def _request(
    cn: str, orgs: tuple[str, ...] = (), dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
):
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return key, base64.b64encode(pem).decode()


def _csr(name: str, request: str, signer: str, usages: list[str], **spec) -> dict:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": request, "signerName": signer, "usages": usages, **spec},
    }


async def _approve(client: Client, name: str) -> None:
    csr = await client.get(CSRS, name)
    csr.setdefault("status", {})["conditions"] = [
        {"type": "Approved", "status": "True", "reason": "Test", "message": "approved by test"}
    ]
    await client.request("PUT", CSRS.path(name=name, subresource="approval"), body=csr)


async def _issued(client: Client, name: str) -> x509.Certificate:
    async def signed():
        csr = await client.get(CSRS, name)
        return (csr.get("status") or {}).get("certificate")

    return load_cert(base64.b64decode(await eventually(signed)))


async def test_user_csr_signed_and_authenticates(api_server, client, run_controller, tmp_path):
    await run_controller(CSRSigningController, _options(api_server))
    key, request = _request("jane", ("devs",))
    await client.create(
        CSRS,
        _csr(
            "jane",
            request,
            "kubernetes.io/kube-apiserver-client",
            ["client auth", "digital signature"],
            expirationSeconds=3600,
        ),
    )
    await _approve(client, "jane")
    cert = await _issued(client, "jane")
    assert is_issued_by(cert, load_cert(api_server.server.pki.client_ca_pem))
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=50) < left <= dt.timedelta(hours=1)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    path = tmp_path / "jane.kubeconfig"
    write_kubeconfig(
        path,
        server_url=api_server.url,
        ca_pem=api_server.server.pki.ca_pem,
        client_cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        client_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    async with Client(ClientConfig.from_kubeconfig(path)) as jane:
        review = await jane.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    user = review["status"]["userInfo"]
    assert user["username"] == "jane"
    assert "devs" in user["groups"]


async def test_forbidden_usage_fails_with_condition(api_server, client, run_controller):
    await run_controller(CSRSigningController, _options(api_server))
    _, request = _request("mallory")
    await client.create(
        CSRS,
        _csr(
            "mallory",
            request,
            "kubernetes.io/kube-apiserver-client",
            ["client auth", "server auth"],
        ),
    )
    await _approve(client, "mallory")

    async def failed():
        csr = await client.get(CSRS, "mallory")
        return [c for c in csr.get("status", {}).get("conditions", []) if c["type"] == "Failed"]

    (condition,) = await eventually(failed)
    assert condition["status"] == "True"
    assert condition["reason"] == "SignerValidationFailure"
    assert condition["message"] == "invalid usage for client certificate: server auth"
    assert not (await client.get(CSRS, "mallory"))["status"].get("certificate")


async def test_short_expiration_is_raised_to_ten_minutes(api_server, client, run_controller):
    await run_controller(CSRSigningController, _options(api_server))
    _, request = _request("brief")
    await client.create(
        CSRS,
        _csr(
            "brief",
            request,
            "kubernetes.io/kube-apiserver-client",
            ["client auth"],
            expirationSeconds=600,
        ),
    )
    await _approve(client, "brief")
    cert = await _issued(client, "brief")
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=8) < left <= dt.timedelta(minutes=10)


async def test_node_client_csr_auto_approved_and_signed(api_server, client, run_controller):
    await run_controller(CSRApprovingController, _options(api_server))
    await run_controller(CSRSigningController, _options(api_server))
    node = await api_server.identity_config("system:node:n1", ("system:nodes",))
    usages = ["digital signature", "client auth"]
    async with Client(node) as kubelet:
        _, own = _request("system:node:n1", ("system:nodes",))
        await kubelet.create(
            CSRS,
            _csr("node-own", own, "kubernetes.io/kube-apiserver-client-kubelet", usages),
        )
        _, other = _request("system:node:n2", ("system:nodes",))
        await kubelet.create(
            CSRS,
            _csr("node-other", other, "kubernetes.io/kube-apiserver-client-kubelet", usages),
        )
    cert = await _issued(client, "node-own")
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    approved = (await client.get(CSRS, "node-own"))["status"]["conditions"][0]
    assert (approved["type"], approved["reason"]) == ("Approved", "AutoApproved")
    assert approved["message"] == (
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    )
    # Another node's name needs certificatesigningrequests/nodeclient, which nodes lack.
    other_csr = await client.get(CSRS, "node-other")
    # The server recorded the requester (what the SubjectAccessReview is about).
    assert other_csr["spec"]["username"] == "system:node:n1"
    assert "system:nodes" in other_csr["spec"]["groups"]
    assert not other_csr.get("status", {}).get("conditions")


async def test_kubelet_serving_waits_for_approval_then_uses_kubelet_ca(
    api_server, client, run_controller
):
    await run_controller(CSRApprovingController, _options(api_server))
    await run_controller(CSRSigningController, _options(api_server))
    node = await api_server.identity_config("system:node:n1", ("system:nodes",))
    async with Client(node) as kubelet:
        _, request = _request("system:node:n1", ("system:nodes",), dns=("n1",), ips=("10.0.0.5",))
        await kubelet.create(
            CSRS,
            _csr(
                "serving",
                request,
                "kubernetes.io/kubelet-serving",
                ["digital signature", "key encipherment", "server auth"],
            ),
        )
    # A user CSR in the same informer is handled meanwhile; serving stays pending.
    _, user_request = _request("probe")
    await client.create(
        CSRS, _csr("probe", user_request, "kubernetes.io/kube-apiserver-client", ["client auth"])
    )
    await _approve(client, "probe")
    await _issued(client, "probe")
    assert not (await client.get(CSRS, "serving")).get("status", {}).get("conditions")
    await _approve(client, "serving")
    cert = await _issued(client, "serving")
    pki = api_server.server.pki
    assert is_issued_by(cert, load_cert(pki.kubelet_ca_pem))
    assert not is_issued_by(cert, load_cert(pki.ca_pem))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1"]


async def _kubectl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode() + err.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_certificate_approve_then_whoami(api_server, run_controller, tmp_path):
    await run_controller(CSRApprovingController, _options(api_server))
    await run_controller(CSRSigningController, _options(api_server))
    admin = f"--kubeconfig={api_server.kubeconfig}"
    key, request = _request("alice", ("qa",))
    manifest = tmp_path / "csr.yaml"
    manifest.write_text(
        json.dumps(
            _csr(
                "alice",
                request,
                "kubernetes.io/kube-apiserver-client",
                ["client auth"],
                expirationSeconds=86400,
            )
        )
    )
    code, out = await _kubectl(admin, "apply", "-f", str(manifest))
    assert code == 0, out
    code, out = await _kubectl(admin, "get", "csr", "alice")
    assert code == 0 and "Pending" in out, out
    code, out = await _kubectl(admin, "certificate", "approve", "alice")
    assert code == 0, out
    assert "certificatesigningrequest.certificates.k8s.io/alice approved" in out

    async def issued():
        code, out = await _kubectl(
            admin, "get", "csr", "alice", "-o", "jsonpath={.status.certificate}"
        )
        return out.strip() if code == 0 else None

    cert_path, key_path = tmp_path / "alice.crt", tmp_path / "alice.key"
    cert_path.write_bytes(base64.b64decode(await eventually(issued)))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    code, out = await _kubectl(admin, "get", "csr", "alice")
    assert "Approved,Issued" in out, out
    # A kubeconfig for alice, built the way a user would.
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(api_server.server.pki.ca_pem)
    mine = f"--kubeconfig={tmp_path / 'alice.kubeconfig'}"
    for step in (
        ("set-cluster", "c", f"--server={api_server.url}", f"--certificate-authority={ca_path}"),
        ("set-credentials", "alice", f"--client-certificate={cert_path}"),
        ("set-credentials", "alice", f"--client-key={key_path}"),
        ("set-context", "a", "--cluster=c", "--user=alice"),
        ("use-context", "a"),
    ):
        code, out = await _kubectl(mine, "config", *step)
        assert code == 0, out
    code, out = await _kubectl(mine, "auth", "whoami", "-o", "json")
    assert code == 0, out
    user = json.loads(out)["status"]["userInfo"]
    assert user["username"] == "alice"
    assert "qa" in user["groups"]
