"""Watch streaming: storage watch events -> a chunked HTTP response, one JSON event per line.

Owns the wire side of a watch: headers are sent at once (client-go waits for them before it
returns from Watch()), then every event is written as ``{"type":...,"object":...}\\n``.
Events that are ready together (the catch-up, or changes that queued while a write was
under way) go out in one write of up to ``BATCH_BYTES``. An event sent as stored (no
conversion, no Table or metadata-only form) is framed once per change and, while the stream
is idle, handed by the watch cache's fan-out straight to the stream's direct writer
(``WatchStream.direct``), which only appends it; once per event-loop iteration the server's
``DirectWrites`` writes each connection that got something, in one write. So a change
reaching 1,000 idle watchers costs 1,000 socket writes of the same bytes and no task
switches, and changes that arrive in the same iteration (a burst during a ramp) share one
write (one TLS record) per watcher instead of one each. A connection whose send buffer is
backed up (over ``DIRECT_LIMIT_BYTES``) gets events through the queue instead, which waits
for the buffer to drain; the stream's own writer first writes what its direct writer still
holds, so the order is the order of the changes.

The stream ends, with a clean chunked terminator, when the timeout (``timeoutSeconds`` or a
random 30-60 minutes, as kube-apiserver's min-request-timeout does) expires, when the server
stops, when the storage iterator ends, or when the client goes away (noticed when its
connection is lost, ``httpconn.on_connection_lost``, not only at the next write: a closed
watch with no traffic would otherwise keep its watcher, queue and timer for up to an hour).

A StatusError raised by the storage iterator (e.g. 410 for a too-old resourceVersion) becomes
an ERROR event carrying the Status, which is how kube-apiserver reports it mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from sampan.api import jsonwire
from sampan.api.errors import StatusError
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, dump_json
from sampan.apiserver.responses import Renderer
from sampan.apiserver.storage.types import WatchEvent
from sampan.apiserver.storage.watch import WatchStream
from sampan.httpconn import on_connection_lost

__all__ = [
    "MAX_WATCH_TIMEOUT_S",
    "MIN_WATCH_TIMEOUT_S",
    "DirectWrites",
    "WatchTracker",
    "default_timeout_s",
    "serve_watch",
]

log = logging.getLogger(__name__)

Convert = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""(event type, object) -> the object converted before rendering (CRD conversion webhooks;
BOOKMARK objects too, which carry only metadata); a StatusError ends the watch with an ERROR
event."""

MIN_WATCH_TIMEOUT_S = 1800.0
"""kube-apiserver's --min-request-timeout: watches last between this and twice this."""
MAX_WATCH_TIMEOUT_S = 2 * MIN_WATCH_TIMEOUT_S

BATCH_BYTES = 256 * 1024
"""Most bytes of ready events joined into one write (a catch-up of many objects is sent in
pieces of about this size, each waiting for the connection to drain)."""

DIRECT_LIMIT_BYTES = 64 * 1024
"""A connection with more than this unsent gets events through the queue, not directly."""


def default_timeout_s() -> float:
    return random.uniform(MIN_WATCH_TIMEOUT_S, MAX_WATCH_TIMEOUT_S)


def _line(event_type: str, obj: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + obj + b"}\n"


class _LastWire:
    """The chunk of the last event written directly: a fan-out hands the same event to
    every watcher in turn, so it is framed once per change. Only the last one is kept (the
    events themselves live on in the watch cache's ring and entries; a kept chunk each would
    double that memory)."""

    __slots__ = ("event", "wire")

    def __init__(self) -> None:
        self.event: WatchEvent | None = None
        self.wire = b""

    def of(self, event: WatchEvent) -> bytes:
        if event is not self.event:
            line = _line(event.type, event.object)
            self.wire = b"%x\r\n%b\r\n" % (len(line), line)
            self.event = event
        return self.wire


_last_wire = _LastWire()


def _encode(renderer: Renderer, event_type: str, obj: bytes) -> bytes:
    if renderer.passthrough or event_type == "ERROR":
        return _line(event_type, obj)
    parsed: dict[str, Any] = jsonwire.parse(obj)
    if event_type == "BOOKMARK":
        if renderer.output.table:
            # An empty Table carrying the bookmark's resourceVersion and annotations
            # (k8s.io/initial-events-end matters to watch-list clients).
            bookmark_meta = parsed.get("metadata") or {}
            table_meta = {"resourceVersion": bookmark_meta.get("resourceVersion", "")}
            if bookmark_meta.get("annotations"):
                table_meta["annotations"] = bookmark_meta["annotations"]
            out: dict[str, Any] = {
                "kind": "Table",
                "apiVersion": renderer.output.group_version or "meta.k8s.io/v1",
                "metadata": table_meta,
                "columnDefinitions": [],
                "rows": [],
            }
        elif renderer.output.partial_metadata:
            out = renderer.object(parsed)
        else:
            out = renderer.convert(parsed) if renderer.convert else parsed
    elif renderer.output.table:
        out = renderer.watch_table(parsed)
    else:
        out = renderer.object(parsed)
    return dump_json({"type": event_type, "object": out}) + b"\n"


class DirectWrites:
    """The direct writes of one server's watch streams, written once per loop iteration.

    A stream's writer that takes an event when it held none registers here; the first
    registration of an iteration schedules one callback (``call_soon``: it runs after every
    callback already ready, which is where the coalescing comes from), which writes every
    registered stream's events in one write each."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[_DirectWriter] = []
        self._scheduled = False

    def mark(self, writer: _DirectWriter) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer.flush()


class _DirectWriter:
    """One stream's direct writer (``WatchStream.direct``): takes an unconverted event's
    chunk while the stream is idle, or declines (False: the event is queued) when the stream
    is ending or its connection is closing or backed up. Once it holds an event it takes
    every later one too, until it is flushed, so nothing overtakes what it holds."""

    __slots__ = ("_pending", "_transport", "_writable", "_writes")

    def __init__(
        self, transport: asyncio.Transport | None, writable: list[bool], writes: DirectWrites
    ) -> None:
        self._transport = transport
        self._writable = writable
        self._writes = writes
        self._pending: list[bytes] = []

    def __call__(self, event: WatchEvent) -> bool:
        if self._pending:
            self._pending.append(_last_wire.of(event))
            return True
        transport = self._transport
        if (
            not self._writable[0]
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() > DIRECT_LIMIT_BYTES
        ):
            return False
        self._pending.append(_last_wire.of(event))
        self._writes.mark(self)
        return True

    def flush(self) -> None:
        """Write what is held (dropped when the stream has ended: its client resumes from
        the last revision it received)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        transport = self._transport
        if self._writable[0] and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class WatchTracker:
    """The server's open watches, so stop() can end them all cleanly at once.

    Each watch runs inside an ``asyncio.timeout`` scope (its timeoutSeconds); ending a watch
    early is rescheduling that scope to now, which interrupts whatever the watch awaits and
    leaves it on the normal end-of-stream path (chunked terminator written). This costs one
    timer per watch instead of extra tasks per event.
    """

    def __init__(self) -> None:
        self._scopes: set[asyncio.Timeout] = set()
        self.stopped = False
        self.direct_writes = DirectWrites()

    def add(self, scope: asyncio.Timeout) -> None:
        self._scopes.add(scope)

    def discard(self, scope: asyncio.Timeout) -> None:
        self._scopes.discard(scope)

    def stop_all(self) -> None:
        self.stopped = True
        now = asyncio.get_running_loop().time()
        for scope in list(self._scopes):
            if not scope.expired():
                scope.reschedule(now)

    def __len__(self) -> int:
        return len(self._scopes)


async def serve_watch(
    request: web.Request,
    events: AsyncIterator[Any],
    renderer: Renderer,
    *,
    timeout_s: float | None,
    tracker: WatchTracker,
    convert: Convert | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = JSON_CONTENT_TYPE
    response.enable_chunked_encoding()
    response.headers["Cache-Control"] = "no-cache, private"
    await response.prepare(request)
    iterator = aiter(events)
    writable = [True]  # cleared before the stream's end is written
    direct: _DirectWriter | None = None
    if isinstance(iterator, WatchStream) and renderer.passthrough and convert is None:
        direct = _DirectWriter(request.transport, writable, tracker.direct_writes)
        iterator.direct = direct
    try:
        if not tracker.stopped:
            await _pump(
                request,
                response,
                iterator,
                renderer,
                timeout_s or default_timeout_s(),
                tracker,
                convert,
                direct,
            )
    except (ConnectionResetError, ConnectionError) as exc:
        log.debug("watch client went away: %s", exc)
        return response
    finally:
        writable[0] = False
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except (RuntimeError, StatusError) as exc:
                log.debug("closing a storage watch: %s", exc)
    with contextlib.suppress(ConnectionResetError, ConnectionError):
        await response.write_eof()
    return response


async def _next_batch(iterator: AsyncIterator[Any]) -> list[Any]:
    if isinstance(iterator, WatchStream):
        return await iterator.next_batch()
    return [await anext(iterator)]


def _end_now(scope: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
    if not scope.expired():
        scope.reschedule(loop.time())


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    iterator: AsyncIterator[Any],
    renderer: Renderer,
    timeout_s: float,
    tracker: WatchTracker,
    convert: Convert | None = None,
    direct: _DirectWriter | None = None,
) -> None:
    """Write events until the iterator ends, the timeout expires, the server stops or the
    client goes away. What ``direct`` holds is written before anything the stream itself
    writes."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s) as scope:
            tracker.add(scope)
            forget = on_connection_lost(request, lambda: _end_now(scope, loop))
            try:
                while True:
                    try:
                        batch = await _next_batch(iterator)
                    except StopAsyncIteration:
                        return
                    except StatusError as exc:
                        if direct is not None:
                            direct.flush()
                        await response.write(b'{"type":"ERROR","object":' + exc.to_json() + b"}\n")
                        return
                    if direct is not None:
                        direct.flush()
                    if not await _write_batch(response, batch, renderer, convert):
                        return
            finally:
                forget()
                tracker.discard(scope)
    except TimeoutError:
        return  # timeoutSeconds reached or the server is stopping: end the stream cleanly


async def _write_batch(
    response: web.StreamResponse,
    batch: list[Any],
    renderer: Renderer,
    convert: Convert | None,
) -> bool:
    """Write ``batch``'s events in order, joined into writes of about ``BATCH_BYTES``; False
    when a conversion failed (its ERROR event written: the stream ends)."""
    pending: list[bytes] = []
    size = 0
    ok = True
    for event in batch:
        data = event.object
        if convert is not None and event.type != "ERROR":
            try:
                converted = await convert(event.type, jsonwire.parse(data))
            except StatusError as exc:
                pending.append(b'{"type":"ERROR","object":' + exc.to_json() + b"}\n")
                ok = False
                break
            data = dump_json(converted)
        line = _encode(renderer, event.type, data)
        pending.append(line)
        size += len(line)
        if size >= BATCH_BYTES:
            await response.write(b"".join(pending))
            pending, size = [], 0
    if pending:
        await response.write(pending[0] if len(pending) == 1 else b"".join(pending))
    return ok
