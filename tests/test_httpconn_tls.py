"""httpconn.share_tls_receive_buffers: many TLS connections of one process, both ends in it,
moving large bodies at once, each byte arriving where it belongs, with one receive buffer per
thread instead of one per connection."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from sampan.httpconn import TLS_RECEIVE_BYTES, share_tls_receive_buffers
from tests.support.tls import serving_pki

CLIENTS = 24
BODY_BYTES = 3 * TLS_RECEIVE_BYTES + 12345  # several receives per body, not aligned


def _body(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (BODY_BYTES // 32 + 1)


async def test_concurrent_tls_streams_stay_intact_with_one_shared_buffer(tmp_path: Path) -> None:
    share_tls_receive_buffers()
    pki = serving_pki(tmp_path)
    server_protocols = []

    async def echo(request: web.Request) -> web.Response:
        assert request.transport is not None
        server_protocols.append(request.transport._ssl_protocol)  # type: ignore[attr-defined]
        data = await request.read()
        # The upload back with this client's own body after it: both directions checked.
        return web.Response(body=data + _body(int(request.match_info["i"])))

    app = web.Application(client_max_size=4 * BODY_BYTES)
    app.router.add_post("/{i}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.cert_path, pki.key_path)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client_ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
    client_protocols = []
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ctx, limit=CLIENTS)
        ) as session:

            async def one(i: int) -> None:
                upload = _body(i + 1000)
                async with session.post(f"https://127.0.0.1:{port}/{i}", data=upload) as resp:
                    assert resp.connection is not None and resp.connection.transport is not None
                    client_protocols.append(resp.connection.transport._ssl_protocol)  # type: ignore[attr-defined]
                    got = await resp.read()
                assert got == upload + _body(i)

            await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    finally:
        await runner.cleanup()
    buffers = {id(p._ssl_buffer_view.obj) for p in server_protocols + client_protocols}
    assert len(server_protocols) == len(client_protocols) == CLIENTS
    assert len(buffers) == 1  # one buffer for all 48 connection ends of this thread
    assert len(server_protocols[0]._ssl_buffer_view) == TLS_RECEIVE_BYTES
