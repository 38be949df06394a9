"""API aggregation against a real in-process API server and a real extension API server.

The extension server (``Wardle``) is aiohttp over TLS with a certificate from its own test CA,
serving ``wardle.example.com/v1alpha1`` Flunders (discovery, list, get, watch). It requires a
client certificate signed by the request-header CA that Sampan publishes in
``kube-system/extension-apiserver-authentication`` with an allowed CN, and records the
``X-Remote-*`` headers of every request it serves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from sampan.pki import issue_client_certificate
from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names
from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok

GROUP = "wardle.example.com"
VERSION = "v1alpha1"
GV = f"{GROUP}/{VERSION}"
APISERVICE = f"{VERSION}.{GROUP}"

needs_kubectl = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


class Wardle:
    def __init__(self, tmp: Path, request_header_ca: str, allowed_names: list[str]) -> None:
        self.tmp = tmp
        self.request_header_ca = request_header_ca
        self.allowed_names = allowed_names
        self.seen: list[dict[str, Any]] = []
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None ends it
        self.watching = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0
        ca, ca_key = create_ca("wardle-test-ca")
        cert, key = issue_leaf(
            ca,
            ca_key,
            common_name="api.default.svc",
            names=split_names(["api.default.svc"]),
            server_auth=True,
        )
        self.ca_pem = cert_to_pem(ca)
        (tmp / "wardle.crt").write_bytes(cert_to_pem(cert))
        (tmp / "wardle.key").write_bytes(key_to_pem(key))

    def flunder(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": GV,
            "kind": "Flunder",
            "metadata": {
                "name": name,
                "namespace": "default",
                "resourceVersion": "1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
        }

    def _record(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        common_name = ""
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    common_name = value
        if common_name not in self.allowed_names:
            raise web.HTTPForbidden(text=f"CN {common_name} not allowed")
        self.seen.append(
            {
                "path": request.path,
                "user": request.headers.get("X-Remote-User"),
                "groups": request.headers.getall("X-Remote-Group", []),
                "authorization": request.headers.get("Authorization"),
            }
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        path = request.path.rstrip("/")
        if path == "/apis":
            group = {
                "name": GROUP,
                "versions": [{"groupVersion": GV, "version": VERSION}],
                "preferredVersion": {"groupVersion": GV, "version": VERSION},
            }
            return web.json_response(
                {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
            )
        if path == f"/apis/{GV}":
            return web.json_response(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": GV,
                    "resources": [
                        {
                            "name": "flunders",
                            "singularName": "flunder",
                            "namespaced": True,
                            "kind": "Flunder",
                            "verbs": ["get", "list", "watch"],
                        }
                    ],
                }
            )
        prefix = f"/apis/{GV}/namespaces/default/flunders"
        if path == prefix + "/one/echo":  # a connection upgrade (WebSocket), as exec is
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str(message.data.upper())
            return ws
        if path == prefix and request.query.get("watch") in ("1", "true"):
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
            self.watching.set()
            while (event := await self.events.get()) is not None:
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        if path == prefix:
            return web.json_response(
                {
                    "kind": "FlunderList",
                    "apiVersion": GV,
                    "metadata": {"resourceVersion": "1"},
                    "items": [self.flunder("one")],
                }
            )
        if path.startswith(prefix + "/"):
            return web.json_response(self.flunder(path.rsplit("/", 1)[1]))
        raise web.HTTPNotFound()

    async def start(self, port: int = 0) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tmp / "wardle.crt", self.tmp / "wardle.key")
        context.load_verify_locations(cadata=self.request_header_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, ssl_context=context)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def _last_call(wardle: Wardle, path_suffix: str) -> dict[str, Any]:
    """The backend's record of the last request to a path ending so (the availability checks
    interleave with the test's own requests)."""
    return next(s for s in reversed(wardle.seen) if s["path"].endswith(path_suffix))


async def _auth_config(harness) -> dict[str, str]:
    status, cm = await harness.request(
        "GET", "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    )
    assert status == 200, cm
    return cm["data"]


async def _register(harness, wardle: Wardle) -> None:
    for path, body in (
        (
            "/api/v1/namespaces/default/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "api"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
            },
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "api"},
                "subsets": [
                    {
                        "addresses": [{"ip": "127.0.0.1"}],
                        "ports": [{"name": "https", "port": wardle.port}],
                    }
                ],
            },
        ),
        (
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": APISERVICE},
                "spec": {
                    "group": GROUP,
                    "version": VERSION,
                    "service": {"namespace": "default", "name": "api"},
                    "caBundle": base64.b64encode(wardle.ca_pem).decode(),
                    "groupPriorityMinimum": 2000,
                    "versionPriority": 10,
                },
            },
        ),
    ):
        status, created = await harness.request("POST", path, body)
        assert status == 201, created


async def _available(harness, want: str, reason: str | None = None) -> dict[str, Any]:
    """Wait (bounded) for the APIService's Available condition to read ``want`` (and
    ``reason``, if given)."""
    async with asyncio.timeout(30):
        while True:
            status, obj = await harness.request(
                "GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}"
            )
            assert status == 200, obj
            for condition in (obj.get("status") or {}).get("conditions") or []:
                if (
                    condition["type"] == "Available"
                    and condition["status"] == want
                    and reason in (None, condition["reason"])
                ):
                    return condition
            await asyncio.sleep(0.1)


async def _poll(harness, path: str, want_status: int) -> Any:
    """GET ``path`` until it answers ``want_status`` (bounded)."""
    async with asyncio.timeout(30):
        while True:
            status, obj = await harness.request("GET", path)
            if status == want_status:
                return obj
            await asyncio.sleep(0.05)


@pytest.fixture
async def wardle(harness, tmp_path):
    data = await _auth_config(harness)
    backend = Wardle(
        tmp_path,
        data["requestheader-client-ca-file"],
        json.loads(data["requestheader-allowed-names"]),
    )
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


async def test_authentication_configmap_published(harness):
    data = await _auth_config(harness)
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    assert json.loads(data["requestheader-allowed-names"]) == ["system:auth-proxy"]
    request_header_ca = x509.load_pem_x509_certificate(
        data["requestheader-client-ca-file"].encode()
    )
    client_ca = x509.load_pem_x509_certificate(data["client-ca-file"].encode())
    assert request_header_ca.subject != client_ca.subject
    tls_dir = harness.data_dir / "server" / "tls"
    assert (tls_dir / "request-header-ca.key").stat().st_mode & 0o777 == 0o600
    assert (tls_dir / "client-auth-proxy.key").stat().st_mode & 0o777 == 0o600


async def test_local_apiservices(harness):
    status, obj = await harness.request(
        "GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps"
    )
    assert status == 200, obj
    assert obj["spec"]["group"] == "apps"
    assert obj["spec"]["groupPriorityMinimum"] == 17800
    assert obj["spec"]["versionPriority"] == 15
    assert obj["spec"].get("service") is None
    condition = await_condition = None
    async with asyncio.timeout(30):
        while await_condition is None:
            status, obj = await harness.request(
                "GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps"
            )
            for condition in (obj.get("status") or {}).get("conditions") or []:
                await_condition = condition
            await asyncio.sleep(0.05)
    assert condition["status"] == "True"
    assert condition["reason"] == "Local"
    status, core = await harness.request("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.")
    assert status == 200 and core["spec"]["groupPriorityMinimum"] == 18000


async def test_crd_group_versions_get_apiservices(harness):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    status, created = await harness.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
    )
    assert status == 201, created
    path = "/apis/apiregistration.k8s.io/v1/apiservices/v1.stable.example.com"
    obj = await _poll(harness, path, 200)
    assert obj["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"] == "true"
    assert obj["spec"]["groupPriorityMinimum"] == 1000
    assert obj["spec"]["versionPriority"] == 100
    status, _ = await harness.request(
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.stable.example.com",
    )
    assert status == 200
    await _poll(harness, path, 404)


async def test_apiservice_validation(harness):
    body = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1.wrong.example.com"},
        "spec": {
            "group": GROUP,
            "version": "v1",
            "groupPriorityMinimum": 0,
            "versionPriority": 10,
            "insecureSkipTLSVerify": True,
            "caBundle": base64.b64encode(b"x").decode(),
            "service": {"namespace": "default", "name": "api"},
        },
    }
    status, answer = await harness.request(
        "POST", "/apis/apiregistration.k8s.io/v1/apiservices", body
    )
    assert status == 422, answer
    causes = {(c["field"], c["message"]) for c in answer["details"]["causes"]}
    assert (
        "metadata.name",
        'Invalid value: "v1.wrong.example.com": must be `spec.version+"."+spec.group`: '
        '"v1.wardle.example.com"',
    ) in causes
    assert (
        "spec.groupPriorityMinimum",
        "Invalid value: 0: must be positive and less than 20000",
    ) in causes
    assert (
        "spec.insecureSkipTLSVerify",
        "Invalid value: true: may not be true if caBundle is present",
    ) in causes


async def test_proxy_discovery_and_unavailability(harness, wardle):
    await _register(harness, wardle)
    await _available(harness, "True")
    status, groups = await harness.request("GET", "/apis")
    assert GROUP in [g["name"] for g in groups["groups"]]
    status, group = await harness.request("GET", f"/apis/{GROUP}")
    assert status == 200 and group["preferredVersion"]["version"] == VERSION
    status, listed = await harness.request("GET", f"/apis/{GV}/namespaces/default/flunders")
    assert status == 200, listed
    assert [i["metadata"]["name"] for i in listed["items"]] == ["one"]
    last = _last_call(wardle, "/flunders")
    assert last["user"] == "system:admin"
    assert "system:masters" in last["groups"] and "system:authenticated" in last["groups"]
    assert last["authorization"] is None
    status, aggregated = await harness.request(
        "GET",
        "/apis",
        headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"},
    )
    item = next(i for i in aggregated["items"] if i["metadata"]["name"] == GROUP)
    assert item["versions"][0]["resources"][0]["resource"] == "flunders"

    # Watch events flow through as the backend writes them (the stream stays open).
    async with (
        asyncio.timeout(20),
        harness.session.get(
            f"/apis/{GV}/namespaces/default/flunders", params={"watch": "1"}
        ) as response,
    ):
        assert response.status == 200
        await wardle.watching.wait()
        await wardle.events.put({"type": "ADDED", "object": wardle.flunder("streamed")})
        line = await response.content.readline()
        assert json.loads(line)["object"]["metadata"]["name"] == "streamed"
        await wardle.events.put(None)

    # Connection upgrades pass through and are spliced both ways.
    async with (
        asyncio.timeout(20),
        harness.session.ws_connect(f"/apis/{GV}/namespaces/default/flunders/one/echo") as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "HELLO"
    assert _last_call(wardle, "/one/echo")["user"] == "system:admin"

    # Groups are ordered by groupPriorityMinimum: wardle (2000) after the built-in groups.
    names = [g["name"] for g in groups["groups"]]
    assert names.index("apps") < names.index(GROUP) < names.index("discovery.k8s.io") + 100
    assert names.index(GROUP) > names.index("discovery.k8s.io")

    # The client cannot claim another identity through the front-proxy headers.
    status, _ = await harness.request(
        "GET",
        f"/apis/{GV}/namespaces/default/flunders/x",
        headers={"X-Remote-User": "mallory", "X-Remote-Group": "evil"},
    )
    assert status == 200
    assert _last_call(wardle, "/flunders/x")["user"] == "system:admin"
    assert "evil" not in _last_call(wardle, "/flunders/x")["groups"]

    port = wardle.port
    await wardle.stop()
    condition = await _available(harness, "False")
    assert condition["reason"] == "FailedDiscoveryCheck"
    url = f"https://127.0.0.1:{port}/apis/{GV}"
    assert condition["message"].startswith(f'failing or missing response from {url}: Get "{url}": ')
    async with asyncio.timeout(10):  # answered promptly, never hangs
        status, answer = await harness.request("GET", f"/apis/{GV}/namespaces/default/flunders")
    assert status == 503, answer
    assert answer["reason"] == "ServiceUnavailable"
    assert answer["message"] == "the server is currently unable to handle the request"

    status, _ = await harness.request("DELETE", "/api/v1/namespaces/default/endpoints/api")
    assert status == 200
    condition = await _available(harness, "False", "EndpointsNotFound")
    assert condition["message"] == 'cannot find endpoints for service/api in "default"'
    async with asyncio.timeout(10):
        status, answer = await harness.request("GET", f"/apis/{GV}/namespaces/default/flunders")
    assert status == 503, answer


async def test_unavailable_reasons(harness, wardle):
    await _register(harness, wardle)
    await _available(harness, "True", "Passed")
    endpoints = "/api/v1/namespaces/default/endpoints/api"
    status, current = await harness.request("GET", endpoints)
    current["subsets"][0]["ports"][0]["name"] = "other"
    status, answer = await harness.request("PUT", endpoints, current)
    assert status == 200, answer
    condition = await _available(harness, "False", "MissingEndpoints")
    assert condition["message"] == (
        'endpoints for service/api in "default" have no addresses with port name "https"'
    )
    status, _ = await harness.request("DELETE", "/api/v1/namespaces/default/services/api")
    assert status == 200
    condition = await _available(harness, "False", "ServiceNotFound")
    assert condition["message"] == 'service/api in "default" is not present'

    # A caBundle of another CA: the backend's certificate does not verify.
    await harness.request("DELETE", endpoints)
    path = f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}"
    await harness.request("DELETE", path)
    await _poll(harness, path, 404)
    wardle.ca_pem = cert_to_pem(create_ca("another-ca")[0])
    await _register(harness, wardle)
    condition = await _available(harness, "False", "FailedDiscoveryCheck")
    assert "certificate verify failed" in condition["message"]


async def test_rbac_denied_before_backend(harness, wardle):
    await _register(harness, wardle)
    await _available(harness, "True")

    def user_calls() -> int:  # the availability checks come and go meanwhile
        return len([s for s in wardle.seen if s["user"] != "system:kube-aggregator"])

    calls = user_calls()
    cert_pem, key_pem = await asyncio.to_thread(
        issue_client_certificate, harness.server.pki, "jane"
    )
    (harness.data_dir / "jane.crt").write_bytes(cert_pem)
    (harness.data_dir / "jane.key").write_bytes(key_pem)
    context = ssl.create_default_context(cadata=harness.server.pki.ca_pem.decode())
    context.load_cert_chain(harness.data_dir / "jane.crt", harness.data_dir / "jane.key")
    async with aiohttp.ClientSession(
        base_url=harness.url, connector=aiohttp.TCPConnector(ssl=context)
    ) as session:
        async with session.get(f"/apis/{GV}/namespaces/default/flunders") as response:
            assert response.status == 403
            body = await response.json()
    assert body["reason"] == "Forbidden"
    assert 'flunders.wardle.example.com is forbidden: User "jane"' in body["message"]
    assert user_calls() == calls


async def test_front_proxy_authentication_accepted(harness):
    """Sampan itself trusts X-Remote-* from a certificate of its request-header CA."""
    pki = harness.server.pki
    context = ssl.create_default_context(cadata=pki.ca_pem.decode())
    context.load_cert_chain(pki.auth_proxy_cert_path, pki.auth_proxy_key_path)
    async with aiohttp.ClientSession(
        base_url=harness.url, connector=aiohttp.TCPConnector(ssl=context)
    ) as session:
        async with session.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            headers={
                "X-Remote-User": "alice",
                "X-Remote-Group": "team-a",
                "X-Remote-Extra-Scopes": "s1",
            },
        ) as response:
            review = await response.json()
            assert response.status == 201, review
        info = review["status"]["userInfo"]
        assert info["username"] == "alice"
        assert info["groups"] == ["team-a", "system:authenticated"]
        assert info["extra"] == {"scopes": ["s1"]}
        # Without a user header the certificate is nobody: unauthenticated.
        async with session.get("/api/v1/namespaces") as response:
            assert response.status == 401


@needs_kubectl
async def test_kubectl_through_aggregation(harness, wardle):
    await _register(harness, wardle)
    await _available(harness, "True")
    resources = await ok(harness, "api-resources", "--api-group", GROUP)
    assert "flunders" in resources and "Flunder" in resources
    listed = await ok(harness, "get", "flunders")
    assert "one" in listed
    services = await ok(harness, "get", "apiservices")
    line = next(ln for ln in services.splitlines() if ln.startswith("v1.apps "))
    assert "Local" in line and "True" in line
    line = next(ln for ln in services.splitlines() if ln.startswith(APISERVICE))
    assert "default/api" in line and "True" in line

    env_watch = asyncio.create_task(
        kubectl(harness, "get", "flunders", "-w", "--request-timeout=20s")
    )
    async with asyncio.timeout(20):
        await wardle.watching.wait()
    await wardle.events.put({"type": "ADDED", "object": wardle.flunder("two")})
    await wardle.events.put(None)  # the backend ends the watch: kubectl -w exits
    _, out, err = await env_watch
    assert "two" in out, (out, err)
    assert any(s["user"] == "system:admin" for s in wardle.seen)
