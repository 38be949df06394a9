"""pods/log, pods/exec and friends in the API server, against a stand-in kubelet.

The stand-in is a TLS server with a serving certificate from the kubelet serving CA that
records each request and either answers a log body or switches protocols and echoes bytes,
so these tests see exactly what the API server sends to a kubelet and what it relays back.
The whole path into containerd is tested in tests/kubelet/server/.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sampan.api.errors import BadRequest
from sampan.apiserver.podproxy import _container_name, kubelet_target
from sampan.pki import issue_client_certificate, issue_kubelet_serving_certificate
from sampan.pki.certs import (
    cert_to_pem,
    issue_leaf,
    key_to_pem,
    load_cert,
    load_private_key,
    split_names,
)
from tests.apiserver.conftest import ServerHarness

NODE = "fake-node"


def test_kubelet_target_prefers_internal_ip_and_reads_the_port() -> None:
    node = {
        "metadata": {"name": "n"},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "10.0.0.5"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}},
        },
    }
    target = kubelet_target(node)
    assert (target.host, target.port) == ("10.0.0.5", 12345)
    assert target.url("/healthz") == "https://10.0.0.5:12345/healthz"
    bare = kubelet_target({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}})
    assert (bare.host, bare.port) == ("n1", 10250)
    assert (
        kubelet_target(
            {"status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}}
        ).url("/x")
        == "https://[fd00::1]:10250/x"
    )
    with pytest.raises(BadRequest):
        kubelet_target({"metadata": {"name": "n"}, "status": {}})


def test_container_name_defaults_and_errors() -> None:
    one = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}
    assert _container_name(one, "") == "a"
    two = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
    }
    assert _container_name(two, "i") == "i"
    with pytest.raises(
        BadRequest, match=r"choose one of: \[a b\] or one of the init containers: \[i\]"
    ):
        _container_name(two, "")
    with pytest.raises(BadRequest, match="container z is not valid for pod p"):
        _container_name(two, "z")


@dataclass
class FakeKubelet:
    port: int = 0
    heads: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der)
            self.peers.append(
                cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
            )
            path = head.split(" ", 2)[1]
            if path.startswith("/containerLogs/"):
                body = b"line 1\nline 2\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
            elif path.startswith("/exec/"):
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
                )
                await writer.drain()
                while chunk := await reader.read(1024):
                    writer.write(chunk.upper())
                    await writer.drain()
                    if b"BYE" in chunk.upper():
                        break
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def fake_kubelet(harness: ServerHarness, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    pki = harness.server.pki
    cert, key = await asyncio.to_thread(
        issue_kubelet_serving_certificate, pki, [NODE], ["127.0.0.1"]
    )
    (tmp_path / "k.crt").write_bytes(cert)
    (tmp_path / "k.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "k.crt", tmp_path / "k.key")
    context.load_verify_locations(cadata=pki.client_ca_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    fake = FakeKubelet()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, ssl=context)
    fake.port = server.sockets[0].getsockname()[1]
    status, node = await harness.request(
        "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
    )
    assert status == 201, node
    node["status"] = {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": fake.port}},
    }
    status, _ = await harness.request("PUT", f"/api/v1/nodes/{NODE}/status", node)
    assert status == 200
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
    }
    status, created = await harness.request("POST", "/api/v1/namespaces/default/pods", pod)
    assert status == 201, created
    await set_container_state(harness, {"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()


async def set_container_state(
    harness: ServerHarness, state: dict[str, Any], last: dict[str, Any] | None = None
) -> None:
    status, pod = await harness.request("GET", "/api/v1/namespaces/default/pods/p")
    assert status == 200
    pod["status"] = {
        "phase": "Running" if "running" in state else "Pending",
        "containerStatuses": [
            {
                "name": "c",
                "image": "busybox",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": state,
                "lastState": last or {},
                **({"containerID": "containerd://abc"} if "running" in state else {}),
            }
        ],
    }
    status, body = await harness.request("PUT", "/api/v1/namespaces/default/pods/p/status", pod)
    assert status == 200, body


async def test_logs_of_a_container_without_logs_answer_the_kubelets_reasons(
    harness: ServerHarness, fake_kubelet: FakeKubelet
) -> None:
    await set_container_state(harness, {"waiting": {"reason": "ContainerCreating"}})
    async with harness.session.get("/api/v1/namespaces/default/pods/p/log") as response:
        assert response.status == 400
        assert await response.read() == (
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            b'"message":"container \\"c\\" in pod \\"p\\" is waiting to start: '
            b'ContainerCreating","reason":"BadRequest","code":400}\n'
        )
    await set_container_state(harness, {"waiting": {"reason": "ImagePullBackOff"}})
    status, body = await harness.request("GET", "/api/v1/namespaces/default/pods/p/log")
    assert status == 400
    assert body["message"] == (
        'container "c" in pod "p" is waiting to start: trying and failing to pull image'
    )
    status, body = await harness.request(
        "GET", "/api/v1/namespaces/default/pods/p/log", params={"previous": "true"}
    )
    assert status == 400
    assert body["message"] == 'previous terminated container "c" in pod "p" not found'
    # A container waiting to restart still has the logs of its last run.
    terminated = {"terminated": {"exitCode": 1, "containerID": "containerd://old"}}
    await set_container_state(harness, {"waiting": {"reason": "CrashLoopBackOff"}}, terminated)
    status, body = await harness.request("GET", "/api/v1/namespaces/default/pods/p/log")
    assert (status, body) == (200, "line 1\nline 2\n")


async def test_pod_log_is_streamed_from_the_kubelet(
    harness: ServerHarness, fake_kubelet: FakeKubelet
) -> None:
    status, body = await harness.request(
        "GET",
        "/api/v1/namespaces/default/pods/p/log",
        params={"tailLines": "2", "follow": "true", "bogus": "x"},
    )
    assert (status, body) == (200, "line 1\nline 2\n")
    request_line = fake_kubelet.heads[-1].split("\r\n")[0]
    assert request_line.startswith("GET /containerLogs/default/p/c?")
    assert "tailLines=2" in request_line and "follow=true" in request_line
    assert "bogus" not in request_line
    assert fake_kubelet.peers[-1] == "system:kube-apiserver"


async def _raw_upgrade(
    harness: ServerHarness,
    path: str,
    headers: dict[str, str],
    cert: tuple[Path, Path] | None = None,
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    context = harness.ssl_context(client_cert=cert is None)
    if cert is not None:
        context.load_cert_chain(*cert)
    port = harness.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    lines = [
        f"GET {path} HTTP/1.1" if "Sec-WebSocket-Key" in headers else f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Length: 0",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    return head, reader, writer


async def test_exec_upgrade_is_spliced_to_the_kubelet(
    harness: ServerHarness, fake_kubelet: FakeKubelet
) -> None:
    head, reader, writer = await _raw_upgrade(
        harness,
        "/api/v1/namespaces/default/pods/p/exec?command=ls&command=%2F&stdout=true",
        {
            "Connection": "Upgrade",
            "Upgrade": "SPDY/3.1",
            "X-Stream-Protocol-Version": "v4.channel.k8s.io",
        },
    )
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
        writer.write(b"hello ")
        assert await reader.readexactly(6) == b"HELLO "
        writer.write(b"bye")
        assert await reader.readexactly(3) == b"BYE"
        assert await reader.read() == b""  # the kubelet ended: so did the API server
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    request_line = fake_kubelet.heads[-1].split("\r\n")[0]
    assert request_line == "POST /exec/default/p/c?command=ls&command=%2F&stdout=true HTTP/1.1"
    assert "Upgrade: SPDY/3.1" in fake_kubelet.heads[-1]


async def _user_cert(harness: ServerHarness, tmp_path: Path, user: str) -> tuple[Path, Path]:
    cert, key = await asyncio.to_thread(issue_client_certificate, harness.server.pki, user)
    (tmp_path / f"{user}.crt").write_bytes(cert)
    (tmp_path / f"{user}.key").write_bytes(key)
    return tmp_path / f"{user}.crt", tmp_path / f"{user}.key"


async def _grant(harness: ServerHarness, user: str, verbs: list[str]) -> None:
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": user, "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": verbs}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    base = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    assert (await harness.request("POST", f"{base}/roles", role))[0] == 201
    assert (await harness.request("POST", f"{base}/rolebindings", binding))[0] == 201


WEBSOCKET_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Protocol": "v5.channel.k8s.io",
}


async def test_websocket_exec_also_needs_create(
    harness: ServerHarness, fake_kubelet: FakeKubelet, tmp_path: Path
) -> None:
    path = "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true"
    await _grant(harness, "reader", ["get"])
    head, _, writer = await _raw_upgrade(
        harness, path, WEBSOCKET_HEADERS, await _user_cert(harness, tmp_path, "reader")
    )
    writer.close()
    assert head.startswith(b"HTTP/1.1 403"), head
    await _grant(harness, "runner", ["get", "create"])
    head, _, writer = await _raw_upgrade(
        harness, path, WEBSOCKET_HEADERS, await _user_cert(harness, tmp_path, "runner")
    )
    writer.close()
    # Allowed: the (stand-in) kubelet's answer comes back, here a protocol switch.
    assert head.startswith(b"HTTP/1.1 101"), head


@pytest.mark.parametrize(
    "impostor",
    ["server-ca", "other-address"],
)
async def test_a_kubelet_must_have_a_kubelet_ca_certificate_for_the_address_dialled(
    harness: ServerHarness, fake_kubelet: FakeKubelet, tmp_path: Path, impostor: str
) -> None:
    """The API server trusts only the kubelet serving CA, and checks the address it dials:
    a certificate from the server CA (what nodes got before the kubelet CA existed, and what
    the API server itself serves with) or one for another address is refused."""
    pki = harness.server.pki
    if impostor == "server-ca":
        cert, key = issue_leaf(
            load_cert(pki.ca_pem),
            load_private_key(pki.server_ca_key_path.read_bytes()),
            common_name=NODE,
            names=split_names([NODE, "127.0.0.1"]),
            server_auth=True,
        )
        cert_pem, key_pem = cert_to_pem(cert), key_to_pem(key)
    else:
        cert_pem, key_pem = await asyncio.to_thread(
            issue_kubelet_serving_certificate, pki, ["other-node"], ["192.0.2.5"]
        )
    (tmp_path / "i.crt").write_bytes(cert_pem)
    (tmp_path / "i.key").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "i.crt", tmp_path / "i.key")
    fake = FakeKubelet()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, ssl=context)
    try:
        status, node = await harness.request("GET", f"/api/v1/nodes/{NODE}")
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = server.sockets[
            0
        ].getsockname()[1]
        status, _ = await harness.request("PUT", f"/api/v1/nodes/{NODE}/status", node)
        assert status == 200
        status, body = await harness.request("GET", "/api/v1/namespaces/default/pods/p/log")
        assert status == 503, body
        assert body["reason"] == "ServiceUnavailable"
        assert (
            "its serving certificate is not valid for this address or not signed by"
            in (body["message"])
        )
        head, _, writer = await _raw_upgrade(
            harness,
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true",
            {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"},
        )
        writer.close()
        assert head.startswith(b"HTTP/1.1 503"), head
        assert fake.heads == []  # nothing was ever sent to the impostor
    finally:
        server.close()
        await server.wait_closed()
