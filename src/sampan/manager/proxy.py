"""The manager's authenticating proxy to downstream API servers, and the dialer it runs on.

**Dialer.** ``ClusterDialer`` is all the proxy needs from whatever reaches a cluster (the
``local`` cluster directly, an imported one through its agent's tunnel):

* ``async open(cluster_id) -> (reader, writer)``: a fresh raw byte stream to the cluster's
  API server port (TCP-like, not yet TLS). ``reader.read(n)`` returns up to ``n`` bytes, ``b""``
  at EOF; ``writer.write(data)`` / ``await writer.drain()`` / ``writer.close()`` /
  ``await writer.wait_closed()`` as asyncio's streams (asyncio's own streams qualify). Raises
  ``ClusterNotConnected`` (with a message saying why) when the cluster cannot be reached now.
* ``async downstream(cluster_id) -> Downstream``: how to speak to that API server over the
  stream: the TLS context (trust, optionally a client certificate), the TLS server name and
  ``Host`` header, and an optional bearer token. Raises ``ClusterNotConnected`` likewise.

``LocalDialer`` serves cluster ``local`` from the manager's own client configuration (the
supervisor gives the manager the cluster-admin client certificate); ``RoutingDialer`` sends
``local`` there and every other id to the tunnel's dialer when there is one.

**Proxy.** ``ClusterProxy.forward(request, cluster_id, user_id, groups)`` relays one request of
an already authenticated and authorized manager user: TLS is run here over the dialer's stream
(``TLSStream``, memory BIOs, so any stream works), the request goes out as HTTP/1.1 with the
caller's headers minus hop-by-hop ones, minus every ``Authorization``, ``Cookie`` (a browser
session is a manager credential), ``Impersonate-*`` and ``X-Remote-*`` header the caller sent,
plus the downstream credentials and ``Impersonate-User: <user id>`` / ``Impersonate-Group``
(one per group): downstream RBAC decides. Bodies stream both ways chunk by chunk (a watch or
``logs -f`` reaches the caller as the downstream writes it); a ``101`` to an upgrade request
(exec, attach, port-forward: SPDY or WebSocket) hands both connections to a byte splice until
either side ends.

Invariants: a caller's credentials or impersonation headers never reach a downstream; a cluster
that cannot be dialed answers 503 ``ServiceUnavailable``, a downstream that fails or closes
before its answer is complete answers 502 (a Kubernetes ``Status``) when nothing was sent yet,
and otherwise the caller's connection is aborted (never a truncated answer that looks whole,
never a hang: the answer head must start within ``RESPONSE_HEAD_TIMEOUT_S``); a caller that
leaves, even during an idle watch, closes its downstream connection within ``CALLER_CHECK_S``.
Kept-alive downstream connections: see ``ClusterProxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sampan import httpstream
from sampan.api.errors import ServiceUnavailable, StatusError
from sampan.client import ClientConfig
from sampan.manager.crds import LOCAL_CLUSTER

__all__ = [
    "ByteReader",
    "ByteWriter",
    "ClusterDialer",
    "ClusterNotConnected",
    "ClusterProxy",
    "Downstream",
    "DownstreamError",
    "LocalDialer",
    "RoutingDialer",
    "TLSStream",
    "downstream_request",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
DIAL_TIMEOUT_S = 10.0
IDLE_S = 30.0
"""How long a kept-alive downstream connection may wait for its next request."""
IDLE_PER_CLUSTER = 8
CALLER_CHECK_S = 1.0
"""How often a relay waiting on an idle downstream checks that its caller is still there."""
RESPONSE_HEAD_TIMEOUT_S = 60.0
"""How long a downstream may take to start answering (kube-apiserver's request timeout); a
watch answers its head at once, so this never cuts a stream short."""

_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "cookie",
    )
)
_DROPPED_PREFIXES = ("impersonate-", "x-remote-")


class ClusterNotConnected(Exception):
    """The cluster cannot be reached now (no tunnel, the API server refuses); the message
    says why and is shown to the caller."""


class DownstreamError(Exception):
    """The downstream API server failed mid-request (closed, garbage, TLS failure)."""


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass(frozen=True)
class Downstream:
    """How to speak to one cluster's API server over a dialed stream."""

    ssl_context: ssl.SSLContext = field(repr=False)
    server_hostname: str
    """The TLS server name the API server's certificate must carry."""
    host_header: str
    token: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer`` (none: the TLS client certificate authenticates)."""


class ClusterDialer(Protocol):
    """See the module docstring."""

    async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]: ...

    async def downstream(self, cluster_id: str) -> Downstream: ...


class LocalDialer:
    """Cluster ``local``: a TCP connection to the API server the manager's client uses, with
    the manager's own (cluster-admin) credentials."""

    def __init__(self, config: ClientConfig) -> None:
        url = urllib.parse.urlsplit(config.server)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"the local API server URL must be https://host:port: {url!r}")
        self._host = url.hostname
        self._port = url.port or 443
        self._config = config
        self._downstream: Downstream | None = None

    async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]:
        if cluster_id != LOCAL_CLUSTER:
            raise ClusterNotConnected(f"cluster {cluster_id} is not connected")
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                return await asyncio.open_connection(self._host, self._port, limit=CHUNK_BYTES)
        except (OSError, TimeoutError) as exc:
            raise ClusterNotConnected(
                f"cluster {cluster_id}: API server unreachable: {exc}"
            ) from exc

    async def downstream(self, cluster_id: str) -> Downstream:
        if cluster_id != LOCAL_CLUSTER:
            raise ClusterNotConnected(f"cluster {cluster_id} is not connected")
        if self._downstream is None:
            from sampan.client.api import _build_ssl_context

            context = await asyncio.to_thread(_build_ssl_context, self._config)
            token = self._config.token
            if token is None and self._config.token_file is not None:
                token = (await asyncio.to_thread(self._config.token_file.read_text)).strip()
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._downstream = Downstream(
                ssl_context=context,
                server_hostname=self._config.tls_server_name or self._host,
                host_header=f"{host}:{self._port}",
                token=token,
            )
        return self._downstream


class RoutingDialer:
    """``local`` to ``local``; every other cluster to ``remote`` (the tunnel), or "not
    connected" while there is none."""

    def __init__(self, local: ClusterDialer, remote: ClusterDialer | None = None) -> None:
        self.local = local
        self.remote = remote

    def _pick(self, cluster_id: str) -> ClusterDialer:
        if cluster_id == LOCAL_CLUSTER:
            return self.local
        if self.remote is None:
            raise ClusterNotConnected(f"cluster {cluster_id} is not connected")
        return self.remote

    async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]:
        return await self._pick(cluster_id).open(cluster_id)

    async def downstream(self, cluster_id: str) -> Downstream:
        return await self._pick(cluster_id).downstream(cluster_id)


# --- TLS over any byte stream -----------------------------------------------------------------


class TLSStream:
    """A TLS client over a ``ByteReader``/``ByteWriter`` pair (memory BIOs): ``read`` and
    ``write`` may run in two tasks at once (one reader, one writer)."""

    def __init__(
        self, reader: ByteReader, writer: ByteWriter, context: ssl.SSLContext, server_hostname: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._closed = False

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _fill(self) -> None:
        data = await self._reader.read(CHUNK_BYTES)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
        await self._flush()

    async def read(self, n: int = CHUNK_BYTES) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end of the stream (clean or not: the HTTP
        framing above tells a truncated answer from a whole one)."""
        while True:
            try:
                data = self._ssl.read(n)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            await self._flush()  # post-handshake messages (session tickets, key updates)
            return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._ssl.write(view[:CHUNK_BYTES])
            view = view[written:]
            await self._flush()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ssl.SSLError, OSError, ConnectionError):
            self._ssl.unwrap()
        with contextlib.suppress(Exception):
            await self._flush()
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()


class _Connection:
    """One HTTP/1.1 exchange with a downstream over TLS: a read buffer for the answer."""

    def __init__(self, tls: TLSStream) -> None:
        self.tls = tls
        self._buffer = bytearray()

    async def _more(self) -> bool:
        data = await self.tls.read(CHUNK_BYTES)
        if not data:
            return False
        self._buffer += data
        return True

    async def read_until(self, separator: bytes, limit: int) -> bytes:
        while True:
            index = self._buffer.find(separator)
            if index >= 0:
                end = index + len(separator)
                out = bytes(self._buffer[:end])
                del self._buffer[:end]
                return out
            if len(self._buffer) > limit:
                raise DownstreamError("the downstream sent an oversized header")
            if not await self._more():
                raise DownstreamError("the downstream closed the connection before answering")

    async def read_some(self, n: int) -> bytes:
        if not self._buffer and not await self._more():
            return b""
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def take_buffer(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out

    async def read_head(self) -> tuple[int, str, list[tuple[str, str]], bytes]:
        head = await self.read_until(b"\r\n\r\n", MAX_HEAD_BYTES)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise DownstreamError(f"the downstream answered {lines[0][:80]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers.append((key.strip(), value.strip()))
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, head

    async def body(
        self, method: str, status: int, headers: list[tuple[str, str]]
    ) -> AsyncIterator[bytes]:
        """The answer's body piece by piece; ``DownstreamError`` if it ends early."""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return
        encoding = _header(headers, "Transfer-Encoding")
        if encoding is not None and "chunked" in encoding.lower():
            while True:
                line = await self.read_until(b"\r\n", 1024)
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise DownstreamError("the downstream sent a bad chunk size") from None
                if size == 0:
                    while (await self.read_until(b"\r\n", MAX_HEAD_BYTES)) != b"\r\n":
                        pass
                    return
                while size > 0:
                    piece = await self.read_some(min(size, CHUNK_BYTES))
                    if not piece:
                        raise DownstreamError("the downstream closed the connection mid-answer")
                    size -= len(piece)
                    yield piece
                if await self.read_until(b"\r\n", 2) != b"\r\n":
                    raise DownstreamError("the downstream sent a bad chunk")
        length = _header(headers, "Content-Length")
        if length is not None:
            if not length.isdigit():
                raise DownstreamError("the downstream sent a bad Content-Length")
            remaining = int(length)
            while remaining > 0:
                piece = await self.read_some(min(remaining, CHUNK_BYTES))
                if not piece:
                    raise DownstreamError("the downstream closed the connection mid-answer")
                remaining -= len(piece)
                yield piece
            return
        while piece := await self.read_some(CHUNK_BYTES):
            yield piece


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    lower = name.lower()
    for key, value in headers:
        if key.lower() == lower:
            return value
    return None


async def _connect(dialer: ClusterDialer, cluster_id: str) -> tuple[_Connection, Downstream]:
    """Dial and shake hands; ``ClusterNotConnected`` when the cluster cannot be reached,
    ``DownstreamError`` when TLS fails."""
    downstream = await dialer.downstream(cluster_id)
    reader, writer = await dialer.open(cluster_id)
    tls = TLSStream(reader, writer, downstream.ssl_context, downstream.server_hostname)
    try:
        async with asyncio.timeout(DIAL_TIMEOUT_S):
            await tls.handshake()
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        await tls.close()
        raise DownstreamError(f"TLS with cluster {cluster_id} failed: {exc}") from exc
    except BaseException:
        await tls.close()
        raise
    return _Connection(tls), downstream


def _request_head(
    method: str, target: str, downstream: Downstream, headers: Iterable[tuple[str, str]]
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {downstream.host_header}"]
    lines.extend(f"{key}: {value}" for key, value in headers)
    if downstream.token:
        lines.append(f"Authorization: Bearer {downstream.token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def downstream_request(
    dialer: ClusterDialer,
    cluster_id: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """One request to a downstream as the dialer's own identity (the manager's, for RBAC
    upkeep): ``(status, decoded JSON or None)``. Raises ``ClusterNotConnected`` or
    ``DownstreamError``."""
    connection, downstream = await _connect(dialer, cluster_id)
    try:
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [("Accept", "application/json"), ("Connection", "close")]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            headers += [("Content-Type", content_type), ("Content-Length", str(len(payload)))]
        try:
            async with asyncio.timeout(RESPONSE_HEAD_TIMEOUT_S):
                await connection.tls.write(
                    _request_head(method, path, downstream, headers) + payload
                )
                status, _, answer_headers, _ = await connection.read_head()
                raw = b"".join([p async for p in connection.body(method, status, answer_headers)])
        except (OSError, ConnectionError, ssl.SSLError, TimeoutError) as exc:
            raise DownstreamError(f"cluster {cluster_id}: {exc}") from exc
    finally:
        await connection.tls.close()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


# --- the proxy --------------------------------------------------------------------------------


def status_response(error: StatusError) -> web.Response:
    return web.Response(status=error.code, body=error.to_json(), content_type="application/json")


def bad_gateway(message: str) -> web.Response:
    return status_response(StatusError(message, code=502, reason="InternalError"))


def forwarded_headers(request: web.Request, upgrade: bool) -> list[tuple[str, str]]:
    """The caller's headers a downstream may see (see the module docstring)."""
    out: list[tuple[str, str]] = []
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in ("connection", "upgrade") and upgrade:
            out.append((key, value))
            continue
        if lower in _HOP_BY_HOP or lower.startswith(_DROPPED_PREFIXES):
            continue
        out.append((key, value))
    return out


async def _next_piece(body: AsyncIterator[bytes], request: web.Request) -> bytes:
    """The body's next piece (``b""`` at its end); ``ConnectionResetError`` as soon as the
    caller is gone (checked every ``CALLER_CHECK_S``), so an idle watch whose caller left
    does not keep its downstream connection."""
    task = asyncio.ensure_future(anext(body, b""))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CALLER_CHECK_S)
            if done:
                return task.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the caller closed the connection")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class ClusterProxy:
    """Relays requests to downstream API servers through a ``ClusterDialer``.

    Downstream connections are kept alive: after a whole answer the connection waits (at most
    ``IDLE_PER_CLUSTER`` per cluster, ``IDLE_S`` each) for the next request without a body
    that may be sent twice (``GET``, ``HEAD``, ``OPTIONS``); if such a kept connection turns
    out closed before answering, the request is sent once more on a new one. Every other
    request, upgrades included, dials a new connection."""

    def __init__(self, dialer: ClusterDialer) -> None:
        self.dialer = dialer
        self._idle: dict[str, list[tuple[float, _Connection]]] = {}

    async def _take_idle(self, cluster_id: str) -> _Connection | None:
        idle = self._idle.get(cluster_id, [])
        now = asyncio.get_running_loop().time()
        while idle:
            since, connection = idle.pop()
            if now - since < IDLE_S:
                return connection
            await connection.tls.close()
        return None

    async def _put_idle(self, cluster_id: str, connection: _Connection) -> None:
        idle = self._idle.setdefault(cluster_id, [])
        now = asyncio.get_running_loop().time()
        stale = [c for since, c in idle if now - since >= IDLE_S]
        idle[:] = [(since, c) for since, c in idle if now - since < IDLE_S]
        if len(idle) >= IDLE_PER_CLUSTER:
            stale.append(connection)
        else:
            idle.append((now, connection))
        for old in stale:
            await old.tls.close()

    async def close(self) -> None:
        """Close the kept connections (the manager stops)."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for _, connection in connections:
                await connection.tls.close()

    async def forward(
        self,
        request: web.Request,
        cluster_id: str,
        target: str,
        user_id: str,
        groups: Iterable[str],
    ) -> web.StreamResponse:
        upgrade = httpstream.is_upgrade_request(request)
        headers = forwarded_headers(request, upgrade)
        headers.append(("Impersonate-User", user_id))
        headers.extend(("Impersonate-Group", group) for group in groups)
        has_body = bool(not upgrade and (request.body_exists or request.content_length))
        if has_body and request.content_length is not None:
            headers.append(("Content-Length", str(request.content_length)))
        elif has_body:
            headers.append(("Transfer-Encoding", "chunked"))
        repeatable = not upgrade and not has_body and request.method in ("GET", "HEAD", "OPTIONS")
        try:
            downstream = await self.dialer.downstream(cluster_id)
        except ClusterNotConnected as exc:
            return status_response(ServiceUnavailable(str(exc)))
        head_out = _request_head(request.method, target, downstream, headers)
        connection = await self._take_idle(cluster_id) if repeatable else None
        if connection is not None:
            try:
                async with asyncio.timeout(RESPONSE_HEAD_TIMEOUT_S):
                    await connection.tls.write(head_out)
                    answer = await connection.read_head()
            except (DownstreamError, OSError, ConnectionError, ssl.SSLError) as exc:
                # A kept connection the downstream had closed meanwhile: once more, anew.
                log.debug("manager proxy: kept connection to %s failed: %s", cluster_id, exc)
                await connection.tls.close()
                connection = None
            except BaseException:
                await connection.tls.close()
                raise
        if connection is None:
            try:
                connection, _ = await _connect(self.dialer, cluster_id)
            except ClusterNotConnected as exc:
                return status_response(ServiceUnavailable(str(exc)))
            except DownstreamError as exc:
                log.info("manager proxy: %s", exc)
                return bad_gateway(str(exc))
            try:
                await connection.tls.write(head_out)
                if has_body:
                    await self._send_body(
                        request, connection, chunked=request.content_length is None
                    )
                async with asyncio.timeout(RESPONSE_HEAD_TIMEOUT_S):
                    answer = await connection.read_head()
            except (DownstreamError, OSError, ConnectionError, ssl.SSLError, TimeoutError) as exc:
                await connection.tls.close()
                text = str(exc) or type(exc).__name__
                log.info("manager proxy: cluster %s: %s", cluster_id, text)
                return bad_gateway(f"cluster {cluster_id}: {text}")
            except BaseException:
                await connection.tls.close()
                raise
        status, reason, answer_headers, head = answer
        if upgrade and status == 101:
            return await self._splice(request, connection, head)
        kept = False
        try:
            response, whole = await self._relay(request, connection, status, reason, answer_headers)
            closing = "close" in (_header(answer_headers, "Connection") or "").lower()
            framed = (
                _header(answer_headers, "Content-Length") is not None
                or "chunked" in (_header(answer_headers, "Transfer-Encoding") or "").lower()
                or status in (204, 304)
                or request.method == "HEAD"
            )
            if whole and framed and not closing and head.startswith(b"HTTP/1.1 "):
                await self._put_idle(cluster_id, connection)
                kept = True
            return response
        finally:
            if not kept:
                await connection.tls.close()

    async def _send_body(
        self, request: web.Request, connection: _Connection, *, chunked: bool
    ) -> None:
        async for piece in request.content.iter_chunked(CHUNK_BYTES):
            if chunked:
                await connection.tls.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                await connection.tls.write(piece)
        if chunked:
            await connection.tls.write(b"0\r\n\r\n")

    async def _relay(
        self,
        request: web.Request,
        connection: _Connection,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
    ) -> tuple[web.StreamResponse, bool]:
        """Relay the answer; also says whether it was relayed whole (the connection may be
        kept)."""
        response = web.StreamResponse(status=status, reason=reason or None)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP:
                response.headers.add(key, value)
        length = _header(headers, "Content-Length")
        chunked = "chunked" in (_header(headers, "Transfer-Encoding") or "").lower()
        if length is not None and length.isdigit() and not chunked:
            response.content_length = int(length)
        body = connection.body(request.method, status, headers)
        first = b""
        if not chunked:
            # A whole answer of known size: wait for its first bytes, so a downstream that dies
            # right after its head is still a 502. A chunked answer (a watch, ``logs -f``)
            # may idle for long: its head goes out at once.
            try:
                first = await _next_piece(body, request)
            except (DownstreamError, OSError, ssl.SSLError) as exc:
                return bad_gateway(f"{exc}"), False
            except ConnectionError:
                return response, False
        try:
            await response.prepare(request)
        except ConnectionError:
            return response, False  # the caller left
        try:
            if first:
                await response.write(first)
            while piece := await _next_piece(body, request):
                await response.write(piece)
        except (DownstreamError, OSError, ConnectionError, ssl.SSLError) as exc:
            # The head is out: abort the caller's connection so the answer cannot look whole.
            log.info("manager proxy: %s %s: %s", request.method, request.path, exc)
            if request.transport is not None:
                request.transport.abort()
            return response, False
        try:
            await response.write_eof()
        except ConnectionError:
            return response, False
        return response, True

    async def _splice(
        self, request: web.Request, connection: _Connection, head: bytes
    ) -> web.StreamResponse:
        tls = connection.tls
        try:
            client_reader, client_writer, done = await httpstream.hijack(request)
        except BaseException:
            await tls.close()
            raise
        client_writer.write(head + connection.take_buffer())

        async def up() -> None:
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                while chunk := await client_reader.read(CHUNK_BYTES):
                    await tls.write(chunk)

        async def down() -> None:
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                while chunk := await tls.read(CHUNK_BYTES):
                    client_writer.write(chunk)
                    await client_writer.drain()

        up_task = asyncio.create_task(up(), name="manager-proxy-up")
        down_task = asyncio.create_task(down(), name="manager-proxy-down")
        try:
            await asyncio.wait({up_task, down_task}, return_when=asyncio.FIRST_COMPLETED)
            if not down_task.done():
                # The caller finished sending; the downstream ends the session.
                await down_task
        finally:
            for task in (up_task, down_task):
                task.cancel()
            for task in (up_task, down_task):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await tls.close()
            await httpstream.close_writer(client_writer)
        return done
