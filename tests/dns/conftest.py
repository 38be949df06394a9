"""Fixtures for DNS tests: an in-process API server, the agent identity's client config, and a
trivial upstream DNS responder on loopback (UDP and TCP) that answers every A query with
``UPSTREAM_ADDRESS``."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from sampan.apiserver import APIServer, APIServerOptions
from sampan.client import Client, ClientConfig
from sampan.datastore import open_backend
from sampan.pki import ensure_client_kubeconfig

UPSTREAM_ADDRESS = "192.0.2.1"


class ApiServerHarness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.server: APIServer | None = None
        self.backend: Any = None

    async def start(self) -> None:
        self.backend = open_backend("", self.data_dir)
        await self.backend.start()
        options = APIServerOptions(
            tls_dir=self.data_dir / "server" / "tls",
            hostname="localhost",
            node_ips=("127.0.0.1",),
            bind_address="127.0.0.1",
            port=0,
            kubeconfig_path=self.kubeconfig,
        )
        self.server = APIServer(options, self.backend)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.backend is not None:
            await self.backend.close()

    async def client_config_for(self, user: str) -> ClientConfig:
        assert self.server is not None
        path = self.data_dir / f"{user.replace(':', '-')}.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            self.server.pki,
            name=user.replace(":", "-"),
            common_name=user,
            path=path,
            server_url=self.server.url,
        )
        return ClientConfig.from_kubeconfig(path)


def upstream_reply(data: bytes) -> bytes:
    request = DNSRecord.parse(data)
    reply = request.reply()
    if request.q.qtype == QTYPE.A:
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(UPSTREAM_ADDRESS), ttl=30))
    return reply.pack()


class _UpstreamUDP(asyncio.DatagramProtocol):
    def __init__(self, owner: Upstream) -> None:
        self.owner = owner

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.queries += 1
        self.transport.sendto(upstream_reply(data), addr)


class Upstream:
    """A trivial DNS responder on 127.0.0.1 (same port for UDP and TCP)."""

    def __init__(self) -> None:
        self.port = 0
        self.queries = 0
        self._udp: Any = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UpstreamUDP(self), local_addr=("127.0.0.1", 0)
        )
        self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._serve_tcp, "127.0.0.1", self.port)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            self.queries += 1
            reply = upstream_reply(await reader.readexactly(length))
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def admin(api_server: ApiServerHarness) -> AsyncIterator[Client]:
    client = Client(ClientConfig.from_kubeconfig(api_server.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
