"""One tunnel session: many byte streams multiplexed over one WebSocket (layout in ``frames``).

A ``Session`` owns its WebSocket, a read loop and one writer task, and the table of open
streams. Each stream is a ``Stream``, an ``asyncio.Transport``: anything that runs over a
transport runs over a tunnel stream unchanged — ``asyncio`` streams (``open_connection``
below), TLS (``loop.start_tls``; the manager's proxy speaks TLS end to end with the downstream
API server), aiohttp's client (``TunnelConnector`` in ``server``), and byte splicing after an
HTTP upgrade.

Invariants:

* the read loop never awaits on behalf of one stream: a frame is handled synchronously (data
  goes into the stream's protocol or, while its reader is paused, into a buffer bounded by the
  credit the stream granted), so a stalled stream cannot block the others;
* only the writer task sends, in this order of preference: control frames (dial, window,
  close...) first, then data from streams that have both bytes and credit, round-robin, at
  most ``MAX_DATA_BYTES`` per turn. A stream's ``close-write``/``close`` is queued only once
  its own buffered data has been handed to the writer, so it never overtakes that data;
* a stream's send buffer above ``WRITE_HIGH_WATER_BYTES`` pauses its protocol's writing
  (``drain()`` waits), so an application cannot outrun its credit by more than that;
* credit is granted back (``window``) as bytes are delivered to the stream's protocol, which
  pauses reading when its own buffer is full — then delivery stops, and so does the credit;
* when the session ends, every open stream's protocol sees ``connection_lost(StreamReset)``
  and every pending dial fails, at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sampan.manager.tunnel import frames
from sampan.manager.tunnel.errors import (
    DialError,
    DialTimeout,
    NotConnected,
    ProtocolError,
    StreamReset,
    TunnelError,
)
from sampan.manager.tunnel.frames import FrameType
from sampan.tasks import cancel_and_wait, log_task_end

__all__ = [
    "Acceptor",
    "Session",
    "Stream",
    "open_connection",
    "splice",
    "start_tls",
]

log = logging.getLogger("sampan.manager.tunnel")

WRITE_HIGH_WATER_BYTES = 64 * 1024
WRITE_LOW_WATER_BYTES = 16 * 1024
MAX_STREAMS = 1024
SPLICE_CHUNK_BYTES = 64 * 1024
DEFAULT_DIAL_TIMEOUT_S = 10.0
WS_CLOSE_PROTOCOL_ERROR = 1002

# Opens the local end of a dial: (host, port, timeout_s) -> asyncio streams; whatever it
# raises (OSError, DialError for a refused target...) answers ``dial-error`` with its text.
Acceptor = Callable[[str, int, float], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class Stream(asyncio.Transport):
    """One multiplexed connection, seen as an ``asyncio.Transport``.

    Created by ``Session`` (never by users); reading starts paused and resumes once a
    protocol is attached (``attach``) or ``start_tls`` takes the transport."""

    _start_tls_compatible = True

    def __init__(self, session: Session, conn_id: int, host: str, port: int, window: int) -> None:
        super().__init__(extra={"peername": (host, port), "tunnel_conn_id": conn_id})
        self._session = session
        self.conn_id = conn_id
        self._protocol: asyncio.BaseProtocol | None = None
        self._send_buf = bytearray()
        self._send_credit = 0
        self._recv_credit = window
        self._window = window
        self._unacked = 0
        self._recv_buf: collections.deque[bytes] = collections.deque()
        self._eof_pending = False
        self._reading_paused = True
        self._writing_paused = False
        self._write_eof = False  # write_eof() called
        self._closing = False  # close() called
        self._closed = False  # gone: id forgotten, connection_lost scheduled
        self._queued = False  # in the session's ready queue
        self._high = WRITE_HIGH_WATER_BYTES
        self._low = WRITE_LOW_WATER_BYTES
        self.dialed: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        host, port = self.get_extra_info("peername")
        return f"<tunnel stream {self.conn_id} to {host}:{port} on {self._session.name}>"

    # -- asyncio.BaseTransport
    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def close(self) -> None:
        if self._closing or self._closed:
            return
        self._closing = True
        self._reading_paused = True
        self._recv_buf.clear()
        if not self._send_buf:
            self._finish(None, send=FrameType.CLOSE)
        # else: the writer sends what is buffered (as credit allows), then ``close``

    # -- asyncio.ReadTransport
    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closed

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._closed or self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        while self._recv_buf and not self._reading_paused and not self._closed:
            self._deliver(self._recv_buf.popleft())
        if self._eof_pending and not self._recv_buf and not self._reading_paused:
            self._eof_pending = False
            self._deliver_eof()

    # -- asyncio.WriteTransport
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = WRITE_HIGH_WATER_BYTES if high is None else high
        self._low = (self._high // 4) if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        return len(self._send_buf)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._closing or self._write_eof or not data:
            return
        self._send_buf += data
        if self._send_credit > 0:
            self._session._ready_to_send(self)
        if (
            not self._writing_paused
            and len(self._send_buf) > self._high
            and self._protocol is not None
        ):
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._write_eof or self._closed or self._closing:
            return
        self._write_eof = True
        if not self._send_buf:
            self._session._send(frames.encode(FrameType.CLOSE_WRITE, self.conn_id))

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        """Drop everything and tell the far side the stream is aborted (as an RST would)."""
        if self._closed:
            return
        self._send_buf.clear()
        self._recv_buf.clear()
        message = "connection aborted" if exc is None else f"connection aborted: {exc}"
        self._finish(exc, send=FrameType.ERROR, message=message)

    # -- used by Session
    def _deliver(self, data: bytes) -> None:
        protocol = self._protocol
        assert protocol is not None
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = memoryview(protocol.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            protocol.data_received(data)  # type: ignore[attr-defined]
        self._unacked += len(data)
        if self._unacked >= self._window // 4 and not self._closed:
            self._recv_credit += self._unacked
            self._session._send(frames.encode_u32(FrameType.WINDOW, self.conn_id, self._unacked))
            self._unacked = 0

    def _deliver_eof(self) -> None:
        protocol = self._protocol
        assert protocol is not None
        keep_open = protocol.eof_received()  # type: ignore[attr-defined]
        if not keep_open:
            self.close()

    def _on_data(self, data: bytes) -> None:
        if len(data) > self._recv_credit:
            raise ProtocolError(
                f"connection {self.conn_id}: {len(data)} bytes of data beyond the granted credit "
                f"of {self._recv_credit}"
            )
        self._recv_credit -= len(data)
        if self._closing or self._eof_pending:
            return
        if self._reading_paused or self._recv_buf:
            self._recv_buf.append(data)
        else:
            self._deliver(data)

    def _on_window(self, increment: int) -> None:
        self._send_credit += increment
        if self._send_credit > frames.MAX_WINDOW_BYTES:
            raise ProtocolError(
                f"connection {self.conn_id}: window grew beyond {frames.MAX_WINDOW_BYTES}"
            )
        if self._send_buf:
            self._session._ready_to_send(self)

    def _on_close_write(self) -> None:
        if self._reading_paused or self._recv_buf:
            self._eof_pending = True
        else:
            self._deliver_eof()

    def _on_close(self) -> None:
        """The far side is done: hand over what arrived, then end without an error."""
        if self._protocol is not None and not self._closing:
            while self._recv_buf:
                self._deliver(self._recv_buf.popleft())
            self._eof_pending = False
            with contextlib.suppress(Exception):
                self._protocol.eof_received()  # type: ignore[attr-defined]
        self._send_buf.clear()
        self._finish(None, send=None)

    def _take_frame(self) -> bytes | None:
        """The next data frame to send (called by the writer task only)."""
        self._queued = False
        n = min(len(self._send_buf), self._send_credit, frames.MAX_DATA_BYTES)
        if n <= 0 or self._closed:
            return None
        chunk = bytes(self._send_buf[:n])
        del self._send_buf[:n]
        self._send_credit -= n
        if self._writing_paused and len(self._send_buf) <= self._low and self._protocol is not None:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._send_buf:
            if self._send_credit > 0:
                self._session._ready_to_send(self)
        elif self._closing:
            self._finish(None, send=FrameType.CLOSE)  # queued behind the frame returned
        elif self._write_eof:
            self._session._send(frames.encode(FrameType.CLOSE_WRITE, self.conn_id))
        return frames.encode(FrameType.DATA, self.conn_id, chunk)

    def _finish(self, exc: BaseException | None, send: FrameType | None, message: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._session._forget(self, send, message)
        if self.dialed is not None and not self.dialed.done():
            self.dialed.set_exception(exc or StreamReset("stream closed before it was connected"))
            self.dialed.exception()  # retrieved: the dialer reports it
        if self._protocol is not None:
            self._session._call_soon(self._protocol.connection_lost, exc)


class Session:
    """The multiplexer on one WebSocket (either end).

    ``server_side`` decides the parity of the ids this side dials (odd on the manager);
    ``acceptor`` opens the local end of the peer's dials (``None``: refuse them)."""

    def __init__(
        self,
        ws: WebSocket,
        *,
        name: str,
        server_side: bool,
        acceptor: Acceptor | None = None,
        window_bytes: int = frames.DEFAULT_WINDOW_BYTES,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.ws = ws
        self.name = name
        self._server_side = server_side
        self._acceptor = acceptor
        self._window = window_bytes
        self._max_streams = max_streams
        self._next_id = 1 if server_side else 2
        self._streams: dict[int, Stream] = {}
        self._control: collections.deque[bytes] = collections.deque()
        self._ready: collections.deque[Stream] = collections.deque()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self.alive = True
        self.close_reason = ""
        self.last_heartbeat = self._loop.time()
        self.unknown_frames = 0

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- used by Stream
    def _send(self, frame: bytes) -> None:
        if self.alive:
            self._control.append(frame)
            self._wake.set()

    def _ready_to_send(self, stream: Stream) -> None:
        if not stream._queued and self.alive:
            stream._queued = True
            self._ready.append(stream)
            self._wake.set()

    def _call_soon(self, callback: Callable[..., object], *args: object) -> None:
        self._loop.call_soon(callback, *args)

    def _forget(self, stream: Stream, send: FrameType | None, message: str) -> None:
        if self._streams.get(stream.conn_id) is stream:
            del self._streams[stream.conn_id]
            if send is FrameType.ERROR:
                self._send(frames.encode_text(FrameType.ERROR, stream.conn_id, message))
            elif send is not None:
                self._send(frames.encode(send, stream.conn_id))

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(log_task_end)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dialing
    async def open_stream(
        self, host: str, port: int, timeout_s: float = DEFAULT_DIAL_TIMEOUT_S
    ) -> Stream:
        """Ask the far side to connect to host:port; the connected ``Stream`` (reading paused,
        no protocol yet). ``DialError``/``DialTimeout``/``NotConnected`` otherwise."""
        if not self.alive:
            raise NotConnected(f"tunnel {self.name} is closed")
        if len(self._streams) >= self._max_streams:
            raise DialError(f"tunnel {self.name} has {len(self._streams)} open connections")
        conn_id = self._next_id
        if conn_id > 0xFFFFFFFF:
            raise DialError(f"tunnel {self.name} has used up its connection ids; reconnect it")
        self._next_id += 2
        stream = Stream(self, conn_id, host, port, self._window)
        stream.dialed = self._loop.create_future()
        self._streams[conn_id] = stream
        self._send(frames.encode_dial(conn_id, self._window, int(timeout_s * 1000), host, port))
        try:
            await asyncio.wait_for(asyncio.shield(stream.dialed), timeout_s)
        except TimeoutError:
            stream._finish(None, send=FrameType.CLOSE)
            raise DialTimeout(
                f"dial {host}:{port} through tunnel {self.name} timed out after {timeout_s:g}s"
            ) from None
        except asyncio.CancelledError:
            stream._finish(None, send=FrameType.CLOSE)
            raise
        return stream

    # -- the read loop
    async def run(self) -> None:
        """Serve the session until its WebSocket closes; then reset every stream."""
        self._spawn(self._write_loop(), f"tunnel-writer {self.name}")
        reason = "closed by the peer"
        close_code, close_message = 1000, b""
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._on_frame(msg.data)
                elif msg.type is aiohttp.WSMsgType.PING:
                    self.last_heartbeat = self._loop.time()
                    await self.ws.pong(msg.data)
                elif msg.type is aiohttp.WSMsgType.PONG:
                    self.last_heartbeat = self._loop.time()
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    raise ProtocolError("text message on a binary-only tunnel")
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    # aiohttp has closed the WebSocket already (1009 for an oversized message)
                    if isinstance(msg.data, aiohttp.WebSocketError):
                        reason = f"protocol error: {msg.data}"
                        log.error("tunnel %s: %s; session closed", self.name, msg.data)
                    else:  # e.g. the heartbeat's pong did not come back
                        reason = f"connection lost: {msg.data}"
                        log.warning("tunnel %s: %s; session closed", self.name, msg.data)
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    if self.ws.close_code not in (None, 1000):
                        reason = f"closed with code {self.ws.close_code}"
                    break
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            close_code, close_message = WS_CLOSE_PROTOCOL_ERROR, str(exc)[:120].encode()
            log.error("tunnel %s: protocol error: %s; session closed", self.name, exc)
        except (ConnectionError, aiohttp.ClientError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            await self._teardown(reason, close_code, close_message)

    async def close(self, reason: str = "closed", code: int = 1000) -> None:
        """Close the WebSocket; ``run`` then resets every stream."""
        self.close_reason = self.close_reason or reason
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason[:120].encode())

    async def _teardown(self, reason: str, code: int = 1000, message: bytes = b"") -> None:
        """Reset every stream first (they learn at once), then finish the close handshake."""
        if not self.alive:
            return
        self.alive = False
        self.close_reason = self.close_reason or reason
        error = StreamReset(f"tunnel {self.name} {self.close_reason}")
        for stream in list(self._streams.values()):
            stream._finish(error, send=None)
        self._streams.clear()
        self._control.clear()
        self._ready.clear()
        await cancel_and_wait(*self._tasks)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)

    async def _write_loop(self) -> None:
        ws = self.ws
        while True:
            while not self._control and not self._ready:
                self._wake.clear()
                await self._wake.wait()
            frame = (
                self._control.popleft() if self._control else self._ready.popleft()._take_frame()
            )
            if frame is None:
                continue
            try:
                await ws.send_bytes(frame)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.info("tunnel %s: sending failed (%s); closing", self.name, exc)
                closing = asyncio.ensure_future(self.close("send failed", 1011))
                closing.set_name(f"tunnel-close {self.name}")
                closing.add_done_callback(log_task_end)
                return

    def _on_frame(self, message: bytes) -> None:
        kind, conn_id, payload = frames.decode(message)
        stream = self._streams.get(conn_id)
        if kind is FrameType.DIAL:
            self._on_dial(conn_id, payload)
            return
        if stream is None:
            self._on_unknown(kind, conn_id)
            return
        if kind is FrameType.DATA:
            stream._on_data(payload)
        elif kind is FrameType.WINDOW:
            stream._on_window(frames.decode_u32(payload))
        elif kind is FrameType.CLOSE_WRITE:
            stream._on_close_write()
        elif kind is FrameType.CLOSE:
            stream._on_close()
        elif kind is FrameType.ERROR:
            stream._finish(StreamReset(payload.decode(errors="replace")), send=None)
        elif kind in (FrameType.DIAL_OK, FrameType.DIAL_ERROR):
            if stream.dialed is None or stream.dialed.done():
                raise ProtocolError(
                    f"{kind.name.lower()} for connection {conn_id} that is not dialing"
                )
            if kind is FrameType.DIAL_OK:
                stream._send_credit = frames.decode_u32(payload)
                stream.dialed.set_result(None)
            else:
                stream.dialed.set_exception(DialError(payload.decode(errors="replace")))
                stream._finish(None, send=None)

    def _on_unknown(self, kind: FrameType, conn_id: int) -> None:
        self.unknown_frames += 1
        log.debug(
            "tunnel %s: %s frame for unknown connection %d", self.name, kind.name.lower(), conn_id
        )
        if kind in (FrameType.DATA, FrameType.WINDOW, FrameType.CLOSE_WRITE):
            self._send(
                frames.encode_text(FrameType.ERROR, conn_id, f"unknown connection {conn_id}")
            )
        elif kind is FrameType.DIAL_OK:
            self._send(frames.encode(FrameType.CLOSE, conn_id))

    def _on_dial(self, conn_id: int, payload: bytes) -> None:
        peer_parity = 0 if self._server_side else 1
        if conn_id % 2 != peer_parity:
            raise ProtocolError(f"dial with connection id {conn_id} of this side's parity")
        if conn_id in self._streams:
            raise ProtocolError(f"dial for connection {conn_id} that is already open")
        window, timeout_ms, host, port = frames.decode_dial(payload)
        if self._acceptor is None:
            self._send(
                frames.encode_text(
                    FrameType.DIAL_ERROR, conn_id, "this side of the tunnel accepts no dials"
                )
            )
            return
        if len(self._streams) >= self._max_streams:
            self._send(
                frames.encode_text(FrameType.DIAL_ERROR, conn_id, "too many open connections")
            )
            return
        stream = Stream(self, conn_id, host, port, self._window)
        stream._send_credit = window
        self._streams[conn_id] = stream
        timeout_s = timeout_ms / 1000 if timeout_ms else DEFAULT_DIAL_TIMEOUT_S
        self._spawn(
            self._accept(stream, host, port, timeout_s), f"tunnel-accept {self.name} {conn_id}"
        )

    async def _accept(self, stream: Stream, host: str, port: int, timeout_s: float) -> None:
        assert self._acceptor is not None
        try:
            reader, writer = await asyncio.wait_for(
                self._acceptor(host, port, timeout_s), timeout_s
            )
        except Exception as exc:  # whatever the acceptor raised becomes the dial-error text
            text = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError) and not isinstance(exc, TunnelError):
                text = f"dial {host}:{port} timed out after {timeout_s:g}s"
            if self._streams.get(stream.conn_id) is stream:
                stream._finish(None, send=None)
                self._send(frames.encode_text(FrameType.DIAL_ERROR, stream.conn_id, text))
            return
        if stream.is_closing():  # the dialer gave up meanwhile
            writer.transport.abort()
            return
        self._send(frames.encode_u32(FrameType.DIAL_OK, stream.conn_id, self._window))
        tunnel_reader, tunnel_writer = attach(stream)
        await splice(tunnel_reader, tunnel_writer, reader, writer)


def attach(
    stream: Stream, *, limit: int = SPLICE_CHUNK_BYTES
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over a plain (non-TLS) tunnel stream."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    stream.set_protocol(protocol)
    protocol.connection_made(stream)
    stream.resume_reading()
    return reader, asyncio.StreamWriter(stream, protocol, reader, loop)


async def open_connection(
    session: Session,
    host: str,
    port: int,
    *,
    timeout_s: float = DEFAULT_DIAL_TIMEOUT_S,
    ssl: Any = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial host:port through ``session``; asyncio streams, with TLS on top when ``ssl`` (an
    ``ssl.SSLContext``) is given — the handshake runs end to end through the tunnel."""
    stream = await session.open_stream(host, port, timeout_s)
    if ssl is None:
        return attach(stream)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=SPLICE_CHUNK_BYTES, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    tls = await start_tls(stream, protocol, ssl, server_hostname or host, timeout_s)
    return reader, asyncio.StreamWriter(tls, protocol, reader, loop)


async def start_tls(
    stream: Stream,
    protocol: asyncio.BaseProtocol,
    context: Any,
    server_hostname: str,
    timeout_s: float,
) -> asyncio.Transport:
    """TLS (``context``, an ``ssl.SSLContext``) on top of ``stream``, its handshake end to
    end through the tunnel; the TLS transport is handed to ``protocol`` (``connection_made``)
    and returned. A failed handshake aborts the stream."""
    try:
        tls = await asyncio.get_running_loop().start_tls(
            stream,
            protocol,
            context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout_s,
        )
    except BaseException:
        stream.abort()
        raise
    assert tls is not None  # start_tls returns None only for a transport already closed
    protocol.connection_made(tls)
    return tls


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(SPLICE_CHUNK_BYTES):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.transport.is_closing():
        writer.write_eof()


async def splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both directions ended (a half-close passes through as one);
    an error on either side aborts both."""
    tasks = [
        asyncio.ensure_future(_pump(a_reader, b_writer)),
        asyncio.ensure_future(_pump(b_reader, a_writer)),
    ]
    try:
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                a_writer.transport.abort()
                b_writer.transport.abort()
                break
    finally:
        await cancel_and_wait(*tasks)
        for writer in (a_writer, b_writer):
            if not writer.transport.is_closing():
                writer.transport.close()
