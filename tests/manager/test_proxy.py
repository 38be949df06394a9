"""The authenticating proxy ``/k8s/clusters/<id>/...`` and ``generateKubeconfig``.

Cluster ``local`` is the test's in-process API server, reached through the manager's own
``LocalDialer``; real kubectl runs with the generated kubeconfig. Other clusters are a TLS
test server behind a dialer the test installs (as the tunnel will be), to see exactly what a
downstream receives, to upgrade a connection, and to fail mid-request.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from sampan.client import Client, NotFoundError
from sampan.client.api import CLUSTERROLEBINDINGS, CLUSTERROLES
from sampan.manager.component import ManagerComponent
from sampan.manager.downstream_rbac import MANAGED_LABEL
from sampan.manager.proxy import ByteReader, ByteWriter, ClusterNotConnected, Downstream
from sampan.pki.tls import server_ssl_context
from tests.manager.conftest import ManagerHTTP
from tests.support.apiserver import ApiServerHarness
from tests.support.poll import EVENTUALLY_TIMEOUT_S, eventually

PASSWORD = "a long enough password"


async def _user(http: ManagerHTTP, admin_token: str, username: str) -> tuple[str, str]:
    status, body = await http.call(
        "POST", "/v3/users", token=admin_token, json={"username": username, "password": PASSWORD}
    )
    assert status == 201, body
    status, login = await http.login(username, PASSWORD)
    assert status == 201, login
    return body["id"], login["token"]


async def _bind(http: ManagerHTTP, admin_token: str, user_id: str, cluster: str, role: str) -> str:
    status, body = await http.call(
        "POST",
        "/v3/clusterroletemplatebindings",
        token=admin_token,
        json={"userId": user_id, "clusterId": cluster, "roleTemplateId": role},
    )
    assert status == 201, body
    return str(body["id"])


async def _kubeconfig(http: ManagerHTTP, token: str, cluster: str, path: Path) -> Path:
    status, body = await http.call(
        "POST", f"/v3/clusters/{cluster}?action=generateKubeconfig", token=token
    )
    assert status == 200, body
    assert body["type"] == "generateKubeConfigOutput"
    await asyncio.to_thread(path.write_text, body["config"])
    return path


async def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    process = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _kubectl_ok(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    code, out, err = await _kubectl(kubeconfig, *args, stdin=stdin)
    assert code == 0, err
    return out


CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: through-the-manager, namespace: default}
data: {hello: world}
"""


async def test_generated_kubeconfig_and_kubectl_through_the_proxy(
    http: ManagerHTTP,
    admin_token: str,
    manager: ManagerComponent,
    client: Client,
    tmp_path: Path,
) -> None:
    config_path = await _kubeconfig(http, admin_token, "local", tmp_path / "admin.yaml")
    config = yaml.safe_load(config_path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"{http.base}/k8s/clusters/local"
    token = config["users"][0]["user"]["token"]
    assert token.startswith("token-") and token != admin_token  # a new token of the caller
    assert (await http.call("GET", "/v3/users?me=true", token=token))[0] == 200
    status, body = await http.call(
        "GET", "/v3/clusters/local?action=generateKubeconfig", token=admin_token
    )
    assert status == 200 and body["config"].startswith("apiVersion: v1")

    # Admins are cluster-admin downstream once the RBAC pass has run.
    async def whoami() -> dict[str, Any]:
        code, out, _ = await _kubectl(config_path, "auth", "whoami", "-o", "json")
        assert code == 0
        return dict(json.loads(out))

    review = await eventually(whoami, what="kubectl auth whoami through the proxy")
    admin_binding = await client.get(CLUSTERROLEBINDINGS, "sampan-admin-u-admin")
    assert admin_binding["roleRef"]["name"] == "cluster-admin"
    assert review["status"]["userInfo"]["username"] == "u-admin"
    assert "system:authenticated" in review["status"]["userInfo"]["groups"]
    assert "system:masters" not in review["status"]["userInfo"]["groups"]

    out = await _kubectl_ok(config_path, "get", "namespaces", "-o", "name")
    assert "namespace/default" in out.split()
    out = await _kubectl_ok(config_path, "apply", "-f", "-", stdin=CONFIGMAP)
    assert "configmap/through-the-manager created" in out

    # A watch streams through: the event of a later change reaches kubectl while it runs.
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    watch = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(config_path),
        "get",
        "configmaps",
        "-n",
        "default",
        "--watch-only",
        "-o",
        "name",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None

        created: list[str] = []

        async def watched() -> str:
            name = f"w-{len(created)}"
            await _kubectl_ok(config_path, "create", "configmap", name, "-n", "default")
            created.append(name)
            try:
                async with asyncio.timeout(5):
                    return (await watch.stdout.readline()).decode().strip()  # type: ignore[union-attr]
            except TimeoutError:
                return ""

        line = await eventually(watched, what="a watch event through the proxy")
        assert line.startswith("configmap/w-")
    finally:
        watch.kill()
        await watch.wait()


async def test_read_only_user_and_downstream_rbac(
    http: ManagerHTTP,
    admin_token: str,
    manager: ManagerComponent,
    client: Client,
    tmp_path: Path,
) -> None:
    user_id, token = await _user(http, admin_token, "reader")
    # Not bound to local: 403 from the manager (no kubeconfig, nothing forwarded).
    status, body = await http.call("GET", "/k8s/clusters/local/api/v1/pods", token=token)
    assert status == 403 and body["kind"] == "Status" and body["reason"] == "Forbidden", body
    status, _ = await http.call("POST", "/v3/clusters/local?action=generateKubeconfig", token=token)
    assert status == 403

    binding = await _bind(http, admin_token, user_id, "local", "read-only")
    crb_name = f"sampan-crtb-{binding}"
    crb = await eventually(lambda: _get(client, CLUSTERROLEBINDINGS, crb_name))
    assert crb["roleRef"]["name"] == "sampan-rt-read-only"
    assert crb["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user_id}
    ]
    assert crb["metadata"]["labels"][MANAGED_LABEL] == "true"
    role = await _get(client, CLUSTERROLES, "sampan-rt-read-only")
    assert role is not None and role["rules"][0]["verbs"] == ["get", "list", "watch"]

    config_path = await _kubeconfig(http, token, "local", tmp_path / "reader.yaml")
    code, out, err = await _kubectl(config_path, "get", "pods", "-A")
    assert code == 0 and "No resources found" in out + err, err
    code, _, err = await _kubectl(config_path, "create", "configmap", "nope", "-n", "default")
    assert code != 0
    assert f'User "{user_id}" cannot create resource "configmaps"' in err, err
    out = await _kubectl_ok(config_path, "auth", "whoami", "-o", "json")
    assert json.loads(out)["status"]["userInfo"]["username"] == user_id

    # Deleting the binding removes the downstream binding and the now unused role.
    status, _ = await http.call(
        "DELETE", f"/v3/clusterroletemplatebindings/{binding}", token=admin_token
    )
    assert status == 200

    async def gone() -> bool:
        return (
            await _get(client, CLUSTERROLEBINDINGS, crb_name) is None
            and await _get(client, CLUSTERROLES, "sampan-rt-read-only") is None
        )

    await eventually(gone, what="the downstream binding removed")
    status, body = await http.call("GET", "/k8s/clusters/local/api/v1/pods", token=token)
    assert status == 403


async def _get(client: Client, resource: Any, name: str) -> dict[str, Any] | None:
    try:
        return await client.get(resource, name)
    except NotFoundError:
        return None


async def test_client_identity_headers_are_stripped(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent
) -> None:
    user_id, token = await _user(http, admin_token, "mallory")
    await _bind(http, admin_token, user_id, "local", "read-only")
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    headers = {
        "Impersonate-User": "u-admin",
        "Impersonate-Group": "system:masters",
        "X-Remote-User": "u-admin",
    }
    status, body = await http.call(
        "POST",
        "/k8s/clusters/local/apis/authentication.k8s.io/v1/selfsubjectreviews",
        token=token,
        json=review,
        headers=headers,
    )
    assert status == 201, body
    assert body["status"]["userInfo"]["username"] == user_id
    assert "system:masters" not in body["status"]["userInfo"]["groups"]


async def test_manager_errors_are_status_bodies(http: ManagerHTTP, admin_token: str) -> None:
    status, body = await http.call("GET", "/k8s/clusters/local/version")
    assert status == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    status, body = await http.call("GET", "/k8s/clusters/c-nothere/version", token=admin_token)
    assert status == 404 and body["reason"] == "NotFound" and body["code"] == 404
    status, body = await http.call("GET", "/k8s/clusters/LOCAL/version", token=admin_token)
    assert status == 404 and body["kind"] == "Status"  # no object name: no cluster
    for odd in ("lo%2Fcal", "local%2F..", ".."):  # never forwarded, whoever answers the 404
        status, body = await http.call("GET", f"/k8s/clusters/{odd}/version", token=admin_token)
        assert status == 404, odd
    _, token = await _user(http, admin_token, "nobody")
    status, body = await http.call("GET", "/k8s/clusters/c-nothere/version", token=token)
    assert status == 403 and body["reason"] == "Forbidden"
    # A user who must change their password reaches no cluster, even a bound one.
    status, body = await http.call(
        "POST",
        "/v3/users",
        token=admin_token,
        json={"username": "newbie", "password": PASSWORD, "mustChangePassword": True},
    )
    assert status == 201, body
    await _bind(http, admin_token, body["id"], "local", "read-only")
    status, login = await http.login("newbie", PASSWORD)
    status, body = await http.call("GET", "/k8s/clusters/local/version", token=login["token"])
    assert status == 403 and body["reason"] == "Forbidden"


# --- a downstream behind a test dialer -----------------------------------------------------


class TestDownstream:
    """A TLS server playing a downstream API server, and the dialer that reaches it."""

    __test__ = False

    def __init__(self, harness: ApiServerHarness) -> None:
        assert harness.server is not None
        self.pki = harness.server.pki
        self.seen: list[dict[str, list[str]]] = []
        self.release = asyncio.Event()
        self.port = 0
        self.transports: list[asyncio.BaseTransport] = []
        self.impersonated: list[str] = []
        """The ``Impersonate-User`` of every request received (the proxy's, not the RBAC
        upkeep's, which is the manager's own identity)."""
        self._runner: web.AppRunner | None = None

    async def start(self, manager: ManagerComponent) -> None:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if "Impersonate-User" in request.headers:
                self.impersonated.append(request.headers["Impersonate-User"])
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[record])
        app.router.add_get("/headers", self._headers)
        app.router.add_post("/echo", self._echo)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/die", self._die)
        app.router.add_get("/die-mid", self._die_mid)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        tls = self.pki.tls_dir
        context = server_ssl_context(tls / "manager-serving.crt", tls / "manager-serving.key")
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        del manager

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # the dialer
    async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def downstream(self, cluster_id: str) -> Downstream:
        context = ssl.create_default_context(cadata=self.pki.ca_pem.decode())
        return Downstream(
            ssl_context=context,
            server_hostname="127.0.0.1",
            host_header="kubernetes.default.svc",
            token="downstream-secret",
        )

    # the server
    async def _headers(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.transports.append(request.transport)
        headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():
            headers.setdefault(key.lower(), []).append(value)
        return web.json_response(headers)

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body,
            headers={"X-Was-Chunked": str(request.headers.get("Transfer-Encoding") == "chunked")},
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"one\n")
        await self.release.wait()  # only once the caller has read "one" through the proxy
        await response.write(b"two\n")
        await response.write_eof()
        return response

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(f"hello {request.headers.get('Impersonate-User')}")
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo {message.data}")
        return ws

    async def _die(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def _die_mid(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.abort()
        return response


@pytest.fixture
async def downstream(
    api_server: ApiServerHarness, manager: ManagerComponent
) -> AsyncIterator[TestDownstream]:
    server = TestDownstream(api_server)
    await server.start(manager)
    try:
        yield server
    finally:
        await server.stop()


async def _cluster(http: ManagerHTTP, admin_token: str, name: str) -> str:
    status, body = await http.call("POST", "/v3/clusters", token=admin_token, json={"name": name})
    assert status == 201, body
    return str(body["id"])


async def test_not_connected_cluster_is_503(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    status, body = await http.call("GET", f"/k8s/clusters/{cluster}/version", token=admin_token)
    assert status == 503, body
    assert body["kind"] == "Status" and body["reason"] == "ServiceUnavailable"
    assert body["message"] == f"cluster {cluster} is not connected"


async def test_an_unbound_cluster_is_403_and_never_forwarded(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, downstream: TestDownstream
) -> None:
    bound = await _cluster(http, admin_token, "edge-1")
    unbound = await _cluster(http, admin_token, "edge-2")
    manager.set_remote_dialer(downstream)
    user_id, token = await _user(http, admin_token, "member")
    await _bind(http, admin_token, user_id, bound, "cluster-member")
    status, body = await http.call("GET", f"/k8s/clusters/{bound}/headers", token=token)
    assert status == 200, body
    assert downstream.impersonated == [user_id]
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    for method, path, headers in (
        ("GET", f"/k8s/clusters/{unbound}/headers", {}),
        ("POST", f"/k8s/clusters/{unbound}/echo", {}),
        (
            "GET",
            f"/k8s/clusters/{unbound}/ws",
            {**upgrade, "Sec-WebSocket-Key": "a2V5a2V5a2V5a2V5a2V5aw=="},
        ),
        ("GET", "/k8s/clusters/local/api/v1/namespaces", {}),
    ):
        status, body = await http.call(method, path, token=token, headers=headers)
        assert status == 403 and body["kind"] == "Status" and body["reason"] == "Forbidden", body
        assert body["message"] == f'user "{user_id}" may not access cluster "{path.split("/")[3]}"'
    assert downstream.impersonated == [user_id]


async def test_what_the_downstream_receives(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, downstream: TestDownstream
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    manager.set_remote_dialer(downstream)
    status, body = await http.call(
        "GET",
        f"/k8s/clusters/{cluster}/headers?watch=1",
        token=admin_token,
        headers={
            "Impersonate-User": "someone-else",
            "impersonate-group": "system:masters",
            "Impersonate-Extra-Scopes": "all",
            "X-Remote-User": "someone-else",
            "Cookie": "R_SESS=token-abcde:secret",
            "Accept": "application/json",
        },
    )
    assert status == 200, body
    assert body["authorization"] == ["Bearer downstream-secret"]  # never the manager token
    assert body["impersonate-user"] == ["u-admin"]
    assert body["impersonate-group"] == ["system:authenticated"]
    assert "impersonate-extra-scopes" not in body and "x-remote-user" not in body
    assert "cookie" not in body
    # Request bodies stream on, with a length or chunked as the caller sent them.
    payload = bytes(range(256)) * 2000

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    url = f"{http.base}/k8s/clusters/{cluster}/echo"
    auth = {"Authorization": f"Bearer {admin_token}"}
    for data, chunked in ((payload, "False"), (pieces(), "True")):
        async with http.session.post(url, data=data, headers=auth) as response:
            assert response.status == 200
            assert response.headers["X-Was-Chunked"] == chunked
            assert await response.read() == payload
    assert body["host"] == ["kubernetes.default.svc"]
    assert body["accept"] == ["application/json"]


async def test_streaming_chunk_by_chunk(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, downstream: TestDownstream
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    manager.set_remote_dialer(downstream)
    async with http.session.get(
        f"{http.base}/k8s/clusters/{cluster}/stream",
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as response:
        assert response.status == 200
        # The downstream holds "two" until the test has read "one": a proxy that buffered
        # the answer would never deliver "one" (the bound in eventually ends the test).
        async with asyncio.timeout(EVENTUALLY_TIMEOUT_S):
            first = await response.content.readline()
        assert first == b"one\n"
        downstream.release.set()
        assert await response.content.read() == b"two\n"


async def test_websocket_upgrade_through_the_proxy(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, downstream: TestDownstream
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    manager.set_remote_dialer(downstream)
    async with http.session.ws_connect(
        f"{http.base}/k8s/clusters/{cluster}/ws",
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as ws:
        assert (await ws.receive_str()) == "hello u-admin"
        for text in ("a", "b" * 100_000):
            await ws.send_str(text)
            assert (await ws.receive_str()) == f"echo {text}"


async def test_downstream_dying_mid_request_is_502(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, downstream: TestDownstream
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    manager.set_remote_dialer(downstream)
    status, body = await http.call("GET", f"/k8s/clusters/{cluster}/die", token=admin_token)
    assert status == 502, body
    assert body["kind"] == "Status" and body["code"] == 502
    # Dying after the head and part of the body: the answer cannot end as if it were whole.
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.session.get(
            f"{http.base}/k8s/clusters/{cluster}/die-mid",
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as response:
            await response.read()
    # The manager still serves.
    status, _ = await http.call("GET", f"/k8s/clusters/{cluster}/headers", token=admin_token)
    assert status == 200


async def test_unreachable_dialer_is_503(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent
) -> None:
    class Refusing:
        async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]:
            raise ClusterNotConnected(f"cluster {cluster_id}: no tunnel")

        async def downstream(self, cluster_id: str) -> Downstream:
            return Downstream(ssl.create_default_context(), "x", "x")

    cluster = await _cluster(http, admin_token, "edge-1")
    manager.set_remote_dialer(Refusing())
    status, body = await http.call("GET", f"/k8s/clusters/{cluster}/api", token=admin_token)
    assert status == 503 and body["message"] == f"cluster {cluster}: no tunnel"


class SpdyDownstream:
    """A raw TLS server answering an upgrade as a kubelet's exec would (``101`` with
    ``Upgrade: SPDY/3.1``), then echoing bytes: SPDY frames are opaque to the proxy."""

    def __init__(self, harness: ApiServerHarness) -> None:
        assert harness.server is not None
        self.pki = harness.server.pki
        self.heads: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        tls = self.pki.tls_dir
        context = server_ssl_context(tls / "manager-serving.crt", tls / "manager-serving.key")
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append((await reader.readuntil(b"\r\n\r\n")).decode("latin-1"))
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
            )
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return await asyncio.open_connection("127.0.0.1", port)

    async def downstream(self, cluster_id: str) -> Downstream:
        context = ssl.create_default_context(cadata=self.pki.ca_pem.decode())
        return Downstream(context, "127.0.0.1", "kubernetes.default.svc", "downstream-secret")


async def test_spdy_upgrade_is_spliced_raw(
    http: ManagerHTTP,
    admin_token: str,
    manager: ManagerComponent,
    api_server: ApiServerHarness,
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    spdy = SpdyDownstream(api_server)
    await spdy.start()
    manager.set_remote_dialer(spdy)
    assert api_server.server is not None
    context = ssl.create_default_context(cadata=api_server.server.pki.ca_pem.decode())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", manager.port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        path = f"/k8s/clusters/{cluster}/api/v1/namespaces/default/pods/p/exec?command=sh&stdin=1"
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {admin_token}\r\nImpersonate-User: u-admin-not\r\n"
                "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(EVENTUALLY_TIMEOUT_S):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            assert head.startswith("HTTP/1.1 101"), head
            assert "Upgrade: SPDY/3.1" in head
            for payload in (b"\x80\x03\x00\x01frame", bytes(range(256)) * 1000):
                writer.write(payload)
                await writer.drain()
                assert await reader.readexactly(len(payload)) == payload
    finally:
        writer.close()
        assert spdy.server is not None
        spdy.server.close()
    sent = next(h for h in spdy.heads if h.startswith("POST")).lower()
    assert "post /api/v1/namespaces/default/pods/p/exec?command=sh&stdin=1 http/1.1" in sent
    assert "impersonate-user: u-admin\r\n" in sent and "u-admin-not" not in sent
    assert "authorization: bearer downstream-secret\r\n" in sent
    assert "upgrade: spdy/3.1\r\n" in sent and "x-stream-protocol-version: v4" in sent


class IdleWatchDownstream(SpdyDownstream):
    """Answers a watch's head and one event, then idles until its connection is closed."""

    def __init__(self, harness: ApiServerHarness) -> None:
        super().__init__(harness)
        self.closed = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            if "watch=true" not in head.split("\r\n")[0]:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            event = b'{"type":"ADDED","object":{}}\n'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(event) + event + b"\r\n"
            )
            await writer.drain()
            while await reader.read(65536):
                pass
            self.closed.set()
        finally:
            writer.close()


async def test_a_caller_leaving_an_idle_watch_closes_the_downstream(
    http: ManagerHTTP,
    admin_token: str,
    manager: ManagerComponent,
    api_server: ApiServerHarness,
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    downstream = IdleWatchDownstream(api_server)
    await downstream.start()
    manager.set_remote_dialer(downstream)
    try:
        async with http.session.get(
            f"{http.base}/k8s/clusters/{cluster}/api/v1/pods?watch=true",
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as response:
            assert response.status == 200
            async with asyncio.timeout(EVENTUALLY_TIMEOUT_S):
                assert await response.content.readline() == b'{"type":"ADDED","object":{}}\n'
            response.close()  # the caller leaves while the watch is idle
        await eventually(downstream.closed.is_set, what="the downstream connection closed")
    finally:
        assert downstream.server is not None
        downstream.server.close()


async def test_kept_alive_downstream_connections(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, downstream: TestDownstream
) -> None:
    cluster = await _cluster(http, admin_token, "edge-1")
    manager.set_remote_dialer(downstream)
    path = f"/k8s/clusters/{cluster}/headers"
    for _ in range(3):
        assert (await http.call("GET", path, token=admin_token))[0] == 200
    # One connection served the three requests one after the other.
    assert len(downstream.transports) == 3 and len(set(map(id, downstream.transports))) == 1
    # The downstream closes the kept connection meanwhile: the next GET goes out anew.
    downstream.transports[0].close()
    assert (await http.call("GET", path, token=admin_token))[0] == 200
    assert len(set(map(id, downstream.transports))) == 2
