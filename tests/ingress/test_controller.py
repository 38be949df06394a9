"""IngressController against an in-process API server with a real nginx on free ports and a
backend on loopback (an EndpointSlice pointing at 127.0.0.1): headers, WebSocket upgrades,
reloads only on change (graceful: same master pid), status, events — with the controller's own
identity ``system:sampan-ingress`` (so its RBAC is exercised too). No containerd needed."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sampan.client import Client
from sampan.client.api import ENDPOINTSLICES, EVENTS, INGRESSCLASSES, INGRESSES, SERVICES
from sampan.ingress import IngressController, IngressOptions
from tests.support.apiserver import ApiServerHarness, api_server  # noqa: F401
from tests.support.poll import eventually
from tests.support.syncloop import wait_sync

WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str("echo:" + msg.data)
            return ws
        return web.json_response({"path": request.path_qs, "headers": dict(request.headers)})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
async def admin(api_server: ApiServerHarness) -> AsyncIterator[Client]:  # noqa: F811
    async with Client(await api_server.identity_config("admin", ("system:masters",))) as c:
        yield c


@pytest.fixture
async def controller(
    api_server: ApiServerHarness,  # noqa: F811
    admin: Client,
    backend: int,
    tmp_path: Path,
) -> AsyncIterator[IngressController]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (scripts/install.sh installs it)")
    await admin.create(
        INGRESSCLASSES,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {
                "name": "sampan-nginx",
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "sampan.io/ingress-nginx"},
        },
    )
    await admin.create(
        SERVICES,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend}]},
        },
        namespace="default",
    )
    await admin.create(
        ENDPOINTSLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "echo-1", "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        namespace="default",
    )
    config = await api_server.identity_config("system:sampan-ingress")
    ctl = IngressController(
        config,
        IngressOptions(
            node_name="n1",
            directory=tmp_path / "ingress",
            node_ips=("192.0.2.10",),
            http_port=free_port(),
            https_port=free_port(),
        ),
    )
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


def ingress(path: str = "/", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "annotations": annotations or {}},
        "spec": {
            "rules": [
                {
                    "host": "echo.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "echo", "port": {"name": "http"}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


async def get(ctl: IngressController, path: str, host: str = "echo.example.com") -> Any:
    url = f"http://127.0.0.1:{ctl.options.http_port}{path}"
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(url, headers={"Host": host}) as resp:
                text = await resp.text()
                return resp.status, json.loads(text) if resp.status == 200 else text
        except aiohttp.ClientConnectionError as exc:  # nginx not listening yet
            return 0, str(exc)


def answers(ctl: IngressController, path: str, code: int, host: str = "echo.example.com") -> Any:
    async def check() -> Any:
        status, body = await get(ctl, path, host)
        return (status, body) if status == code else None

    return check


async def test_proxies_with_headers_websocket_status_and_reloads_only_on_change(
    controller: IngressController, admin: Client
) -> None:
    await admin.create(INGRESSES, ingress(), namespace="default")
    _, body = await eventually(answers(controller, "/hello?x=1", 200))
    assert body["path"] == "/hello?x=1"
    headers = body["headers"]
    assert headers["Host"] == "echo.example.com"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == "echo.example.com"
    assert headers["X-Real-IP"] == "127.0.0.1"
    assert len(headers["X-Request-ID"]) == 32
    assert (await get(controller, "/", host="other.example.com"))[0] == 404

    # WebSocket through nginx
    url = f"http://127.0.0.1:{controller.options.http_port}/ws"

    async def websocket_echo() -> str:
        # Polled like the GETs above: until nginx's old workers (from before the reload that
        # added this Ingress) have all finished, one of them may still take a connection.
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers={"Host": "echo.example.com"}) as ws:
                    await ws.send_str("ping")
                    return str((await ws.receive()).data)
            except aiohttp.WSServerHandshakeError:
                return ""

    assert await eventually(websocket_echo) == "echo:ping"

    # status: the node addresses (no Node objects here: the agent's own)
    async def address() -> Any:
        obj = await admin.get(INGRESSES, "web", namespace="default")
        return (obj.get("status") or {}).get("loadBalancer", {}).get("ingress")

    assert await eventually(address) == [{"ip": "192.0.2.10"}]

    # nothing rendered changes -> no reload; a path change -> one graceful reload
    reloads, pid = controller.reload_count, controller.pid
    obj = await admin.get(INGRESSES, "web", namespace="default")
    obj["metadata"]["labels"] = {"touched": "yes"}
    await admin.update(INGRESSES, obj, namespace="default")
    await wait_sync(controller, WAIT_S)
    assert controller.reload_count == reloads
    obj = await admin.get(INGRESSES, "web", namespace="default")
    obj["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/v2"
    await admin.update(INGRESSES, obj, namespace="default")
    await wait_sync(controller, WAIT_S)
    assert controller.reload_count == reloads + 1 and controller.pid == pid
    await eventually(answers(controller, "/hello", 404))
    await eventually(answers(controller, "/v2/x", 200))


async def test_rejected_ingress_is_held_back_with_an_event(
    controller: IngressController, admin: Client
) -> None:
    await admin.create(INGRESSES, ingress(), namespace="default")
    bad = ingress("/x(", {"sampan.io/use-regex": "true"})
    bad["metadata"]["name"] = "bad"
    bad["spec"]["rules"][0]["host"] = "bad.example.com"
    bad["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = "ImplementationSpecific"
    await eventually(answers(controller, "/", 200))
    await admin.create(INGRESSES, bad, namespace="default")

    async def event() -> Any:
        events = await admin.list(EVENTS, namespace="default")
        return [
            e
            for e in events["items"]
            if e["reason"] == "InvalidConfiguration" and e["involvedObject"]["name"] == "bad"
        ]

    [found] = await eventually(event)
    assert found["type"] == "Warning" and "pcre" in found["message"].lower()
    assert (await get(controller, "/", host="echo.example.com"))[0] == 200
    assert (await get(controller, "/x(", host="bad.example.com"))[0] == 404
    # the held-back Ingress does not block the others' changes
    obj = await admin.get(INGRESSES, "web", namespace="default")
    obj["spec"]["rules"][0]["host"] = "echo2.example.com"
    await admin.update(INGRESSES, obj, namespace="default")
    await eventually(answers(controller, "/", 200, host="echo2.example.com"))
    conf = (controller.options.directory / "nginx.conf").read_text()
    assert "bad.example.com" not in conf
