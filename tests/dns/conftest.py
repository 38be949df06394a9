"""Fixtures for DNS tests: an in-process API server, the agent identity's client config, and a
trivial upstream DNS responder on loopback (UDP and TCP) that answers every A query with
``UPSTREAM_ADDRESS``."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from sampan.client import Client, ClientConfig
from tests.support.apiserver import ApiServerHarness, api_server  # noqa: F401

UPSTREAM_ADDRESS = "192.0.2.1"


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
async def admin(api_server: ApiServerHarness) -> AsyncIterator[Client]:  # noqa: F811
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
