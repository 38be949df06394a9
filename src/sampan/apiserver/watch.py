"""Watch streaming: storage watch events -> a chunked HTTP response, one JSON event per line.

Owns the wire side of a watch: headers are sent at once (client-go waits for them before it
returns from Watch()), then every event is written as ``{"type":...,"object":...}\\n``.
Events that are ready together (the catch-up, or changes that queued while a write was
under way) go out in one write of up to ``BATCH_BYTES``. An event sent as stored (no
conversion, no Table or metadata-only form) is framed once per change and, while the stream
is idle, the watch cache's fan-out writes it to the
connection itself (``WatchStream.direct``), so a change reaching 1,000 idle watchers costs
1,000 socket writes of the same bytes and no task switches; a connection whose send buffer is
backed up (over ``DIRECT_LIMIT_BYTES``) gets it through the queue instead, which waits for
the buffer to drain. The stream ends, with a clean chunked terminator, when the timeout
(``timeoutSeconds`` or a random 30-60 minutes, as kube-apiserver's min-request-timeout does)
expires, when the server stops, when the storage iterator ends, or when the client goes away
(noticed when its connection is lost, ``httpconn.on_connection_lost``, not only at the next
write: a closed watch with no traffic would otherwise keep its watcher, queue and timer for up
to an hour).

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
    if isinstance(iterator, WatchStream) and renderer.passthrough and convert is None:
        iterator.direct = _direct_writer(request, writable)
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


def _direct_writer(request: web.Request, writable: list[bool]) -> Callable[[WatchEvent], bool]:
    """Writes one unconverted event's chunk straight to the connection (after the response
    headers, which ``prepare`` sent), or declines when the stream is ending or the
    connection is closing or backed up."""
    transport = request.transport

    def write(event: WatchEvent) -> bool:
        if (
            not writable[0]
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() > DIRECT_LIMIT_BYTES
        ):
            return False
        transport.write(_last_wire.of(event))
        return True

    return write


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
) -> None:
    """Write events until the iterator ends, the timeout expires, the server stops or the
    client goes away."""
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
                        await response.write(b'{"type":"ERROR","object":' + exc.to_json() + b"}\n")
                        return
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
