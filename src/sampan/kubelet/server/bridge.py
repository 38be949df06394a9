"""WebSocket clients bridged to the runtime's SPDY stream server (protocol translation).

containerd's CRI stream server speaks SPDY/3.1 (and WebSocket ``v4.channel.k8s.io``), but
kubectl 1.32 first asks for WebSocket ``v5.channel.k8s.io`` for exec/attach and for a SPDY
tunnel inside a WebSocket (``SPDY/3.1+portforward.k8s.io``) for port-forward. Both are
terminated here and carried on to the runtime over SPDY:

* ``bridge_remotecommand``: one WebSocket message is ``channel byte + data``; channels 0..4
  are stdin, stdout, stderr, error, resize; v5 adds channel 255 whose payload names a channel
  the client closes (stdin EOF). The runtime side is a SPDY session speaking remotecommand
  ``v4.channel.k8s.io``: this end opens one stream per channel (header ``streamtype``) —
  error first, as upstream clients do — relays data both ways, turns a v5 close of stdin into
  a FIN on the stdin stream, and ends the WebSocket when the runtime ends the session (after
  it has written the exit Status on the error stream).
* ``bridge_tunnel``: the WebSocket's binary messages carry the raw bytes of a SPDY session
  (port-forward's own protocol), so they are copied to and from a SPDY-upgraded connection to
  the runtime without looking inside.

Invariants: the runtime connection is established (and its refusal reported as a normal HTTP
error) before the WebSocket is accepted; each side's end closes the other; no output is
buffered beyond one message; every SPDY frame is written with a single ``write()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from sampan.httpstream import SPLICE_CHUNK_BYTES, UpgradeResponse, open_upgrade
from sampan.kubelet.server import spdy

__all__ = [
    "CHANNEL_CLOSE",
    "PORTFORWARD_TUNNEL_PROTOCOL",
    "REMOTECOMMAND_V5",
    "RemoteCommandStreams",
    "bridge_remotecommand",
    "bridge_tunnel",
    "offered_protocols",
]

log = logging.getLogger("sampan.kubelet.server.bridge")

REMOTECOMMAND_V5 = "v5.channel.k8s.io"
REMOTECOMMAND_V4 = "v4.channel.k8s.io"
PORTFORWARD_TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_STDERR, CHANNEL_ERROR, CHANNEL_RESIZE = range(5)
CHANNEL_CLOSE = 255
WS_HEARTBEAT_S = 30.0
RST_REFUSED_STREAM = 3
_STREAM_TYPES = {
    CHANNEL_ERROR: "error",
    CHANNEL_STDIN: "stdin",
    CHANNEL_STDOUT: "stdout",
    CHANNEL_STDERR: "stderr",
    CHANNEL_RESIZE: "resize",
}


def offered_protocols(request: web.Request) -> list[str]:
    return [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in value.split(",")
        if p.strip()
    ]


@dataclass(frozen=True)
class RemoteCommandStreams:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    def channels(self) -> list[int]:
        """Channels to open, error first (the order upstream clients create streams in)."""
        wanted = [CHANNEL_ERROR]
        if self.stdin:
            wanted.append(CHANNEL_STDIN)
        if self.stdout:
            wanted.append(CHANNEL_STDOUT)
        if self.stderr and not self.tty:
            wanted.append(CHANNEL_STDERR)
        if self.tty:
            wanted.append(CHANNEL_RESIZE)
        return wanted


async def _open_spdy(
    host: str, port: int, target: str, method: str, protocol: str
) -> UpgradeResponse | web.Response:
    upstream = await open_upgrade(
        host=host,
        port=port,
        method=method,
        target=target,
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", protocol),
        ],
    )
    if upstream.status != 101:
        body = await upstream.read_body()
        response = web.Response(status=upstream.status, body=body)
        response.headers["Content-Type"] = upstream.header("Content-Type") or "text/plain"
        return response
    return upstream


def _message_bytes(message: aiohttp.WSMessage) -> bytes:
    """A client message's bytes: binary frames as they are, and text frames too — clients
    such as the official Python client send ``chr(channel) + text`` as a text frame, and
    upstream's stream servers read both kinds alike."""
    if message.type == aiohttp.WSMsgType.BINARY:
        return bytes(message.data)
    if message.type == aiohttp.WSMsgType.TEXT:
        return message.data.encode()
    return b""


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def bridge_remotecommand(
    request: web.Request,
    *,
    host: str,
    port: int,
    target: str,
    streams: RemoteCommandStreams,
) -> web.StreamResponse:
    """Serve a ``v5.channel.k8s.io`` WebSocket exec/attach from the runtime's SPDY URL."""
    opened = await _open_spdy(host, port, target, "POST", REMOTECOMMAND_V4)
    if isinstance(opened, web.Response):
        return opened
    reader, writer = opened.reader, opened.writer
    ws = web.WebSocketResponse(protocols=(REMOTECOMMAND_V5,), heartbeat=WS_HEARTBEAT_S)
    try:
        await ws.prepare(request)
    except BaseException:
        await _close_writer(writer)
        raise
    compressor = spdy.HeaderCompressor()
    decompressor = spdy.HeaderDecompressor()
    stream_of: dict[int, int] = {}  # channel -> stream id
    channel_of: dict[int, int] = {}  # stream id -> channel
    for index, channel in enumerate(streams.channels()):
        stream_id = 2 * index + 1
        stream_of[channel] = stream_id
        channel_of[stream_id] = channel
        writer.write(
            spdy.encode_syn_stream(stream_id, [("streamtype", _STREAM_TYPES[channel])], compressor)
        )

    async def from_runtime() -> None:
        while True:
            frame = await spdy.read_frame(reader)
            if frame is None:
                return
            if isinstance(frame, spdy.DataFrame):
                channel = channel_of.get(frame.stream_id)
                if channel is not None and frame.data:
                    await ws.send_bytes(bytes([channel]) + frame.data)
                continue
            if frame.type == spdy.TYPE_SYN_REPLY:
                spdy.parse_syn_reply(frame, decompressor)  # keeps the zlib context in step
            elif frame.type == spdy.TYPE_SYN_STREAM:
                # The runtime never opens streams in this protocol; refuse politely.
                stream_id, _, _ = spdy.parse_syn_stream(frame, decompressor)
                writer.write(spdy.encode_rst_stream(stream_id, RST_REFUSED_STREAM))
            elif frame.type == spdy.TYPE_HEADERS:
                decompressor.decompress(frame.payload[4:])
            elif frame.type == spdy.TYPE_PING:
                writer.write(spdy.encode_ping(spdy.parse_ping(frame)))
            elif frame.type == spdy.TYPE_GOAWAY:
                return

    async def from_client() -> None:
        async for message in ws:
            data = _message_bytes(message)
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == CHANNEL_CLOSE:
                closed = stream_of.get(payload[0]) if payload else None
                if closed is not None and payload[0] == CHANNEL_STDIN:
                    writer.write(spdy.encode_data(closed, b"", fin=True))
                continue
            stream_id = stream_of.get(channel)
            if stream_id is None or channel not in (CHANNEL_STDIN, CHANNEL_RESIZE):
                continue
            for start in range(0, len(payload), SPLICE_CHUNK_BYTES):
                writer.write(
                    spdy.encode_data(stream_id, payload[start : start + SPLICE_CHUNK_BYTES])
                )
                await writer.drain()

    await _run_both(from_runtime(), from_client(), ws, writer, "remotecommand")
    return ws


async def bridge_tunnel(
    request: web.Request, *, host: str, port: int, target: str
) -> web.StreamResponse:
    """Serve a ``SPDY/3.1+portforward.k8s.io`` WebSocket tunnel from the runtime's SPDY URL."""
    opened = await _open_spdy(host, port, target, "POST", PORTFORWARD_PROTOCOL)
    if isinstance(opened, web.Response):
        return opened
    reader, writer = opened.reader, opened.writer
    ws = web.WebSocketResponse(protocols=(PORTFORWARD_TUNNEL_PROTOCOL,), heartbeat=WS_HEARTBEAT_S)
    try:
        await ws.prepare(request)
    except BaseException:
        await _close_writer(writer)
        raise

    async def from_runtime() -> None:
        while chunk := await reader.read(SPLICE_CHUNK_BYTES):
            await ws.send_bytes(chunk)

    async def from_client() -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                writer.write(message.data)
                await writer.drain()

    await _run_both(from_runtime(), from_client(), ws, writer, "tunnel")
    return ws


async def _run_both(
    runtime_side: object,
    client_side: object,
    ws: web.WebSocketResponse,
    writer: asyncio.StreamWriter,
    what: str,
) -> None:
    down = asyncio.create_task(runtime_side, name=f"bridge-{what}-from-runtime")  # type: ignore[arg-type]
    up = asyncio.create_task(client_side, name=f"bridge-{what}-from-client")  # type: ignore[arg-type]
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionError | OSError):
                log.warning("%s bridge: %s failed: %r", what, task.get_name(), exc)
    finally:
        for task in (down, up):
            task.cancel()
        for task in (down, up):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await _close_writer(writer)
        with contextlib.suppress(ConnectionError, OSError):
            await ws.close()
