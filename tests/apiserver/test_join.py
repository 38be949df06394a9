"""POST /v1-sampan/node against a real API server over a real socket: a node gets
certificates only for its own name and addresses — never the API server's names, its
serving-certificate IPs, the ``kubernetes`` Service IP, loopback, or another node's address —
and its serving certificate comes from the kubelet CA, so it never passes as the API server."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from sampan.apiserver import APIServer, APIServerOptions
from sampan.client import Client, ClientConfig
from sampan.client.api import NODES, SECRETS
from sampan.datastore import open_backend
from sampan.pki.certs import cert_names, is_issued_by, load_cert, split_names

HOSTNAME = "sampan-host"
HOST_IP = "192.0.2.10"
TLS_SAN_NAME = "api.example.test"
TLS_SAN_IP = "192.0.2.50"
SERVER_SECRET = "server-secret-0123456789"
AGENT_SECRET = "agent-secret-0123456789"
PASSWORD = "p" * 32


class JoinHarness:
    def __init__(self, server: APIServer, backend: Any, kubeconfig: Path) -> None:
        self.server = server
        self.backend = backend
        self.kubeconfig = kubeconfig

    async def join(
        self,
        name: str,
        ips: list[str],
        *,
        secret: str = AGENT_SECRET,
        password: str = PASSWORD,
    ) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context(cadata=self.server.pki.ca_pem.decode())
        auth = "Basic " + base64.b64encode(f"node:{secret}".encode()).decode()
        body = {"nodeName": name, "nodePassword": password, "nodeIPs": ips}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.server.url + "/v1-sampan/node",
                json=body,
                headers={"Authorization": auth},
                ssl=context,
            ) as resp,
        ):
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[JoinHarness]:
    backend = open_backend("", tmp_path)
    await backend.start()
    kubeconfig = tmp_path / "admin.kubeconfig"
    server = APIServer(
        APIServerOptions(
            tls_dir=tmp_path / "server" / "tls",
            hostname=HOSTNAME,
            node_ips=(HOST_IP,),
            tls_sans=(TLS_SAN_NAME, TLS_SAN_IP),
            bind_address="127.0.0.1",
            port=0,
            kubeconfig_path=kubeconfig,
        ),
        backend,
    )
    await server.start()
    server.set_join_secrets({"server": SERVER_SECRET, "node": AGENT_SECRET}, local_node=HOSTNAME)
    try:
        yield JoinHarness(server, backend, kubeconfig)
    finally:
        await server.stop()
        await backend.close()


def _assert_refused(status: int, body: dict[str, Any], code: int, *needles: str) -> None:
    assert (status, body.get("kind"), body.get("code")) == (code, "Status", code), body
    assert body["status"] == "Failure"
    for needle in needles:
        assert needle in body["message"], body["message"]


@pytest.mark.parametrize(
    "name",
    [
        "kubernetes.default.svc",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc.cluster.local",
        "kubernetes.default.svc.corp.example",
        "localhost",
        TLS_SAN_NAME,
        HOSTNAME,  # the server host's name: only its own node may have it
    ],
)
async def test_api_server_names_are_refused(harness: JoinHarness, name: str) -> None:
    status, body = await harness.join(name, ["192.0.2.21"])
    _assert_refused(status, body, 403, f'node name "{name}" is reserved', "API server")
    # nothing was recorded for the refused name
    async with Client(ClientConfig.from_kubeconfig(harness.kubeconfig)) as client:
        secrets = (await client.list(SECRETS, namespace="kube-system"))["items"]
    assert not [s for s in secrets if s["metadata"]["name"].startswith(name + ".")]


@pytest.mark.parametrize(
    ("ip", "code", "needle"),
    [
        ("10.43.0.1", 403, "10.43.0.1 is reserved: it is an address of the API server"),
        (TLS_SAN_IP, 403, f"{TLS_SAN_IP} is reserved: it is an address of the API server"),
        (HOST_IP, 403, f"{HOST_IP} is reserved: it is an address of the API server"),
        ("127.0.0.1", 400, "127.0.0.1 is a loopback address"),
        ("127.0.0.5", 400, "127.0.0.5 is a loopback address"),
        ("::1", 400, "::1 is a loopback address"),
        ("0.0.0.0", 400, "0.0.0.0 is an unspecified address"),
        ("::", 400, ":: is an unspecified address"),
        ("::ffff:10.43.0.1", 400, "::ffff:10.43.0.1 is an IPv4-mapped address"),
    ],
)
async def test_api_server_addresses_are_refused(
    harness: JoinHarness, ip: str, code: int, needle: str
) -> None:
    status, body = await harness.join("worker-1", ["192.0.2.21", ip])
    _assert_refused(status, body, code, "nodeIPs: " + needle)


async def test_the_acceptance_join_is_refused(harness: JoinHarness) -> None:
    """The join from the review: the service name plus the service IP, loopback and a node
    address."""
    status, body = await harness.join(
        "kubernetes.default.svc", ["10.43.0.1", "127.0.0.1", "192.0.2.21"]
    )
    _assert_refused(status, body, 403, "kubernetes.default.svc")
    status, body = await harness.join("worker-1", ["10.43.0.1", "127.0.0.1", "192.0.2.21"])
    _assert_refused(status, body, 403, "10.43.0.1")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("10.43.0.1", "nodeName: 10.43.0.1 is reserved"),
        ("127.0.0.1", "nodeName: 127.0.0.1 is a loopback address"),
        (TLS_SAN_IP, f"nodeName: {TLS_SAN_IP} is reserved"),
    ],
)
async def test_a_node_name_that_is_a_reserved_address_is_refused(
    harness: JoinHarness, name: str, needle: str
) -> None:
    status, body = await harness.join(name, ["192.0.2.21"])
    assert status in (400, 403)
    _assert_refused(status, body, status, needle)


async def test_an_invalid_node_name_is_refused(harness: JoinHarness) -> None:
    status, body = await harness.join("Worker_1", ["192.0.2.21"])
    _assert_refused(status, body, 400, 'invalid node name "Worker_1"', "RFC 1123 subdomain")


async def test_a_normal_join_gets_a_kubelet_ca_certificate_for_its_own_names_only(
    harness: JoinHarness, tmp_path: Path
) -> None:
    status, creds = await harness.join("worker-1", ["192.0.2.21"])
    assert status == 200, creds
    pki = harness.server.pki
    serving = load_cert(creds["kubeletServingCert"].encode())
    assert cert_names(serving) == split_names(["worker-1", "192.0.2.21"])
    assert is_issued_by(serving, load_cert(pki.kubelet_ca_pem))
    assert not is_issued_by(serving, load_cert(pki.ca_pem))
    assert "kubeletCA" not in creds  # the node does not need it; nothing else trusts it

    # Over real TLS: serve with the node's certificate and connect as the API's clients do.
    (tmp_path / "n.crt").write_text(creds["kubeletServingCert"])
    (tmp_path / "n.key").write_text(creds["kubeletServingKey"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "n.crt", tmp_path / "n.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = listener.sockets[0].getsockname()[1]

    async def handshake(ca_pem: bytes, server_hostname: str) -> str:
        context = ssl.create_default_context(cadata=ca_pem.decode())
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname=server_hostname
            )
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message
        writer.close()
        return "ok"

    try:
        # a pod or kubectl trusting the cluster CA: not the API server
        assert "unable to get local issuer" in await handshake(pki.ca_pem, "kubernetes.default.svc")
        assert "unable to get local issuer" in await handshake(pki.ca_pem, "worker-1")
        # even trusting the kubelet CA, it is only worker-1
        assert "mismatch" in await handshake(pki.kubelet_ca_pem, "kubernetes.default.svc")
        assert await handshake(pki.kubelet_ca_pem, "worker-1") == "ok"
    finally:
        listener.close()
        await listener.wait_closed()

    # the client certificate is the node's own identity
    client_cert = load_cert(creds["kubeletClientCert"].encode())
    subject = client_cert.subject
    assert subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        "system:node:worker-1"
    )


async def test_a_second_node_may_not_claim_the_first_nodes_address(harness: JoinHarness) -> None:
    status, _ = await harness.join("worker-1", ["192.0.2.21"])
    assert status == 200
    # before worker-1's Node exists, its join's claim holds the address
    status, body = await harness.join("worker-2", ["192.0.2.22", "192.0.2.21"], password="q" * 32)
    _assert_refused(
        status, body, 403, 'nodeIPs: 192.0.2.21 is already an address of node "worker-1"'
    )
    # a node whose name is another node's address
    status, body = await harness.join("192.0.2.21", ["192.0.2.23"], password="q" * 32)
    _assert_refused(
        status, body, 403, 'nodeName: 192.0.2.21 is already an address of node "worker-1"'
    )
    # worker-1 joins again (agent restart) with the same address: fine
    status, _ = await harness.join("worker-1", ["192.0.2.21"])
    assert status == 200
    # worker-1 moves to another address: its old one is free for another node
    status, _ = await harness.join("worker-1", ["192.0.2.24"])
    assert status == 200
    status, _ = await harness.join("worker-4", ["192.0.2.21"], password="t" * 32)
    assert status == 200
    status, body = await harness.join("worker-5", ["192.0.2.24"], password="u" * 32)
    _assert_refused(status, body, 403, '192.0.2.24 is already an address of node "worker-1"')
    status, body = await harness.join("worker-1", ["192.0.2.21"])
    _assert_refused(status, body, 403, '192.0.2.21 is already an address of node "worker-4"')
    # the same machine with another password is still refused by the node password
    status, body = await harness.join("worker-1", ["192.0.2.24"], password="r" * 32)
    _assert_refused(status, body, 403, "node password rejected")

    # once a Node exists, its status.addresses hold its addresses
    async with Client(ClientConfig.from_kubeconfig(harness.kubeconfig)) as client:
        node = await client.create(NODES, {"metadata": {"name": "worker-9"}})
        node["status"] = {
            "addresses": [
                {"type": "InternalIP", "address": "192.0.2.99"},
                {"type": "Hostname", "address": "worker-9"},
            ]
        }
        await client.update_status(NODES, node)
    status, body = await harness.join("worker-3", ["192.0.2.99"], password="s" * 32)
    _assert_refused(status, body, 403, '192.0.2.99 is already an address of node "worker-9"')
    status, _ = await harness.join("worker-3", ["192.0.2.33"], password="s" * 32)
    assert status == 200


async def test_only_the_servers_own_node_may_claim_the_hosts_name_and_address(
    harness: JoinHarness,
) -> None:
    # the agent token does not make a node the server's own node
    status, body = await harness.join(HOSTNAME, [HOST_IP])
    _assert_refused(status, body, 403, "reserved")
    # the server token with another name may not take the host's address
    status, body = await harness.join("worker-1", [HOST_IP], secret=SERVER_SECRET)
    _assert_refused(status, body, 403, f"{HOST_IP} is reserved")
    # the embedded agent (server token, the local node's name) may
    status, creds = await harness.join(HOSTNAME, [HOST_IP], secret=SERVER_SECRET)
    assert status == 200, creds
    serving = load_cert(creds["kubeletServingCert"].encode())
    assert cert_names(serving) == split_names([HOSTNAME, HOST_IP])
    # but not the Service IP or loopback, which are not the host's
    status, body = await harness.join(HOSTNAME, [HOST_IP, "10.43.0.1"], secret=SERVER_SECRET)
    _assert_refused(status, body, 403, "10.43.0.1 is reserved")
