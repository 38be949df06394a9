"""Byte-level proxying of HTTP upgrades (SPDY/3.1, WebSocket) from an aiohttp request.

Shared by the API server (pods/exec, attach, portforward to the kubelet) and the kubelet's API
(on to the container runtime's stream server, containerd's CRI streaming on loopback): both
are upgrade-aware proxies, so the code lives below the components. As upstream's proxy does,
``proxy_upgrade`` sends the caller's upgrade request to the upstream URL, relays the answer,
and on ``101 Switching Protocols`` takes the caller's connection away from aiohttp and splices
the two sockets byte for byte until either side closes. Nothing is buffered beyond one read
(``SPLICE_CHUNK_BYTES``) and writes wait for the peer to drain, so a slow reader slows the
writer instead of growing memory.

Invariants:

* a non-101 answer is relayed as an ordinary response (status, content type, body up to
  ``MAX_ERROR_BODY_BYTES``) and the connection stays with aiohttp;
* after a 101 the aiohttp transport belongs to the splice: the protocol is swapped with
  ``transport.set_protocol`` (the client sends nothing before it has read the 101, so aiohttp
  never buffered any of the upgraded stream), and aiohttp is told the connection is gone when
  the splice ends, so its request handler finishes without writing to the socket again;
* both sockets are closed when the splice ends, whichever side ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

__all__ = [
    "FORWARDED_UPGRADE_HEADERS",
    "MAX_ERROR_BODY_BYTES",
    "SPLICE_CHUNK_BYTES",
    "UpgradeResponse",
    "UpstreamError",
    "close_writer",
    "hijack",
    "is_upgrade_request",
    "open_upgrade",
    "proxy_upgrade",
    "splice",
]

log = logging.getLogger("sampan.httpstream")

SPLICE_CHUNK_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
STREAM_BUFFER_LIMIT_BYTES = 256 * 1024

FORWARDED_UPGRADE_HEADERS = (
    "Connection",
    "Upgrade",
    "X-Stream-Protocol-Version",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Origin",
)
"""Request headers an upgrade needs end to end (values repeated as sent)."""


class UpstreamError(Exception):
    """The upstream stream server could not be reached or answered garbage."""


def is_upgrade_request(request: web.Request) -> bool:
    connection = request.headers.get("Connection", "").lower()
    return "upgrade" in [t.strip() for t in connection.split(",")] and bool(
        request.headers.get("Upgrade")
    )


@dataclass
class UpgradeResponse:
    """The upstream's answer head; ``reader``/``writer`` carry the rest of the connection."""

    status: int
    reason: str
    head: bytes  # the raw status line and headers, ending with the blank line
    headers: list[tuple[str, str]]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    async def read_body(self) -> bytes:
        """The body of a non-101 answer (bounded), then close the connection."""
        try:
            length = self.header("Content-Length")
            if length is not None and length.isdigit():
                body = await self.reader.readexactly(min(int(length), MAX_ERROR_BODY_BYTES))
            else:
                body = await self.reader.read(MAX_ERROR_BODY_BYTES)
        except (OSError, asyncio.IncompleteReadError):
            body = b""
        finally:
            await close_writer(self.writer)
        return body


def _request_head(method: str, target: str, host: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def open_upgrade(
    *,
    host: str,
    port: int,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> UpgradeResponse:
    """Connect, send one upgrade request, read the answer's head. Raises ``UpstreamError``."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context is not None else None,
                limit=STREAM_BUFFER_LIMIT_BYTES,
            )
            try:
                host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                writer.write(_request_head(method, target, host_header, headers))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except BaseException:
                await close_writer(writer)
                raise
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise UpstreamError(f"cannot reach {host}:{port}: {exc}") from exc
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise UpstreamError(f"{host}:{port} closed or sent no HTTP answer") from exc
    if len(head) > MAX_HEAD_BYTES:
        await close_writer(writer)
        raise UpstreamError(f"{host}:{port} sent an oversized answer head")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        await close_writer(writer)
        raise UpstreamError(f"{host}:{port} answered {lines[0]!r}")
    parsed: list[tuple[str, str]] = []
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            parsed.append((key.strip(), value.strip()))
    return UpgradeResponse(
        status=int(parts[1]),
        reason=parts[2] if len(parts) > 2 else "",
        head=head,
        headers=parsed,
        reader=reader,
        writer=writer,
    )


async def hijack(
    request: web.Request,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, web.StreamResponse]:
    """Take the request's connection from aiohttp: returns a reader and writer over it and the
    (already "prepared") response the handler must return when it is done with them. The
    caller writes the response head itself."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client connection is closed")
    loop = asyncio.get_running_loop()
    aiohttp_protocol = request.protocol
    reader = asyncio.StreamReader(limit=STREAM_BUFFER_LIMIT_BYTES, loop=loop)

    class _Protocol(asyncio.StreamReaderProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            # aiohttp's handler is still running (it is us): telling it now makes it end
            # quietly once we return, without touching the socket again.
            aiohttp_protocol.connection_lost(exc)

    protocol = _Protocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer, _HijackedResponse()


class _HijackedResponse(web.StreamResponse):
    """What a hijacking handler returns: aiohttp must neither send a head nor an EOF."""

    def __init__(self) -> None:
        super().__init__(status=101)

    @property
    def prepared(self) -> bool:
        return True

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await src.read(SPLICE_CHUNK_BYTES)
            if not chunk:
                break
            dst.write(chunk)
            await dst.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        # Half-close where the transport allows it (TCP), so the peer sees EOF and can
        # finish; TLS transports cannot, so the connection is closed instead.
        if dst.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                dst.write_eof()
        else:
            dst.close()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until one direction ends, then close both connections."""
    up = asyncio.create_task(_pump(a[0], b[1]), name="splice-a-to-b")
    down = asyncio.create_task(_pump(b[0], a[1]), name="splice-b-to-a")
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        # Streaming protocols end when the server side (b) finishes: once b -> a is done the
        # session is over; if a -> b ended first (client EOF), give b time to finish.
        if not down.done():
            await down
    finally:
        for task in (up, down):
            task.cancel()
        for task in (up, down):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_writer(a[1])
        await close_writer(b[1])


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream writer, waiting briefly for the close; errors while closing are moot."""
    writer.close()
    with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def proxy_upgrade(
    request: web.Request,
    *,
    host: str,
    port: int,
    target: str,
    method: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send ``request``'s upgrade to ``host:port`` ``target``; relay the answer; splice on 101."""
    headers = [
        (name, value)
        for name in FORWARDED_UPGRADE_HEADERS
        for value in request.headers.getall(name, [])
    ]
    headers.extend((extra_headers or {}).items())
    try:
        upstream = await open_upgrade(
            host=host,
            port=port,
            method=method or request.method,
            target=target,
            headers=headers,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
        )
    except UpstreamError as exc:
        log.info("upgrade proxy to %s:%d failed: %s", host, port, exc)
        return web.Response(status=502, text=f"{exc}\n")
    if upstream.status != 101:
        body = await upstream.read_body()
        content_type = upstream.header("Content-Type") or "text/plain"
        response = web.Response(status=upstream.status, body=body)
        response.headers["Content-Type"] = content_type
        return response
    try:
        client_reader, client_writer, done = await hijack(request)
    except BaseException:
        await close_writer(upstream.writer)
        raise
    client_writer.write(upstream.head)
    await splice((client_reader, client_writer), (upstream.reader, upstream.writer))
    return done
