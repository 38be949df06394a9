"""Streams through a real tunnel (TLS WebSocket, in-process agent, loopback TCP targets):
interleaving, half-close, back-pressure per stream, dial refusals."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from sampan.manager.tunnel import DialError, NotConnected, StreamReset, TunnelError
from tests.manager.tunnel.conftest import (
    CLUSTER_ID,
    Manager,
    agent_task,
    digest,
    echo,
    tcp_target,
    wait_until,
)


async def test_interleaved_streams_each_get_their_own_bytes(manager: Manager) -> None:
    async with tcp_target(echo) as target, agent_task(manager, [target.address]):
        await manager.connected()
        assert manager.server is not None
        rng = random.Random(24)

        async def one(index: int) -> None:
            reader, writer = await manager.server.dial(
                CLUSTER_ID, "127.0.0.1", target.port, timeout_s=10
            )
            payload = os.urandom(rng.randrange(1, 300_000))
            received = bytearray()

            async def read_back() -> None:
                while len(received) < len(payload):
                    chunk = await reader.read(65536)
                    assert chunk, f"stream {index} ended early"
                    received.extend(chunk)

            reading = asyncio.ensure_future(read_back())
            view = memoryview(payload)
            while view:
                size = rng.randrange(1, 50_000)
                writer.write(view[:size])
                view = view[size:]
                await writer.drain()
                await asyncio.sleep(0)
            await reading
            assert digest(bytes(received)) == digest(payload)
            writer.close()

        await asyncio.gather(*(one(i) for i in range(24)))
        await wait_until(
            lambda: manager.server.state(CLUSTER_ID).open_streams == 0, "streams to be released"
        )


async def test_half_close_reaches_the_target_and_the_answer_comes_back(manager: Manager) -> None:
    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's close-write
        writer.write(f"{len(data)} {digest(data)}\n".encode())
        await writer.drain()
        writer.close()

    async with tcp_target(count_then_answer) as target, agent_task(manager, [target.address]):
        await manager.connected()
        assert manager.server is not None
        reader, writer = await manager.server.dial(CLUSTER_ID, "127.0.0.1", target.port)
        payload = os.urandom(700_000)
        writer.write(payload)
        await writer.drain()
        assert writer.can_write_eof()
        writer.write_eof()
        answer = await reader.read()
        assert answer == f"{len(payload)} {digest(payload)}\n".encode()
        assert reader.at_eof()
        writer.close()


async def test_a_stalled_reader_does_not_stop_another_stream(manager: Manager) -> None:
    """Stream A's target sends 8 MiB that nobody reads for a while; stream B echoes 4 MiB
    meanwhile. B completes; A's unread bytes on the manager stay within its credit plus the
    reader's own limit; afterwards A is read to the end, intact."""
    firehose = os.urandom(8 * 1024 * 1024)

    async def send_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(firehose)
        await writer.drain()
        writer.close()

    async with tcp_target(send_all) as hose, tcp_target(echo) as target:
        async with agent_task(manager, [hose.address, target.address]):
            await manager.connected()
            server = manager.server
            assert server is not None
            a_stream = await server.open_stream(CLUSTER_ID, "127.0.0.1", hose.port)
            loop = asyncio.get_running_loop()
            a_reader = asyncio.StreamReader(limit=64 * 1024, loop=loop)
            a_protocol = asyncio.StreamReaderProtocol(a_reader, loop=loop)
            a_stream.set_protocol(a_protocol)
            a_protocol.connection_made(a_stream)
            a_stream.resume_reading()

            b_reader, b_writer = await server.dial(CLUSTER_ID, "127.0.0.1", target.port)
            payload = os.urandom(4 * 1024 * 1024)

            async def write_b() -> None:
                b_writer.write(payload)
                await b_writer.drain()
                b_writer.write_eof()

            writing = asyncio.ensure_future(write_b())
            echoed = await b_reader.read()
            await writing
            assert digest(echoed) == digest(payload)

            # A was never read: what the manager holds for it is bounded by the credit.
            held = len(a_reader._buffer) + sum(len(c) for c in a_stream._recv_buf)
            assert 0 < held <= 256 * 1024 + 2 * 64 * 1024
            received = await a_reader.read()
            assert digest(received) == digest(firehose)
            b_writer.close()


async def test_dial_to_a_target_that_is_not_allowed_is_refused(manager: Manager) -> None:
    async with tcp_target(echo) as allowed, tcp_target(echo) as other:
        async with agent_task(manager, [allowed.address]):
            await manager.connected()
            assert manager.server is not None
            with pytest.raises(DialError, match="not an allowed target"):
                await manager.server.dial(CLUSTER_ID, "127.0.0.1", other.port)
            # the session is unharmed
            reader, writer = await manager.server.dial(CLUSTER_ID, "127.0.0.1", allowed.port)
            writer.write(b"still here")
            writer.write_eof()
            assert await reader.read() == b"still here"
            writer.close()


async def test_dial_to_a_closed_port_answers_dial_error(manager: Manager) -> None:
    async with tcp_target(echo) as target:
        address = target.address
        port = target.port
    async with agent_task(manager, [address]):
        await manager.connected()
        assert manager.server is not None
        with pytest.raises(DialError) as caught:
            await manager.server.dial(CLUSTER_ID, "127.0.0.1", port)
        assert "refused" in str(caught.value).lower() or "connect" in str(caught.value).lower()


async def test_dial_without_an_agent_is_not_connected(manager: Manager) -> None:
    assert manager.server is not None
    with pytest.raises(NotConnected, match="c-nowhere"):
        await manager.server.dial("c-nowhere", "127.0.0.1", 6443)
    assert issubclass(NotConnected, TunnelError) and issubclass(StreamReset, ConnectionError)
