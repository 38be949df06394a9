"""An ordinary aiohttp client over the tunnel (``TunnelServer.connector``) against a real
HTTPS aiohttp server the agent may reach: plain GETs on kept-alive connections, a streaming
(watch-like) response read chunk by chunk, a WebSocket upgrade, and a raw HTTP/1.1 upgrade
spliced byte for byte over ``dial`` — TLS end to end through the tunnel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sampan.manager.tunnel import DialError, NotConnected, StreamReset, TunnelConnectError
from tests.manager.tunnel.conftest import (
    CLUSTER_ID,
    Manager,
    Pki,
    agent_task,
    wait_until,
)


@contextlib.asynccontextmanager
async def downstream(pki: Pki, release: asyncio.Event) -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "Hello", "path": request.path, "who": request.headers.get("X-Who", "")}
        )

    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        await release.wait()  # the second event only after the client has seen the first
        await response.write(b'{"type":"MODIFIED"}\n')
        await response.write_eof()
        return response

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/api/hello", hello)
    app.router.add_get("/api/watch", watch)
    app.router.add_get("/api/exec", ws_echo)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_http_watch_and_upgrades_pass_through_the_tunnel(
    manager: Manager, downstream_pki: Pki
) -> None:
    release = asyncio.Event()
    async with (
        downstream(downstream_pki, release) as port,
        agent_task(manager, [f"127.0.0.1:{port}"]),
    ):
        await manager.connected()
        assert manager.server is not None
        connector = manager.server.connector(CLUSTER_ID, ssl=downstream_pki.client_context())
        base = f"https://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=connector) as http:
            for n in range(5):  # kept-alive: one tunnel stream serves them all
                async with http.get(
                    f"{base}/api/hello", headers={"X-Who": f"user-{n}"}
                ) as response:
                    assert response.status == 200
                    assert await response.json() == {
                        "kind": "Hello",
                        "path": "/api/hello",
                        "who": f"user-{n}",
                    }
            assert manager.server.state(CLUSTER_ID).open_streams == 1

            async with http.get(f"{base}/api/watch") as response:
                assert response.status == 200
                assert await response.content.readline() == b'{"type":"ADDED"}\n'
                release.set()
                assert await response.content.readline() == b'{"type":"MODIFIED"}\n'
                assert await response.content.read() == b""

            async with http.ws_connect(f"{base}/api/exec", protocols=("v4.channel.k8s.io",)) as ws:
                assert ws.protocol == "v4.channel.k8s.io"
                await ws.send_bytes(b"\x00ls -l")
                assert (await ws.receive_bytes()) == b"echo:\x00ls -l"
                await ws.send_str("resize")
                assert (await ws.receive_str()) == "echo:resize"

        await wait_until(
            lambda: manager.server.state(CLUSTER_ID).open_streams == 0, "streams to close"
        )


async def test_raw_upgrade_over_dial(manager: Manager, downstream_pki: Pki) -> None:
    """What an upgrade-aware proxy does for exec/port-forward: write the request head on a
    dialed TLS stream, read the 101, then the bytes are the upgraded protocol's."""
    async with (
        downstream(downstream_pki, asyncio.Event()) as port,
        agent_task(manager, [f"127.0.0.1:{port}"]),
    ):
        await manager.connected()
        assert manager.server is not None
        reader, writer = await manager.server.dial(
            CLUSTER_ID,
            "127.0.0.1",
            port,
            ssl=downstream_pki.client_context(),
            server_hostname="127.0.0.1",
        )
        writer.write(
            b"GET /api/exec HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        # one masked binary frame "hi", answered by the server's unmasked "echo:hi"
        mask = b"\x01\x02\x03\x04"
        writer.write(b"\x82\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi")))
        frame = await reader.readexactly(2 + len(b"echo:hi"))
        assert frame == b"\x82\x07echo:hi"
        writer.close()


async def test_a_stream_ends_with_an_error_when_the_agent_goes_away(
    manager: Manager, downstream_pki: Pki
) -> None:
    release = asyncio.Event()
    async with downstream(downstream_pki, release) as port:
        async with agent_task(manager, [f"127.0.0.1:{port}"]) as agent:
            await manager.connected()
            assert manager.server is not None
            connector = manager.server.connector(CLUSTER_ID, ssl=downstream_pki.client_context())
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.get(f"https://127.0.0.1:{port}/api/watch") as response:
                    assert await response.content.readline() == b'{"type":"ADDED"}\n'
                    agent.cancel()
                    try:
                        await response.content.read()
                    except aiohttp.ClientPayloadError as exc:
                        assert isinstance(exc.__cause__, StreamReset) or "tunnel" in str(exc)
                    else:
                        raise AssertionError("the watch ended cleanly although its tunnel was lost")


async def test_the_connector_raises_tunnel_errors_the_proxy_can_map(manager: Manager) -> None:
    """No agent: ``NotConnected`` (the proxy's 503); a refused target: ``DialError`` (502)."""
    assert manager.server is not None
    async with aiohttp.ClientSession(connector=manager.server.connector(CLUSTER_ID)) as http:
        with pytest.raises(TunnelConnectError) as caught:
            await http.get("http://127.0.0.1:1/api")
        assert isinstance(caught.value.error, NotConnected)
        async with agent_task(manager, ["127.0.0.1:6443"]):
            await manager.connected()
            with pytest.raises(TunnelConnectError, match="not an allowed target") as caught:
                await http.get("http://127.0.0.1:1/api")
            assert isinstance(caught.value.error, DialError)
