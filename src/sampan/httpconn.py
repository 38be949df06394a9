"""Connection-level limits for the aiohttp listeners (API server, kubelet API): a header-read
timeout, as Go's ``http.Server.ReadHeaderTimeout`` (kube-apiserver and the kubelet set 32 s).

aiohttp has no such timeout: a client that sends one header byte every few seconds keeps a
connection (and its buffers) forever. ``HeaderTimeout`` adds it without touching aiohttp's
internals:

* ``HeaderTimeoutRunner`` is an ``AppRunner`` whose protocol factory wraps each aiohttp
  ``RequestHandler`` in ``_GuardedProtocol``, a pass-through protocol that owns one timer;
* the timer is armed when the connection is made (after the TLS handshake) and, on a
  keep-alive connection, by the first byte of the next request (an idle keep-alive connection
  is aiohttp's ``keepalive_timeout``'s business, as Go's ``IdleTimeout`` is);
* ``middleware`` disarms it when the request reaches the application, i.e. once its headers
  were read, and marks the connection idle again when the handler is done;
* when the timer fires, the connection is closed (no response: Go closes it too).

It also owns ``pin_mmap_threshold``: asyncio gives every TLS connection a 256 KiB read buffer.
glibc serves the first ones with mmap, but freeing one raises its dynamic mmap threshold above
that size, so later buffers come from the heap and their memory stays with the process after
the connections close (500 watches opened and closed left about 145 MB behind; Python held
none of it). Pinning the threshold at its default keeps such buffers mmapped, so closing a
connection gives its buffers back to the system. What smaller allocations leave behind in the
heap is handed back by ``malloc_trim`` once a burst of connections has closed (at most every
``TRIM_INTERVAL_S``), so memory after closing stays near where it was before opening.

The wrapper is a buffered protocol: the transport reads into one buffer of ``READ_BUFFER_BYTES``
shared by a listener's connections (a read and its hand-off to aiohttp happen in one step of
the event loop) and aiohttp gets a copy of what was read. Without it, asyncio's TLS layer asks
``SSLObject.read`` for up to 256 KiB per call, a fresh allocation above the pinned mmap
threshold, so every read of every request (and the read that finds nothing more) cost an
mmap and an munmap: 7x the TLS read time of the same request to a plain aiohttp server.

``share_tls_receive_buffers`` goes one step further for every TLS connection of the process,
client or server side: asyncio's TLS protocol gives each its own 256 KiB receive buffer for
the encrypted bytes, zero-filled (resident) at once, although a receive and its hand-off
(copied into the connection's ``MemoryBIO``) happen in one synchronous step. With the
in-process controllers, scheduler and node agent watching their own API server, an idle
node holds some 200 TLS connection ends: ~50 MiB of buffers that are never used at the same
time. Each thread's connections now share one buffer of that size (what a receive may take
is unchanged), and a connection's own buffer is dropped once it is made.

``on_connection_lost`` tells a long-running handler that its client went away (aiohttp itself
does not cancel the handler).

Invariants: a connection has at most one timer (and a listener at most one heap-trim timer,
cancelled by the runner's cleanup), disarmed when the connection is lost; while a
request is being handled (a long watch, an exec splice) the timer is never armed. A handler
that takes the transport over (``transport.set_protocol``) leaves the wrapper behind, idle and
disarmed.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = [
    "DEFAULT_HEADER_READ_TIMEOUT_S",
    "HeaderTimeout",
    "HeaderTimeoutRunner",
    "on_connection_lost",
    "pin_mmap_threshold",
    "share_tls_receive_buffers",
]

log = logging.getLogger(__name__)

DEFAULT_HEADER_READ_TIMEOUT_S = 32.0
"""kube-apiserver's and the kubelet's ReadHeaderTimeout."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's default M_MMAP_THRESHOLD, kept fixed (setting it turns the dynamic raise off)."""
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
READ_BUFFER_BYTES = 64 * 1024
"""The listener's shared read buffer (below the mmap threshold; a longer read takes two)."""
TRIM_AFTER_CLOSED = 100
"""Closed connections that make a heap trim worth its cost (it walks the heap)."""
TRIM_INTERVAL_S = 10.0
TRIM_DELAY_S = 1.0
"""A trim waits this long after it is due, so the rest of a burst of closes is freed first."""


def _libc_function(name: str) -> Any:
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def pin_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its default for this process (see the module
    docstring); False where the C library has no ``mallopt`` (not glibc). Idempotent."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


TLS_RECEIVE_BYTES = asyncio.sslproto.SSLProtocol.max_size
"""The shared receive buffer's size: what asyncio gives each connection (256 KiB)."""

_receive = threading.local()
_shared = False


def _shared_receive_view() -> memoryview:
    view: memoryview | None = getattr(_receive, "view", None)
    if view is None:
        view = _receive.view = memoryview(bytearray(TLS_RECEIVE_BYTES))
    return view


def share_tls_receive_buffers() -> None:
    """Make this process's TLS connections share one receive buffer per thread (see the
    module docstring). Idempotent.

    asyncio's ``SSLProtocol`` is a buffered protocol: its transport asks ``get_buffer``,
    receives into it and calls ``buffer_updated``, which copies the bytes into the
    connection's ``MemoryBIO``, all in one step, so a buffer shared by the thread's
    connections is never read after another connection has written to it. The buffer each
    connection allocates when it is made is replaced by the shared one."""
    global _shared
    if _shared:
        return
    _shared = True
    protocol = asyncio.sslproto.SSLProtocol
    original_init = protocol.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._ssl_buffer_view = _shared_receive_view()
        self._ssl_buffer = self._ssl_buffer_view.obj

    def get_buffer(self: Any, n: int) -> memoryview:
        view = _shared_receive_view()
        self._ssl_buffer_view = view  # what buffer_updated reads
        return view

    protocol.__init__ = __init__  # type: ignore[method-assign]
    protocol.get_buffer = get_buffer  # type: ignore[method-assign]


class _GuardedProtocol(asyncio.BufferedProtocol):
    """Forwards every protocol call to aiohttp's handler (what is read, as ``data_received``
    of a copy of the shared buffer); closes the connection when a request's headers take
    longer than the timeout."""

    __slots__ = (
        "_buffer",
        "_busy",
        "_inner",
        "_lost_callbacks",
        "_timeout_s",
        "_timer",
        "_transport",
        "_trimmer",
    )

    def __init__(
        self,
        inner: asyncio.Protocol,
        timeout_s: float,
        trimmer: _HeapTrimmer,
        buffer: memoryview | None = None,
    ) -> None:
        self._buffer = buffer if buffer is not None else memoryview(bytearray(READ_BUFFER_BYTES))
        self._inner = inner
        self._trimmer = trimmer
        self._timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._busy = False
        self._lost_callbacks: list[Callable[[], None]] = []

    # --- asyncio.Protocol, forwarded ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy and self._timer is None:
            self._arm()  # the first byte of the next request on a keep-alive connection
        self._inner.data_received(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            callback()
        self._inner.connection_lost(exc)
        self._trimmer.connection_closed()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # --- the timer ------------------------------------------------------------------------

    def on_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self._transport is None:
            callback()
            return _nothing
        self._lost_callbacks.append(callback)

        def remove() -> None:
            if callback in self._lost_callbacks:
                self._lost_callbacks.remove(callback)

        return remove

    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_finished(self) -> None:
        self._busy = False

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self._transport
        if self._busy or transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        log.info(
            "closing a connection from %s: request headers not read in %gs", peer, self._timeout_s
        )
        transport.close()


def _nothing() -> None:
    return None


def on_connection_lost(request: web.Request, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (once) when ``request``'s connection is lost (at once if it already
    is); returns a function that cancels it. aiohttp does not cancel a handler whose client
    went away, so a long-running handler (a watch) uses this to end instead of waiting for
    its next write to fail. Connections not accepted through ``HeaderTimeoutRunner`` are not
    observed (the callback is never called)."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if not isinstance(guard, _GuardedProtocol):
        return _nothing
    return guard.on_lost(callback)


class _HeapTrimmer:
    """Counts closed connections; trims the C heap after ``TRIM_AFTER_CLOSED`` of them, at
    most every ``TRIM_INTERVAL_S``."""

    def __init__(self) -> None:
        self._trim = _libc_function("malloc_trim")
        if self._trim is not None:
            self._trim.argtypes = [ctypes.c_size_t]
            self._trim.restype = ctypes.c_int
        self._closed = 0
        self._last = -TRIM_INTERVAL_S
        self._timer: asyncio.TimerHandle | None = None

    def connection_closed(self) -> None:
        self._closed += 1
        if self._trim is None or self._timer is not None or self._closed < TRIM_AFTER_CLOSED:
            return
        loop = asyncio.get_running_loop()
        delay = max(TRIM_DELAY_S, self._last + TRIM_INTERVAL_S - loop.time())
        self._timer = loop.call_later(delay, self._run)

    def _run(self) -> None:
        self._timer = None
        self._closed = 0
        self._last = asyncio.get_running_loop().time()
        self._trim(0)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class HeaderTimeout:
    """One listener's header-read timeout; serve the app with ``HeaderTimeoutRunner``."""

    def __init__(self, timeout_s: float = DEFAULT_HEADER_READ_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"header read timeout must be positive, not {timeout_s}")
        self.timeout_s = timeout_s
        self.trimmer = _HeapTrimmer()
        self.read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        timeout_s = self.timeout_s
        trimmer = self.trimmer
        buffer = self.read_buffer
        return lambda: _GuardedProtocol(factory(), timeout_s, trimmer, buffer)

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        transport = request.transport
        guard = transport.get_protocol() if transport is not None else None
        if not isinstance(guard, _GuardedProtocol):
            return await handler(request)
        guard.request_started()
        try:
            return await handler(request)
        finally:
            guard.request_finished()


class HeaderTimeoutRunner(web.AppRunner):
    """An ``AppRunner`` whose sites accept connections through ``HeaderTimeout``'s wrapper;
    it puts the timeout's middleware first in ``app``'s middlewares."""

    def __init__(self, app: web.Application, header_timeout: HeaderTimeout, **kwargs: Any) -> None:
        app.middlewares.insert(0, header_timeout.middleware)
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout

    @property
    def server(self) -> Any:  # the protocol factory the sites listen with
        inner = super().server
        return None if inner is None else self.header_timeout.wrap(inner)

    async def cleanup(self) -> None:
        await super().cleanup()
        self.header_timeout.trimmer.cancel()
