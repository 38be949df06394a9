"""A small HTTPS/1.1 client for admission webhook calls: POST a JSON body, read the answer.

Why not aiohttp's client: a webhook call sits on the critical path of every matching write,
and aiohttp's client machinery costs about half a millisecond per request on its own (measured
against this client on the same server); this one is a few stream reads and writes.

Owns a pool of keep-alive connections keyed by (address, port, TLS server name, trust);
what the caller gets is the status and body, or one of three errors with Go's wording for the
cause (``DialError``, ``TLSError``, ``ProtocolError``). Timeouts are the caller's
(``asyncio.timeout``): a cancelled request closes its connection.

Invariants: a connection goes back to the pool only after a complete, delimited response on
HTTP/1.1 without ``Connection: close``; a request on a reused connection that fails before any
response byte is sent again once on a new connection (the server may have closed it while
idle, as Go's transport retries); a response body is never read past ``MAX_RESPONSE_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_RESPONSE_BYTES",
    "DialError",
    "HTTPSPool",
    "ProtocolError",
    "TLSError",
]

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
IDLE_TIMEOUT_S = 60.0
MAX_IDLE_PER_KEY = 64
_HEADER_LIMIT = 64 * 1024


class DialError(Exception):
    """The TCP connection could not be made (Go: ``dial tcp ...``)."""


class TLSError(Exception):
    """The TLS handshake failed (Go: ``tls: ...``)."""


class ProtocolError(Exception):
    """The server's answer is not a well-formed HTTP/1.1 response."""


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


_Key = tuple[str, int, str, str]


class HTTPSPool:
    """See the module docstring."""

    def __init__(self) -> None:
        self._idle: dict[_Key, list[_Conn]] = {}

    async def post(
        self,
        address: str,
        port: int,
        server_hostname: str,
        context: ssl.SSLContext,
        trust: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``target`` (path and query) at ``address:port`` over TLS verified
        as ``server_hostname``; ``trust`` names ``context`` in the pool key."""
        key = (address, port, server_hostname, trust)
        request = _request_bytes(target, headers, body)
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, request, reused=True)
            except _Stale:
                pass  # the server closed it while idle: once more on a new connection
        conn = await _dial(address, port, server_hostname, context)
        try:
            return await self._exchange(key, conn, request, reused=False)
        except _Stale as e:
            raise ProtocolError("EOF") from e

    async def _exchange(
        self, key: _Key, conn: _Conn, request: bytes, *, reused: bool
    ) -> tuple[int, bytes]:
        keep = False
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            try:
                status_line = await conn.reader.readuntil(b"\r\n")
            except asyncio.IncompleteReadError as e:
                if reused and not e.partial:
                    raise _Stale() from e
                raise ProtocolError("EOF") from e
            except (ConnectionResetError, BrokenPipeError) as e:
                if reused:
                    raise _Stale() from e
                raise
            status, keep_alive, length, chunked = await _read_head(conn.reader, status_line)
            body = await _read_body(conn.reader, length, chunked)
            keep = keep_alive and (chunked or length is not None)
            return status, body
        except (ConnectionResetError, BrokenPipeError) as e:
            raise ProtocolError(_go_errno(e)) from e
        except asyncio.LimitOverrunError as e:
            raise ProtocolError("net/http: response headers too large") from e
        finally:
            if keep:
                conn.idle_since = time.monotonic()
                idle = self._idle.setdefault(key, [])
                if len(idle) < MAX_IDLE_PER_KEY:
                    idle.append(conn)
                else:
                    conn.close()
            else:
                conn.close()

    def _take(self, key: _Key) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < IDLE_TIMEOUT_S:
                return conn
            conn.close()
        return None

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Stale(Exception):
    pass


def _request_bytes(target: str, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"POST {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _dial(address: str, port: int, server_hostname: str, context: ssl.SSLContext) -> _Conn:
    try:
        reader, writer = await asyncio.open_connection(
            address,
            port,
            ssl=context,
            server_hostname=server_hostname,
            limit=_HEADER_LIMIT,
        )
    except ssl.SSLCertVerificationError as e:
        raise TLSError(f"tls: failed to verify certificate: x509: {_x509_reason(e)}") from e
    except ssl.SSLError as e:
        raise TLSError(f"remote error: tls: {e.reason or e}") from e
    except socket.gaierror as e:
        raise DialError(f"dial tcp: lookup {address}: no such host") from e
    except OSError as e:
        host = f"[{address}]" if ":" in address else address
        raise DialError(f"dial tcp {host}:{port}: connect: {_go_errno(e)}") from e
    return _Conn(reader, writer)


def _x509_reason(error: ssl.SSLCertVerificationError) -> str:
    text = str(error.verify_message or error)
    unknown = ("unable to get local issuer", "self-signed", "self signed", "signature failure")
    if any(marker in text for marker in unknown):
        return "certificate signed by unknown authority"
    if "Hostname mismatch" in text or "IP address mismatch" in text:
        return f"certificate is not valid for the requested name ({text})"
    if "expired" in text:
        return "certificate has expired or is not yet valid"
    return text


def _go_errno(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(error, BrokenPipeError):
        return "broken pipe"
    return str(error.strerror or error).lower()


async def _read_head(
    reader: asyncio.StreamReader, status_line: bytes
) -> tuple[int, bool, int | None, bool]:
    """(status, keep-alive, content length or None, chunked)."""
    parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"malformed HTTP response {status_line[:64]!r}")
    status = int(parts[1])
    keep_alive = parts[0] == "HTTP/1.1"
    length: int | None = None
    chunked = False
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"malformed MIME header line: {line[:64]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            if not value.isdigit():
                raise ProtocolError(f"bad Content-Length {value!r}")
            length = int(value)
        elif name == "transfer-encoding":
            chunked = value.lower() == "chunked"
        elif name == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "close" in tokens:
                keep_alive = False
            elif "keep-alive" in tokens:
                keep_alive = True
    if chunked:
        length = None
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive, 0, False
    return status, keep_alive, length, chunked


async def _read_body(reader: asyncio.StreamReader, length: int | None, chunked: bool) -> bytes:
    if length is not None:
        if length > MAX_RESPONSE_BYTES:
            raise ProtocolError("response body too large")
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            raise ProtocolError("unexpected EOF") from e
    if not chunked:  # delimited by the end of the connection
        data = bytearray()
        while chunk := await reader.read(65536):
            data.extend(chunk)
            if len(data) > MAX_RESPONSE_BYTES:
                raise ProtocolError("response body too large")
        return bytes(data)
    data = bytearray()
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as e:
                raise ProtocolError("malformed chunked encoding") from e
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return bytes(data)
            if len(data) + size > MAX_RESPONSE_BYTES:
                raise ProtocolError("response body too large")
            data.extend(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ProtocolError("malformed chunked encoding")
    except asyncio.IncompleteReadError as e:
        raise ProtocolError("unexpected EOF") from e
